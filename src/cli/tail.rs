//! `dnsward events tail`: the event log as it grows, across rotations, as JSON lines or one
//! readable line per event ([`TailFormat::Pretty`]).
//!
//! Lines are read through the one event-log reader ([`LogLines`]), which holds a line back until
//! its newline has been written, so a write in progress is never shown torn.
//!
//! Bounds: `tail` holds at most one partial line of [`MAX_LINE_BYTES`] (a longer one is dropped up
//! to its newline), reads at most [`READ_CHUNK_BYTES`] per step, and keeps at most `last` lines
//! while catching up.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::fs::{self, File, Metadata};
use std::future::Future;
use std::io::{self, BufReader};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::EventsAction;
use crate::events::reader::LogLines;
pub use crate::events::reader::MAX_LINE_BYTES;
use crate::events::{AlertEvent, ContainmentEvent, PolicyEvent, QueryEvent};
use crate::printable::escaped;
use crate::review::suspects::parse_time;

/// Most bytes `tail` reads from the file in one step, so catching up on a large file streams
/// instead of loading it whole.
pub const READ_CHUNK_BYTES: usize = 64 * 1024;

/// How [`tail`] prints each event.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TailFormat {
    /// The line as written: one JSON object, for `jq` and log shippers.
    #[default]
    Json,
    /// One readable line per event, e.g.
    /// `19:41:40.907 block   127.0.0.1 agents  pastebin.com A  not allowlisted` or
    /// `19:41:41.002 ALERT score=74 127.0.0.61 tunnel tun.example action=throttle`.
    /// Times are the UTC time of day from `ts`; a line that is not an event is printed as is.
    Pretty,
}

/// What [`tail`] prints and for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailOptions {
    /// Keep printing new lines as they are written, across rotations, until `stop`.
    pub follow: bool,
    /// Of the lines already in the file, print only the last this many (after the `kinds`
    /// filter); `None` prints them all.
    pub last: Option<usize>,
    /// Only events whose `kind` is one of these; `None` prints every line.
    pub kinds: Option<Vec<String>>,
    /// JSON as written, or one readable line.
    pub format: TailFormat,
    /// How often to look for new lines when following.
    pub poll_every: Duration,
}

impl Default for TailOptions {
    fn default() -> Self {
        Self {
            follow: false,
            last: None,
            kinds: None,
            format: TailFormat::Json,
            poll_every: Duration::from_millis(200),
        }
    }
}

/// Print the event log at `path` to `out`: the lines already there (or the last `opts.last`),
/// then, with `opts.follow`, each new complete line until `stop` completes.
///
/// Following polls every `opts.poll_every`. A line is printed only once its newline has been
/// written, so a write in progress is never shown torn. Rotation is followed: when `path` names
/// a different file (the sink renamed it to `.1` and started a new one) the old file is read to
/// its end and the new one from its start; when the file shrinks (truncated) it is read again
/// from the start. File reads run on tokio's blocking pool.
///
/// # Errors
/// When `path` cannot be opened at the start or read later, or writing to `out` fails. A missing
/// file during rotation is not an error: the new one is waited for.
pub async fn tail<W, S>(path: &Path, opts: &TailOptions, mut out: W, stop: S) -> io::Result<()>
where
    W: AsyncWrite + Unpin,
    S: Future,
{
    let (path, start_opts) = (path.to_path_buf(), opts.clone());
    let mut follower = tokio::task::spawn_blocking(move || LogFollower::open(path, start_opts))
        .await
        .map_err(io::Error::other)??;
    let mut stop = std::pin::pin!(stop);
    loop {
        loop {
            let (back, stepped) = tokio::task::spawn_blocking(move || {
                let mut lines = Vec::new();
                let more = follower.step(&mut lines);
                (follower, more.map(|more| (more, lines)))
            })
            .await
            .map_err(io::Error::other)?;
            follower = back;
            let (more, lines) = stepped?;
            for line in lines {
                out.write_all(line.as_bytes()).await?;
                out.write_all(b"\n").await?;
            }
            if !more {
                break;
            }
        }
        out.flush().await?;
        if !opts.follow {
            return Ok(());
        }
        tokio::select! {
            _ = &mut stop => return Ok(()),
            () = tokio::time::sleep(opts.poll_every) => {}
        }
    }
}

/// What identifies a file independently of its name, so a replaced file is noticed.
#[cfg(unix)]
fn file_identity(meta: &Metadata) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    Some((meta.dev(), meta.ino()))
}

/// Without inode numbers only truncation is detected.
#[cfg(not(unix))]
fn file_identity(_meta: &Metadata) -> Option<(u64, u64)> {
    None
}

/// The synchronous core of [`tail`]: reads whatever is new in the log, across rotations, and
/// turns complete lines into output lines.
#[derive(Debug)]
struct LogFollower {
    /// The name being followed; the file behind it changes on rotation.
    path: PathBuf,
    /// The lines of the file being read, `None` between a rotation and the new file appearing.
    /// They hold a partial line back until its newline arrives.
    lines: Option<LogLines<BufReader<File>>>,
    /// Identity of the file being read, compared with what `path` names now to notice rotation.
    identity: Option<(u64, u64)>,
    /// While catching up with `last`: the last lines seen, printed on reaching the end.
    backlog: Option<(VecDeque<String>, usize)>,
    /// `kinds` and `format`.
    opts: TailOptions,
}

impl LogFollower {
    fn open(path: PathBuf, opts: TailOptions) -> io::Result<Self> {
        let file = File::open(&path)?;
        let identity = file_identity(&file.metadata()?);
        Ok(Self {
            path,
            lines: Some(LogLines::new(BufReader::with_capacity(
                READ_CHUNK_BYTES,
                file,
            ))),
            identity,
            backlog: opts.last.map(|n| (VecDeque::with_capacity(n.min(1024)), n)),
            opts,
        })
    }

    /// Read about one chunk of lines, or check for rotation at the end of the file. Returns
    /// whether there may be more to read right away.
    fn step(&mut self, out: &mut Vec<String>) -> io::Result<bool> {
        if self.lines.is_none() {
            let reopened = self.reopen()?;
            if !reopened {
                self.flush_backlog(out);
            }
            return Ok(reopened);
        }
        if self.take(READ_CHUNK_BYTES, out)? {
            return Ok(true);
        }
        let offset = self.lines.as_ref().map_or(0, LogLines::consumed);
        match fs::metadata(&self.path) {
            Ok(meta) if file_identity(&meta) != self.identity => {
                // Rotated: the writer is done with the old file (it never writes to a renamed
                // one), but it may have finished a line there since our last read, so read it to
                // its end before moving on.
                while self.take(READ_CHUNK_BYTES, out)? {}
                // A partial line left in the old file will never be completed: the sink never
                // splits a line across files.
                self.lines = None;
                return self.reopen();
            }
            Ok(meta) if meta.len() < offset => {
                self.lines = None;
                return self.reopen();
            }
            // Renamed away and the new file not created yet: keep the old one until it is.
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        self.flush_backlog(out);
        Ok(false)
    }

    /// Open whatever `path` names now, from its start. `false` when there is nothing there yet.
    fn reopen(&mut self) -> io::Result<bool> {
        match File::open(&self.path) {
            Ok(file) => {
                self.identity = file_identity(&file.metadata()?);
                self.lines = Some(LogLines::new(BufReader::with_capacity(
                    READ_CHUNK_BYTES,
                    file,
                )));
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Turn complete lines into output until about `budget` bytes were read. Returns whether it
    /// stopped for the budget (there may be more) rather than at the end of the file.
    fn take(&mut self, budget: usize, out: &mut Vec<String>) -> io::Result<bool> {
        let Some(lines) = self.lines.as_mut() else {
            return Ok(false);
        };
        let start = lines.consumed();
        while let Some(line) = lines.next_complete_line()? {
            if line.oversize {
                tracing::warn!(
                    path = %self.path.display(),
                    "dropping an event-log line longer than {MAX_LINE_BYTES} bytes"
                );
            } else {
                let text = String::from_utf8_lossy(line.bytes);
                let text = text.trim_end_matches('\r');
                if !text.trim().is_empty()
                    && let Some(shown) = render_tail_line(text, &self.opts)
                {
                    match &mut self.backlog {
                        Some((kept, keep)) => {
                            kept.push_back(shown);
                            if kept.len() > *keep {
                                kept.pop_front();
                            }
                        }
                        None => out.push(shown),
                    }
                }
            }
            if lines.consumed() - start >= budget as u64 {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn flush_backlog(&mut self, out: &mut Vec<String>) {
        if let Some((lines, _)) = self.backlog.take() {
            out.extend(lines);
        }
    }
}

/// Only the `kind` of a line, for the filter.
#[derive(Deserialize)]
struct KindOnly {
    kind: String,
}

/// The line to print for `line`, or `None` when the kinds filter excludes it.
fn render_tail_line(line: &str, opts: &TailOptions) -> Option<String> {
    if let Some(kinds) = &opts.kinds {
        let kind = serde_json::from_str::<KindOnly>(line).ok()?.kind;
        if !kinds.iter().any(|k| k.eq_ignore_ascii_case(&kind)) {
            return None;
        }
    }
    Some(match opts.format {
        TailFormat::Json => line.to_string(),
        TailFormat::Pretty => pretty_line(line),
    })
}

/// One readable line for an event; the line itself when it is not one.
fn pretty_line(line: &str) -> String {
    let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(line) else {
        return escaped(line).into_owned();
    };
    let time = fields
        .get("ts")
        .and_then(Value::as_str)
        .map_or_else(|| "-".to_string(), short_time);
    let kind = fields.get("kind").and_then(Value::as_str).unwrap_or("?");
    let version = fields.get("policy_version").and_then(Value::as_u64);
    let value = Value::Object(fields.clone());
    let body = match kind {
        "query" => QueryEvent::deserialize(&value).ok().map(|q| {
            let mut s = format!(
                "{:<7} {} {:<7} {} {:<2} {}",
                q.verdict,
                q.client,
                q.group.as_deref().unwrap_or("-"),
                q.qname,
                q.qtype,
                q.reason
            );
            // A line folding identical queries (`[events] aggregate_interval`).
            if q.count > 1 {
                s.push_str(&format!(" (×{})", q.count));
            }
            s
        }),
        "alert" => AlertEvent::deserialize(&value).ok().map(|a| {
            let mut s = format!(
                "ALERT score={} {} {} {} action={}",
                a.score, a.client, a.group, a.domain, a.action
            );
            if a.monitor_only {
                s.push_str(" monitor-only");
            }
            if let Some(e) = a.exception {
                let _ = write!(s, " exception={e}");
            }
            s
        }),
        "containment_started" | "containment_ended" => {
            ContainmentEvent::deserialize(&value).ok().map(|c| {
                let started = kind == "containment_started";
                let mut s = format!(
                    "{} {} {} {} {}",
                    if started { "CONTAIN" } else { "RELEASE" },
                    c.action,
                    c.client,
                    c.group,
                    c.domain.as_deref().unwrap_or("*"),
                );
                if let Some(until) = &c.until {
                    let _ = write!(s, " until {}", short_time(until));
                }
                let _ = write!(s, ": {}", c.reason);
                s
            })
        }
        "policy" => PolicyEvent::deserialize(&value).ok().map(|p| {
            let mut s = format!("POLICY {}", p.action);
            if let Some(v) = version {
                let _ = write!(s, " v{v}");
            }
            if let Some(hash) = &p.hash {
                let _ = write!(s, " hash={}", hash.get(..12).unwrap_or(hash));
            }
            if let Some(actor) = &p.actor {
                let _ = write!(s, " by {actor}");
            }
            if let Some(message) = &p.message {
                let _ = write!(s, ": {message}");
            }
            s
        }),
        _ => None,
    };
    let body = body.unwrap_or_else(|| {
        // A kind this version does not know (or a malformed one): its fields as key=value.
        let mut s = kind.to_uppercase();
        for (key, v) in &fields {
            if matches!(
                key.as_str(),
                "ts" | "kind" | "policy_version" | "seq" | "prev"
            ) {
                continue;
            }
            match v {
                Value::String(text) => {
                    let _ = write!(s, " {key}={text}");
                }
                other => {
                    let _ = write!(s, " {key}={other}");
                }
            }
        }
        s
    });
    // Names, reasons, actors and messages are what clients and users wrote: escaped, so a
    // line cannot drive the terminal (the JSON format escapes them already).
    escaped(&format!("{time} {body}")).into_owned()
}

/// `2026-11-25T19:41:40.907123Z` → `19:41:40.907` (UTC); the input when it is not a time.
fn short_time(ts: &str) -> String {
    parse_time(ts).map_or_else(|_| ts.to_string(), |t| t.format("%H:%M:%S%.3f").to_string())
}

/// Run `dnsward events tail`.
///
/// # Errors
/// When no log can be found, or it cannot be read.
pub fn run(action: EventsAction) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let EventsAction::Tail {
        config,
        file,
        follow,
        last,
        kind,
        pretty,
    } = action;
    let path = super::events_file(&config, file)?;
    let opts = TailOptions {
        follow,
        last,
        kinds: kind,
        format: if pretty {
            TailFormat::Pretty
        } else {
            TailFormat::Json
        },
        ..TailOptions::default()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let stop = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        tail(&path, &opts, tokio::io::stdout(), stop).await
    })
    .with_context(|| format!("reading {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::review::suspects::testing::fixtures;

    const Q: &str = r#"{"ts":"2026-11-25T19:00:00Z","policy_version":1,"kind":"query","n":1}"#;
    const A: &str = r#"{"ts":"2026-11-25T19:00:01Z","policy_version":1,"kind":"alert","n":2}"#;
    const P: &str = r#"{"ts":"2026-11-25T19:00:02Z","policy_version":1,"kind":"policy","n":3}"#;

    fn append(path: &Path, text: &str) {
        use std::io::Write;
        let mut f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    /// Step until the follower has nothing more to read right now.
    fn drain(f: &mut LogFollower) -> Vec<String> {
        let mut out = Vec::new();
        while f.step(&mut out).unwrap() {}
        out
    }

    fn follower(path: &Path, opts: TailOptions) -> LogFollower {
        LogFollower::open(path.to_path_buf(), opts).unwrap()
    }

    #[test]
    fn follower_holds_a_torn_line_until_its_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        append(&path, &format!("{Q}\n{A}\n"));
        let mut f = follower(&path, TailOptions::default());
        assert_eq!(drain(&mut f), [Q, A]);
        assert!(drain(&mut f).is_empty());
        let (head, rest) = P.split_at(20);
        append(&path, head);
        assert!(drain(&mut f).is_empty(), "a torn line is not printed");
        append(&path, rest);
        assert!(drain(&mut f).is_empty());
        append(&path, "\n");
        assert_eq!(drain(&mut f), [P]);
    }

    #[test]
    fn follower_continues_into_the_new_file_after_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        append(&path, &format!("{Q}\n"));
        let mut f = follower(&path, TailOptions::default());
        assert_eq!(drain(&mut f), [Q]);
        // A last line lands in the old file just before the sink renames it.
        append(&path, &format!("{A}\n"));
        fs::rename(&path, dir.path().join("events.jsonl.1")).unwrap();
        assert_eq!(drain(&mut f), [A], "the old file is read to its end");
        // The new file does not exist yet: nothing, no error.
        assert!(drain(&mut f).is_empty());
        append(&path, &format!("{P}\n"));
        assert_eq!(drain(&mut f), [P]);
        // Truncated in place: read again from the start.
        fs::write(&path, format!("{Q}\n")).unwrap();
        assert_eq!(drain(&mut f), [Q]);
    }

    #[test]
    fn follower_filters_kinds_and_keeps_only_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        append(&path, &format!("{Q}\n{A}\nnot json\n{P}\n{A}\n"));
        let alerts_and_policy = TailOptions {
            kinds: Some(vec!["alert".into(), "policy".into()]),
            ..Default::default()
        };
        assert_eq!(
            drain(&mut follower(&path, alerts_and_policy.clone())),
            [A, P, A]
        );
        let last_two = TailOptions {
            last: Some(2),
            ..alerts_and_policy
        };
        let mut f = follower(&path, last_two);
        assert_eq!(drain(&mut f), [P, A]);
        // `last` applies to what was there; new lines all print.
        append(&path, &format!("{A}\n{Q}\n{A}\n"));
        assert_eq!(drain(&mut f), [A, A]);
        let everything = drain(&mut follower(&path, TailOptions::default()));
        assert_eq!(everything.len(), 8);
        assert!(everything.iter().any(|l| l == "not json"));
    }

    #[test]
    fn follower_drops_an_overlong_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        // Just over the bound when its newline arrives, and far over it.
        let long = "x".repeat(MAX_LINE_BYTES + 10);
        let longer = "y".repeat(3 * MAX_LINE_BYTES);
        append(&path, &format!("{Q}\n{long}\n{A}\n{longer}\n{P}\n"));
        let lines = drain(&mut follower(&path, TailOptions::default()));
        let lengths: Vec<usize> = lines.iter().map(String::len).collect();
        assert_eq!(lines.len(), 3, "line lengths {lengths:?}");
        assert_eq!(lines, [Q, A, P]);
    }

    /// Read from `rx` until `want` complete lines have arrived (or time out).
    async fn read_lines(rx: &mut tokio::io::DuplexStream, want: usize) -> Vec<String> {
        use tokio::io::AsyncReadExt;
        let mut text = String::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while text.lines().count() < want {
            let mut buf = [0u8; 4096];
            let n = tokio::time::timeout_at(deadline, rx.read(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("timed out with {text:?}"))
                .unwrap();
            assert!(n > 0, "tail ended early: {text:?}");
            text.push_str(std::str::from_utf8(&buf[..n]).unwrap());
        }
        text.lines().map(str::to_string).collect()
    }

    #[tokio::test]
    async fn tail_prints_existing_lines_and_stops_without_follow() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        append(&path, &format!("{Q}\n{A}\n"));
        let mut out = Vec::new();
        tail(
            &path,
            &TailOptions::default(),
            &mut out,
            std::future::pending::<()>(),
        )
        .await
        .unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), format!("{Q}\n{A}\n"));
        let missing = tail(
            &dir.path().join("nope"),
            &TailOptions::default(),
            Vec::new(),
            std::future::pending::<()>(),
        )
        .await;
        assert_eq!(missing.unwrap_err().kind(), io::ErrorKind::NotFound);
    }

    #[tokio::test]
    async fn tail_follows_appends_and_rotation_until_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        append(&path, &format!("{Q}\n"));
        let (tx, mut rx) = tokio::io::duplex(1 << 16);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let opts = TailOptions {
            follow: true,
            kinds: Some(vec!["query".into(), "alert".into()]),
            format: TailFormat::Pretty,
            poll_every: Duration::from_millis(10),
            ..Default::default()
        };
        let task = tokio::spawn({
            let path = path.clone();
            async move { tail(&path, &opts, tx, stop_rx).await }
        });
        assert_eq!(read_lines(&mut rx, 1).await.len(), 1);
        let alert = r#"{"ts":"2026-11-25T19:41:41.002Z","policy_version":3,"kind":"alert","client":"127.0.0.61","group":"tunnel","domain":"tun.example","score":74,"breakdown":{},"window":{"window_secs":900,"queries":11,"unique_subdomains":11,"payload_bytes":1081,"nxdomain":11},"samples":[],"bytes_estimate":1081,"action":"throttle","monitor_only":false,"exception":null}"#;
        append(&path, &format!("{P}\n{alert}\n"));
        assert_eq!(
            read_lines(&mut rx, 1).await,
            ["19:41:41.002 ALERT score=74 127.0.0.61 tunnel tun.example action=throttle"]
        );
        fs::rename(&path, dir.path().join("events.jsonl.1")).unwrap();
        append(&path, &format!("{alert}\n"));
        assert_eq!(read_lines(&mut rx, 1).await.len(), 1);
        stop_tx.send(()).unwrap();
        task.await.unwrap().unwrap();
    }

    #[test]
    fn pretty_lines_read_like_the_examples() {
        let query = r#"{"ts":"2026-11-25T19:41:40.907123Z","policy_version":3,"kind":"query","client":"127.0.0.1","group":"agents","qname":"pastebin.com","qtype":"A","protocol":"udp","verdict":"block","reason":"not allowlisted","rcode":"NXDOMAIN","answers":0,"latency_us":40,"cache_hit":false,"upstream":null,"seq":7,"prev":"ab"}"#;
        assert_eq!(
            pretty_line(query),
            "19:41:40.907 block   127.0.0.1 agents  pastebin.com A  not allowlisted"
        );
        let alert = fs::read_to_string(fixtures().join("events.jsonl"))
            .unwrap()
            .lines()
            .find(|l| l.contains("\"kind\":\"alert\"") && l.contains("\"score\":88"))
            .unwrap()
            .to_string();
        assert_eq!(
            pretty_line(&alert),
            "19:50:00.000 ALERT score=88 127.0.0.61 tunnel tun.example action=sinkhole"
        );
        let admin = r#"{"ts":"2026-11-25T19:00:00Z","policy_version":3,"kind":"admin","actor":"alice","op":"release","count":2}"#;
        assert_eq!(
            pretty_line(admin),
            "19:00:00.000 ADMIN actor=alice count=2 op=release"
        );
        assert_eq!(pretty_line("not json"), "not json");
    }
}
