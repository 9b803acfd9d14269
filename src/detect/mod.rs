//! Tunnel and exfiltration detection: scores every query, per client and registrable domain.
//!
//! The pipeline calls [`Detector::observe`] for every query from an identified client (allowed
//! or not) and [`Detector::observe_answer_at`] once an upstream answer is known (its rcode and,
//! for carrier types such as TXT or NULL, its size: the downstream half of a tunnel). Each call:
//! 1. scores the name's *appearance* from cheap features ([`features`], [`ngram`],
//!    [`score::query_score`]); a name under an exception ([`exceptions`], matched on a suffix)
//!    gets no appearance points but is otherwise counted like any other,
//! 2. estimates the *information* the name carries from its alphabet and structure, and counts
//!    it only when the name is novel: not asked recently by this key, not asked first by another
//!    client ([`volume`]), and only what it adds beyond the key's last few names ([`floor`]:
//!    `host124` after `host123` adds 2 bits),
//! 3. adds it to three bounded tables: per (client, registrable domain), per client (across
//!    domains, so spreading over many domains does not help) and per registrable domain (the
//!    fleet-wide view, and prevalence: how many clients use it, since when); each keeps a short,
//!    a detection and a long sliding window ([`window`]) with a distinct-name sketch ([`sketch`]).
//!    Answers go to the same three: a domain's answers count client-wide an 80th up to what
//!    looking at a domain takes, in full past it, so a tunnel hopping to a new domain whenever
//!    its last one is contained is still one client's evidence; a domain no other client asks
//!    counts by its answers' size within that too, so one hopping sooner is bounded as well;
//!    and a registrable domain new
//!    to the client and to the fleet counts its own first label client-wide (beyond what a
//!    brand name carries), so data in `<label>.duckdns.org` is not free,
//! 4. scores them ([`score::domain_score`]): the (client, domain) or client-wide score, compared
//!    against the group's thresholds, gives the [`Level`] and an [`AlertEvent`] when one is due.
//!    The domain-wide score can only raise an alert: one client's queries never contain another.
//!
//! The detector only assesses; the pipeline decides what to do with the level (see
//! [`crate::contain`]). Memory is bounded by [`DetectConfig`]'s `max_*` keys and
//! `shared_name_slots` whatever the traffic.

pub mod addresses;
pub mod config;
pub mod exceptions;
pub mod features;
pub mod floor;
pub mod memo;
pub mod ngram;
pub mod score;
pub mod sketch;
mod table;
pub mod template;
#[doc(hidden)]
pub mod testgen;
pub mod volume;
pub mod window;

use std::hash::{BuildHasher, Hasher, RandomState};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;

pub use self::config::{DetectConfig, GroupDetectConfig};
use self::exceptions::ExceptionSet;
use self::score::{Breakdown, Evidence, HIGH_QUERY_SCORE, Scope, VolumeTrip};
use self::table::BoundedTable;
use self::volume::{Budgets, LastAsker, RecentNames, SharedNames};
use self::window::SlidingWindow;
use crate::clock::SharedClock;
use crate::events::{AlertEvent, VolumeEvidence, WindowCounts};
use crate::identity::ClientKey;
use crate::metrics::DETECTOR_TRACKED_KEYS;
use crate::names::subdomain_part;
use crate::recall::{ClientSlots, NameSlots};

thread_local! {
    /// Per thread: query names' `(subdomain hash, domain hash, domain length)`; 2,048
    /// entries of 88 bytes (176 KiB a thread).
    static NAME_KEYS: std::cell::RefCell<NameSlots<(u64, u64, u8)>> =
        std::cell::RefCell::new(NameSlots::new(2048));
    /// Per thread: address-keyed clients' hashes.
    static CLIENT_KEYS: std::cell::RefCell<ClientSlots<16>> =
        const { std::cell::RefCell::new(ClientSlots::new()) };
}

/// How far a score went: each level includes the ones below it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// Below the alert threshold.
    #[default]
    None,
    /// Alert only.
    Alert,
    /// Slow the (client, domain) down.
    Throttle,
    /// Answer the domain with a sinkhole for the client (or its group).
    Sinkhole,
    /// Cut the whole client off.
    Quarantine,
}

impl Level {
    /// Stable name used in events and metric labels.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Alert => "alert",
            Self::Throttle => "throttle",
            Self::Sinkhole => "sinkhole",
            Self::Quarantine => "quarantine",
        }
    }
}

/// One query, as the detector sees it.
#[derive(Debug, Clone, Copy)]
pub struct Observation<'a> {
    /// The client: its verified agent identity when known, else its socket address.
    pub client: &'a ClientKey,
    /// The client's group.
    pub group: &'a str,
    /// Query name: lower-case, dotted, no trailing dot.
    pub qname: &'a str,
    /// Its registrable domain, from [`crate::names::registrable_domain`].
    pub domain: &'a str,
    /// Query type code.
    pub qtype: u16,
    /// The group's detection settings.
    pub settings: &'a GroupDetectConfig,
}

/// An answer fresh from upstream, as [`Detector::observe_answer_at`] reads it.
#[derive(Clone, Copy)]
pub struct FreshAnswer<'a> {
    /// Whether it is NXDOMAIN.
    pub nxdomain: bool,
    /// Its bytes after the question.
    pub bytes: usize,
    /// Records in its answer section (0: a negative answer, whose bytes carry nothing).
    pub answers: u16,
    /// Feeds the hasher what the answer says: everything after its ID, TTLs included.
    pub content: &'a dyn Fn(&mut dyn Hasher),
    /// As `content` without the TTLs: what its records say.
    pub records: &'a dyn Fn(&mut dyn Hasher),
    /// The A and AAAA addresses in its answer section.
    pub addresses: &'a [IpAddr],
    /// The CNAME targets in its answer section (presentation form).
    pub cname_targets: &'a [Box<str>],
    /// The SRV and MX targets in its answer section, with their records' other fields.
    pub host_targets: &'a [crate::wire::HostTarget],
    /// Encoded bytes of its RRSIG, NSEC and NSEC3 records (only a DO client gets any).
    pub signed_bytes: usize,
}

impl FreshAnswer<'static> {
    /// An answer known only by its rcode (nothing in it counts as downstream data).
    #[must_use]
    pub fn rcode_only(nxdomain: bool) -> Self {
        Self {
            nxdomain,
            bytes: 0,
            answers: 0,
            content: &|_| {},
            records: &|_| {},
            addresses: &[],
            cname_targets: &[],
            host_targets: &[],
            signed_bytes: 0,
        }
    }
}

impl std::fmt::Debug for FreshAnswer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FreshAnswer")
            .field("nxdomain", &self.nxdomain)
            .field("bytes", &self.bytes)
            .field("addresses", &self.addresses)
            .field("cname_targets", &self.cname_targets)
            .finish_non_exhaustive()
    }
}

/// The detector's verdict on one query.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Assessment {
    /// This query alone, 0–100.
    pub query_score: u8,
    /// This client's own evidence over its windows, 0–100: the higher of its (client, domain)
    /// score and its client-wide score. Never the fleet-wide score: another client's queries
    /// cannot raise it.
    pub domain_score: u8,
    /// What the thresholds are compared against (the domain score: one odd name alone never
    /// contains a client).
    pub score: u8,
    /// Highest threshold crossed; computed in monitor-only mode too.
    pub level: Level,
    /// Set only when an alert is due now: first crossing for the key, a rise in level, or once
    /// per alert interval while it stays high. Boxed: an assessment is returned through a few
    /// calls on every query, and the alert (rare) would make each of those a 360-byte copy.
    pub alert: Option<Box<AlertEvent>>,
    /// The exception entry that matched: the name got no appearance points, but its volume
    /// counted.
    pub exception: Option<String>,
}

/// The states one query updated, handed back by [`Detector::observe_tracked_at`] so the
/// answer's rcode goes to the same states without another lookup. Held only for the query.
pub struct Tracked {
    /// The (client, domain) state.
    pair: Arc<Mutex<PairState>>,
    /// The domain's fleet-wide state.
    domain: Arc<Mutex<DomainState>>,
    /// The name's and the client's keys in the fleet-wide "asked last" table.
    name_hash: u64,
    client_hash: u64,
    /// The registrable domain's own key there, when this query was the client's first of it.
    label_key: Option<u64>,
    /// The (name, type) key there, for a type off the common list.
    type_key: Option<u64>,
}

impl std::fmt::Debug for Tracked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracked").finish_non_exhaustive()
    }
}

/// Longest sample name kept in alerts, in characters.
const SAMPLE_CHARS: usize = 100;
/// Sample names kept per key.
const SAMPLES: usize = 3;
/// Bits of each novel name that the client-wide budget does not count: an ordinary host label
/// (`www`, `api`, `eu-west-1`) carries about this much, so a client resolving many ordinary
/// names across many domains does not add up to a tunnel, while one spreading encoded data over
/// many domains does.
const CLIENT_ALLOWANCE_BITS: u32 = 32;
/// Novel names of one registrable domain, within the long window, whose first
/// [`CLIENT_ALLOWANCE_BITS`] the client-wide budget forgives. A site has a handful of ordinary
/// host names (`www`, `api`, `cdn`, `eu-west-1`); past this many the allowance is not a host
/// label's any more, and every bit counts client-wide. Without the bound a tunnel writing at
/// most 4 bytes a name over many domains counted nothing client-wide (~29 KB an hour at 2 q/s
/// over 50 domains in an independent run).
const CLIENT_ALLOWANCE_NAMES: u64 = 8;
/// Bits of a registrable domain's own first label (`github` in `github.com`, `<label>` in
/// `<label>.duckdns.org`) that the client-wide budget does not count when the domain is new to
/// the client and no other client asked it last: a brand name of two or three words carries
/// this much (`stackoverflow` ~50, `googleusercontent` ~62 bits, at most a few bits over), so
/// browsing hundreds of sites adds little, while a client asking a new random label under a
/// public suffix each query (`<63 random characters>.duckdns.org`, ~315 bits) pays for it.
const CLIENT_LABEL_ALLOWANCE_BITS: u32 = 48;
/// Mixed into a registrable domain's key for its entry in the fleet-wide "asked last" table,
/// apart from the names under it.
const DOMAIN_ASKER_MIX: u64 = 0x8cb9_2ba7_2f3d_8dd7;

/// Whether a window's query count grew by more than an eighth since `then`.
fn grew_by_an_eighth(then: u32, now: u32) -> bool {
    now > then.saturating_add(then / 8)
}

/// A registrable domain's own key in the fleet-wide "asked last" table.
fn label_asker_key(domain_key: u64) -> u64 {
    domain_key.rotate_left(23) ^ DOMAIN_ASKER_MIX
}
/// A novel name carrying at least this many bits is kept as a sample even if it looks ordinary.
const SAMPLE_MIN_BITS: u32 = 48;
/// Counted answer bytes a client may get from one registrable domain per detection window
/// before they count client-wide in full: about what looking at a domain takes (its
/// addresses and HTTPS records, an SPF record among its apex TXT, DMARC, a DKIM key, MX; a big
/// 4 KB apex set counts 496). A channel needs many answers, and one that hops to a new
/// domain whenever its last one is contained leaves each of them well past this.
const CLIENT_DOWN_ALLOWANCE: u64 = 1024;
/// The part of a domain's counted answer bytes within [`CLIENT_DOWN_ALLOWANCE`] that counts
/// client-wide: one in this many, the fraction carried from answer to answer (a 64th rounded
/// down per answer before: about the same for the 100–450-byte answers of a mail check). A
/// shared domain's answers count this; a private one's also by their size
/// ([`CLIENT_PRIVATE_DOWN_SHARE`]).
const CLIENT_DOWN_SHARE: u64 = 80;
/// The part of a *private* domain's answer bytes within [`CLIENT_DOWN_ALLOWANCE`] that counts
/// client-wide, of their undiscounted size: one in this many. A domain no other client asks
/// ([`private_share`]) is a source only this client reads, and what it reads there counts by
/// its size, not by the big-answer discount (which let a tunnel hopping before each domain's
/// allowance pay a 64th of a sixteenth: 4.6 MB of 3.9 KB answers, four a second, before it
/// was sinkholed; now 0.8 MB). So a client's private carrier data client-wide is bounded
/// whatever the answer size and hop rate; this share sets the bound, from the most a busy
/// benign client reads from private domains: a mail host checking SPF, DMARC and DKIM of 300
/// domains in 15 minutes (~1 KB each) scores 46 with it (49 before), a crawler reading 450
/// sites' HTTPS (ECH), MTA-STS and DMARC records 55 (56); the alert is at 60.
const CLIENT_PRIVATE_DOWN_SHARE: u64 = 112;

/// The three information-volume windows of a key: short, detection, long.
#[derive(Debug, Default)]
struct Windows([SlidingWindow; 3]);

impl Windows {
    /// The short and long windows feed only the volume term; the detection window also the
    /// pattern and NXDOMAIN terms.
    fn stats(&mut self) -> [window::WindowStats; 3] {
        [
            self.0[0].volume_stats(),
            self.0[1].stats(),
            self.0[2].volume_stats(),
        ]
    }

    /// Whether any window's raw novel information (name bytes and the counted share of carrier
    /// answer bytes) could reach the volume term's floor (⅛ of its budget, after the largest
    /// acceleration, 4×); when none can, scoring it is skipped.
    fn could_score(&self, budgets: Budgets) -> bool {
        #[allow(clippy::cast_precision_loss)]
        let over = |w: &SlidingWindow, budget: f32| {
            (w.raw_novel_bits() as f32 / 8.0 + volume::DOWN_WEIGHT * w.raw_down_bytes() as f32)
                * 4.0
                >= budget / 8.0
        };
        over(&self.0[0], budgets.short)
            || over(&self.0[1], budgets.window)
            || over(&self.0[2], budgets.long)
    }
}

/// State per (client, registrable domain).
#[derive(Debug, Default)]
struct PairState {
    /// Counts over the short, detection and long windows.
    windows: Windows,
    /// The names this key asked last: repeats add no information.
    recent: RecentNames,
    /// The last few novel subdomain parts: a name adds only what they do not already say
    /// (the information floor, [`floor`]).
    floor: floor::RecentSubdomains,
    /// Estimated novel information sent in names since the key was first tracked, bits.
    novel_bits_total: u64,
    /// A few recent suspicious or informative names, truncated; allocated only for those.
    samples: Vec<String>,
    /// Rotates which sample is replaced.
    sample_turn: usize,
    /// When the last alert for this key was emitted.
    last_alert_at: Option<Duration>,
    /// Its level.
    last_alert_level: Level,
    /// The domain's prevalence discount for this client as its last query was scored, in
    /// 255ths (0 before any, read as 1; the discount is at least 0.2): its answers count
    /// client-wide at this share, as its names do. A byte, in the state's padding.
    prevalence: u8,
    /// Whether a query of this client to this domain was scored already: the first one is
    /// where the registrable domain's own label can be new information.
    seen: bool,
    /// The pair's points as last worked out, for a repeat that changes none of their inputs;
    /// dropped whenever the windows take something a score reads beyond a repeat (new
    /// information, a high-scoring name, an NXDOMAIN, answer data).
    memo: Option<PointsMemo>,
}

/// A key's points as last worked out, reused while none of what they are read from moved:
/// the windows' half-window boundaries, what they took beyond repeats ([`PairState::memo`]
/// is dropped then), its prevalence, the client's spike and the group's budget scale. A repeated name (most queries) then
/// skips reading the windows' sketches and scoring again, about a seventh of a denied
/// query's instructions. Between two such changes the repeats only add queries and answers,
/// which move the pattern term a little: the points are worked out again once the queries
/// grew by an eighth, and a memo is kept only for points under the group's alert level.
#[derive(Debug, Clone, Copy, PartialEq)]
struct PointsMemo {
    /// The sum of the three windows' half-window indices (they only grow), its low bits.
    epochs: u32,
    /// The budget scale's bits.
    scale: u32,
    /// The pair's novel bytes in its detection window, which the fleet's share reads.
    novel_bytes: u32,
    /// Queries in the detection window then: the points are worked out again once they grew by
    /// an eighth (the rule the distinct-name sketch follows), as repeats move the pattern term.
    queries: u32,
    prevalence: u8,
    spike: bool,
    points: u8,
}

/// State per client: a per-minute rate baseline and client-wide information volume.
#[derive(Debug, Default)]
struct ClientState {
    /// The minute being counted.
    minute: u64,
    /// Queries in it.
    count: u32,
    /// Exponentially weighted queries per minute (α = 0.2).
    baseline: f32,
    /// Minutes of history behind the baseline.
    minutes_seen: u64,
    /// Novel information beyond [`CLIENT_ALLOWANCE_BITS`] per name, across all domains, and
    /// the answer bytes [`client_down_bytes`] counts.
    windows: Windows,
    /// The subdomain parts this client asked last, whatever the domain: `www` or
    /// `selector1._domainkey` under a hundred domains is one piece of information, not a hundred.
    recent: RecentNames,
    /// When the last alert on client-wide evidence was emitted: one suspect, one alert per
    /// interval, however many domains its queries go on to touch.
    last_alert_at: Option<Duration>,
    /// Its level.
    last_alert_level: Level,
    /// The fraction of a byte of answers counted client-wide not yet in the windows: many
    /// small answers add up instead of each rounding to nothing.
    down_carry: f32,
    /// Its client-wide points as last worked out, as [`PairState::memo`].
    memo: Option<PointsMemo>,
}

/// State per registrable domain, fleet-wide.
#[derive(Debug, Default)]
struct DomainState {
    /// Every client's novel information to this domain (short window unused: fleet evidence
    /// only alerts, so it can take its time).
    windows: Windows,
    /// Distinct clients over `prevalence_window` (the sketch of the window's `unique`).
    clients: SlidingWindow,
    /// When this domain was first tracked.
    first_seen: Duration,
    /// Information (each name priced alone) in names new to the client that asked them, and
    /// the part of it in names another client had asked last; both halved once the first
    /// passes [`SHARED_DECAY_BITS`]. A content cache's names are asked by many clients; a
    /// distributed tunnel's never are.
    offered_bits: u32,
    /// See `offered_bits`.
    shared_bits: u32,
    /// When the last fleet-wide alert for it was emitted.
    last_alert_at: Option<Duration>,
    /// Its level.
    last_alert_level: Level,
}

/// Slots of the table of last answers per (client, question) ([`Detector::observe_answer_at`]):
/// 512 KiB.
const ANSWER_SLOTS: usize = 1 << 16;

/// Slots of the table of addresses, networks and CNAME targets given per registrable domain
/// ([`Detector::answer_parts_bits`]): 1 MiB.
const ANSWER_PART_SLOTS: usize = 1 << 17;

/// Address and CNAME-target bits count a quarter, rounded up per answer (then
/// [`volume::DOWN_WEIGHT`], as every answer byte): what a network puts in them (SLAAC
/// interface identifiers, a CDN's pool) looks as random as data, and an agent asks many hosts;
/// a tunnel through them needs volume.
const ANSWER_PART_BITS_PER_BYTE: u32 = 32;

/// DNSSEC bytes beside an address answer that are free the first time a client gets an answer
/// to a question: an RSA-2048 RRSIG with a long signer name, or a few ECDSA ones.
const SIGNED_ALLOWANCE: usize = 320;

/// DNSSEC bytes a negative answer may carry free (the SOA's RRSIG and up to three NSEC3
/// records with theirs, a closest-encloser proof, are ~700 bytes).
const NEGATIVE_SIGNED_ALLOWANCE: usize = 1024;

/// `DomainState::offered_bits` at which both shared-name counters are halved: the share
/// The part of the prevalence discount a domain earns from many clients alone, when they share
/// none of its names: services that give each client names of its own (telemetry IDs, content
/// hashes) have many clients and share little, but so does one tunnel split over several
/// source addresses; the rest of the discount comes with shared names.
const UNSHARED_PREVALENCE: f32 = 0.75;

/// follows the last ~64 KiB of names' information.
const SHARED_DECAY_BITS: u32 = 1 << 19;

/// Queries per minute above which a client can be spiking at all.
const SPIKE_MIN_PER_MINUTE: u32 = 120;
/// A spike is this many times the baseline.
const SPIKE_FACTOR: f32 = 4.0;

impl ClientState {
    /// Counts one query at `minute`; true while the current minute is a spike.
    fn count(&mut self, minute: u64) -> bool {
        if minute > self.minute {
            let elapsed = minute - self.minute;
            #[allow(clippy::cast_precision_loss)]
            let finished = self.count as f32;
            self.baseline = 0.8 * self.baseline + 0.2 * finished;
            let idle = i32::try_from((elapsed - 1).min(60)).unwrap_or(60);
            self.baseline *= 0.8f32.powi(idle);
            self.minutes_seen = self.minutes_seen.saturating_add(elapsed);
            self.minute = minute;
            self.count = 0;
        }
        self.count = self.count.saturating_add(1);
        #[allow(clippy::cast_precision_loss)]
        let now = self.count as f32;
        self.minutes_seen >= 3
            && self.count > SPIKE_MIN_PER_MINUTE
            && now > SPIKE_FACTOR * self.baseline
    }
}

/// What one query adds to a window.
#[derive(Debug, Clone, Copy)]
struct Sample {
    /// Hash of the name (for the distinct-name sketch).
    hash: u64,
    /// Subdomain bytes.
    sub_len: u32,
    /// Its appearance score.
    score: u8,
    /// Whether that is high.
    high: bool,
    /// Whether it was a novel name for this key, and its information in bits if so.
    novel: bool,
    /// Information counted, bits.
    bits: u32,
}

/// The tunnel/exfiltration detector. `Send + Sync`; share it behind an `Arc`.
pub struct Detector {
    /// `[detect].enabled`.
    enabled: bool,
    /// Half of each volume window (short, detection, long): the bucket lengths.
    halves: [Duration; 3],
    /// Lengths of the volume windows in seconds, for events.
    window_secs: [u64; 3],
    /// Half the prevalence window.
    prevalence_half: Duration,
    /// Per-window budgets for one (client, domain), bytes.
    budgets: Budgets,
    /// `[detect].client_budget_factor`.
    client_factor: f32,
    /// Minimum time between repeated alerts for one key at the same level.
    alert_interval: Duration,
    /// Shipped and `[detect].exceptions` entries, compiled for lookup by suffix.
    exceptions: ExceptionSet,
    /// `[detect] lookup_services`: zones priced as the shipped lookup services are.
    lookup_services: ExceptionSet,
    /// Per (client, registrable domain).
    pairs: BoundedTable<PairState>,
    /// Per registrable domain, fleet-wide.
    domains: BoundedTable<DomainState>,
    /// Per client.
    clients: BoundedTable<ClientState>,
    /// Which client asked a name last, fleet-wide.
    shared: SharedNames,
    /// The last answer each (client, question) was given, as a tag of its content: the same
    /// answer again (a poller re-fetching an unchanged record whose TTL is 0) brings nothing new.
    answers: SharedNames,
    /// The same for what the records say, TTLs aside: a carrier answer that differs from the
    /// last only in TTLs (a caching upstream counting them down) is not a new piece of data.
    answer_records: SharedNames,
    /// The last addresses and CNAME targets (as a set) each (client, question) of another type
    /// was given.
    address_answers: SharedNames,
    /// Addresses (and their networks) and CNAME targets given in answers, per registrable
    /// domain, fleet-wide: a CDN's pool is learned once, a tunnel's fresh addresses are not in
    /// it. Written only for a part not in it already.
    answer_parts: SharedNames,
    /// Which domain each client asked each address last, and how often its address lookups
    /// are corroborated ([`addresses`]).
    lookups: addresses::AddressLookups,
    /// (client, registrable domain) keys of reverse domains `forget` released, and when (kept
    /// for a long window): their names' state is kept under network keys ([`addresses`]).
    released: Mutex<Vec<(u64, Duration)>>,
    /// Each name's appearance, computed once (see [`memo`]).
    memo: memo::AppearanceMemo,
    /// `[detect].search_domains`: an expansion of a public name under one adds no information.
    search_domains: Vec<String>,
    /// Keyed hasher for table keys and the distinct-name sketches, seeded per process.
    hasher: RandomState,
    /// This detector's tag on the hashes [`crate::recall`] keeps per thread.
    owner: u64,
    /// Time source.
    clock: SharedClock,
}

impl std::fmt::Debug for Detector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Detector")
            .field("enabled", &self.enabled)
            .field("window_secs", &self.window_secs)
            .field("pairs", &self.pairs)
            .field("domains", &self.domains)
            .field("clients", &self.clients)
            .finish_non_exhaustive()
    }
}

impl Detector {
    /// A detector with empty tables.
    #[must_use]
    pub fn new(cfg: &DetectConfig, clock: SharedClock) -> Self {
        let mut exceptions: Vec<String> = Vec::new();
        if cfg.default_exceptions {
            exceptions.extend(
                exceptions::DEFAULT_EXCEPTIONS
                    .iter()
                    .map(|e| (*e).to_string()),
            );
        }
        exceptions.extend(cfg.exceptions.iter().map(|e| crate::names::normalise(e)));
        // A configured lookup service is an exception too.
        let lookup_services: Vec<String> = cfg
            .lookup_services
            .iter()
            .map(|e| crate::names::normalise(e))
            .collect();
        exceptions.extend(lookup_services.iter().cloned());
        let window = cfg.window.max(Duration::from_secs(2));
        let short = cfg.short_window.max(Duration::from_secs(2));
        let long = cfg.long_window.max(window);
        #[allow(clippy::cast_precision_loss)] // budgets are at most 16 MiB
        let budgets = Budgets {
            short: cfg.short_budget as f32,
            window: cfg.window_budget as f32,
            long: cfg.long_budget as f32,
        };
        Self {
            enabled: cfg.enabled,
            halves: [short / 2, window / 2, long / 2],
            window_secs: [short.as_secs(), window.as_secs(), long.as_secs()],
            prevalence_half: cfg.prevalence_window.max(Duration::from_secs(2)) / 2,
            budgets,
            client_factor: cfg.client_budget_factor.max(1.0),
            alert_interval: cfg.alert_interval,
            exceptions: ExceptionSet::new(exceptions),
            lookup_services: ExceptionSet::new(lookup_services),
            pairs: BoundedTable::new("client_domain", cfg.max_client_domains),
            domains: BoundedTable::new("domain", cfg.max_domains),
            clients: BoundedTable::new("client", cfg.max_clients),
            shared: SharedNames::new(cfg.shared_name_slots),
            answers: SharedNames::new(ANSWER_SLOTS),
            answer_records: SharedNames::new(ANSWER_SLOTS),
            address_answers: SharedNames::new(ANSWER_SLOTS),
            answer_parts: SharedNames::new(ANSWER_PART_SLOTS),
            lookups: addresses::AddressLookups::default(),
            released: Mutex::new(Vec::new()),
            memo: memo::AppearanceMemo::default(),
            search_domains: cfg.search_domains.clone(),
            hasher: RandomState::new(),
            owner: crate::recall::next_owner(),
            clock,
        }
    }

    /// Forget what `client` sent: its client-wide state and its state for each of `domains`.
    /// An operator's release judges that evidence benign; without this, the client's spent
    /// budgets would contain it again on its next query to any domain.
    pub fn forget(&self, client: &ClientKey, domains: &[&str]) {
        let client_hash = self.hasher.hash_one(client);
        self.clients.remove(client_hash);
        for domain in domains {
            let key = self.pair_key(client_hash, self.domain_key(domain));
            self.pairs.remove(key);
            // Its reverse names are kept under their networks' keys, which the domain does not
            // name: those that alerted before now start afresh on their next query.
            if crate::names::is_reverse_name(domain) {
                let now = self.clock.now();
                let long = self.halves[2] * 2;
                let mut released = self.released.lock();
                released.retain(|(_, at)| now.saturating_sub(*at) < long);
                released.push((key, now));
            }
        }
    }

    /// When `forget` released (client, registrable domain) `key` last, for a pair of its
    /// network-keyed reverse names that alerted before then: its evidence is forgotten.
    fn forget_if_released(&self, st: &mut PairState, key: u64) {
        let released = self.released.lock();
        let at = released.iter().rev().find(|(k, _)| *k == key).map(|e| e.1);
        drop(released);
        if at.is_some_and(|at| st.last_alert_at.is_some_and(|alerted| alerted <= at)) {
            *st = PairState::default();
        }
    }

    /// Whether scoring is on (`[detect].enabled`); when off, every call is a no-op.
    #[must_use]
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// Scores one query and updates the windows. Called for every query from an identified
    /// client, so it stays cheap: no allocation unless the query is suspicious or an alert is due.
    pub fn observe(&self, obs: &Observation<'_>) -> Assessment {
        self.observe_at(obs, self.clock.now())
    }

    /// Adds one query to three windows.
    /// The half-window index of `now` for each of the three windows: computed once for all the
    /// windows a call touches (a 64-bit division each; up to 15 windows a query).
    fn epochs(&self, now: Duration) -> [u64; 3] {
        self.halves.map(|half| window::epoch_of(now, half))
    }

    fn add(&self, windows: &mut Windows, epochs: [u64; 3], q: Sample) {
        for (w, epoch) in windows.0.iter_mut().zip(epochs) {
            w.advance_to(epoch);
            let b = w.current_mut();
            b.unique.insert(q.hash);
            b.queries = b.queries.saturating_add(1);
            b.sub_bytes = b.sub_bytes.saturating_add(q.sub_len);
            b.score_sum = b.score_sum.saturating_add(u32::from(q.score));
            b.high = b.high.saturating_add(u32::from(q.high));
            if q.high {
                b.high_bytes = b.high_bytes.saturating_add(q.sub_len);
            }
            b.score_bytes = b
                .score_bytes
                .saturating_add(u64::from(q.score) * u64::from(q.sub_len));
            if q.novel {
                b.novel_names = b.novel_names.saturating_add(1);
                b.novel_bits = b.novel_bits.saturating_add(q.bits);
            }
        }
    }

    /// [`Self::observe`] at `now`, a reading of this detector's clock that the caller already
    /// took (the pipeline reads the clock once per query for every stage).
    #[allow(clippy::too_many_lines)] // one pass over three tables, in order
    pub fn observe_at(&self, obs: &Observation<'_>, now: Duration) -> Assessment {
        self.observe_tracked_at(obs, now).0
    }

    /// [`Self::observe_at`], also handing back the (client, domain) and domain states it
    /// updated, so the answer's rcode can be recorded into them
    /// ([`Self::observe_rcode_tracked`]) without finding them again.
    pub fn observe_tracked_at(
        &self,
        obs: &Observation<'_>,
        now: Duration,
    ) -> (Assessment, Option<Tracked>) {
        if !self.enabled {
            return (Assessment::default(), None);
        }
        // Reverse names are keyed by network, not by their first octet's or nibble's zone
        // ([`addresses::detection_zone`]); every other name by its registrable domain.
        let zone = addresses::detection_zone(obs.qname, obs.domain);
        let sub = subdomain_part(obs.qname, zone);
        // Recalled from this thread's last queries when the same name (client) was seen: the
        // same SipHash values, without the three calls ([`recall`]).
        let (sub_hash, domain_key) = self.name_keys(obs.qname, zone, sub);
        let client_hash = self.client_key(obs.client);
        // The whole name's hash, from the two already computed: the name is hashed once. Used
        // for the fleet-wide "asked by another client" table.
        let name_hash = (sub_hash ^ domain_key.rotate_left(29)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        // The name's appearance depends on the name, the type and the exceptions in force
        // (the group's own, when it has any): memoised under all three.
        let memo_key = {
            let mut k = name_hash ^ u64::from(obs.qtype).wrapping_mul(0xff51_afd7_ed55_8ccd);
            if !obs.settings.exceptions.is_empty() {
                k ^= self.hasher.hash_one(obs.group).rotate_left(17);
            }
            k
        };
        // An exception takes away appearance points only: the name still counts as volume.
        let find_exception = || {
            self.exceptions.find(obs.qname).or_else(|| {
                let group = obs.settings.exceptions.iter().map(String::as_str);
                exceptions::find(group, obs.qname)
            })
        };
        let (appearance, exception) = match self.memo.get(memo_key) {
            Some(a) => (a, if a.exception { find_exception() } else { None }),
            None => {
                let exception = find_exception();
                let f = features::extract(obs.qname, sub, obs.qtype);
                let score = if exception.is_some() {
                    0
                } else {
                    score::query_score(&f).0
                };
                let a = memo::Appearance {
                    score,
                    exception: exception.is_some(),
                    bits: volume::info_bits(&f),
                    sub_len: u32::try_from(f.sub_len).unwrap_or(u32::MAX),
                    sub_chars: u32::try_from(f.sub_chars).unwrap_or(u32::MAX),
                };
                self.memo.put(memo_key, a);
                (a, exception)
            }
        };
        let query_score = appearance.score;
        let bits = appearance.bits;
        // The per-term breakdown of the query's own score, for an alert (rare): recomputed
        // rather than memoised.
        let query_terms = || {
            if appearance.exception {
                Breakdown::default()
            } else {
                score::query_score(&features::extract(obs.qname, sub, obs.qtype)).1
            }
        };
        let last_asker = self.shared.record(name_hash, client_hash);
        let shared = last_asker == LastAsker::Other;
        let high = query_score >= HIGH_QUERY_SCORE;
        let sub_len = appearance.sub_len;
        let mut sample = Sample {
            hash: sub_hash,
            sub_len,
            score: query_score,
            high,
            novel: false,
            bits: 0,
        };
        let scale = obs.settings.volume_scale();

        // (client, domain): its own evidence. The recent-name filter decides novelty.
        let pair = self
            .pairs
            .get_or_insert(self.pair_key(client_hash, domain_key), PairState::default);
        let mut guard = pair.lock();
        let st = &mut *guard;
        if zone.len() != obs.domain.len() && !self.released.lock().is_empty() {
            let key = self.pair_key(client_hash, self.domain_key(obs.domain));
            self.forget_if_released(st, key);
        }
        // A registrable domain new to this client carries its own first label, which the
        // subdomain part leaves out: under a public suffix anyone may register names in
        // (`duckdns.org`), `<data>.duckdns.org` has an empty subdomain and all of its data
        // there. Counted client-wide (no other key sees the domain twice) when no other
        // client asked the domain last, as a name's information is.
        let (label_bits, label_key) = if std::mem::replace(&mut st.seen, true) {
            (0, None)
        } else {
            (
                self.registrable_label_bits(obs, client_hash, domain_key),
                Some(label_asker_key(domain_key)),
            )
        };
        // A name asked by another client first is not this client's information. A name is
        // fresh when neither the key's recent names nor the fleet-wide table says this client
        // asked it last: the table remembers far more names than the key's own filter, so a
        // client cycling through a few hundred names repeats them instead of re-sending them.
        // A resolver's search-list expansion of a public name says nothing the name itself does
        // not (it is asked next, under its own domain): a query, not new information. Looked
        // at only for a name that is otherwise fresh (repeats, most queries, never are).
        let fresh = st.recent.insert(sub_hash)
            && last_asker != LastAsker::Same
            && !self.is_search_expansion(obs.qname);
        // What the name adds beyond the key's last few names (a counter moved on adds bits,
        // not bytes); computed for every fresh name so the references stay current.
        let floor_bits = if fresh {
            st.floor
                .novel_bits(sub, bits, appearance.sub_chars as usize)
        } else {
            0
        };
        // Reversed addresses under a zone are priced as addresses, and recorded as asked
        // (so a shipped list's lookup corroborates another list's).
        let own_bits = if fresh {
            self.address_lookup_bits(obs.qname, client_hash, domain_key, floor_bits)
        } else {
            0
        };
        sample.novel = fresh && !shared;
        sample.bits = if !sample.novel {
            0
        } else if exception.is_some()
            && (exceptions::is_lookup_service(obs.qname)
                || self.lookup_services.find(obs.qname).is_some())
        {
            // Only the vendor's servers read these names ([`exceptions::LOOKUP_SERVICES`]).
            floor_bits.div_ceil(exceptions::LOOKUP_SERVICE_SHARE)
        } else {
            own_bits
        };
        // A query type off the common list is a choice the name does not show: new for this
        // (client, name), it is new information (an independent review moved 20 B/s by random
        // types on one name, each answered NODATA with the same SOA, counted nothing).
        // The (name, type) pair is what is distinct then, for the windows' distinct-name count
        // too (else one name's many types would be corrected down to one piece of data).
        let mut type_key = None;
        if !features::is_common_qtype(obs.qtype) {
            let type_mix = u64::from(obs.qtype).wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
            sample.hash = sub_hash ^ type_mix;
            type_key = Some(name_hash ^ type_mix);
            // New only when no client asked it lately (`Unknown`): two hosts polling the same
            // (name, type) in turn, `Other` to each other, add nothing, as for names.
            if self.shared.record(name_hash ^ type_mix, client_hash) == LastAsker::Unknown {
                sample.novel = true;
                sample.bits = sample.bits.saturating_add(features::QTYPE_CHOICE_BITS);
            }
        }
        let epochs = self.epochs(now);
        self.add(&mut st.windows, epochs, sample);
        if fresh || sample.novel || sample.bits > 0 || sample.high {
            st.memo = None;
        }
        st.novel_bits_total = st.novel_bits_total.saturating_add(u64::from(sample.bits));
        // Nothing but the volume term reads the short and long windows, and it is 0 while no
        // window could reach its floor (the common case: repeated names): read them only then.
        let pair_budgets = self.budgets.scaled(scale);
        let pair_live = st.windows.could_score(pair_budgets);
        // Without volume the pair's score is at most its pattern, NXDOMAIN and spike terms;
        // under the group's lowest threshold they change nothing, and the pair is not scored
        // at all (the common case: a client repeating ordinary names).
        let pair_scored =
            pair_live || obs.settings.lowest_threshold() <= score::MAX_POINTS_WITHOUT_VOLUME;
        // The points worked out for an earlier repeat, if nothing they read has moved since
        // (checked again below for the prevalence and the spike, known only then).
        #[allow(clippy::cast_possible_truncation)] // the low bits tell a move
        let epochs_sum = epochs.iter().fold(0u64, |a, e| a.wrapping_add(*e)) as u32;
        let memo_candidate = st.memo.filter(|m| {
            pair_scored
                && m.epochs == epochs_sum
                && m.scale == scale.to_bits()
                && !grew_by_an_eighth(m.queries, st.windows.0[1].raw_queries())
        });
        // The pair's evidence, built in place (its windows are ~340 bytes: not moved again);
        // its prevalence and the client's spike are filled in below. With a memo its windows
        // are read only if they are needed after all.
        let mut ev = Evidence {
            windows: if memo_candidate.is_some() {
                [window::WindowStats::default(); 3]
            } else if pair_live {
                st.windows.stats()
            } else if pair_scored {
                [
                    window::WindowStats::default(),
                    st.windows.0[1].stats(),
                    window::WindowStats::default(),
                ]
            } else {
                [window::WindowStats::default(); 3]
            },
            budgets: pair_budgets,
            prevalence: 1.0,
            client_spike: false,
            scope: Scope::ClientDomain,
        };

        // The domain, fleet-wide: prevalence, and every client's novel names together.
        let domain_state = self.domains.get_or_insert(domain_key, || DomainState {
            first_seen: now,
            ..DomainState::default()
        });
        let (prevalence, fleet) = {
            let mut guard = domain_state.lock();
            let d = &mut *guard;
            self.add(&mut d.windows, epochs, sample);
            if fresh {
                d.offered_bits = d.offered_bits.saturating_add(bits);
                if shared {
                    d.shared_bits = d.shared_bits.saturating_add(bits);
                }
                if d.offered_bits > SHARED_DECAY_BITS {
                    d.offered_bits /= 2;
                    d.shared_bits /= 2;
                }
            }
            d.clients.advance(now, self.prevalence_half);
            let b = d.clients.current_mut();
            b.unique.insert(client_hash);
            // Counted so the sketch's cached reading knows when to refresh.
            b.queries = b.queries.saturating_add(1);
            // Nothing below can matter while neither this pair nor the domain has sent enough
            // new information to reach a volume term (the common case: repeated names).
            if !pair_live && !d.windows.could_score(pair_budgets) {
                (1.0, None)
            } else {
                let clients = d.clients.stats_unique();
                let age = now.saturating_sub(d.first_seen);
                #[allow(clippy::cast_precision_loss)]
                let p = score::ramp((clients.max(1) as f32).log2(), 1.0, 4.0)
                    * (0.75 + 0.25 * score::ramp(age.as_secs_f32(), 120.0, 1800.0));
                #[allow(clippy::cast_precision_loss)]
                let shared_share = d.shared_bits as f32 / d.offered_bits.max(1) as f32;
                // Many clients make a domain prevalent only as far as they ask the same names
                // (a popular service's clients do): a tunnel's data split over several source
                // addresses brings many clients and shares nothing, and must not earn each
                // source a larger budget.
                let prevalence = 1.0
                    - 0.8
                        * p
                        * (UNSHARED_PREVALENCE
                            + (1.0 - UNSHARED_PREVALENCE) * score::ramp(shared_share, 0.1, 0.4));
                // Fleet evidence: budgets grow with the number of clients (each has its own).
                #[allow(clippy::cast_precision_loss)]
                let fleet_scale = scale * self.client_factor * 4.0 * (clients.max(1) as f32).sqrt();
                let fleet_budgets = self.budgets.scaled(fleet_scale);
                let fleet_window = d.windows.0[1].volume_stats();
                let fleet = if d.windows.could_score(fleet_budgets) {
                    let mut windows = d.windows.stats();
                    windows[0] = window::WindowStats::default();
                    let ev = Evidence {
                        windows,
                        budgets: fleet_budgets,
                        // Many clients is what fleet evidence is about: no discount for that
                        // alone (the budget grows with √clients instead); but a domain whose
                        // names many clients share (a CDN's popular hashes) gets the
                        // prevalence discount, as far as its shared information shows it.
                        prevalence: 1.0 - 0.8 * p * score::ramp(shared_share, 0.1, 0.4),
                        client_spike: false,
                        scope: Scope::Domain,
                    };
                    let (fleet_score, fleet_terms, fleet_trip) = score::domain_score(&ev);
                    let level = obs.settings.level_for(fleet_score).min(Level::Alert);
                    let due = level >= Level::Alert
                        && alert_due(
                            &mut d.last_alert_at,
                            &mut d.last_alert_level,
                            now,
                            level,
                            self.alert_interval,
                        );
                    due.then_some((fleet_score, fleet_terms, fleet_trip))
                } else {
                    None
                };
                // Prevalence only counts for this client when its own share of the domain's
                // new information is small: a CDN's hash names come from many clients alike,
                // while a tunnel client supplies nearly all of its domain's, however many
                // other clients were made to ask a name or two there.
                let pair_novel = if let Some(m) = memo_candidate {
                    u64::from(m.novel_bytes)
                } else if pair_scored {
                    ev.windows[1].novel_bytes
                } else {
                    st.windows.0[1].volume_stats().novel_bytes
                };
                #[allow(clippy::cast_precision_loss)]
                let share = pair_novel as f32 / (fleet_window.novel_bytes.max(1) as f32);
                let own = 1.0 - (1.0 - prevalence) * score::ramp(1.0 - share, 0.5, 0.9);
                (own, fleet)
            }
        };

        // The client across all its domains: only the part of each name beyond an ordinary
        // host label counts, against a multiple of the budgets; and all of it once the domain
        // has had its few host labels' worth of novel names in the long window.
        let allowance_spent =
            sample.novel && st.windows.0[2].raw_novel_names() > CLIENT_ALLOWANCE_NAMES;
        let client_budgets = self.budgets.scaled(scale * self.client_factor);
        let client_evidence = |c: &mut ClientState, spike: bool| Evidence {
            windows: c.windows.stats(),
            budgets: client_budgets,
            prevalence: 1.0,
            client_spike: spike,
            scope: Scope::Client,
        };
        let client_state = self.clients.get_or_insert(client_hash, || ClientState {
            minute: now.as_secs() / 60,
            ..ClientState::default()
        });
        let (client_spike, client_eval, client_alert) = {
            let mut c = client_state.lock();
            let spike = c.count(now.as_secs() / 60);
            // Prevalent domains count less here as they do per pair.
            #[allow(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                clippy::cast_precision_loss
            )]
            let allowance = if allowance_spent {
                0
            } else {
                CLIENT_ALLOWANCE_BITS
            };
            let excess = (sample.bits.saturating_sub(allowance) as f32 * prevalence) as u32;
            let excess = if c.recent.insert(sub_hash) { excess } else { 0 };
            let label_excess = label_bits.saturating_sub(CLIENT_LABEL_ALLOWANCE_BITS);
            let client_sample = Sample {
                // With its domain's label counted, the name is what is distinct (every
                // `<data>.duckdns.org` has the same empty subdomain part).
                hash: if label_excess > 0 {
                    name_hash
                } else {
                    sub_hash
                },
                novel: excess + label_excess > 0,
                bits: excess.saturating_add(label_excess),
                ..sample
            };
            self.add(&mut c.windows, epochs, client_sample);
            if client_sample.novel || client_sample.bits > 0 || client_sample.high {
                c.memo = None;
            }
            if c.windows.could_score(client_budgets) {
                // Its total only, as the pair's; at an alert's level (rare) its breakdown too,
                // from the very readings the total came from. A repeat that moved nothing
                // the points read takes them as last worked out ([`PointsMemo`]).
                let memo = c.memo.filter(|m| {
                    m.epochs == epochs_sum
                        && m.scale == scale.to_bits()
                        && m.spike == spike
                        && !grew_by_an_eighth(m.queries, c.windows.0[1].raw_queries())
                });
                if let Some(m) = memo {
                    (spike, Some(m.points), None)
                } else {
                    let ev = client_evidence(&mut c, spike);
                    let points = score::domain_points(&ev);
                    let alerting = obs.settings.level_for(points) >= Level::Alert;
                    let full = alerting.then(|| Box::new(score::domain_score(&ev)));
                    c.memo = (!alerting).then_some(PointsMemo {
                        epochs: epochs_sum,
                        scale: scale.to_bits(),
                        novel_bytes: 0,
                        queries: c.windows.0[1].raw_queries(),
                        prevalence: 0,
                        spike,
                        points,
                    });
                    (spike, Some(points), full)
                }
            } else {
                // Client-wide evidence is volume: below the floor it adds nothing.
                (spike, None, None)
            }
        };

        ev.prevalence = prevalence;
        ev.client_spike = client_spike;
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        {
            st.prevalence = (prevalence.clamp(0.0, 1.0) * 255.0).round().max(1.0) as u8;
        }
        // The pair's total only: its breakdown and trip (~300 bytes to build and move) are
        // worked out again below for an alert, the one reader (the same number either way).
        let memo =
            memo_candidate.filter(|m| m.prevalence == st.prevalence && m.spike == client_spike);
        let pair_points = if !pair_scored {
            None
        } else if let Some(m) = memo {
            Some(m.points)
        } else {
            if memo_candidate.is_some() {
                // Left unread for a memo that did not hold.
                ev.windows = if pair_live {
                    st.windows.stats()
                } else {
                    [
                        window::WindowStats::default(),
                        st.windows.0[1].stats(),
                        window::WindowStats::default(),
                    ]
                };
            }
            let points = score::domain_points(&ev);
            st.memo = (obs.settings.level_for(points) < Level::Alert).then_some(PointsMemo {
                epochs: epochs_sum,
                scale: scale.to_bits(),
                novel_bytes: u32::try_from(ev.windows[1].novel_bytes).unwrap_or(u32::MAX),
                queries: st.windows.0[1].raw_queries(),
                prevalence: st.prevalence,
                spike: client_spike,
                points,
            });
            Some(points)
        };
        // Own evidence only: this pair's, or this client's across domains. Fleet evidence may
        // alert (below) but never sets the level that contains this client.
        let own = match (client_eval, pair_points) {
            (Some(c), p) if c > p.unwrap_or(0) => Some((c, Scope::Client)),
            (_, p) => p.map(|p| (p, Scope::ClientDomain)),
        };
        let (score, scope) = own.unwrap_or((0, Scope::ClientDomain));
        if high || (sample.novel && sample.bits >= SAMPLE_MIN_BITS) {
            keep_sample(st, obs.qname);
        }
        let level = obs.settings.level_for(score);
        // Client-wide evidence is one suspect whichever domain its latest query went to: its
        // alerts are timed per client, not per (client, domain), or a client spreading names
        // over many domains would raise one alert for each new domain.
        let own_due = level >= Level::Alert
            && if scope == Scope::Client {
                let mut c = client_state.lock();
                let c = &mut *c;
                alert_due(
                    &mut c.last_alert_at,
                    &mut c.last_alert_level,
                    now,
                    level,
                    self.alert_interval,
                )
            } else {
                alert_due(
                    &mut st.last_alert_at,
                    &mut st.last_alert_level,
                    now,
                    level,
                    self.alert_interval,
                )
            };
        // The pair's detection window, for an alert's counts: read now if the pair was not
        // scored (a client-wide or fleet alert while this pair is quiet).
        let alert_window = if (!pair_scored || memo.is_some()) && (own_due || fleet.is_some()) {
            st.windows.0[1].stats()
        } else {
            ev.windows[1]
        };
        let make_alert =
            |score: u8, terms: &Breakdown, trip: &VolumeTrip, scope: Scope, level: Level| {
                let action = if obs.settings.monitor_only {
                    "none"
                } else {
                    level.as_str()
                };
                let w = &alert_window;
                AlertEvent {
                    client: obs.client.addr,
                    agent: obs.client.agent.as_deref().map(str::to_string),
                    group: obs.group.to_string(),
                    domain: obs.domain.to_string(),
                    score,
                    breakdown: breakdown_map(terms, &query_terms()),
                    window: WindowCounts {
                        window_secs: self.window_secs[1],
                        queries: w.queries,
                        unique_subdomains: w.unique,
                        payload_bytes: w.novel_bytes.max(w.payload_bytes),
                        nxdomain: w.nxdomain,
                    },
                    samples: st.samples.clone(),
                    bytes_estimate: st.novel_bits_total / 8,
                    action: action.to_string(),
                    monitor_only: obs.settings.monitor_only,
                    exception: exception.map(str::to_string),
                    volume: Some(VolumeEvidence {
                        scope: scope.as_str().to_string(),
                        window: trip.window.as_str().to_string(),
                        window_secs: self.window_secs[trip.window as usize],
                        novel_bytes: trip.stats.novel_bytes,
                        novel_names: trip.stats.novel_names,
                        answer_bytes: trip.stats.down_bytes,
                        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                        budget_bytes: trip.budget.round().max(0.0) as u64,
                    }),
                }
            };
        // An alert is due only at a score of at least 1 (the lowest threshold), so `own` is there.
        let alert = if let Some((_, scope)) = own.filter(|_| own_due) {
            let eval = match (scope, client_alert) {
                (Scope::Client, Some(full)) => *full,
                // Unreachable: a client-wide score at an alert's level kept its breakdown.
                (Scope::Client, None) => {
                    score::domain_score(&client_evidence(&mut client_state.lock(), client_spike))
                }
                _ => {
                    if memo.is_some() {
                        // The points came from the memo (an alert level lowered by a reload
                        // since): the breakdown needs the windows themselves.
                        ev.windows = st.windows.stats();
                    }
                    score::domain_score(&ev)
                }
            };
            debug_assert!(
                memo.is_some() || eval.0 == score,
                "a breakdown's total is the score"
            );
            Some(Box::new(make_alert(score, &eval.1, &eval.2, scope, level)))
        } else if let Some((fleet_score, terms, fleet_trip)) =
            fleet.filter(|_| level < Level::Alert)
        {
            // Domain-wide evidence: an alert naming the domain, never a containment.
            let mut a = make_alert(
                fleet_score,
                &terms,
                &fleet_trip,
                Scope::Domain,
                Level::Alert,
            );
            a.action = if obs.settings.monitor_only {
                "none"
            } else {
                "alert"
            }
            .to_string();
            Some(Box::new(a))
        } else {
            None
        };
        drop(guard);
        (
            Assessment {
                query_score,
                domain_score: score,
                score,
                level,
                alert,
                exception: exception.map(str::to_string),
            },
            Some(Tracked {
                pair,
                domain: domain_state,
                name_hash,
                client_hash,
                label_key,
                type_key,
            }),
        )
    }

    /// The query [`Self::observe_tracked_at`] scored went to no upstream because its client is
    /// contained: its name is not another client's "asked by someone else" (see
    /// [`SharedNames::undelivered`]). Names denied by policy are not marked: agents of a group
    /// retrying the same blocked names would each pay for them.
    pub fn undelivered(&self, tracked: &Tracked) {
        self.shared
            .undelivered(tracked.name_hash, tracked.client_hash);
        for key in [tracked.label_key, tracked.type_key].into_iter().flatten() {
            self.shared.undelivered(key, tracked.client_hash);
        }
    }

    /// [`Self::observe_rcode_at`] into the states [`Self::observe_tracked_at`] handed back for
    /// this query.
    pub fn observe_rcode_tracked(&self, tracked: &Tracked, nxdomain: bool, now: Duration) {
        let epochs = self.epochs(now);
        {
            let mut st = tracked.pair.lock();
            self.record_answer(&mut st.windows, epochs, nxdomain, 0, false);
            // The NXDOMAIN term reads the share once the window holds ten answers.
            if nxdomain || st.windows.0[1].raw_answers() == 10 {
                st.memo = None;
            }
        }
        self.record_answer(
            &mut tracked.domain.lock().windows,
            epochs,
            nxdomain,
            0,
            false,
        );
    }

    /// Counts one answer into each of `ws`' windows.
    fn record_answer(
        &self,
        ws: &mut Windows,
        epochs: [u64; 3],
        nxdomain: bool,
        down: u32,
        data: bool,
    ) {
        for (w, epoch) in ws.0.iter_mut().zip(epochs) {
            w.advance_to(epoch);
            let b = w.current_mut();
            b.answers = b.answers.saturating_add(1);
            b.nxdomain = b.nxdomain.saturating_add(u32::from(nxdomain));
            b.down_bytes = b.down_bytes.saturating_add(down);
            b.down_answers = b.down_answers.saturating_add(u32::from(data));
        }
    }

    /// Records whether the answer to a query for `domain` from `client` was NXDOMAIN. Only keys
    /// already tracked are updated: an answer never creates state.
    pub fn observe_rcode(&self, client: &ClientKey, domain: &str, nxdomain: bool) {
        self.observe_answer_at(
            client,
            "",
            domain,
            0,
            &FreshAnswer::rcode_only(nxdomain),
            self.clock.now(),
        );
    }

    /// [`Self::observe_rcode`] at `now`, a reading of this detector's clock.
    pub fn observe_rcode_at(
        &self,
        client: &ClientKey,
        qname: &str,
        domain: &str,
        nxdomain: bool,
        now: Duration,
    ) {
        // The key the query was scored under: a reverse name's network, not its tree's zone.
        self.observe_answer_at(
            client,
            "",
            addresses::detection_zone(qname, domain),
            0,
            &FreshAnswer::rcode_only(nxdomain),
            now,
        );
    }

    /// Records an answer fresh from upstream: NXDOMAIN or not, and what in it is downstream
    /// data, the half of a tunnel that answers carry.
    ///
    /// - Carrier query types (TXT, NULL, CNAME, MX, SRV, KEY, private types, ANY): the bytes
    ///   after the question, but only when the answer says something new: `content` feeds the
    ///   hasher what the answer says (everything after its ID, TTLs included), and the very
    ///   answer this client was last given for this question counts no bytes. A tunnel's
    ///   answers differ (in records, in their order, in TTLs); a service-discovery poller
    ///   re-fetching an unchanged SRV set whose TTL is 0 gets the same answer again and again.
    /// - Any other type (A, AAAA, ...): the addresses and CNAME targets that are new to the
    ///   registrable domain's answers, fleet-wide (`answer_parts_bits`), at a quarter
    ///   weight, plus a byte when the answer differs from the one this client was last given
    ///   for the question (which known addresses, in which order, is a choice too). A CDN's
    ///   rotating pool is learned once; a tunnel polling one name for fresh AAAA sets pays for
    ///   every address. TTLs do not count here: a caching upstream counts them down.
    ///
    /// Each answer that counts bytes is also one piece of downstream data for the rule that one
    /// odd name alone never contains anyone. A new piece of data counts client-wide too
    /// (`client_down_bytes`): an 80th of it while the domain has given this client less than
    /// `CLIENT_DOWN_ALLOWANCE` bytes in the detection window (from a domain no other client
    /// asks, `private_share`, a 112th of its undiscounted size when that is more), all of it
    /// past that (undiscounted for size and for being addresses), times the domain's
    /// prevalence discount for the client. Cache hits should report through
    /// [`Self::observe_rcode_at`]: a cached answer carries nothing new. Only keys already
    /// tracked are updated.
    pub fn observe_answer_at(
        &self,
        client: &ClientKey,
        qname: &str,
        domain: &str,
        qtype: u16,
        answer: &FreshAnswer<'_>,
        now: Duration,
    ) {
        if !self.enabled {
            return;
        }
        let client_hash = self.client_key(client);
        let domain_key = self.domain_key(addresses::detection_zone(qname, domain));
        // An SRV or MX answer says host names and a few numbers: priced as an address answer
        // is, by what is new in them (a service registry's first answers, five instance names
        // each, were a carrier's bytes: nine sinkholed the domain in 0.1 s).
        let priced_by_targets =
            features::priced_by_targets(qtype, qname) && !answer.host_targets.is_empty();
        let carrier = !priced_by_targets && features::answer_carries_bytes(qtype, qname);
        let question = || self.hasher.hash_one((client_hash, qname, qtype));
        let tag = |feed: &dyn Fn(&mut dyn Hasher)| {
            let mut h = self.hasher.build_hasher();
            feed(&mut h);
            h.finish()
        };
        // `down`: bytes counted; `full`: the same bytes without the discounts on big answers and
        // on addresses (what they count client-wide past the domain's allowance,
        // [`client_down_bytes`]);
        // `data`: whether the answer is a new piece of data (for the rule that one odd name
        // alone never contains anyone).
        let (down, full, data) = if answer.answers == 0 && answer.bytes > 0 {
            // A negative answer says what its zone's SOA says, the same for every name: free
            // when this client's last negative answer from the domain said the same (hosts
            // without an HTTPS record, asked by a browser each), counted like any answer when
            // it did not (a tunnel writing its data into the SOA's names, NSEC3 records), for
            // every query type: an A query's NXDOMAIN carried 78 bytes of SOA fields a query
            // unseen when only carrier types were priced.
            // Keyed by the rcode too: a client alternating NXDOMAIN (search-list expansions)
            // and NODATA (AAAA of IPv4-only hosts) under one domain flips nothing. A DO client's
            // proofs differ for every name of a signed zone (NSEC3 owners are hashes): the tag
            // is the SOA's, and the proofs count only beyond a generous allowance.
            let key = self
                .hasher
                .hash_one((client_hash, domain_key, answer.nxdomain, "negative"));
            let proof_bytes = answer
                .signed_bytes
                .saturating_sub(NEGATIVE_SIGNED_ALLOWANCE);
            let proofs = volume::carrier_answer_bytes(proof_bytes);
            let proof_bytes = u32::try_from(proof_bytes).unwrap_or(u32::MAX);
            match self.answers.record(key, tag(answer.records)) {
                LastAsker::Same => (proofs, proof_bytes, proofs > 0),
                LastAsker::Other | LastAsker::Unknown => {
                    let soa = answer.bytes.saturating_sub(answer.signed_bytes);
                    let bytes = volume::carrier_answer_bytes(soa) + proofs;
                    let full = u32::try_from(soa)
                        .unwrap_or(u32::MAX)
                        .saturating_add(proof_bytes);
                    (bytes, full, bytes > 0)
                }
            }
        } else if carrier && answer.bytes > 0 {
            // Keyed by (client, question), holding a tag of the last answer's content: only
            // the very answer this client was given last for this question is free. Answers
            // alternating between a few seen before, or TTLs that change, still count bytes;
            // only records that changed make a new piece of data.
            let question = question();
            let (bytes, full) = match self.answers.record(question, tag(answer.content)) {
                LastAsker::Same => (0, 0),
                LastAsker::Other | LastAsker::Unknown => (
                    volume::carrier_answer_bytes(answer.bytes),
                    u32::try_from(answer.bytes).unwrap_or(u32::MAX),
                ),
            };
            let changed =
                self.answer_records.record(question, tag(answer.records)) != LastAsker::Same;
            (bytes, full, bytes > 0 && changed)
        } else if !carrier
            && (!answer.addresses.is_empty()
                || !answer.cname_targets.is_empty()
                || !answer.host_targets.is_empty())
        {
            // The set, in any order: resolvers and service registries (Consul answers TTL 0,
            // shuffled) reorder records, and an order is not worth a byte each time.
            let set = || {
                let mut h = self.hasher.build_hasher();
                let mut parts: Vec<u64> = answer
                    .addresses
                    .iter()
                    .map(|a| self.hasher.hash_one(a))
                    .chain(answer.cname_targets.iter().map(|t| self.hasher.hash_one(t)))
                    .chain(answer.host_targets.iter().map(|t| self.hasher.hash_one(t)))
                    .collect();
                parts.sort_unstable();
                for p in parts {
                    h.write_u64(p);
                }
                h.finish()
            };
            // `parts_full`: their bits without the quarter weight.
            let (parts, parts_full, new_parts) =
                match self.address_answers.record(question(), set()) {
                    LastAsker::Same => (0, 0, false),
                    last => {
                        let bits = self.answer_parts_bits(domain_key, qname, answer);
                        let other = u32::from(last == LastAsker::Other);
                        let down = bits.div_ceil(ANSWER_PART_BITS_PER_BYTE) + other;
                        (down, bits.div_ceil(8) + other, down > 0)
                    }
                };
            // A DO client's signatures and proofs beside the addresses: whatever their server
            // put in them (a 900-byte "RRSIG" a query moved 8.6 MB unseen). The same records as
            // this client's last answer to the question are free (a name re-resolved within
            // its signatures' validity); a first answer has an allowance of about one large
            // signature; a changed one for the same question (a tunnel polling one name)
            // counts in full, as carrier data.
            let signed_bytes = if answer.signed_bytes == 0 {
                0
            } else {
                match self.answers.record(question(), tag(answer.records)) {
                    LastAsker::Same => 0,
                    LastAsker::Unknown => answer.signed_bytes.saturating_sub(SIGNED_ALLOWANCE),
                    LastAsker::Other => answer.signed_bytes,
                }
            };
            let signed = volume::carrier_answer_bytes(signed_bytes);
            let full = parts_full.saturating_add(u32::try_from(signed_bytes).unwrap_or(u32::MAX));
            (parts + signed, full, new_parts || signed > 0)
        } else {
            (0, 0, false)
        };
        // A lookup service's answers are its vendor's own data (Team Cymru's ASN TXT, a
        // blocklist's return codes): the zone is the vendor's alone, so no client and no one
        // else's server chooses them, and they carry nothing to anyone: they count nothing
        // (a Cymru lookup every 5 s, each with its ASN's description, was sinkholed in 5
        // minutes on its TXT answers' bytes; at a 32nd of them, one a second still was).
        let (down, full) = if (down > 0 || full > 0)
            && self.exceptions.find(qname).is_some()
            && (exceptions::is_lookup_service(qname) || self.lookup_services.find(qname).is_some())
        {
            (0, 0)
        } else {
            (down, full)
        };
        let epochs = self.epochs(now);
        let record = |ws: &mut Windows| self.record_answer(ws, epochs, answer.nxdomain, down, data);
        // The pair's counted answer bytes in its detection window, this answer's included.
        let pair = self
            .pairs
            .get(self.pair_key(client_hash, domain_key))
            .map(|state| {
                let mut st = state.lock();
                record(&mut st.windows);
                if answer.nxdomain || down > 0 || data {
                    st.memo = None;
                }
                (st.windows.0[1].raw_down_bytes(), st.prevalence)
            });
        // How far the domain is this client's alone (1: no other client asked it over the
        // prevalence window), read only for a new piece of data; a domain no longer tracked
        // is taken as private.
        let private = self.domains.get(domain_key).map_or(1.0, |state| {
            let mut d = state.lock();
            record(&mut d.windows);
            if data {
                d.clients.advance(now, self.prevalence_half);
                private_share(d.clients.stats_unique())
            } else {
                1.0
            }
        });
        // The client across its domains: what each domain gives past what looking at a domain
        // takes, so a tunnel hopping to a new domain whenever its last one is contained is one
        // suspect, not forty; and within that, a private domain's answers by their size, so
        // one hopping before each domain's allowance is one suspect too. A new piece of data
        // only: a carrier record that changed its TTLs alone says nothing new (its bytes
        // still use up the domain's allowance).
        if data {
            let (pair_down, prevalence) = pair.unwrap_or((u64::from(down), 0));
            let prevalence = if prevalence == 0 {
                1.0
            } else {
                f32::from(prevalence) / 255.0
            };
            let counted = client_down_bytes(pair_down, down, full, private) * prevalence;
            if counted > 0.0
                && let Some(state) = self.clients.get(client_hash)
            {
                let mut c = state.lock();
                // Whole bytes to the windows, the fraction carried to the next answer: a
                // tunnel of many small answers (one AAAA each, 16 bytes at a 96th) pays for
                // every one of them, rather than nothing for each.
                let carried = counted + c.down_carry;
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                let whole = carried.min(u32::MAX as f32) as u32;
                #[allow(clippy::cast_precision_loss)]
                {
                    c.down_carry = (carried - whole as f32).clamp(0.0, 1.0);
                }
                c.memo = None;
                for (w, epoch) in c.windows.0.iter_mut().zip(epochs) {
                    w.advance_to(epoch);
                    let b = w.current_mut();
                    b.down_bytes = b.down_bytes.saturating_add(whole);
                    b.down_answers = b.down_answers.saturating_add(1);
                }
            }
        }
    }

    /// Information in `obs`'s registrable domain's own first label, bits, when the domain is
    /// new to this client fleet-wide as far as the "asked last" table remembers (no client
    /// asked it lately, this one included); 0 otherwise. Called once per (client, domain).
    fn registrable_label_bits(
        &self,
        obs: &Observation<'_>,
        client_hash: u64,
        domain_key: u64,
    ) -> u32 {
        let asker = self.shared.record(label_asker_key(domain_key), client_hash);
        if asker != LastAsker::Unknown {
            return 0;
        }
        let label = obs.domain.split('.').next().unwrap_or("");
        volume::info_bits(&features::extract(obs.domain, label, obs.qtype))
    }

    /// Bits of `answer`'s addresses and CNAME targets that are new to `domain_key`'s answers
    /// (any client's), recording them as given.
    ///
    /// An address given before costs nothing; one in a network given before costs its host
    /// part ([`address_bits`]); any other, all of it. A CNAME target given before costs
    /// nothing; otherwise its first label (nothing when it repeats the query name's first
    /// label, as `host7.example.com` → `host7.example.com.cdn.example.net` does) and, unless
    /// its parent was given before, the rest of it, at 5 bits a character.
    fn answer_parts_bits(&self, domain_key: u64, qname: &str, answer: &FreshAnswer<'_>) -> u32 {
        // Presence only (every part under one tag, 0): a part already in the table is a plain
        // load, so a busy resolver's repeated answers do not churn it.
        let seen = |part: u64| self.answer_parts.record(part, 0) != LastAsker::Unknown;
        let mut bits = 0u32;
        for addr in answer.addresses {
            let (octets, len) = match addr {
                IpAddr::V4(a) => {
                    let mut o = [0u8; 16];
                    o[..4].copy_from_slice(&a.octets());
                    (o, 4)
                }
                IpAddr::V6(a) => (a.octets(), 16),
            };
            let known = |n: usize| seen(self.hasher.hash_one((domain_key, n, &octets[..n])));
            if known(len) {
                continue;
            }
            // Every network is recorded (so it is learned), then the longest known one prices
            // the address.
            let (near, far) = if len == 4 { (3, 2) } else { (8, 6) };
            let (near_known, far_known) = (known(near), known(far));
            bits = bits.saturating_add(address_bits(&octets[..len], near_known, far_known));
        }
        let qname_first = qname.split('.').next().unwrap_or("");
        // A target's key: the domain and the name, ASCII case folded.
        let key = |part: &str| {
            let mut h = self.hasher.build_hasher();
            h.write_u64(domain_key);
            for b in part.bytes() {
                h.write_u8(b.to_ascii_lowercase());
            }
            h.finish()
        };
        for target in answer.cname_targets {
            let target = target.trim_end_matches('.');
            if seen(key(target)) {
                continue;
            }
            let (first, parent) = target.split_once('.').unwrap_or((target, ""));
            let mut chars = if first.eq_ignore_ascii_case(qname_first) {
                0
            } else {
                first.len()
            };
            if !parent.is_empty() && !seen(key(parent)) {
                chars += parent.len() + 1;
            }
            bits = bits.saturating_add(5 * u32::try_from(chars).unwrap_or(u32::MAX / 8));
        }
        // SRV, MX and reverse PTR targets: the name as a CNAME target's (without the
        // first-label rule), and the record's numbers (priority, weight, port; preference) the
        // first time the domain gives them with this target: 16 bits for each number that
        // differs from the record before it in the answer (the first record's: all of them), so
        // a service whose instances share a port and weights pays one port, and a tunnel
        // writing into every number pays for every one.
        let mut previous: Option<u64> = None;
        for t in answer.host_targets {
            let target = t.name.trim_end_matches('.');
            // A reverse name's PTR (the only target without numbers) usually spells the
            // address it was asked for (`ip-1-2-3-4.pool.isp.example`,
            // `static.4.3.2.1.clients.example`): priced by its template, the address's octets
            // taken out, which a sweep pays for once (a /22 sweep of templated names reached the
            // quarantine level priced name by name).
            let shaped;
            let target = if t.field_bits == 0 {
                shaped = addresses::ptr_template(target, qname);
                shaped.as_str()
            } else {
                target
            };
            let fields = {
                let mut h = self.hasher.build_hasher();
                h.write_u64(key(target));
                h.write_u64(t.fields);
                h.finish()
            };
            if !seen(fields) {
                let numbers = u32::from(t.field_bits / 16);
                let changed = match previous {
                    None => numbers,
                    Some(p) => (0..numbers)
                        .filter(|i| (p >> (16 * i)) & 0xffff != (t.fields >> (16 * i)) & 0xffff)
                        .count() as u32,
                };
                bits = bits.saturating_add(16 * changed);
            }
            previous = Some(t.fields);
            if seen(key(target)) {
                continue;
            }
            // What the name says, as a query name's information is estimated (a hex
            // instance ID is 4 bits a character, not 5), its parent's characters at 5 bits
            // unless given before.
            let (first, parent) = target.split_once('.').unwrap_or((target, ""));
            bits = bits.saturating_add(volume::info_bits(&features::extract(
                target,
                first,
                features::QTYPE_A,
            )));
            if !parent.is_empty() && !seen(key(parent)) {
                bits = bits
                    .saturating_add(5 * u32::try_from(parent.len() + 1).unwrap_or(u32::MAX / 8));
            }
        }
        bits
    }

    /// Number of keys currently tracked (all tables), for metrics.
    #[must_use]
    pub fn tracked_keys(&self) -> usize {
        self.pairs.len() + self.domains.len() + self.clients.len()
    }

    /// Keys tracked per table: (client, domain), domain, client, with their metric labels.
    #[must_use]
    pub fn tracked_keys_by_table(&self) -> [(&'static str, usize); 3] {
        [
            (self.pairs.name(), self.pairs.len()),
            (self.domains.name(), self.domains.len()),
            (self.clients.name(), self.clients.len()),
        ]
    }

    /// Sets `dnsward_detector_tracked_keys{table}` for each table; call it periodically.
    pub fn publish_metrics(&self) {
        for (name, len) in self.tracked_keys_by_table() {
            #[allow(clippy::cast_precision_loss)]
            metrics::gauge!(DETECTOR_TRACKED_KEYS, "table" => name).set(len as f64);
        }
    }

    /// The (client, domain) key, from the hashes already taken so the name is hashed once per
    /// query.
    fn pair_key(&self, client_hash: u64, domain_key: u64) -> u64 {
        // Both are keyed hashes already: a fixed mix of the two is as unguessable, and cheaper
        // than hashing them again.
        let x = client_hash
            ^ domain_key
                .rotate_left(31)
                .wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (x ^ (x >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9)
    }

    /// Whether `qname` is a search-list expansion of a public name under one of
    /// `[detect].search_domains` ([`crate::names::search_expansion`]).
    fn is_search_expansion(&self, qname: &str) -> bool {
        self.search_domains
            .iter()
            .any(|s| crate::names::search_expansion(qname, s).is_some())
    }

    /// The keyed hashes of `qname`'s subdomain part `sub` and of its registrable domain
    /// `domain`: recalled when this thread asked for the same name and domain last time it used
    /// that name's slot, else computed (and kept).
    fn name_keys(&self, qname: &str, domain: &str, sub: &str) -> (u64, u64) {
        let compute = || (self.hash_str(sub), self.domain_key(domain));
        // Kept by the name, with the domain's length checked: exact while the domain is the
        // name's suffix (always: it is the name's registrable domain).
        let Ok(domain_len) = u8::try_from(domain.len()) else {
            return compute();
        };
        if !qname.ends_with(domain) {
            return compute();
        }
        // Never a panic: with the table gone (a thread's exit) or in use, computed.
        let kept = NAME_KEYS.try_with(|t| {
            t.try_borrow_mut().ok().map(|mut t| {
                t.get_or(
                    self.owner,
                    qname.as_bytes(),
                    |v| v.2 == domain_len,
                    || {
                        let (s, d) = compute();
                        (s, d, domain_len)
                    },
                )
            })
        });
        match kept {
            Ok(Some((sub_hash, domain_key, _))) => (sub_hash, domain_key),
            _ => compute(),
        }
    }

    /// Bits a fresh name counts unless a shipped lookup service covers it: `floor_bits`, unless it
    /// is a reversed address under a zone ([`addresses::address_lookup`]). Such a name is
    /// recorded as this client's lookup of that address (so every address lookup, the shipped
    /// lists' and the reverse trees' too, can corroborate another) and counts at most the
    /// address's size: in the reverse trees a quarter of it
    /// ([`addresses::REVERSE_ADDRESS_SHARE`]); under any other zone, asked by a client that
    /// checks addresses against several domains or asked under another domain just before, at
    /// the lookup services' share ([`exceptions::LOOKUP_SERVICE_SHARE`]).
    fn address_lookup_bits(
        &self,
        qname: &str,
        client_hash: u64,
        domain_key: u64,
        floor_bits: u32,
    ) -> u32 {
        let Some(lookup) = addresses::address_lookup(qname) else {
            return floor_bits;
        };
        let address_hash = self.hasher.hash_one((client_hash, lookup.address));
        let seen = self
            .lookups
            .record(client_hash, address_hash, domain_key, true);
        let bits = floor_bits.min(lookup.max_bits());
        if crate::names::is_reverse_name(lookup.zone) {
            bits.div_ceil(addresses::REVERSE_ADDRESS_SHARE)
        } else if seen.corroborated || seen.checker {
            (bits / exceptions::LOOKUP_SERVICE_SHARE).max(1)
        } else {
            bits
        }
    }

    fn domain_key(&self, domain: &str) -> u64 {
        self.hash_str(domain)
    }

    /// A client's keyed hash, recalled from this thread's last clients when it was seen (the
    /// same SipHash value, without the call, [`crate::recall`]).
    fn client_key(&self, client: &ClientKey) -> u64 {
        CLIENT_KEYS
            .try_with(|t| {
                t.try_borrow_mut().ok().map(|mut t| {
                    t.get_or(self.owner, client.address_scope(), || {
                        self.hasher.hash_one(client)
                    })
                })
            })
            .ok()
            .flatten()
            .unwrap_or_else(|| self.hasher.hash_one(client))
    }

    /// A name's keyed hash: its bytes in one write (`str`'s `Hash` adds a second write for a
    /// terminator, which a single write does not need; SipHash's finish counts the length).
    fn hash_str(&self, s: &str) -> u64 {
        let mut h = self.hasher.build_hasher();
        h.write(s.as_bytes());
        h.finish()
    }
}

/// Bits of information in an address new to its domain, given whether its network was known:
/// IPv4 8 bits under a known /24, 16 under a known /16, else 32; IPv6 the interface identifier
/// under a known /64, 16 bits more under a known /48, 64 more otherwise. An interface
/// identifier costs its significant bits (at least 8): a server's `::5f` is cheap, a random
/// identifier (a tunnel's data, or SLAAC) costs its 64.
fn address_bits(octets: &[u8], near_known: bool, far_known: bool) -> u32 {
    if octets.len() == 4 {
        return if near_known {
            8
        } else if far_known {
            16
        } else {
            32
        };
    }
    let mut iid = [0u8; 8];
    iid.copy_from_slice(&octets[8..16]);
    let host = (64 - u64::from_be_bytes(iid).leading_zeros()).max(8);
    host + if near_known {
        0
    } else if far_known {
        16
    } else {
        64
    }
}

/// The bytes of one answer that count client-wide, before [`volume::DOWN_WEIGHT`]: `down`
/// bytes counted for the (client, domain), `full` the same without the discount on big answers,
/// `pair_down` the pair's counted bytes in its detection window, this answer's included, and
/// `private` how far the domain is this client's alone ([`private_share`]).
///
/// Within the domain's [`CLIENT_DOWN_ALLOWANCE`] one [`CLIENT_DOWN_SHARE`]th of the counted
/// bytes counts, and for a private domain the more of that and one
/// [`CLIENT_PRIVATE_DOWN_SHARE`]th of the undiscounted bytes (blended by `private`); past it,
/// all of `full`'s share: the discount on big answers is for an RRset asked once (an apex's
/// TXT set), and a domain's answers past the allowance are a stream.
fn client_down_bytes(pair_down: u64, down: u32, full: u32, private: f32) -> f32 {
    if down == 0 {
        return 0.0;
    }
    let (down, full) = (u64::from(down), u64::from(full.max(down)));
    let before = pair_down.saturating_sub(down);
    let within = pair_down.min(CLIENT_DOWN_ALLOWANCE) - before.min(CLIENT_DOWN_ALLOWANCE);
    let beyond = down.saturating_sub(within);
    #[allow(clippy::cast_precision_loss)] // bytes of one answer
    let (shared_within, private_within, beyond) = (
        within as f32 / CLIENT_DOWN_SHARE as f32,
        (full * within / down) as f32 / CLIENT_PRIVATE_DOWN_SHARE as f32,
        (full * beyond / down) as f32,
    );
    let private_within = private_within.max(shared_within);
    shared_within + (private_within - shared_within) * private.clamp(0.0, 1.0) + beyond
}

/// How far a domain asked by `clients` distinct clients over the prevalence window is one
/// client's alone, 0..=1: 1 up to two clients, 0 from sixteen (the prevalence ramp,
/// log2(clients) from 1 to 4). A tunnel's domains are asked by its client alone; a popular
/// domain's long TXT or HTTPS records (a mail provider's SPF, a CDN's ECH configs) are read
/// by many. Two clients still count as private, so one attacker's two agents asking each
/// other's domains earn nothing; sixteen would.
fn private_share(clients: u64) -> f32 {
    #[allow(clippy::cast_precision_loss)]
    let clients = clients.max(1) as f32;
    1.0 - score::ramp(clients.log2(), 1.0, 4.0)
}

/// Whether an alert at `level` is due for a key now; records it when it is.
fn alert_due(
    last_at: &mut Option<Duration>,
    last_level: &mut Level,
    now: Duration,
    level: Level,
    interval: Duration,
) -> bool {
    let due = match *last_at {
        None => true,
        Some(at) => level > *last_level || now.saturating_sub(at) >= interval,
    };
    if due {
        *last_at = Some(now);
        *last_level = level;
    }
    due
}

/// Keeps up to [`SAMPLES`] recent suspicious names, truncated, replacing them in turn.
fn keep_sample(st: &mut PairState, qname: &str) {
    let cut = qname
        .char_indices()
        .nth(SAMPLE_CHARS)
        .map_or(qname.len(), |(i, _)| i);
    let sample = &qname[..cut];
    if st.samples.len() < SAMPLES {
        st.samples.push(sample.to_string());
    } else {
        // Replace one sample every 16 suspicious queries: recent enough, cheap enough.
        st.sample_turn = st.sample_turn.wrapping_add(1);
        if st.sample_turn.is_multiple_of(16) {
            let slot = (st.sample_turn / 16) % SAMPLES;
            sample.clone_into(&mut st.samples[slot]);
        }
    }
}

/// The alert's breakdown: the window terms, which add up to the score, and the current query's
/// own terms as `query.<feature>`, which explain the query score.
fn breakdown_map(window: &Breakdown, query: &Breakdown) -> std::collections::BTreeMap<String, f64> {
    let mut map = window.to_map();
    for (name, points) in query.to_map() {
        map.insert(format!("query.{name}"), points);
    }
    map
}

#[cfg(test)]
mod tests;
