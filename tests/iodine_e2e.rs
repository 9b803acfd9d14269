//! End to end against a real IP-over-DNS tunnel: the `iodine` client → dnsward → `iodined`,
//! to show that dnsward sees iodine's handshake and, when a group enforces, stops it.
//!
//! iodine needs TUN devices and gives them tunnel addresses, so every process of a run lives in
//! a network namespace the run creates (`dnsward-iodine-<pid>-<run>`) and deletes when its guard
//! drops; nothing leaves that namespace's loopback:
//!
//! ```text
//! iodine (127.0.0.1) ──DNS NULL──▶ dnsward (127.0.0.2:53)
//!      ──forward tun.example.com──▶ iodined (127.0.0.3:5353)
//! ```
//!
//! The test sends no traffic through the tunnel: iodine's own handshake (version, login, codec
//! switch, downstream fragment-size probing) is a burst of long, high-entropy NULL queries,
//! which is what dnsward has to notice.
//!
//! Needs root, `ip netns`, `/dev/net/tun` and the Debian package `iodine` (which `.ci/run`
//! installs). When any of those is missing the test fails in CI (`CI=true`) and is skipped with a
//! message saying why elsewhere.
//!
//! Two runs:
//! 1. baseline, the group in `monitor_only`: iodine completes its connection setup and dnsward
//!    alerts (`monitor_only: true`, `action: "none"`);
//! 2. enforced: dnsward contains the client (`containment_started`, queries answered with
//!    throttle/sinkhole/quarantine verdicts) before iodine's handshake is done, and no query it
//!    sends after the last containment step reaches iodined. (iodine shrugs off failed
//!    fragment-size probes and may still print its "setup complete" line; by then it is cut off.)
//!
//! Deadlines only bound the test; nothing asserts on speed. Each run prints a report (queries,
//! time to containment, alert scores) to stderr.

mod common;

use common::ChildGuard;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_dnsward");

/// The tunnel zone. Its registrable domain, the key the detector scores, is `example.com`.
const TUNNEL_ZONE: &str = "tun.example.com";
/// dnsward's listening address (port 53) inside the namespace.
const RESOLVER_IP: &str = "127.0.0.2";
/// iodined's address and port inside the namespace (fixed: the namespace is fresh).
const TUNNEL_SERVER: &str = "127.0.0.3:5353";
/// The source address of iodine's queries to 127.0.0.2: the client dnsward groups.
const CLIENT_IP: &str = "127.0.0.1";
/// The dnsward group of the tunnelling client.
const GROUP: &str = "tunnel-client";
/// iodined's tunnel address; the client gets the next one. Nothing is sent to them.
const TUNNEL_NET: &str = "10.53.0.1/27";
const PASSWORD: &str = "dnsward-e2e";

/// What iodine prints once its handshake is done and it starts carrying data.
const SETUP_COMPLETE: &str = "Connection setup complete";
/// Bound for iodine's handshake.
const SETUP_DEADLINE: Duration = Duration::from_secs(30);
/// How long the client keeps running after setup completes (or fails), for the detector's
/// timeline and for late containment.
const LINGER: Duration = Duration::from_secs(3);
const STARTUP_DEADLINE: Duration = Duration::from_secs(60);

/// Verdicts of queries answered by a containment rather than by the tunnel server.
const CONTAINED_VERDICTS: [&str; 3] = ["throttle", "sinkhole", "quarantine"];

/// True when the test can run here; otherwise it cannot run (a failure under `CI=true`, where
/// `.ci/run` runs it as root with the iodine tools installed).
fn preconditions_met(test: &str) -> bool {
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    if uid.as_deref() != Some("0") {
        return common::cannot_run(
            test,
            "needs root (network namespaces, TUN devices, port 53)",
        );
    }
    let netns = Command::new("ip")
        .args(["netns", "list"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !netns.as_ref().is_ok_and(ExitStatus::success) {
        return common::cannot_run(test, &format!("`ip netns` is not available ({netns:?})"));
    }
    if !Path::new("/dev/net/tun").exists() {
        return common::cannot_run(test, "/dev/net/tun is missing; iodine needs a TUN device");
    }
    for tool in ["iodined", "iodine"] {
        // Both print their version for `-v`; only "cannot run it" matters.
        if let Err(e) = Command::new(tool)
            .arg("-v")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
        {
            return common::cannot_run(
                test,
                &format!(
                    "`{tool}` is not runnable ({e}); install the iodine package (.ci/run does)"
                ),
            );
        }
    }
    true
}

/// A network namespace with its loopback up, deleted when dropped.
struct Netns {
    name: String,
}

impl Netns {
    fn create(run: &str) -> Self {
        let name = format!("dnsward-iodine-{}-{run}", std::process::id());
        // A leftover of a crashed earlier test with the same pid would make `add` fail.
        let _ = Command::new("ip")
            .args(["netns", "delete", &name])
            .stderr(Stdio::null())
            .status();
        let added = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .expect("running ip netns add");
        assert!(added.success(), "ip netns add {name} failed");
        let ns = Self { name };
        let up = ns
            .command("ip")
            .args(["link", "set", "lo", "up"])
            .status()
            .expect("running ip link set lo up");
        assert!(up.success(), "bringing lo up in {} failed", ns.name);
        ns
    }

    /// `ip netns exec NAME program`: the program runs (exec'd, same pid) inside the namespace.
    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .status();
    }
}

/// The dnsward configuration for one run: 127.0.0.2:53, the tunnel zone forwarded to iodined,
/// one group for the client that allows only the tunnel zone. Every query is logged
/// (`allowed = "on"`) so the report can count queries up to containment.
fn dnsward_config(dir: &Path, monitor_only: bool) -> (PathBuf, PathBuf) {
    let events = dir.join("events.jsonl");
    let policy = common::tunnel_policy_toml(GROUP, CLIENT_IP, TUNNEL_ZONE, monitor_only);
    let text = format!(
        r#"
[server]
listen = ["{RESOLVER_IP}:53"]
unknown_clients = "refuse"

[admin]
listen = "127.0.0.1:0"

[upstream]
timeout = "2s"
# Only the forward zone below is ever asked; this default upstream is a loopback discard port.
servers = [{{ address = "127.0.0.1:9", protocol = "udp", timeout = "1s" }}]

[[upstream.forward]]
zone = "{TUNNEL_ZONE}"
servers = [{{ address = "{TUNNEL_SERVER}" }}]

[events]
sink = "file"
path = {events:?}
allowed = "on"

{policy}"#
    );
    let path = dir.join("dnsward.toml");
    std::fs::write(&path, text).expect("writing the dnsward config");
    (path, events)
}

/// Everything one run left behind.
struct RunOutcome {
    /// Whether iodine printed [`SETUP_COMPLETE`].
    setup_complete: bool,
    /// How long until it did, or until the run gave up on it.
    setup_time: Duration,
    /// iodine's output.
    client_log: String,
    /// Wall clock when the client started, to place event timestamps.
    started_at: SystemTime,
    /// Every event dnsward wrote.
    events: Vec<Value>,
}

impl RunOutcome {
    fn events_of(&self, kind: &str) -> Vec<&Value> {
        self.events.iter().filter(|e| e["kind"] == kind).collect()
    }

    /// Alerts for this client about the tunnel's registrable domain (or the zone itself).
    fn tunnel_alerts(&self) -> Vec<&Value> {
        self.events_of("alert")
            .into_iter()
            .filter(|e| {
                e["client"] == CLIENT_IP
                    && (e["domain"] == "example.com" || e["domain"] == TUNNEL_ZONE)
            })
            .collect()
    }

    fn client_queries(&self) -> Vec<&Value> {
        self.events_of("query")
            .into_iter()
            .filter(|e| e["client"] == CLIENT_IP)
            .collect()
    }

    fn contained_queries(&self) -> Vec<&Value> {
        self.client_queries()
            .into_iter()
            .filter(|e| {
                CONTAINED_VERDICTS
                    .iter()
                    .any(|v| e["verdict"].as_str() == Some(v))
            })
            .collect()
    }

    fn containments(&self) -> Vec<&Value> {
        self.events_of("containment_started")
            .into_iter()
            .filter(|e| e["client"] == CLIENT_IP && e["group"] == GROUP)
            .collect()
    }

    /// The client's queries logged after its last `containment_started` event.
    fn queries_after_last_containment(&self) -> Vec<&Value> {
        let last = self
            .events
            .iter()
            .rposition(|e| {
                e["kind"] == "containment_started"
                    && e["client"] == CLIENT_IP
                    && e["group"] == GROUP
            })
            .unwrap_or(self.events.len());
        self.events[last..]
            .iter()
            .filter(|e| e["kind"] == "query" && e["client"] == CLIENT_IP)
            .collect()
    }

    /// Seconds from the client's start to an event's `ts` (negative: before it).
    fn since_start(&self, event: &Value) -> Option<f64> {
        let ts = chrono::DateTime::parse_from_rfc3339(event["ts"].as_str()?).ok()?;
        let at = SystemTime::from(ts);
        Some(match at.duration_since(self.started_at) {
            Ok(d) => d.as_secs_f64(),
            Err(e) => -e.duration().as_secs_f64(),
        })
    }

    /// A human-readable account of the run, printed whether the assertions pass or not.
    fn report(&self, label: &str) -> String {
        use std::fmt::Write as _;
        let mut r = String::new();
        let _ = writeln!(r, "==== iodine through dnsward: {label} ====");
        let _ = writeln!(
            r,
            "iodine setup {} after {:.1}s; last lines of its output:",
            if self.setup_complete {
                "COMPLETED"
            } else {
                "did NOT complete"
            },
            self.setup_time.as_secs_f64()
        );
        let lines: Vec<&str> = self.client_log.lines().collect();
        for l in &lines[lines.len().saturating_sub(8)..] {
            let _ = writeln!(r, "  | {l}");
        }
        let queries = self.client_queries();
        let mut by_verdict: BTreeMap<&str, usize> = BTreeMap::new();
        let mut by_qtype: BTreeMap<&str, usize> = BTreeMap::new();
        for q in &queries {
            *by_verdict
                .entry(q["verdict"].as_str().unwrap_or("?"))
                .or_default() += 1;
            *by_qtype
                .entry(q["qtype"].as_str().unwrap_or("?"))
                .or_default() += 1;
        }
        let _ = writeln!(
            r,
            "queries from the client: {} by verdict {by_verdict:?} by qtype {by_qtype:?}",
            queries.len()
        );
        let alerts = self.tunnel_alerts();
        let max = alerts
            .iter()
            .max_by_key(|a| a["score"].as_u64().unwrap_or(0));
        let _ = writeln!(
            r,
            "alerts for the tunnel domain: {} (max score {})",
            alerts.len(),
            max.map_or("-".into(), |a| a["score"].to_string())
        );
        let shown = alerts.iter().take(3).map(|a| ("alert", a));
        for (what, a) in shown.chain(max.map(|a| ("highest", a))) {
            let _ = writeln!(
                r,
                "  {what} at {:+.2}s: score {} action {} monitor_only {} window {} breakdown {}",
                self.since_start(a).unwrap_or(f64::NAN),
                a["score"],
                a["action"],
                a["monitor_only"],
                a["window"],
                a["breakdown"]
            );
        }
        let timeline: Vec<String> = alerts
            .iter()
            .map(|a| {
                format!(
                    "{:+.1}s:{}",
                    self.since_start(a).unwrap_or(f64::NAN),
                    a["score"]
                )
            })
            .collect();
        let _ = writeln!(r, "  score timeline: {}", timeline.join(" "));
        let containments = self.containments();
        match containments.first() {
            Some(c) => {
                let at = self.since_start(c).unwrap_or(f64::NAN);
                // Query events before the containment event in the log: what got through.
                let before = self
                    .events
                    .iter()
                    .take_while(|e| !std::ptr::eq(*e, *c))
                    .filter(|e| e["kind"] == "query" && e["client"] == CLIENT_IP)
                    .count();
                let _ = writeln!(
                    r,
                    "containment started {at:+.2}s after the client started, after {before} \
                     queries from it: {c}"
                );
                for c in containments.iter().skip(1) {
                    let _ = writeln!(r, "  then: {c}");
                }
                let after = self.queries_after_last_containment();
                let contained = after
                    .iter()
                    .filter(|q| {
                        CONTAINED_VERDICTS
                            .iter()
                            .any(|v| q["verdict"].as_str() == Some(v))
                    })
                    .count();
                let _ = writeln!(
                    r,
                    "after the last containment step: {} queries, {contained} answered by the \
                     containment",
                    after.len()
                );
            }
            None => {
                let _ = writeln!(r, "no containment_started event");
            }
        }
        let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
        for e in &self.events {
            *kinds.entry(e["kind"].as_str().unwrap_or("?")).or_default() += 1;
        }
        let _ = writeln!(r, "events by kind: {kinds:?}");
        r
    }
}

/// One run in a fresh namespace with the group in `monitor_only` or enforcing.
fn run_tunnel(monitor_only: bool) -> RunOutcome {
    let label = if monitor_only { "monitor" } else { "enforce" };
    let dir = tempfile::tempdir().expect("temp dir");
    // Declared first, so it is dropped last: every process below is gone before the namespace.
    let ns = Netns::create(label);

    let (server_ip, server_port) = TUNNEL_SERVER.split_once(':').unwrap();
    let mut server = ChildGuard::spawn(
        "iodined",
        ns.command("iodined")
            .args([
                "-f",
                "-c",
                "-l",
                server_ip,
                "-p",
                server_port,
                "-P",
                PASSWORD,
            ])
            .args([TUNNEL_NET, TUNNEL_ZONE]),
        dir.path().join("iodined.log"),
    );

    let (config, events_path) = dnsward_config(dir.path(), monitor_only);
    let mut dnsward = ChildGuard::spawn(
        "dnsward",
        ns.command(BIN)
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .env("DNSWARD_LOG", "info"),
        dir.path().join("dnsward.log"),
    );
    dnsward.wait_for_log("dnsward serving", STARTUP_DEADLINE);
    server.wait_for_log("Listening to dns for domain", STARTUP_DEADLINE);

    // `-r`: no raw UDP attempt, so everything goes through DNS (and so through dnsward).
    let started_at = SystemTime::now();
    let start = Instant::now();
    let mut client = ChildGuard::spawn(
        "iodine",
        ns.command("iodine")
            .args(["-f", "-r", "-P", PASSWORD, RESOLVER_IP, TUNNEL_ZONE]),
        dir.path().join("iodine.log"),
    );
    let setup_complete = loop {
        if client.log().contains(SETUP_COMPLETE) {
            break true;
        }
        if client.exited().is_some() || start.elapsed() >= SETUP_DEADLINE {
            break false;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let setup_time = start.elapsed();
    std::thread::sleep(LINGER);
    let client_log = client.log();
    drop(client);
    if let Some(status) = server.exited() {
        panic!("iodined exited ({status}):\n{}", server.log());
    }
    drop(server);
    let (status, log) = dnsward.terminate();
    assert!(
        status.success(),
        "dnsward exited with {status} after SIGTERM:\n{log}"
    );
    let text = std::fs::read_to_string(&events_path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", events_path.display()));
    let events = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    RunOutcome {
        setup_complete,
        setup_time,
        client_log,
        started_at,
        events,
    }
}

#[test]
fn iodine_is_alerted_in_monitor_mode_and_contained_when_enforced() {
    let test = "iodine_is_alerted_in_monitor_mode_and_contained_when_enforced";
    if !preconditions_met(test) {
        return;
    }

    // 1. Baseline: monitor only. iodine must connect, and dnsward must see it.
    let baseline = run_tunnel(true);
    eprintln!("{}", baseline.report("baseline, monitor_only = true"));
    assert!(
        baseline.setup_complete,
        "iodine did not complete its setup through dnsward in monitor_only mode, so the \
         enforced run would prove nothing; its output:\n{}",
        baseline.client_log
    );
    assert!(
        baseline
            .tunnel_alerts()
            .iter()
            .any(|a| a["monitor_only"] == true && a["action"] == "none"),
        "no monitor-only alert (action \"none\") for {CLIENT_IP} and example.com; events:\n{:#?}",
        baseline.events
    );
    assert!(
        baseline.containments().is_empty() && baseline.contained_queries().is_empty(),
        "monitor_only must never contain; events:\n{:#?}",
        baseline.events
    );

    // 2. Enforced: dnsward must contain the client before iodine's handshake completes.
    let enforced = run_tunnel(false);
    eprintln!("{}", enforced.report("enforced, monitor_only = false"));
    assert!(
        !enforced.tunnel_alerts().is_empty(),
        "no alert for {CLIENT_IP} and example.com when enforcing; events:\n{:#?}",
        enforced.events
    );
    let started = enforced.containments();
    assert!(
        !started.is_empty(),
        "dnsward never contained the iodine client; see the report above for its scores"
    );
    let contained = enforced.contained_queries();
    assert!(
        !contained.is_empty(),
        "containment started but no query was answered by it (no verdict in \
         {CONTAINED_VERDICTS:?}); containment events: {started:#?}"
    );
    // iodine treats failed fragment-size probes as non-fatal ("Keeping default") and may still
    // print its setup line; what matters is that it had already been contained by then and that
    // nothing it sent afterwards reached iodined.
    let first_at = enforced.since_start(started[0]).unwrap_or(f64::INFINITY);
    assert!(
        !enforced.setup_complete || first_at < enforced.setup_time.as_secs_f64(),
        "iodine completed its setup ({:.2}s) before dnsward contained it ({first_at:+.2}s); its \
         output:\n{}",
        enforced.setup_time.as_secs_f64(),
        enforced.client_log
    );
    let after = enforced.queries_after_last_containment();
    let through: Vec<&&Value> = after
        .iter()
        .filter(|q| {
            !CONTAINED_VERDICTS
                .iter()
                .any(|v| q["verdict"].as_str() == Some(v))
        })
        .collect();
    assert!(
        !after.is_empty() && through.is_empty(),
        "after the last containment step, {} of {} queries from the client were not answered \
         by the containment: {through:#?}",
        through.len(),
        after.len()
    );
}
