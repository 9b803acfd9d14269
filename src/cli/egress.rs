//! `dnsward egress …`: the nftables ruleset for the configured groups, and the live sets.

use std::path::Path;

use super::EgressAction;
use crate::config::Config;
use crate::egress::{backend, ruleset};

/// Run `dnsward egress ACTION` for the configuration at `config`.
///
/// # Errors
/// The configuration does not load or has no `[egress]` section, or `nft` fails.
pub fn run(config: &Path, action: EgressAction) -> anyhow::Result<()> {
    let cfg = Config::load(config).map_err(|p| anyhow::anyhow!("{}: {p}", config.display()))?;
    let mut problems = crate::config_error::ConfigProblems::default();
    cfg.validate_runtime(&mut problems);
    if !problems.is_empty() {
        anyhow::bail!("{}: {problems}", config.display());
    }
    let ec = cfg
        .egress
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("{}: no [egress] section", config.display()))?;
    match action {
        EgressAction::Ruleset => {
            let inputs = ruleset::inputs(&cfg.groups, &cfg.server.listen, ec);
            out!(
                "{}",
                ruleset::render(ec, &inputs, &config.display().to_string())
            );
        }
        EgressAction::Status { json } => {
            let (family, table) = ec.table_parts();
            let sets = backend::SetBackend::list(&backend::NftBackend::new(
                ec.nft.clone(),
                family,
                table,
            ))?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&sets)?);
            } else {
                out!("{}", backend::render_status(&ec.table, &sets));
            }
        }
    }
    Ok(())
}
