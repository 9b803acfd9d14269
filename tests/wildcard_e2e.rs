//! A listener on a wildcard address (`0.0.0.0`, `[::]`, as the README's production config has)
//! answers each UDP query from the address the query was sent to. The kernel would otherwise
//! pick the source by route, and a client that asked a secondary address (a VIP, an IPv6
//! address beside the preferred one) drops the answer as coming from a stranger: `dig` says
//! "reply from unexpected source" and times out.
//!
//! Runs the real binary and real `dig` inside a network namespace the test creates (loopback
//! only, with extra IPv6 addresses on it). Needs root, `ip`, `dig`; skipped otherwise, and a
//! failure under `CI=true`.

mod common;

use std::path::Path;
use std::process::Command;

use common::{DNSWARD, Dnsward, Netns};

fn preconditions_met(test: &str) -> bool {
    let uid = Command::new("id").arg("-u").output().ok();
    if uid.is_none_or(|o| String::from_utf8_lossy(&o.stdout).trim() != "0") {
        return common::cannot_run(test, "needs root (a network namespace)");
    }
    common::tools_runnable(test, &["ip"], "-V", "iproute2")
        && common::tools_runnable(test, &["dig"], "-v", "bind9-dnsutils")
}

fn config(dir: &Path, listen: &str, udp_loop: &str) -> std::path::PathBuf {
    let zones = Path::new(env!("CARGO_MANIFEST_DIR")).join("zones");
    let text = format!(
        r#"
[server]
listen = [{listen}]
udp_workers = 2
udp_loop = "{udp_loop}"

[upstream]
# Nothing listens here: a forwarded name fails fast (SERVFAIL), through the miss path.
servers = [{{ address = "127.0.0.2:9", timeout = "500ms" }}]
timeout = "1s"

[zones]
dir = "{zones}"

[events]
sink = "none"

[[groups]]
name = "agents"
cidrs = ["127.0.0.0/8", "::1/128", "fd00::/64"]
allow = ["*.corp.internal", "forwarded.example"]
"#,
        zones = zones.display()
    );
    let path = dir.join("dnsward.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// `dig` from `src` to `server`: its status line, or what it said instead.
fn dig(ns: &Netns, server: &str, port: u16, src: &str, name: &str, tcp: bool) -> String {
    let mut cmd = ns.command("dig");
    cmd.args([
        &format!("@{server}"),
        "-p",
        &port.to_string(),
        "-b",
        src,
        name,
        "A",
        "+tries=1",
        "+time=2",
    ]);
    if tcp {
        cmd.arg("+tcp");
    }
    let out = cmd.output().expect("dig runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.lines()
        .find(|l| l.contains("status:"))
        .map_or_else(|| format!("no answer: {text}"), str::to_string)
}

#[test]
fn wildcard_listeners_answer_from_the_address_asked() {
    let test = "wildcard_listeners_answer_from_the_address_asked";
    if !preconditions_met(test) {
        return;
    }
    let ns = Netns::create("wild");
    // Two more IPv6 addresses: the kernel's choice of source for an answer to one of them is
    // not necessarily the address the query went to.
    ns.run(&[
        "ip",
        "-6",
        "addr",
        "add",
        "fd00::53/128",
        "dev",
        "lo",
        "nodad",
    ]);
    ns.run(&[
        "ip",
        "-6",
        "addr",
        "add",
        "fd00::99/128",
        "dev",
        "lo",
        "nodad",
    ]);
    // Both UDP loops: the listener's own thread (the default) and the runtime's.
    for udp_loop in ["thread", "runtime"] {
        answers_come_from_the_address_asked(&ns, udp_loop);
    }
}

fn answers_come_from_the_address_asked(ns: &Netns, udp_loop: &str) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), r#""0.0.0.0:5300", "[::]:5300""#, udp_loop);
    let mut cmd = ns.command(DNSWARD);
    cmd.current_dir(dir.path());
    let server = Dnsward::serve(cmd, &cfg, dir.path().join("dnsward.log"));
    for (server_addr, src) in [
        ("127.0.0.1", "127.0.0.10"),
        ("127.0.0.5", "127.0.0.10"),
        ("127.0.0.53", "127.0.0.1"),
        ("::1", "fd00::99"),
        ("fd00::53", "fd00::99"),
        ("fd00::53", "::1"),
        ("fd00::99", "fd00::53"),
    ] {
        for tcp in [false, true] {
            // A local-zone answer (inline) and a forwarded name (the miss path, SERVFAIL).
            let local = dig(ns, server_addr, 5300, src, "api.corp.internal", tcp);
            assert!(
                local.contains("status: NOERROR"),
                "{udp_loop} loop: @{server_addr} from {src} (tcp: {tcp}): {local}"
            );
            let forwarded = dig(ns, server_addr, 5300, src, "forwarded.example", tcp);
            assert!(
                forwarded.contains("status: SERVFAIL"),
                "{udp_loop} loop: @{server_addr} from {src} (tcp: {tcp}): {forwarded}"
            );
        }
    }
    server.stop();
}
