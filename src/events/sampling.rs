//! Sampling of query events from unknown clients.
//!
//! Anyone who can reach the listener can send packets from addresses no group owns, with
//! `unknown_clients = "drop"` as well as `"refuse"`; logging each one would let a flood of them
//! fill the disk and push real evidence out by rotation. So the first `per_minute` queries of
//! each unknown source in a minute are logged and the rest only counted
//! (`dnsward_events_sampled_out_total{kind="unknown_client"}`).
//!
//! The table of sources is bounded ([`MAX_TRACKED`]): when it is full, entries of past minutes
//! are dropped; if it is still full (more distinct unknown sources in one minute than that, i.e.
//! spoofing), new sources are not logged, only counted.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

/// Most unknown sources tracked at once.
pub const MAX_TRACKED: usize = 4096;

/// Per-source counts for the current minute.
#[derive(Debug)]
pub struct UnknownClientSampler {
    per_minute: u32,
    /// Source → (minute number, queries seen in it).
    seen: HashMap<IpAddr, (u64, u32)>,
}

impl UnknownClientSampler {
    /// Log at most `per_minute` queries per unknown source per minute (0: none).
    #[must_use]
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute,
            seen: HashMap::new(),
        }
    }

    /// Whether this query from `client` at `now` (time since an epoch of the caller's clock)
    /// should be logged.
    pub fn admit(&mut self, client: IpAddr, now: Duration) -> bool {
        let minute = now.as_secs() / 60;
        if !self.seen.contains_key(&client) && self.seen.len() >= MAX_TRACKED {
            self.seen.retain(|_, (m, _)| *m == minute);
            if self.seen.len() >= MAX_TRACKED {
                return false;
            }
        }
        let entry = self.seen.entry(client).or_insert((minute, 0));
        if entry.0 != minute {
            *entry = (minute, 0);
        }
        entry.1 = entry.1.saturating_add(1);
        entry.1 <= self.per_minute
    }

    /// Sources tracked now.
    #[must_use]
    pub fn tracked(&self) -> usize {
        self.seen.len()
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n))
    }

    #[test]
    fn the_first_n_per_source_per_minute_are_logged() {
        let mut s = UnknownClientSampler::new(3);
        let t = Duration::from_secs(600);
        let logged = (0..10).filter(|_| s.admit(ip(1), t)).count();
        assert_eq!(logged, 3);
        assert!(s.admit(ip(2), t), "another source has its own budget");
        assert!(!s.admit(ip(1), t + Duration::from_secs(59)));
        assert!(s.admit(ip(1), t + Duration::from_secs(60)), "a new minute");
        assert!(!UnknownClientSampler::new(0).admit(ip(1), t));
    }

    #[test]
    fn the_table_is_bounded_and_past_minutes_make_room() {
        let mut s = UnknownClientSampler::new(1);
        let t = Duration::from_secs(0);
        for n in 0..MAX_TRACKED as u32 {
            assert!(s.admit(ip(n), t));
        }
        assert!(
            !s.admit(ip(999_999), t),
            "full within one minute: counted, not logged"
        );
        assert_eq!(s.tracked(), MAX_TRACKED);
        assert!(s.admit(ip(999_999), Duration::from_secs(60)));
        assert_eq!(s.tracked(), 1);
    }
}
