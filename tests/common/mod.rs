//! Helpers shared by the end-to-end tests that run real programs (dnsward, dns2tcp, iodine).
#![allow(dead_code)] // each test binary uses a subset

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

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
