//! The compiled, immutable policy the query path reads: groups, the client table, local zones
//! and upstreams, with the version that decided each query.
//!
//! A policy is built from a [`Config`] in one go, collecting every problem; only a policy with
//! no problems is ever swapped in, so queries never see a half-built one. The pipeline holds it
//! in an `ArcSwap` and each query loads it once, so a query that started under one version
//! finishes under it.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use metrics::Counter;

use crate::config::Config;
use crate::config_error::ConfigProblems;
use crate::identify::{ClientTable, GroupId};
use crate::identity::{IdentityTable, Peer};
use crate::metrics as m;
use crate::policy::Group;
use crate::upstream::Upstreams;
use crate::zones::ZoneSet;

/// Verdicts, in the order of the per-group counter table.
pub const VERDICTS: [&str; 9] = [
    "allow",
    "block",
    "sinkhole",
    "refuse",
    "throttle",
    "quarantine",
    "servfail",
    "formerr",
    "drop",
];

/// Query types given their own metric label; everything else is `OTHER`.
pub const QTYPE_LABELS: [(u16, &str); 14] = [
    (1, "A"),
    (28, "AAAA"),
    (5, "CNAME"),
    (15, "MX"),
    (16, "TXT"),
    (2, "NS"),
    (6, "SOA"),
    (12, "PTR"),
    (33, "SRV"),
    (64, "SVCB"),
    (65, "HTTPS"),
    (10, "NULL"),
    (25, "KEY"),
    (255, "ANY"),
];

/// Index of a verdict in [`VERDICTS`].
#[must_use]
pub fn verdict_index(verdict: &str) -> usize {
    VERDICTS
        .iter()
        .position(|v| *v == verdict)
        .unwrap_or(VERDICTS.len() - 1)
}

fn qtype_index(qtype: u16) -> usize {
    QTYPE_LABELS
        .iter()
        .position(|(t, _)| *t == qtype)
        .unwrap_or(QTYPE_LABELS.len())
}

/// `dnsward_queries_total` handles for one group, registered on first use so the hot path
/// never builds label sets and `/metrics` shows only series that happened.
#[derive(Debug)]
pub struct QueryCounters {
    /// Group label.
    group: Arc<str>,
    /// `[verdict * (qtypes + 1) + qtype]`.
    table: Vec<OnceLock<Counter>>,
}

impl QueryCounters {
    fn new(group: &str) -> Self {
        let cells = VERDICTS.len() * (QTYPE_LABELS.len() + 1);
        Self {
            group: group.into(),
            table: (0..cells).map(|_| OnceLock::new()).collect(),
        }
    }

    /// Count one query.
    pub fn count(&self, verdict: usize, qtype: u16) {
        let qt = qtype_index(qtype);
        let Some(cell) = self.table.get(verdict * (QTYPE_LABELS.len() + 1) + qt) else {
            return;
        };
        cell.get_or_init(|| {
            let qt_label = QTYPE_LABELS.get(qt).map_or("OTHER", |(_, l)| *l);
            let v = VERDICTS.get(verdict).copied().unwrap_or("drop");
            metrics::counter!(m::QUERIES_TOTAL, "group" => self.group.to_string(), "verdict" => v, "qtype" => qt_label)
        })
        .increment(1);
    }
}

/// Identity of a policy version.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyVersion {
    /// Increasing number (0 for a policy built outside the version store, e.g. in tests).
    pub number: u64,
    /// Content hash (hex) over the config text and every file it pulls in.
    pub hash: String,
}

/// Everything the query path needs to decide, immutable once built.
#[derive(Debug)]
pub struct ActivePolicy {
    /// Which version this is.
    pub version: PolicyVersion,
    /// Groups, indexed by [`GroupId`].
    pub groups: Vec<Group>,
    /// Source address → group.
    pub clients: ClientTable,
    /// Verified agent identity → group.
    pub identities: IdentityTable,
    /// Local zones.
    pub zones: ZoneSet,
    /// Upstreams.
    pub upstreams: Upstreams,
    /// Query counters per group, same index as `groups`.
    pub counters: Vec<QueryCounters>,
    /// Query counters for clients in no group.
    pub unknown_counters: QueryCounters,
    /// Every file the policy read (lists, zones), for hashing and `check`.
    pub files: Vec<PathBuf>,
}

impl ActivePolicy {
    /// Build and validate a policy, collecting every problem.
    ///
    /// # Errors
    /// Every problem found, each with its location.
    pub fn build(cfg: &Config) -> Result<Arc<Self>, ConfigProblems> {
        Self::build_with_version(cfg, PolicyVersion::default())
    }

    /// As [`Self::build`], stamped with `version`.
    ///
    /// # Errors
    /// Every problem found, each with its location.
    pub fn build_with_version(
        cfg: &Config,
        version: PolicyVersion,
    ) -> Result<Arc<Self>, ConfigProblems> {
        let mut problems = ConfigProblems::default();
        let base = &cfg.base_dir;
        let upstreams = Upstreams::from_config(&cfg.upstream, "upstream", &mut problems);
        let zones = ZoneSet::load(&cfg.zones, base, &mut problems);
        let mut files: Vec<PathBuf> = zones.files().to_vec();
        if cfg.upstream.servers.is_empty()
            && cfg.upstream.forward.is_empty()
            && zones.files().is_empty()
        {
            problems.push(
                "upstream.servers",
                "no upstream servers and no local zones: nothing could be answered",
            );
        }
        let mut groups = Vec::with_capacity(cfg.groups.len());
        let mut clients = ClientTable::default();
        let mut identities = IdentityTable::default();
        if cfg.groups.is_empty() {
            problems.push("groups", "no groups: every client would be refused");
        }
        for (i, gc) in cfg.groups.iter().enumerate() {
            let at = format!("groups[{i}]");
            let (group, group_files) = Group::from_config(gc, &at, base, &mut problems);
            files.extend(group_files);
            if groups.iter().any(|g: &Group| g.name == group.name) {
                problems.push(
                    format!("{at}.name"),
                    format!("group name {:?} is used twice", group.name),
                );
            }
            let Ok(id) = GroupId::try_from(i) else {
                problems.push(at, "too many groups");
                continue;
            };
            if gc.cidrs.is_empty() && gc.identities.is_empty() {
                problems.push(
                    format!("{at}.cidrs"),
                    "a group needs at least one CIDR or identity",
                );
            }
            for (j, pattern) in group.identities.iter().enumerate() {
                if let Some(other) = identities.insert(pattern, id) {
                    let other_name = groups
                        .get(usize::from(other))
                        .map_or_else(|| group.name.to_string(), |g: &Group| g.name.to_string());
                    problems.push(
                        format!("{at}.identities[{j}]"),
                        format!("{pattern} is already claimed by group {other_name:?}"),
                    );
                }
            }
            for (j, net) in group.cidrs.iter().enumerate() {
                if let Some(other) = clients.insert(*net, id) {
                    let other_name = groups
                        .get(usize::from(other))
                        .map_or_else(|| group.name.to_string(), |g: &Group| g.name.to_string());
                    problems.push(
                        format!("{at}.cidrs[{j}]"),
                        format!("{net} is already claimed by group {other_name:?}"),
                    );
                }
            }
            groups.push(group);
        }
        let counters = groups.iter().map(|g| QueryCounters::new(&g.name)).collect();
        let policy = Self {
            version,
            groups,
            clients,
            identities,
            zones,
            upstreams,
            counters,
            unknown_counters: QueryCounters::new("_unknown"),
            files,
        };
        problems.into_result(Arc::new(policy))
    }

    /// The group of a peer: a verified token's group claim (which must name a group), else
    /// the verified agent's identity pattern, else its source address.
    #[must_use]
    pub fn identify(&self, peer: &Peer) -> Option<GroupId> {
        if let Some(name) = &peer.group {
            // A signed group claim naming no group is refused, not widened to the address.
            let i = self.groups.iter().position(|g| g.name == *name)?;
            return GroupId::try_from(i).ok();
        }
        peer.key
            .agent_name()
            .and_then(|a| self.identities.lookup(a))
            .or_else(|| self.clients.lookup(peer.addr()))
    }

    /// The group with this id.
    #[must_use]
    pub fn group(&self, id: GroupId) -> Option<&Group> {
        self.groups.get(usize::from(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn semantic_problems_are_all_reported_together() {
        let cfg = Config::from_toml(
            r#"
            [upstream]
            servers = [{ address = "not-an-ip" }]
            [cache]
            min_ttl = "2h"
            max_ttl = "1h"
            [[groups]]
            name = "a"
            cidrs = ["10.0.0.0/8"]
            allow = ["ok.example"]
            [[groups]]
            name = "a"
            cidrs = ["10.0.0.0/8", "300.1.1.1"]
            allow = ["bad..name"]
            allow_files = ["missing.txt"]
            "#,
            "t.toml",
            Path::new("/nonexistent"),
        )
        .unwrap();
        let problems = cfg.validate_all().unwrap_err();
        let text = problems.to_string();
        for needle in [
            "upstream.servers[0].address",
            "cache.min_ttl",
            "groups[1].name",
            "groups[1].cidrs[0]",
            "groups[1].cidrs[1]",
            "groups[1].allow[0]",
            "missing.txt",
        ] {
            assert!(text.contains(needle), "missing {needle} in:\n{text}");
        }
    }
}
