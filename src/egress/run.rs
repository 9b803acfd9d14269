//! Starting and stopping egress as part of a running dnsward: the gate with the nftables
//! backend, the encrypted-DNS lists, and the nflog reader.

use std::sync::Arc;

use super::EgressHook;
use super::backend::NftBackend;
use super::bypass::EncryptedDns;
use super::config::EgressConfig;
use super::denied::DeniedReader;
use super::evidence::{DeniedContext, DeniedEvidence, EvidenceSettings};
use super::gate::{Egress, GateSettings, StartError};
use crate::clock::SharedClock;
use crate::config_error::ConfigProblems;
use crate::events::sink::EventSender;

/// Why egress could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The table or the sets could not be created (not root? no nftables?).
    #[error(transparent)]
    Backend(#[from] StartError),
    /// The encrypted-DNS list has problems.
    #[error("{0}")]
    List(ConfigProblems),
}

/// Egress while dnsward runs.
#[derive(Debug)]
pub struct RunningEgress {
    /// What the pipeline holds.
    pub hook: EgressHook,
    /// The nflog reader, when it could bind.
    denied: Option<DeniedReader>,
    /// Delete the sets on shutdown.
    delete_on_shutdown: bool,
}

impl RunningEgress {
    /// Create or adopt the table and the sets of the `gated` groups, load the encrypted-DNS list
    /// and start reading denied flows, which `ctx` attributes to clients and contains (see
    /// [`super::evidence`]). A reader that cannot bind is logged, not fatal: the ruleset still
    /// drops, only the events (and the containment they would start) are missing.
    ///
    /// # Errors
    /// The backend failed (fatal: agents would be cut off or unprotected) or the list is bad.
    pub fn start(
        cfg: &EgressConfig,
        gated: &[&str],
        events: EventSender,
        clock: SharedClock,
        ctx: Arc<dyn DeniedContext>,
    ) -> Result<Self, RunError> {
        let encrypted_dns = if cfg.block_encrypted_dns {
            let mut problems = ConfigProblems::default();
            let list = EncryptedDns::load(
                cfg.encrypted_dns_list.as_deref(),
                "egress.encrypted_dns_list",
                &mut problems,
            );
            if !problems.is_empty() {
                return Err(RunError::List(problems));
            }
            Some(Arc::new(list))
        } else {
            None
        };
        let (family, table) = cfg.table_parts();
        let backend = Arc::new(NftBackend::new(cfg.nft.clone(), family, table));
        let gate = Egress::start(GateSettings::from(cfg), gated, backend, Arc::clone(&clock))?;
        let denied = if cfg.read_denied {
            let evidence = DeniedEvidence::new(EvidenceSettings::from(cfg), clock);
            match DeniedReader::start(cfg.nflog_group, evidence, events, ctx) {
                Ok(r) => Some(r),
                Err(e) => {
                    tracing::warn!(error = %e, group = cfg.nflog_group,
                        "cannot read the egress nflog group: denied connections are dropped but not reported");
                    None
                }
            }
        } else {
            None
        };
        tracing::info!(table = %cfg.table, groups = ?gated, "egress sets ready");
        Ok(Self {
            hook: EgressHook {
                gate,
                encrypted_dns,
            },
            denied,
            delete_on_shutdown: cfg.delete_on_shutdown,
        })
    }

    /// Stop reading drops and flush what is queued; the sets stay unless `delete_on_shutdown`.
    pub fn shutdown(self) {
        if let Some(r) = self.denied {
            r.shutdown();
        }
        self.hook.gate.shutdown(self.delete_on_shutdown);
    }
}
