//! End to end with real clients: the shipped example (`config/examples/make-pki.sh` minting a
//! PKI with openssl, `config/examples/encrypted.toml`) served by the real `dnsward` binary and
//! queried with `kdig` over DoT and DoH (client certificates) and `curl` with a bearer token
//! from `dnsward token issue`.
//!
//! Needs `kdig` (knot-dnsutils), `openssl` and `curl`: under `CI=true` a missing tool fails the
//! test, elsewhere it is skipped with a message. Ports are 0 (read back from the server's log),
//! every socket is on loopback.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::ChildGuard;

const BIN: &str = env!("CARGO_BIN_EXE_dnsward");

fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn tools_available(test: &str) -> bool {
    for tool in ["kdig", "openssl", "curl"] {
        let ok = Command::new(tool).arg("--version").output().is_ok()
            || Command::new(tool).arg("version").output().is_ok();
        if !ok {
            assert!(
                std::env::var_os("CI").is_none_or(|v| v != "true"),
                "{test}: `{tool}` is not runnable although CI=true; .ci/run installs it"
            );
            eprintln!(
                "SKIPPED {test}: `{tool}` is not runnable (apt: knot-dnsutils, openssl, curl)"
            );
            return false;
        }
    }
    true
}

/// The first address in `key=[a, b]` of a log line.
fn first_addr(log: &str, key: &str) -> String {
    let start = log
        .find(&format!("{key}=["))
        .unwrap_or_else(|| panic!("no {key} in {log}"))
        + key.len()
        + 2;
    let rest = &log[start..];
    rest[..rest.find(']').unwrap()]
        .split(", ")
        .next()
        .unwrap()
        .to_string()
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn kdig(pki: &Path, port: &str, who: Option<&str>, extra: &[&str], name: &str) -> (bool, String) {
    let mut cmd = Command::new("kdig");
    cmd.arg("@127.0.0.1")
        .args(["-p", port])
        .arg(format!("+tls-ca={}", pki.join("ca.crt").display()))
        .arg("+tls-hostname=localhost")
        .args(["+retry=0", "+timeout=5"]);
    if let Some(w) = who {
        cmd.arg(format!(
            "+tls-certfile={}",
            pki.join(format!("{w}.crt")).display()
        ))
        .arg(format!(
            "+tls-keyfile={}",
            pki.join(format!("{w}.key")).display()
        ));
    }
    cmd.args(extra).arg(name).arg("A");
    run(&mut cmd)
}

#[test]
fn kdig_and_curl_against_the_shipped_encrypted_example() {
    let test = "kdig_and_curl_against_the_shipped_encrypted_example";
    if !tools_available(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    let (ok, out) = run(Command::new(repo_path("config/examples/make-pki.sh")).arg(&pki));
    assert!(ok, "make-pki.sh failed:\n{out}");
    for f in [
        "ca.crt",
        "server.crt",
        "server.key",
        "build.crt",
        "build.key",
        "research.crt",
        "research.key",
    ] {
        assert!(pki.join(f).exists(), "make-pki.sh did not write {f}");
    }

    // The shipped example, on port 0 and with its files in the temp dir.
    let example = std::fs::read_to_string(repo_path("config/examples/encrypted.toml")).unwrap();
    let events = dir.path().join("events.jsonl");
    let config = example
        .replace("127.0.0.1:8853", "127.0.0.1:0")
        .replace("127.0.0.1:8443", "127.0.0.1:0")
        .replace("127.0.0.1:5354", "127.0.0.1:0")
        .replace("127.0.0.1:9154", "127.0.0.1:0")
        .replace("\"pki/", &format!("\"{}/", pki.display()))
        .replace(
            "\"../../zones\"",
            &format!("\"{}\"", repo_path("zones").display()),
        )
        .replace(
            "\"events-encrypted.jsonl\"",
            &format!("\"{}\"", events.display()),
        );
    let config_path = dir.path().join("encrypted.toml");
    std::fs::write(&config_path, &config).unwrap();

    let mut server = ChildGuard::spawn(
        "dnsward",
        Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&config_path)
            .env("DNSWARD_LOG", "info")
            .env("NO_COLOR", "1"),
        dir.path().join("dnsward.log"),
    );
    let log = server.wait_for_log("dnsward serving", Duration::from_secs(60));
    let dot = first_addr(&log, "dot");
    let doh = first_addr(&log, "doh");
    let dot_port = dot.rsplit(':').next().unwrap().to_string();
    let doh_port = doh.rsplit(':').next().unwrap().to_string();

    // DoT with the build agent's certificate: its own allowlist.
    let (ok, out) = kdig(
        &pki,
        &dot_port,
        Some("build"),
        &["+short"],
        "git.corp.internal",
    );
    assert!(ok && out.trim() == "192.0.2.30", "{out}");
    let (_, out) = kdig(&pki, &dot_port, Some("build"), &[], "models.corp.internal");
    assert!(out.contains("status: NXDOMAIN"), "{out}");
    // The research agent, same address, another group.
    let (ok, out) = kdig(
        &pki,
        &dot_port,
        Some("research"),
        &["+short"],
        "models.corp.internal",
    );
    assert!(ok && out.trim() == "10.0.2.20", "{out}");
    // DoH (HTTP/2) with a certificate.
    let (ok, out) = kdig(
        &pki,
        &doh_port,
        Some("research"),
        &["+https=/dns-query", "+short"],
        "api.corp.internal",
    );
    assert!(
        ok && out.contains("10.0.1.10") && out.contains("10.0.1.11"),
        "{out}"
    );
    // No certificate: refused at the handshake.
    let (_, out) = kdig(&pki, &dot_port, None, &[], "git.corp.internal");
    assert!(!out.contains("status: NOERROR"), "{out}");

    // curl with a bearer token (DoH GET).
    let (ok, token) = run(Command::new(BIN)
        .args(["token", "issue", "--key"])
        .arg(pki.join("token.key"))
        .args([
            "--agent",
            "spiffe://example.test/agents/research/2",
            "--group",
            "research",
            "--ttl",
            "15m",
        ]));
    assert!(ok, "{token}");
    // models.corp.internal A, ID 0, base64url without padding.
    let q = "AAABAAABAAAAAAAABm1vZGVscwRjb3JwCGludGVybmFsAAABAAE";
    let body = dir.path().join("answer.bin");
    let (ok, status) = run(Command::new("curl")
        .args(["-s", "--cacert"])
        .arg(pki.join("ca.crt"))
        .args(["-H", &format!("Authorization: Bearer {}", token.trim())])
        .args(["-o"])
        .arg(&body)
        .args(["-w", "%{http_code} %{content_type}"])
        .arg(format!("https://{doh}/dns-query?dns={q}")));
    assert!(ok && status == "200 application/dns-message", "{status}");
    let answer = std::fs::read(&body).unwrap();
    assert!(answer.ends_with(&[10, 0, 2, 20]), "{answer:?}");

    let (status, log) = server.terminate();
    assert!(status.success(), "{log}");
    let events = std::fs::read_to_string(&events).unwrap();
    let events: Vec<serde_json::Value> = events
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let refused: Vec<_> = events
        .iter()
        .filter(|e| e["kind"] == "auth_refused")
        .collect();
    assert!(
        refused
            .iter()
            .any(|e| e["reason"] == "missing client certificate"),
        "{refused:?}"
    );
    assert!(events.iter().any(|e| e["kind"] == "query"
        && e["agent"] == "spiffe://example.test/agents/research/2"
        && e["auth"] == "token"
        && e["protocol"] == "doh"));
    assert!(events.iter().any(|e| e["kind"] == "query"
        && e["agent"] == "spiffe://example.test/agents/build/1"
        && e["auth"] == "mtls"
        && e["protocol"] == "dot"));
}
