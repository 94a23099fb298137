//! `lectern tenants ...`

use clap::Subcommand;

use super::CliResult;
use super::output::{print_json, table, time};
use crate::app::App;

#[derive(Debug, Subcommand)]
pub enum TenantsCmd {
    /// List tenants.
    List {
        #[arg(long)]
        json: bool,
    },
}

pub fn run(app: &App, cmd: TenantsCmd) -> CliResult {
    match cmd {
        TenantsCmd::List { json } => {
            let tenants = app.journal.tenants()?;
            if json {
                print_json(&serde_json::json!({ "tenants": tenants }));
            } else {
                let rows: Vec<_> =
                    tenants.iter().map(|t| vec![t.id.clone(), t.name.clone(), time(Some(t.created_at))]).collect();
                println!("{}", table(&["ID", "NAME", "CREATED"], &rows));
            }
        }
    }
    Ok(())
}
