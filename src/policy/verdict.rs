//! What the pipeline decided for a query: a value, not an error.
//!
//! Every answered (or dropped) query ends in exactly one [`Verdict`]. Its [`Verdict::as_str`]
//! is the stable reason string used in events (`"verdict"`) and in the `verdict` label of
//! `dnsward_queries_total`; [`Verdict::index`] addresses the per-group counter table without
//! any string matching on the hot path.

use serde::Serialize;

/// The outcome of one query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Answered from the cache, a local zone or an upstream.
    Allow,
    /// Blocked by policy (NXDOMAIN or REFUSED, per the group's block answer).
    Block,
    /// Answered with the sinkhole address (policy or tunnel containment).
    Sinkhole,
    /// Refused: unknown client, class not served, zone transfer.
    Refuse,
    /// Refused by a rate limit or a tunnel throttle.
    Throttle,
    /// Refused: the client is quarantined.
    Quarantine,
    /// The answer could not be obtained (upstreams failed or answered garbage).
    Servfail,
    /// A query answered with a protocol error: FORMERR or NOTIMP (malformed, another opcode,
    /// MAILA/MAILB), or BADVERS (an EDNS version above 0).
    Formerr,
    /// Nothing was sent.
    Drop,
}

impl Verdict {
    /// Every verdict, in the order of [`Verdict::index`].
    pub const ALL: [Self; 9] = [
        Self::Allow,
        Self::Block,
        Self::Sinkhole,
        Self::Refuse,
        Self::Throttle,
        Self::Quarantine,
        Self::Servfail,
        Self::Formerr,
        Self::Drop,
    ];

    /// The stable name used in events and metric labels.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Block => "block",
            Self::Sinkhole => "sinkhole",
            Self::Refuse => "refuse",
            Self::Throttle => "throttle",
            Self::Quarantine => "quarantine",
            Self::Servfail => "servfail",
            Self::Formerr => "formerr",
            Self::Drop => "drop",
        }
    }

    /// Position in [`Verdict::ALL`].
    #[must_use]
    pub const fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_matches_the_table_order_and_names_are_distinct() {
        for (i, v) in Verdict::ALL.iter().enumerate() {
            assert_eq!(v.index(), i);
        }
        let mut names: Vec<_> = Verdict::ALL.iter().map(|v| v.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Verdict::ALL.len());
    }
}
