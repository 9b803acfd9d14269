//! End to end: the real `dnsward` binary, a real config file on disk, real `dig` queries over
//! loopback sockets, and the event file it leaves behind.
//!
//! This is the operator's view of dnsward, so it goes through the same doors an operator does:
//! `dnsward serve --config FILE`, `dnsward check --config FILE`, SIGTERM to stop. The server
//! listens on `127.0.0.1:0`; the bound ports are read back from the `dnsward serving` line it
//! logs (`common::Dnsward`). The tests that query need `dig` (`bind9-dnsutils`, installed by `.ci/run`)
//! and are skipped with a message when it is missing (under `CI=true` they fail instead). Every
//! socket is on loopback, and the configured upstream is a socket this test holds open and never
//! answers from, so nothing leaves the machine. There are no timing assertions: deadlines only
//! stop a hung test.

mod common;

use common::{DNSWARD, Dnsward};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// What `dig` printed, split into the parts the tests look at.
#[derive(Debug)]
struct DigAnswer {
    status: String,
    flags: Vec<String>,
    /// Answer-section records as (name, type, data).
    answers: Vec<(String, String, String)>,
    raw: String,
}

impl DigAnswer {
    fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }

    /// Data of the answer records of type `rtype`, sorted.
    fn data(&self, rtype: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .answers
            .iter()
            .filter(|(_, t, _)| t == rtype)
            .map(|(_, _, d)| d.clone())
            .collect();
        v.sort();
        v
    }
}

fn parse_dig(raw: String) -> DigAnswer {
    let mut status = String::new();
    let mut flags = Vec::new();
    let mut answers = Vec::new();
    let mut in_answer = false;
    for line in raw.lines() {
        if let Some(i) = line.find("status: ") {
            let rest = &line[i + "status: ".len()..];
            status = rest
                .split(',')
                .next()
                .unwrap_or_default()
                .trim()
                .to_string();
        } else if let Some(rest) = line.strip_prefix(";; flags: ") {
            flags = rest
                .split(';')
                .next()
                .unwrap_or_default()
                .split_whitespace()
                .map(str::to_string)
                .collect();
        } else if line.starts_with(";; ANSWER SECTION:") {
            in_answer = true;
        } else if in_answer {
            if line.trim().is_empty() || line.starts_with(";;") {
                in_answer = false;
                continue;
            }
            // name TTL class type data...
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() >= 5 {
                answers.push((
                    fields[0].to_string(),
                    fields[3].to_string(),
                    fields[4..].join(" "),
                ));
            }
        }
    }
    DigAnswer {
        status,
        flags,
        answers,
        raw,
    }
}

/// Run `dig @addr name type` with extra options (`-b SRC`, `+tcp`) and parse the result.
fn dig(server: SocketAddr, name: &str, rtype: &str, extra: &[&str]) -> DigAnswer {
    let out = Command::new("dig")
        .arg(format!("@{}", server.ip()))
        .args(["-p", &server.port().to_string()])
        .args(extra)
        .args([name, rtype, "+time=3", "+tries=2", "+nosearch"])
        .stdin(Stdio::null())
        .output()
        .expect("running dig");
    let raw = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "dig {name} {rtype} {extra:?} failed ({}):\n{raw}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    parse_dig(raw)
}

/// The example configuration (config/dnsward.toml) made self-contained for a test: port 0, no
/// admin endpoint, the repo's zones by absolute path, events to a file, every query logged, and
/// a silent loopback upstream.
fn e2e_config(dir: &Path, upstream: SocketAddr) -> (PathBuf, PathBuf) {
    let events = dir.join("events.jsonl");
    let zones = repo_path("zones");
    let text = format!(
        r#"
[server]
listen = ["127.0.0.1:0"]
unknown_clients = "refuse"
threads = 2
udp_workers = 2

[admin]
listen = ""

[upstream]
timeout = "1s"
servers = [{{ address = "{upstream}", protocol = "udp", timeout = "1s" }}]

[zones]
dir = {zones:?}

[events]
sink = "file"
path = {events:?}
allowed = "on"

[[groups]]
name = "agents"
cidrs = ["127.0.0.1/32"]
mode = "allowlist"
allow = ["*.corp.internal", "corp.internal"]
deny = ["secrets.corp.internal"]
block = "nxdomain"
block_ttl = "60s"

[[groups]]
name = "build-agents"
cidrs = ["127.0.0.20/32"]
allow = ["git.corp.internal", "pypi-mirror.corp.internal", "npm-mirror.corp.internal"]
block = "sinkhole"
sinkhole_ipv4 = "0.0.0.0"
sinkhole_ipv6 = "::"
block_ttl = "30s"
"#
    );
    let path = dir.join("dnsward.toml");
    std::fs::write(&path, text).expect("writing the test config");
    (path, events)
}

fn query_events(path: &Path) -> Vec<Value> {
    common::read_events(path)
        .into_iter()
        .filter(|e| e["kind"] == "query")
        .collect()
}

fn find_event<'a>(events: &'a [Value], client: &str, qname: &str) -> &'a Value {
    events
        .iter()
        .find(|e| e["client"] == client && e["qname"] == qname)
        .unwrap_or_else(|| {
            panic!("no query event for {client} {qname}; events:\n{events:#?}");
        })
}

#[test]
fn serves_zones_and_policy_to_dig_and_logs_events() {
    if !common::tools_runnable(
        "serves_zones_and_policy_to_dig_and_logs_events",
        &["dig"],
        "-v",
        "bind9-dnsutils",
    ) {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    // A loopback upstream that never answers: anything forwarded stays on this machine.
    let silent_upstream = UdpSocket::bind("127.0.0.1:0").expect("binding the silent upstream");
    let (config, events_path) = e2e_config(dir.path(), silent_upstream.local_addr().unwrap());
    let server = Dnsward::serve(
        Command::new(DNSWARD),
        &config,
        dir.path().join("dnsward.log"),
    );
    let agent = ["-b", "127.0.0.1"];

    // An allowlisted name in the local zone: authoritative, both A records of the zone file.
    let a = dig(server.udp, "api.corp.internal", "A", &agent);
    assert_eq!(a.status, "NOERROR", "{}", a.raw);
    assert!(
        a.has_flag("aa"),
        "local-zone answers are authoritative:\n{}",
        a.raw
    );
    assert_eq!(a.data("A"), ["10.0.1.10", "10.0.1.11"], "{}", a.raw);

    // A wildcard in the zone file.
    let w = dig(server.udp, "sandbox-7.apps.corp.internal", "A", &agent);
    assert_eq!(w.status, "NOERROR", "{}", w.raw);
    assert_eq!(w.data("A"), ["10.0.3.1"], "{}", w.raw);

    // An allowed name the zone does not have: authoritative NXDOMAIN, not a forward.
    let missing = dig(server.udp, "nope.corp.internal", "A", &agent);
    assert_eq!(missing.status, "NXDOMAIN", "{}", missing.raw);
    assert!(missing.has_flag("aa"), "{}", missing.raw);

    // Not on the allowlist: blocked with NXDOMAIN (the group's block answer).
    let blocked = dig(server.udp, "www.example.com", "A", &agent);
    assert_eq!(blocked.status, "NXDOMAIN", "{}", blocked.raw);
    assert!(blocked.answers.is_empty(), "{}", blocked.raw);

    // Deny wins over a matching allow rule.
    let denied = dig(server.udp, "secrets.corp.internal", "A", &agent);
    assert_eq!(denied.status, "NXDOMAIN", "{}", denied.raw);
    assert!(
        !denied.has_flag("aa"),
        "a policy block is not the zone's answer:\n{}",
        denied.raw
    );

    // A source address in no group: REFUSED, whatever it asks.
    let stranger = dig(server.udp, "api.corp.internal", "A", &["-b", "127.0.0.99"]);
    assert_eq!(stranger.status, "REFUSED", "{}", stranger.raw);
    assert!(stranger.answers.is_empty(), "{}", stranger.raw);

    // The same over TCP.
    let tcp = dig(
        server.tcp,
        "api.corp.internal",
        "A",
        &["-b", "127.0.0.1", "+tcp"],
    );
    assert_eq!(tcp.status, "NOERROR", "{}", tcp.raw);
    assert!(
        tcp.raw.contains("(TCP)"),
        "dig did not use TCP:\n{}",
        tcp.raw
    );
    assert_eq!(tcp.data("A"), ["10.0.1.10", "10.0.1.11"], "{}", tcp.raw);
    let tcp_refused = dig(
        server.tcp,
        "api.corp.internal",
        "A",
        &["-b", "127.0.0.99", "+tcp"],
    );
    assert_eq!(tcp_refused.status, "REFUSED", "{}", tcp_refused.raw);

    // The second group: its own allowlist, and sinkhole answers for everything else.
    let build = ["-b", "127.0.0.20"];
    let git = dig(server.udp, "git.corp.internal", "A", &build);
    assert_eq!(git.status, "NOERROR", "{}", git.raw);
    assert_eq!(git.data("A"), ["192.0.2.30"], "{}", git.raw);
    let sink4 = dig(server.udp, "api.corp.internal", "A", &build);
    assert_eq!(sink4.status, "NOERROR", "{}", sink4.raw);
    assert_eq!(sink4.data("A"), ["0.0.0.0"], "{}", sink4.raw);
    let sink6 = dig(server.udp, "api.corp.internal", "AAAA", &build);
    assert_eq!(sink6.status, "NOERROR", "{}", sink6.raw);
    assert_eq!(sink6.data("AAAA"), ["::"], "{}", sink6.raw);

    // Graceful stop flushes the event file.
    server.stop();
    let events = query_events(&events_path);

    let e = find_event(&events, "127.0.0.1", "www.example.com");
    assert_eq!(e["verdict"], "block", "{e}");
    assert_eq!(e["group"], "agents", "{e}");
    assert_eq!(e["rcode"], "NXDOMAIN", "{e}");
    assert_eq!(e["qtype"], "A", "{e}");
    assert_eq!(e["protocol"], "udp", "{e}");

    let e = find_event(&events, "127.0.0.99", "api.corp.internal");
    assert_eq!(e["verdict"], "refuse", "{e}");
    assert_eq!(e["reason"], "unknown client", "{e}");
    assert!(e["group"].is_null(), "{e}");
    assert_eq!(e["rcode"], "REFUSED", "{e}");

    let e = find_event(&events, "127.0.0.20", "api.corp.internal");
    assert_eq!(e["verdict"], "sinkhole", "{e}");
    assert_eq!(e["group"], "build-agents", "{e}");

    // allowed = "on": allowed queries are in the log too, attributed to the zone.
    let e = find_event(&events, "127.0.0.1", "api.corp.internal");
    assert_eq!(e["verdict"], "allow", "{e}");
    assert_eq!(e["upstream"], "zone:corp.internal", "{e}");
    assert!(
        events.iter().any(|e| e["client"] == "127.0.0.1"
            && e["qname"] == "api.corp.internal"
            && e["protocol"] == "tcp"),
        "no event for the TCP query; events:\n{events:#?}"
    );
}

#[test]
fn check_reports_every_problem_in_a_broken_config_at_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let broken = dir.path().join("broken.toml");
    // Syntactically valid TOML with several independent mistakes, so every section's
    // validation gets to run and report.
    std::fs::write(
        &broken,
        r#"
[server]
listen = ["127.0.0.1:notaport"]
tcp_max_connections = 0

[admin]
listen = ""

[upstream]
servers = [{ address = "not-an-address" }]

[zones]
dir = "does-not-exist"

[events]
sink = "file"

[[groups]]
name = "agents"
cidrs = ["10.0.0.0/33"]
allow = ["*.corp.internal"]
block = "nxdomain"

[[groups]]
name = "ag\u0000ents"
cidrs = ["10.1.0.0/16"]
allow = ["*.corp.internal"]

[[upstream.forward]]
zone = "lab.example"
servers = [{ address = "127.0.0.1:0" }]
"#,
    )
    .unwrap();
    let out = Command::new(DNSWARD)
        .arg("check")
        .arg("--config")
        .arg(&broken)
        .stdin(Stdio::null())
        .output()
        .expect("running dnsward check");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "check accepted a broken config:\n{stderr}"
    );
    let problems: Vec<&str> = stderr
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("- "))
        .collect();
    let locations: std::collections::BTreeSet<&str> = problems
        .iter()
        .filter_map(|p| p.split(':').next())
        .collect();
    assert!(
        locations.len() >= 3,
        "expected at least 3 distinct problems reported at once, got:\n{stderr}"
    );
    for expected in [
        "server.listen[0]",
        "server.tcp_max_connections",
        "events.path",
        "groups[0].cidrs[0]",
        "groups[1].name",
    ] {
        assert!(
            locations.contains(expected),
            "no problem reported at {expected}:\n{stderr}"
        );
    }
    assert!(stderr.contains("control character U+0000"), "{stderr}");
    assert!(stderr.contains("port 0 is no server's port"), "{stderr}");
}

#[test]
fn check_names_colliding_listeners_a_thread_count_and_a_zone_ttl_that_serve_would_trip_on() {
    // Review D7: each of these passed `check`; `serve` then failed ("address already in use"),
    // or would have started 100,000 threads, or the TTL read as "record type string unknown".
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("x.internal.zone"),
        "$ORIGIN x.internal.\n@ 99999999999 IN SOA ns1 host 1 2 3 4 5\n",
    )
    .unwrap();
    let config = dir.path().join("dnsward.toml");
    std::fs::write(
        &config,
        r#"
[server]
listen = ["127.0.0.70:5391", "127.0.0.70:5391", "0.0.0.0:5392"]
threads = 100000

[admin]
listen = "127.0.0.1:5392"

[upstream]
servers = [{ address = "127.0.0.1:5399" }]

[zones]
files = [{ path = "x.internal.zone" }]

[[groups]]
name = "agents"
cidrs = ["127.0.0.0/8"]
allow = ["*.x.internal"]
"#,
    )
    .unwrap();
    let out = Command::new(DNSWARD)
        .args(["check", "--config"])
        .arg(&config)
        .stdin(Stdio::null())
        .output()
        .expect("running dnsward check");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    for expected in [
        "server.listen[1]: 127.0.0.70:5391 is listed twice (also server.listen[0])",
        "admin.listen: 127.0.0.1:5392 collides with server.listen[2] (0.0.0.0:5392)",
        "server.threads: 100000 is more than 1024",
        "x.internal.zone:2: bad record: TTL 99999999999 is too large: at most 2147483647 seconds",
    ] {
        assert!(stderr.contains(expected), "no {expected:?} in:\n{stderr}");
    }
    assert!(!stderr.contains("record type string unknown"), "{stderr}");
}

/// Started from a shell whose soft open-file limit is low (1,024 is the usual default), the
/// server raises it to the hard limit: its connection bounds alone need more.
#[test]
fn serve_raises_its_open_file_soft_limit_to_the_hard_limit() {
    if !common::tools_runnable(
        "serve_raises_its_open_file_soft_limit_to_the_hard_limit",
        &["prlimit"],
        "--version",
        "util-linux",
    ) {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let silent_upstream = UdpSocket::bind("127.0.0.1:0").expect("binding the silent upstream");
    let (config, _) = e2e_config(dir.path(), silent_upstream.local_addr().unwrap());
    let mut cmd = Command::new("prlimit");
    cmd.arg("--nofile=512:8192").arg(DNSWARD);
    let server = Dnsward::serve(cmd, &config, dir.path().join("dnsward.log"));
    let log = server.log();
    let line = log
        .lines()
        .find(|l| l.contains("open-file limit raised"))
        .unwrap_or_else(|| panic!("no limit line in:\n{log}"));
    assert!(
        line.contains("before=512") && line.contains("after=8192"),
        "{line}"
    );
}

#[test]
fn check_accepts_the_shipped_example_config() {
    let path = repo_path("config/dnsward.toml");
    let out = Command::new(DNSWARD)
        .arg("check")
        .arg("--config")
        .arg(&path)
        .stdin(Stdio::null())
        .output()
        .expect("running dnsward check");
    assert!(
        out.status.success(),
        "dnsward check {} failed:\n{}{}",
        path.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("OK"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// `POST` `body` to `path` on the admin endpoint with `token`, over a plain socket (HTTP/1.1,
/// one request, connection closed): the status and the JSON body.
fn admin_post(admin: SocketAddr, token: &str, path: &str, body: &str) -> (u16, Value) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(admin).expect("connecting to the admin endpoint");
    s.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {admin}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let status = raw
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {raw:?}"));
    let json = raw
        .split_once("\r\n\r\n")
        .and_then(|(_, b)| serde_json::from_str(b).ok())
        .unwrap_or(Value::Null);
    (status, json)
}

/// Started as the README starts it (`--config dnsward.toml`, relative, from the config's
/// directory, with relative paths inside), a reload of the unchanged file changes nothing and
/// warns of nothing: the server reads the file by the same absolute name both times.
#[test]
fn a_reload_of_an_unchanged_config_started_by_a_relative_path_warns_of_nothing() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (config, _) = e2e_config(dir.path(), silent.local_addr().unwrap());
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace(
            "[admin]\nlisten = \"\"",
            "[admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"admin.token\"",
        )
        .replace(
            &format!("path = {:?}", dir.path().join("events.jsonl")),
            "path = \"events.jsonl\"",
        );
    assert!(text.contains("token_file = \"admin.token\""));
    assert!(text.contains("path = \"events.jsonl\""));
    std::fs::write(&config, text).unwrap();
    let token = "0123456789abcdef0123456789abcdef";
    let token_file = dir.path().join("admin.token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();

    let mut cmd = Command::new(DNSWARD);
    cmd.current_dir(dir.path());
    let server = Dnsward::serve(cmd, Path::new("dnsward.toml"), dir.path().join("log"));
    let admin = server.admin.expect("an admin endpoint");
    let (status, body) = admin_post(
        admin,
        token,
        "/api/v1/policy/reload",
        r#"{"actor": "ops", "message": "unchanged"}"#,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["warnings"], serde_json::json!([]), "{body}");
    server.stop();
}
