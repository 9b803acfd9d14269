//! `dnsward audit verify`: check the event log's hash chain and report the first record
//! modified, deleted, inserted, reordered or torn.

use std::process::ExitCode;

use anyhow::Context as _;

use super::AuditAction;
use crate::events::reader::rotated_files;
use crate::govern::audit::{AuditConfig, AuditKey, verify};

/// Run `audit verify`: exit 0 only when the chain is intact, 2 when a problem was found.
///
/// # Errors
/// When the key file cannot be read or a named file does not exist.
pub fn run(action: AuditAction) -> anyhow::Result<ExitCode> {
    let AuditAction::Verify {
        paths,
        key_file,
        checkpoints,
        json,
    } = action;
    let key = key_file
        .map(|p| {
            let cfg = AuditConfig {
                key_file: Some(p),
                ..Default::default()
            };
            cfg.load_key().context("reading the key file")
        })
        .transpose()?
        .flatten();
    if let Some(missing) = paths.iter().find(|p| !p.exists()) {
        anyhow::bail!("{}: no such file", missing.display());
    }
    // The reader lists regular files only: a directory must not verify as an empty chain.
    if let Some(other) = paths.iter().find(|p| !p.is_file()) {
        anyhow::bail!("{}: not a regular file", other.display());
    }
    let files = if paths.len() == 1 {
        rotated_files(&paths[0])
    } else {
        paths
    };
    let report = verify(&files, key.as_ref().map(AuditKey::as_bytes));
    let cps = crate::govern::checkpoint::verify_for_log(
        &files,
        checkpoints.as_deref(),
        key.as_ref().map(AuditKey::as_bytes),
    );
    if json {
        let mut v = serde_json::to_value(&report)?;
        if let Some(c) = &cps {
            v["checkpoints"] = serde_json::to_value(c)?;
        }
        outln!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        outln!("{report}");
        if let Some(c) = &cps {
            out!("{c}");
        }
    }
    Ok(if report.ok && cps.as_ref().is_none_or(|c| c.ok) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}
