//! The compiled, immutable policy the query path reads: groups, the client table, local zones
//! and upstreams, with the version that decided each query.
//!
//! A policy is built from its own sections ([`PolicySections`]) in one go, collecting every problem; only a policy with
//! no problems is ever swapped in, so queries never see a half-built one. The pipeline holds it
//! in an `ArcSwap` and each query loads it once, so a query that started under one version
//! finishes under it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use metrics::Counter;

use crate::config_error::ConfigProblems;
use crate::identity::Peer;
use crate::metrics as m;
use crate::policy::group::{Group, GroupConfig};
use crate::policy::identify::{ClientTable, GroupId};
use crate::policy::identities::IdentityTable;
use crate::policy::verdict::Verdict;
use crate::resolve::cache::StaleAnswers;
use crate::resolve::upstream::{UpstreamConfig, Upstreams};
use crate::resolve::zones::{ZoneSet, ZonesConfig};

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
        let cells = Verdict::ALL.len() * (QTYPE_LABELS.len() + 1);
        Self {
            group: group.into(),
            table: (0..cells).map(|_| OnceLock::new()).collect(),
        }
    }

    /// Count one query.
    pub fn count(&self, verdict: Verdict, qtype: u16) {
        let qt = qtype_index(qtype);
        let Some(cell) = self
            .table
            .get(verdict.index() * (QTYPE_LABELS.len() + 1) + qt)
        else {
            return;
        };
        cell.get_or_init(|| {
            let qt_label = QTYPE_LABELS.get(qt).map_or("OTHER", |(_, l)| *l);
            let v = verdict.as_str();
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

/// Local zones a new policy serves that the old did not, and the other way round.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ZoneChanges {
    /// Zones served now and not before (origins, lower-case, no trailing dot).
    pub added: Vec<String>,
    /// Zones no longer served: their names are forwarded upstream from now on.
    pub removed: Vec<String>,
}

impl ZoneChanges {
    /// True when the same zones are served.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }

    /// One sentence for an event, a log line or a reply; `None` when nothing changed.
    #[must_use]
    pub fn describe(&self) -> Option<String> {
        let mut parts = Vec::new();
        if !self.removed.is_empty() {
            parts.push(format!(
                "local zone(s) removed: {} (their names are forwarded upstream now)",
                self.removed.join(", ")
            ));
        }
        if !self.added.is_empty() {
            parts.push(format!("local zone(s) added: {}", self.added.join(", ")));
        }
        (!parts.is_empty()).then(|| parts.join("; "))
    }
}

/// The parts of a configuration that make a policy: what a reload can change. The composed
/// configuration lends them ([`crate::config::Config::policy_sections`]); the policy never sees
/// the rest of it.
#[derive(Debug, Clone, Copy)]
pub struct PolicySections<'a> {
    /// `[upstream]`.
    pub upstream: &'a UpstreamConfig,
    /// `[zones]`.
    pub zones: &'a ZonesConfig,
    /// `[[groups]]`.
    pub groups: &'a [GroupConfig],
    /// Directory that relative paths resolve against.
    pub base_dir: &'a Path,
}

impl ActivePolicy {
    /// Build and validate a policy, collecting every problem.
    ///
    /// # Errors
    /// Every problem found, each with its location.
    pub fn build(cfg: &PolicySections<'_>) -> Result<Arc<Self>, ConfigProblems> {
        Self::compile(cfg).map(Arc::new)
    }

    /// Build and validate a policy with no version yet (stamp it before sharing it).
    ///
    /// # Errors
    /// Every problem found, each with its location.
    pub fn compile(cfg: &PolicySections<'_>) -> Result<Self, ConfigProblems> {
        let version = PolicyVersion::default();
        let mut problems = ConfigProblems::default();
        let base = cfg.base_dir;
        let mut upstreams = Upstreams::from_config(cfg.upstream, "upstream", &mut problems);
        let mut zones = ZoneSet::load(cfg.zones, base, &mut problems);
        if cfg.zones.defaults {
            zones.add_defaults(|origin| upstreams.forward_zone_overlaps(origin));
        }
        // A local zone's delegations are followed to their servers, as forward zones.
        upstreams.add_delegations(zones.delegations());
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
        problems.into_result(policy)
    }

    /// The local zones this policy serves that `old` did not, and those it no longer serves
    /// (whose names are forwarded upstream from now on), each sorted.
    #[must_use]
    pub fn zone_changes_since(&self, old: &ActivePolicy) -> ZoneChanges {
        let before: std::collections::BTreeSet<&str> = old.zones.origins().collect();
        let after: std::collections::BTreeSet<&str> = self.zones.origins().collect();
        ZoneChanges {
            added: after
                .difference(&before)
                .map(|z| (*z).to_string())
                .collect(),
            removed: before
                .difference(&after)
                .map(|z| (*z).to_string())
                .collect(),
        }
    }

    /// Cached answers that this policy would answer differently than `old` did: names under
    /// a local zone that `old` did not serve (the cache is consulted before zones), and
    /// names whose upstream changed.
    #[must_use]
    pub fn stale_answers_since(&self, old: &ActivePolicy) -> StaleAnswers {
        let mut zones = match self.upstreams.stale_since(&old.upstreams) {
            StaleAnswers::All => return StaleAnswers::All,
            StaleAnswers::None => Vec::new(),
            StaleAnswers::Under(z) => z,
        };
        let before: std::collections::HashSet<&str> = old.zones.all_origins().collect();
        zones.extend(
            self.zones
                .all_origins()
                .filter(|o| !before.contains(o))
                .map(Into::into),
        );
        if zones.is_empty() {
            StaleAnswers::None
        } else {
            StaleAnswers::Under(zones)
        }
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
