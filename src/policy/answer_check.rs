//! Stage 8: policy checks on answers.
//!
//! A name can be allowed while the answer points somewhere that is not: `docs.vendor.example`
//! may be a CNAME to `attacker-controlled.example`. Every CNAME target in an answer, from the
//! cache or fresh, must itself be allowed for the client's group, or the client gets the block
//! answer instead. Deny rules apply to targets too.

use crate::policy::group::Group;

/// The first CNAME target the group may not resolve, if any.
#[must_use]
pub fn forbidden_target<'a>(group: &Group, cname_targets: &'a [Box<str>]) -> Option<&'a str> {
    cname_targets
        .iter()
        .map(AsRef::as_ref)
        .find(|target| !group.decide(target).is_allowed())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config_error::ConfigProblems;
    use crate::policy::group::GroupConfig;
    use std::path::Path;

    #[test]
    fn targets_must_be_allowed_too() {
        let cfg: GroupConfig = toml::from_str(
            "name = \"g\"\nallow = [\"docs.vendor.example\", \"*.cdn.example\"]\ndeny = [\"bad.cdn.example\"]",
        )
        .unwrap();
        let (g, _) = Group::from_config(&cfg, "g", Path::new("."), &mut ConfigProblems::default());
        assert_eq!(forbidden_target(&g, &["x.cdn.example".into()]), None);
        assert_eq!(
            forbidden_target(&g, &["x.cdn.example".into(), "evil.example".into()]),
            Some("evil.example")
        );
        assert_eq!(
            forbidden_target(&g, &["bad.cdn.example".into()]),
            Some("bad.cdn.example")
        );
        assert_eq!(forbidden_target(&g, &[]), None);
    }
}
