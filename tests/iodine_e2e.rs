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

use common::tunnel::{
    self, CLIENT_IP, GROUP, RESOLVER_IP, RunEvents, TUNNEL_SERVER_IP, TUNNEL_ZONE, is_contained,
};
use common::{ChildGuard, DNSWARD, Dnsward, STARTUP_DEADLINE};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

/// iodined's port on [`TUNNEL_SERVER_IP`] (fixed: the namespace is fresh).
const TUNNEL_SERVER_PORT: u16 = 5353;
/// iodined's tunnel address; the client gets the next one. Nothing is sent to them.
const TUNNEL_NET: &str = "10.53.0.1/27";
const PASSWORD: &str = "dnsward-e2e";

/// What iodine prints once its handshake is done and it starts carrying data.
const SETUP_COMPLETE: &str = "Connection setup complete";
/// Bound for iodine's handshake.
const SETUP_DEADLINE: Duration = Duration::from_secs(30);
/// How long the client may keep running after its setup completes (or fails) for dnsward to
/// log what the run is about: a monitor-only alert, or a containment that answers its queries.
/// A deadline for a run that fails, not a wait.
const OUTCOME_DEADLINE: Duration = Duration::from_secs(30);

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
    common::tools_runnable(test, &["iodined", "iodine"], "-v", "iodine")
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

/// Everything one run left behind.
struct RunOutcome {
    /// Whether iodine printed [`SETUP_COMPLETE`].
    setup_complete: bool,
    /// How long until it did, or until the run gave up on it.
    setup_time: Duration,
    /// iodine's output.
    client_log: String,
    /// Every event dnsward wrote, timed from the client's start.
    events: RunEvents,
}

impl RunOutcome {
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
        let queries = self.events.client_queries();
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
        self.events.report_alerts(&mut r);
        self.events.report_containments(&mut r, |c, _| {
            // Query events before the containment event in the log: what got through.
            let before = self
                .events
                .all
                .iter()
                .take_while(|e| !std::ptr::eq(*e, c))
                .filter(|e| e["kind"] == "query" && e["client"] == CLIENT_IP)
                .count();
            format!("after {before} queries from the client")
        });
        if !self.events.containments().is_empty() {
            let after = queries_after_last_containment(&self.events);
            let contained = after.iter().filter(|q| is_contained(q)).count();
            let _ = writeln!(
                r,
                "after the last containment step: {} queries, {contained} answered by the \
                 containment",
                after.len()
            );
        }
        self.events.report_kinds(&mut r);
        r
    }
}

/// The client's queries logged after its last `containment_started` event (none without one).
fn queries_after_last_containment(events: &RunEvents) -> Vec<&Value> {
    // By `ts`, not by line: the sink writes security events ahead of a query backlog.
    let ts = |e: &Value| e["ts"].as_str().unwrap_or("").to_string();
    let Some(last) = events
        .all
        .iter()
        .filter(|e| {
            e["kind"] == "containment_started" && e["client"] == CLIENT_IP && e["group"] == GROUP
        })
        .map(ts)
        .max()
    else {
        return Vec::new();
    };
    events
        .all
        .iter()
        .filter(|e| e["kind"] == "query" && e["client"] == CLIENT_IP && ts(e) > last)
        .collect()
}

/// Whether dnsward has logged what the run is about: a monitor-only alert for the tunnel, or,
/// when enforcing, a containment that answers the client's queries after its last step.
fn outcome_logged(events: &RunEvents, monitor_only: bool) -> bool {
    if monitor_only {
        events
            .tunnel_alerts()
            .iter()
            .any(|a| a["monitor_only"] == true)
    } else {
        !events.containments().is_empty()
            && queries_after_last_containment(events)
                .iter()
                .any(|q| is_contained(q))
    }
}

/// One run in a fresh namespace with the group in `monitor_only` or enforcing.
fn run_tunnel(monitor_only: bool) -> RunOutcome {
    let label = if monitor_only { "monitor" } else { "enforce" };
    let dir = tempfile::tempdir().expect("temp dir");
    // Declared first, so it is dropped last: every process below is gone before the namespace.
    let ns = Netns::create(label);

    let port = TUNNEL_SERVER_PORT.to_string();
    let mut server = ChildGuard::spawn(
        "iodined",
        ns.command("iodined")
            .args(["-f", "-c", "-l", TUNNEL_SERVER_IP, "-p", &port])
            .args(["-P", PASSWORD, TUNNEL_NET, TUNNEL_ZONE]),
        dir.path().join("iodined.log"),
    );

    // Every query is logged (`log_allowed`) so the report can count queries up to containment.
    let tunnel_server = format!("{TUNNEL_SERVER_IP}:{TUNNEL_SERVER_PORT}");
    let (config, events_path) =
        tunnel::dnsward_config(dir.path(), &tunnel_server, monitor_only, true);
    let dnsward = Dnsward::serve(ns.command(DNSWARD), &config, dir.path().join("dnsward.log"));
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
    // Keep the client running until dnsward has logged what this run is about (or the client
    // gives up, or the deadline passes: then the assertions report what is missing).
    let until = Instant::now() + OUTCOME_DEADLINE;
    while !outcome_logged(&RunEvents::peek(&events_path, started_at), monitor_only)
        && client.exited().is_none()
        && Instant::now() < until
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    let client_log = client.log();
    drop(client);
    if let Some(status) = server.exited() {
        panic!("iodined exited ({status}):\n{}", server.log());
    }
    drop(server);
    dnsward.stop();
    RunOutcome {
        setup_complete,
        setup_time,
        client_log,
        events: RunEvents::read(&events_path, started_at),
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
    baseline.events.assert_alerted_without_acting();

    // 2. Enforced: dnsward must contain the client before iodine's handshake completes.
    let enforced = run_tunnel(false);
    eprintln!("{}", enforced.report("enforced, monitor_only = false"));
    let started = enforced.events.assert_contained("iodine");
    // iodine treats failed fragment-size probes as non-fatal ("Keeping default") and may still
    // print its setup line; what matters is that it had already been contained by then and that
    // nothing it sent afterwards reached iodined.
    let first_at = enforced
        .events
        .since_start(started[0])
        .unwrap_or(f64::INFINITY);
    assert!(
        !enforced.setup_complete || first_at < enforced.setup_time.as_secs_f64(),
        "iodine completed its setup ({:.2}s) before dnsward contained it ({first_at:+.2}s); its \
         output:\n{}",
        enforced.setup_time.as_secs_f64(),
        enforced.client_log
    );
    let after = queries_after_last_containment(&enforced.events);
    let through: Vec<&&Value> = after.iter().filter(|q| !is_contained(q)).collect();
    assert!(
        !after.is_empty() && through.is_empty(),
        "after the last containment step, {} of {} queries from the client were not answered \
         by the containment: {through:#?}",
        through.len(),
        after.len()
    );
}
