//! `dnsward alerts`: the top tunneling suspects from the event log, as a table or JSON. The
//! folding of alerts into suspects lives in [`crate::review::suspects`], which the review
//! console shares; this is the command's edge.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use chrono::Utc;

use super::render::{render_json, render_table};
use crate::events::reader::rotated_files;
pub use crate::review::suspects::*;

/// The `dnsward alerts` options besides where the log is.
#[derive(Debug, Clone, Default)]
pub struct AlertsArgs {
    /// `--since`, e.g. `30m`, `1h`, `2d`.
    pub since: Option<String>,
    /// `--client`.
    pub client: Option<IpAddr>,
    /// `--group`.
    pub group: Option<String>,
    /// `--domain`: this name and any name below it.
    pub domain: Option<String>,
    /// `--min-score`.
    pub min_score: Option<u8>,
    /// `--limit`: most suspects shown, 0 for all.
    pub limit: usize,
    /// `--json` instead of a table.
    pub json: bool,
}

/// Run `dnsward alerts`: read the log named by `file` (or the config's `[events] path`) with its
/// rotated files, print the suspects, and say on stderr how many lines were not events.
///
/// # Errors
/// When no log can be found or read, or `--since` is not a duration.
pub fn run(config: &Path, file: Option<PathBuf>, args: AlertsArgs) -> anyhow::Result<()> {
    let path = super::events_file(config, file)?;
    let query = AlertsQuery {
        since: args.since.as_deref().map(parse_duration).transpose()?,
        client: args.client,
        group: args.group,
        domain: args.domain,
        min_score: args.min_score,
        limit: args.limit,
    };
    let files = rotated_files(&path);
    if files.is_empty() {
        anyhow::bail!("{}: no such file", path.display());
    }
    let scan = scan_alerts(&files, &query, Utc::now())?;
    if args.json {
        outln!("{}", render_json(&scan.suspects));
    } else {
        out!("{}", render_table(&scan.suspects));
        if scan.skipped > 0 {
            eprintln!(
                "note: {} line(s) were not events and were skipped (first: {})",
                scan.skipped,
                crate::printable::escaped(scan.first_skipped.as_deref().unwrap_or("?"))
            );
        }
    }
    Ok(())
}
