//! Agent identity end to end: DoT and DoH with client certificates (made here with rcgen),
//! refusals at the handshake with events, per-agent groups and containment, bearer tokens, and
//! `require_auth` for plain UDP.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use dnsward::identity::token::{IssueRequest, issue, unix_now};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevokedCertParams, SanType, SerialNumber, date_time_ymd,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;
use tokio_rustls::TlsConnector;

use crate::harness::*;

const BUILD: &str = "spiffe://example.test/agents/build/1";
const RESEARCH: &str = "spiffe://example.test/agents/research/1";

/// Certificates and keys written to a temp dir, as PEM files.
pub(crate) struct Pki {
    dir: tempfile::TempDir,
    /// The CA, to re-issue the CRL.
    ca: Issuer<'static, KeyPair>,
}

impl Pki {
    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        let ours = ca_params("dnsward test CA");
        let ca_key = KeyPair::generate().unwrap();
        write("ca.crt", &ours.self_signed(&ca_key).unwrap().pem());
        let ca = Issuer::new(ours, ca_key);
        let other_params = ca_params("someone else's CA");
        let other_key = KeyPair::generate().unwrap();
        // Not a client CA here; a test that federates with it configures it.
        write(
            "other-ca.crt",
            &other_params.self_signed(&other_key).unwrap().pem(),
        );
        let other = Issuer::new(other_params, other_key);

        let mut server = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        server
            .subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_key = KeyPair::generate().unwrap();
        write(
            "server.crt",
            &server.signed_by(&server_key, &ca).unwrap().pem(),
        );
        write("server.key", &server_key.serialize_pem());

        let client =
            |name: &str, id: &str, serial: u8, expired: bool, issuer: &Issuer<'_, KeyPair>| {
                let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
                p.subject_alt_names = vec![SanType::URI(id.try_into().unwrap())];
                p.distinguished_name.push(DnType::CommonName, name);
                p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
                p.serial_number = Some(SerialNumber::from_slice(&[serial]));
                if expired {
                    p.not_before = date_time_ymd(2020, 1, 1);
                    p.not_after = date_time_ymd(2021, 1, 1);
                }
                let key = KeyPair::generate().unwrap();
                write(
                    &format!("{name}.crt"),
                    &p.signed_by(&key, issuer).unwrap().pem(),
                );
                write(&format!("{name}.key"), &key.serialize_pem());
            };
        client("build", BUILD, 1, false, &ca);
        client("research", RESEARCH, 2, false, &ca);
        client(
            "expired",
            "spiffe://example.test/agents/build/2",
            3,
            true,
            &ca,
        );
        client(
            "revoked",
            "spiffe://example.test/agents/build/3",
            4,
            false,
            &ca,
        );
        client(
            "foreign",
            "spiffe://example.test/agents/build/4",
            5,
            false,
            &other,
        );
        // The other CA's own trust domain.
        client(
            "partner",
            "spiffe://partner.test/agents/build/7",
            6,
            false,
            &other,
        );

        // Token signing keys: ours (configured) and a stranger's.
        for name in ["token", "stranger"] {
            let k = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
            write(&format!("{name}.key"), &k.serialize_pem());
            write(&format!("{name}.pub"), &k.public_key_pem());
        }
        let pki = Self { dir, ca };
        pki.revoke(&[4]);
        pki
    }

    /// (Re)write ca.crl revoking these serials.
    fn revoke(&self, serials: &[u8]) {
        let crl = CertificateRevocationListParams {
            this_update: date_time_ymd(2025, 1, 1),
            next_update: date_time_ymd(2099, 1, 1),
            crl_number: SerialNumber::from_slice(&[serials.len() as u8]),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|s| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&[*s]),
                    revocation_time: date_time_ymd(2025, 6, 1),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        std::fs::write(
            self.path("ca.crl"),
            crl.signed_by(&self.ca).unwrap().pem().unwrap(),
        )
        .unwrap();
    }

    fn config(&self, extra_groups: &str) -> String {
        format!(
            r#"
[tls]
client_cas = ["{ca}"]
crls = ["{crl}"]
idle_timeout = "5s"
[[tls.dot]]
listen = "127.0.0.1:0"
cert = "{cert}"
key = "{key}"
[[tls.doh]]
listen = "127.0.0.1:0"
cert = "{cert}"
key = "{key}"
[tls.tokens]
keys = ["{token}"]
max_lifetime = "1h"
clock_skew = "5s"
[[groups]]
name = "build"
identities = ["spiffe://example.test/agents/build/*"]
allow = ["api.corp.internal", "*.tunnel.corp.internal", "*.elsewhere.internal"]
[groups.detect]
alert = 15
throttle = 20
sinkhole = 20
quarantine = 20
[[groups]]
name = "research"
identities = ["spiffe://example.test/agents/research/*"]
allow = ["models.corp.internal"]
{extra_groups}
"#,
            ca = self.path("ca.crt").display(),
            crl = self.path("ca.crl").display(),
            cert = self.path("server.crt").display(),
            key = self.path("server.key").display(),
            token = self.path("token.pub").display(),
        )
    }

    /// A client TLS configuration trusting our CA, with `who`'s certificate (or none).
    pub(crate) fn client(&self, who: Option<&str>, alpn: &[&[u8]]) -> TlsConnector {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(self.path("ca.crt")).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let b = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let mut cfg = match who {
            Some(name) => {
                use rustls::pki_types::pem::PemObject;
                let chain: Vec<CertificateDer<'static>> =
                    CertificateDer::pem_file_iter(self.path(&format!("{name}.crt")))
                        .unwrap()
                        .map(Result::unwrap)
                        .collect();
                let key = PrivateKeyDer::from_pem_file(self.path(&format!("{name}.key"))).unwrap();
                b.with_client_auth_cert(chain, key).unwrap()
            }
            None => b.with_no_client_auth(),
        };
        cfg.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
        TlsConnector::from(Arc::new(cfg))
    }

    fn token(
        &self,
        key: &str,
        agent: &str,
        group: Option<&str>,
        aud: &str,
        iat: u64,
        ttl: u64,
    ) -> String {
        issue(
            &self.path(&format!("{key}.key")),
            &IssueRequest {
                agent,
                group,
                audience: aud,
                ttl: Duration::from_secs(ttl),
                issued_at: iat,
            },
        )
        .unwrap()
    }
}

use rustls::pki_types::pem::PemObject;

fn ca_params(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, cn);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p
}

pub(crate) async fn tls_connect(
    connector: &TlsConnector,
    server: SocketAddr,
    src: &str,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let sock = TcpSocket::new_v4()?;
    sock.bind(SocketAddr::new(src.parse::<IpAddr>().unwrap(), 0))?;
    let tcp = sock.connect(server).await?;
    let name = ServerName::IpAddress(server.ip().into());
    connector.connect(name, tcp).await
}

/// One DoT query from `src` with `who`'s certificate; `None` when the server refused or
/// closed without answering.
pub(crate) async fn dot_query(
    pki: &Pki,
    who: Option<&str>,
    server: SocketAddr,
    src: &str,
    qname: &str,
) -> Option<Message> {
    let q = query_packet(qname, RecordType::A, false);
    let answer = dot_raw(pki, who, server, src, &q).await?;
    Message::from_vec(&answer).ok()
}

/// [`dot_query`] for a packet given byte by byte; the raw answer.
async fn dot_raw(
    pki: &Pki,
    who: Option<&str>,
    server: SocketAddr,
    src: &str,
    packet: &[u8],
) -> Option<Vec<u8>> {
    let mut tls = tls_connect(&pki.client(who, &[]), server, src).await.ok()?;
    let mut framed = (packet.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(packet);
    tls.write_all(&framed).await.ok()?;
    let read = async {
        let len = tls.read_u16().await.ok()?;
        let mut buf = vec![0; usize::from(len)];
        tls.read_exact(&mut buf).await.ok()?;
        Some(buf)
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .ok()?
}

/// What a client with `who`'s certificate is told when it connects and asks once: the
/// handshake's or the first read's error.
async fn refusal(pki: &Pki, who: Option<&str>, server: SocketAddr, src: &str) -> String {
    let mut tls = match tls_connect(&pki.client(who, &[]), server, src).await {
        Ok(tls) => tls,
        Err(e) => return e.to_string(),
    };
    let q = query_packet("api.corp.internal", RecordType::A, false);
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&q);
    if let Err(e) = tls.write_all(&framed).await {
        return e.to_string();
    }
    let mut buf = [0u8; 2];
    match tokio::time::timeout(Duration::from_secs(5), tls.read_exact(&mut buf)).await {
        Ok(Ok(_)) => "answered".into(),
        Ok(Err(e)) => e.to_string(),
        Err(_) => "nothing in 5 s".into(),
    }
}

/// One DoH request (HTTP/2 when `h2`, else HTTP/1.1): returns the HTTP status and the DNS
/// answer, if any.
async fn doh_request(
    pki: &Pki,
    who: Option<&str>,
    server: SocketAddr,
    qname: &str,
    bearer: Option<&str>,
    h2: bool,
    get: bool,
) -> (u16, Option<Message>) {
    let q = query_packet(qname, RecordType::A, false);
    let (status, answer) = doh_raw(pki, who, server, q, bearer, h2, get).await;
    (status, answer.map(|a| Message::from_vec(&a).unwrap()))
}

/// [`doh_request`] for a packet given byte by byte; the raw answer.
async fn doh_raw(
    pki: &Pki,
    who: Option<&str>,
    server: SocketAddr,
    q: Vec<u8>,
    bearer: Option<&str>,
    h2: bool,
    get: bool,
) -> (u16, Option<Vec<u8>>) {
    let alpn: &[&[u8]] = if h2 { &[b"h2"] } else { &[b"http/1.1"] };
    let Ok(tls) = tls_connect(&pki.client(who, alpn), server, "127.0.0.1").await else {
        return (0, None);
    };
    let mut req = if get {
        use base64::Engine as _;
        let dns = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&q);
        hyper::Request::get(format!(
            "https://127.0.0.1:{}/dns-query?dns={dns}",
            server.port()
        ))
        .body(Full::new(Bytes::new()))
        .unwrap()
    } else {
        hyper::Request::post(format!("https://127.0.0.1:{}/dns-query", server.port()))
            .header("content-type", "application/dns-message")
            .body(Full::new(Bytes::from(q)))
            .unwrap()
    };
    req.headers_mut().insert(
        "host",
        format!("127.0.0.1:{}", server.port()).parse().unwrap(),
    );
    if let Some(t) = bearer {
        req.headers_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    let io = TokioIo::new(tls);
    let resp = if h2 {
        let Ok((mut send, conn)) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await
        else {
            return (0, None);
        };
        tokio::spawn(conn);
        send.send_request(req).await
    } else {
        let Ok((mut send, conn)) = hyper::client::conn::http1::handshake(io).await else {
            return (0, None);
        };
        tokio::spawn(conn);
        send.send_request(req).await
    };
    let Ok(resp) = resp else {
        return (0, None);
    };
    let status = resp.status().as_u16();
    let is_dns = resp
        .headers()
        .get("content-type")
        .is_some_and(|v| v == "application/dns-message");
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, is_dns.then(|| body.to_vec()))
}

fn rcode(m: &Option<Message>) -> Option<ResponseCode> {
    m.as_ref().map(|m| m.metadata.response_code)
}

async fn start(
    pki: &Pki,
    extra_groups: &str,
    containment: &str,
) -> (TestServer, SocketAddr, SocketAddr) {
    let s = TestServer::start(
        None,
        &format!("{containment}\n{}", pki.config(extra_groups)),
    )
    .await;
    let tls = &s.app.as_ref().unwrap().tls;
    let (dot, doh) = (tls.dot_addrs[0], tls.doh_addrs[0]);
    (s, dot, doh)
}

fn events_of<'a>(events: &'a [serde_json::Value], kind: &str) -> Vec<&'a serde_json::Value> {
    events.iter().filter(|e| e["kind"] == kind).collect()
}

#[tokio::test]
async fn dot_and_doh_answer_each_agent_with_its_own_group_from_one_address() {
    let pki = Pki::new();
    let (mut s, dot, doh) = start(&pki, "", "").await;

    // Same source address, different SPIFFE IDs, different allowlists.
    let b = dot_query(&pki, Some("build"), dot, "127.0.0.1", "api.corp.internal").await;
    assert_eq!(rcode(&b), Some(ResponseCode::NoError));
    assert_eq!(a_records(b.as_ref().unwrap()).len(), 2, "{b:?}");
    let b = dot_query(
        &pki,
        Some("build"),
        dot,
        "127.0.0.1",
        "models.corp.internal",
    )
    .await;
    assert_eq!(rcode(&b), Some(ResponseCode::NXDomain));
    let r = dot_query(
        &pki,
        Some("research"),
        dot,
        "127.0.0.1",
        "models.corp.internal",
    )
    .await;
    assert_eq!(rcode(&r), Some(ResponseCode::NoError));
    let r = dot_query(
        &pki,
        Some("research"),
        dot,
        "127.0.0.1",
        "api.corp.internal",
    )
    .await;
    assert_eq!(rcode(&r), Some(ResponseCode::NXDomain));

    // DoH: HTTP/2 POST and HTTP/1.1 GET with the certificate.
    let (st, m) = doh_request(
        &pki,
        Some("build"),
        doh,
        "api.corp.internal",
        None,
        true,
        false,
    )
    .await;
    assert_eq!((st, rcode(&m)), (200, Some(ResponseCode::NoError)));
    let (st, m) = doh_request(
        &pki,
        Some("research"),
        doh,
        "models.corp.internal",
        None,
        false,
        true,
    )
    .await;
    assert_eq!((st, rcode(&m)), (200, Some(ResponseCode::NoError)));
    let (st, m) = doh_request(
        &pki,
        Some("research"),
        doh,
        "api.corp.internal",
        None,
        true,
        true,
    )
    .await;
    assert_eq!((st, rcode(&m)), (200, Some(ResponseCode::NXDomain)));

    let events = s.stop_and_read_events().await;
    let queries = events_of(&events, "query");
    let by = |agent: &str, proto: &str| {
        queries
            .iter()
            .filter(|e| e["agent"] == agent && e["protocol"] == proto && e["auth"] == "mtls")
            .count()
    };
    assert_eq!(by(BUILD, "dot"), 2, "{queries:#?}");
    assert_eq!(by(RESEARCH, "dot"), 2);
    assert_eq!(by(BUILD, "doh"), 1);
    assert_eq!(by(RESEARCH, "doh"), 2);
    assert!(queries.iter().all(|e| e["client"] == "127.0.0.1"));
    assert!(
        queries
            .iter()
            .filter(|e| e["agent"] == RESEARCH)
            .all(|e| e["group"] == "research")
    );
}

#[tokio::test]
async fn bad_client_certificates_are_refused_at_the_handshake_with_events() {
    let pki = Pki::new();
    let (mut s, dot, _doh) = start(&pki, "", "").await;
    for who in [Some("expired"), Some("revoked"), Some("foreign"), None] {
        let m = dot_query(&pki, who, dot, "127.0.0.1", "api.corp.internal").await;
        assert!(m.is_none(), "{who:?} was answered: {m:?}");
    }
    // Each is told why by a TLS alert, not left with a bare close.
    for (who, alert) in [
        (Some("expired"), "CertificateExpired"),
        (Some("revoked"), "CertificateRevoked"),
        (Some("foreign"), "UnknownCA"),
        (None, "CertificateRequired"),
    ] {
        let said = refusal(&pki, who, dot, "127.0.0.1").await;
        assert!(
            said.contains("alert") && said.contains(alert),
            "{who:?} was told {said:?}, not {alert}"
        );
    }
    // A good one still works.
    let m = dot_query(&pki, Some("build"), dot, "127.0.0.1", "api.corp.internal").await;
    assert_eq!(rcode(&m), Some(ResponseCode::NoError));

    let events = s.stop_and_read_events().await;
    let refused: Vec<String> = events_of(&events, "auth_refused")
        .iter()
        .map(|e| {
            assert_eq!(e["protocol"], "dot");
            assert_eq!(e["auth"], "mtls");
            assert_eq!(e["client"], "127.0.0.1");
            e["reason"].as_str().unwrap().to_string()
        })
        .collect();
    for reason in [
        "client certificate expired",
        "client certificate revoked",
        "client certificate from an unknown CA",
        "missing client certificate",
    ] {
        assert!(
            refused.iter().any(|r| r == reason),
            "no {reason:?} in {refused:?}"
        );
    }
    // None of the refused clients got a query through.
    assert!(
        events_of(&events, "query")
            .iter()
            .all(|e| e["agent"] == BUILD)
    );
}

/// After the handshake, a TLS record that cannot be decrypted is written on the raw socket;
/// what the client then reads: the server's fatal alert, or how the connection ended.
async fn told_after_a_bad_record(pki: &Pki, server: SocketAddr, alpn: &[&[u8]]) -> String {
    let mut tls = tls_connect(&pki.client(Some("build"), alpn), server, "127.0.0.1")
        .await
        .expect("handshake");
    // Application data, 32 bytes that are no AEAD ciphertext of this session.
    let mut junk = vec![0x17, 0x03, 0x03, 0x00, 0x20];
    junk.extend_from_slice(&[0x5a; 32]);
    tls.get_mut().0.write_all(&junk).await.unwrap();
    let mut buf = [0u8; 4096];
    let read_all = async {
        loop {
            match tls.read(&mut buf).await {
                Ok(0) => return "closed without an alert".to_string(),
                Ok(_) => {} // HTTP/2 SETTINGS and the like
                Err(e) => return e.to_string(),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read_all)
        .await
        .unwrap_or_else(|_| "nothing in 5 s".into())
}

#[tokio::test]
async fn a_bad_tls_record_is_answered_with_an_alert_over_dot_and_doh() {
    let pki = Pki::new();
    let (_s, dot, doh) = start(&pki, "", "").await;
    for (server, alpn, what) in [
        (dot, &[][..], "DoT"),
        (doh, &[b"h2".as_slice()][..], "DoH over HTTP/2"),
        (doh, &[b"http/1.1".as_slice()][..], "DoH over HTTP/1.1"),
    ] {
        let said = told_after_a_bad_record(&pki, server, alpn).await;
        assert!(
            said.contains("alert") && said.contains("BadRecordMac"),
            "{what}: the client was told {said:?}"
        );
    }
}

#[tokio::test]
async fn quarantining_one_agent_leaves_its_neighbour_answering_and_follows_it_across_addresses() {
    let pki = Pki::new();
    let (mut s, dot, _doh) = start(&pki, "", "").await;
    // The build agent tunnels through its own allowed zone until detection quarantines it.
    let mut quarantined_after = None;
    for i in 0..300 {
        let label = format!(
            "{:x}{:x}",
            0x9e37_79b9_7f4a_7c15u64.wrapping_mul(i + 1),
            i * 7919
        );
        let m = dot_query(
            &pki,
            Some("build"),
            dot,
            "127.0.0.1",
            &format!("{label}.tunnel.corp.internal"),
        )
        .await;
        // A name under another registrable domain: only a whole-agent quarantine refuses it
        // (the tunnelled domain's own throttle does not).
        let probe = dot_query(
            &pki,
            Some("build"),
            dot,
            "127.0.0.1",
            "probe.elsewhere.internal",
        )
        .await;
        assert!(m.is_some());
        if rcode(&probe) == Some(ResponseCode::Refused) {
            quarantined_after = Some(i);
            break;
        }
    }
    assert!(
        quarantined_after.is_some(),
        "the tunnelling agent was never quarantined"
    );
    // Its neighbour on the same address is unaffected.
    let r = dot_query(
        &pki,
        Some("research"),
        dot,
        "127.0.0.1",
        "models.corp.internal",
    )
    .await;
    assert_eq!(rcode(&r), Some(ResponseCode::NoError));
    // Moving address does not escape the quarantine.
    let moved = dot_query(
        &pki,
        Some("build"),
        dot,
        "127.0.0.2",
        "probe.elsewhere.internal",
    )
    .await;
    assert_eq!(rcode(&moved), Some(ResponseCode::Refused));

    // The admin API lists the agent and releases it by identity.
    let admin = s.admin.unwrap();
    let http = reqwest::Client::new();
    let list: serde_json::Value = http
        .get(format!("http://{admin}/api/v1/quarantines"))
        .bearer_auth(&s.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|c| c["agent"] == BUILD && c["action"] == "quarantine"),
        "{list}"
    );
    let resp = http
        .post(format!("http://{admin}/api/v1/quarantines/release"))
        .bearer_auth(&s.token)
        .json(&serde_json::json!({"client": BUILD, "actor": "alice", "reason": "test"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    // Released: answered again (SERVFAIL: no upstream is configured for elsewhere.internal).
    let b = dot_query(
        &pki,
        Some("build"),
        dot,
        "127.0.0.1",
        "probe.elsewhere.internal",
    )
    .await;
    assert_eq!(rcode(&b), Some(ResponseCode::ServFail));

    let events = s.stop_and_read_events().await;
    assert!(
        events_of(&events, "query")
            .iter()
            .any(|e| e["agent"] == BUILD
                && e["client"] == "127.0.0.2"
                && e["verdict"] == "quarantine"),
        "no quarantine verdict for the moved agent"
    );
    let started = events_of(&events, "containment_started");
    assert!(
        started
            .iter()
            .any(|e| e["agent"] == BUILD && e["action"] == "quarantine"),
        "{started:#?}"
    );
    assert!(started.iter().all(|e| e["agent"] == BUILD));
    assert!(
        events_of(&events, "alert")
            .iter()
            .all(|e| e["agent"] == BUILD)
    );
}

#[tokio::test]
async fn doh_bearer_tokens_are_verified() {
    let pki = Pki::new();
    let (mut s, _dot, doh) = start(&pki, "", "").await;
    let now = unix_now();
    let agent = "spiffe://example.test/agents/research/9";
    let good = pki.token("token", agent, Some("research"), "dnsward", now, 900);
    let (st, m) = doh_request(
        &pki,
        None,
        doh,
        "models.corp.internal",
        Some(&good),
        true,
        false,
    )
    .await;
    assert_eq!((st, rcode(&m)), (200, Some(ResponseCode::NoError)));
    // Without a group claim the subject's identity pattern picks the group.
    let build = pki.token(
        "token",
        "spiffe://example.test/agents/build/9",
        None,
        "dnsward",
        now,
        900,
    );
    let (st, m) = doh_request(
        &pki,
        None,
        doh,
        "api.corp.internal",
        Some(&build),
        false,
        true,
    )
    .await;
    assert_eq!((st, rcode(&m)), (200, Some(ResponseCode::NoError)));

    let cases = [
        (
            "expired",
            pki.token("token", agent, None, "dnsward", now - 7200, 1800),
            "token expired",
        ),
        (
            "bad signature",
            pki.token("stranger", agent, None, "dnsward", now, 900),
            "token signature invalid",
        ),
        (
            "wrong aud",
            pki.token("token", agent, None, "someone-else", now, 900),
            "token audience wrong",
        ),
        (
            "too long",
            pki.token("token", agent, None, "dnsward", now, 7200),
            "token lifetime over the maximum",
        ),
    ];
    for (what, token, _) in &cases {
        let (st, m) = doh_request(
            &pki,
            None,
            doh,
            "models.corp.internal",
            Some(token),
            true,
            false,
        )
        .await;
        assert_eq!(st, 401, "{what}");
        assert!(m.is_none(), "{what}");
    }
    let events = s.stop_and_read_events().await;
    let refused: Vec<&str> = events_of(&events, "auth_refused")
        .iter()
        .filter(|e| e["auth"] == "token" && e["protocol"] == "doh")
        .map(|e| e["reason"].as_str().unwrap())
        .collect();
    for (what, _, reason) in &cases {
        assert!(
            refused.contains(reason),
            "{what}: no {reason:?} in {refused:?}"
        );
    }
    let queries = events_of(&events, "query");
    assert!(
        queries
            .iter()
            .any(|e| e["agent"] == agent && e["auth"] == "token" && e["group"] == "research")
    );
    assert!(
        queries
            .iter()
            .any(|e| e["agent"] == "spiffe://example.test/agents/build/9" && e["group"] == "build")
    );
}

#[tokio::test]
async fn require_auth_refuses_plain_udp_from_a_member_address_and_per_agent_rate_limits() {
    let pki = Pki::new();
    let local = r#"
[[groups]]
name = "local"
cidrs = ["127.0.0.0/8"]
require_auth = true
allow = ["*.corp.internal"]
"#;
    let (mut s, dot, _doh) = start(
        &pki,
        local,
        "[containment]\nrate_limit = { qps = 1, burst = 3 }\n",
    )
    .await;
    let m = udp_query(s.udp, "127.0.0.7", "api.corp.internal", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    let m = tcp_query(s.tcp, "127.0.0.7", "api.corp.internal", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);

    // Rate limits are per agent: the build agent exhausts its burst, research on the same
    // address still answers.
    let mut limited = false;
    for _ in 0..10 {
        let b = dot_query(&pki, Some("build"), dot, "127.0.0.1", "api.corp.internal").await;
        if rcode(&b) == Some(ResponseCode::Refused) {
            limited = true;
            break;
        }
    }
    assert!(limited, "the build agent was never rate limited");
    let r = dot_query(
        &pki,
        Some("research"),
        dot,
        "127.0.0.1",
        "models.corp.internal",
    )
    .await;
    assert_eq!(rcode(&r), Some(ResponseCode::NoError));

    let events = s.stop_and_read_events().await;
    let refused: Vec<_> = events_of(&events, "query")
        .into_iter()
        .filter(|e| e["reason"] == "group requires authentication")
        .collect();
    assert_eq!(refused.len(), 2, "{refused:#?}");
    assert!(
        refused
            .iter()
            .all(|e| e["group"] == "local" && e["auth"] == "none" && e["agent"].is_null())
    );
    assert!(
        events_of(&events, "query")
            .iter()
            .any(|e| e["agent"] == BUILD && e["verdict"] == "throttle")
    );
}

/// Send `names` back to back on one DoT connection (pipelined), then read every answer; the
/// answers are returned by query name, whatever order they came in.
async fn dot_pipelined(
    tls: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    names: &[&str],
) -> Option<Vec<(String, ResponseCode)>> {
    let mut out = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let mut q = query_packet(name, RecordType::A, false);
        q[0..2].copy_from_slice(&(i as u16 + 100).to_be_bytes());
        out.extend_from_slice(&(q.len() as u16).to_be_bytes());
        out.extend_from_slice(&q);
    }
    tls.write_all(&out).await.ok()?;
    let mut answers = Vec::new();
    for _ in names {
        let read = async {
            let len = tls.read_u16().await.ok()?;
            let mut buf = vec![0; usize::from(len)];
            tls.read_exact(&mut buf).await.ok()?;
            Message::from_vec(&buf).ok()
        };
        let m = tokio::time::timeout(Duration::from_secs(5), read)
            .await
            .ok()??;
        let i = usize::from(m.metadata.id).checked_sub(100)?;
        answers.push((names.get(i)?.to_string(), m.metadata.response_code));
    }
    answers.sort_by(|a, b| a.0.cmp(&b.0));
    Some(answers)
}

/// Over DoT as over TCP, a frame that cannot be a query (here `00 00`, then a response) ends
/// the connection at once instead of restarting its idle timer.
#[tokio::test]
async fn a_dot_frame_that_cannot_be_a_query_ends_the_connection() {
    let pki = Pki::new();
    let (_s, dot, _doh) = start(&pki, "", "").await;
    let mut response = query_packet("api.corp.internal", RecordType::A, false);
    response[2] |= 0x80;
    let mut framed_response = (response.len() as u16).to_be_bytes().to_vec();
    framed_response.extend_from_slice(&response);
    for frame in [vec![0u8, 0], framed_response] {
        let mut tls = tls_connect(&pki.client(Some("build"), &[]), dot, "127.0.0.1")
            .await
            .unwrap();
        assert_eq!(
            dot_pipelined(&mut tls, &["api.corp.internal"]).await,
            Some(vec![(
                "api.corp.internal".to_string(),
                ResponseCode::NoError
            )])
        );
        tls.write_all(&frame).await.unwrap();
        let mut buf = [0u8; 64];
        // The listener's idle timeout is 5 s.
        let n = tokio::time::timeout(Duration::from_secs(2), tls.read(&mut buf)).await;
        assert!(
            matches!(n, Ok(Ok(0) | Err(_))),
            "closed well before the idle timeout: {n:?}"
        );
    }
}

/// Two client CAs (a partner's SPIRE federated with ours): without `[tls.trust_domains]` the
/// partner's CA could issue our trust domain's IDs and be taken for our build agents; with
/// it, each trust domain is vouched for by its own bundle only.
#[tokio::test]
async fn each_trust_domain_is_vouched_for_by_its_own_bundle_only() {
    let pki = Pki::new();
    let ca = pki.path("ca.crt").display().to_string();
    let other = pki.path("other-ca.crt").display().to_string();
    let partner_group = r#"
[[groups]]
name = "partner"
identities = ["spiffe://partner.test/agents/*"]
allow = ["git.corp.internal"]
"#;
    let both_cas = pki.config(partner_group).replace(
        &format!("client_cas = [\"{ca}\"]"),
        &format!("client_cas = [\"{ca}\", \"{other}\"]"),
    );
    // Any client CA for any ID: the partner's CA speaks for our build agent.
    let mut s = TestServer::start(None, &both_cas).await;
    let dot = s.app.as_ref().unwrap().tls.dot_addrs[0];
    let m = dot_query(&pki, Some("foreign"), dot, "127.0.0.1", "api.corp.internal").await;
    assert_eq!(
        rcode(&m),
        Some(ResponseCode::NoError),
        "the gap this closes"
    );
    s.stop_and_read_events().await;

    let bound = pki.config(partner_group).replace(
        &format!("client_cas = [\"{ca}\"]"),
        &format!(
            "client_cas = []\n[tls.trust_domains]\n\"example.test\" = [\"{ca}\"]\n\"partner.test\" = [\"{other}\"]"
        ),
    );
    // The table ends [tls]: the keys after it in the section move above it.
    let bound = move_tls_keys_above_tables(&bound);
    let mut s = TestServer::start(None, &bound).await;
    let dot = s.app.as_ref().unwrap().tls.dot_addrs[0];
    let m = dot_query(&pki, Some("foreign"), dot, "127.0.0.1", "api.corp.internal").await;
    assert!(
        m.is_none(),
        "the partner's CA no longer speaks for example.test: {m:?}"
    );
    let m = dot_query(&pki, Some("partner"), dot, "127.0.0.1", "git.corp.internal").await;
    assert_eq!(
        rcode(&m),
        Some(ResponseCode::NoError),
        "its own domain's IDs: {m:?}"
    );
    let m = dot_query(&pki, Some("build"), dot, "127.0.0.1", "api.corp.internal").await;
    assert_eq!(rcode(&m), Some(ResponseCode::NoError), "ours: {m:?}");
    let events = s.stop_and_read_events().await;
    let reasons: Vec<&str> = events_of(&events, "auth_refused")
        .iter()
        .filter_map(|e| e["reason"].as_str())
        .collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("trust domain \"example.test\" is not vouched for")),
        "{reasons:?}"
    );
}

/// `[tls]` keys that follow a `[tls.trust_domains]` table inserted in the middle of the
/// section would belong to the table: move them above it.
fn move_tls_keys_above_tables(config: &str) -> String {
    let mut out = Vec::new();
    let mut table = Vec::new();
    let mut in_table = false;
    for line in config.lines() {
        if line.starts_with("[tls.trust_domains]") {
            in_table = true;
            table.push(line.to_string());
            continue;
        }
        if in_table && line.starts_with('[') {
            in_table = false;
            out.append(&mut table);
        }
        if in_table && line.starts_with('"') {
            table.push(line.to_string());
        } else {
            out.push(line.to_string());
        }
    }
    out.append(&mut table);
    out.join("\n")
}

#[tokio::test]
async fn a_reload_takes_rotated_token_keys_and_keeps_them_when_the_new_file_is_broken() {
    let pki = Pki::new();
    let (mut s, _dot, doh) = start(&pki, "", "").await;
    let now = unix_now();
    let agent = "spiffe://example.test/agents/research/9";
    let old = pki.token("token", agent, Some("research"), "dnsward", now, 900);
    let new = pki.token("stranger", agent, Some("research"), "dnsward", now, 900);
    let ask = |token: String| {
        let pki = &pki;
        async move {
            let (st, m) = doh_request(
                pki,
                None,
                doh,
                "models.corp.internal",
                Some(&token),
                true,
                false,
            )
            .await;
            (st, rcode(&m))
        }
    };
    assert_eq!(ask(old.clone()).await, (200, Some(ResponseCode::NoError)));
    assert_eq!(ask(new.clone()).await.0, 401);

    // The issuer rotates its key: the configured file now holds the new public key, and a
    // reload (SIGHUP or the API's) takes it, with no restart.
    std::fs::copy(pki.path("stranger.pub"), pki.path("token.pub")).unwrap();
    let app = s.app.as_ref().unwrap();
    let r = app
        .control
        .reload(Some("test"), Some("issuer key rotated"))
        .await
        .expect("reload");
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    assert_eq!(ask(new.clone()).await, (200, Some(ResponseCode::NoError)));
    assert_eq!(
        ask(old.clone()).await.0,
        401,
        "the retired key no longer verifies"
    );

    // A broken key file: the reload is rejected naming the key (a config that could not
    // start the server is), and the running keys stay.
    std::fs::write(pki.path("token.pub"), "not a key").unwrap();
    let err = app.control.reload(Some("test"), None).await.unwrap_err();
    assert!(err.to_string().contains("tls.tokens.keys[0]"), "{err}");
    assert_eq!(ask(new).await, (200, Some(ResponseCode::NoError)));
    s.stop_and_read_events().await;
}

#[tokio::test]
async fn dot_pipelines_and_a_reload_revokes_new_connections_but_keeps_open_ones() {
    let pki = Pki::new();
    let (mut s, dot, _doh) = start(&pki, "", "").await;
    let mut open = tls_connect(&pki.client(Some("build"), &[]), dot, "127.0.0.1")
        .await
        .unwrap();
    let names = [
        "api.corp.internal",
        "models.corp.internal",
        "git.corp.internal",
    ];
    let expect = |api| {
        vec![
            ("api.corp.internal".to_string(), api),
            ("git.corp.internal".to_string(), ResponseCode::NXDomain),
            ("models.corp.internal".to_string(), ResponseCode::NXDomain),
        ]
    };
    assert_eq!(
        dot_pipelined(&mut open, &names).await,
        Some(expect(ResponseCode::NoError))
    );

    // Revoke the build agent's certificate and reload the way SIGHUP and the admin API do
    // (the policy reload re-reads the TLS files too).
    pki.revoke(&[1, 4]);
    let app = s.app.as_ref().unwrap();
    app.control
        .reload(Some("test"), Some("CRL rotated"))
        .await
        .expect("the reload, TLS files included, succeeds");
    // The open connection is not dropped...
    assert_eq!(
        dot_pipelined(&mut open, &names).await,
        Some(expect(ResponseCode::NoError))
    );
    // ...but a new one with the revoked certificate is refused.
    let m = dot_query(&pki, Some("build"), dot, "127.0.0.1", "api.corp.internal").await;
    assert!(m.is_none(), "{m:?}");

    // A broken file on reload keeps the running configuration.
    std::fs::write(pki.path("ca.crl"), "not a CRL").unwrap();
    assert_eq!(
        app.tls.reload().len(),
        2,
        "both listeners report the broken CRL"
    );
    let r = dot_query(
        &pki,
        Some("research"),
        dot,
        "127.0.0.1",
        "models.corp.internal",
    )
    .await;
    assert_eq!(rcode(&r), Some(ResponseCode::NoError));
    let m = dot_query(&pki, Some("build"), dot, "127.0.0.1", "api.corp.internal").await;
    assert!(m.is_none(), "the revocation stays in force: {m:?}");
    drop(open);

    let events = s.stop_and_read_events().await;
    assert!(
        events_of(&events, "auth_refused")
            .iter()
            .any(|e| e["reason"] == "client certificate revoked")
    );
}

#[tokio::test]
async fn an_edns_version_above_zero_gets_badvers_over_dot_and_doh() {
    use crate::protocol::assert_badvers;
    let pki = Pki::new();
    let (mut s, dot, doh) = start(&pki, "", "").await;
    let api: [&[u8]; 3] = [b"api", b"corp", b"internal"];
    let edns1 = raw_query(&api, 1, [0, 0, 1], &opt_record(b"\x00", 1));

    let r = dot_raw(&pki, Some("build"), dot, "127.0.0.1", &edns1)
        .await
        .expect("a DoT answer");
    assert_badvers(&r, &edns1, "DoT");
    for (get, h2) in [(true, true), (false, false)] {
        let (status, r) = doh_raw(&pki, Some("build"), doh, edns1.clone(), None, h2, get).await;
        assert_eq!(status, 200);
        assert_badvers(&r.expect("a DoH answer"), &edns1, "DoH");
    }
    let events = s.stop_and_read_events().await;
    let queries = events_of(&events, "query");
    let over = |proto: &str, rcode: &str| {
        queries
            .iter()
            .filter(|e| e["protocol"] == proto && e["rcode"] == rcode && e["agent"] == BUILD)
            .count()
    };
    assert_eq!(over("dot", "BADVERS"), 1, "{queries:#?}");
    assert_eq!(over("doh", "BADVERS"), 2);
}

#[tokio::test]
async fn zone_transfers_and_meta_types_are_answered_alike_over_dot_and_doh() {
    use crate::protocol::header_rcode;
    let pki = Pki::new();
    let (mut s, dot, doh) = start(&pki, "", "").await;
    let api: [&[u8]; 3] = [b"api", b"corp", b"internal"];
    let zone: [&[u8]; 2] = [b"corp", b"internal"];
    for (qtype, labels, rcode) in [(252, &zone[..], 5), (251, &zone[..], 5), (253, &api[..], 4)] {
        let p = raw_query(labels, qtype, [0, 0, 0], &[]);
        let r = dot_raw(&pki, Some("build"), dot, "127.0.0.1", &p)
            .await
            .expect("a DoT answer");
        assert_eq!(header_rcode(&r), rcode, "DoT type {qtype}");
        assert_eq!(&r[6..10], &[0, 0, 0, 0], "DoT type {qtype}: no records");
        let (status, r) = doh_raw(&pki, Some("build"), doh, p, None, true, false).await;
        assert_eq!(status, 200);
        let r = r.expect("a DoH answer");
        assert_eq!(header_rcode(&r), rcode, "DoH type {qtype}");
        assert_eq!(&r[6..10], &[0, 0, 0, 0], "DoH type {qtype}: no records");
    }
    let events = s.stop_and_read_events().await;
    let queries = events_of(&events, "query");
    let count = |rcode: &str| {
        queries
            .iter()
            .filter(|e| e["rcode"] == rcode && e["agent"] == BUILD)
            .count()
    };
    assert_eq!(count("REFUSED"), 4, "{queries:#?}");
    assert_eq!(count("NOTIMP"), 2, "{queries:#?}");
}

/// One DoH request with `method` to `path_and_query` (HTTP/2 when `h2`): the status, the
/// response headers and the body; `None` when the exchange itself fails (a reset stream).
async fn doh_method(
    pki: &Pki,
    server: SocketAddr,
    method: &str,
    path_and_query: &str,
    h2: bool,
) -> Option<(u16, hyper::HeaderMap, Bytes)> {
    let alpn: &[&[u8]] = if h2 { &[b"h2"] } else { &[b"http/1.1"] };
    let tls = tls_connect(&pki.client(Some("build"), alpn), server, "127.0.0.1")
        .await
        .ok()?;
    let req = hyper::Request::builder()
        .method(method)
        .uri(format!(
            "https://127.0.0.1:{}{path_and_query}",
            server.port()
        ))
        .header("host", format!("127.0.0.1:{}", server.port()))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let io = TokioIo::new(tls);
    let resp = if h2 {
        let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .ok()?;
        tokio::spawn(conn);
        send.send_request(req).await.ok()?
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.ok()?;
        tokio::spawn(conn);
        send.send_request(req).await.ok()?
    };
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    Some((status, headers, body))
}

#[tokio::test]
async fn doh_answers_head_and_other_methods_with_a_status_and_caches_by_the_smallest_ttl() {
    use base64::Engine as _;
    let pki = Pki::new();
    let (mut s, _dot, doh) = start(&pki, "", "").await;
    let q = query_packet("api.corp.internal", RecordType::A, false);
    let dns = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&q);
    let get = format!("/dns-query?dns={dns}");
    for h2 in [true, false] {
        // HEAD (with or without a query), PUT, DELETE: 405 naming the methods served, and over
        // HTTP/2 a clean stream (a body on a HEAD answer made clients reset it).
        for (method, path) in [
            ("HEAD", get.as_str()),
            ("HEAD", "/dns-query"),
            ("PUT", "/dns-query"),
            ("DELETE", get.as_str()),
        ] {
            let (status, headers, body) = doh_method(&pki, doh, method, path, h2)
                .await
                .unwrap_or_else(|| panic!("{method} {path} (h2 {h2}): the exchange failed"));
            assert_eq!(status, 405, "{method} {path} (h2 {h2})");
            assert_eq!(
                headers.get("allow").map(|v| v.to_str().unwrap()),
                Some("GET, POST"),
                "{method} {path} (h2 {h2})"
            );
            if method == "HEAD" {
                assert!(body.is_empty(), "{method} {path} (h2 {h2}): {body:?}");
            }
        }
        // With curl, a refused request with a body (PUT, a POST of the wrong type) gets its
        // status cleanly: the server reads the body before answering, instead of resetting the
        // HTTP/2 stream after its answer (which curl reported as error 92).
        let body = pki.path("body.bin");
        std::fs::write(&body, vec![b'x'; 30_000]).unwrap();
        let body = format!("@{}", body.display());
        for (args, want) in [
            (&["-X", "PUT", "--data-binary", body.as_str()][..], "405"),
            (
                &[
                    "-X",
                    "POST",
                    "-H",
                    "content-type: text/plain",
                    "--data-binary",
                    body.as_str(),
                ][..],
                "415",
            ),
        ] {
            let mut curl = std::process::Command::new("curl");
            curl.args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "5",
            ])
            .arg(if h2 { "--http2" } else { "--http1.1" })
            .arg("--cacert")
            .arg(pki.path("ca.crt"))
            .arg("--cert")
            .arg(pki.path("build.crt"))
            .arg("--key")
            .arg(pki.path("build.key"))
            .args(args)
            .arg(format!("https://127.0.0.1:{}/dns-query", doh.port()));
            // Off the runtime's thread: the server under test runs on it.
            let out = tokio::task::spawn_blocking(move || curl.output())
                .await
                .unwrap()
                .expect("curl runs (.ci/run installs it)");
            assert_eq!(
                (
                    out.status.code(),
                    String::from_utf8_lossy(&out.stdout).as_ref()
                ),
                (Some(0), want),
                "curl {args:?} (h2 {h2}): {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        // An answer: cacheable by HTTP caches for no longer than its smallest TTL.
        let (status, headers, body) = doh_method(&pki, doh, "GET", &get, h2).await.unwrap();
        assert_eq!(status, 200, "h2 {h2}");
        let answer = Message::from_vec(&body).unwrap();
        let ttl = answer.answers.iter().map(|r| r.ttl).min().unwrap();
        assert_eq!(
            headers.get("cache-control").map(|v| v.to_str().unwrap()),
            Some(format!("private, max-age={ttl}").as_str()),
            "h2 {h2}"
        );
    }
    s.stop_and_read_events().await;
}

/// `packet` (ending with an OPT record without options) with a PADDING option of `len` bytes.
fn with_padding(mut packet: Vec<u8>, len: u16) -> Vec<u8> {
    let at = packet.len() - 2;
    assert_eq!(
        &packet[at..],
        &[0, 0],
        "the OPT record is last and has no options"
    );
    packet[at..].copy_from_slice(&(len + 4).to_be_bytes());
    packet.extend_from_slice(&12u16.to_be_bytes());
    packet.extend_from_slice(&len.to_be_bytes());
    packet.resize(packet.len() + usize::from(len), 0);
    packet
}

#[tokio::test]
async fn padded_queries_over_dot_and_doh_get_answers_padded_to_468_byte_blocks() {
    let pki = Pki::new();
    let plain_group = "[[groups]]\nname = \"plain\"\ncidrs = [\"127.0.0.9/32\"]\nallow = [\"api.corp.internal\"]\n";
    let (mut s, dot, doh) = start(&pki, plain_group, "").await;
    let plain = query_packet("api.corp.internal", RecordType::A, true);
    let padded = with_padding(plain.clone(), 80);
    let check = |what: &str, answer: &[u8], want_padded: bool| {
        let m = Message::from_vec(answer).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{what}");
        assert_eq!(a_records(&m).len(), 2, "{what}");
        let has_padding = m.edns.as_ref().is_some_and(|e| {
            e.options()
                .get(hickory_proto::rr::rdata::opt::EdnsCode::Padding)
                .is_some()
        });
        assert_eq!(has_padding, want_padded, "{what}: {} bytes", answer.len());
        if want_padded {
            assert_eq!(answer.len() % 468, 0, "{what}: {} bytes", answer.len());
        } else {
            assert!(answer.len() < 468, "{what}: {} bytes", answer.len());
        }
    };
    let a = dot_raw(&pki, Some("build"), dot, "127.0.0.1", &padded)
        .await
        .expect("a DoT answer");
    check("DoT, padded query", &a, true);
    let a = dot_raw(&pki, Some("build"), dot, "127.0.0.1", &plain)
        .await
        .expect("a DoT answer");
    check("DoT, query without padding", &a, false);
    for h2 in [true, false] {
        let (status, a) = doh_raw(&pki, Some("build"), doh, padded.clone(), None, h2, false).await;
        assert_eq!(status, 200);
        check(&format!("DoH (h2 {h2}), padded query"), &a.unwrap(), true);
    }
    // In the clear, padding hides nothing: a padded query over UDP gets a plain answer.
    let a = udp_raw(s.udp, "127.0.0.9".parse().unwrap(), &padded)
        .await
        .expect("a UDP answer");
    check("UDP, padded query", &a, false);
    s.stop_and_read_events().await;
}

/// Where a client certificate is an identity, no session is resumed: rustls would restore a
/// resumed session's client chain without checking it again, so a short-lived SVID that
/// expired kept its identity for as long as its client kept resuming. A client that offers
/// resumption (rustls keeps sessions and tickets by default) gets a full handshake each time,
/// TLS 1.3 and 1.2 alike, and is answered each time.
#[tokio::test]
async fn client_certificate_listeners_never_resume_a_session() {
    let pki = Pki::new();
    let (_s, dot, _doh) = start(&pki, "", "").await;
    for versions in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(pki.path("ca.crt")).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(pki.path("build.crt"))
                .unwrap()
                .map(Result::unwrap)
                .collect();
        let key = PrivateKeyDer::from_pem_file(pki.path("build.key")).unwrap();
        let cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[versions])
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .unwrap();
        let connector = TlsConnector::from(Arc::new(cfg));
        for n in 0..3 {
            let mut tls = tls_connect(&connector, dot, "127.0.0.1").await.unwrap();
            let q = query_packet("api.corp.internal", RecordType::A, false);
            let mut framed = (q.len() as u16).to_be_bytes().to_vec();
            framed.extend_from_slice(&q);
            tls.write_all(&framed).await.unwrap();
            let len = tls.read_u16().await.unwrap();
            let mut buf = vec![0; usize::from(len)];
            tls.read_exact(&mut buf).await.unwrap();
            assert_eq!(
                Message::from_vec(&buf).unwrap().metadata.response_code,
                ResponseCode::NoError
            );
            assert_eq!(
                tls.get_ref().1.handshake_kind(),
                Some(rustls::HandshakeKind::Full),
                "{versions:?} connection {n}: a full handshake"
            );
            drop(tls);
        }
    }
}

/// A DoH client that trickles its request a byte every second (the idle watchdog sees bytes,
/// so it never fires) is cut off once the request's head has taken the idle timeout (5 s
/// here): such clients could otherwise hold every connection slot forever.
#[tokio::test]
async fn a_doh_request_trickled_a_byte_at_a_time_is_cut_off() {
    let pki = Pki::new();
    let (_s, _dot, doh) = start(&pki, "", "").await;
    let connector = pki.client(Some("build"), &[b"http/1.1"]);
    let mut tls = tls_connect(&connector, doh, "127.0.0.1").await.unwrap();
    tls.write_all(b"GET /dns-query?dns=").await.unwrap();
    let started = std::time::Instant::now();
    let mut closed_after = None;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if tls.write_all(b"A").await.is_err() || tls.flush().await.is_err() {
            closed_after = Some(started.elapsed());
            break;
        }
        // A closed connection shows on read: EOF or an error (or a 408 then EOF).
        let mut buf = [0u8; 512];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(10), tls.read(&mut buf)).await
        {
            closed_after = Some(started.elapsed());
            let _ = n;
            break;
        }
    }
    let after = closed_after.expect("still open after 20 s of trickling");
    assert!(
        after < Duration::from_secs(12),
        "closed only after {after:?}"
    );
}

/// A POST's media type is compared without its parameters (RFC 9110 §8.3.1):
/// `application/dns-message; charset=utf-8` is a DNS message; `text/plain` is 415.
#[tokio::test]
async fn doh_post_media_type_parameters_are_ignored() {
    let pki = Pki::new();
    let (_s, _dot, doh) = start(&pki, "", "").await;
    for (media, want) in [
        ("application/dns-message; charset=utf-8", 200),
        ("Application/DNS-Message ;x=1", 200),
        ("text/plain", 415),
    ] {
        let tls = tls_connect(&pki.client(Some("build"), &[b"http/1.1"]), doh, "127.0.0.1")
            .await
            .unwrap();
        let req = hyper::Request::post(format!("https://127.0.0.1:{}/dns-query", doh.port()))
            .header("host", format!("127.0.0.1:{}", doh.port()))
            .header("content-type", media)
            .body(Full::new(Bytes::from(query_packet(
                "api.corp.internal",
                RecordType::A,
                false,
            ))))
            .unwrap();
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(conn);
        let resp = send.send_request(req).await.unwrap();
        assert_eq!(resp.status().as_u16(), want, "{media}");
    }
}

/// RFC 7828 over DoT, with kdig: its edns-tcp-keepalive option is answered with the DoT idle
/// timeout (`tls.idle_timeout`, 5 s: 50 units of 100 ms); one with data is FORMERR with our
/// OPT record, as from Unbound. Over DoH the option is ignored either way: HTTP manages the
/// connection there (RFC 8484); Unbound answers it over DoH too.
#[tokio::test]
async fn dot_answers_tcp_keepalive_with_its_idle_timeout_and_doh_ignores_it() {
    use crate::tls_exhaustion::kdig_with;
    let test = "dot_answers_tcp_keepalive_with_its_idle_timeout_and_doh_ignores_it";
    if !crate::common::tools_runnable(test, &["kdig"], "--version", "knot-dnsutils") {
        return;
    }
    let pki = Pki::new();
    let (mut s, dot, doh) = start(&pki, "", "").await;
    let name = "api.corp.internal";
    let ask = |server, extra: &'static [&'static str]| {
        let pki = &pki;
        async move { kdig_with(server, "127.0.0.1", pki, Some("build"), extra, name).await }
    };
    let out = ask(dot, &["+ednsopt=11"]).await;
    assert!(out.contains("status: NOERROR"), "{out}");
    assert!(out.contains(";; Option (11): 0032"), "{out}");
    let out = ask(dot, &[]).await;
    assert!(
        out.contains("status: NOERROR") && !out.contains("Option (11)"),
        "{out}"
    );
    let out = ask(dot, &["+ednsopt=11:0001"]).await;
    assert!(out.contains("status: FORMERR"), "{out}");
    assert!(
        out.contains("EDNS PSEUDOSECTION") && !out.contains("Option (11)"),
        "{out}"
    );
    for extra in [
        &["+https=/dns-query", "+ednsopt=11"][..],
        &["+https=/dns-query", "+ednsopt=11:0001"],
    ] {
        let out = ask(doh, extra).await;
        assert!(out.contains("(status: 200)"), "DoH {extra:?}: {out}");
        assert!(out.contains("status: NOERROR"), "DoH {extra:?}: {out}");
        assert!(!out.contains("Option (11)"), "DoH {extra:?}: {out}");
    }
    let events = s.stop_and_read_events().await;
    let formerr = events_of(&events, "query")
        .into_iter()
        .filter(|e| e["protocol"] == "dot" && e["rcode"] == "FORMERR")
        .count();
    assert_eq!(formerr, 1, "the FORMERR is accounted as any other answer");
}

/// RFC 8484 §5.1 with curl: an error answer (a SERVFAIL: no upstream here) is marked
/// `no-store`, so no HTTP cache keeps serving a passing failure (a 200 without freshness may
/// be cached heuristically); a negative answer is kept no longer than its SOA's MINIMUM; an
/// answer for its smallest TTL.
#[tokio::test]
async fn doh_error_answers_are_not_stored_and_negative_ones_follow_the_soa() {
    use base64::Engine as _;
    let test = "doh_error_answers_are_not_stored_and_negative_ones_follow_the_soa";
    if !crate::common::tools_runnable(test, &["curl"], "--version", "curl") {
        return;
    }
    let pki = Pki::new();
    let (mut s, _dot, doh) = start(&pki, "", "").await;
    for (name, rcode, cache_control) in [
        ("x.elsewhere.internal", ResponseCode::ServFail, "no-store"),
        // Blocked for this group: NXDOMAIN with an SOA of the group's block_ttl (60 s).
        (
            "models.corp.internal",
            ResponseCode::NXDomain,
            "private, max-age=60",
        ),
        // From the zone: NXDOMAIN, SOA MINIMUM 60.
        (
            "gone.tunnel.corp.internal",
            ResponseCode::NXDomain,
            "private, max-age=60",
        ),
        (
            "api.corp.internal",
            ResponseCode::NoError,
            "private, max-age=300",
        ),
    ] {
        let q = query_packet(name, RecordType::A, true);
        let dns = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(q);
        let (headers, body) = (pki.path("headers.txt"), pki.path("body.bin"));
        let mut curl = std::process::Command::new("curl");
        curl.args(["-s", "--max-time", "5", "--http2"])
            .arg("--cacert")
            .arg(pki.path("ca.crt"))
            .arg("--cert")
            .arg(pki.path("build.crt"))
            .arg("--key")
            .arg(pki.path("build.key"))
            .arg("-D")
            .arg(&headers)
            .arg("-o")
            .arg(&body)
            .arg(format!(
                "https://127.0.0.1:{}/dns-query?dns={dns}",
                doh.port()
            ));
        let out = client_output(curl).await;
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let headers = std::fs::read_to_string(&headers)
            .unwrap()
            .to_ascii_lowercase();
        let m = Message::from_vec(&std::fs::read(&body).unwrap()).unwrap();
        assert_eq!(m.metadata.response_code, rcode, "{name}");
        let got: Vec<&str> = headers
            .lines()
            .filter_map(|l| l.strip_prefix("cache-control:"))
            .map(str::trim)
            .collect();
        assert_eq!(got, [cache_control], "{name}: {headers}");
    }
    s.stop_and_read_events().await;
}

/// A DoT connection with a query outstanding is not idle (RFC 7766 §6.2.3): an answer that
/// takes longer than twice the idle timeout (a slow upstream) is still written, as on plain
/// TCP. DoT gave in-flight answers one more idle timeout after reading stopped, then dropped
/// them and closed the connection unanswered.
#[tokio::test]
async fn a_dot_answer_slower_than_the_idle_timeout_is_still_written() {
    let pki = Pki::new();
    let up = FakeUpstream::new()
        .with_a("slow.elsewhere.internal", [192, 0, 2, 9], 60)
        .with_delay(Duration::from_millis(2500))
        .start()
        .await;
    let config = pki.config("").replace(
        "idle_timeout = \"5s\"",
        "idle_timeout = \"1s\"\nhandshake_timeout = \"1s\"",
    );
    let s = TestServer::start_on(
        "127.0.0.1",
        &format!(
            "servers = [{{ address = \"{}\", timeout = \"4s\" }}]\ntimeout = \"4s\"",
            up.addr
        ),
        &config,
        &[],
    )
    .await;
    let dot = s.app.as_ref().unwrap().tls.dot_addrs[0];
    let started = std::time::Instant::now();
    let m = dot_query(
        &pki,
        Some("build"),
        dot,
        "127.0.0.1",
        "slow.elsewhere.internal",
    )
    .await
    .expect("the slow answer is written, not dropped with the connection");
    assert!(started.elapsed() >= Duration::from_millis(2400));
    assert_eq!(a_records(&m), ["192.0.2.9"]);
}
