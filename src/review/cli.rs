//! `dnsward review list|show|ack|confirm|false-positive|release` over the review API, so the
//! command line can do what the console does, as the same named user.
//!
//! Each command is one [`ReviewCommand`]; [`run`] sends it to `base_url` (the admin endpoint,
//! e.g. `http://127.0.0.1:9153`) with the user's token in an `Authorization` header and returns
//! an [`Outcome`]: the exit status and the text to print. Exit status 0 is success, 1 a
//! refusal by the API (bad input, wrong role, a step the workflow does not allow, unknown
//! suspect), 2 when the API cannot be reached or fails.

use std::borrow::Cow;
use std::fmt::Write as _;

use serde_json::{Value, json};

/// One review command.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum ReviewCommand {
    /// The queue (open and acknowledged suspects; all with `all`).
    List {
        /// Include closed suspects.
        #[arg(long)]
        all: bool,
        /// Only this client.
        #[arg(long)]
        client: Option<String>,
        /// Print the JSON answer instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One suspect: score breakdown, containment, history, timeline.
    Show {
        /// Client address.
        client: String,
        /// Registrable domain.
        domain: String,
        /// Print the JSON answer.
        #[arg(long)]
        json: bool,
    },
    /// open → acknowledged.
    Ack {
        /// Client address.
        client: String,
        /// Registrable domain.
        domain: String,
        /// Why.
        #[arg(long)]
        note: String,
    },
    /// → confirmed, optionally extending containment and proposing a deny-list entry.
    Confirm {
        /// Client address.
        client: String,
        /// Registrable domain.
        domain: String,
        /// Why.
        #[arg(long)]
        note: String,
        /// Make the containment last at least this long from now (e.g. `24h`).
        #[arg(long)]
        extend: Option<String>,
        /// Propose a policy version adding the domain to the group's deny list (you are its
        /// author; it runs only when an admin applies it: `dnsward policy apply N`).
        #[arg(long)]
        propose_deny: bool,
    },
    /// → false positive: a scoped exception for `days` and a release.
    FalsePositive {
        /// Client address.
        client: String,
        /// Registrable domain.
        domain: String,
        /// Why.
        #[arg(long)]
        note: String,
        /// Exception length in days (default 7).
        #[arg(long)]
        days: Option<u32>,
    },
    /// → released: end the client's containment.
    Release {
        /// Client address.
        client: String,
        /// Registrable domain.
        domain: String,
        /// Why.
        #[arg(long)]
        note: String,
    },
}

/// What to print and the exit status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// 0 success, 1 refused by the API, 2 unreachable or failed.
    pub status: i32,
    /// Text for stdout (status 0) or stderr.
    pub text: String,
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Run `cmd` against the review API at `base_url` as the user of `token`.
pub async fn run(base_url: &str, token: &str, cmd: &ReviewCommand) -> Outcome {
    let base = base_url.trim_end_matches('/');
    if !reqwest::Url::parse(base).is_ok_and(|u| matches!(u.scheme(), "http" | "https")) {
        return Outcome {
            status: 2,
            text: format!("--api {base:?} is not an http:// or https:// URL"),
        };
    }
    let http = reqwest::Client::new();
    let (path, body, json_out) = match cmd {
        ReviewCommand::List { all, client, json } => {
            let mut q = vec![];
            if *all {
                q.push("state=all".to_string());
            }
            if let Some(c) = client {
                q.push(format!("client={}", enc(c)));
            }
            let qs = if q.is_empty() {
                String::new()
            } else {
                format!("?{}", q.join("&"))
            };
            (format!("/api/v1/review/suspects{qs}"), None, *json)
        }
        ReviewCommand::Show {
            client,
            domain,
            json,
        } => (
            format!("/api/v1/review/suspects/{}/{}", enc(client), enc(domain)),
            None,
            *json,
        ),
        ReviewCommand::Ack {
            client,
            domain,
            note,
        } => transition(client, domain, json!({"to": "acknowledged", "note": note})),
        ReviewCommand::Confirm {
            client,
            domain,
            note,
            extend,
            propose_deny,
        } => transition(
            client,
            domain,
            json!({"to": "confirmed", "note": note, "extend": extend, "propose_deny": propose_deny}),
        ),
        ReviewCommand::FalsePositive {
            client,
            domain,
            note,
            days,
        } => transition(
            client,
            domain,
            json!({"to": "false_positive", "note": note, "exception_days": days}),
        ),
        ReviewCommand::Release {
            client,
            domain,
            note,
        } => transition(client, domain, json!({"to": "released", "note": note})),
    };
    let url = format!("{base}{path}");
    let req = match &body {
        Some(b) => http.post(&url).json(b),
        None => http.get(&url),
    };
    let resp = match req.bearer_auth(token.trim()).send().await {
        Ok(r) => r,
        Err(e) => {
            // The causes too: reqwest's own line is "error sending request for url (…)".
            let mut why = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                let _ = write!(why, ": {s}");
                source = s.source();
            }
            return Outcome {
                status: 2,
                text: format!("cannot reach {base}: {why}"),
            };
        }
    };
    let status = resp.status();
    let value: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        let mut text = format!(
            "{}: {}",
            status.as_u16(),
            field(&value["error"], "request failed")
        );
        for d in value["details"].as_array().into_iter().flatten() {
            let _ = write!(text, "\n  {}", field(d, ""));
        }
        return Outcome {
            status: if status.is_client_error() { 1 } else { 2 },
            text,
        };
    }
    let text = if json_out {
        serde_json::to_string_pretty(&value).unwrap_or_default()
    } else {
        match cmd {
            ReviewCommand::List { .. } => render_list(&value),
            ReviewCommand::Show { .. } => render_show(&value),
            _ => render_transition(&value),
        }
    };
    Outcome { status: 0, text }
}

/// A string field of an API answer, escaped for the terminal: names, notes and users are what
/// clients and reviewers wrote.
fn field<'a>(v: &'a Value, default: &'a str) -> Cow<'a, str> {
    crate::printable::escaped(v.as_str().unwrap_or(default))
}

fn transition(client: &str, domain: &str, body: Value) -> (String, Option<Value>, bool) {
    (
        format!(
            "/api/v1/review/suspects/{}/{}/transition",
            enc(client),
            enc(domain)
        ),
        Some(body),
        false,
    )
}

fn containment(active: &Value) -> String {
    let list: Vec<String> = active
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            format!(
                "{} {} ({}s left)",
                field(&c["action"], ""),
                field(&c["domain"], "(whole client)"),
                c["expires_in_secs"]
            )
        })
        .collect();
    if list.is_empty() {
        "-".into()
    } else {
        list.join("; ")
    }
}

fn render_list(v: &Value) -> String {
    let items = v["suspects"].as_array().cloned().unwrap_or_default();
    if items.is_empty() {
        return "no suspects to review".into();
    }
    let mut out = format!(
        "{:>5}  {:<15}  {:<39}  {:<12}  {:<14}  CONTAINMENT\n",
        "SCORE", "STATE", "CLIENT DOMAIN", "GROUP", "LAST ALERT"
    );
    for s in items {
        let _ = writeln!(
            out,
            "{:>5}  {:<15}  {:<39}  {:<12}  {:<14}  {}",
            s["max_score"],
            field(&s["state"], ""),
            format!("{} {}", field(&s["client"], ""), field(&s["domain"], "")),
            field(&s["group"], ""),
            s["last_seen"]
                .as_str()
                .unwrap_or("")
                .get(..19)
                .unwrap_or(""),
            containment(&s["active"])
        );
    }
    out.trim_end().to_string()
}

fn render_show(v: &Value) -> String {
    let s = &v["suspect"];
    let mut out = format!(
        "{} on {} (group {}): score {}, state {}\ncontainment: {}\nbytes out (est.): {}\n",
        field(&s["client"], ""),
        field(&s["domain"], ""),
        field(&s["group"], ""),
        s["max_score"],
        field(&s["state"], ""),
        containment(&s["active"]),
        s["bytes_estimate"]
    );
    let mut terms: Vec<(String, f64)> = s["breakdown"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| !k.starts_with("query."))
        .map(|(k, v)| (k.clone(), v.as_f64().unwrap_or(0.0)))
        .collect();
    terms.sort_by(|a, b| b.1.total_cmp(&a.1));
    out.push_str("breakdown:");
    for (k, v) in terms {
        let _ = write!(out, " {k}={v:.1}");
    }
    out.push_str("\nsamples:\n");
    for x in s["samples"].as_array().into_iter().flatten() {
        let _ = writeln!(out, "  {}", field(x, ""));
    }
    out.push_str("history:\n");
    for h in v["history"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "  {} {} {} -> {}: {}",
            field(&h["at"], ""),
            field(&h["user"], ""),
            field(&h["from"], ""),
            field(&h["to"], ""),
            field(&h["note"], "")
        );
    }
    out.trim_end().to_string()
}

fn render_transition(t: &Value) -> String {
    let mut out = format!(
        "{} on {}: {} -> {} by {}",
        field(&t["client"], ""),
        field(&t["domain"], ""),
        field(&t["from"], ""),
        field(&t["to"], ""),
        field(&t["user"], "")
    );
    for e in t["effects"].as_array().into_iter().flatten() {
        let _ = write!(out, "\n  {}", field(e, ""));
    }
    out
}

/// A tokens-file line for `name` with `role` and `token` (what `dnsward review hash-token`
/// would print).
#[must_use]
pub fn tokens_file_line(name: &str, role: super::users::Role, token: &str) -> String {
    format!("{name} {role} {}", super::users::hash_token_hex(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(enc("2001:db8::1"), "2001:db8::1");
        assert_eq!(enc("a/b c"), "a%2Fb%20c");
        assert!(
            tokens_file_line("alice", super::super::users::Role::Analyst, "t")
                .starts_with("alice analyst ")
        );
    }
}
