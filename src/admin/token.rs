//! The admin bearer token: read from a secret file, compared in constant time, replaced on
//! reload.
//!
//! Only the SHA-256 digest of the token is kept. A presented token is hashed too and the two
//! 32-byte digests are compared with a XOR fold that looks at every byte, so neither the
//! content nor the *length* of the real token shows in the response time (comparing raw bytes
//! would return early on a length mismatch).
//!
//! The digest sits in an [`ArcSwapOption`]: a reload (SIGHUP or `POST /api/v1/policy/reload`)
//! re-reads the file and swaps the new digest in, so rotating the token needs no restart. A
//! file that has become unreadable or insecure keeps the old token in force and says why.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use sha2::{Digest, Sha256};

use crate::govern::secret_file::read_secret_file;

/// The shortest accepted token, in characters.
pub const MIN_TOKEN_CHARS: usize = 32;

/// The admin token in force, shared by the admin endpoint and whoever reloads it.
#[derive(Debug, Default)]
pub struct AdminToken {
    /// The file it is read from (`None`: the API is disabled).
    file: Option<PathBuf>,
    /// SHA-256 of the token; `None` disables the API.
    digest: ArcSwapOption<[u8; 32]>,
}

impl AdminToken {
    /// A token read from `file` now; `None` disables the API.
    ///
    /// # Errors
    /// As [`read_token`].
    pub fn load(file: Option<&Path>) -> Result<Self, String> {
        let token = Self {
            file: file.map(Path::to_path_buf),
            digest: ArcSwapOption::empty(),
        };
        if let Some(f) = file {
            token.set(&read_token(f)?);
        }
        Ok(token)
    }

    /// A fixed token (tests, embedding).
    #[must_use]
    pub fn fixed(token: &str) -> Self {
        let t = Self::default();
        t.set(token);
        t
    }

    fn set(&self, token: &str) {
        self.digest
            .store(Some(Arc::new(Sha256::digest(token.as_bytes()).into())));
    }

    /// Whether the API is enabled (a token is configured).
    #[must_use]
    pub fn is_enabled(&self) -> bool {
        self.digest.load().is_some()
    }

    /// Whether `presented` is the token, in time independent of both tokens' content and length.
    #[must_use]
    pub fn matches(&self, presented: &str) -> bool {
        let Some(real) = self.digest.load_full() else {
            return false;
        };
        let given: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        constant_time_eq(&real, &given)
    }

    /// The file's token now, checked but not put in force (`None` without a file): the review
    /// API's tokens reload checks it with the tokens file before either changes.
    ///
    /// # Errors
    /// As [`read_token`].
    pub fn read(&self) -> Result<Option<String>, String> {
        self.file.as_deref().map(read_token).transpose()
    }

    /// Put `token` (from [`Self::read`]) in force.
    pub fn install(&self, token: &str) {
        self.set(token);
    }

    /// SHA-256 of the token in force, as the tokens file writes a user's.
    #[must_use]
    pub fn digest(&self) -> Option<[u8; 32]> {
        self.digest.load_full().map(|d| *d)
    }

    /// Re-read the token file (on reload). Without a file nothing changes.
    ///
    /// # Errors
    /// The file is missing, insecure or too short: the old token stays in force.
    pub fn reload(&self) -> Result<(), String> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        let token = read_token(file)?;
        self.set(&token);
        Ok(())
    }
}

/// Read, check and trim the token in `file` (a path or `credential:NAME`).
///
/// # Errors
/// The file is insecure ([`crate::govern::secret_file::check_secret_file`]), unreadable, not
/// UTF-8, or holds fewer than [`MIN_TOKEN_CHARS`] characters.
pub fn read_token(file: &Path) -> Result<String, String> {
    let bytes = read_secret_file(file)?;
    let text = String::from_utf8(bytes)
        .map_err(|_| format!("{}: the token is not UTF-8 text", file.display()))?;
    let token = text.trim();
    let chars = token.chars().count();
    if chars < MIN_TOKEN_CHARS {
        return Err(format!(
            "{}: the token is {chars} characters; use at least {MIN_TOKEN_CHARS}",
            file.display()
        ));
    }
    Ok(token.to_string())
}

/// Equal 32-byte digests, looking at every byte whatever differs.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    const TOKEN: &str = "0123456789abcdef0123456789abcdef-one";

    fn write(path: &Path, text: &str, mode: u32) {
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn only_the_exact_token_matches_whatever_its_length() {
        let t = AdminToken::fixed(TOKEN);
        assert!(t.is_enabled());
        assert!(t.matches(TOKEN));
        for wrong in ["", "0", &TOKEN[..TOKEN.len() - 1], &format!("{TOKEN}x")] {
            assert!(!t.matches(wrong), "{wrong:?}");
        }
        assert!(!AdminToken::default().matches(""));
        assert!(!AdminToken::default().is_enabled());
    }

    #[test]
    fn reload_swaps_in_a_new_token_and_keeps_the_old_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        write(&file, &format!("{TOKEN}\n"), 0o600);
        let t = AdminToken::load(Some(&file)).unwrap();
        assert!(t.matches(TOKEN));

        let second = "fedcba9876543210fedcba9876543210-two";
        write(&file, second, 0o600);
        t.reload().unwrap();
        assert!(t.matches(second) && !t.matches(TOKEN));

        // Made world-readable: refused, and the token in force stays.
        write(&file, "an-insecure-third-token-0123456789abcdef", 0o644);
        assert!(t.reload().unwrap_err().contains("chmod 600"));
        assert!(t.matches(second));
        write(&file, "short", 0o600);
        assert!(t.reload().unwrap_err().contains("at least 32"));
        assert!(t.matches(second));
    }

    #[test]
    fn an_insecure_file_is_refused_at_load() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        write(&file, TOKEN, 0o644);
        let err = AdminToken::load(Some(&file)).unwrap_err();
        assert!(
            err.contains("mode 644") && err.contains("chmod 600"),
            "{err}"
        );
    }
}
