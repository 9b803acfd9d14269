//! What egress needs from the pipeline beyond the answer hook: the denied-flow reader's view of
//! the policy and the containment table ([`DeniedContext`]), and refilling the sets of a group
//! that becomes gated on a reload from the answers already cached.

use std::net::IpAddr;

use super::Pipeline;
use crate::contain::EVERY_DOMAIN;
use crate::detect::Level;
use crate::egress::evidence::{Attributed, DeniedContext};
use crate::events::ContainmentEvent;
use crate::identity::ClientKey;
use crate::policy::active::ActivePolicy;
use crate::resolve::cache::StaleAnswers;

impl DeniedContext for Pipeline {
    fn version(&self) -> u64 {
        self.policy.load().version.number
    }

    fn attribute(&self, src: IpAddr) -> Option<Attributed> {
        let policy = self.policy.load();
        let group = policy.group(policy.clients.lookup(src)?)?;
        group.egress.then(|| Attributed {
            group: group.name.to_string(),
            key: self.client_key(src),
            monitor_only: group.detect.monitor_only,
        })
    }

    fn contain(
        &self,
        key: &ClientKey,
        group: &str,
        level: Level,
        reason: String,
    ) -> Option<ContainmentEvent> {
        self.containment
            .start_because(key, group, EVERY_DOMAIN, level, 100, Some(reason))
    }
}

impl Pipeline {
    /// Put the cached answers each of `groups` may see (its policy allows the name and the
    /// answer check passes) into its sets, with the TTL each has left: a group switched to
    /// `egress = true` by a reload must not lose the addresses its agents already hold. Answers
    /// the reload makes `stale` are skipped (the cache drops them next). Returns how many
    /// answers were admitted. The sets of `groups` must already be queued (same queue, so they
    /// are created first).
    pub(super) fn repopulate_egress(
        &self,
        policy: &ActivePolicy,
        groups: &[&str],
        stale: &StaleAnswers,
    ) -> usize {
        let Some(hook) = self.egress.get() else {
            return 0;
        };
        if groups.is_empty() || *stale == StaleAnswers::All {
            return 0;
        }
        let is_stale = |name: &str| match stale {
            StaleAnswers::Under(zones) => {
                zones.iter().any(|z| crate::names::is_at_or_below(name, z))
            }
            _ => false,
        };
        let now = self.clock.now();
        let cached = self.cache.fresh_entries(now);
        let mut admitted = Vec::new();
        for g in policy.groups.iter().filter(|g| groups.contains(&&*g.name)) {
            for (name, answer) in &cached {
                if answer.addresses.is_empty()
                    || is_stale(name)
                    || !g.decide(name).is_allowed()
                    || self.check_answer(policy, g, name, answer).is_some()
                {
                    continue;
                }
                let (bytes, left) = answer.stored(now);
                admitted.push((&*g.name, name.as_str(), bytes, left));
            }
        }
        let n = admitted.len();
        drop(hook.gate.repopulate(admitted));
        if n > 0 {
            tracing::info!(answers = n, groups = ?groups, "reload: egress sets filled from the cache");
        }
        n
    }
}
