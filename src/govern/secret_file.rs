//! Secret files (the admin token, the audit key): where they may live and who may read them.
//!
//! A secret that an agent on the same host can read is no secret: with the admin token it can
//! release its own quarantine or roll the policy back. So a secret file must be a regular file,
//! reached without a symlink (a link can be re-pointed by whoever owns its directory), and
//! neither readable nor writable by group or others (`chmod 600`). [`check_secret_file`] says
//! what is wrong and how to fix it, in words `dnsward check` prints as is.
//!
//! Under systemd the unit loads secrets with `LoadCredential=NAME:/etc/dnsward/NAME`; the
//! service then reads them from `$CREDENTIALS_DIRECTORY/NAME` (a private, 0400 copy the dynamic
//! user can read). A configured path `credential:NAME` names exactly that file
//! ([`resolve_secret_path`]), so one configuration works whatever directory systemd picks.

use std::path::{Path, PathBuf};

/// The prefix of a secret path that names a systemd credential, e.g. `credential:admin.token`.
pub const CREDENTIAL_PREFIX: &str = "credential:";

/// Whether `configured` names a systemd credential (`credential:NAME`) rather than a path;
/// such a value is not a relative path to resolve against the configuration's directory.
#[must_use]
pub fn is_credential(configured: &Path) -> bool {
    configured
        .to_str()
        .is_some_and(|s| s.starts_with(CREDENTIAL_PREFIX))
}

/// The file a configured secret path names: `credential:NAME` is `$CREDENTIALS_DIRECTORY/NAME`
/// (set by systemd for units with `LoadCredential=`); any other path is itself.
///
/// # Errors
/// `credential:NAME` when `CREDENTIALS_DIRECTORY` is not set, or `NAME` is empty or has a `/`.
pub fn resolve_secret_path(configured: &Path) -> Result<PathBuf, String> {
    let Some(name) = configured
        .to_str()
        .and_then(|s| s.strip_prefix(CREDENTIAL_PREFIX))
    else {
        return Ok(configured.to_path_buf());
    };
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(format!(
            "{}: a credential name must be a plain file name such as credential:admin.token",
            configured.display()
        ));
    }
    match std::env::var_os("CREDENTIALS_DIRECTORY") {
        Some(dir) if !dir.is_empty() => Ok(PathBuf::from(dir).join(name)),
        _ => Err(format!(
            "{}: CREDENTIALS_DIRECTORY is not set; run under systemd with \
             LoadCredential={name}:/etc/dnsward/{name}, or give the file's path",
            configured.display()
        )),
    }
}

/// Check that `path` is fit to hold a secret: a regular file, not a symlink, and neither
/// readable nor writable by group or others. The error names the file and the fix.
///
/// # Errors
/// The file is missing, is a symlink or not a regular file, or its mode lets group or others
/// read or write it.
pub fn check_secret_file(path: &Path) -> Result<(), String> {
    let meta = std::fs::symlink_metadata(path)
        .map_err(|e| format!("cannot read secret file {}: {e}", path.display()))?;
    if meta.file_type().is_symlink() {
        return Err(format!(
            "{} is a symlink; point the configuration at the file itself (a link can be \
             re-pointed by whoever can write its directory)",
            path.display()
        ));
    }
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(format!(
                "{} is readable or writable by group or others (mode {mode:03o}): any local \
                 user or agent could use it; run `chmod 600 {}` (owned by the user dnsward runs \
                 as), or load it with systemd's LoadCredential=",
                path.display(),
                path.display()
            ));
        }
    }
    Ok(())
}

/// Resolve `configured` ([`resolve_secret_path`]) and check the file it names
/// ([`check_secret_file`]): the one call a config section's `validate` needs.
///
/// # Errors
/// As those two.
pub fn check_configured(configured: &Path) -> Result<PathBuf, String> {
    let path = resolve_secret_path(configured)?;
    check_secret_file(&path)?;
    Ok(path)
}

/// Resolve `configured` ([`resolve_secret_path`]), check it ([`check_secret_file`]) and read it.
///
/// # Errors
/// As those two, or the file cannot be read.
pub fn read_secret_file(configured: &Path) -> Result<Vec<u8>, String> {
    let path = resolve_secret_path(configured)?;
    check_secret_file(&path)?;
    crate::config_error::read_regular_file(&path, crate::config_error::MAX_SMALL_FILE)
        .map_err(|e| format!("cannot read secret file {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn secret(dir: &Path, mode: u32) -> PathBuf {
        let path = dir.join("secret");
        std::fs::write(&path, "0123456789abcdef0123456789abcdef").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn only_an_owner_only_regular_file_passes() {
        let dir = tempfile::tempdir().unwrap();
        let path = secret(dir.path(), 0o600);
        assert_eq!(check_secret_file(&path), Ok(()));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
        assert_eq!(check_secret_file(&path), Ok(()));
        for mode in [0o644, 0o640, 0o604, 0o620, 0o602, 0o666] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let err = check_secret_file(&path).unwrap_err();
            assert!(err.contains(&format!("mode {mode:03o}")), "{err}");
            assert!(
                err.contains(&format!("chmod 600 {}", path.display())),
                "{err}"
            );
        }
    }

    #[test]
    fn symlinks_directories_and_missing_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let target = secret(dir.path(), 0o600);
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(check_secret_file(&link).unwrap_err().contains("symlink"));
        assert!(
            check_secret_file(dir.path())
                .unwrap_err()
                .contains("not a regular file")
        );
        assert!(
            check_secret_file(&dir.path().join("nope"))
                .unwrap_err()
                .contains("cannot read")
        );
    }

    #[test]
    fn credential_paths_resolve_under_the_credentials_directory() {
        let plain = Path::new("/etc/dnsward/admin.token");
        assert_eq!(resolve_secret_path(plain).unwrap(), plain);
        assert!(
            resolve_secret_path(Path::new("credential:../x"))
                .unwrap_err()
                .contains("plain file name")
        );
        // Reading the variable is safe here; no test in this binary sets it.
        if std::env::var_os("CREDENTIALS_DIRECTORY").is_none() {
            let err = resolve_secret_path(Path::new("credential:admin.token")).unwrap_err();
            assert!(err.contains("LoadCredential=admin.token"), "{err}");
        }
    }
}
