//! `dnsward check`: validate a configuration and every file it pulls in, printing every problem
//! found at once.

use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;

use crate::config::Config;

/// Check the configuration at `path`: exit 0 with a one-line summary, or 1 with every problem.
#[must_use]
pub fn run(path: &Path) -> ExitCode {
    let result = Config::load(path).and_then(|cfg| cfg.validate_all().map(|p| (cfg, p)));
    match result {
        Ok((cfg, policy)) => {
            // The zones, so that one gone from `zones.dir` is seen before a reload drops it.
            let zones: Vec<&str> = policy.zones.origins().collect();
            let zones = if zones.is_empty() {
                "no local zones".to_string()
            } else {
                format!("local zones {}", zones.join(", "))
            };
            // A closed stdout changes nothing: the exit status is the answer.
            let _ = writeln!(
                std::io::stdout(),
                "{}: OK ({} groups, {} files read, {zones}, listening on {})",
                path.display(),
                cfg.groups.len(),
                policy.files.len(),
                cfg.server.listen.join(", ")
            );
            for note in cfg.notes() {
                let _ = writeln!(std::io::stdout(), "note: {note}");
            }
            ExitCode::SUCCESS
        }
        Err(problems) => {
            eprint!("{}: {problems}", path.display());
            ExitCode::from(1)
        }
    }
}
