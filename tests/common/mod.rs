//! Helpers shared by the tests: running real programs (dnsward, dns2tcp, iodine) and reading
//! what they leave behind (logs, `/metrics`, event files).
#![allow(dead_code)] // each test binary uses a subset

pub mod tunnel;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The `dnsward` binary cargo built for these tests.
pub const DNSWARD: &str = env!("CARGO_BIN_EXE_dnsward");

/// True when running under CI (`CI=true`), where every test must really run.
pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| v == "true")
}

/// Reports that `test` cannot run here because of `why`. Under `CI=true` that is a broken CI
/// setup (`.ci/run` installs the tools and runs as root), so it panics with the reason; elsewhere
/// it prints `SKIPPED {test}: {why}` and returns `false`, for a precondition check that returns
/// "can run": `Err(e) => return cannot_run(test, &format!("... {e}"))`.
pub fn cannot_run(test: &str, why: &str) -> bool {
    assert!(
        !in_ci(),
        "{test} cannot run although CI=true: {why}; CI must run it"
    );
    eprintln!("SKIPPED {test}: {why}");
    false
}

/// True when every program in `tools` can be started (run with `probe`, e.g. `-v`; its exit
/// status does not matter, some print their usage and fail); otherwise the test cannot run
/// ([`cannot_run`]), with a hint to install `package`, which `.ci/run` does.
pub fn tools_runnable(test: &str, tools: &[&str], probe: &str, package: &str) -> bool {
    for tool in tools {
        if let Err(e) = Command::new(tool)
            .arg(probe)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
        {
            return cannot_run(
                test,
                &format!("`{tool}` is not runnable ({e}); install {package} (.ci/run does)"),
            );
        }
    }
    true
}

/// How long a process may take to come up, and to exit after SIGTERM. Deadlines for a hung
/// child, not performance assertions.
pub const STARTUP_DEADLINE: Duration = Duration::from_secs(60);
pub const EXIT_DEADLINE: Duration = Duration::from_secs(30);

/// A child process that is killed when dropped, so a failing assertion leaves nothing running.
/// Its stdout and stderr go to a log file, read for failure messages.
pub struct ChildGuard {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl ChildGuard {
    pub fn spawn(name: &'static str, cmd: &mut Command, log: PathBuf) -> Self {
        let out = File::create(&log).unwrap_or_else(|e| panic!("creating {}: {e}", log.display()));
        let err = out.try_clone().expect("cloning the log file handle");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {name}: {e}"));
        Self { name, child, log }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Exit status if the process has ended.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits until the log contains `needle`; panics with the log if the process exits or the
    /// deadline passes first.
    pub fn wait_for_log(&mut self, needle: &str, deadline: Duration) -> String {
        let until = Instant::now() + deadline;
        loop {
            let log = strip_ansi(&self.log());
            if log.contains(needle) {
                return log;
            }
            if let Some(status) = self.exited() {
                panic!(
                    "{} exited ({status}) before logging {needle:?}:\n{log}",
                    self.name
                );
            }
            assert!(
                Instant::now() < until,
                "{} did not log {needle:?} within {deadline:?}:\n{log}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, the way an operator stops dnsward (it flushes its events then), and wait.
    pub fn terminate(mut self) -> (ExitStatus, String) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("running kill");
        assert!(sent.success(), "kill -TERM {pid} ({}) failed", self.name);
        let until = Instant::now() + EXIT_DEADLINE;
        loop {
            if let Some(status) = self.exited() {
                return (status, self.log());
            }
            assert!(
                Instant::now() < until,
                "{} did not exit after SIGTERM:\n{}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A running `dnsward serve` and the addresses it logged as bound. Killed when dropped, so a
/// failing assertion never leaves a server behind.
pub struct Dnsward {
    child: ChildGuard,
    pub udp: SocketAddr,
    pub tcp: SocketAddr,
    /// The admin endpoint, when the config has one.
    pub admin: Option<SocketAddr>,
}

impl Dnsward {
    /// Runs `dnsward serve --config CONFIG` through `cmd` (`Command::new(DNSWARD)`, or a wrapper
    /// such as `ip netns exec NS DNSWARD`) with its output in `log`, and waits for the
    /// `dnsward serving` line that names the bound addresses.
    pub fn serve(mut cmd: Command, config: &Path, log: PathBuf) -> Self {
        cmd.arg("serve")
            .arg("--config")
            .arg(config)
            .env("DNSWARD_LOG", "info");
        let mut child = ChildGuard::spawn("dnsward", &mut cmd, log);
        let log = child.wait_for_log("dnsward serving", STARTUP_DEADLINE);
        let line = log
            .lines()
            .find(|l| l.contains("dnsward serving"))
            .unwrap_or_default();
        let addr = |key| {
            logged_addr(line, key)
                .unwrap_or_else(|| panic!("cannot read the {key} address from {line:?}"))
        };
        Self {
            udp: addr("udp"),
            tcp: addr("tcp"),
            admin: logged_addr(line, "admin"),
            child,
        }
    }

    /// Everything dnsward logged so far, without colours.
    pub fn log(&self) -> String {
        strip_ansi(&self.child.log())
    }

    /// `GET /metrics` from the admin endpoint.
    pub fn metrics(&self) -> String {
        fetch_metrics(self.admin.expect("the config has no admin endpoint"))
    }

    /// SIGTERM, the way an operator stops dnsward; it must exit cleanly (it flushes its events
    /// then). Returns its log.
    pub fn stop(self) -> String {
        let (status, log) = self.child.terminate();
        let log = strip_ansi(&log);
        assert!(
            status.success(),
            "dnsward exited with {status} after SIGTERM:\n{log}"
        );
        log
    }
}

/// The first address in `key=[a, b]` or `key=Some(a)` of dnsward's `serving` log line.
pub fn logged_addr(line: &str, key: &str) -> Option<SocketAddr> {
    let start = line.find(&format!(" {key}="))? + key.len() + 2;
    let value = &line[start..];
    let (value, list) = match value.strip_prefix('[') {
        Some(rest) => (rest, true),
        None => (value.strip_prefix("Some(")?, false),
    };
    let first = value.split([',', ' ', ')']).next()?;
    // The list's closing bracket after its only entry (`[127.0.0.1:53]`, `[[::1]:53]`); a
    // first of several ends at its comma.
    let first = if list {
        first.strip_suffix(']').unwrap_or(first)
    } else {
        first
    };
    first.parse().ok()
}

/// `GET /metrics` from an admin endpoint, over a plain socket.
pub fn fetch_metrics(admin: SocketAddr) -> String {
    try_fetch_metrics(admin).unwrap_or_else(|e| panic!("GET /metrics from {admin}: {e}"))
}

/// `GET /metrics`, or why it could not be had.
pub fn try_fetch_metrics(admin: SocketAddr) -> std::io::Result<String> {
    let mut conn = TcpStream::connect_timeout(&admin, Duration::from_secs(5))?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: dnsward\r\nConnection: close\r\n\r\n")?;
    let mut body = String::new();
    conn.read_to_string(&mut body)?;
    Ok(body)
}

/// Every event in a dnsward JSON-lines event file.
pub fn read_events(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("reading events file {}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Remove ANSI colour sequences (`ESC [ ... letter`) from dnsward's text log.
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The samples of metric `name` in a Prometheus text page, as (labels, value). Label values are
/// taken as written (dnsward's never need escapes); values printed as floats are parsed as such.
pub fn metric_samples(metrics: &str, name: &str) -> Vec<(BTreeMap<String, String>, f64)> {
    metrics
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            let (labels, value) = match rest.strip_prefix('{') {
                Some(rest) => {
                    let (labels, value) = rest.split_once('}')?;
                    (parse_labels(labels), value)
                }
                None => (BTreeMap::new(), rest),
            };
            // A longer metric name with `name` as its prefix has no space here.
            let value = value.strip_prefix(' ')?.split(' ').next()?;
            Some((labels, value.parse().ok()?))
        })
        .collect()
}

fn parse_labels(text: &str) -> BTreeMap<String, String> {
    text.split("\",")
        .filter_map(|pair| {
            let (key, value) = pair.split_once("=\"")?;
            Some((key.to_string(), value.trim_end_matches('"').to_string()))
        })
        .collect()
}

/// The sum of metric `name` over its samples that carry every label in `labels`; `None` when no
/// sample does (the series was never registered or rendered).
pub fn metric_sum(metrics: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let matching: Vec<f64> = metric_samples(metrics, name)
        .into_iter()
        .filter(|(have, _)| {
            labels
                .iter()
                .all(|(k, v)| have.get(*k).is_some_and(|h| h == v))
        })
        .map(|(_, value)| value)
        .collect();
    (!matching.is_empty()).then(|| matching.iter().sum())
}

/// A network namespace with loopback up, deleted on drop (which also removes its veths, its
/// nftables table and everything bound in it).
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn create(role: &str) -> Self {
        // Unique per test too: tests of this file run in parallel in one process.
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("dnsward-{}-{n}-{role}", std::process::id());
        let _ = Command::new("ip")
            .args(["netns", "delete", &name])
            .stderr(Stdio::null())
            .status();
        run(Command::new("ip").args(["netns", "add", &name]));
        let ns = Self { name };
        ns.run(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        run(self.command(args[0]).args(&args[1..]))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .status();
    }
}

/// Run `cmd`, which must succeed; its output.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
