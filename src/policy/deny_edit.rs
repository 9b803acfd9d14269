//! The one edit dnsward makes to a configuration file itself: adding a domain to a group's
//! inline `deny` list, for a proposed policy version (an analyst confirming a tunnel). The
//! file is edited as a document ([`toml_edit`]), so comments, key order and formatting outside
//! that one list stay exactly as the operator wrote them, and the diff shows one line.
//!
//! Only the group's `[[groups]]` entry in the file given is edited. Its `deny_files` are never
//! rewritten (they may be shared or generated); the inline `deny` list is added to, or created,
//! and deny rules from both places apply together. Anything the editor cannot do exactly — a
//! file that is not TOML, no group of that name in it, a `deny` that is not a list of strings —
//! is an error naming the reason, never a different edit.

use toml_edit::{Array, DocumentMut, Item, TableLike, Value};

use crate::names::{normalise, validate_name};

/// Why the deny list could not be edited.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DenyEditError {
    /// The domain is not a valid name.
    #[error("{domain:?} is not a valid domain: {reason}")]
    BadDomain {
        /// The domain as given.
        domain: String,
        /// Why.
        reason: String,
    },
    /// The file does not parse as TOML.
    #[error("the configuration file does not parse as TOML: {0}")]
    NotToml(String),
    /// No `[[groups]]` entry of that name is in the file.
    #[error("no [[groups]] entry named {0:?} in the configuration file")]
    NoGroup(String),
    /// The group's entry or its `deny` has a shape the editor does not rewrite.
    #[error("group {group:?}: {reason}")]
    NotEditable {
        /// The group.
        group: String,
        /// What the editor found.
        reason: String,
    },
    /// An inline deny rule already covers the domain.
    #[error("group {group:?} already denies {domain} (deny rule {rule:?})")]
    AlreadyDenied {
        /// The group.
        group: String,
        /// The domain.
        domain: String,
        /// The rule that covers it.
        rule: String,
    },
}

/// `text` (a dnsward configuration file) with `domain` added to the inline `deny` list of the
/// `[[groups]]` entry named `group`. A deny rule covers the name and everything below it, so
/// the one entry denies the whole registrable domain.
///
/// # Errors
/// See [`DenyEditError`]: nothing is returned but an exact edit.
pub fn add_deny(text: &str, group: &str, domain: &str) -> Result<String, DenyEditError> {
    let domain = normalise(domain);
    validate_name(&domain).map_err(|reason| DenyEditError::BadDomain {
        domain: domain.clone(),
        reason,
    })?;
    let mut doc: DocumentMut = text
        .parse()
        .map_err(|e: toml_edit::TomlError| DenyEditError::NotToml(e.message().to_string()))?;
    let not_editable = |reason: &str| DenyEditError::NotEditable {
        group: group.to_string(),
        reason: reason.to_string(),
    };
    let entry: &mut dyn TableLike = match doc.get_mut("groups") {
        None => return Err(DenyEditError::NoGroup(group.to_string())),
        Some(Item::ArrayOfTables(tables)) => tables
            .iter_mut()
            .find(|t| t.get("name").and_then(Item::as_str) == Some(group))
            .map(|t| t as &mut dyn TableLike)
            .ok_or_else(|| DenyEditError::NoGroup(group.to_string()))?,
        Some(Item::Value(Value::Array(list))) => list
            .iter_mut()
            .filter_map(Value::as_inline_table_mut)
            .find(|t| t.get("name").and_then(Value::as_str) == Some(group))
            .map(|t| t as &mut dyn TableLike)
            .ok_or_else(|| DenyEditError::NoGroup(group.to_string()))?,
        Some(_) => return Err(not_editable("`groups` is not a list of tables")),
    };
    match entry.get_mut("deny") {
        None => {
            let mut list = Array::new();
            list.push(domain.as_str());
            entry.insert("deny", Item::Value(Value::Array(list)));
        }
        Some(item) => {
            let list = item
                .as_array_mut()
                .ok_or_else(|| not_editable("`deny` is not a list"))?;
            for v in list.iter() {
                let rule = v
                    .as_str()
                    .ok_or_else(|| not_editable("`deny` holds something other than names"))?;
                if covers(&normalise(rule), &domain) {
                    return Err(DenyEditError::AlreadyDenied {
                        group: group.to_string(),
                        domain,
                        rule: rule.to_string(),
                    });
                }
            }
            push_like_the_rest(list, &domain);
        }
    }
    Ok(doc.to_string())
}

/// Whether deny rule `rule` covers `name`: an exact rule covers the name and everything below,
/// a `*.suffix` rule everything below the suffix (see [`super::group`]).
fn covers(rule: &str, name: &str) -> bool {
    match rule.strip_prefix("*.") {
        Some(suffix) => name.ends_with(&format!(".{suffix}")),
        None => name == rule || name.ends_with(&format!(".{rule}")),
    }
}

/// Append `name`, laid out like the list's last element: on its own line in a one-per-line
/// list, after a space in a one-line list.
fn push_like_the_rest(list: &mut Array, name: &str) {
    let prefix = list
        .iter()
        .last()
        .and_then(|v| v.decor().prefix())
        .and_then(|p| p.as_str())
        .map(str::to_string);
    let mut value = Value::from(name);
    match prefix {
        Some(p) if p.contains('\n') => {
            value.decor_mut().set_prefix(p);
            let trailing_comma = list.trailing_comma();
            list.push_formatted(value);
            list.set_trailing_comma(trailing_comma);
        }
        _ if list.is_empty() => list.push_formatted(value),
        _ => {
            value.decor_mut().set_prefix(" ");
            list.push_formatted(value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{DenyEditError, add_deny};

    const CONFIG: &str = r#"# dnsward for the build agents
[server]
listen = ["127.0.0.1:53"] # loopback only

[[groups]]
name = "web"
allow = ["*.example"]

[[groups]]
# the agents
name = "agents"
allow = ["*.tun.example", "www.example"]   # keep aligned
deny = ["secrets.corp.internal"]
block = "refused"

[groups.detect]
alert = 30
"#;

    #[test]
    fn adds_one_entry_and_keeps_everything_else() {
        let out = add_deny(CONFIG, "agents", "Tun.Example.").unwrap();
        let expected = CONFIG.replace(
            r#"deny = ["secrets.corp.internal"]"#,
            r#"deny = ["secrets.corp.internal", "tun.example"]"#,
        );
        assert_eq!(out, expected);
        let parsed: toml::Value = toml::from_str(&out).unwrap();
        assert_eq!(
            parsed["groups"][1]["detect"]["alert"].as_integer(),
            Some(30)
        );
    }

    #[test]
    fn creates_the_list_in_the_named_group_only() {
        let out = add_deny(CONFIG, "web", "tun.example").unwrap();
        let diff: Vec<_> = out.lines().filter(|l| !CONFIG.contains(*l)).collect();
        assert_eq!(diff, [r#"deny = ["tun.example"]"#]);
        let parsed: toml::Value = toml::from_str(&out).unwrap();
        assert_eq!(parsed["groups"][0]["deny"][0].as_str(), Some("tun.example"));
        assert!(parsed["groups"][1]["deny"].as_array().unwrap().len() == 1);
    }

    #[test]
    fn a_one_per_line_list_gets_one_more_line() {
        let text = "[[groups]]\nname = \"g\"\ndeny = [\n  \"a.example\",\n  \"b.example\",\n]\n";
        let out = add_deny(text, "g", "c.example").unwrap();
        assert_eq!(
            out,
            "[[groups]]\nname = \"g\"\ndeny = [\n  \"a.example\",\n  \"b.example\",\n  \"c.example\",\n]\n"
        );
        let inline = "groups = [{ name = \"g\", allow = [\"x.example\"] }]\n";
        let out = add_deny(inline, "g", "c.example").unwrap();
        let parsed: toml::Value = toml::from_str(&out).unwrap();
        assert_eq!(parsed["groups"][0]["deny"][0].as_str(), Some("c.example"));
    }

    #[test]
    fn refuses_what_it_cannot_edit_exactly() {
        assert_eq!(
            add_deny(CONFIG, "nobody", "x.example"),
            Err(DenyEditError::NoGroup("nobody".into()))
        );
        assert!(matches!(
            add_deny(CONFIG, "agents", "x.secrets.corp.internal"),
            Err(DenyEditError::AlreadyDenied { rule, .. }) if rule == "secrets.corp.internal"
        ));
        assert!(matches!(
            add_deny("[[groups]]\nname = \"g\"\ndeny = \"x\"\n", "g", "a.example"),
            Err(DenyEditError::NotEditable { .. })
        ));
        assert!(matches!(
            add_deny("[[groups]]\nname = \"g\"\ndeny = [1]\n", "g", "a.example"),
            Err(DenyEditError::NotEditable { .. })
        ));
        assert!(matches!(
            add_deny("[groups\n", "g", "a.example"),
            Err(DenyEditError::NotToml(_))
        ));
        assert!(matches!(
            add_deny(CONFIG, "agents", "bad name!"),
            Err(DenyEditError::BadDomain { .. })
        ));
        assert!(matches!(
            add_deny("[server]\n", "g", "a.example"),
            Err(DenyEditError::NoGroup(_))
        ));
    }
}
