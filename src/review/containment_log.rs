//! Who is contained now, for `dnsward alerts`: the `containment_started` and
//! `containment_ended` events of the log folded into one state per (client, domain), judged at
//! a given time (an expiry that passed without an end event counts as ended).
//!
//! Bound: one record per contained (client, domain) or whole client.

use std::collections::HashMap;
use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde::{Serialize, Serializer};

use super::suspects::parse_time;
use crate::events::ContainmentEvent;

/// Whether a suspect is contained, judged from the `containment_*` events read and `now`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Containment {
    /// No containment of this client (whole) or this client and domain was read.
    None,
    /// Contained now.
    Active {
        /// `throttle`, `sinkhole` or `quarantine`.
        action: String,
        /// True for a quarantine of the whole client, false for this domain only.
        whole_client: bool,
        /// When it started.
        #[serde(serialize_with = "ser_time")]
        since: DateTime<Utc>,
        /// When it expires, if it has an expiry.
        #[serde(serialize_with = "ser_opt_time")]
        until: Option<DateTime<Utc>>,
    },
    /// Was contained, no longer is.
    Ended {
        /// `throttle`, `sinkhole` or `quarantine`.
        action: String,
        /// When it ended.
        #[serde(serialize_with = "ser_time")]
        at: DateTime<Utc>,
        /// The reason of the `containment_ended` event (`expired`, `released by alice: …`), or
        /// `expired` when its `until` passed without one being read.
        reason: String,
    },
}

/// The last containment event seen per (client, domain), `None` domain for a whole-client
/// quarantine.
#[derive(Default)]
pub(super) struct ContainmentLog {
    by_target: HashMap<(IpAddr, Option<String>), Containment>,
}

impl ContainmentLog {
    pub(super) fn started(&mut self, ts: DateTime<Utc>, c: ContainmentEvent) {
        let whole_client = c.domain.is_none();
        let key = (c.client, c.domain.map(|d| d.to_ascii_lowercase()));
        // A stronger level on the same target replaces the weaker one without an end event
        // (the containment table keeps one entry per target), so the latest start wins.
        self.by_target.insert(
            key,
            Containment::Active {
                action: c.action,
                whole_client,
                since: ts,
                until: c.until.as_deref().and_then(|u| parse_time(u).ok()),
            },
        );
    }

    pub(super) fn ended(&mut self, ts: DateTime<Utc>, c: ContainmentEvent) {
        let key = (c.client, c.domain.map(|d| d.to_ascii_lowercase()));
        if let Some(Containment::Active { action, .. }) = self.by_target.get(&key)
            && *action != c.action
        {
            // The end of a level that was since replaced says nothing about the current one.
            return;
        }
        // Also recorded without a start: that was in a file rotated away, and the end still
        // tells the analyst something.
        self.by_target.insert(
            key,
            Containment::Ended {
                action: c.action,
                at: ts,
                reason: c.reason,
            },
        );
    }

    fn resolve(&self, key: &(IpAddr, Option<String>), now: DateTime<Utc>) -> Containment {
        match self.by_target.get(key) {
            Some(Containment::Active {
                action,
                until: Some(until),
                ..
            }) if *until <= now => Containment::Ended {
                action: action.clone(),
                at: *until,
                reason: "expired".to_string(),
            },
            Some(state) => state.clone(),
            None => Containment::None,
        }
    }

    /// The client's state for `domain`: an active quarantine of the whole client first, then an
    /// active containment of the domain, then whichever ended last.
    pub(super) fn state(&self, client: IpAddr, domain: &str, now: DateTime<Utc>) -> Containment {
        let whole = self.resolve(&(client, None), now);
        let scoped = self.resolve(&(client, Some(domain.to_string())), now);
        match (whole, scoped) {
            (active @ Containment::Active { .. }, _) | (_, active @ Containment::Active { .. }) => {
                active
            }
            (a @ Containment::Ended { at: a_at, .. }, b @ Containment::Ended { at: b_at, .. }) => {
                if a_at > b_at {
                    a
                } else {
                    b
                }
            }
            (Containment::None, other) | (other, Containment::None) => other,
        }
    }
}

pub(super) fn ser_time<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
}

#[allow(clippy::ref_option)] // serde's serialize_with hands over `&Option<T>`
fn ser_opt_time<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => ser_time(t, s),
        None => s.serialize_none(),
    }
}
