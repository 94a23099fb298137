//! `lectern search "QUERY"`: the same search as `GET /v1/search`, against the data dir.

use clap::Args;

use super::CliResult;
use super::output::print_json;
use crate::app::{App, SearchRequest};
use crate::index::Mode;

#[derive(Debug, Args)]
pub struct SearchArgs {
    /// What to look for, in your own words.
    pub query: String,
    /// Tenant (default: the default tenant).
    #[arg(long)]
    pub tenant: Option<String>,
    /// How many passages.
    #[arg(short = 'k', default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..=100))]
    pub k: u16,
    /// hybrid (vector + lexical, fused), vector or lexical.
    #[arg(long, default_value = "hybrid")]
    pub mode: Mode,
    /// Only this media.
    #[arg(long)]
    pub media: Option<String>,
    #[arg(long)]
    pub json: bool,
}

fn clock(s: f64) -> String {
    let s = s.max(0.0) as u64;
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

pub fn run(app: &App, a: SearchArgs) -> CliResult {
    let req = SearchRequest { tenant: a.tenant, query: a.query, k: usize::from(a.k), mode: a.mode, media_id: a.media };
    let results = app.search(&req)?;
    if a.json {
        print_json(&serde_json::json!({ "results": results }));
        return Ok(());
    }
    if results.is_empty() {
        println!("no passages found");
    }
    for (i, r) in results.iter().enumerate() {
        let title = r.title.as_deref().unwrap_or(&r.media_id);
        println!("{}. {title}  [{} – {}]  score {:.3}", i + 1, clock(r.start_s), clock(r.end_s), r.score);
        println!("   {}", r.play_url);
        let text: String = r.text.chars().take(240).collect();
        println!("   {text}{}\n", if r.text.chars().count() > 240 { "…" } else { "" });
    }
    Ok(())
}
