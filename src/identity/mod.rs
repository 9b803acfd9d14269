//! Agent identity: encrypted listeners' TLS configuration, client certificates (mTLS with
//! SPIFFE or DNS identities, CRLs), short-lived bearer tokens, and the identity → group table.
//!
//! - [`peer`]: the [`Peer`] value listeners hand to the pipeline (address + verified agent +
//!   how it was proven), and the [`ClientKey`] containment and detection are keyed on.
//! - [`certs`]: loading PEM files, building rustls server configurations (WebPKI client
//!   verification with CRLs), swapping them on reload, reading the agent from a certificate,
//!   naming the reason a handshake was refused.
//! - [`token`]: JWT verification (EdDSA/ES256, `exp`, `aud`, maximum lifetime, skew) and
//!   issuing.
//! - [`patterns`]: group `identities = [...]` patterns.
//!
//! The listeners themselves (DoT, DoH) live beside UDP and TCP in [`crate::serve`].

pub mod certs;
pub mod peer;
pub mod token;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use certs::{ClientCert, TlsConfigCell, TlsFiles};
pub use peer::{AuthKind, ClientKey, DEFAULT_IPV6_PREFIX, Peer, canonical};
pub use token::{TokenConfig, TokenVerifier};

use crate::config_error::{ConfigProblems, DurationRange};

/// One encrypted listener (`[[tls.dot]]` or `[[tls.doh]]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsListenerConfig {
    /// Address to listen on, e.g. `127.0.0.1:853`.
    pub listen: String,
    /// Server certificate chain (PEM).
    pub cert: PathBuf,
    /// Server private key (PEM).
    pub key: PathBuf,
    /// `require` or `optional` client certificate. Default: `require` when client CAs are
    /// configured, except on DoH with tokens configured (`optional`: a token suffices).
    #[serde(default)]
    pub client_cert: Option<ClientCert>,
    /// DoH only: the URL path (default `/dns-query`).
    #[serde(default)]
    pub path: Option<String>,
}

/// `[tls]`: DNS over TLS and DNS over HTTPS listeners and how their clients are identified.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// DoT listeners (RFC 7858).
    #[serde(default)]
    pub dot: Vec<TlsListenerConfig>,
    /// DoH listeners (RFC 8484).
    #[serde(default)]
    pub doh: Vec<TlsListenerConfig>,
    /// CA certificates (PEM) that sign client certificates. Empty: no client certificates.
    #[serde(default)]
    pub client_cas: Vec<PathBuf>,
    /// Certificate revocation lists (PEM) for client certificates.
    #[serde(default)]
    pub crls: Vec<PathBuf>,
    /// SPIFFE trust domain → the CA bundles (PEM) that alone may vouch for its IDs. When set,
    /// a certificate's SPIFFE ID must be in a listed trust domain and chain to that domain's
    /// bundle; the bundles are client CAs too. Empty: any client CA vouches for any ID.
    #[serde(default)]
    pub trust_domains: std::collections::BTreeMap<String, Vec<PathBuf>>,
    /// Idle time after which an encrypted connection is closed (default 30s, 1ms to 1h).
    #[serde(default = "default_idle", with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Most simultaneous connections per listener (default 1024); more are closed at once.
    /// Sources in no group by address do not take these slots unless a credential could put
    /// them in a group (see [`crate::serve::encrypted`]).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Most simultaneous connections from one source address per listener (default 128),
    /// those still in their TLS handshake included; more are closed at once.
    #[serde(default = "default_per_client")]
    pub max_connections_per_client: usize,
    /// Longest time a client may take to finish its TLS handshake (default 5s, 1ms to 5m and at
    /// most `idle_timeout`): a connection that never completes one holds its slots no longer.
    #[serde(default = "default_handshake", with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// Most queries in flight on one DoT connection (default 64); the connection is not read
    /// further until one is answered.
    #[serde(default = "default_in_flight")]
    pub max_in_flight: usize,
    /// Bearer tokens accepted on DoH.
    #[serde(default)]
    pub tokens: Option<TokenConfig>,
}

/// Accepted `idle_timeout`, as `server.tcp_idle_timeout`.
pub const IDLE_TIMEOUT: DurationRange =
    DurationRange::new(Duration::from_millis(1), Duration::from_secs(3600));
/// Accepted `handshake_timeout`: a TLS handshake takes round trips, not minutes.
pub const HANDSHAKE_TIMEOUT: DurationRange =
    DurationRange::new(Duration::from_millis(1), Duration::from_secs(300));

fn default_idle() -> Duration {
    Duration::from_secs(30)
}
fn default_max_connections() -> usize {
    1024
}
fn default_per_client() -> usize {
    crate::serve::slots::DEFAULT_CONNECTIONS_PER_CLIENT
}
fn default_handshake() -> Duration {
    Duration::from_secs(5)
}
fn default_in_flight() -> usize {
    64
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            dot: Vec::new(),
            doh: Vec::new(),
            client_cas: Vec::new(),
            trust_domains: std::collections::BTreeMap::new(),
            crls: Vec::new(),
            idle_timeout: default_idle(),
            max_connections: default_max_connections(),
            max_connections_per_client: default_per_client(),
            handshake_timeout: default_handshake(),
            max_in_flight: default_in_flight(),
            tokens: None,
        }
    }
}

/// Which kind of encrypted listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsKind {
    /// DNS over TLS.
    Dot,
    /// DNS over HTTPS.
    Doh,
}

impl TlsConfig {
    /// True when no encrypted listener is configured.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.dot.is_empty() && self.doh.is_empty()
    }

    /// Every CA that may sign a client certificate: `client_cas` and the trust domains'
    /// bundles, each once.
    fn all_client_cas(&self) -> impl Iterator<Item = &PathBuf> {
        let mut seen = std::collections::HashSet::new();
        self.client_cas
            .iter()
            .chain(self.trust_domains.values().flatten())
            .filter(move |p| seen.insert(*p))
    }

    /// The TLS files of one listener, paths resolved against `base`.
    #[must_use]
    pub fn files(&self, l: &TlsListenerConfig, kind: TlsKind, base: &Path) -> TlsFiles {
        let default_cert = if kind == TlsKind::Doh && self.tokens.is_some() {
            ClientCert::Optional
        } else {
            ClientCert::Require
        };
        TlsFiles {
            cert: base.join(&l.cert),
            key: base.join(&l.key),
            client_cas: self.all_client_cas().map(|p| base.join(p)).collect(),
            crls: self.crls.iter().map(|p| base.join(p)).collect(),
            client_cert: l.client_cert.unwrap_or(default_cert),
            trust_domains: self
                .trust_domains
                .iter()
                .map(|(d, files)| (d.clone(), files.iter().map(|p| base.join(p)).collect()))
                .collect(),
            alpn: match kind {
                TlsKind::Dot => Vec::new(),
                TlsKind::Doh => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            },
        }
    }

    /// Check the section, reading every certificate, key, CRL and token key, pushing every
    /// problem.
    pub fn validate(&self, at: &str, base: &Path, problems: &mut ConfigProblems) {
        if self.is_empty() {
            return;
        }
        for (kind, name, list) in [
            (TlsKind::Dot, "dot", &self.dot),
            (TlsKind::Doh, "doh", &self.doh),
        ] {
            for (i, l) in list.iter().enumerate() {
                let here = format!("{at}.{name}[{i}]");
                if let Err(e) = l.listen.parse::<SocketAddr>() {
                    problems.push(
                        format!("{here}.listen"),
                        format!("{:?} is not IP:port ({e})", l.listen),
                    );
                }
                if kind == TlsKind::Dot && l.path.is_some() {
                    problems.push(format!("{here}.path"), "only DoH listeners have a path");
                }
                if l.path.as_deref().is_some_and(|p| !p.starts_with('/')) {
                    problems.push(format!("{here}.path"), "must start with /");
                }
                let files = self.files(l, kind, base);
                if files.client_cert == ClientCert::Require
                    && files.client_cas.is_empty()
                    && l.client_cert.is_some()
                {
                    problems.push(
                        format!("{here}.client_cert"),
                        "\"require\" needs tls.client_cas",
                    );
                }
                if let Err(e) = files.build() {
                    problems.push(here, e.to_string());
                }
            }
        }
        for (domain, bundles) in &self.trust_domains {
            let here = format!("{at}.trust_domains.{domain}");
            let valid = !domain.is_empty()
                && domain.len() <= 255
                && domain
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b));
            if !valid {
                problems.push(
                    here.clone(),
                    "not a SPIFFE trust domain (lower-case letters, digits, '.', '-', '_')",
                );
            }
            if bundles.is_empty() {
                problems.push(here, "needs at least one CA bundle");
            }
        }
        problems.check_count(
            format!("{at}.max_connections"),
            self.max_connections,
            crate::serve::CONNECTIONS,
        );
        problems.check_count(
            format!("{at}.max_in_flight"),
            self.max_in_flight,
            crate::serve::PIPELINED,
        );
        problems.check_duration(
            format!("{at}.idle_timeout"),
            self.idle_timeout,
            IDLE_TIMEOUT,
        );
        problems.check_count(
            format!("{at}.max_connections_per_client"),
            self.max_connections_per_client,
            crate::serve::CONNECTIONS,
        );
        let handshake_in_range = problems.check_duration(
            format!("{at}.handshake_timeout"),
            self.handshake_timeout,
            HANDSHAKE_TIMEOUT,
        );
        if handshake_in_range && self.handshake_timeout > self.idle_timeout {
            problems.push(
                format!("{at}.handshake_timeout"),
                format!(
                    "{} is longer than idle_timeout ({}): a client that has not finished its handshake would hold its slots longer than an idle one",
                    humantime::format_duration(self.handshake_timeout),
                    humantime::format_duration(self.idle_timeout)
                ),
            );
        }
        if let Some(t) = &self.tokens {
            let here = format!("{at}.tokens");
            t.validate(&here, problems);
            if let Err(more) = TokenVerifier::load(t, base, &here) {
                problems.problems.extend(more.problems);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The problems of a `[tls]` section with one DoT listener whose files do not exist (so
    /// those are reported too; the tests look for their own keys).
    fn problems(extra: &str) -> String {
        let cfg: TlsConfig = toml::from_str(&format!(
            "{extra}\n[[dot]]\nlisten = \"127.0.0.1:853\"\ncert = \"c\"\nkey = \"k\"\n"
        ))
        .unwrap();
        let mut p = ConfigProblems::default();
        cfg.validate("tls", Path::new("/nonexistent"), &mut p);
        p.to_string()
    }

    #[test]
    fn handshake_timeout_and_per_client_cap_are_checked() {
        let defaults: TlsConfig = toml::from_str("").unwrap();
        assert_eq!(defaults.handshake_timeout, Duration::from_secs(5));
        assert_eq!(defaults.max_connections_per_client, 128);
        let text = problems("");
        assert!(
            !text.contains("handshake_timeout") && !text.contains("per_client"),
            "{text}"
        );
        let text = problems("handshake_timeout = \"0s\"\nmax_connections_per_client = 0");
        assert!(
            text.contains("tls.handshake_timeout: must be between 1ms and 5m, got 0s"),
            "{text}"
        );
        assert!(
            text.contains("tls.max_connections_per_client: must be between 1 and 1048576, got 0"),
            "{text}"
        );
        let text = problems("max_connections = 2305843009213693952\nmax_in_flight = 65536");
        assert!(
            text.contains("tls.max_connections: must be between 1 and 1048576")
                && text.contains("tls.max_in_flight: must be between 1 and 65535, got 65536"),
            "{text}"
        );
        let text = problems("idle_timeout = \"3s\"");
        assert!(
            text.contains("tls.handshake_timeout: 5s is longer than idle_timeout (3s)"),
            "{text}"
        );
        let text = problems("idle_timeout = \"3s\"\nhandshake_timeout = \"2s\"");
        assert!(!text.contains("handshake_timeout"), "{text}");
    }

    #[test]
    fn trust_domains_must_be_spelled_as_spiffe_has_them_and_name_a_bundle() {
        let text = problems("[trust_domains]\n\"Corp.Example\" = [\"a.pem\"]\n\"ok.example\" = []");
        assert!(
            text.contains("tls.trust_domains.Corp.Example: not a SPIFFE trust domain"),
            "{text}"
        );
        assert!(
            text.contains("tls.trust_domains.ok.example: needs at least one CA bundle"),
            "{text}"
        );
        let text = problems("[trust_domains]\n\"corp.example\" = [\"a.pem\"]");
        assert!(!text.contains("trust_domains"), "{text}");
    }
}
