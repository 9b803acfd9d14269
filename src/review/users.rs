//! Users and roles: named API tokens from `admin.tokens_file`, each with a role, and the one
//! role check ([`require`]) every review handler calls.
//!
//! The tokens file holds one user per line, `name role sha256-hex`, where the hash is the
//! SHA-256 of the token (so the file does not hold the secret itself); `#` starts a comment.
//!
//! ```text
//! # name   role      sha256 of the token
//! alice    analyst   5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8
//! carol    viewer    …
//! ```
//!
//! The single `admin.token_file` token keeps working: it is the user `admin` with role
//! [`Role::Admin`], checked against the one [`crate::admin::token::AdminToken`] the admin API
//! uses too, so rotating it (any reload) changes both APIs at once. Here it only takes part in
//! the check that no two users share a token. Presented tokens are hashed and compared in
//! constant time against every entry, so neither the match nor its position leaks through
//! timing.

use std::fmt;
use std::path::Path;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::config_error::{ConfigProblems, FileProblems, excerpt};

/// Most users in a tokens file.
pub const MAX_USERS: usize = 1000;
/// Name the legacy single admin token acts as.
pub const LEGACY_ADMIN: &str = "admin";

/// What a user may do. Ordered: each role may do everything the ones below it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Read the queue, suspects, agents and policy history.
    Viewer,
    /// Also triage suspects, release containments, add exceptions.
    Analyst,
    /// Also reload and roll back the policy and reload the tokens file.
    Admin,
}

impl Role {
    /// The role's name as written in the tokens file.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Analyst => "analyst",
            Self::Admin => "admin",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            "viewer" => Some(Self::Viewer),
            "analyst" => Some(Self::Analyst),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An authenticated user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    /// The name every audit event carries.
    pub name: String,
    /// What the user may do.
    pub role: Role,
}

/// The user lacks the role an action needs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{user} is {have}; this needs the {need} role")]
pub struct Forbidden {
    /// Who asked.
    pub user: String,
    /// Their role.
    pub have: Role,
    /// The role needed.
    pub need: Role,
}

/// The role check the review handlers call before doing anything.
///
/// # Errors
/// [`Forbidden`] when `user`'s role is below `need`.
pub fn require(user: &User, need: Role) -> Result<(), Forbidden> {
    if user.role >= need {
        Ok(())
    } else {
        Err(Forbidden {
            user: user.name.clone(),
            have: user.role,
            need,
        })
    }
}

/// SHA-256 of a token, as stored in the tokens file.
#[must_use]
pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.trim().as_bytes()).into()
}

/// [`hash_token`] in hex, for writing a tokens file.
#[must_use]
pub fn hash_token_hex(token: &str) -> String {
    hex::encode(hash_token(token))
}

#[derive(Debug, Clone)]
struct Entry {
    user: User,
    hash: [u8; 32],
}

/// The known users.
#[derive(Debug, Clone, Default)]
pub struct Users {
    entries: Vec<Entry>,
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'))
}

impl Users {
    /// Users from the text of a tokens file (`source` names it in problems); a user whose
    /// token is the admin token's (`admin_digest`) is a problem too. Every problem of the file is reported at once.
    ///
    /// # Errors
    /// The problems found, each with its `file:line`.
    pub fn parse(
        text: &str,
        source: &str,
        admin_digest: Option<[u8; 32]>,
    ) -> Result<Self, ConfigProblems> {
        let mut all = ConfigProblems::default();
        // Names are quoted as short excerpts and a file's problems are bounded: the path may
        // name some other file (a token, a key) that must not be copied into messages.
        let mut problems = FileProblems::new(source, &mut all);
        let mut users = Self::default();
        for (i, line) in text.lines().enumerate() {
            let at = i + 1;
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [name, role, hash] = fields[..] else {
                problems.push(at, "expected `name role sha256-hex-of-token`");
                continue;
            };
            if !valid_name(name) {
                problems.push(
                    at,
                    format!(
                        "user name {}: use 1-64 of A-Z a-z 0-9 . _ - @",
                        excerpt(name)
                    ),
                );
            }
            let role = Role::parse(role);
            if role.is_none() {
                problems.push(at, "role must be viewer, analyst or admin");
            }
            let mut digest = [0u8; 32];
            if hash.len() != 64 || hex::decode_to_slice(hash, &mut digest).is_err() {
                problems.push(
                    at,
                    "the token must be given as its SHA-256 in 64 hex digits (dnsward review hash-token)",
                );
            }
            if users.entries.iter().any(|e| e.user.name == name) {
                problems.push(at, format!("user {} is listed twice", excerpt(name)));
            }
            // The admin token acts as this name: a file user of the same name (an analyst
            // named "admin") would be recorded as the admin in every event it causes.
            if name.eq_ignore_ascii_case(LEGACY_ADMIN) {
                problems.push(
                    at,
                    format!(
                        "user name {}: reserved for the [admin] token_file token; choose another",
                        excerpt(name)
                    ),
                );
            }
            if users.entries.iter().any(|e| e.hash == digest) || admin_digest == Some(digest) {
                problems.push(at, "this token is already someone else's");
            }
            if users.entries.len() >= MAX_USERS {
                problems.push(at, format!("more than {MAX_USERS} users"));
                break;
            }
            if let Some(role) = role {
                users.entries.push(Entry {
                    user: User {
                        name: name.to_string(),
                        role,
                    },
                    hash: digest,
                });
            }
        }
        drop(problems);
        let problems = all;
        if problems.is_empty() {
            Ok(users)
        } else {
            Err(problems)
        }
    }

    /// Read `tokens_file` (if any), as [`Self::parse`].
    ///
    /// # Errors
    /// The file cannot be read, or has problems.
    pub fn load(
        tokens_file: Option<&Path>,
        admin_digest: Option<[u8; 32]>,
    ) -> Result<Self, ConfigProblems> {
        let Some(path) = tokens_file else {
            return Self::parse("", "", admin_digest);
        };
        if let Err(why) = check_tokens_file(path) {
            let mut p = ConfigProblems::default();
            p.push(path.display().to_string(), why);
            return Err(p);
        }
        // A byte-order mark (Windows editors) is dropped by the reader.
        match crate::config_error::read_text_file(path, crate::config_error::MAX_SMALL_FILE) {
            Ok(text) => Self::parse(&text, &path.display().to_string(), admin_digest),
            Err(e) => {
                let mut p = ConfigProblems::default();
                p.push(path.display().to_string(), e.to_string());
                Err(p)
            }
        }
    }

    /// The user whose token this is. Compares against every entry in constant time.
    #[must_use]
    pub fn authenticate(&self, token: &str) -> Option<User> {
        let presented = hash_token(token);
        let mut found = None;
        for e in &self.entries {
            let diff = e
                .hash
                .iter()
                .zip(presented.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b));
            if diff == 0 && found.is_none() {
                found = Some(e.user.clone());
            }
        }
        found
    }

    /// Every user (names and roles, never hashes).
    #[must_use]
    pub fn list(&self) -> Vec<User> {
        self.entries.iter().map(|e| e.user.clone()).collect()
    }

    /// Whether some user's token has this SHA-256 ([`hash_token`]).
    #[must_use]
    pub fn holds(&self, digest: &[u8; 32]) -> bool {
        self.entries.iter().any(|e| &e.hash == digest)
    }

    /// Whether no token at all is configured.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The tokens file says who is admin: a regular file, reached without a symlink, that no one
/// but its owner may write (any local user who could append a line would make themselves
/// admin at the next reload). Readable by others is allowed: it holds hashes, not tokens.
fn check_tokens_file(path: &Path) -> Result<(), String> {
    let meta =
        std::fs::symlink_metadata(path).map_err(|e| format!("cannot read the tokens file: {e}"))?;
    if meta.file_type().is_symlink() {
        return Err(
            "is a symlink; point the configuration at the file itself (a link can be \
             re-pointed by whoever can write its directory)"
                .to_string(),
        );
    }
    if !meta.is_file() {
        return Err("is not a regular file".to_string());
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o022 != 0 {
            return Err(format!(
                "is writable by group or others (mode {mode:03o}): any local user could add \
                 themselves as admin; run `chmod 644 {}` (owned by the user dnsward runs as)",
                path.display()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {

    #[cfg(unix)]
    #[test]
    fn a_tokens_file_others_can_write_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("dnsward-users-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tokens");
        std::fs::write(&path, "").unwrap();
        for (mode, ok) in [(0o644, true), (0o600, true), (0o664, false), (0o666, false)] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let got = Users::load(Some(&path), None);
            assert_eq!(got.is_ok(), ok, "mode {mode:o}: {got:?}");
            if !ok {
                assert!(format!("{:?}", got.unwrap_err()).contains("writable by group or others"));
            }
        }
        let link = dir.join("link");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&path, &link).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(
            Users::load(Some(&link), None).is_err(),
            "a symlink is refused"
        );
        assert!(
            Users::load(Some(&dir), None).is_err(),
            "a directory is refused"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
    use super::*;

    #[test]
    fn tokens_file_roles_and_the_admin_tokens_share() {
        let text = format!(
            "# comment\nalice analyst {}\ncarol viewer {} # trailing\n",
            hash_token_hex("alice-token"),
            hash_token_hex("carol-token")
        );
        let u = Users::parse(&text, "tokens", Some(hash_token("admin-token"))).unwrap();
        assert_eq!(u.authenticate("alice-token").unwrap().role, Role::Analyst);
        assert_eq!(u.authenticate("carol-token").unwrap().name, "carol");
        // The admin token is the admin API's to check, not an entry here.
        assert!(u.authenticate("admin-token").is_none());
        assert!(u.authenticate("nope").is_none());
        // No user may hold the admin token.
        let p = Users::parse(&text, "tokens", Some(hash_token("carol-token"))).unwrap_err();
        assert!(p.to_string().contains("already someone else's"), "{p}");
        // Nor its name: an analyst called "admin" would be recorded as the admin.
        for name in ["admin", "Admin"] {
            let text = format!("{name} analyst {}\n", hash_token_hex("x-token"));
            let p = Users::parse(&text, "tokens", None).unwrap_err();
            assert!(p.to_string().contains("reserved"), "{p}");
        }
        let admin = User {
            name: LEGACY_ADMIN.into(),
            role: Role::Admin,
        };
        let carol = u.authenticate("carol-token").unwrap();
        assert!(require(&carol, Role::Viewer).is_ok());
        let e = require(&carol, Role::Analyst).unwrap_err();
        assert_eq!(
            e.to_string(),
            "carol is viewer; this needs the analyst role"
        );
        assert!(require(&admin, Role::Analyst).is_ok());
    }

    #[test]
    fn every_problem_of_a_tokens_file_is_reported() {
        let text = format!(
            "bad name! analyst {h}\nbob superuser {h}\nbob viewer nothex\nx\n",
            h = hash_token_hex("t")
        );
        let p = Users::parse(&text, "tokens", None).unwrap_err();
        let all = p.to_string();
        for needle in [
            "tokens:1",
            "tokens:2: role must be",
            "tokens:3",
            "SHA-256",
            "tokens:4",
        ] {
            assert!(all.contains(needle), "{needle} in {all}");
        }
    }
}
