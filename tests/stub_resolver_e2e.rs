//! End to end with the C library's own stub resolver: what an agent process gets when it calls
//! `getaddrinfo` with dnsward as its only nameserver, not what a DNS tool asks for.
//!
//! glibc has no way to name a port, so dnsward runs on `127.0.0.1:53` inside a network
//! namespace this test creates (loopback only, deleted afterwards), on the example config
//! (`config/dnsward.toml`: the group `agents` is 127.0.0.1, ::1 and 127.0.0.10, its names are
//! `*.corp.internal`, served from `zones/`). `getent` runs in the same namespace under a mount
//! namespace of its own, where `/etc/resolv.conf` names only dnsward. glibc asks A and AAAA
//! together from one socket (two IDs, one source port) over UDP, and over TCP with
//! `options use-vc`.
//!
//! Needs root, `ip netns`, `unshare`, `mount`, `getent` and `curl` (iproute2, util-linux, mount,
//! libc-bin, curl). Skipped with a message otherwise; under `CI=true` it fails instead.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{DNSWARD, Dnsward, Netns, cannot_run, tools_runnable};

fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn preconditions_met(test: &str) -> bool {
    let uid = Command::new("id").arg("-u").output().ok();
    if uid.is_none_or(|o| String::from_utf8_lossy(&o.stdout).trim() != "0") {
        return cannot_run(test, "needs root (network and mount namespaces)");
    }
    // The mount namespace binds the test's files over them: there must be ones to cover.
    for file in ["/etc/resolv.conf", "/etc/nsswitch.conf"] {
        if !Path::new(file).exists() {
            return cannot_run(test, &format!("{file} does not exist to be covered"));
        }
    }
    tools_runnable(test, &["ip"], "-V", "iproute2")
        && tools_runnable(test, &["unshare"], "--version", "util-linux")
        && tools_runnable(test, &["getent"], "--version", "libc-bin")
        && tools_runnable(test, &["curl"], "--version", "curl")
        && tools_runnable(test, &["mount"], "--version", "mount")
}

/// `/metrics` from dnsward's admin endpoint inside `ns` (the example's 127.0.0.1:9153).
fn metrics(ns: &Netns) -> String {
    let out = ns
        .command("curl")
        .args(["-sf", "--noproxy", "*", "http://127.0.0.1:9153/metrics"])
        .output()
        .expect("running curl");
    assert!(out.status.success(), "metrics: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Queries dnsward blocked by policy.
fn blocked(ns: &Netns) -> f64 {
    common::metric_sum(
        &metrics(ns),
        "dnsward_queries_total",
        &[("verdict", "block")],
    )
    .unwrap_or(0.0)
}

/// Whether `done` holds within a few seconds (a deadline for a hung server, not a timing
/// assertion).
fn poll(mut done: impl FnMut() -> bool) -> bool {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        if done() {
            return true;
        }
        if std::time::Instant::now() > until {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Queries answered over `protocol`, by dnsward's own count.
fn answered_over(ns: &Netns, protocol: &str) -> f64 {
    common::metric_sum(
        &metrics(ns),
        "dnsward_query_duration_seconds_count",
        &[("protocol", protocol)],
    )
    .unwrap_or(0.0)
}

/// The example config, copied with what it reads, listening on port 53 and serving the
/// repository's zones.
fn example_config(dir: &Path) -> PathBuf {
    let copy = |from: &Path, to: &Path| {
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_file() {
                std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
            }
        }
    };
    copy(&repo_path("config"), dir);
    std::fs::create_dir_all(dir.join("lists")).unwrap();
    copy(&repo_path("config/lists"), &dir.join("lists"));
    let path = dir.join("dnsward.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let zones = repo_path("zones");
    let text = text
        .replace(
            "listen = [\"127.0.0.1:5353\", \"[::1]:5353\"]",
            "listen = [\"127.0.0.1:53\"]",
        )
        .replace(
            "dir = \"../zones\"",
            &format!("dir = \"{}\"", zones.display()),
        );
    assert!(
        text.contains("\"127.0.0.1:53\""),
        "the example's listen line moved"
    );
    assert!(
        text.contains(&zones.display().to_string()),
        "the example's zones line moved"
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// `getent ARGS` in `ns`, with `resolv` as its `/etc/resolv.conf` and an `/etc/nsswitch.conf`
/// that asks files then DNS (not the host's: `nss-resolve` or `nscd` would go around dnsward).
fn getent(ns: &Netns, resolv: &Path, args: &[&str]) -> Output {
    let nsswitch = resolv.with_file_name("nsswitch.conf");
    std::fs::write(&nsswitch, "hosts: files dns\n").unwrap();
    let script = format!(
        "mount --bind '{}' /etc/resolv.conf && mount --bind '{}' /etc/nsswitch.conf \
         && exec getent \"$@\"",
        resolv.display(),
        nsswitch.display()
    );
    ns.command("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
            "getent",
        ])
        .args(args)
        .output()
        .expect("running getent")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn glibc_getaddrinfo_over_udp_and_tcp_gets_what_the_group_may_resolve() {
    let test = "glibc_getaddrinfo_over_udp_and_tcp_gets_what_the_group_may_resolve";
    if !preconditions_met(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = example_config(dir.path());
    let ns = Netns::create("stub");
    let mut cmd = ns.command(DNSWARD);
    cmd.current_dir(dir.path());
    let server = Dnsward::serve(cmd, &config, dir.path().join("dnsward.log"));
    assert_eq!(server.udp.port(), 53);

    for (transport, options) in [("udp", "options edns0 trust-ad"), ("tcp", "options use-vc")] {
        let before = answered_over(&ns, transport);
        let resolv = dir.path().join(format!("resolv-{transport}.conf"));
        std::fs::write(&resolv, format!("nameserver 127.0.0.1\n{options}\n")).unwrap();

        // A and AAAA asked together: every address of the name, both families.
        let out = getent(&ns, &resolv, &["ahosts", "api.corp.internal"]);
        let text = stdout(&out);
        assert!(out.status.success(), "{transport}: {text}{out:?}");
        for addr in ["10.0.1.10", "10.0.1.11", "2001:db8::1:10"] {
            assert!(
                text.contains(addr),
                "{transport}: {addr} missing from\n{text}"
            );
        }
        // A CNAME in the zone: the alias and its target's address.
        let out = getent(&ns, &resolv, &["hosts", "registry.corp.internal"]);
        let text = stdout(&out);
        assert!(
            text.contains("192.0.2.30") && text.contains("registry.corp.internal"),
            "{transport}: {text}{out:?}"
        );
        // A name outside the group's allowlist does not resolve (exit 2: not found), because
        // dnsward blocked it (not because nothing answered).
        let blocked_before = blocked(&ns);
        let out = getent(&ns, &resolv, &["ahosts", "pastebin.com"]);
        assert_eq!(out.status.code(), Some(2), "{transport}: {out:?}");
        assert!(stdout(&out).is_empty(), "{transport}: {out:?}");
        let was_blocked = poll(|| blocked(&ns) - blocked_before >= 1.0);
        assert!(
            was_blocked,
            "{transport}: dnsward did not block pastebin.com"
        );
        // The queries really went over this transport (A and AAAA for three names at least;
        // a UDP answer is counted just after it is sent, so read until it is).
        let asked = poll(|| answered_over(&ns, transport) - before >= 6.0);
        assert!(
            asked,
            "{transport}: dnsward answered fewer than 6 queries over it"
        );
    }
    let aaaa = common::metric_sum(
        &metrics(&ns),
        "dnsward_queries_total",
        &[("verdict", "allow"), ("qtype", "AAAA")],
    )
    .unwrap_or(0.0);
    assert!(aaaa >= 2.0, "AAAA asked and allowed: {aaaa}");
    server.stop();
}
