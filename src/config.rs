//! The TOML configuration, composed of each stage's own section.
//!
//! Loading has two steps, both of which collect every problem instead of stopping at the
//! first: [`Config::from_toml`] checks syntax, types and unknown keys (serde), and
//! [`crate::active_policy::ActivePolicy::build`] validates meaning (CIDRs, names, files, zone
//! files, thresholds) and parses everything into domain types once. `dnsward check` runs both.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::admin::AdminConfig;
use crate::cache::CacheConfig;
use crate::config_error::ConfigProblems;
use crate::contain::ContainConfig;
use crate::detect::DetectConfig;
use crate::events::sink::EventsConfig;
use crate::policy::GroupConfig;
use crate::server::ServerConfig;
use crate::upstream::UpstreamConfig;
use crate::zones::ZonesConfig;

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[server]`: listeners and connection limits.
    #[serde(default)]
    pub server: ServerConfig,
    /// `[tls]`: DNS over TLS / HTTPS listeners, client certificates and tokens.
    #[serde(default)]
    pub tls: crate::identity::TlsConfig,
    /// `[admin]`: the metrics/admin HTTP endpoint.
    #[serde(default)]
    pub admin: AdminConfig,
    /// `[upstream]`: forwarding.
    #[serde(default)]
    pub upstream: UpstreamConfig,
    /// `[cache]`: the answer cache.
    #[serde(default)]
    pub cache: CacheConfig,
    /// `[zones]`: local authoritative zones.
    #[serde(default)]
    pub zones: ZonesConfig,
    /// `[events]`: the event log.
    #[serde(default)]
    pub events: EventsConfig,
    /// `[detect]`: tunnel detection.
    #[serde(default)]
    pub detect: DetectConfig,
    /// `[containment]`: rate limits, sinkholes, quarantines.
    #[serde(default)]
    pub containment: ContainConfig,
    /// `[audit]`: the hash chain over the event log.
    #[serde(default)]
    pub audit: crate::audit::AuditConfig,
    /// `[store]`: where policy versions are kept; without it, versions live in memory only.
    #[serde(default)]
    pub store: Option<crate::policy_store::StoreConfig>,
    /// `[[groups]]`: client groups and their policy.
    #[serde(default)]
    pub groups: Vec<GroupConfig>,
    /// Directory that relative paths in the file are resolved against (the file's directory).
    #[serde(skip)]
    pub base_dir: PathBuf,
    /// Where the configuration was read from, for messages.
    #[serde(skip)]
    pub source: String,
}

impl Config {
    /// Parse configuration text. `source` names it in messages; relative paths resolve against
    /// `base_dir`.
    ///
    /// # Errors
    /// Every syntax or type problem found, with line and column.
    pub fn from_toml(text: &str, source: &str, base_dir: &Path) -> Result<Self, ConfigProblems> {
        match toml::from_str::<Self>(text) {
            Ok(mut cfg) => {
                cfg.base_dir = base_dir.to_path_buf();
                cfg.source = source.to_string();
                // Relative paths anywhere in the file mean "next to this file".
                if let Some(p) = cfg.events.path.as_mut().filter(|p| p.is_relative()) {
                    *p = base_dir.join(&*p);
                }
                if let Some(p) = cfg.admin.token_file.as_mut().filter(|p| p.is_relative()) {
                    *p = base_dir.join(&*p);
                }
                if let Some(p) = cfg.audit.key_file.as_mut().filter(|p| p.is_relative()) {
                    *p = base_dir.join(&*p);
                }
                Ok(cfg)
            }
            Err(e) => {
                let mut problems = ConfigProblems::default();
                let location = match e.span() {
                    Some(span) => {
                        let upto = &text[..span.start.min(text.len())];
                        let line = upto.matches('\n').count() + 1;
                        let col = span.start - upto.rfind('\n').map_or(0, |i| i + 1) + 1;
                        format!("{source}:{line}:{col}")
                    }
                    None => source.to_string(),
                };
                problems.push(location, e.message().to_string());
                Err(problems)
            }
        }
    }

    /// Validate the sections that shape long-lived machinery (listeners, admin, cache, events,
    /// detector bounds, containment, audit, store): read at start, not by a policy swap.
    /// The policy sections (upstream, zones, groups) are validated by
    /// [`crate::active_policy::ActivePolicy::build`].
    pub fn validate_runtime(&self, problems: &mut ConfigProblems) {
        self.server.validate("server", problems);
        self.tls.validate("tls", &self.base_dir, problems);
        self.admin.validate("admin", problems);
        self.cache.validate("cache", problems);
        self.events.validate("events", problems);
        self.detect.validate("detect", problems);
        self.containment.validate("containment", problems);
        self.audit.validate("audit", problems);
        if let Some(store) = &self.store {
            store.validate("store", problems);
        }
    }

    /// Everything `dnsward check` checks: the runtime sections and the whole policy.
    ///
    /// # Errors
    /// Every problem found.
    pub fn validate_all(
        &self,
    ) -> Result<std::sync::Arc<crate::active_policy::ActivePolicy>, ConfigProblems> {
        let mut problems = ConfigProblems::default();
        self.validate_runtime(&mut problems);
        match crate::active_policy::ActivePolicy::build(self) {
            Ok(p) if problems.is_empty() => Ok(p),
            Ok(_) => Err(problems),
            Err(more) => {
                problems.problems.extend(more.problems);
                Err(problems)
            }
        }
    }

    /// Read and parse a configuration file.
    ///
    /// # Errors
    /// The file cannot be read, or has syntax/type problems.
    pub fn load(path: &Path) -> Result<Self, ConfigProblems> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            let mut p = ConfigProblems::default();
            p.push(path.display().to_string(), format!("cannot read: {e}"));
            p
        })?;
        let base = path
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        let base = if base.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            base
        };
        Self::from_toml(&text, &path.display().to_string(), &base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_errors_with_a_line() {
        let err = Config::from_toml(
            "[server]\nlisten = []\nlisen = 1\n",
            "t.toml",
            Path::new("."),
        )
        .unwrap_err();
        assert_eq!(err.len(), 1);
        assert!(err.problems[0].location.starts_with("t.toml:3:"), "{err}");
        assert!(err.problems[0].message.contains("lisen"), "{err}");
    }

    #[test]
    fn the_shipped_example_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/dnsward.toml");
        let cfg = Config::load(&path).unwrap();
        assert!(!cfg.groups.is_empty());
    }
}
