//! Per-group policy: which names a group may resolve, and what a blocked query gets.
//!
//! A group in `allowlist` mode (the default) resolves only names that match an allow rule; in
//! `denylist` mode it resolves everything but what a deny rule matches. Deny rules win over
//! allow rules in both modes, so an operator can carve `secrets.corp.internal` out of an
//! allowed `*.corp.internal`.
//!
//! Rules are exact names (`api.openai.com`) or wildcards (`*.corp.internal`). An allow wildcard
//! covers every name *below* the suffix but not the suffix itself: list `corp.internal` as well
//! to allow the apex; an exact allow rule allows that name only. A **deny** rule always covers
//! the name *and everything below it* (the safe default): denying `secrets.corp.internal` also
//! denies `db.secrets.corp.internal`, which an allowed `*.corp.internal` would otherwise let
//! through. Matching walks the query name's parents once against two hash sets, so its
//! cost is independent of how many rules a group has.

use std::collections::HashSet;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use crate::config_error::{ConfigProblems, DurationRange, FileProblems, excerpt};
use crate::names::{normalise, validate_name};
use crate::policy::verdict::Verdict;
use crate::wire::{self, Query, rcode, rtype};

/// Fast, seeded hasher for the rule sets (seeded per process, so not predictable by clients).
type RuleHasher = foldhash::fast::RandomState;

/// Whether a group is default-deny or default-allow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Only allowlisted names resolve (default).
    #[default]
    Allowlist,
    /// Everything resolves except denylisted names.
    Denylist,
}

/// What a blocked query is answered with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlockKind {
    /// NXDOMAIN (default): the name does not exist.
    #[default]
    Nxdomain,
    /// REFUSED: the server will not answer.
    Refused,
    /// A sinkhole address for A/AAAA, NODATA for other types.
    Sinkhole,
}

/// One group as written in the configuration (`[[groups]]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    /// Group name, used in events and metric labels.
    pub name: String,
    /// Source prefixes of the group's clients (IPv4 and IPv6).
    #[serde(default)]
    pub cidrs: Vec<String>,
    /// Verified agent identities of the group's clients: SPIFFE IDs or certificate DNS names,
    /// exact or a prefix ending in `*` (`spiffe://corp.example/agents/build/*`). An identity
    /// match wins over a source-address match.
    #[serde(default)]
    pub identities: Vec<String>,
    /// Serve members only with a credential (client certificate or token): their plain UDP/TCP
    /// queries are refused.
    #[serde(default)]
    pub require_auth: bool,
    /// `allowlist` (default) or `denylist`.
    #[serde(default)]
    pub mode: Mode,
    /// Allow rules: exact names or `*.suffix` wildcards.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Files of allow rules, one per line (`#` comments and hosts-file lines accepted).
    #[serde(default)]
    pub allow_files: Vec<PathBuf>,
    /// Deny rules; they win over allow rules.
    #[serde(default)]
    pub deny: Vec<String>,
    /// Files of deny rules.
    #[serde(default)]
    pub deny_files: Vec<PathBuf>,
    /// `nxdomain` (default), `refused` or `sinkhole`.
    #[serde(default)]
    pub block: BlockKind,
    /// Sinkhole IPv4 address (default 0.0.0.0).
    #[serde(default)]
    pub sinkhole_ipv4: Option<Ipv4Addr>,
    /// Sinkhole IPv6 address (default ::).
    #[serde(default)]
    pub sinkhole_ipv6: Option<Ipv6Addr>,
    /// TTL of block answers (default 60s, at most 1d): the sinkhole's records, and the SOA
    /// an NXDOMAIN or NODATA block answer carries for negative caching.
    #[serde(default = "default_block_ttl", with = "humantime_serde")]
    pub block_ttl: Duration,
    /// Tunnel-detection settings for this group.
    #[serde(default)]
    pub detect: crate::detect::GroupDetectConfig,
    /// Block forwarded answers that point at loopback, private (RFC 1918, ULA), link-local
    /// (169.254.169.254, cloud metadata), CGNAT or unspecified addresses, or at the resolver's
    /// own addresses: DNS rebinding (default on). Local zones and conditional forward zones
    /// are trusted and never checked.
    #[serde(default = "default_true")]
    pub block_private_answers: bool,
    /// Names (and everything below them) whose forwarded answers may be private addresses,
    /// like Unbound's `private-domain`.
    #[serde(default)]
    pub private_answers_allowed: Vec<String>,
    /// With an `[egress]` section: whether this group's connections are gated by its answers
    /// (default true; `false` opts the group out).
    #[serde(default = "default_egress")]
    pub egress: bool,
}

fn default_egress() -> bool {
    true
}

/// Accepted `block_ttl`: a block answer cached for longer than a day outlives the policy that
/// gave it (an unblocked name stays blocked in clients' caches), and far below RFC 2181's 2^31-1.
pub const BLOCK_TTL: DurationRange = DurationRange::up_to(Duration::from_secs(86_400));

fn default_block_ttl() -> Duration {
    Duration::from_secs(60)
}

/// How a rule matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleMatch<'a> {
    /// An exact-name rule.
    Exact(&'a str),
    /// A `*.suffix` rule; the field is the suffix.
    Wildcard(&'a str),
}

impl fmt::Display for RuleMatch<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(n) => f.write_str(n),
            Self::Wildcard(s) => write!(f, "*.{s}"),
        }
    }
}

/// A set of exact and wildcard rules.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    /// Exact names.
    exact: HashSet<Box<str>, RuleHasher>,
    /// Suffixes of `*.suffix` rules.
    wildcard: HashSet<Box<str>, RuleHasher>,
    /// The lengths of the exact names and of the suffixes, as bit sets: a name or parent of a
    /// length no rule has is not looked up (most of a name's parents, most queries).
    exact_lens: LengthSet,
    wildcard_lens: LengthSet,
}

/// The names that have an allowed name below them: every proper parent of an allow rule's
/// name, the root included, and a wildcard's suffix itself (`*.corp.internal` allows names
/// below `corp.internal`). Such a name, when it is not allowed itself, gets NODATA rather than
/// NXDOMAIN: an NXDOMAIN says nothing exists below it (RFC 8020), and a downstream cache that
/// takes it at its word would hide the allowed names.
#[derive(Debug, Clone, Default)]
pub struct Ancestors {
    names: HashSet<Box<str>, RuleHasher>,
    lens: LengthSet,
    root: bool,
}

impl Ancestors {
    /// The ancestors of `rules`' names.
    #[must_use]
    pub fn of(rules: &RuleSet) -> Self {
        let mut a = Self::default();
        let mut add = |name: &str| {
            if a.names.contains(name) {
                return false;
            }
            a.lens.insert(name.len());
            a.names.insert(name.into());
            true
        };
        let parents =
            |name: &str| -> Vec<usize> { name.match_indices('.').map(|(i, _)| i + 1).collect() };
        for exact in &rules.exact {
            for start in parents(exact) {
                if !add(&exact[start..]) {
                    break; // its parents are in already
                }
            }
        }
        for suffix in &rules.wildcard {
            if add(suffix) {
                for start in parents(suffix) {
                    if !add(&suffix[start..]) {
                        break;
                    }
                }
            }
        }
        a.root = !rules.is_empty();
        a
    }

    /// Whether an allowed name lies below `name` (lower-case, no trailing dot; the root is
    /// `.` or empty).
    #[must_use]
    pub fn hold(&self, name: &str) -> bool {
        if name.is_empty() || name == "." {
            return self.root;
        }
        self.lens.may_hold(name.len()) && self.names.contains(name)
    }
}

/// `name` in `set`, looked up only if `lens` says some member has its length.
fn lookup<'a>(
    set: &'a HashSet<Box<str>, RuleHasher>,
    lens: LengthSet,
    name: &str,
) -> Option<&'a str> {
    lens.may_hold(name.len())
        .then(|| set.get(name))
        .flatten()
        .map(|member| &**member)
}

/// A set of string lengths, 0 to 254 each, 255 standing for every longer one.
#[derive(Debug, Clone, Copy, Default)]
struct LengthSet([u64; 4]);

impl LengthSet {
    fn slot(len: usize) -> (usize, u64) {
        let len = len.min(255);
        (len / 64, 1 << (len % 64))
    }

    fn insert(&mut self, len: usize) {
        let (word, bit) = Self::slot(len);
        self.0[word] |= bit;
    }

    fn may_hold(&self, len: usize) -> bool {
        let (word, bit) = Self::slot(len);
        self.0[word] & bit != 0
    }

    fn union(self, other: Self) -> Self {
        Self(std::array::from_fn(|i| self.0[i] | other.0[i]))
    }

    /// The shortest and longest length held (the longest unbounded when 255, "every longer
    /// one", is held); `None` when empty.
    fn range(&self) -> Option<(usize, usize)> {
        let lowest = self.0.iter().position(|w| *w != 0)?;
        let highest = self.0.iter().rposition(|w| *w != 0)?;
        let min = lowest * 64 + self.0[lowest].trailing_zeros() as usize;
        let max = highest * 64 + 63 - self.0[highest].leading_zeros() as usize;
        Some((min, if max >= 255 { usize::MAX } else { max }))
    }
}

/// The parents of `name` (not `name` itself) whose length `lens` may hold, closest (longest)
/// first. Only the stretch of the name where a dot can start such a parent is searched: for
/// most queries no rule is as long as any parent but one, or none, and nothing is sliced.
fn parents_in(name: &str, lens: LengthSet) -> impl Iterator<Item = &str> {
    let n = name.len();
    // A parent of length `l` follows a dot at `n - l - 1`.
    let (from, to) = match lens.range() {
        Some((min, max)) => (
            n.saturating_sub(max.saturating_add(1)),
            n.checked_sub(min + 1),
        ),
        None => (0, None),
    };
    let window = to
        .filter(|to| from <= *to)
        .and_then(|to| name.as_bytes().get(from..=to))
        .unwrap_or_default();
    window.iter().enumerate().filter_map(move |(k, b)| {
        let start = from + k + 1;
        (*b == b'.' && lens.may_hold(n - start))
            .then(|| name.get(start..))
            .flatten()
            .filter(|p| !p.is_empty())
    })
}

impl RuleSet {
    /// Add a rule (already normalised and validated).
    pub fn add(&mut self, rule: &str) {
        match rule.strip_prefix("*.") {
            Some(suffix) => {
                self.wildcard_lens.insert(suffix.len());
                self.wildcard.insert(suffix.into())
            }
            None => {
                self.exact_lens.insert(rule.len());
                self.exact.insert(rule.into())
            }
        };
    }

    /// Number of rules.
    #[must_use]
    pub fn len(&self) -> usize {
        self.exact.len() + self.wildcard.len()
    }

    /// True when there are no rules.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The deny rule that covers `name` (lower-case, no trailing dot): an exact rule for the
    /// name or any of its parents, or a wildcard for a parent; the closest wins.
    #[must_use]
    pub fn find_covering(&self, name: &str) -> Option<RuleMatch<'_>> {
        if self.is_empty() {
            // Most groups deny nothing explicitly (allowlist mode): no walk up the name.
            return None;
        }
        if let Some(e) = self.exact(name) {
            return Some(RuleMatch::Exact(e));
        }
        parents_in(name, self.exact_lens.union(self.wildcard_lens)).find_map(|parent| {
            self.exact(parent)
                .map(RuleMatch::Exact)
                .or_else(|| self.wildcard(parent).map(RuleMatch::Wildcard))
        })
    }

    /// The allow rule that matches `name` (lower-case, no trailing dot), preferring the exact
    /// rule, then the closest wildcard.
    #[must_use]
    pub fn find(&self, name: &str) -> Option<RuleMatch<'_>> {
        if let Some(e) = self.exact(name) {
            return Some(RuleMatch::Exact(e));
        }
        if self.wildcard.is_empty() {
            return None;
        }
        parents_in(name, self.wildcard_lens)
            .find_map(|parent| self.wildcard(parent))
            .map(RuleMatch::Wildcard)
    }

    /// The exact rule `name`, looked up only if some exact rule has its length.
    fn exact(&self, name: &str) -> Option<&str> {
        lookup(&self.exact, self.exact_lens, name)
    }

    /// The wildcard suffix `name`, looked up only if some suffix has its length.
    fn wildcard(&self, name: &str) -> Option<&str> {
        lookup(&self.wildcard, self.wildcard_lens, name)
    }
}

/// The answer a blocked query gets, pre-resolved from the group's config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockAnswer {
    /// The kind of answer.
    pub kind: BlockKind,
    /// Sinkhole IPv4 address.
    pub ipv4: Ipv4Addr,
    /// Sinkhole IPv6 address.
    pub ipv6: Ipv6Addr,
    /// TTL of sinkhole records.
    pub ttl: u32,
}

impl BlockAnswer {
    /// The verdict string for events and metrics.
    #[must_use]
    pub fn verdict(&self) -> Verdict {
        match self.kind {
            BlockKind::Sinkhole => Verdict::Sinkhole,
            BlockKind::Nxdomain | BlockKind::Refused => Verdict::Block,
        }
    }

    /// NODATA with the negative SOA: the NXDOMAIN block answer for a name with allowed names
    /// below it ([`Ancestors`]).
    #[must_use]
    pub fn encode_nodata(&self, q: &Query<'_>) -> Vec<u8> {
        let mut out = wire::start_response(q, rcode::NOERROR, false);
        wire::push_negative_soa(&mut out, self.ttl);
        out
    }

    /// Encode the block answer for `q` (not yet finished: see [`wire::finish_response`]).
    #[must_use]
    pub fn encode(&self, q: &Query<'_>) -> Vec<u8> {
        match self.kind {
            BlockKind::Nxdomain => {
                let mut out = wire::start_response(q, rcode::NXDOMAIN, false);
                wire::push_negative_soa(&mut out, self.ttl);
                out
            }
            BlockKind::Refused => wire::start_response(q, rcode::REFUSED, false),
            BlockKind::Sinkhole => {
                let mut out = wire::start_response(q, rcode::NOERROR, false);
                match q.qtype {
                    rtype::A => wire::push_a(&mut out, self.ttl, self.ipv4),
                    rtype::AAAA => wire::push_aaaa(&mut out, self.ttl, self.ipv6),
                    // NODATA: cached for the block TTL as the records would be.
                    _ => wire::push_negative_soa(&mut out, self.ttl),
                }
                out
            }
        }
    }
}

/// A validated group, ready for the query path.
#[derive(Debug, Clone)]
pub struct Group {
    /// Group name.
    pub name: Arc<str>,
    /// Source prefixes.
    pub cidrs: Vec<IpNet>,
    /// Agent identity patterns (validated).
    pub identities: Vec<Box<str>>,
    /// Whether members must authenticate (DoT/DoH with a certificate or token).
    pub require_auth: bool,
    /// Default-deny or default-allow.
    pub mode: Mode,
    /// Allow rules.
    pub allow: RuleSet,
    /// The names with an allowed name below them (NODATA, not NXDOMAIN, when not allowed).
    pub allow_ancestors: Ancestors,
    /// Deny rules.
    pub deny: RuleSet,
    /// Block answer.
    pub block: BlockAnswer,
    /// Tunnel-detection settings.
    pub detect: crate::detect::GroupDetectConfig,
    /// Block forwarded answers with private or internal addresses.
    pub block_private_answers: bool,
    /// Names whose forwarded answers may be private (they and everything below them).
    pub private_answers_allowed: RuleSet,
    /// Whether the group's connections are gated by its answers (when `[egress]` is present).
    pub egress: bool,
}

/// What the policy says about a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision<'a> {
    /// Resolve it; `rule` is the allow rule that matched (none in denylist mode).
    Allow {
        /// The matching allow rule.
        rule: Option<RuleMatch<'a>>,
    },
    /// Block it.
    Block {
        /// The deny rule that matched, or `None` for "not allowlisted".
        rule: Option<RuleMatch<'a>>,
    },
    /// Not on an allowlist, but inside one of the built-in zones every resolver answers itself
    /// (`localhost`, the private reverse zones, `invalid`, …): answered from that zone, never
    /// forwarded, so it discloses nothing an allowlist guards. A deny rule still blocks it.
    BuiltIn,
}

impl Decision<'_> {
    /// Human-readable reason for events.
    #[must_use]
    pub fn reason(&self) -> String {
        match self {
            Self::Allow { rule: Some(r) } => format!("allow rule {r}"),
            Self::Allow { rule: None } => "not denylisted".to_string(),
            Self::Block { rule: Some(r) } => format!("deny rule {r}"),
            Self::Block { rule: None } => "not allowlisted".to_string(),
            Self::BuiltIn => "built-in zone".to_string(),
        }
    }

    /// Whether the name may be resolved.
    #[must_use]
    pub fn is_allowed(&self) -> bool {
        matches!(self, Self::Allow { .. } | Self::BuiltIn)
    }
}

impl Group {
    /// As [`Self::decide`], with the built-in zones of `zones` answered for every member:
    /// an allowlist that does not list `localhost` or `10.in-addr.arpa` still gets
    /// `localhost`'s address and the private reverse zones' NXDOMAIN, as from Unbound, instead
    /// of a policy block for each routine lookup. What a deny rule covers stays blocked.
    #[must_use]
    pub fn decide_in(&self, zones: &crate::resolve::zones::ZoneSet, name: &str) -> Decision<'_> {
        match self.decide(name) {
            Decision::Block { rule: None } if zones.serves_built_in(name) => Decision::BuiltIn,
            d => d,
        }
    }

    /// Decide whether this group may resolve `name` (lower-case, no trailing dot).
    #[must_use]
    pub fn decide(&self, name: &str) -> Decision<'_> {
        if let Some(rule) = self.deny.find_covering(name) {
            return Decision::Block { rule: Some(rule) };
        }
        match self.mode {
            Mode::Allowlist => match self.allow.find(name) {
                Some(rule) => Decision::Allow { rule: Some(rule) },
                None => Decision::Block { rule: None },
            },
            Mode::Denylist => Decision::Allow {
                rule: self.allow.find(name),
            },
        }
    }

    /// Build a group from its config, pushing every problem found. `at` is the config key
    /// (`groups[0]`), `base_dir` resolves relative list files. Returns the group and the list
    /// files it read (for policy hashing).
    pub fn from_config(
        cfg: &GroupConfig,
        at: &str,
        base_dir: &Path,
        problems: &mut ConfigProblems,
    ) -> (Self, Vec<PathBuf>) {
        let mut files = Vec::new();
        if cfg.name.trim().is_empty() {
            problems.push(format!("{at}.name"), "group name must not be empty");
        } else if let Some(why) = crate::printable::rejected_char(&cfg.name, false) {
            // It is printed in events, alerts and the console: one line of plain text.
            problems.push(format!("{at}.name"), format!("group name {why}"));
        }
        let mut cidrs = Vec::new();
        for (i, c) in cfg.cidrs.iter().enumerate() {
            match parse_cidr(c) {
                Ok(net) => cidrs.push(net),
                Err(e) => problems.push(format!("{at}.cidrs[{i}]"), e),
            }
        }
        let mut identities = Vec::new();
        for (i, p) in cfg.identities.iter().enumerate() {
            match crate::policy::identities::validate_pattern(p) {
                Ok(()) => identities.push(p.as_str().into()),
                Err(e) => problems.push(format!("{at}.identities[{i}]"), format!("{p:?}: {e}")),
            }
        }
        let mut allow = RuleSet::default();
        let mut deny = RuleSet::default();
        for (i, r) in cfg.allow.iter().enumerate() {
            add_rule(&mut allow, r, &format!("{at}.allow[{i}]"), problems);
        }
        for (i, r) in cfg.deny.iter().enumerate() {
            add_rule(&mut deny, r, &format!("{at}.deny[{i}]"), problems);
        }
        for (list, set) in [(&cfg.allow_files, &mut allow), (&cfg.deny_files, &mut deny)] {
            for f in list {
                let path = base_dir.join(f);
                load_list(&path, set, problems);
                files.push(path);
            }
        }
        if cfg.mode == Mode::Allowlist && allow.is_empty() {
            problems.push(
                format!("{at}.allow"),
                "allowlist group has no allow rules: every query would be blocked",
            );
        }
        let block = BlockAnswer {
            kind: cfg.block,
            ipv4: cfg.sinkhole_ipv4.unwrap_or(Ipv4Addr::UNSPECIFIED),
            ipv6: cfg.sinkhole_ipv6.unwrap_or(Ipv6Addr::UNSPECIFIED),
            ttl: u32::try_from(BLOCK_TTL.clamp(cfg.block_ttl).as_secs())
                .unwrap_or(wire::MAX_TTL)
                .min(wire::MAX_TTL),
        };
        problems.check_duration(format!("{at}.block_ttl"), cfg.block_ttl, BLOCK_TTL);
        if cfg.block != BlockKind::Sinkhole
            && (cfg.sinkhole_ipv4.is_some() || cfg.sinkhole_ipv6.is_some())
        {
            problems.push(
                format!("{at}.block"),
                "sinkhole addresses are set but block is not \"sinkhole\"",
            );
        }
        cfg.detect.validate(&format!("{at}.detect"), problems);
        let mut private_answers_allowed = RuleSet::default();
        for (i, r) in cfg.private_answers_allowed.iter().enumerate() {
            add_rule(
                &mut private_answers_allowed,
                r,
                &format!("{at}.private_answers_allowed[{i}]"),
                problems,
            );
        }
        let group = Self {
            name: Arc::from(cfg.name.trim()),
            cidrs,
            identities,
            require_auth: cfg.require_auth,
            mode: cfg.mode,
            allow_ancestors: Ancestors::of(&allow),
            allow,
            deny,
            block,
            detect: cfg.detect.clone(),
            block_private_answers: cfg.block_private_answers,
            private_answers_allowed,
            egress: cfg.egress,
        };
        (group, files)
    }
}

fn default_true() -> bool {
    true
}

/// Parse a CIDR (`10.0.0.0/8`) or a bare address (a /32 or /128).
///
/// # Errors
/// A message saying what is wrong with the text.
pub fn parse_cidr(text: &str) -> Result<IpNet, String> {
    let t = text.trim();
    let net = if let Ok(net) = t.parse::<IpNet>() {
        if net.trunc() != net {
            return Err(format!(
                "{t:?} has host bits set; did you mean {}?",
                net.trunc()
            ));
        }
        net
    } else {
        t.parse::<std::net::IpAddr>()
            .map(IpNet::from)
            .map_err(|_| format!("{t:?} is not a CIDR prefix or an IP address"))?
    };
    // Clients are matched by their IPv4 address whatever socket they came in on (a mapped
    // source is read as IPv4), so a prefix inside ::ffff:0:0/96 would never match anyone.
    if let IpNet::V6(v6) = net
        && v6.prefix_len() >= 96
        && let Some(v4) = v6.network().to_ipv4_mapped()
    {
        return Err(format!(
            "{t:?} is an IPv4-mapped IPv6 prefix, which no client is matched by; write it as \
             IPv4: {v4}/{}",
            v6.prefix_len() - 96
        ));
    }
    Ok(net)
}

fn add_rule(set: &mut RuleSet, raw: &str, at: &str, problems: &mut ConfigProblems) {
    if let Err(e) = check_rule(set, raw) {
        problems.push(at, format!("{raw:?}: {e}"));
    }
}

/// Add one rule to `set`, or say why it is not one (without repeating it).
fn check_rule(set: &mut RuleSet, raw: &str) -> Result<(), String> {
    let rule = normalise(raw);
    let check = rule.strip_prefix("*.").unwrap_or(&rule);
    validate_name(check)?;
    if check.contains('*') {
        return Err("only a leading \"*.\" wildcard is supported".into());
    }
    set.add(&rule);
    Ok(())
}

/// Read a list file into `set`: one name per line, `#` comments, blank lines, and hosts-file
/// lines (`0.0.0.0 name [name…]`) accepted. Problems carry `path:line` and quote at most a
/// short excerpt of the name or line; past a few, a file's problems are only counted
/// ([`FileProblems`]): a path that names some other file (a key, `/etc/shadow`) must not copy
/// it into a reload's reply and the event log.
pub fn load_list(path: &Path, set: &mut RuleSet, problems: &mut ConfigProblems) {
    let text = match crate::config_error::read_text_file(path, crate::config_error::MAX_LIST_FILE) {
        Ok(t) => t,
        Err(e) => {
            problems.push(
                path.display().to_string(),
                format!("cannot read list file: {e}"),
            );
            return;
        }
    };
    let mut file = FileProblems::new(path.display().to_string(), problems);
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let names = match fields.as_slice() {
            [_] => &fields[..1],
            [first, rest @ ..] if first.parse::<std::net::IpAddr>().is_ok() => rest,
            _ => {
                file.push(
                    i + 1,
                    format!(
                        "{}: expected one name, or a hosts-file line \"ADDRESS NAME…\"",
                        excerpt(line)
                    ),
                );
                continue;
            }
        };
        for name in names {
            if let Err(e) = check_rule(set, name) {
                file.push(i + 1, format!("{}: {e}", excerpt(name)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(mode: Mode, allow: &[&str], deny: &[&str]) -> Group {
        let mut cfg: GroupConfig = toml::from_str("name = \"g\"").unwrap();
        cfg.mode = mode;
        cfg.allow = allow.iter().map(|s| (*s).to_string()).collect();
        cfg.deny = deny.iter().map(|s| (*s).to_string()).collect();
        let mut p = ConfigProblems::default();
        let (g, _) = Group::from_config(&cfg, "groups[0]", Path::new("."), &mut p);
        assert!(p.is_empty(), "{p}");
        g
    }

    #[test]
    fn the_ancestors_of_allowed_names_are_their_parents_and_wildcard_suffixes() {
        let g = group(
            Mode::Allowlist,
            &[
                "api.corp.internal",
                "*.apps.corp.internal",
                "www.example",
                "b.a.corp.internal",
            ],
            &[],
        );
        let a = &g.allow_ancestors;
        for name in [
            "corp.internal",
            "internal",
            "apps.corp.internal",
            "a.corp.internal",
            "example",
            ".",
            "",
        ] {
            assert!(a.hold(name), "{name}");
        }
        for name in [
            "api.corp.internal",
            "x.corp.internal",
            "com",
            "b.a.corp.internal",
            "xample",
        ] {
            assert!(!a.hold(name), "{name}");
        }
        assert!(!Ancestors::default().hold("."), "no rules, no ancestors");
    }

    #[test]
    fn cidrs_are_checked_and_an_ipv4_mapped_prefix_is_refused_with_its_ipv4_form() {
        assert_eq!(
            parse_cidr(" 10.0.0.0/8 ").unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(parse_cidr("::1").unwrap().to_string(), "::1/128");
        assert!(
            parse_cidr("10.0.0.1/8")
                .unwrap_err()
                .contains("did you mean 10.0.0.0/8")
        );
        // No client is ever matched by a mapped address: sources are read as IPv4.
        let e = parse_cidr("::ffff:127.0.2.10/128").unwrap_err();
        assert!(e.contains("write it as IPv4: 127.0.2.10/32"), "{e}");
        let e = parse_cidr("::ffff:10.1.0.0/112").unwrap_err();
        assert!(e.contains("10.1.0.0/16"), "{e}");
        assert!(parse_cidr("2001:db8::/32").is_ok());
        assert!(
            parse_cidr("::/0").is_ok(),
            "the whole IPv6 space is not a mapped prefix"
        );
    }

    #[test]
    fn rule_lookups_agree_with_a_plain_walk_up_the_name() {
        // The windowed parent search against the obvious walk over every parent, for random
        // rule sets and names built from labels of different lengths (one past 255 characters).
        let long = "\\255".repeat(70);
        let labels = ["a", "bb", "ccc", "d-d", "example", "x", long.as_str()];
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |n: usize| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            usize::try_from(x % n as u64).unwrap()
        };
        let name = |next: &mut dyn FnMut(usize) -> usize| {
            let count = 1 + next(4);
            (0..count)
                .map(|_| labels[next(labels.len())])
                .collect::<Vec<_>>()
                .join(".")
        };
        for _ in 0..400 {
            let mut set = RuleSet::default();
            let mut exact = Vec::new();
            let mut wild = Vec::new();
            for _ in 0..next(6) {
                let rule = name(&mut next);
                if next(2) == 0 {
                    set.add(&rule);
                    exact.push(rule);
                } else {
                    set.add(&format!("*.{rule}"));
                    wild.push(rule);
                }
            }
            for _ in 0..20 {
                let q = name(&mut next);
                let parents: Vec<&str> = crate::names::self_and_parents(&q).collect();
                let want_find = if exact.contains(&q) {
                    Some((true, q.clone()))
                } else {
                    parents[1..]
                        .iter()
                        .find(|p| wild.iter().any(|w| w == *p))
                        .map(|p| (false, (*p).to_string()))
                };
                let want_covering = parents.iter().enumerate().find_map(|(i, p)| {
                    if exact.iter().any(|e| e == p) {
                        Some((true, (*p).to_string()))
                    } else if i > 0 && wild.iter().any(|w| w == p) {
                        Some((false, (*p).to_string()))
                    } else {
                        None
                    }
                });
                let got = |m: Option<RuleMatch<'_>>| {
                    m.map(|m| match m {
                        RuleMatch::Exact(e) => (true, e.to_string()),
                        RuleMatch::Wildcard(w) => (false, w.to_string()),
                    })
                };
                assert_eq!(
                    got(set.find(&q)),
                    want_find,
                    "find {q} in {exact:?} {wild:?}"
                );
                assert_eq!(
                    got(set.find_covering(&q)),
                    want_covering,
                    "covering {q} in {exact:?} {wild:?}"
                );
            }
        }
    }

    #[test]
    fn rules_are_found_whatever_the_lengths_of_the_other_rules() {
        // The length filter skips lookups; it must never skip a rule that is there, short,
        // long (an escaped name past 255 characters shares the last length slot) or alone.
        let long_label = "\\255".repeat(60); // 240 characters of presentation form
        let long_exact = format!("{long_label}.x.example");
        let long_suffix = format!("y.{long_label}.example");
        let mut set = RuleSet::default();
        for rule in ["a.b", "*.c.d", &long_exact, &format!("*.{long_suffix}")] {
            set.add(rule);
        }
        assert!(matches!(set.find("a.b"), Some(RuleMatch::Exact(_))));
        assert!(matches!(set.find("e.c.d"), Some(RuleMatch::Wildcard(_))));
        assert!(matches!(set.find(&long_exact), Some(RuleMatch::Exact(_))));
        assert!(matches!(
            set.find(&format!("z.{long_suffix}")),
            Some(RuleMatch::Wildcard(_))
        ));
        for miss in [
            "a.c",
            "c.d",
            "b",
            "zz.a.b",
            &format!("{long_label}.y.example"),
        ] {
            assert!(set.find(miss).is_none(), "{miss}");
            assert!(
                set.find_covering(miss).is_none() || miss == "zz.a.b",
                "{miss}"
            );
        }
        assert!(matches!(
            set.find_covering("zz.a.b"),
            Some(RuleMatch::Exact(_))
        ));
        assert!(matches!(
            set.find_covering("q.e.c.d"),
            Some(RuleMatch::Wildcard(_))
        ));
    }

    #[test]
    fn wildcards_cover_subdomains_but_not_the_apex() {
        let g = group(
            Mode::Allowlist,
            &["*.corp.internal", "API.OpenAI.com."],
            &[],
        );
        assert!(g.decide("a.corp.internal").is_allowed());
        assert!(g.decide("x.y.corp.internal").is_allowed());
        assert!(!g.decide("corp.internal").is_allowed());
        assert!(!g.decide("evilcorp.internal").is_allowed());
        assert!(g.decide("api.openai.com").is_allowed());
        assert!(!g.decide("x.api.openai.com").is_allowed());
        assert_eq!(g.decide("other.com").reason(), "not allowlisted");
    }

    #[test]
    fn deny_wins_over_allow_in_both_modes() {
        let g = group(
            Mode::Allowlist,
            &["*.corp.internal"],
            &["secrets.corp.internal"],
        );
        assert_eq!(
            g.decide("secrets.corp.internal"),
            Decision::Block {
                rule: Some(RuleMatch::Exact("secrets.corp.internal"))
            }
        );
        // A deny rule covers everything below the name too.
        assert_eq!(
            g.decide("db.secrets.corp.internal"),
            Decision::Block {
                rule: Some(RuleMatch::Exact("secrets.corp.internal"))
            }
        );
        assert!(g.decide("notsecrets.corp.internal").is_allowed());
        assert!(g.decide("other.corp.internal").is_allowed());
        let g = group(Mode::Denylist, &[], &["*.bad.example"]);
        assert!(g.decide("anything.example").is_allowed());
        assert!(
            g.decide("bad.example").is_allowed(),
            "a wildcard is below the apex"
        );
        assert_eq!(
            g.decide("x.bad.example").reason(),
            "deny rule *.bad.example"
        );
    }

    #[test]
    fn list_files_accept_comments_and_hosts_lines_and_report_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("list.txt");
        std::fs::write(
            &path,
            "# comment\n\nexample.com\n0.0.0.0 ads.example.net tracker.example.net # x\n*.cdn.example\nbad name!\n",
        )
        .unwrap();
        let mut set = RuleSet::default();
        let mut p = ConfigProblems::default();
        load_list(&path, &mut set, &mut p);
        assert_eq!(set.len(), 4);
        assert!(set.find("y.cdn.example").is_some());
        assert_eq!(p.len(), 1, "{p}");
        assert!(p.problems[0].location.ends_with("list.txt:6"));
    }

    #[test]
    fn a_file_that_is_not_a_list_is_not_copied_into_the_problems() {
        // A token (one 64-digit label) and shadow-like lines: every line is a problem.
        let token = "5f2b8c0e9a7d4163b2e1f0a9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9";
        let mut text = format!("{token}\n");
        for i in 0..40 {
            text.push_str(&format!(
                "user{i}:$y$j9T$saltsaltsalt$hashhashhashhashhash:20228:0:99999:7:::\n"
            ));
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, &text).unwrap();
        let mut set = RuleSet::default();
        let mut p = ConfigProblems::default();
        load_list(&path, &mut set, &mut p);
        assert_eq!(set.len(), 0);
        // A few problems in full, the rest summed up by line number.
        assert_eq!(p.len(), crate::config_error::PROBLEMS_PER_FILE + 1, "{p}");
        assert!(p.problems[0].location.ends_with("secret:1"), "{p}");
        assert!(
            p.problems[0]
                .message
                .contains("a label is 64 bytes long, the limit is 63"),
            "{p}"
        );
        assert!(p.problems[1].location.ends_with("secret:2"), "{p}");
        assert!(
            p.problems[1]
                .message
                .starts_with("\"user0:$y$j9T$saltsaltsal\"…: "),
            "{p}"
        );
        assert!(
            p.problems
                .last()
                .unwrap()
                .message
                .starts_with("36 more problem(s)"),
            "{p}"
        );
        // No problem quotes more than an excerpt of a line: not the token, not a hash.
        let all = p.to_string();
        assert!(!all.contains(&token[..25]), "{all}");
        assert!(!all.contains("hashhash"), "{all}");
        for line in text.lines() {
            assert!(!all.contains(&line[..line.len().min(30)]), "{all}");
        }
    }

    #[test]
    fn bad_group_config_reports_every_problem() {
        let cfg: GroupConfig = toml::from_str(
            "name = \"g\"\ncidrs = [\"10.0.0.1/8\", \"nope\"]\nallow = [\"a..b\", \"x.*.y\"]\nallow_files = [\"/nonexistent/list\"]",
        )
        .unwrap();
        let mut p = ConfigProblems::default();
        let _ = Group::from_config(&cfg, "groups[0]", Path::new("."), &mut p);
        assert_eq!(p.len(), 6, "{p}");
    }

    #[test]
    fn sinkhole_answers_addresses_and_nodata() {
        let g = BlockAnswer {
            kind: BlockKind::Sinkhole,
            ipv4: Ipv4Addr::new(192, 0, 2, 66),
            ipv6: Ipv6Addr::UNSPECIFIED,
            ttl: 30,
        };
        let p = crate::wire::tests::query_bytes("x.example", rtype::A, None);
        let q = crate::wire::parse_query(&p).unwrap();
        assert_eq!(wire::answer_count(&g.encode(&q)), 1);
        let p = crate::wire::tests::query_bytes("x.example", rtype::TXT, None);
        let q = crate::wire::parse_query(&p).unwrap();
        let r = g.encode(&q);
        assert_eq!(wire::answer_count(&r), 0);
        assert_eq!(wire::rcode_of(&r), 0);
    }

    /// A blocked name's NXDOMAIN, and a sinkhole's NODATA, carry an SOA whose TTL and MINIMUM
    /// are the block TTL (RFC 2308: no SOA, no negative caching); the whole answer, finished
    /// with its OPT and EDE, decodes as a well-formed message.
    #[test]
    fn negative_block_answers_carry_an_soa_for_negative_caching() {
        use hickory_proto::op::Message;
        use hickory_proto::rr::RData;
        for (kind, qtype, want_rcode) in [
            (BlockKind::Nxdomain, rtype::A, 3),
            (BlockKind::Nxdomain, rtype::TXT, 3),
            (BlockKind::Sinkhole, rtype::TXT, 0),
            (BlockKind::Sinkhole, 65, 0),
        ] {
            let g = BlockAnswer {
                kind,
                ipv4: Ipv4Addr::UNSPECIFIED,
                ipv6: Ipv6Addr::UNSPECIFIED,
                ttl: 45,
            };
            let p = crate::wire::tests::query_bytes("Deep.X.Example", qtype, Some(1232));
            let q = crate::wire::parse_query(&p).unwrap();
            let mut r = g.encode(&q);
            wire::finish_response_with(
                &mut r,
                &q,
                1232,
                Some(crate::wire::Ede {
                    code: 15,
                    text: "blocked by policy",
                }),
            );
            let m = Message::from_vec(&r).unwrap();
            assert_eq!(wire::rcode_of(&r), want_rcode, "{kind:?} {qtype}");
            assert!(m.answers.is_empty());
            assert_eq!(m.authorities.len(), 1, "{kind:?} {qtype}");
            let soa = &m.authorities[0];
            assert_eq!(soa.name.to_ascii(), "Deep.X.Example.");
            assert_eq!(soa.ttl, 45);
            let RData::SOA(s) = &soa.data else {
                panic!("not an SOA: {soa:?}")
            };
            assert_eq!(s.minimum, 45);
            assert_eq!(s.mname.to_ascii(), "dnsward.invalid.");
            assert_eq!(s.rname.to_ascii(), "hostmaster.dnsward.invalid.");
            assert!(m.edns.is_some(), "the OPT record still ends it");
        }
        // REFUSED is not cached: no SOA.
        let g = BlockAnswer {
            kind: BlockKind::Refused,
            ipv4: Ipv4Addr::UNSPECIFIED,
            ipv6: Ipv6Addr::UNSPECIFIED,
            ttl: 45,
        };
        let p = crate::wire::tests::query_bytes("x.example", rtype::A, None);
        let q = crate::wire::parse_query(&p).unwrap();
        let r = g.encode(&q);
        assert_eq!(u16::from_be_bytes([r[8], r[9]]), 0);
    }
}
