//! DNS-gated egress: agents may connect only to addresses dnsward resolved for them.
//!
//! - [`config`]: the `[egress]` section and the per-group set names.
//! - [`answer`]: A/AAAA records and TTLs out of the wire answer the client is sent.
//! - [`gate`]: allowed answers → set writes (deduplicated, batched, bounded wait).
//! - [`backend`]: the firewall: nftables through `nft -j` (JSON API), one run per batch.
//! - [`ruleset`]: `dnsward egress ruleset`: the nftables rules that use the sets.
//! - [`denied`]: drops logged by those rules (NFLOG), read back from the kernel.
//! - [`evidence`]: each drop → `egress_denied` event; per-client counting → alerts and
//!   containment (own evidence only).
//! - [`bypass`]: encrypted-DNS canaries and the public DoH/DoT resolver list.
//! - [`run`]: starting and stopping all of it with the server.
//!
//! The pipeline calls two things: [`EgressHook::bypass`] before the policy decision, and
//! [`gate::Egress::admit`] on every allowed answer (cache hit, miss, local zone), waiting on the
//! returned [`gate::Wait`] before it sends the answer. See `docs/egress.md`.

pub mod answer;
pub mod backend;
pub mod bypass;
pub mod config;
pub mod denied;
pub mod evidence;
pub mod gate;
pub mod ruleset;
pub mod run;

use std::sync::Arc;

pub use config::EgressConfig;
pub use gate::{Egress, Wait};

/// What the pipeline holds when `[egress]` is configured.
#[derive(Debug, Clone)]
pub struct EgressHook {
    /// The set writer.
    pub gate: Arc<Egress>,
    /// Canaries and resolver names (`None` when `block_encrypted_dns = false`).
    pub encrypted_dns: Option<Arc<bypass::EncryptedDns>>,
}

impl EgressHook {
    /// Whether `name` must be answered NXDOMAIN as an encrypted-DNS bypass.
    #[must_use]
    pub fn bypass(&self, name: &str) -> Option<bypass::Bypass<'_>> {
        self.encrypted_dns.as_deref()?.check(name)
    }
}

/// Metric names of this module.
pub mod metric_names {
    /// Elements written (added or refreshed).
    pub const WRITES_TOTAL: &str = "dnsward_egress_element_writes_total";
    /// Batches applied, by `result` (`ok`, `error`).
    pub const BATCHES_TOTAL: &str = "dnsward_egress_batches_total";
    /// Answers sent before their set update was in (the wait hit `max_wait`).
    pub const WAIT_TIMEOUTS_TOTAL: &str = "dnsward_egress_wait_timeouts_total";
    /// Addresses not added because an answer had more than `max_addresses_per_name`.
    pub const CAPPED_TOTAL: &str = "dnsward_egress_addresses_capped_total";
    /// Elements written without being remembered (the dedupe map was full).
    pub const UNTRACKED_TOTAL: &str = "dnsward_egress_untracked_total";
    /// Elements remembered for deduplication (gauge).
    pub const TRACKED: &str = "dnsward_egress_tracked_elements";
    /// Denied connection attempts read from NFLOG, by `group`.
    pub const DENIED_TOTAL: &str = "dnsward_egress_denied_total";
    /// Drops counted against nobody: the source is in no gated group's CIDRs, or not in those
    /// of the group whose rule logged it.
    pub const DENIED_UNATTRIBUTED_TOTAL: &str = "dnsward_egress_denied_unattributed_total";
    /// Clients' denied-flow windows dropped because the table was full of live ones.
    pub const DENIED_EVICTED_TOTAL: &str = "dnsward_egress_denied_windows_evicted_total";
    /// NFLOG messages that could not be parsed.
    pub const DENIED_MALFORMED_TOTAL: &str = "dnsward_egress_denied_malformed_total";
}
