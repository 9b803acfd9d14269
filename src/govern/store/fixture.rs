//! Test fixture shared by the store's submodule tests: a real policy (config, an allow list and
//! a zone) in a temporary directory, and a store in another.

use std::fs;
use std::path::PathBuf;

// Tests only: the store exercised with real configuration files.
use super::{PolicyStore, VersionInfo};
use crate::config::Config;
use crate::policy::active::ActivePolicy;

/// A real policy in a temp dir: config, an allow list and a zones dir with one zone.
pub(super) struct Fixture {
    pub(super) live: tempfile::TempDir,
    pub(super) state: tempfile::TempDir,
}

pub(super) const ZONE: &str = "$ORIGIN lab.internal.\n$TTL 300\n\
    @ 3600 IN SOA ns1.lab.internal. hostmaster.lab.internal. 1 3600 600 604800 60\n\
    @ 3600 IN NS ns1\nns1 IN A 10.9.0.53\napi IN A 10.9.0.10\n";

impl Fixture {
    pub(super) fn new() -> Self {
        let live = tempfile::tempdir().unwrap();
        let f = Self {
            live,
            state: tempfile::tempdir().unwrap(),
        };
        fs::create_dir_all(f.live.path().join("etc/lists")).unwrap();
        fs::create_dir_all(f.live.path().join("zones")).unwrap();
        f.write_config("lists/allow.txt");
        f.write("etc/lists/allow.txt", "api.lab.internal\n*.corp.example\n");
        f.write("zones/lab.internal.zone", ZONE);
        f
    }

    pub(super) fn write_config(&self, allow_file: &str) {
        self.write(
            "etc/dnsward.toml",
            &format!(
                "[upstream]\ntimeout = \"2s\"\n\n[zones]\ndir = \"../zones\"\n\n[[groups]]\nname = \"agents\"\n\
                 cidrs = [\"127.0.0.1/32\"]\nallow = [\"lab.internal\"]\n\
                 allow_files = [{allow_file:?}]\n"
            ),
        );
    }

    pub(super) fn write(&self, rel: &str, text: &str) {
        fs::write(self.live.path().join(rel), text).unwrap();
    }

    pub(super) fn config_path(&self) -> PathBuf {
        self.live.path().join("etc/dnsward.toml")
    }

    pub(super) fn store(&self) -> PolicyStore {
        PolicyStore::open(self.state.path()).unwrap()
    }

    /// Load and build the live policy, then record it, as a reload would.
    pub(super) fn record(&self, store: &PolicyStore, action: &str) -> VersionInfo {
        let cfg = Config::load(&self.config_path()).unwrap();
        let policy = ActivePolicy::build(&cfg.policy_sections()).unwrap();
        store
            .record(
                &self.config_path(),
                &policy.files,
                action,
                Some("ops"),
                None,
            )
            .unwrap()
    }
}
