//! The TOML configuration, composed of each stage's own section.
//!
//! Loading has two steps, both of which collect every problem instead of stopping at the
//! first: [`Config::from_toml`] checks syntax, types and unknown keys (serde), and
//! [`Config::validate_all`] validates meaning (CIDRs, names, files, zone files, thresholds) and
//! parses everything into domain types once. `dnsward check` runs both.
//!
//! This file only composes: every section type is owned by the folder that uses it, and no
//! folder imports this file. The policy lifecycle reads files through
//! [`ConfigFiles`], its implementation of [`ConfigLoader`].

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::admin::AdminConfig;
use crate::config_error::ConfigProblems;
use crate::contain::ContainConfig;
use crate::detect::DetectConfig;
use crate::events::sink::EventsConfig;
use crate::govern::audit::AuditConfig;
use crate::govern::control::{ConfigLoader, LoadedConfig};
use crate::govern::store::{StoreConfig, lexical};
use crate::policy::active::{ActivePolicy, PolicySections};
use crate::policy::group::GroupConfig;
use crate::resolve::cache::CacheConfig;
use crate::resolve::upstream::UpstreamConfig;
use crate::resolve::zones::ZonesConfig;
use crate::serve::ServerConfig;

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
    pub audit: AuditConfig,
    /// `[store]`: where policy versions are kept; without it, versions live in memory only.
    #[serde(default)]
    pub store: Option<StoreConfig>,
    /// `[egress]`: DNS-gated egress (firewall sets fed by answers); absent = off.
    #[serde(default)]
    pub egress: Option<crate::egress::EgressConfig>,
    /// `[notify]`: webhooks and syslog for security events (issue 12).
    #[serde(default)]
    pub notify: crate::events::notify::NotifyConfig,
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
                if let Some(p) = cfg
                    .events
                    .checkpoint_path
                    .as_mut()
                    .filter(|p| p.is_relative())
                {
                    *p = base_dir.join(&*p);
                }
                if let Some(p) =
                    cfg.admin.token_file.as_mut().filter(|p| {
                        p.is_relative() && !crate::govern::secret_file::is_credential(p)
                    })
                {
                    *p = base_dir.join(&*p);
                }
                if let Some(p) =
                    cfg.audit.key_file.as_mut().filter(|p| {
                        p.is_relative() && !crate::govern::secret_file::is_credential(p)
                    })
                {
                    *p = base_dir.join(&*p);
                }
                if let Some(p) =
                    cfg.admin.tokens_file.as_mut().filter(|p| {
                        p.is_relative() && !crate::govern::secret_file::is_credential(p)
                    })
                {
                    *p = base_dir.join(&*p);
                }
                if let Some(p) = cfg
                    .egress
                    .as_mut()
                    .and_then(|e| e.encrypted_dns_list.as_mut())
                    .filter(|p| p.is_relative())
                {
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
    /// [`ActivePolicy::compile`].
    pub fn validate_runtime(&self, problems: &mut ConfigProblems) {
        self.server.validate("server", problems);
        self.tls.validate("tls", &self.base_dir, problems);
        self.admin.validate("admin", problems);
        self.cache.validate("cache", problems);
        self.events.validate("events", problems);
        self.detect.validate("detect", problems);
        self.containment.validate("containment", problems);
        self.audit.validate("audit", problems);
        self.notify.validate("notify", problems); // issue 12
        if let Some(store) = &self.store {
            store.validate("store", problems);
        }
        if let Some(egress) = &self.egress {
            egress.validate("egress", &self.groups, problems);
        }
        self.validate_listener_collisions(problems);
    }

    /// Listen addresses of every kind (`server.listen` for UDP and TCP, `[tls]` DoT and DoH,
    /// `admin.listen`) that would take the same TCP port: the second bind fails with "address
    /// in use" at start, so `check` says which two collide. A port of 0 never collides.
    fn validate_listener_collisions(&self, problems: &mut ConfigProblems) {
        let mut binds: Vec<TcpBind> = Vec::new();
        let mut add = |key: String, text: &str, dual_stack: bool| {
            // Unparsable addresses were reported by their section.
            if let Ok(addr) = text.parse::<SocketAddr>() {
                binds.push(TcpBind {
                    key,
                    addr,
                    dual_stack,
                });
            }
        };
        // The DNS listeners bind IPv6 addresses IPv6-only (see `serve::bind_tcp`); the DoT, DoH
        // and admin listeners take a system default dual-stack socket, so `[::]` there also
        // takes the IPv4 port.
        for (i, l) in self.server.listen.iter().enumerate() {
            add(format!("server.listen[{i}]"), l, false);
        }
        for (kind, list) in [("dot", &self.tls.dot), ("doh", &self.tls.doh)] {
            for (i, l) in list.iter().enumerate() {
                add(format!("tls.{kind}[{i}].listen"), &l.listen, true);
            }
        }
        if !self.admin.listen.is_empty() {
            add("admin.listen".into(), &self.admin.listen, true);
        }
        for (j, b) in binds.iter().enumerate() {
            let Some(a) = binds[..j].iter().find(|a| a.collides_with(b)) else {
                continue;
            };
            let message = if a.addr == b.addr {
                format!("{} is listed twice (also {})", b.addr, a.key)
            } else {
                format!(
                    "{} collides with {} ({}): both take TCP port {} on {}",
                    b.addr,
                    a.key,
                    a.addr,
                    b.addr.port(),
                    if a.addr.ip().is_unspecified() {
                        b.addr.ip()
                    } else {
                        a.addr.ip()
                    }
                )
            };
            problems.push(
                b.key.clone(),
                format!("{message}; the second listener could not bind"),
            );
        }
    }

    /// Settings that are valid but do not do what they seem to: `check` prints each as a note
    /// (exit status 0) and `serve` logs each as a warning at start.
    #[must_use]
    pub fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        let mut cap_above_total = |per_client: usize, total: usize, what: &str| {
            if per_client > total {
                notes.push(format!(
                    "{what}: the per-client cap ({per_client}) is above the listener's total \
                     ({total}), so one client address can hold every slot; lower it to bound \
                     what one agent can take"
                ));
            }
        };
        cap_above_total(
            self.server.tcp_max_connections_per_client,
            self.server.tcp_max_connections,
            "server.tcp_max_connections_per_client",
        );
        if !self.tls.dot.is_empty() || !self.tls.doh.is_empty() {
            cap_above_total(
                self.tls.max_connections_per_client,
                self.tls.max_connections,
                "tls.max_connections_per_client",
            );
        }
        notes
    }

    /// The sections a policy is compiled from.
    #[must_use]
    pub fn policy_sections(&self) -> PolicySections<'_> {
        PolicySections {
            upstream: &self.upstream,
            zones: &self.zones,
            groups: &self.groups,
            base_dir: &self.base_dir,
        }
    }

    /// Everything `dnsward check` checks: the runtime sections and the whole policy.
    ///
    /// # Errors
    /// Every problem found.
    pub fn validate_all(&self) -> Result<ActivePolicy, ConfigProblems> {
        let mut problems = ConfigProblems::default();
        self.validate_runtime(&mut problems);
        match ActivePolicy::compile(&self.policy_sections()) {
            Ok(p) if problems.is_empty() => Ok(p),
            Ok(_) => Err(problems),
            Err(more) => {
                problems.problems.extend(more.problems);
                Err(problems)
            }
        }
    }

    /// The settings read only at start, section by section: a reload that changes them is
    /// applied for its policy and names the sections that wait for a restart.
    #[must_use]
    pub fn fixed_settings(&self) -> FixedSettings {
        FixedSettings(vec![
            ("server", format!("{:?}", self.server)),
            // Listeners and their limits; only certificates, keys, CAs and CRLs are re-read.
            ("tls", format!("{:?}", self.tls)),
            ("admin", format!("{:?}", self.admin)),
            ("cache", format!("{:?}", self.cache)),
            ("events", format!("{:?}", self.events)),
            ("detect", format!("{:?}", self.detect)),
            ("containment", format!("{:?}", self.containment)),
            ("store", format!("{:?}", self.store)),
            ("audit", format!("{:?}", self.audit)),
            ("notify", format!("{:?}", self.notify)),
        ])
    }

    /// Validate everything and compile the policy, for the lifecycle.
    ///
    /// # Errors
    /// Every problem found.
    pub fn into_loaded(&self) -> Result<LoadedConfig, ConfigProblems> {
        Ok(LoadedConfig {
            policy: self.validate_all()?,
            fixed: self.fixed_settings(),
        })
    }

    /// Point this config, read from a stored version's materialised `tree`, at the snapshot:
    /// policy inputs named by absolute path are re-rooted into the tree (so the version is
    /// restored exactly), while the event log, an output, keeps its live location.
    pub fn reroot_into_snapshot(&mut self, tree: &Path, live_name: &str) {
        if let Some(events) = self.events.path.as_mut()
            && let Ok(rest) = lexical(events).strip_prefix(tree)
        {
            *events = Path::new("/").join(rest);
        }
        let reroot = |p: &mut PathBuf| {
            let clean = lexical(p);
            if p.is_absolute()
                && !clean.starts_with(tree)
                && let Ok(rest) = clean.strip_prefix("/")
            {
                *p = tree.join(rest);
            }
        };
        if let Some(dir) = self.zones.dir.as_mut() {
            reroot(dir);
        }
        for f in &mut self.zones.files {
            reroot(&mut f.path);
        }
        for g in &mut self.groups {
            g.allow_files
                .iter_mut()
                .chain(g.deny_files.iter_mut())
                .for_each(reroot);
        }
        // Keep the live name in messages; base_dir stays in the tree so lists resolve there.
        self.source = live_name.to_string();
    }

    /// Read and parse a configuration file.
    ///
    /// # Errors
    /// The file cannot be read, or has syntax/type problems.
    pub fn load(path: &Path) -> Result<Self, ConfigProblems> {
        let text = crate::config_error::read_text_file(path, crate::config_error::MAX_CONFIG_FILE)
            .map_err(|e| {
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

/// One TCP socket the configuration asks for, for [`Config::validate_listener_collisions`].
struct TcpBind {
    /// The key that asks for it.
    key: String,
    /// The address.
    addr: SocketAddr,
    /// An IPv6 wildcard that takes the IPv4 port as well (a system default socket).
    dual_stack: bool,
}

impl TcpBind {
    /// Would binding both fail? Same port (not 0), and the same address, or a wildcard of the
    /// other's family, or a dual-stack IPv6 wildcard against any IPv4 address.
    fn collides_with(&self, other: &TcpBind) -> bool {
        let (a, b) = (self.addr, other.addr);
        if a.port() != b.port() || a.port() == 0 {
            return false;
        }
        match (a.ip(), b.ip()) {
            (x, y) if x == y => true,
            (IpAddr::V4(x), IpAddr::V4(y)) => x.is_unspecified() || y.is_unspecified(),
            (IpAddr::V6(x), IpAddr::V6(y)) => x.is_unspecified() || y.is_unspecified(),
            (IpAddr::V6(x), IpAddr::V4(_)) => x.is_unspecified() && self.dual_stack,
            (IpAddr::V4(_), IpAddr::V6(y)) => y.is_unspecified() && other.dual_stack,
        }
    }
}

/// Reads configuration files for the policy lifecycle ([`crate::govern::control::Control`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct ConfigFiles;

impl ConfigLoader for ConfigFiles {
    fn load(&self, path: &Path) -> Result<LoadedConfig, ConfigProblems> {
        Config::load(path)?.into_loaded()
    }

    fn load_snapshot(
        &self,
        copy: &Path,
        tree: &Path,
        live_name: &str,
    ) -> Result<LoadedConfig, ConfigProblems> {
        let mut cfg = Config::load(copy)?;
        cfg.reroot_into_snapshot(tree, live_name);
        // A snapshot restores a policy; its runtime sections were validated when it was
        // recorded and are compared, not applied.
        Ok(LoadedConfig {
            policy: ActivePolicy::compile(&cfg.policy_sections())?,
            fixed: cfg.fixed_settings(),
        })
    }
}

/// The settings read only at start, by section (see [`Config::fixed_settings`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FixedSettings(Vec<(&'static str, String)>);

impl FixedSettings {
    /// The sections whose settings differ from `running`'s, in the config file's order.
    #[must_use]
    pub fn changed_from(&self, running: &Self) -> Vec<&'static str> {
        self.0
            .iter()
            .filter(|(name, value)| {
                running
                    .0
                    .iter()
                    .find(|(n, _)| n == name)
                    .is_none_or(|(_, v)| v != value)
            })
            .map(|(name, _)| *name)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config_error::ConfigProblem;

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

    /// The problems `validate_runtime` finds in `text` (paths relative to a directory that
    /// does not exist), one per line.
    fn runtime_problems(text: &str) -> String {
        let cfg = Config::from_toml(text, "t.toml", Path::new("/nonexistent")).unwrap();
        let mut problems = ConfigProblems::default();
        cfg.validate_runtime(&mut problems);
        problems.to_string()
    }

    #[test]
    fn listeners_that_would_take_the_same_tcp_port_are_named() {
        // Review D7: a duplicate entry passed `check`, then `serve` failed with EADDRINUSE.
        let text = runtime_problems(
            "[server]\nlisten = [\"127.0.0.70:5391\", \"127.0.0.70:5391\"]\n[admin]\nlisten = \"\"\n",
        );
        assert!(
            text.contains("server.listen[1]: 127.0.0.70:5391 is listed twice (also server.listen[0]); the second listener could not bind"),
            "{text}"
        );
        // A wildcard and an address of the same family, across kinds.
        let text = runtime_problems(
            "[server]\nlisten = [\"0.0.0.0:9153\"]\n[admin]\nlisten = \"127.0.0.1:9153\"\n",
        );
        assert!(
            text.contains("admin.listen: 127.0.0.1:9153 collides with server.listen[0] (0.0.0.0:9153): both take TCP port 9153 on 127.0.0.1"),
            "{text}"
        );
        // The admin endpoint's `[::]` is dual-stack and takes IPv4 too.
        let text = runtime_problems(
            "[server]\nlisten = [\"127.0.0.1:8053\"]\n[admin]\nlisten = \"[::]:8053\"\n",
        );
        assert!(
            text.contains("admin.listen: [::]:8053 collides with server.listen[0]"),
            "{text}"
        );
        // What the README recommends, ports 0, other ports and other addresses: no collision.
        for ok in [
            "[server]\nlisten = [\"0.0.0.0:53\", \"[::]:53\"]\n",
            "[server]\nlisten = [\"127.0.0.1:0\", \"127.0.0.1:0\"]\n[admin]\nlisten = \"127.0.0.1:0\"\n",
            "[server]\nlisten = [\"127.0.0.1:53\", \"127.0.0.2:53\", \"[::1]:53\"]\n[admin]\nlisten = \"127.0.0.1:9153\"\n",
        ] {
            let text = runtime_problems(ok);
            assert!(
                !text.contains("collides") && !text.contains("listed twice"),
                "{ok}: {text}"
            );
        }
    }

    #[test]
    fn a_reload_that_changes_tls_limits_says_they_wait_for_a_restart() {
        let fixed = |tls: &str| {
            Config::from_toml(tls, "t.toml", Path::new("."))
                .unwrap()
                .fixed_settings()
        };
        assert!(fixed("").changed_from(&fixed("")).is_empty());
        assert_eq!(
            fixed("[tls]\nhandshake_timeout = \"2s\"\n").changed_from(&fixed("")),
            ["tls"]
        );
        assert_eq!(
            fixed("[cache]\nmax_bytes = 1048576\n[detect]\nenabled = false\n")
                .changed_from(&fixed("")),
            ["cache", "detect"]
        );
    }

    #[test]
    fn thread_counts_have_an_upper_bound() {
        let text = runtime_problems("[server]\nthreads = 100000\nudp_workers = 5000\n");
        assert!(
            text.contains("server.threads: 100000 is more than 1024; use 0 for one per CPU, or a number up to 1024"),
            "{text}"
        );
        assert!(
            text.contains("server.udp_workers: 5000 is more than 1024"),
            "{text}"
        );
        let text = runtime_problems("[server]\nthreads = 1024\nudp_workers = 64\n");
        assert!(
            !text.contains("threads") && !text.contains("udp_workers"),
            "{text}"
        );
    }

    #[test]
    fn the_shipped_example_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/dnsward.toml");
        let cfg = Config::load(&path).unwrap();
        assert!(!cfg.groups.is_empty());
    }

    #[test]
    fn an_aggregate_interval_is_zero_or_between_1ms_and_60s() {
        let problems = |interval: &str| {
            let cfg = Config::from_toml(
                &format!(
                    "[events]\naggregate_interval = \"{interval}\"\n[[groups]]\nname = \"a\"\ncidrs = [\"10.0.0.0/8\"]\nallow = [\"ok.example\"]\n"
                ),
                "t.toml",
                Path::new("/nonexistent"),
            )
            .unwrap();
            cfg.validate_all()
                .err()
                .map(|p| p.to_string())
                .unwrap_or_default()
        };
        for ok in ["0s", "1ms", "1s", "60s"] {
            let text = problems(ok);
            assert!(!text.contains("aggregate_interval"), "{ok}: {text}");
        }
        for bad in ["500ns", "999us", "61s"] {
            let text = problems(bad);
            assert!(text.contains("events.aggregate_interval"), "{bad}: {text}");
        }
    }

    /// Every duration key, a configuration that sets it to `{v}`, and its accepted range in
    /// milliseconds (as the README documents it).
    const DURATION_KEYS: &[(&str, &str, u64, u64)] = &[
        (
            "server.tcp_idle_timeout",
            "[server]\ntcp_idle_timeout = \"{v}\"\n",
            1,
            3_600_000,
        ),
        (
            "server.tcp_write_timeout",
            "[server]\ntcp_write_timeout = \"{v}\"\n",
            1,
            300_000,
        ),
        (
            "server.shutdown_grace",
            "[server]\nshutdown_grace = \"{v}\"\n",
            0,
            300_000,
        ),
        (
            "tls.idle_timeout",
            "[tls]\nidle_timeout = \"{v}\"\nhandshake_timeout = \"1ms\"\n[[tls.dot]]\nlisten = \"127.0.0.1:853\"\ncert = \"c\"\nkey = \"k\"\n",
            1,
            3_600_000,
        ),
        (
            "tls.handshake_timeout",
            "[tls]\nidle_timeout = \"1h\"\nhandshake_timeout = \"{v}\"\n[[tls.dot]]\nlisten = \"127.0.0.1:853\"\ncert = \"c\"\nkey = \"k\"\n",
            1,
            300_000,
        ),
        (
            "tls.tokens.max_lifetime",
            "[tls.tokens]\nmax_lifetime = \"{v}\"\n[[tls.dot]]\nlisten = \"127.0.0.1:853\"\ncert = \"c\"\nkey = \"k\"\n",
            1_000,
            30 * 86_400_000,
        ),
        (
            "tls.tokens.clock_skew",
            "[tls.tokens]\nclock_skew = \"{v}\"\n[[tls.dot]]\nlisten = \"127.0.0.1:853\"\ncert = \"c\"\nkey = \"k\"\n",
            0,
            600_000,
        ),
        (
            "admin.header_read_timeout",
            "[admin]\nheader_read_timeout = \"{v}\"\n",
            1,
            300_000,
        ),
        (
            "admin.connection_timeout",
            "[admin]\nconnection_timeout = \"{v}\"\n",
            1,
            3_600_000,
        ),
        (
            "upstream.timeout",
            "[upstream]\ntimeout = \"{v}\"\n",
            1,
            300_000,
        ),
        (
            "upstream.failure_ttl",
            "[upstream]\nfailure_ttl = \"{v}\"\n",
            0,
            300_000,
        ),
        (
            "upstream.failure_ttl_max",
            "[upstream]\nfailure_ttl = \"0s\"\nfailure_ttl_max = \"{v}\"\n",
            0,
            300_000,
        ),
        (
            "upstream.servers[0].timeout",
            "[upstream]\nservers = [{ address = \"127.0.0.1\", timeout = \"{v}\" }]\n",
            1,
            300_000,
        ),
        (
            "upstream.forward[0].servers[0].timeout",
            "[[upstream.forward]]\nzone = \"corp.example\"\nservers = [{ address = \"127.0.0.1\", timeout = \"{v}\" }]\n",
            1,
            300_000,
        ),
        (
            "cache.min_ttl",
            "[cache]\nmin_ttl = \"{v}\"\n",
            0,
            86_400_000,
        ),
        (
            "cache.max_ttl",
            "[cache]\nmax_ttl = \"{v}\"\n",
            0,
            7 * 86_400_000,
        ),
        (
            "cache.negative_max_ttl",
            "[cache]\nnegative_max_ttl = \"{v}\"\n",
            0,
            86_400_000,
        ),
        (
            "events.checkpoint_interval",
            "[events]\ncheckpoint_interval = \"{v}\"\n",
            1_000,
            86_400_000,
        ),
        (
            "notify.webhooks[0].backoff",
            "[notify]\nallowed_hosts = [\"127.0.0.1\"]\n[[notify.webhooks]]\nurl = \"http://127.0.0.1/x\"\nbackoff = \"{v}\"\n",
            1,
            30_000,
        ),
        (
            "notify.webhooks[0].timeout",
            "[notify]\nallowed_hosts = [\"127.0.0.1\"]\n[[notify.webhooks]]\nurl = \"http://127.0.0.1/x\"\ntimeout = \"{v}\"\n",
            1,
            300_000,
        ),
        (
            "detect.window",
            "[detect]\nwindow = \"{v}\"\nlong_window = \"48h\"\n",
            60_000,
            6 * 3_600_000,
        ),
        (
            "detect.short_window",
            "[detect]\nshort_window = \"{v}\"\n",
            10_000,
            600_000,
        ),
        (
            "detect.alert_interval",
            "[detect]\nalert_interval = \"{v}\"\n",
            1_000,
            86_400_000,
        ),
        (
            "detect.prevalence_window",
            "[detect]\nprevalence_window = \"{v}\"\n",
            60_000,
            30 * 86_400_000,
        ),
        (
            "containment.throttle_for",
            "[containment]\nthrottle_for = \"{v}\"\n",
            1_000,
            7 * 86_400_000,
        ),
        (
            "containment.sinkhole_for",
            "[containment]\nsinkhole_for = \"{v}\"\n",
            1_000,
            7 * 86_400_000,
        ),
        (
            "containment.quarantine_for",
            "[containment]\nquarantine_for = \"{v}\"\n",
            1_000,
            7 * 86_400_000,
        ),
        ("egress.grace", "[egress]\ngrace = \"{v}\"\n", 0, 86_400_000),
        (
            "egress.min_lifetime",
            "[egress]\nmin_lifetime = \"{v}\"\n",
            0,
            86_400_000,
        ),
        (
            "egress.denied_window",
            "[egress]\ndenied_window = \"{v}\"\n",
            1_000,
            86_400_000,
        ),
        (
            "groups[0].block_ttl",
            "[[groups]]\nname = \"b\"\ncidrs = [\"10.1.0.0/16\"]\nblock_ttl = \"{v}\"\n",
            0,
            86_400_000,
        ),
    ];

    /// Every problem `check` finds in `section` (with one group added for the policy).
    fn check_problems(section: &str) -> Vec<ConfigProblem> {
        let text = format!(
            "{section}[[groups]]\nname = \"a\"\ncidrs = [\"10.0.0.0/16\"]\nallow = [\"ok.example\"]\n"
        );
        let cfg = Config::from_toml(&text, "t.toml", Path::new("/nonexistent"))
            .unwrap_or_else(|e| panic!("{text}: {e}"));
        cfg.validate_all()
            .err()
            .map(|p| p.problems)
            .unwrap_or_default()
    }

    #[test]
    fn every_duration_is_bounded_and_its_bounds_are_accepted() {
        // Found by a bad-input probe: `[upstream] timeout = "18446744073709551615s"` passed
        // `check`, then every forwarded query panicked its task adding it to `Instant::now()`.
        let huge = "18446744073709551615s";
        for &(key, template, min_ms, max_ms) in DURATION_KEYS {
            let with = |v: &str| check_problems(&template.replace("{v}", v));
            let about_key = |found: &[ConfigProblem]| -> Vec<String> {
                found
                    .iter()
                    .filter(|p| p.location == key)
                    .map(ToString::to_string)
                    .collect()
            };
            for ok in [format!("{min_ms}ms"), format!("{max_ms}ms")] {
                let found = with(&ok);
                assert!(about_key(&found).is_empty(), "{key} = {ok}: {found:?}");
            }
            let mut bad = vec![format!("{}ms", max_ms + 1), huge.to_string()];
            if min_ms > 0 {
                bad.push(format!("{}ms", min_ms - 1));
            }
            let range = if min_ms == 0 {
                format!("at most {}", short(max_ms))
            } else {
                format!("between {} and {}", short(min_ms), short(max_ms))
            };
            let expected = format!("{key}: must be {range}, got ");
            for v in bad {
                // Others may follow from it (`cache.min_ttl` above `max_ttl`): exactly one is
                // the range.
                let found = about_key(&with(&v));
                let out_of_range = found.iter().filter(|t| t.starts_with(&expected)).count();
                assert_eq!(out_of_range, 1, "{key} = {v}: {found:?}");
            }
        }
        // The probe's keys, as `check` prints them.
        let found = check_problems(
            "[upstream]\ntimeout = \"18446744073709551615s\"\nservers = [{ address = \"127.0.0.1\", timeout = \"6m\" }]\n",
        );
        let text: Vec<String> = found.iter().map(ToString::to_string).collect();
        assert!(
            text.contains(
                &"upstream.servers[0].timeout: must be between 1ms and 5m, got 6m".into()
            ),
            "{text:?}"
        );
        assert!(
            text.contains(
                &"upstream.timeout: must be between 1ms and 5m, got 18446744073709551615s".into()
            ),
            "{text:?}"
        );
    }

    /// A bound in milliseconds as the messages write it.
    fn short(ms: u64) -> String {
        crate::config_error::DurationRange::up_to(std::time::Duration::from_millis(ms))
            .to_string()
            .trim_start_matches("at most ")
            .to_string()
    }

    #[test]
    fn semantic_problems_are_all_reported_together() {
        let cfg = Config::from_toml(
            r#"
            [upstream]
            servers = [{ address = "not-an-ip" }]
            [cache]
            min_ttl = "2h"
            max_ttl = "1h"
            [[groups]]
            name = "a"
            cidrs = ["10.0.0.0/8"]
            allow = ["ok.example"]
            [[groups]]
            name = "a"
            cidrs = ["10.0.0.0/8", "300.1.1.1"]
            allow = ["bad..name"]
            allow_files = ["missing.txt"]
            "#,
            "t.toml",
            Path::new("/nonexistent"),
        )
        .unwrap();
        let problems = cfg.validate_all().unwrap_err();
        let text = problems.to_string();
        for needle in [
            "upstream.servers[0].address",
            "cache.min_ttl",
            "groups[1].name",
            "groups[1].cidrs[0]",
            "groups[1].cidrs[1]",
            "groups[1].allow[0]",
            "missing.txt",
        ] {
            assert!(text.contains(needle), "missing {needle} in:\n{text}");
        }
    }
}
