//! Short-lived bearer tokens (JWT) for DoH: verification against configured public keys, and
//! issuing for operators who have no issuer of their own (`dnsward token issue`).
//!
//! Only asymmetric signatures are accepted (EdDSA with Ed25519, ES256), so the resolver holds
//! no secret that could mint tokens. A token must carry `sub` (the agent id), `exp`, and the
//! configured `aud`; its lifetime (`exp - iat`, or `exp - now` without `iat`) may not exceed
//! the configured maximum, so a leaked token is worth little. The group claim, when present,
//! names the agent's group. Signatures and claim parsing are the `jsonwebtoken` crate's.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::Deserialize;

use crate::config_error::{ConfigProblems, DurationRange};

/// `[tls.tokens]`: which bearer tokens DoH accepts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// PEM public keys (Ed25519 or P-256) whose signatures are accepted.
    #[serde(default)]
    pub keys: Vec<PathBuf>,
    /// A JWKS file (`{"keys": [...]}`) of accepted public keys (OKP Ed25519 or EC P-256).
    #[serde(default)]
    pub jwks: Option<PathBuf>,
    /// The audience tokens must name (default `dnsward`).
    #[serde(default = "default_audience")]
    pub audience: String,
    /// Longest lifetime a token may have (default 1h, 1s to 30d).
    #[serde(default = "default_max_lifetime", with = "humantime_serde")]
    pub max_lifetime: Duration,
    /// Clock skew tolerated on `exp`/`nbf` (default 30s, at most 10m).
    #[serde(default = "default_skew", with = "humantime_serde")]
    pub clock_skew: Duration,
    /// Name of the claim holding the group (default `group`).
    #[serde(default = "default_group_claim")]
    pub group_claim: String,
}

/// Accepted `max_lifetime`: whole seconds, as the claims count; a month at most, or a leaked
/// token works for longer than any rotation.
pub const MAX_LIFETIME: DurationRange =
    DurationRange::new(Duration::from_secs(1), Duration::from_secs(30 * 86_400));
/// Accepted `clock_skew`: the time an expired token is still accepted; synchronised clocks
/// differ by far less than minutes (Kerberos allows 5).
pub const CLOCK_SKEW: DurationRange = DurationRange::up_to(Duration::from_secs(600));

fn default_audience() -> String {
    "dnsward".into()
}
fn default_max_lifetime() -> Duration {
    Duration::from_secs(3600)
}
fn default_skew() -> Duration {
    Duration::from_secs(30)
}
fn default_group_claim() -> String {
    "group".into()
}

impl TokenConfig {
    /// Check the section (keys are read by [`TokenVerifier::load`]).
    pub fn validate(&self, at: &str, problems: &mut ConfigProblems) {
        if self.keys.is_empty() && self.jwks.is_none() {
            problems.push(
                at,
                "tokens need at least one key (keys = [...] or jwks = ...)",
            );
        }
        if self.audience.is_empty() {
            problems.push(format!("{at}.audience"), "must not be empty");
        }
        problems.check_duration(
            format!("{at}.max_lifetime"),
            self.max_lifetime,
            MAX_LIFETIME,
        );
        problems.check_duration(format!("{at}.clock_skew"), self.clock_skew, CLOCK_SKEW);
    }
}

/// Why a token was refused. The `Display` text is the event reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Not a JWT at all.
    #[error("token malformed")]
    Malformed,
    /// An algorithm other than EdDSA/ES256, or none matching a configured key.
    #[error("token algorithm not accepted")]
    Algorithm,
    /// No configured key verifies the signature.
    #[error("token signature invalid")]
    BadSignature,
    /// Past `exp` (beyond the skew).
    #[error("token expired")]
    Expired,
    /// Before `nbf` (beyond the skew).
    #[error("token not yet valid")]
    NotYetValid,
    /// `aud` missing or not ours.
    #[error("token audience wrong")]
    Audience,
    /// Lifetime longer than allowed.
    #[error("token lifetime over the maximum")]
    Lifetime,
    /// A required claim is missing or malformed.
    #[error("token claim missing: {0}")]
    Claim(&'static str),
}

/// A verified token's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenIdentity {
    /// `sub`: the agent id.
    pub agent: String,
    /// The group claim, if present.
    pub group: Option<String>,
}

/// Claims we read ourselves after the signature checks out.
#[derive(Debug, Deserialize)]
struct Claims {
    sub: Option<String>,
    exp: Option<u64>,
    iat: Option<u64>,
    nbf: Option<u64>,
    #[serde(flatten)]
    rest: HashMap<String, serde_json::Value>,
}

/// An accepted key: the algorithm it verifies, its key id (JWKS) if any, and the key.
type AcceptedKey = (Algorithm, Option<String>, DecodingKey);

/// Verifies bearer tokens against the configured keys. The keys are re-read on reload
/// ([`TokenVerifier::reload`]: SIGHUP and the API's reload), so an issuer's key rotation
/// needs a rewritten key or JWKS file and a reload, not a restart.
pub struct TokenVerifier {
    /// Accepted keys, swapped whole on reload (a request verifies against one set).
    keys: arc_swap::ArcSwap<Vec<AcceptedKey>>,
    /// Audience, lifetime, skew, group claim.
    cfg: TokenConfig,
    /// Where relative key paths are read from, and the config key errors are reported under.
    base: PathBuf,
    at: String,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("keys", &self.keys.load().len())
            .field("audience", &self.cfg.audience)
            .finish_non_exhaustive()
    }
}

fn decoding_key_from_pem(pem: &[u8]) -> Option<(Algorithm, DecodingKey)> {
    if let Ok(k) = DecodingKey::from_ed_pem(pem) {
        return Some((Algorithm::EdDSA, k));
    }
    DecodingKey::from_ec_pem(pem)
        .ok()
        .map(|k| (Algorithm::ES256, k))
}

impl TokenVerifier {
    /// Read every key, reporting every unusable one. `base` resolves relative paths.
    ///
    /// # Errors
    /// Each key file that cannot be read or holds no Ed25519/P-256 public key.
    pub fn load(cfg: &TokenConfig, base: &Path, at: &str) -> Result<Self, ConfigProblems> {
        let keys = read_keys(cfg, base, at)?;
        Ok(Self {
            keys: arc_swap::ArcSwap::from_pointee(keys),
            cfg: cfg.clone(),
            base: base.to_path_buf(),
            at: at.to_string(),
        })
    }

    /// Read the key files and the JWKS file again and verify with what they hold from the
    /// next request on. All or nothing: on any problem (a file gone, unreadable or not a key,
    /// no usable key left) the running keys stay and the problems are returned.
    ///
    /// # Errors
    /// As [`TokenVerifier::load`].
    pub fn reload(&self) -> Result<(), ConfigProblems> {
        let keys = read_keys(&self.cfg, &self.base, &self.at)?;
        self.keys.store(std::sync::Arc::new(keys));
        Ok(())
    }

    /// How many keys verify tokens now.
    #[must_use]
    pub fn key_count(&self) -> usize {
        self.keys.load().len()
    }
}

/// Every key `cfg` names, read now; each unusable one reported under `at`.
fn read_keys(cfg: &TokenConfig, base: &Path, at: &str) -> Result<Vec<AcceptedKey>, ConfigProblems> {
    let mut problems = ConfigProblems::default();
    let mut keys = Vec::new();
    for (i, path) in cfg.keys.iter().enumerate() {
        let path = base.join(path);
        match crate::config_error::read_regular_file(&path, crate::config_error::MAX_SMALL_FILE) {
            Ok(pem) => match decoding_key_from_pem(&pem) {
                Some((alg, k)) => keys.push((alg, None, k)),
                None => problems.push(
                    format!("{at}.keys[{i}]"),
                    format!(
                        "{}: not an Ed25519 or P-256 public key (PEM)",
                        path.display()
                    ),
                ),
            },
            Err(e) => problems.push(
                format!("{at}.keys[{i}]"),
                format!("{}: cannot read: {e}", path.display()),
            ),
        }
    }
    if let Some(jwks) = &cfg.jwks {
        let path = base.join(jwks);
        let parsed =
            crate::config_error::read_regular_file(&path, crate::config_error::MAX_SMALL_FILE)
                .and_then(|b| serde_json::from_slice::<JwkSet>(&b).map_err(|e| e.to_string()));
        match parsed {
            Ok(set) => {
                for (i, jwk) in set.keys.iter().enumerate() {
                    let alg = match &jwk.algorithm {
                        AlgorithmParameters::OctetKeyPair(_) => Algorithm::EdDSA,
                        AlgorithmParameters::EllipticCurve(_) => Algorithm::ES256,
                        _ => {
                            problems.push(
                                format!("{at}.jwks"),
                                format!(
                                    "key {i}: only OKP (Ed25519) and EC (P-256) keys are accepted"
                                ),
                            );
                            continue;
                        }
                    };
                    match DecodingKey::from_jwk(jwk) {
                        Ok(k) => keys.push((alg, jwk.common.key_id.clone(), k)),
                        Err(e) => problems.push(format!("{at}.jwks"), format!("key {i}: {e}")),
                    }
                }
            }
            Err(e) => problems.push(format!("{at}.jwks"), format!("{}: {e}", path.display())),
        }
    }
    if keys.is_empty() && problems.is_empty() {
        // An empty JWKS (`{"keys": []}`) would refuse every token without saying why.
        problems.push(
            at.to_string(),
            "no usable key: the key files and the JWKS hold none",
        );
    }
    problems.into_result(keys)
}

impl TokenVerifier {
    /// Verify `token` at wall-clock time `now` (seconds since the Unix epoch).
    ///
    /// # Errors
    /// Why the token is refused.
    pub fn verify_at(&self, token: &str, now: u64) -> Result<TokenIdentity, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        if !matches!(header.alg, Algorithm::EdDSA | Algorithm::ES256) {
            return Err(TokenError::Algorithm);
        }
        let mut validation = Validation::new(header.alg);
        // Time claims are checked below against our clock, with our skew and lifetime rules.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.set_required_spec_claims(&["aud"]);
        validation.set_audience(&[&self.cfg.audience]);
        let mut last = TokenError::Algorithm;
        let mut claims = None;
        let keys = self.keys.load();
        for (alg, kid, key) in keys.iter() {
            if *alg != header.alg || (header.kid.is_some() && kid.is_some() && header.kid != *kid) {
                continue;
            }
            match jsonwebtoken::decode::<Claims>(token, key, &validation) {
                Ok(data) => {
                    claims = Some(data.claims);
                    break;
                }
                Err(e) => {
                    last = match e.kind() {
                        ErrorKind::InvalidAudience => TokenError::Audience,
                        ErrorKind::MissingRequiredClaim(c) if c == "aud" => TokenError::Audience,
                        ErrorKind::InvalidSignature => TokenError::BadSignature,
                        ErrorKind::InvalidToken
                        | ErrorKind::Base64(_)
                        | ErrorKind::Json(_)
                        | ErrorKind::Utf8(_) => TokenError::Malformed,
                        _ => TokenError::BadSignature,
                    };
                    // A wrong audience is wrong under every key.
                    if last == TokenError::Audience {
                        return Err(last);
                    }
                }
            }
        }
        let claims = claims.ok_or(last)?;
        let skew = self.cfg.clock_skew.as_secs();
        let exp = claims.exp.ok_or(TokenError::Claim("exp"))?;
        if now > exp.saturating_add(skew) {
            return Err(TokenError::Expired);
        }
        if claims.nbf.is_some_and(|nbf| now.saturating_add(skew) < nbf) {
            return Err(TokenError::NotYetValid);
        }
        if claims.iat.is_some_and(|iat| now.saturating_add(skew) < iat) {
            return Err(TokenError::NotYetValid);
        }
        let lifetime = exp.saturating_sub(claims.iat.unwrap_or(now));
        if lifetime > self.cfg.max_lifetime.as_secs() {
            return Err(TokenError::Lifetime);
        }
        let agent = claims
            .sub
            .filter(|s| !s.is_empty())
            .ok_or(TokenError::Claim("sub"))?;
        let group = match claims.rest.get(&self.cfg.group_claim) {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(g)) => Some(g.clone()),
            Some(_) => return Err(TokenError::Claim("group")),
        };
        Ok(TokenIdentity { agent, group })
    }

    /// Verify `token` now.
    ///
    /// # Errors
    /// Why the token is refused.
    pub fn verify(&self, token: &str) -> Result<TokenIdentity, TokenError> {
        self.verify_at(token, unix_now())
    }
}

/// The token of an `Authorization` header value, `Bearer <token>` with the scheme in any case
/// (RFC 7235 §2.1); `None` for another scheme or no token. Shared by DoH, the admin API and
/// the review API.
#[must_use]
pub fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Seconds since the Unix epoch, from the system clock.
#[must_use]
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What `dnsward token issue` puts in a token.
#[derive(Debug, Clone)]
pub struct IssueRequest<'a> {
    /// `sub`.
    pub agent: &'a str,
    /// The group claim (`group`), if any.
    pub group: Option<&'a str>,
    /// `aud`.
    pub audience: &'a str,
    /// Lifetime: `exp = iat + ttl`.
    pub ttl: Duration,
    /// `iat`, seconds since the Unix epoch.
    pub issued_at: u64,
}

/// Why a token could not be issued.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// The key file cannot be read.
    #[error("{0}: cannot read: {1}")]
    Read(PathBuf, std::io::Error),
    /// The key is not a usable private key.
    #[error("{0}: not an Ed25519 or P-256 private key in PKCS#8 PEM")]
    Key(PathBuf),
    /// Signing failed.
    #[error("signing: {0}")]
    Sign(String),
}

/// Sign a token with the private key in `key_file` (Ed25519 → EdDSA, P-256 → ES256).
///
/// # Errors
/// An unreadable or unusable key.
pub fn issue(key_file: &Path, req: &IssueRequest<'_>) -> Result<String, IssueError> {
    let pem = std::fs::read(key_file).map_err(|e| IssueError::Read(key_file.to_path_buf(), e))?;
    let (alg, key) = if let Ok(k) = EncodingKey::from_ed_pem(&pem) {
        (Algorithm::EdDSA, k)
    } else if let Ok(k) = EncodingKey::from_ec_pem(&pem) {
        (Algorithm::ES256, k)
    } else {
        return Err(IssueError::Key(key_file.to_path_buf()));
    };
    let mut claims = serde_json::json!({
        "sub": req.agent,
        "aud": req.audience,
        "iat": req.issued_at,
        "exp": req.issued_at.saturating_add(req.ttl.as_secs()),
    });
    if let Some(g) = req.group {
        claims["group"] = serde_json::Value::String(g.to_string());
    }
    jsonwebtoken::encode(&Header::new(alg), &claims, &key)
        .map_err(|e| IssueError::Sign(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Keys {
        dir: tempfile::TempDir,
    }

    fn keys() -> Keys {
        let dir = tempfile::tempdir().unwrap();
        for (name, alg) in [
            ("ed", &rcgen::PKCS_ED25519),
            ("ec", &rcgen::PKCS_ECDSA_P256_SHA256),
        ] {
            let k = rcgen::KeyPair::generate_for(alg).unwrap();
            std::fs::write(dir.path().join(format!("{name}.key")), k.serialize_pem()).unwrap();
            std::fs::write(dir.path().join(format!("{name}.pub")), k.public_key_pem()).unwrap();
        }
        Keys { dir }
    }

    fn cfg(keys: &[&str]) -> TokenConfig {
        let mut c: TokenConfig = toml::from_str("").unwrap();
        c.keys = keys.iter().map(PathBuf::from).collect();
        c
    }

    fn token(k: &Keys, key: &str, iat: u64, ttl: u64, aud: &str) -> String {
        issue(
            &k.dir.path().join(key),
            &IssueRequest {
                agent: "spiffe://t/agents/a",
                group: Some("build"),
                audience: aud,
                ttl: Duration::from_secs(ttl),
                issued_at: iat,
            },
        )
        .unwrap()
    }

    #[test]
    fn ed25519_and_es256_tokens_verify_with_exp_skew_and_lifetime() {
        let k = keys();
        let v = TokenVerifier::load(&cfg(&["ed.pub", "ec.pub"]), k.dir.path(), "t").unwrap();
        let now = 1_800_000_000;
        for key in ["ed.key", "ec.key"] {
            let t = token(&k, key, now, 900, "dnsward");
            let id = v.verify_at(&t, now + 10).unwrap();
            assert_eq!(id.agent, "spiffe://t/agents/a");
            assert_eq!(id.group.as_deref(), Some("build"));
            // Within the skew after exp: still fine; beyond: expired.
            assert!(v.verify_at(&t, now + 900 + 29).is_ok());
            assert_eq!(v.verify_at(&t, now + 900 + 31), Err(TokenError::Expired));
            // Issued in the future (beyond the skew).
            assert_eq!(v.verify_at(&t, now - 60), Err(TokenError::NotYetValid));
        }
        let long = token(&k, "ed.key", now, 3601, "dnsward");
        assert_eq!(v.verify_at(&long, now), Err(TokenError::Lifetime));
        let aud = token(&k, "ed.key", now, 60, "other");
        assert_eq!(v.verify_at(&aud, now), Err(TokenError::Audience));
        assert_eq!(v.verify_at("not.a.jwt", now), Err(TokenError::Malformed));
    }

    #[test]
    fn a_key_not_configured_is_a_bad_signature_and_bad_key_files_are_reported() {
        let k = keys();
        let only_ed = TokenVerifier::load(&cfg(&["ed.pub"]), k.dir.path(), "t").unwrap();
        let now = 1_800_000_000;
        let es = token(&k, "ec.key", now, 60, "dnsward");
        assert!(only_ed.verify_at(&es, now).is_err());
        // Forge: an Ed25519 token from a key that is not ours.
        let other = keys();
        let forged = token(&other, "ed.key", now, 60, "dnsward");
        assert_eq!(
            only_ed.verify_at(&forged, now),
            Err(TokenError::BadSignature)
        );

        let err = TokenVerifier::load(&cfg(&["ed.key", "missing.pub"]), k.dir.path(), "t")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("t.keys[0]") && err.contains("t.keys[1]"),
            "{err}"
        );
    }

    /// A JWKS holding the Ed25519 public keys of `dirs` (each `ed.pub`), with key ids.
    fn ed_jwks(dirs: &[&Keys]) -> String {
        use base64::Engine;
        let keys: Vec<serde_json::Value> = dirs
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let pem = std::fs::read_to_string(k.dir.path().join("ed.pub")).unwrap();
                let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
                let der = base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .unwrap();
                // The SubjectPublicKeyInfo ends with the 32-byte raw key.
                let x =
                    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&der[der.len() - 32..]);
                serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": x, "kid": format!("k{i}")})
            })
            .collect();
        serde_json::json!({ "keys": keys }).to_string()
    }

    #[test]
    fn a_reload_takes_the_rotated_jwks_and_keeps_the_running_keys_when_it_is_broken() {
        let (old, new) = (keys(), keys());
        let jwks = old.dir.path().join("jwks.json");
        std::fs::write(&jwks, ed_jwks(&[&old])).unwrap();
        let mut c = cfg(&[]);
        c.jwks = Some(PathBuf::from("jwks.json"));
        let v = TokenVerifier::load(&c, old.dir.path(), "tls.tokens").unwrap();
        let now = 1_800_000_000;
        let (by_old, by_new) = (
            token(&old, "ed.key", now, 60, "dnsward"),
            token(&new, "ed.key", now, 60, "dnsward"),
        );
        assert!(v.verify_at(&by_old, now).is_ok());
        assert_eq!(v.verify_at(&by_new, now), Err(TokenError::BadSignature));

        // The issuer rotates: the new key only.
        std::fs::write(&jwks, ed_jwks(&[&new])).unwrap();
        v.reload().unwrap();
        assert!(v.verify_at(&by_new, now).is_ok());
        assert_eq!(v.verify_at(&by_old, now), Err(TokenError::BadSignature));

        // Broken rewrites: each is reported under the key and the running keys stay.
        for (what, text) in [
            ("empty", r#"{"keys": []}"#),
            ("not JSON", "{\"keys\": ["),
            (
                "an RSA key",
                r#"{"keys": [{"kty": "RSA", "n": "AQAB", "e": "AQAB"}]}"#,
            ),
        ] {
            std::fs::write(&jwks, text).unwrap();
            let err = v.reload().unwrap_err().to_string();
            assert!(err.contains("tls.tokens"), "{what}: {err}");
            assert!(v.verify_at(&by_new, now).is_ok(), "{what}");
            assert_eq!(v.key_count(), 1, "{what}");
        }
        std::fs::remove_file(&jwks).unwrap();
        assert!(v.reload().unwrap_err().to_string().contains("jwks.json"));
        assert!(v.verify_at(&by_new, now).is_ok());

        // At start an empty JWKS is an error, not a server that refuses every token.
        std::fs::write(&jwks, r#"{"keys": []}"#).unwrap();
        let err = TokenVerifier::load(&c, old.dir.path(), "tls.tokens")
            .unwrap_err()
            .to_string();
        assert!(err.contains("no usable key"), "{err}");
    }
}
