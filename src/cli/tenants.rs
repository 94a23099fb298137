//! `lectern tenants ...`

use clap::Subcommand;

use super::CliResult;
use super::output::{print_json, table, time};
use crate::app::App;

#[derive(Debug, Subcommand)]
pub enum TenantsCmd {
    /// Create a tenant: prints its id, its API key (shown once) and its webhook signing secret.
    Create {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// List tenants.
    List {
        #[arg(long)]
        json: bool,
    },
}

pub fn run(app: &App, cmd: TenantsCmd) -> CliResult {
    match cmd {
        TenantsCmd::Create { name, json } => {
            let t = app.create_tenant(&name)?;
            if json {
                print_json(&serde_json::json!({
                    "tenant": t.tenant, "name": t.name, "api_key": t.api_key, "webhook_secret": t.webhook_secret,
                }));
            } else {
                println!("tenant          {} ({})", t.tenant, t.name);
                println!("api key         {}   (shown once: store it now)", t.api_key);
                println!("webhook secret  {}", t.webhook_secret);
            }
        }
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
