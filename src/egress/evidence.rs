//! Denied connections as containment evidence: an agent that keeps connecting to addresses
//! dnsward never resolved for it is hard-coding addresses or bypassing DNS, and is contained
//! through the same [`crate::contain::Containment`] the tunnel detector uses.
//!
//! Own evidence only, and only evidence that can be pinned on a client:
//! - A drop is **attributed** only when its source address lies in the CIDRs of a gated group
//!   *and* that is the group whose rule logged it (the log prefix). Anything else (a stale
//!   ruleset, overlapping CIDRs, a group switched off) still becomes an `egress_denied` event
//!   but counts against nobody (`dnsward_egress_denied_unattributed_total`).
//! - It counts against the address-keyed client ([`ClientKey::address`], IPv6 by its /64 as
//!   containment keys it): a packet carries no agent identity, so a containment started here
//!   applies to DNS queries keyed on that address. Agents that authenticate (mTLS, tokens) are
//!   keyed on their identity and are not affected; see `docs/egress.md`.
//! - The threshold counts **distinct destination addresses** within a window, not packets: an
//!   agent retrying one blocked address (a stale config, a long-lived client whose answer
//!   expired) is alerted on but not contained; one sweeping hard-coded addresses is.
//! - A raw packet's source can be forged. The generated ruleset drops agent sources that do not
//!   arrive on the interface their address is routed through (`anti_spoof`), which stops forgery
//!   across segments but not between agents sharing one. So the default action is a throttle on
//!   every name (an inconvenience when forged, expiring by itself), and a quarantine needs the
//!   operator's `trust_denied_sources = true` ([`super::config::EgressConfig::validate`]).
//! - Monitor-only groups (`detect.monitor_only`) get the alert, never a containment.
//!
//! State is bounded: at most [`MAX_CLIENTS`] clients with a live window (when full, expired
//! windows go first, then the oldest), and per client at most `contain_after_denied` (≤ 256)
//! destination addresses, of which the first [`LISTED`] seen keep up to [`MAX_PORTS`] ports as
//! evidence: a few tens of MB in the worst case. Time comes from the injected clock.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::Duration;

use super::config::{DeniedAction, EgressConfig};
use super::denied::{DroppedPacket, group_of};
use super::metric_names as mn;
use crate::clock::SharedClock;
use crate::detect::Level;
use crate::events::{AlertEvent, ContainmentEvent, EgressDeniedEvent, EventBody, WindowCounts};
use crate::identity::ClientKey;

/// Most clients with a counting window at once.
pub const MAX_CLIENTS: usize = 4096;
/// Ports remembered per listed destination (as evidence; they do not make a destination
/// distinct).
pub const MAX_PORTS: usize = 8;
/// Destinations (the first seen in a window) listed with their ports in an alert's samples and
/// a containment's reason.
pub const LISTED: usize = 10;
/// The score egress evidence carries in events (it is a count, not a model's score).
const SCORE: u8 = 100;

/// A drop pinned on a client of a gated group.
#[derive(Debug, Clone)]
pub struct Attributed {
    /// The group whose CIDRs hold the source.
    pub group: String,
    /// The client, keyed on its address as containment keys it.
    pub key: ClientKey,
    /// The group only observes (`detect.monitor_only`): alerts, no containment.
    pub monitor_only: bool,
}

/// What the denied-flow reader needs from the running server; implemented over the pipeline.
pub trait DeniedContext: Send + Sync {
    /// The policy version stamped on events.
    fn version(&self) -> u64;
    /// The gated group whose CIDRs hold `src` (by the policy in force), with the client key;
    /// `None` when `src` is in no gated group's CIDRs.
    fn attribute(&self, src: IpAddr) -> Option<Attributed>;
    /// Start a containment of `key` through the containment table; the started event, or
    /// `None` when one at that level or above is already active.
    fn contain(
        &self,
        key: &ClientKey,
        group: &str,
        level: Level,
        reason: String,
    ) -> Option<ContainmentEvent>;
}

/// Thresholds, from `[egress]`.
#[derive(Debug, Clone, Copy)]
pub struct EvidenceSettings {
    /// Drops (any destination) in a window before one alert.
    pub alert_after: u32,
    /// Distinct destination addresses in a window before containment.
    pub contain_after: u32,
    /// The window.
    pub window: Duration,
    /// What containment is.
    pub action: DeniedAction,
}

impl From<&EgressConfig> for EvidenceSettings {
    fn from(c: &EgressConfig) -> Self {
        Self {
            alert_after: c.denied_alert_after,
            contain_after: c.contain_after_denied,
            window: c.denied_window,
            action: c.denied_action,
        }
    }
}

/// A destination port (none for ICMP and the like) and protocol, as evidence.
type PortProto = (Option<u16>, String);

/// One client's window.
#[derive(Debug)]
struct ClientWindow {
    /// Clock time the window started.
    since: Duration,
    /// Drops in it.
    attempts: u32,
    /// Distinct destinations (bounded by `contain_after`).
    dests: BTreeSet<IpAddr>,
    /// The first [`LISTED`] of them in the order seen, with the (port, protocol)s seen
    /// (bounded).
    listed: Vec<(IpAddr, BTreeSet<PortProto>)>,
    /// The alert of this window was raised.
    alerted: bool,
    /// The threshold of this window was reached (contained, or alerted for a monitor-only
    /// group or `alert-only`).
    contained: bool,
}

impl ClientWindow {
    fn new(now: Duration) -> Self {
        Self {
            since: now,
            attempts: 0,
            dests: BTreeSet::new(),
            listed: Vec::new(),
            alerted: false,
            contained: false,
        }
    }

    /// `dst:port/proto,...` of the listed destinations, for events.
    fn listed(&self) -> Vec<String> {
        self.listed
            .iter()
            .map(|(ip, ports)| {
                let dst = match ip {
                    IpAddr::V4(a) => a.to_string(),
                    IpAddr::V6(a) => format!("[{a}]"),
                };
                let ports: Vec<String> = ports
                    .iter()
                    .map(|(port, proto)| match port {
                        Some(n) => format!("{n}/{proto}"),
                        None => proto.clone(),
                    })
                    .collect();
                format!("{dst}:{}", ports.join(","))
            })
            .collect()
    }
}

/// Counts each attributed client's drops and decides alerts and containments.
#[derive(Debug)]
pub struct DeniedEvidence {
    settings: EvidenceSettings,
    clock: SharedClock,
    clients: HashMap<ClientKey, ClientWindow>,
}

impl DeniedEvidence {
    /// Empty windows.
    #[must_use]
    pub fn new(settings: EvidenceSettings, clock: SharedClock) -> Self {
        Self {
            settings,
            clock,
            clients: HashMap::new(),
        }
    }

    /// Clients with a window (tests, metrics).
    #[must_use]
    pub fn tracked(&self) -> usize {
        self.clients.len()
    }

    /// One dropped packet → the events it causes, in order: always `egress_denied`; an `alert`
    /// (once per window each) when the client reaches `alert_after` drops and when it reaches
    /// `contain_after` distinct destinations; with the latter `containment_started` too, unless
    /// the group is monitor-only or the action is `alert-only`.
    pub fn observe(&mut self, ctx: &dyn DeniedContext, p: &DroppedPacket) -> Vec<EventBody> {
        let logged_by = group_of(&p.prefix).map(str::to_string);
        let mut out = vec![EventBody::EgressDenied(EgressDeniedEvent {
            client: p.src,
            group: logged_by.clone(),
            dst: p.dst,
            port: p.port,
            proto: p.proto.clone(),
        })];
        let attributed = ctx
            .attribute(p.src)
            .filter(|a| logged_by.as_deref() == Some(a.group.as_str()));
        let Some(who) = attributed else {
            metrics::counter!(mn::DENIED_UNATTRIBUTED_TOTAL).increment(1);
            return out;
        };
        let now = self.clock.now();
        let s = self.settings;
        self.make_room(&who.key, now);
        let w = self
            .clients
            .entry(who.key.clone())
            .or_insert_with(|| ClientWindow::new(now));
        if now.saturating_sub(w.since) >= s.window {
            *w = ClientWindow::new(now);
        }
        w.attempts = w.attempts.saturating_add(1);
        let port = (p.port, p.proto.clone());
        let cap = usize::try_from(s.contain_after).unwrap_or(usize::MAX);
        if w.dests.len() < cap {
            w.dests.insert(p.dst);
        }
        if let Some((_, ports)) = w.listed.iter_mut().find(|(ip, _)| *ip == p.dst) {
            if ports.len() < MAX_PORTS {
                ports.insert(port);
            }
        } else if w.listed.len() < LISTED {
            w.listed.push((p.dst, BTreeSet::from([port])));
        }
        // Reaching the threshold always alerts; it contains unless the group only observes or
        // the action is `alert-only`.
        let reached = !w.contained && w.dests.len() >= cap;
        let contain = reached && s.action != DeniedAction::AlertOnly && !who.monitor_only;
        // The containment gets its own alert (action = what was done) even when the count
        // alert of this window was already raised.
        let alert = reached || (!w.alerted && w.attempts >= s.alert_after);
        if reached {
            w.contained = true;
        }
        if !alert && !contain {
            return out;
        }
        let action = if contain { s.action.as_str() } else { "alert" };
        let window_secs = s.window.as_secs();
        let listed = w.listed();
        if alert {
            w.alerted = true;
            out.push(EventBody::Alert(AlertEvent {
                client: p.src,
                agent: None,
                group: who.group.clone(),
                domain: "(egress)".into(),
                score: SCORE,
                breakdown: BTreeMap::from([
                    ("egress_denied".to_string(), f64::from(w.attempts)),
                    (
                        "egress_denied_destinations".to_string(),
                        w.dests.len() as f64,
                    ),
                ]),
                window: WindowCounts {
                    window_secs,
                    queries: u64::from(w.attempts),
                    ..WindowCounts::default()
                },
                samples: listed.clone(),
                bytes_estimate: 0,
                volume: None,
                action: action.into(),
                monitor_only: who.monitor_only,
                exception: None,
            }));
        }
        if contain {
            let more = w.dests.len().saturating_sub(LISTED);
            let reason = format!(
                "egress: connections to {} distinct addresses it was never given were denied within {}s ({} attempts): {}{}",
                w.dests.len(),
                window_secs,
                w.attempts,
                listed.join(" "),
                if more > 0 {
                    format!(" (+{more} more)")
                } else {
                    String::new()
                },
            );
            let level = action_level(s.action).unwrap_or(Level::Throttle);
            if let Some(started) = ctx.contain(&who.key, &who.group, level, reason) {
                out.push(EventBody::ContainmentStarted(started));
            }
        }
        out
    }

    /// Keep the table within [`MAX_CLIENTS`] before `key` is inserted: expired windows go first,
    /// then the oldest.
    fn make_room(&mut self, key: &ClientKey, now: Duration) {
        if self.clients.len() < MAX_CLIENTS || self.clients.contains_key(key) {
            return;
        }
        let window = self.settings.window;
        self.clients
            .retain(|_, w| now.saturating_sub(w.since) < window);
        while self.clients.len() >= MAX_CLIENTS {
            let Some(oldest) = self
                .clients
                .iter()
                .min_by_key(|(_, w)| w.since)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            self.clients.remove(&oldest);
            metrics::counter!(mn::DENIED_EVICTED_TOTAL).increment(1);
        }
    }
}

/// The containment level of a `denied_action` (`None`: alert only).
#[must_use]
pub fn action_level(action: DeniedAction) -> Option<Level> {
    match action {
        DeniedAction::Throttle => Some(Level::Throttle),
        DeniedAction::Sinkhole => Some(Level::Sinkhole),
        DeniedAction::Quarantine => Some(Level::Quarantine),
        DeniedAction::AlertOnly => None,
    }
}

#[cfg(test)]
mod tests;
