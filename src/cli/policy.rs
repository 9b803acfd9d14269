//! `dnsward policy …`: the stored versions (history, diff, cat) read from `[store]`, and reload,
//! rollback and apply (of a proposed version) asked of the running server through its admin API.

use std::path::Path;

use anyhow::Context as _;

use super::PolicyAction;
use super::table::{Align, text_table};
use crate::config::Config;
use crate::govern::store::{History, HistoryEntry, PolicyStore, VersionStatus};
use crate::printable::escaped;

fn open_store(cfg: &Config) -> anyhow::Result<PolicyStore> {
    let sc = cfg.store.as_ref().ok_or_else(|| {
        anyhow::anyhow!(
            "{}: no [store] state_dir configured, so no history is kept",
            cfg.source
        )
    })?;
    Ok(PolicyStore::open(&sc.state_dir)?)
}

/// Call the running server's admin API with the token from the config.
fn admin_post(
    cfg: &Config,
    path: &str,
    body: &serde_json::Value,
) -> anyhow::Result<serde_json::Value> {
    let token = cfg
        .admin
        .load_token()
        .context("reading admin.token_file")?
        .ok_or_else(|| {
            anyhow::anyhow!("admin.token_file is not configured: the API is disabled")
        })?;
    let url = format!("http://{}{path}", cfg.admin.listen);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let resp = reqwest::Client::new()
            .post(&url)
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .with_context(|| format!("calling {url}"))?;
        let status = resp.status();
        let value: serde_json::Value = resp.json().await.unwrap_or(serde_json::Value::Null);
        if status.is_success() {
            Ok(value)
        } else {
            let mut msg = format!(
                "{status}: {}",
                escaped(value["error"].as_str().unwrap_or("error"))
            );
            for d in value["details"].as_array().into_iter().flatten() {
                msg.push_str(&format!(
                    "\n  - {}",
                    escaped(d.as_str().unwrap_or_default())
                ));
            }
            anyhow::bail!(msg)
        }
    })
}

/// Run a `policy` subcommand with the configuration at `config`.
///
/// # Errors
/// When the configuration is invalid, the store cannot be read, or the server refuses.
pub fn run(config: &Path, action: PolicyAction) -> anyhow::Result<()> {
    let cfg = super::load_config(config)?;
    match action {
        PolicyAction::History { json } => {
            let history = open_store(&cfg)?.history()?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&history.entries())?);
            } else {
                out!("{}", history_table(&history));
            }
        }
        PolicyAction::Diff { a, b } => out!("{}", open_store(&cfg)?.diff(a, b)?),
        PolicyAction::Reload { actor, message } => {
            let v = admin_post(
                &cfg,
                "/api/v1/policy/reload",
                &serde_json::json!({ "actor": actor, "message": message }),
            )?;
            outln!(
                "reloaded: now version {} ({})",
                v["version"],
                escaped(v["hash"].as_str().unwrap_or(""))
            );
            let added: Vec<&str> = v["zones_added"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|z| z.as_str())
                .collect();
            if !added.is_empty() {
                outln!("local zone(s) added: {}", escaped(&added.join(", ")));
            }
            for w in v["warnings"].as_array().into_iter().flatten() {
                outln!("warning: {}", escaped(w.as_str().unwrap_or_default()));
            }
        }
        PolicyAction::Rollback { to, actor, reason } => {
            let v = admin_post(
                &cfg,
                "/api/v1/policy/rollback",
                &serde_json::json!({ "to": to, "actor": actor, "reason": reason }),
            )?;
            outln!(
                "rolled back: version {} re-activates version {}",
                v["number"],
                v["rolled_back_to"]
            );
        }
        PolicyAction::Apply {
            version,
            actor,
            reason,
        } => {
            let v = admin_post(
                &cfg,
                "/api/v1/policy/apply",
                &serde_json::json!({ "version": version, "actor": actor, "reason": reason }),
            )?;
            outln!(
                "applied: version {} runs proposal {version} ({})",
                v["number"],
                escaped(v["change"].as_str().unwrap_or(""))
            );
            for f in v["live_differs"].as_array().into_iter().flatten() {
                let f = escaped(f.as_str().unwrap_or_default());
                outln!(
                    "the live {f} does not have it yet: `dnsward policy cat {} --file {f} --write-back` before the next reload or restart",
                    v["number"]
                );
            }
        }
        PolicyAction::Cat {
            version,
            file,
            write_back,
        } => {
            let store = open_store(&cfg)?;
            let path = match file {
                Some(f) => f,
                None => store.get(version)?.config_path,
            };
            let bytes = store.file(version, &path)?;
            if write_back {
                // A shell redirect would truncate the config before this command reads it;
                // write beside it and rename over it instead.
                let tmp = path.with_file_name(format!(
                    ".{}.dnsward-tmp",
                    path.file_name().unwrap_or_default().to_string_lossy()
                ));
                std::fs::write(&tmp, &bytes)
                    .and_then(|()| match std::fs::metadata(&path) {
                        // Keep the live file's mode (it may be group-readable by the service).
                        Ok(m) => std::fs::set_permissions(&tmp, m.permissions()),
                        Err(_) => Ok(()),
                    })
                    .and_then(|()| std::fs::rename(&tmp, &path))
                    .with_context(|| format!("writing {}", path.display()))?;
                outln!("wrote {} from version {version}", path.display());
            } else {
                std::io::Write::write_all(&mut std::io::stdout(), &bytes)?;
            }
        }
    }
    Ok(())
}

/// `policy history` as a table: version, load time, action (`rollback→3` for a rollback,
/// `apply→7` for an apply, `propose→5` for a proposal against version 5), status (`proposed`,
/// `applied in 8`, `corrupt` for a manifest that is not trusted, or empty for versions that
/// ran), author, hash prefix and message (for a proposal, its change first; for a corrupt
/// manifest, what is wrong with it).
fn history_table(history: &History) -> String {
    const HEADERS: [&str; 7] = [
        "VER", "LOADED", "ACTION", "STATUS", "AUTHOR", "HASH", "MESSAGE",
    ];
    let applied = crate::govern::store::applied_proposals(&history.versions);
    let rows = history.entries().into_iter().map(|entry| {
        let v = match entry {
            HistoryEntry::Version(v) => v,
            HistoryEntry::Corrupt(c) => {
                return [
                    c.number.to_string(),
                    String::new(),
                    String::new(),
                    "corrupt".to_string(),
                    "-".to_string(),
                    String::new(),
                    format!("versions/{}.json: {}", c.number, c.corrupt),
                ];
            }
        };
        let action = match v.rolled_back_to.or(v.proposed_against) {
            Some(to) => format!("{}→{to}", v.action),
            None => v.action.clone(),
        };
        let status = match (v.status, applied.get(&v.number)) {
            (VersionStatus::Proposed, Some(n)) => format!("applied in {n}"),
            (VersionStatus::Proposed, None) => "proposed".to_string(),
            (VersionStatus::Applied, _) => String::new(),
        };
        let message = match (&v.change, &v.message) {
            (Some(c), Some(m)) if v.status == VersionStatus::Proposed => format!("{c}: {m}"),
            (_, m) => m.as_deref().unwrap_or("").to_string(),
        };
        [
            v.number.to_string(),
            v.loaded_at.chars().take(19).collect::<String>(),
            action,
            status,
            v.author.as_deref().unwrap_or("-").to_string(),
            v.hash.chars().take(16).collect::<String>(),
            message,
        ]
    });
    let mut out = String::new();
    for line in text_table(&HEADERS, &[Align::Right], rows) {
        out.push_str(&line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::govern::store::VersionInfo;

    fn version(number: u64, action: &str, rolled_back_to: Option<u64>) -> VersionInfo {
        VersionInfo {
            number,
            hash: format!("{number:016x}{}", "0".repeat(48)),
            loaded_at: "2026-11-25T19:59:00.123456Z".into(),
            author: (number > 1).then(|| "alice".into()),
            message: (number > 1).then(|| "allow cdn".into()),
            action: action.into(),
            status: crate::govern::store::VersionStatus::Applied,
            rolled_back_from: rolled_back_to.map(|_| number - 1),
            rolled_back_to,
            proposed_against: None,
            change: None,
            config_path: PathBuf::from("/etc/dnsward/dnsward.toml"),
            files: Vec::new(),
        }
    }

    fn history_table(versions: &[VersionInfo]) -> String {
        super::history_table(&History {
            versions: versions.to_vec(),
            corrupt: Vec::new(),
        })
    }

    #[test]
    fn a_corrupt_version_is_a_row_of_its_own() {
        let table = super::history_table(&History {
            versions: vec![version(1, "load", None), version(3, "reload", None)],
            corrupt: vec![crate::govern::store::CorruptVersion {
                number: 2,
                corrupt: "EOF while parsing an object at line 2 column 0".into(),
            }],
        });
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        assert!(lines[1].starts_with("  1  "), "{table}");
        assert!(lines[3].starts_with("  3  "), "{table}");
        assert!(lines[2].starts_with("  2  "), "{table}");
        assert!(
            lines[2].contains("corrupt")
                && lines[2].contains("versions/2.json: EOF while parsing an object"),
            "{table}"
        );
    }

    #[test]
    fn history_rows_line_up_under_their_headers() {
        let table = history_table(&[version(1, "load", None), version(12, "rollback", Some(1))]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        assert!(lines[0].starts_with("VER  LOADED"), "{table}");
        assert!(
            lines[1].starts_with("  1  2026-11-25T19:59:00  load"),
            "{table}"
        );
        assert!(lines[2].contains("rollback→1"), "{table}");
        // Each column starts at the same character on every line (the ACTION header used to
        // be narrower than its cells).
        let column = |line: &str, text: &str| line[..line.find(text).unwrap()].chars().count();
        assert_eq!(column(lines[0], "AUTHOR"), column(lines[2], "alice"));
        assert_eq!(column(lines[0], "MESSAGE"), column(lines[2], "allow cdn"));
        assert_eq!(
            column(lines[0], "HASH"),
            column(lines[1], "0000000000000001")
        );
        let author = column(lines[0], "AUTHOR");
        assert_eq!(lines[1].chars().nth(author), Some('-'), "{table}");
        let mut proposal = version(13, "propose", None);
        proposal.status = VersionStatus::Proposed;
        proposal.proposed_against = Some(12);
        proposal.change = Some("deny \"t.example\" in group \"g\"".into());
        let mut apply = version(14, "apply", Some(13));
        apply.message = Some("ok".into());
        let table = history_table(&[proposal.clone(), apply]);
        let rows: Vec<&str> = table.lines().collect();
        assert!(rows[1].contains("propose→12  applied in 14"), "{table}");
        assert!(
            rows[1].contains("deny \"t.example\" in group \"g\": allow cdn"),
            "{table}"
        );
        assert!(rows[2].contains("apply→13"), "{table}");
        let table = history_table(&[proposal]);
        assert!(
            table
                .lines()
                .nth(1)
                .unwrap()
                .contains("propose→12  proposed"),
            "{table}"
        );
    }
}
