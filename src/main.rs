use clap::Parser;

fn main() -> std::process::ExitCode {
    lectern::cli::run(lectern::cli::Cli::parse())
}
