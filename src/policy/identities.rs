//! Identity patterns: which group an agent identity (SPIFFE ID or DNS name) belongs to.
//!
//! A pattern is an exact identity (`spiffe://corp.example/agents/build/7`) or a prefix ending
//! in `*` (`spiffe://corp.example/agents/build/*`). Exact matches win, then the longest prefix,
//! so one special agent can sit inside its fleet's pattern, as a /32 inside a /24.

use std::collections::HashMap;

use crate::policy::identify::GroupId;

/// Identity → group table.
#[derive(Debug, Clone, Default)]
pub struct IdentityTable {
    /// Exact identities.
    exact: HashMap<Box<str>, GroupId>,
    /// Prefixes (without the `*`), longest first.
    prefixes: Vec<(Box<str>, GroupId)>,
}

impl IdentityTable {
    /// Add a pattern for a group. Returns the group that already had exactly this pattern.
    pub fn insert(&mut self, pattern: &str, group: GroupId) -> Option<GroupId> {
        if let Some(prefix) = pattern.strip_suffix('*') {
            if let Some((_, g)) = self.prefixes.iter().find(|(p, _)| &**p == prefix) {
                return Some(*g);
            }
            self.prefixes.push((prefix.into(), group));
            self.prefixes
                .sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
            None
        } else {
            self.exact.insert(pattern.into(), group)
        }
    }

    /// The group of an identity, if any pattern matches.
    #[must_use]
    pub fn lookup(&self, identity: &str) -> Option<GroupId> {
        if let Some(g) = self.exact.get(identity) {
            return Some(*g);
        }
        self.prefixes
            .iter()
            .find(|(p, _)| identity.starts_with(&**p))
            .map(|(_, g)| *g)
    }

    /// True when no pattern is configured.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.prefixes.is_empty()
    }
}

/// Check one configured pattern; `Err` says what is wrong with it.
///
/// # Errors
/// Empty patterns, `*` anywhere but at the end, whitespace, and SPIFFE IDs without a trust
/// domain.
pub fn validate_pattern(p: &str) -> Result<(), String> {
    if p.is_empty() || p == "*" {
        return Err(
            "an identity pattern must name something (\"*\" alone would match every agent)".into(),
        );
    }
    if p.trim_end_matches('*').contains('*') || p.ends_with("**") {
        return Err("\"*\" is only allowed once, at the end".into());
    }
    if p.chars().any(char::is_whitespace) {
        return Err("identities contain no whitespace".into());
    }
    if let Some(rest) = p.strip_prefix("spiffe://") {
        let domain = rest.split('/').next().unwrap_or("");
        if domain.is_empty() || domain.contains('*') {
            return Err("a SPIFFE ID needs a trust domain: spiffe://DOMAIN/path".into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_then_longest_prefix() {
        let mut t = IdentityTable::default();
        assert_eq!(t.insert("spiffe://c/agents/*", 0), None);
        assert_eq!(t.insert("spiffe://c/agents/build/*", 1), None);
        assert_eq!(t.insert("spiffe://c/agents/build/7", 2), None);
        assert_eq!(t.lookup("spiffe://c/agents/build/1"), Some(1));
        assert_eq!(t.lookup("spiffe://c/agents/build/7"), Some(2));
        assert_eq!(t.lookup("spiffe://c/agents/research/1"), Some(0));
        assert_eq!(t.lookup("spiffe://other/agents/build/1"), None);
        assert_eq!(t.insert("spiffe://c/agents/*", 3), Some(0));
    }

    #[test]
    fn bad_patterns_are_rejected() {
        for bad in ["", "*", "spiffe://*/x", "spiffe://c/*/x", "a b"] {
            assert!(validate_pattern(bad).is_err(), "{bad}");
        }
        for good in [
            "spiffe://c/agents/*",
            "build-1.agents.corp.example",
            "spiffe://c/x",
        ] {
            assert!(validate_pattern(good).is_ok(), "{good}");
        }
    }
}
