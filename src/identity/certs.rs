//! TLS server configuration: the server certificate and key, the client CAs and CRLs, the
//! agent identity read from a verified client certificate, and why a handshake was refused.
//!
//! Certificate verification is rustls' WebPKI verifier (with CRLs); nothing here re-implements
//! it. A [`TlsConfigCell`] holds the current `ServerConfig` behind an `ArcSwap`: a reload builds
//! a new one from the files and swaps it in; connections already open keep the one they were
//! accepted with, so nothing is dropped.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, ServerConfig};

/// Whether a listener asks for a client certificate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientCert {
    /// A valid client certificate is required (default when client CAs are configured):
    /// missing, expired, revoked or foreign certificates are refused at the handshake.
    #[default]
    Require,
    /// A client certificate is verified if presented; without one the client is identified
    /// by a bearer token (DoH) or its address.
    Optional,
}

/// Why building a TLS configuration failed.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// A PEM file could not be read or parsed.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// rustls rejected the material.
    #[error("{0}")]
    Rustls(String),
}

fn file_error(path: &Path, message: impl std::fmt::Display) -> TlsSetupError {
    TlsSetupError::File {
        path: path.to_path_buf(),
        message: message.to_string(),
    }
}

/// A PEM file's bytes, read as every configured file is
/// ([`crate::config_error::read_regular_file`]: no FIFO, device or kernel interface).
fn read(path: &Path) -> Result<Vec<u8>, TlsSetupError> {
    // A CA bundle or an enterprise CRL can be tens of megabytes: the list files' bound.
    crate::config_error::read_regular_file(path, crate::config_error::MAX_LIST_FILE)
        .map_err(|e| file_error(path, e))
}

/// Every certificate in a PEM file (at least one).
///
/// # Errors
/// Unreadable file, bad PEM, or no certificate in it.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, e))?;
    if certs.is_empty() {
        return Err(file_error(path, "no certificate in the file"));
    }
    Ok(certs)
}

/// The private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
///
/// # Errors
/// Unreadable file or no key in it.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsSetupError> {
    PrivateKeyDer::from_pem_slice(&read(path)?).map_err(|e| file_error(path, e))
}

/// Every CRL in a PEM file (at least one).
///
/// # Errors
/// Unreadable file, bad PEM, or no CRL in it.
pub fn load_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsSetupError> {
    let pem = read(path)?;
    let crls = CertificateRevocationListDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, e))?;
    // A configured CRL file without a CRL would silently un-revoke everything it listed.
    if crls.is_empty() {
        return Err(file_error(path, "no CRL in the file"));
    }
    Ok(crls)
}

/// The crypto provider (ring) used by every TLS listener.
#[must_use]
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Files that make one listener's TLS configuration.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Server certificate chain (PEM).
    pub cert: PathBuf,
    /// Server private key (PEM).
    pub key: PathBuf,
    /// Client CA certificates (PEM); empty means no client certificates are asked for.
    pub client_cas: Vec<PathBuf>,
    /// CRLs (PEM) checked for client certificates.
    pub crls: Vec<PathBuf>,
    /// Whether a client certificate is required.
    pub client_cert: ClientCert,
    /// `[tls.trust_domains]`: each SPIFFE trust domain with the only CA bundles that may vouch
    /// for its IDs (their CAs are client CAs too). Empty: any client CA vouches for any ID.
    pub trust_domains: Vec<(String, Vec<PathBuf>)>,
    /// ALPN protocols to offer (`h2`, `http/1.1` for DoH; empty for DoT).
    pub alpn: Vec<Vec<u8>>,
}

impl TlsFiles {
    /// Read every file and build a rustls server configuration.
    ///
    /// # Errors
    /// A file that cannot be read or parsed, or material rustls rejects.
    pub fn build(&self) -> Result<Arc<ServerConfig>, TlsSetupError> {
        let provider = provider();
        let certs = load_certs(&self.cert)?;
        let key = load_key(&self.key)?;
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsSetupError::Rustls(e.to_string()))?;
        let builder = if self.client_cas.is_empty() {
            builder.with_no_client_auth()
        } else {
            let mut roots = RootCertStore::empty();
            for path in &self.client_cas {
                for ca in load_certs(path)? {
                    roots.add(ca).map_err(|e| file_error(path, e))?;
                }
            }
            let mut crls = Vec::new();
            for path in &self.crls {
                crls.extend(load_crls(path)?);
            }
            let mut verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
                    .with_crls(crls)
                    // A certificate from a CA that publishes no CRL is not refused for that
                    // alone; a certificate a configured CRL lists is.
                    .allow_unknown_revocation_status();
            if self.client_cert == ClientCert::Optional {
                verifier = verifier.allow_unauthenticated();
            }
            let verifier = verifier
                .build()
                .map_err(|e| TlsSetupError::Rustls(e.to_string()))?;
            if self.trust_domains.is_empty() {
                builder.with_client_cert_verifier(verifier)
            } else {
                let mut domains = Vec::new();
                for (domain, bundles) in &self.trust_domains {
                    let mut roots = RootCertStore::empty();
                    for path in bundles {
                        for ca in load_certs(path)? {
                            roots.add(ca).map_err(|e| file_error(path, e))?;
                        }
                    }
                    let mut crls = Vec::new();
                    for path in &self.crls {
                        crls.extend(load_crls(path)?);
                    }
                    let own = WebPkiClientVerifier::builder_with_provider(
                        Arc::new(roots),
                        Arc::clone(&provider),
                    )
                    .with_crls(crls)
                    .allow_unknown_revocation_status()
                    .build()
                    .map_err(|e| TlsSetupError::Rustls(format!("trust domain {domain}: {e}")))?;
                    domains.push((domain.clone(), own));
                }
                builder.with_client_cert_verifier(Arc::new(TrustDomainVerifier {
                    all: verifier,
                    domains,
                }))
            }
        };
        let mut cfg = builder
            .with_single_cert(certs, key)
            .map_err(|e| TlsSetupError::Rustls(format!("{}: {e}", self.cert.display())))?;
        cfg.alpn_protocols.clone_from(&self.alpn);
        if !self.client_cas.is_empty() {
            // No session resumption where a client certificate is an identity: rustls restores
            // a resumed session's client chain without verifying it again, and its session
            // cache and tickets have no lifetime of their own, so a certificate that expired
            // (the short-lived SVIDs SPIFFE relies on instead of revocation) kept its identity
            // for as long as the client kept resuming. Every connection does a full handshake,
            // its certificate checked against the CAs and CRLs in force.
            cfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
            cfg.send_tls13_tickets = 0;
        }
        Ok(Arc::new(cfg))
    }
}

/// A client certificate with a SPIFFE ID whose trust domain is not vouched for by the bundle
/// configured for it (`[tls.trust_domains]`).
#[derive(Debug, thiserror::Error)]
#[error("client certificate's trust domain {0:?} is not vouched for by its CA bundle")]
pub struct TrustDomainRefused(pub String);

/// Client certificates checked against every client CA, then, for a SPIFFE ID, against its
/// trust domain's own bundle: with several CAs configured (a federation, a partner's SPIRE),
/// one domain's CA must not issue IDs of another (the SPIFFE federation model binds each
/// trust domain to its bundle). A trust domain not listed is refused.
#[derive(Debug)]
struct TrustDomainVerifier {
    all: Arc<dyn rustls::server::danger::ClientCertVerifier>,
    domains: Vec<(String, Arc<dyn rustls::server::danger::ClientCertVerifier>)>,
}

impl rustls::server::danger::ClientCertVerifier for TrustDomainVerifier {
    fn offer_client_auth(&self) -> bool {
        self.all.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.all.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.all.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        let verified = self
            .all
            .verify_client_cert(end_entity, intermediates, now)?;
        let Some(domain) = spiffe_trust_domain(end_entity) else {
            // No SPIFFE ID: a DNS-named client, vouched for by the client CAs.
            return Ok(verified);
        };
        let refused = || {
            rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(
                Arc::new(TrustDomainRefused(domain.clone())),
            )))
        };
        match self.domains.iter().find(|(d, _)| *d == domain) {
            Some((_, own)) => own
                .verify_client_cert(end_entity, intermediates, now)
                .map_err(|_| refused()),
            None => Err(refused()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.all.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.all.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.all.supported_verify_schemes()
    }
}

/// The trust domain of the certificate's SPIFFE ID, when it names one (as
/// [`agent_identity`] reads it).
fn spiffe_trust_domain(cert: &CertificateDer<'_>) -> Option<String> {
    let id = agent_identity(cert)?;
    let rest = id.strip_prefix("spiffe://")?;
    Some(rest.split('/').next().unwrap_or(rest).to_string())
}

/// The live TLS configuration of one listener, swappable on reload.
#[derive(Debug)]
pub struct TlsConfigCell {
    /// Where it is built from.
    files: TlsFiles,
    /// The configuration new connections are accepted with.
    current: ArcSwap<ServerConfig>,
}

impl TlsConfigCell {
    /// Build the first configuration.
    ///
    /// # Errors
    /// As [`TlsFiles::build`].
    pub fn new(files: TlsFiles) -> Result<Self, TlsSetupError> {
        let current = ArcSwap::new(files.build()?);
        Ok(Self { files, current })
    }

    /// The configuration to accept the next connection with.
    #[must_use]
    pub fn current(&self) -> Arc<ServerConfig> {
        self.current.load_full()
    }

    /// Re-read the files; on failure the running configuration stays.
    ///
    /// # Errors
    /// As [`TlsFiles::build`].
    pub fn reload(&self) -> Result<(), TlsSetupError> {
        self.current.store(self.files.build()?);
        Ok(())
    }
}

/// The agent named by a verified client certificate: its SPIFFE ID (its one URI SAN, which
/// must be a well-formed `spiffe://` ID), else its first DNS SAN (which must be a host name).
/// `None` when it names neither validly: the connection is then verified but names no agent,
/// and the source address picks the group, as without a certificate.
///
/// As the SPIFFE X.509-SVID specification says: exactly one URI SAN (a certificate with two
/// could be read as either agent), and an ID that is `spiffe://` + a trust domain of lower-case
/// letters, digits, `.`, `-`, `_` (no user, no port) + a path of non-empty segments of letters,
/// digits, `.`, `-`, `_` (no `.` or `..` segment, no `%`, `?` or `#`). Identities are compared
/// as strings, so `build/../research/1` or `build//1` would otherwise be other agents than
/// the ones their patterns and containments mean. A DNS SAN is taken only if it is a host
/// name: `DNS:spiffe://example.test/agents/research/1` is not that agent.
#[must_use]
pub fn agent_identity(cert: &CertificateDer<'_>) -> Option<String> {
    use x509_parser::extensions::GeneralName;
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let san = parsed.subject_alternative_name().ok()??;
    let names = &san.value.general_names;
    let uris: Vec<&str> = names
        .iter()
        .filter_map(|n| match n {
            GeneralName::URI(u) => Some(*u),
            _ => None,
        })
        .collect();
    if uris.iter().any(|u| {
        u.get(..9)
            .is_some_and(|p| p.eq_ignore_ascii_case("spiffe://"))
    }) {
        return match uris.as_slice() {
            [one] if is_spiffe_id(one) => Some((*one).to_string()),
            _ => None,
        };
    }
    names.iter().find_map(|n| match n {
        GeneralName::DNSName(d) if is_host_name(d) => Some(d.to_ascii_lowercase()),
        _ => None,
    })
}

/// Whether `id` is a SPIFFE ID as the specification spells it (see [`agent_identity`]).
fn is_spiffe_id(id: &str) -> bool {
    let Some(rest) = id.strip_prefix("spiffe://") else {
        return false;
    };
    let (domain, path) = rest.split_once('/').unwrap_or((rest, ""));
    let domain_ok = !domain.is_empty()
        && domain.len() <= 255
        && domain
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b));
    let path_ok = path.is_empty()
        || path.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
        });
    domain_ok && path_ok && id.len() <= 2048
}

/// Whether `name` is a host name: labels of letters, digits and `-` (not at either end), 1–63
/// bytes each, at most 253 in all; no wildcard.
fn is_host_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// A short, stable reason for a refused handshake, for events and metric labels. `None` when
/// the failure is not a TLS refusal (the peer hung up, a socket error).
#[must_use]
pub fn refusal_reason(err: &std::io::Error) -> Option<String> {
    let inner = err.get_ref()?.downcast_ref::<rustls::Error>()?;
    Some(match inner {
        rustls::Error::NoCertificatesPresented => "missing client certificate".into(),
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "client certificate expired".into()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "client certificate not yet valid".into()
            }
            CertificateError::Revoked => "client certificate revoked".into(),
            CertificateError::UnknownIssuer => "client certificate from an unknown CA".into(),
            CertificateError::BadSignature => "client certificate signature invalid".into(),
            CertificateError::Other(e) if e.0.downcast_ref::<TrustDomainRefused>().is_some() => {
                e.0.to_string()
            }
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
                "client certificate not valid for client authentication".into()
            }
            other => format!("client certificate invalid: {other:?}"),
        },
        other => format!("handshake failed: {other}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spiffe_ids_and_host_names_are_checked_as_the_specifications_spell_them() {
        for ok in [
            "spiffe://example.test/agents/build/1",
            "spiffe://example.test",
            "spiffe://prod-1.example_x.test/a/B-c/d.e_f",
        ] {
            assert!(is_spiffe_id(ok), "{ok}");
        }
        for bad in [
            "spiffe://example.test/agents/build/../../research/1",
            "spiffe://example.test/agents/build/./1",
            "spiffe://example.test/agents/build//1",
            "spiffe://example.test/agents/build/",
            "spiffe://example.test/agents/build/%2e%2e/x",
            "spiffe://example.test/agents/build/1?x=1",
            "spiffe://example.test/agents/build/1#f",
            "spiffe://user@example.test/a",
            "spiffe://example.test:443/a",
            "spiffe://Example.test/a",
            "spiffe:///a",
            "SPIFFE://example.test/a",
            "https://example.test/a",
        ] {
            assert!(!is_spiffe_id(bad), "{bad}");
        }
        for ok in ["runner.ci.example.test", "a-1.example", "host."] {
            assert!(is_host_name(ok), "{ok}");
        }
        for bad in [
            "spiffe://example.test/agents/research/1",
            "*.ci.example.test",
            "-a.example",
            "a..example",
            "",
            "a_b.example",
        ] {
            assert!(!is_host_name(bad), "{bad}");
        }
    }
}
