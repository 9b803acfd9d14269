//! Tunnel and exfiltration detection: scores every query, per client and registrable domain.
//!
//! The pipeline calls [`Detector::observe`] for every query from an identified client (allowed
//! or not) and [`Detector::observe_rcode`] once the answer is known. Each call:
//! 1. skips names under an exception (benign services with random-looking names),
//! 2. scores the name alone from cheap features ([`features`], [`ngram`], [`score::query_score`]),
//! 3. adds it to three bounded tables: per (client, registrable domain), per registrable domain
//!    (the fleet-wide view, for exfiltration spread over many agents) and per client (a volume
//!    baseline that spots spikes); each keeps a sliding window ([`window`]) with a distinct-name
//!    sketch ([`sketch`]),
//! 4. scores the windows ([`score::domain_score`]); that score, compared against the group's
//!    thresholds, gives the [`Level`], and an [`AlertEvent`] when one is due.
//!
//! The detector only assesses; the pipeline decides what to do with the level (see
//! [`crate::contain`]). Memory is bounded by [`DetectConfig`]'s `max_*` keys whatever the traffic.

pub mod config;
pub mod exceptions;
pub mod features;
pub mod ngram;
pub mod score;
pub mod sketch;
mod table;
#[doc(hidden)]
pub mod testgen;
pub mod window;

use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

use serde::Serialize;

pub use self::config::{DetectConfig, GroupDetectConfig};
use self::exceptions::ExceptionSet;
use self::score::{Breakdown, DomainContext, HIGH_QUERY_SCORE};
use self::table::BoundedTable;
use self::window::SlidingWindow;
use crate::clock::SharedClock;
use crate::events::{AlertEvent, WindowCounts};
use crate::identity::ClientKey;
use crate::metrics::{ALERTS_TOTAL, DETECTOR_TRACKED_KEYS};
use crate::names::subdomain_part;

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

/// The detector's verdict on one query.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Assessment {
    /// This query alone, 0–100.
    pub query_score: u8,
    /// This (client, domain) over the window (or the domain fleet-wide, if higher), 0–100.
    pub domain_score: u8,
    /// What the thresholds are compared against (the domain score: one odd name alone never
    /// contains a client).
    pub score: u8,
    /// Highest threshold crossed; computed in monitor-only mode too.
    pub level: Level,
    /// Set only when an alert is due now: first crossing for the key, a rise in level, or once
    /// per alert interval while it stays high.
    pub alert: Option<AlertEvent>,
    /// The exception entry that matched (the query was then not scored).
    pub exception: Option<String>,
}

/// Longest sample name kept in alerts, in characters.
const SAMPLE_CHARS: usize = 100;
/// Sample names kept per key.
const SAMPLES: usize = 3;

/// State per (client, registrable domain).
#[derive(Debug, Default)]
struct PairState {
    /// Counts over the window.
    window: SlidingWindow,
    /// Subdomain bytes of high-scoring queries since the key was first tracked.
    suspicious_bytes: u64,
    /// A few recent high-scoring names, truncated; allocated only for suspicious queries.
    samples: Vec<String>,
    /// Rotates which sample is replaced.
    sample_turn: usize,
    /// When the last alert for this key was emitted.
    last_alert_at: Option<Duration>,
    /// Its level.
    last_alert_level: Level,
}

/// State per client: a per-minute volume baseline.
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
}

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

/// The tunnel/exfiltration detector. `Send + Sync`; share it behind an `Arc`.
pub struct Detector {
    /// `[detect].enabled`.
    enabled: bool,
    /// Half the window: the bucket length.
    half: Duration,
    /// Window length in seconds, for events.
    window_secs: u64,
    /// Minimum time between repeated alerts for one key at the same level.
    alert_interval: Duration,
    /// Shipped and `[detect].exceptions` entries, compiled for lookup by suffix.
    exceptions: ExceptionSet,
    /// Per (client, registrable domain).
    pairs: BoundedTable<PairState>,
    /// Per registrable domain, fleet-wide.
    domains: BoundedTable<SlidingWindow>,
    /// Per client volume baseline.
    clients: BoundedTable<ClientState>,
    /// Keyed hasher for table keys and the distinct-name sketches, seeded per process.
    hasher: RandomState,
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
        let window = cfg.window.max(Duration::from_secs(2));
        Self {
            enabled: cfg.enabled,
            half: window / 2,
            window_secs: window.as_secs(),
            alert_interval: cfg.alert_interval,
            exceptions: ExceptionSet::new(exceptions),
            pairs: BoundedTable::new("client_domain", cfg.max_client_domains),
            domains: BoundedTable::new("domain", cfg.max_domains),
            clients: BoundedTable::new("client", cfg.max_clients),
            hasher: RandomState::new(),
            clock,
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

    /// [`Self::observe`] at `now`, a reading of this detector's clock that the caller already
    /// took (the pipeline reads the clock once per query for every stage).
    pub fn observe_at(&self, obs: &Observation<'_>, now: Duration) -> Assessment {
        if !self.enabled {
            return Assessment::default();
        }
        let exception = self.exceptions.find(obs.qname).or_else(|| {
            let group = obs.settings.exceptions.iter().map(String::as_str);
            exceptions::find(group, obs.qname)
        });
        if let Some(entry) = exception {
            return Assessment {
                exception: Some(entry.to_string()),
                ..Assessment::default()
            };
        }
        let sub = subdomain_part(obs.qname, obs.domain);
        let f = features::extract(obs.qname, sub, obs.qtype);
        let (query_score, query_terms) = score::query_score(&f);
        let sub_hash = self.hasher.hash_one(sub);
        let high = query_score >= HIGH_QUERY_SCORE;
        let sub_len = u32::try_from(f.sub_len).unwrap_or(u32::MAX);
        let add = |w: &mut SlidingWindow| {
            w.advance(now, self.half);
            let b = w.current_mut();
            b.unique.insert(sub_hash);
            b.queries = b.queries.saturating_add(1);
            b.sub_bytes = b.sub_bytes.saturating_add(sub_len);
            b.score_sum = b.score_sum.saturating_add(u32::from(query_score));
            b.high = b.high.saturating_add(u32::from(high));
            if high {
                b.high_bytes = b.high_bytes.saturating_add(sub_len);
            }
            b.score_bytes = b
                .score_bytes
                .saturating_add(u64::from(query_score) * u64::from(sub_len));
        };

        let client_spike = {
            let state = self
                .clients
                .get_or_insert(self.hasher.hash_one(obs.client), || ClientState {
                    minute: now.as_secs() / 60,
                    ..ClientState::default()
                });
            let mut state = state.lock();
            state.count(now.as_secs() / 60)
        };
        let ctx = DomainContext { client_spike };

        let domain_key = self.domain_key(obs.domain);
        let (fleet_score, _) = {
            let state = self
                .domains
                .get_or_insert(domain_key, SlidingWindow::default);
            let mut w = state.lock();
            add(&mut w);
            score::domain_score(&w.stats(), DomainContext::default())
        };

        let state = self
            .pairs
            .get_or_insert(self.pair_key(obs.client, domain_key), PairState::default);
        let mut st = state.lock();
        add(&mut st.window);
        let stats = st.window.stats();
        let (pair_score, mut breakdown) = score::domain_score(&stats, ctx);
        let domain_score = pair_score.max(fleet_score);
        if fleet_score > pair_score {
            // The fleet-wide view saw more: say how much it added.
            breakdown.add("fleet_wide", f32::from(fleet_score - pair_score));
        }
        if high {
            st.suspicious_bytes = st.suspicious_bytes.saturating_add(u64::from(sub_len));
            keep_sample(&mut st, obs.qname);
        }
        let score = domain_score;
        let level = obs.settings.level_for(score);
        let alert = self.alert_due(&mut st, now, level).then(|| {
            let action = if obs.settings.monitor_only {
                "none"
            } else {
                level.as_str()
            };
            metrics::counter!(ALERTS_TOTAL, "group" => obs.group.to_string(), "action" => action)
                .increment(1);
            AlertEvent {
                client: obs.client.addr,
                agent: obs.client.agent.as_deref().map(str::to_string),
                group: obs.group.to_string(),
                domain: obs.domain.to_string(),
                score,
                breakdown: breakdown_map(&breakdown, &query_terms),
                window: WindowCounts {
                    window_secs: self.window_secs,
                    queries: stats.queries,
                    unique_subdomains: stats.unique,
                    payload_bytes: stats.payload_bytes,
                    nxdomain: stats.nxdomain,
                },
                samples: st.samples.clone(),
                bytes_estimate: st.suspicious_bytes,
                action: action.to_string(),
                monitor_only: obs.settings.monitor_only,
                exception: None,
            }
        });
        Assessment {
            query_score,
            domain_score,
            score,
            level,
            alert,
            exception: None,
        }
    }

    /// Records whether the answer to a query for `domain` from `client` was NXDOMAIN. Only keys
    /// already tracked are updated: an answer never creates state.
    pub fn observe_rcode(&self, client: &ClientKey, domain: &str, nxdomain: bool) {
        self.observe_rcode_at(client, domain, nxdomain, self.clock.now());
    }

    /// [`Self::observe_rcode`] at `now`, a reading of this detector's clock.
    pub fn observe_rcode_at(
        &self,
        client: &ClientKey,
        domain: &str,
        nxdomain: bool,
        now: Duration,
    ) {
        if !self.enabled {
            return;
        }
        let record = |w: &mut SlidingWindow| {
            w.advance(now, self.half);
            let b = w.current_mut();
            b.answers = b.answers.saturating_add(1);
            b.nxdomain = b.nxdomain.saturating_add(u32::from(nxdomain));
        };
        let domain_key = self.domain_key(domain);
        if let Some(state) = self.pairs.get(self.pair_key(client, domain_key)) {
            record(&mut state.lock().window);
        }
        if let Some(state) = self.domains.get(domain_key) {
            record(&mut state.lock());
        }
    }

    /// Number of keys currently tracked (all tables), for metrics.
    #[must_use]
    pub fn tracked_keys(&self) -> usize {
        self.pairs.len() + self.domains.len() + self.clients.len()
    }

    /// Sets `dnsward_detector_tracked_keys{table}` for each table; call it periodically.
    pub fn publish_metrics(&self) {
        for (name, len) in [
            (self.pairs.name(), self.pairs.len()),
            (self.domains.name(), self.domains.len()),
            (self.clients.name(), self.clients.len()),
        ] {
            #[allow(clippy::cast_precision_loss)]
            metrics::gauge!(DETECTOR_TRACKED_KEYS, "table" => name).set(len as f64);
        }
    }

    /// Whether an alert at `level` is due for this key now; records it when it is.
    fn alert_due(&self, st: &mut PairState, now: Duration, level: Level) -> bool {
        if level < Level::Alert {
            return false;
        }
        let due = match st.last_alert_at {
            None => true,
            Some(at) => {
                level > st.last_alert_level || now.saturating_sub(at) >= self.alert_interval
            }
        };
        if due {
            st.last_alert_at = Some(now);
            st.last_alert_level = level;
        }
        due
    }

    /// The (client, domain) key, from the domain's key so the name is hashed once per query.
    fn pair_key(&self, client: &ClientKey, domain_key: u64) -> u64 {
        self.hasher.hash_one((client, domain_key))
    }

    fn domain_key(&self, domain: &str) -> u64 {
        self.hasher.hash_one(domain)
    }
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
