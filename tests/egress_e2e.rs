//! End to end for DNS-gated egress: a real agent namespace whose only way out is a gateway
//! namespace running dnsward and the ruleset `dnsward egress ruleset` generates.
//!
//! ```text
//!  agent ns                      gw ns                                   internet ns
//!  198.18.1.2 (group agents)  ─┐ 198.18.1.1:53 dnsward (egress on)      198.19.0.10-13:8080
//!  198.18.1.3 (group agents-b)─┴─▶ forward chain: generated ruleset ──▶  socat TCP server
//!                                 127.0.0.53:53 dnsward (zone egress.example, the upstream)
//! ```
//!
//! The gateway's dnsward forwards to a second dnsward serving the zone `egress.example`
//! (TTL 2 s), so answers are cached and the cache-hit path is exercised for real. Every address
//! lives in 198.18.0.0/15 (benchmark range) inside namespaces this test creates and deletes.
//!
//! What is shown, in order:
//! 1. `allowed` resolves → its address is reachable; a hard-coded address is not, and the drop
//!    becomes an `egress_denied` event naming the client, group, destination, port and protocol.
//! 2. After TTL + grace with no new query the element is gone and the connection is refused.
//! 3. Re-resolving reopens it.
//! 4. The other group (its own sets) cannot reach it until it asks; its answer is a *cache hit*
//!    (event `cache_hit: true`), and that hit writes its set before the answer is sent.
//!
//! Timing: the element's timeout is TTL 2 s + grace 1 s + an eighth of slack = 4 s; the test
//! polls the set until the element is gone (bounded by a deadline) rather than sleeping.
//! 5. A CNAME chain's final address is allowed; a denied name's address is not, nor is a CNAME
//!    into it; the Firefox canary is NXDOMAIN.
//!
//! Needs root, `ip netns`, `nft`, `socat`, `dig`. Skipped with a message otherwise; under
//! `CI=true` a missing tool fails the test.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{ChildGuard, Netns, run};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_dnsward");
const STARTUP: Duration = Duration::from_secs(60);

const AGENT_A: &str = "198.18.1.2";
const AGENT_B: &str = "198.18.1.3";
const RESOLVER: &str = "198.18.1.1";
const ALLOWED: &str = "198.19.0.10";
const HARDCODED: &str = "198.19.0.11";
const CHAIN_TARGET: &str = "198.19.0.12";
const DENIED: &str = "198.19.0.13";
const PORT: &str = "8080";

fn preconditions_met(test: &str) -> bool {
    let in_ci = std::env::var_os("CI").is_some_and(|v| v == "true");
    let skip = |why: String| {
        assert!(!in_ci, "{test}: {why} (CI=true: .ci/run must provide it)");
        eprintln!("SKIPPED {test}: {why}");
        false
    };
    let uid = Command::new("id").arg("-u").output().ok();
    if uid.is_none_or(|o| String::from_utf8_lossy(&o.stdout).trim() != "0") {
        return skip("needs root (network namespaces, nftables)".into());
    }
    for (tool, arg) in [
        ("ip", "-V"),
        ("nft", "--version"),
        ("socat", "-V"),
        ("dig", "-v"),
    ] {
        let ok = Command::new(tool)
            .arg(arg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return skip(format!(
                "`{tool}` is not runnable (apt packages iproute2, nftables, socat, dnsutils)"
            ));
        }
    }
    true
}

/// The three namespaces, wired and routed.
struct Topology {
    agent: Netns,
    gw: Netns,
    internet: Netns,
}

impl Topology {
    fn build() -> Self {
        let t = Self {
            agent: Netns::create("agent"),
            gw: Netns::create("gw"),
            internet: Netns::create("inet"),
        };
        let (a, g, i) = (&t.agent, &t.gw, &t.internet);
        g.run(&[
            "ip", "link", "add", "gwa0", "type", "veth", "peer", "name", "ag0", "netns", &a.name,
        ]);
        g.run(&[
            "ip", "link", "add", "gwi0", "type", "veth", "peer", "name", "in0", "netns", &i.name,
        ]);
        g.run(&["ip", "addr", "add", "198.18.1.1/24", "dev", "gwa0"]);
        g.run(&["ip", "addr", "add", "198.18.2.1/24", "dev", "gwi0"]);
        g.run(&["ip", "link", "set", "gwa0", "up"]);
        g.run(&["ip", "link", "set", "gwi0", "up"]);
        g.run(&["ip", "route", "add", "198.19.0.0/24", "via", "198.18.2.2"]);
        g.run(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        for addr in [AGENT_A, AGENT_B] {
            a.run(&["ip", "addr", "add", &format!("{addr}/24"), "dev", "ag0"]);
        }
        a.run(&["ip", "link", "set", "ag0", "up"]);
        a.run(&["ip", "route", "add", "default", "via", RESOLVER]);
        i.run(&["ip", "addr", "add", "198.18.2.2/24", "dev", "in0"]);
        for addr in [ALLOWED, HARDCODED, CHAIN_TARGET, DENIED] {
            i.run(&["ip", "addr", "add", &format!("{addr}/32"), "dev", "in0"]);
        }
        i.run(&["ip", "link", "set", "in0", "up"]);
        i.run(&["ip", "route", "add", "198.18.1.0/24", "via", "198.18.2.1"]);
        t
    }

    /// Resolve `name` from agent address `src` through dnsward; the answer's A records.
    fn dig(&self, src: &str, name: &str) -> (String, Vec<String>) {
        let out = self
            .agent
            .command("dig")
            .args([
                "+tries=1",
                "+time=2",
                "-b",
                src,
                &format!("@{RESOLVER}"),
                name,
                "A",
            ])
            .output()
            .expect("running dig");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let status = text
            .split("status: ")
            .nth(1)
            .and_then(|r| r.split(',').next())
            .unwrap_or("?")
            .to_string();
        let addrs = text
            .lines()
            .filter(|l| !l.starts_with(';'))
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() == 5 && f[3] == "A").then(|| f[4].to_string())
            })
            .collect();
        (status, addrs)
    }

    /// Whether a TCP connection from agent address `src` to `dst` gets the server's greeting.
    fn connects(&self, src: &str, dst: &str) -> bool {
        let out = self
            .agent
            .command("socat")
            .args([
                "-T2",
                "-",
                &format!("TCP:{dst}:{PORT},connect-timeout=1,bind={src}"),
            ])
            .stdin(Stdio::null())
            .output()
            .expect("running socat");
        String::from_utf8_lossy(&out.stdout).contains("hello from the internet")
    }

    /// The addresses now in a set of the gateway's table.
    fn set_elements(&self, set: &str) -> Vec<String> {
        let out = self
            .gw
            .command("nft")
            .args(["-j", "list", "set", "inet", "dnsward", set])
            .output()
            .expect("running nft");
        let doc: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        doc["nftables"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|o| o.get("set"))
            .flat_map(|s| s["elem"].as_array().cloned().unwrap_or_default())
            .filter_map(|e| {
                e.get("elem")
                    .map_or_else(|| e.as_str(), |i| i["val"].as_str())
                    .map(str::to_string)
            })
            .collect()
    }
}

fn events(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Poll `f` until it returns `Some` or the deadline passes.
fn poll<T>(deadline: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let until = Instant::now() + deadline;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > until {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

const ZONE: &str = r"$ORIGIN egress.example.
$TTL 2
@         IN SOA ns.egress.example. hostmaster.egress.example. 1 60 60 600 2
          IN NS  ns
ns        IN A   198.18.2.53
allowed   IN A   198.19.0.10
chain     IN CNAME target
target    IN A   198.19.0.12
denied    IN A   198.19.0.13
badchain  IN CNAME denied
";

fn write_configs(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    std::fs::create_dir_all(dir.join("zones")).unwrap();
    std::fs::write(dir.join("zones/egress.example.zone"), ZONE).unwrap();
    let upstream = dir.join("upstream.toml");
    std::fs::write(
        &upstream,
        r#"
[server]
listen = ["127.0.0.53:53"]
[admin]
listen = "127.0.0.1:0"
[zones]
dir = "zones"
[events]
sink = "none"
[detect]
enabled = false
[[groups]]
name = "gateway"
cidrs = ["127.0.0.0/8"]
allow = ["*.egress.example"]
"#,
    )
    .unwrap();
    let events = dir.join("events.jsonl");
    let main = dir.join("dnsward.toml");
    std::fs::write(
        &main,
        format!(
            r#"
[server]
listen = ["{RESOLVER}:53"]
[admin]
listen = "127.0.0.1:0"
[upstream]
servers = [{{ address = "127.0.0.53:53", protocol = "udp", timeout = "1s" }}]
[events]
sink = "file"
path = {events:?}
allowed = "on"
[detect]
enabled = false
[egress]
backend = "nftables"
grace = "1s"
min_lifetime = "1s"
denied_alert_after = 1

[[groups]]
name = "agents"
cidrs = ["{AGENT_A}/32"]
allow = ["*.egress.example"]
deny = ["denied.egress.example"]

[[groups]]
name = "agents-b"
cidrs = ["{AGENT_B}/32"]
allow = ["*.egress.example"]
deny = ["denied.egress.example"]
"#
        ),
    )
    .unwrap();
    (upstream, main, events)
}

#[test]
fn agents_reach_only_what_dnsward_resolved_for_them() {
    let test = "agents_reach_only_what_dnsward_resolved_for_them";
    if !preconditions_met(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (upstream_cfg, main_cfg, events_path) = write_configs(dir.path());
    let topo = Topology::build();

    let mut server = ChildGuard::spawn(
        "socat server",
        topo.internet.command("socat").args([
            &format!("TCP-LISTEN:{PORT},reuseaddr,fork"),
            "SYSTEM:echo hello from the internet",
        ]),
        dir.path().join("socat.log"),
    );
    let mut upstream = ChildGuard::spawn(
        "upstream dnsward",
        topo.gw
            .command(BIN)
            .args(["serve", "--config", upstream_cfg.to_str().unwrap()]),
        dir.path().join("upstream.log"),
    );
    upstream.wait_for_log("dnsward serving", STARTUP);
    let mut dnsward = ChildGuard::spawn(
        "dnsward",
        topo.gw
            .command(BIN)
            .args(["serve", "--config", main_cfg.to_str().unwrap()]),
        dir.path().join("dnsward.log"),
    );
    dnsward.wait_for_log("dnsward serving", STARTUP);

    // The generated ruleset, loaded into the gateway: the thing under test.
    let ruleset =
        run(Command::new(BIN).args(["egress", "ruleset", "--config", main_cfg.to_str().unwrap()]));
    let rules_path = dir.path().join("egress.nft");
    std::fs::write(&rules_path, &ruleset.stdout).unwrap();
    topo.gw.run(&["nft", "-f", rules_path.to_str().unwrap()]);
    assert!(
        server.exited().is_none(),
        "socat server died: {}",
        server.log()
    );

    // Before any answer, nothing is reachable.
    assert!(
        !topo.connects(AGENT_A, ALLOWED),
        "reachable before it was resolved"
    );

    // 1. Resolved → reachable. Hard-coded → dropped and reported.
    let (status, addrs) = topo.dig(AGENT_A, "allowed.egress.example");
    assert_eq!(
        (status.as_str(), addrs.clone()),
        ("NOERROR", vec![ALLOWED.to_string()])
    );
    let resolved_at = Instant::now();
    assert!(
        topo.connects(AGENT_A, ALLOWED),
        "resolved address not reachable:\n{}",
        dnsward.log()
    );
    assert!(
        !topo.connects(AGENT_A, HARDCODED),
        "hard-coded address reachable"
    );
    // Sets are per group: agents-b has asked nothing, so it reaches nothing.
    assert!(
        !topo.connects(AGENT_B, ALLOWED),
        "group agents-b reached group agents' address"
    );
    let denied = poll(Duration::from_secs(10), || {
        events(&events_path)
            .into_iter()
            .find(|e| e["kind"] == "egress_denied" && e["dst"] == HARDCODED)
    })
    .unwrap_or_else(|| panic!("no egress_denied event:\n{}", dnsward.log()));
    assert_eq!(denied["client"], AGENT_A);
    assert_eq!(denied["group"], "agents");
    assert_eq!(denied["port"], 8080);
    assert_eq!(denied["proto"], "tcp");
    assert!(
        poll(Duration::from_secs(5), || events(&events_path)
            .into_iter()
            .find(
                |e| e["kind"] == "alert" && e["breakdown"]["egress_denied"].is_number()
            ))
        .is_some(),
        "no alert after denied_alert_after drops"
    );

    // 2. TTL (2 s) + grace (1 s) later, with no new query, the element is gone: refused.
    let gone = poll(Duration::from_secs(15), || {
        (!topo
            .set_elements("allow4_agents")
            .contains(&ALLOWED.to_string()))
        .then_some(())
    });
    assert!(gone.is_some(), "element never expired");
    assert!(
        resolved_at.elapsed() >= Duration::from_secs(2),
        "element expired before the answer's TTL: {:?}",
        resolved_at.elapsed()
    );
    assert!(
        !topo.connects(AGENT_A, ALLOWED),
        "reachable after TTL + grace"
    );

    // 3. Re-resolving reopens it. 4. The other group has its own sets: it could not reach the
    //    address (checked above); it asks right after agents did, so its answer is a cache hit
    //    (the entry lives 2 s), and that hit writes its set before the answer goes out.
    let (_, addrs) = topo.dig(AGENT_A, "allowed.egress.example");
    assert_eq!(addrs, vec![ALLOWED.to_string()]);
    let (_, addrs_b) = topo.dig(AGENT_B, "allowed.egress.example");
    assert_eq!(addrs_b, vec![ALLOWED.to_string()]);
    assert!(
        topo.connects(AGENT_A, ALLOWED),
        "not reachable after re-resolving"
    );
    assert!(
        topo.connects(AGENT_B, ALLOWED),
        "cache hit did not open the set of agents-b"
    );
    let hit = poll(Duration::from_secs(5), || {
        events(&events_path).into_iter().find(|e| {
            e["kind"] == "query" && e["client"] == AGENT_B && e["qname"] == "allowed.egress.example"
        })
    })
    .expect("query event of agents-b");
    assert_eq!(hit["cache_hit"], true, "{hit}");

    // 5. CNAME chains, denied names, canaries.
    let (_, addrs) = topo.dig(AGENT_A, "chain.egress.example");
    assert_eq!(addrs, vec![CHAIN_TARGET.to_string()]);
    assert!(
        topo.connects(AGENT_A, CHAIN_TARGET),
        "CNAME chain's address not reachable"
    );
    let (status, _) = topo.dig(AGENT_A, "denied.egress.example");
    assert_eq!(status, "NXDOMAIN");
    let (status, _) = topo.dig(AGENT_A, "badchain.egress.example");
    assert_eq!(status, "NXDOMAIN");
    assert!(
        !topo.connects(AGENT_A, DENIED),
        "denied name's address reachable"
    );
    let (status, _) = topo.dig(AGENT_A, "use-application-dns.net");
    assert_eq!(status, "NXDOMAIN");

    // `dnsward egress status` reads the same sets.
    let status = run(topo.gw.command(BIN).args([
        "egress",
        "status",
        "--config",
        main_cfg.to_str().unwrap(),
    ]));
    let text = String::from_utf8_lossy(&status.stdout);
    let elements = |set: &str| {
        text.lines()
            .find(|l| l.split_whitespace().next() == Some(set))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|n| n.parse::<usize>().ok())
    };
    assert!(elements("allow4_agents").is_some_and(|n| n >= 2), "{text}");
    assert_eq!(elements("allow4_agents_b"), Some(1), "{text}");
    assert_eq!(elements("allow6_agents"), Some(0), "{text}");

    let (exit, log) = dnsward.terminate();
    assert!(exit.success(), "dnsward did not exit cleanly:\n{log}");
    // The sets stay after shutdown (delete_on_shutdown = false).
    let out = topo.gw.run(&["nft", "list", "table", "inet", "dnsward"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("set allow4_agents"));
    let _ = upstream.terminate();
}

/// The ruleset for the shipped example config: printed without root; under root, `nft -c`
/// (check only) accepts it inside a throwaway namespace, and loading it twice leaves one copy of
/// each rule (it is safe to re-run).
#[test]
fn the_example_ruleset_is_valid_and_idempotent() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples/egress.toml");
    let out =
        run(Command::new(BIN).args(["egress", "ruleset", "--config", example.to_str().unwrap()]));
    let text = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "set allow4_agents { type ipv4_addr; flags timeout; }",
        "set allow6_build_agents { type ipv6_addr; flags timeout; }",
        "ip daddr @allow4_agents accept",
        "counter log prefix \"dnsward-egress agents: \" group 10 drop",
        "tcp dport { 53, 5353, 853, 443 } accept",
    ] {
        assert!(text.contains(needle), "missing {needle:?}:\n{text}");
    }
    if !preconditions_met("the_example_ruleset_is_valid_and_idempotent (nft part)") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("example.nft");
    std::fs::write(&file, &text).unwrap();
    let ns = Netns::create("check");
    ns.run(&["nft", "-c", "-f", file.to_str().unwrap()]);
    ns.run(&["nft", "-f", file.to_str().unwrap()]);
    ns.run(&["nft", "-f", file.to_str().unwrap()]);
    let listed = ns.run(&["nft", "list", "chain", "inet", "dnsward", "egress_agents"]);
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert_eq!(listed.matches("@allow4_agents").count(), 1, "{listed}");
}

/// The real `nft` backend against a namespace's kernel, driven directly through the library: a
/// refresh really renews an element's timeout (dnsmasq's `add element` does not), and switching
/// off a group whose sets the loaded ruleset references empties them atomically (nftables refuses
/// to delete a referenced set, so the fallback is exercised).
#[tokio::test]
async fn the_nft_backend_refreshes_timeouts_and_empties_referenced_sets() {
    use dnsward::clock::SystemClock;
    use dnsward::egress::backend::NftBackend;
    use dnsward::egress::gate::{Egress, GateSettings};
    use std::sync::Arc;

    let test = "the_nft_backend_refreshes_timeouts_and_empties_referenced_sets";
    if !preconditions_met(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ns = Netns::create("backend");
    // `nft` inside the namespace, as the backend's program.
    let wrapper = dir.path().join("nft-in-ns");
    std::fs::write(
        &wrapper,
        format!("#!/bin/sh\nexec ip netns exec {} nft \"$@\"\n", ns.name),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples/egress.toml");
    let rules =
        run(Command::new(BIN).args(["egress", "ruleset", "--config", example.to_str().unwrap()]));
    let rules_path = dir.path().join("rules.nft");
    std::fs::write(&rules_path, &rules.stdout).unwrap();
    ns.run(&["nft", "-f", rules_path.to_str().unwrap()]);

    let backend = Arc::new(NftBackend::new(wrapper, "inet", "dnsward"));
    let settings = GateSettings {
        grace: Duration::from_secs(1),
        min_lifetime: Duration::ZERO,
        max_addresses_per_name: 50,
        max_wait: Duration::from_secs(1),
        max_tracked: 1000,
    };
    let gate = Egress::start(
        settings,
        &["agents", "build-agents"],
        backend,
        SystemClock::shared(),
    )
    .expect("creating/adopting the table in the namespace");
    let answer = |ttl: u32| {
        use hickory_proto::op::{Message, MessageType, OpCode, Query};
        use hickory_proto::rr::{Name, RData, Record, RecordType, rdata};
        let name = Name::from_ascii("svc.egress.example.").unwrap();
        let mut m = Message::new(1, MessageType::Response, OpCode::Query);
        m.add_query(Query::query(name.clone(), RecordType::A));
        m.add_answer(Record::from_rdata(
            name,
            ttl,
            RData::A(rdata::A("198.19.0.10".parse().unwrap())),
        ));
        m.to_vec().unwrap()
    };
    let timeout_of = |set: &str| -> Option<u64> {
        let out = ns.run(&["nft", "-j", "list", "set", "inet", "dnsward", set]);
        let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
        doc["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .find_map(|o| o["set"]["elem"].as_array()?.first()?["elem"]["timeout"].as_u64())
    };
    assert!(
        gate.admit("agents", &answer(10))
            .expect("new element")
            .done()
            .await
    );
    // TTL 10 + grace 1 = 11, plus an eighth (2) of slack.
    assert_eq!(timeout_of("allow4_agents"), Some(13));
    assert!(
        gate.admit("agents", &answer(100))
            .expect("longer promise")
            .done()
            .await
    );
    // 101 + 13 of slack: the kernel's element was really renewed.
    assert_eq!(timeout_of("allow4_agents"), Some(114));

    // Switch "agents" off: the ruleset references its sets, so they are emptied, not deleted.
    assert!(
        gate.set_groups(&["build-agents"])
            .expect("a change")
            .done()
            .await
    );
    assert_eq!(
        timeout_of("allow4_agents"),
        None,
        "element survived the switch-off"
    );
    let listed = ns.run(&["nft", "list", "sets"]);
    assert!(String::from_utf8_lossy(&listed.stdout).contains("allow4_agents"));
    tokio::task::spawn_blocking(move || gate.shutdown(false))
        .await
        .unwrap();
}

/// Another address of group `agents` (a second agent in the same group).
const AGENT_A2: &str = "198.18.1.4";
/// Hard-coded destinations the contained agent sweeps, and those a forger uses.
const SWEPT: [&str; 3] = ["198.19.0.20", "198.19.0.21", "198.19.0.22"];
const FORGED_DSTS: [&str; 3] = ["198.19.0.30", "198.19.0.31", "198.19.0.32"];

/// TCP connection attempts from namespace `ns` with source `src` to each of `dsts`, in
/// parallel; each gives up after a second (the firewall drops the SYN).
fn attempt_all(ns: &Netns, src: &str, dsts: &[&str]) {
    let children: Vec<_> = dsts
        .iter()
        .map(|dst| {
            ns.command("socat")
                .args([
                    "-T1",
                    "-",
                    &format!("TCP:{dst}:{PORT},connect-timeout=1,bind={src}"),
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("running socat")
        })
        .collect();
    for mut c in children {
        let _ = c.wait();
    }
}

/// Denied connections are containment evidence against their own client only: an agent that
/// connects to three addresses it never resolved is sinkholed (its next query gets 0.0.0.0,
/// with an event that names the destinations), a second agent of the same group is still
/// answered, a forger on another segment using the second agent's address is dropped by the
/// ruleset's anti-spoofing rule before it is logged (so it cannot get that agent contained),
/// and the containment expires by itself.
#[test]
fn an_agent_sweeping_hard_coded_addresses_is_contained_alone() {
    let test = "an_agent_sweeping_hard_coded_addresses_is_contained_alone";
    if !preconditions_met(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (upstream_cfg, _, events_path) = write_configs(dir.path());
    let main_cfg = dir.path().join("contain.toml");
    std::fs::write(
        &main_cfg,
        format!(
            r#"
[server]
listen = ["{RESOLVER}:53"]
[admin]
listen = "127.0.0.1:0"
[upstream]
servers = [{{ address = "127.0.0.53:53", protocol = "udp", timeout = "1s" }}]
[events]
sink = "file"
path = {events_path:?}
[detect]
enabled = false
[containment]
sinkhole_for = "4s"
[egress]
backend = "nftables"
contain_after_denied = 3
denied_action = "sinkhole"
denied_alert_after = 100

[[groups]]
name = "agents"
cidrs = ["{AGENT_A}/32", "{AGENT_A2}/32"]
allow = ["*.egress.example"]
"#
        ),
    )
    .unwrap();
    let topo = Topology::build();
    topo.agent
        .run(&["ip", "addr", "add", &format!("{AGENT_A2}/24"), "dev", "ag0"]);
    // The forger: a host on the internet side that claims the second agent's address. The
    // kernel's own reverse-path filter is off in the gateway, so only the ruleset can stop it.
    topo.internet
        .run(&["ip", "addr", "add", &format!("{AGENT_A2}/32"), "dev", "in0"]);
    for dst in FORGED_DSTS {
        topo.internet.run(&[
            "ip",
            "route",
            "add",
            &format!("{dst}/32"),
            "via",
            "198.18.2.1",
        ]);
    }
    for key in [
        "net.ipv4.conf.all.rp_filter=0",
        "net.ipv4.conf.default.rp_filter=0",
        "net.ipv4.conf.gwi0.rp_filter=0",
        "net.ipv4.conf.gwa0.rp_filter=0",
    ] {
        topo.gw.run(&["sysctl", "-qw", key]);
    }

    let mut upstream = ChildGuard::spawn(
        "upstream dnsward",
        topo.gw
            .command(BIN)
            .args(["serve", "--config", upstream_cfg.to_str().unwrap()]),
        dir.path().join("upstream.log"),
    );
    upstream.wait_for_log("dnsward serving", STARTUP);
    let mut dnsward = ChildGuard::spawn(
        "dnsward",
        topo.gw
            .command(BIN)
            .args(["serve", "--config", main_cfg.to_str().unwrap()]),
        dir.path().join("dnsward.log"),
    );
    dnsward.wait_for_log("dnsward serving", STARTUP);
    let ruleset =
        run(Command::new(BIN).args(["egress", "ruleset", "--config", main_cfg.to_str().unwrap()]));
    let rules_path = dir.path().join("egress.nft");
    std::fs::write(&rules_path, &ruleset.stdout).unwrap();
    assert!(
        String::from_utf8_lossy(&ruleset.stdout).contains("fib saddr . iif oif missing"),
        "no anti-spoofing rule"
    );
    topo.gw.run(&["nft", "-f", rules_path.to_str().unwrap()]);

    for src in [AGENT_A, AGENT_A2] {
        let (status, addrs) = topo.dig(src, "allowed.egress.example");
        assert_eq!(
            (status.as_str(), addrs),
            ("NOERROR", vec![ALLOWED.to_string()])
        );
    }

    // The forger first: three distinct destinations in the second agent's name.
    attempt_all(&topo.internet, AGENT_A2, &FORGED_DSTS);
    // Then the first agent sweeps three hard-coded addresses.
    attempt_all(&topo.agent, AGENT_A, &SWEPT);
    let started = poll(Duration::from_secs(10), || {
        events(&events_path)
            .into_iter()
            .find(|e| e["kind"] == "containment_started")
    })
    .unwrap_or_else(|| panic!("no containment:\n{}", dnsward.log()));
    assert_eq!(started["client"], AGENT_A, "{started}");
    assert_eq!(started["action"], "sinkhole", "{started}");
    assert_eq!(started["group"], "agents", "{started}");
    let reason = started["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("3 distinct addresses"), "{reason}");
    for dst in SWEPT {
        assert!(reason.contains(&format!("{dst}:{PORT}/tcp")), "{reason}");
    }

    // Its next query gets the sinkhole; the other agent of the group is answered.
    let (status, addrs) = topo.dig(AGENT_A, "allowed.egress.example");
    assert_eq!(
        (status.as_str(), addrs),
        ("NOERROR", vec!["0.0.0.0".to_string()])
    );
    let (_, addrs) = topo.dig(AGENT_A2, "allowed.egress.example");
    assert_eq!(
        addrs,
        vec![ALLOWED.to_string()],
        "the second agent was contained"
    );

    // The forged packets never reached the log: dropped by the anti-spoofing rule (its counter
    // moved), no event, no containment of the agent whose address they claimed.
    let all = events(&events_path);
    assert!(
        !all.iter().any(|e| e["kind"] == "egress_denied"
            && FORGED_DSTS.contains(&e["dst"].as_str().unwrap_or_default())),
        "forged drops were logged"
    );
    assert!(
        !all.iter()
            .any(|e| e["kind"] == "containment_started" && e["client"] == AGENT_A2)
    );
    let forward = topo
        .gw
        .run(&["nft", "list", "chain", "inet", "dnsward", "forward"]);
    let forward = String::from_utf8_lossy(&forward.stdout).into_owned();
    let spoof_packets = forward
        .lines()
        .find(|l| l.contains("fib saddr"))
        .and_then(|l| l.split("packets ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok());
    assert!(spoof_packets.is_some_and(|n| n >= 3), "{forward}");

    // The sinkhole expires (sinkhole_for = 4s): answered again, and the end is recorded.
    let answered = poll(Duration::from_secs(15), || {
        let (_, addrs) = topo.dig(AGENT_A, "allowed.egress.example");
        (addrs == [ALLOWED.to_string()]).then_some(())
    });
    assert!(answered.is_some(), "containment never lifted");
    assert!(
        poll(Duration::from_secs(5), || events(&events_path)
            .into_iter()
            .find(|e| {
                e["kind"] == "containment_ended"
                    && e["client"] == AGENT_A
                    && e["reason"] == "expired"
            }))
        .is_some()
    );
    let (exit, log) = dnsward.terminate();
    assert!(exit.success(), "dnsward did not exit cleanly:\n{log}");
    let _ = upstream.terminate();
}

/// Start adopts what a previous dnsward left: the table and sets exist with elements (they
/// survive a restart in the kernel), and creating the gate must not flush them.
#[tokio::test]
async fn start_adopts_existing_sets_without_flushing_their_elements() {
    use dnsward::clock::SystemClock;
    use dnsward::egress::backend::NftBackend;
    use dnsward::egress::gate::{Egress, GateSettings};
    use std::sync::Arc;

    let test = "start_adopts_existing_sets_without_flushing_their_elements";
    if !preconditions_met(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ns = Netns::create("adopt");
    let wrapper = dir.path().join("nft-in-ns");
    std::fs::write(
        &wrapper,
        format!("#!/bin/sh\nexec ip netns exec {} nft \"$@\"\n", ns.name),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    // What the previous run left: both sets of "agents", one element each with a timeout.
    let previous = dir.path().join("previous.nft");
    std::fs::write(
        &previous,
        "table inet dnsward {\n\
         \tset allow4_agents { type ipv4_addr; flags timeout; elements = { 198.19.0.10 timeout 1h } }\n\
         \tset allow6_agents { type ipv6_addr; flags timeout; elements = { 2001:db8::10 timeout 1h } }\n\
         }\n",
    )
    .unwrap();
    ns.run(&["nft", "-f", previous.to_str().unwrap()]);
    let settings = GateSettings {
        grace: Duration::from_secs(1),
        min_lifetime: Duration::ZERO,
        max_addresses_per_name: 50,
        max_wait: Duration::from_secs(1),
        max_tracked: 1000,
    };
    let gate = Egress::start(
        settings,
        &["agents", "ci"],
        Arc::new(NftBackend::new(wrapper, "inet", "dnsward")),
        SystemClock::shared(),
    )
    .expect("adopting the table");
    let listed = ns.run(&["nft", "list", "table", "inet", "dnsward"]);
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    assert!(listed.contains("198.19.0.10 timeout 1h"), "{listed}");
    assert!(listed.contains("2001:db8::10 timeout 1h"), "{listed}");
    assert!(
        listed.contains("set allow4_ci"),
        "new group's sets created: {listed}"
    );
    tokio::task::spawn_blocking(move || gate.shutdown(false))
        .await
        .unwrap();
    let listed = ns.run(&["nft", "list", "set", "inet", "dnsward", "allow4_agents"]);
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains("198.19.0.10"),
        "shutdown flushed the set"
    );
}
