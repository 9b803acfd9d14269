//! Helpers shared by the tests: running real programs (dnsward, dns2tcp, iodine) and reading
//! what they leave behind (logs, `/metrics`, event files).
#![allow(dead_code)] // each test binary uses a subset

use std::collections::BTreeMap;
use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

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

/// How long a process may take to exit after SIGTERM.
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

/// The policy half of a tunnel test's dnsward config: per-second re-alerts (for a score
/// timeline), the default containment, and one allowlist group for the tunnel client that may
/// resolve only the tunnel zone, enforcing or in monitor-only mode.
pub fn tunnel_policy_toml(group: &str, client_ip: &str, zone: &str, monitor_only: bool) -> String {
    format!(
        r#"[detect]
# Re-alert every second while the score stays high, for the report's score timeline.
# Scoring itself is unchanged.
alert_interval = "1s"

[containment]
throttle_qps = 2
throttle_burst = 5
throttle_for = "10m"
sinkhole_for = "30m"
quarantine_for = "1h"

[[groups]]
name = "{group}"
cidrs = ["{client_ip}/32"]
mode = "allowlist"
allow = ["*.{zone}", "{zone}"]
block = "nxdomain"

[groups.detect]
monitor_only = {monitor_only}
alert = 60
throttle = 70
sinkhole = 80
quarantine = 90
"#
    )
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
