//! The analyst and audit commands of the real binary, on fixture and generated event logs, and
//! `dnsward check` on zone-file escapes.

use std::path::Path;
use std::process::Command;

fn dnsward(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_dnsward"))
        .args(args)
        .output()
        .expect("runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/analyst/events.jsonl"
);

#[test]
fn alerts_ranks_suspects_from_the_log_and_its_rotated_files() {
    let (code, out, err) = dnsward(&["alerts", "--file", FIXTURE, "--limit", "0"]);
    assert_eq!(code, 0, "{err}");
    let rows: Vec<&str> = out
        .lines()
        .filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()))
        .collect();
    assert!(rows.len() >= 3, "{out}");
    assert!(
        rows[0].contains("127.0.0.62") && rows[0].contains("exfil.test"),
        "highest score first: {out}"
    );
    assert!(out.contains("samples:"));
    assert!(
        err.contains("not events"),
        "junk lines are reported, not hidden: {err}"
    );
    let (code, out, _) = dnsward(&[
        "alerts",
        "--file",
        FIXTURE,
        "--client",
        "127.0.0.61",
        "--json",
    ]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let suspects = v.as_array().unwrap();
    assert!(
        !suspects.is_empty(),
        "the fixture has alerts for 127.0.0.61: {out}"
    );
    assert!(
        suspects.iter().all(|s| s["client"] == "127.0.0.61"),
        "{out}"
    );
    let (code, _, err) = dnsward(&["alerts", "--file", FIXTURE, "--since", "forever"]);
    assert_ne!(code, 0);
    assert!(err.contains("forever"), "{err}");
}

#[test]
fn events_tail_prints_the_last_events_readably() {
    let (code, out, err) = dnsward(&["events", "tail", "--file", FIXTURE, "-n", "2", "--pretty"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 2, "{out}");
    let (code, out, _) = dnsward(&["events", "tail", "--file", FIXTURE, "--kind", "alert"]);
    assert_eq!(code, 0);
    assert!(out.lines().count() > 0, "the fixture has alert events");
    assert!(
        out.lines().all(|l| l.contains("\"kind\":\"alert\"")),
        "{out}"
    );
    let (code, _, err) = dnsward(&["events", "tail", "--file", "/nonexistent/events.jsonl"]);
    assert_ne!(code, 0);
    assert!(err.contains("nonexistent"), "{err}");
}

#[test]
fn audit_verify_passes_a_clean_chain_and_names_a_tampered_record() {
    // Produce a real chained log with the sink and the chain encoder.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let cfg: dnsward::events::sink::EventsConfig =
            toml::from_str(&format!("sink = \"file\"\npath = \"{}\"", path.display())).unwrap();
        let audit = dnsward::govern::audit::AuditConfig::default();
        let (tx, handle) =
            dnsward::events::sink::spawn_with_encoder(&cfg, audit.encoder(&cfg).unwrap()).unwrap();
        for i in 0..5 {
            tx.emit(dnsward::events::Event::now(
                1,
                dnsward::events::EventBody::Policy(dnsward::events::PolicyEvent {
                    action: "loaded".into(),
                    hash: None,
                    actor: Some(format!("a{i}")),
                    message: None,
                }),
            ));
        }
        drop(tx);
        handle.shutdown().await;
    });
    let p = path.to_str().unwrap();
    let (code, out, err) = dnsward(&["audit", "verify", p]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("OK: 5 record(s)"), "{out}");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replacen("\"a2\"", "\"mallory\"", 1)).unwrap();
    let (code, out, _) = dnsward(&["audit", "verify", p, "--json"]);
    assert_eq!(code, 2);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["ok"], false);
    assert_eq!(report["problems"][0]["kind"], "modified");
    assert_eq!(report["problems"][0]["line"], 3);
    assert!(Path::new(p).exists());
}

#[test]
fn audit_verify_refuses_a_directory_or_a_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = dnsward(&["audit", "verify", dir.path().to_str().unwrap()]);
    assert_eq!(code, 1, "a directory is not an empty chain: {out}{err}");
    assert!(err.contains("not a regular file"), "{err}");
    let missing = dir.path().join("events.jsonl");
    let (code, _, err) = dnsward(&["audit", "verify", missing.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("no such file"), "{err}");
}

#[test]
fn review_needs_a_token_and_says_when_the_api_is_unreachable() {
    let out = Command::new(env!("CARGO_BIN_EXE_dnsward"))
        .args(["review", "list"])
        .env_remove("DNSWARD_TOKEN")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("DNSWARD_TOKEN"),
        "{out:?}"
    );
    // A port nothing listens on: unreachable is exit 2, not a refusal (1) or success.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = Command::new(env!("CARGO_BIN_EXE_dnsward"))
        .args([
            "review",
            "--api",
            &format!("http://127.0.0.1:{port}"),
            "list",
        ])
        .env("DNSWARD_TOKEN", "x".repeat(40))
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    // It says why, on a line of its own.
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("dnsward: cannot reach"), "{err}");
    assert!(err.to_lowercase().contains("refused"), "the cause: {err}");
    assert!(err.ends_with('\n'), "{err:?}");
    // Not a URL: a usage error, before any request.
    let out = Command::new(env!("CARGO_BIN_EXE_dnsward"))
        .args(["review", "--api", "notaurl", "list"])
        .env("DNSWARD_TOKEN", "x".repeat(40))
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not an http:// or https:// URL"),
        "{out:?}"
    );
}

#[test]
fn check_reads_zone_file_escapes_as_decimal_and_names_a_bad_one_by_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let zone = dir.path().join("esc.internal.zone");
    let config = dir.path().join("dnsward.toml");
    std::fs::write(
        &config,
        "[server]\nlisten = [\"127.0.0.1:0\"]\n[zones]\ndir = \".\"\n\
         [[groups]]\nname = \"g\"\ncidrs = [\"127.0.0.1/32\"]\nallow = [\"*.esc.internal\"]\n",
    )
    .unwrap();
    let soa = "$ORIGIN esc.internal.\n@ 60 IN SOA ns hm 1 2 3 4 60\n";
    std::fs::write(
        &zone,
        format!("{soa}dec\\065 IN A 10.0.0.1\nq\\092r IN A 10.0.0.2\n"),
    )
    .unwrap();
    let (code, out, err) = dnsward(&["check", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("OK"), "{out}");

    std::fs::write(
        &zone,
        format!("{soa}ok IN A 10.0.0.1\nq\\09r IN A 10.0.0.2\n"),
    )
    .unwrap();
    let (code, out, err) = dnsward(&["check", "--config", config.to_str().unwrap()]);
    assert_ne!(code, 0, "{out}{err}");
    let text = format!("{out}{err}");
    assert!(text.contains("esc.internal.zone:4"), "{text}");
    assert!(text.contains("three decimal digits"), "{text}");
}

/// What an admin (or a stolen admin token) put in a reload's actor and message: screen clear,
/// colour, a forged row after a newline, a carriage return and the bell.
const HOSTILE_ACTOR: &str = "eve\u{1b}[2J\u{1b}[31mRED";
const HOSTILE_MESSAGE: &str = "line1\nFAKE 99 forged\r\u{7}";

/// No byte that drives a terminal: C0 controls (newline ends lines and is allowed), DEL, C1.
fn assert_terminal_safe(out: &str) {
    let bad: Vec<char> = out
        .chars()
        .filter(|c| c.is_control() && *c != '\n')
        .collect();
    assert!(
        bad.is_empty(),
        "control characters {bad:?} reach the terminal:\n{out}"
    );
}

#[test]
fn policy_history_and_events_tail_escape_control_characters() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let config = dir.path().join("dnsward.toml");
    std::fs::write(
        &config,
        format!("[store]\nstate_dir = {:?}\n", state.display().to_string()),
    )
    .unwrap();
    let store = dnsward::govern::store::PolicyStore::open(&state).unwrap();
    store
        .record(&config, &[], "load", None, Some("startup"))
        .unwrap();
    std::fs::write(
        &config,
        format!("{}# changed\n", std::fs::read_to_string(&config).unwrap()),
    )
    .unwrap();
    store
        .record(
            &config,
            &[],
            "reload",
            Some(HOSTILE_ACTOR),
            Some(HOSTILE_MESSAGE),
        )
        .unwrap();

    let (code, out, err) = dnsward(&["policy", "history", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert_terminal_safe(&out);
    assert_eq!(
        out.lines().count(),
        3,
        "one header and two rows, no forged row: {out}"
    );
    assert!(out.contains("eve\\u001b[2J\\u001b[31mRED"), "{out}");
    assert!(out.contains("line1\\nFAKE 99 forged\\r\\u0007"), "{out}");
    // The JSON form keeps the exact text (JSON escapes it).
    let (code, out, _) = dnsward(&[
        "policy",
        "history",
        "--json",
        "--config",
        config.to_str().unwrap(),
    ]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[1]["author"], HOSTILE_ACTOR);
    assert_eq!(v[1]["message"], HOSTILE_MESSAGE);

    // The same actor and message in a policy event, shown by `events tail --pretty`; and a
    // line that is not JSON at all.
    let events = dir.path().join("events.jsonl");
    let event = serde_json::json!({
        "ts": "2026-12-03T02:50:00.000000Z",
        "kind": "policy",
        "policy_version": 2,
        "action": "reloaded",
        "actor": HOSTILE_ACTOR,
        "message": HOSTILE_MESSAGE,
    });
    std::fs::write(&events, format!("{event}\nnot json \u{1b}]0;title\u{7}\n")).unwrap();
    let (code, out, err) = dnsward(&[
        "events",
        "tail",
        "--file",
        events.to_str().unwrap(),
        "--pretty",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_terminal_safe(&out);
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(out.contains("by eve\\u001b[2J"), "{out}");
    assert!(out.contains("not json \\u001b]0;title\\u0007"), "{out}");
}

/// `dnsward audit verify FILE | head -1`: the reader goes away; the command ends quietly (the
/// status a program killed by SIGPIPE gives) instead of panicking with status 101.
#[test]
fn a_closed_stdout_ends_a_command_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("events.jsonl");
    let line = serde_json::json!({"ts": "2026-12-03T02:50:00.000000Z", "kind": "admin"});
    std::fs::write(&log, format!("{line}\n").repeat(50)).unwrap();
    for args in [
        vec!["audit", "verify", log.to_str().unwrap()],
        vec!["audit", "verify", "--json", log.to_str().unwrap()],
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_dnsward"))
            .args(&args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Close the reading end before the command writes (it reads and hashes the file first).
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(
            matches!(out.status.code(), Some(0 | 2 | 141)),
            "{args:?}: {:?} {stderr}",
            out.status
        );
    }
}

#[test]
fn events_tail_refuses_a_kind_it_does_not_know_instead_of_printing_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("events.jsonl");
    std::fs::write(
        &log,
        "{\"ts\":\"2026-12-03T10:00:00Z\",\"policy_version\":1,\"kind\":\"alert\",\"client\":\"127.0.0.10\",\"domain\":\"x.example\",\"score\":70}\n",
    )
    .unwrap();
    let log = log.to_str().unwrap();
    let (code, _, err) = dnsward(&["events", "tail", "--file", log, "--kind", "alerts"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("invalid value 'alerts'") && err.contains("alert"),
        "{err}"
    );
    let (code, out, err) = dnsward(&["events", "tail", "--file", log, "--kind", "ALERT"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("x.example"), "{out}");
}

/// A SIGHUP while the server is still starting (a large allowlist compiling) is a reload due
/// once it serves, not the end of the process: the default action used to kill it with an exit
/// systemd counts as clean, so `Restart=on-failure` left the resolver down.
#[test]
fn a_sighup_during_startup_does_not_kill_the_server() {
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    // ~400k list entries: startup takes long enough for a HUP to land inside it.
    let mut list = String::with_capacity(12 << 20);
    for i in 0..400_000 {
        list.push_str(&format!("host{i}.allowed-example.com\n"));
    }
    std::fs::write(dir.path().join("allow.txt"), list).unwrap();
    let events = dir.path().join("events.jsonl");
    std::fs::write(
        dir.path().join("dnsward.toml"),
        format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\n[admin]\nlisten = \"\"\n[zones]\ndir = \"{}\"\n\
             [events]\nsink = \"file\"\npath = \"{}\"\n\
             [[groups]]\nname = \"g\"\ncidrs = [\"127.0.0.1/32\"]\nallow_files = [\"allow.txt\"]\n",
            concat!(env!("CARGO_MANIFEST_DIR"), "/zones"),
            events.display()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_dnsward"))
        .args(["serve", "--config"])
        .arg(dir.path().join("dnsward.toml"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = i32::try_from(child.id()).unwrap();
    std::thread::sleep(Duration::from_millis(60));
    // SAFETY: signals our own child.
    unsafe { libc::kill(pid, libc::SIGHUP) };
    // Serving: the policy was loaded, then reloaded for the early HUP.
    let started = Instant::now();
    let mut reloaded = false;
    while started.elapsed() < Duration::from_secs(30) {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the server exited on an early SIGHUP: {status:?}");
        }
        let log = std::fs::read_to_string(&events).unwrap_or_default();
        if log.contains("\"SIGHUP\"") || log.contains("reload") {
            reloaded = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let alive = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let _ = child.wait();
    assert!(alive, "still serving");
    assert!(reloaded, "the early HUP became a reload once serving");
}

/// A SIGHUP reload that changes a setting only a restart applies says so in the log (a SIGHUP
/// has no reply to carry the warning; it was in the event's message alone).
#[test]
fn a_sighup_that_changes_a_restart_only_setting_warns_in_the_log() {
    use std::io::Read;
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    let config = dir.path().join("dnsward.toml");
    let write = |idle: &str| {
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = [\"127.0.0.1:0\"]\ntcp_idle_timeout = \"{idle}\"\n[admin]\nlisten = \"\"\n\
                 [zones]\ndir = \"{}\"\n[events]\nsink = \"file\"\npath = \"{}\"\n\
                 [[groups]]\nname = \"g\"\ncidrs = [\"127.0.0.1/32\"]\nallow = [\"*.example.com\"]\n",
                concat!(env!("CARGO_MANIFEST_DIR"), "/zones"),
                events.display()
            ),
        )
        .unwrap();
    };
    write("10s");
    let mut child = Command::new(env!("CARGO_BIN_EXE_dnsward"))
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = i32::try_from(child.id()).unwrap();
    // Until the event log names `action` (at most 20 s).
    let wait_for = |action: &str| {
        let started = Instant::now();
        while !std::fs::read_to_string(&events)
            .unwrap_or_default()
            .contains(&format!("\"{action}\""))
            && started.elapsed() < Duration::from_secs(20)
        {
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_for("loaded");
    write("20s");
    // SAFETY: signals our own child.
    unsafe { libc::kill(pid, libc::SIGHUP) };
    wait_for("reloaded");
    let _ = child.kill();
    let _ = child.wait();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(
        err.contains("[server] changed and takes effect only after a restart"),
        "{err}"
    );
}

/// A per-client cap above its listener's total is valid but bounds nothing: `check` says so in
/// a note and still exits 0; a cap within the total draws no note.
#[test]
fn check_notes_a_per_client_cap_above_the_listeners_total() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("dnsward.toml");
    let write = |per_client: usize| {
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = [\"127.0.0.1:0\"]\ntcp_max_connections = 64\n\
                 tcp_max_connections_per_client = {per_client}\n\
                 [upstream]\nservers = [{{ address = \"127.0.0.1:53\" }}]\n\
                 [[groups]]\nname = \"g\"\ncidrs = [\"127.0.0.1/32\"]\nallow = [\"*.example.com\"]\n"
            ),
        )
        .unwrap();
    };
    write(100);
    let (code, out, err) = dnsward(&["check", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("note: server.tcp_max_connections_per_client")
            && out.contains("(100) is above the listener's total (64)"),
        "{out}"
    );
    write(64);
    let (code, out, err) = dnsward(&["check", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!out.contains("note:"), "{out}");
}

/// Counts past what a counting semaphore holds (2^61) passed `check` and then panicked the
/// listener at start (TCP, admin) or on the first TCP query (pipelining): each is now a
/// located range error, as other bounded settings are.
#[test]
fn check_refuses_connection_and_pipelining_counts_past_their_range() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("dnsward.toml");
    let huge = "4611686018427387904";
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\ntcp_max_connections = {huge}\n\
             tcp_max_pipelined = {huge}\ntcp_max_connections_per_client = {huge}\n\
             max_inflight_misses = {huge}\n\
             [admin]\nmax_connections = {huge}\n\
             [upstream]\nservers = [{{ address = \"127.0.0.1:53\" }}]\n\
             [[groups]]\nname = \"g\"\ncidrs = [\"127.0.0.1/32\"]\nallow = [\"*.example.com\"]\n"
        ),
    )
    .unwrap();
    let (code, out, err) = dnsward(&["check", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}{err}");
    for key in [
        "server.tcp_max_connections: must be between 1 and 1048576",
        "server.tcp_max_pipelined: must be between 1 and 65535",
        "server.tcp_max_connections_per_client: must be between",
        "server.max_inflight_misses: must be between",
        "admin.max_connections: must be between",
    ] {
        assert!(err.contains(key), "{key} in {err}");
    }
}

/// A list path that names a kernel interface (it says it is a regular file of size 0, and
/// `/proc/kmsg` then blocks the reader) is refused at once with a clear error, through a
/// symlink too; `check` hung on `/proc/kmsg`.
#[cfg(target_os = "linux")]
#[test]
fn check_refuses_a_kernel_interface_as_a_list_file_without_reading_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("dnsward.toml");
    // `/proc/kmsg` hung it; a container may mask that one, so any procfs file stands for it.
    std::os::unix::fs::symlink("/proc/self/stat", dir.path().join("live.txt")).unwrap();
    std::fs::write(
        &config,
        "[server]\nlisten = [\"127.0.0.1:0\"]\n\
         [upstream]\nservers = [{ address = \"127.0.0.1:53\" }]\n\
         [[groups]]\nname = \"g\"\ncidrs = [\"127.0.0.1/32\"]\nallow_files = [\"live.txt\", \"/proc/self/status\"]\n",
    )
    .unwrap();
    let started = std::time::Instant::now();
    let (code, out, err) = dnsward(&["check", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    assert_eq!(
        err.matches("kernel interface on procfs").count(),
        2,
        "{err}"
    );
}

/// A `dnsward serve` run with a file sink, a state directory and an audit key: started, then
/// stopped with SIGTERM once serving (a shutdown checkpoint). Returns what it logged.
fn serve_once(config: &Path) -> String {
    use std::io::{BufRead, BufReader, Read};
    use std::process::Stdio;
    use std::time::Duration;
    let mut child = Command::new(env!("CARGO_BIN_EXE_dnsward"))
        .args(["serve", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut log = String::new();
    loop {
        let mut line = String::new();
        if stderr.read_line(&mut line).unwrap() == 0 {
            let _ = child.wait();
            panic!("the server ended before serving: {log}");
        }
        log.push_str(&line);
        if line.contains("dnsward serving") {
            break;
        }
    }
    // The signal handlers are installed right after that line.
    std::thread::sleep(Duration::from_millis(500));
    let pid = i32::try_from(child.id()).unwrap();
    // SAFETY: signals our own child.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    stderr.read_to_string(&mut log).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}: {log}");
    log
}

/// A crash while a checkpoint was being written leaves its line cut, with no `\n`; two restarts
/// later `audit verify` reports a torn line (a crash), not tampering, and the checkpoints went on
/// numbering after the last whole one.
#[test]
fn a_checkpoint_torn_by_a_crash_is_a_torn_line_not_tampering_after_restarts() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("audit.key");
    std::fs::write(&key, "0123456789abcdef0123456789abcdef\n").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let state = dir.path().join("state");
    let events = dir.path().join("events.jsonl");
    let config = dir.path().join("dnsward.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\n[admin]\nlisten = \"\"\n[zones]\ndir = {:?}\n\
             [events]\nsink = \"file\"\npath = {:?}\n[store]\nstate_dir = {:?}\n\
             [audit]\nkey_file = {:?}\n\
             [[groups]]\nname = \"g\"\ncidrs = [\"127.0.0.1/32\"]\nallow = [\"example.com\"]\n",
            concat!(env!("CARGO_MANIFEST_DIR"), "/zones"),
            events.display().to_string(),
            state.display().to_string(),
            key.display().to_string(),
        ),
    )
    .unwrap();
    let checkpoints = state.join("checkpoints.jsonl");
    // `audit verify` of the log against the checkpoints, its report as JSON or as text.
    let verify_as = |json: bool| {
        let mut args = vec![
            "audit",
            "verify",
            events.to_str().unwrap(),
            "--key-file",
            key.to_str().unwrap(),
            "--checkpoints",
            checkpoints.to_str().unwrap(),
        ];
        if json {
            args.push("--json");
        }
        dnsward(&args)
    };
    let verify = || verify_as(true);
    serve_once(&config);
    serve_once(&config);
    let (code, out, err) = verify();
    assert_eq!(code, 0, "{out}{err}");
    // The crash: the last checkpoint (n 1) lost its last 40 bytes and its `\n`.
    let bytes = std::fs::read(&checkpoints).unwrap();
    std::fs::write(&checkpoints, &bytes[..bytes.len() - 41]).unwrap();
    let log = serve_once(&config);
    assert!(
        log.contains("checkpoint file ends with a torn line"),
        "the torn line is logged: {log}"
    );
    serve_once(&config);
    let text = std::fs::read_to_string(&checkpoints).unwrap();
    let numbers: Vec<Option<u64>> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v["n"].as_u64())
        })
        .collect();
    assert_eq!(numbers, [Some(0), None, Some(1), Some(2)], "{text}");

    let (code, out, err) = verify();
    assert_eq!(
        code, 2,
        "a torn line is reported, never accepted: {out}{err}"
    );
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["ok"], true, "the event chain is intact: {out}");
    let problems = report["checkpoints"]["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{out}");
    assert_eq!(problems[0]["kind"], "torn_line", "{out}");
    assert_eq!(report["checkpoints"]["last"]["n"], 2, "{out}");
    let (_, out, _) = verify_as(false);
    assert!(out.contains("checkpoints: TORN LINES, 3 read"), "{out}");
    assert!(
        out.contains("torn_line: ")
            && out.contains("checkpoints.jsonl:2: not a record, and the chain continues across it"),
        "{out}"
    );
    assert!(!out.contains("FAILED") && !out.contains("removed"), "{out}");
}
