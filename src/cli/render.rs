//! Terminal and JSON presentation of the analyst's suspects (`dnsward alerts`).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::table::{Align, text_table};
use crate::printable::escaped;
use crate::review::suspects::{Containment, Suspect};

/// Breakdown terms shown in the table's TOP FEATURES column.
const TOP_FEATURES: usize = 3;

/// A fixed-width table for a terminal: one row per suspect with its samples indented below, and
/// a summary line. Times are UTC.
#[must_use]
pub fn render_table(suspects: &[Suspect]) -> String {
    const HEADERS: [&str; 9] = [
        "SCORE",
        "CLIENT",
        "GROUP",
        "DOMAIN",
        "ALERTS",
        "BYTES",
        "LAST SEEN",
        "ACTION/STATE",
        "TOP FEATURES",
    ];
    /// Numbers are aligned right.
    const ALIGN: [Align; 9] = [
        Align::Right,
        Align::Left,
        Align::Left,
        Align::Left,
        Align::Right,
        Align::Right,
        Align::Left,
        Align::Left,
        Align::Left,
    ];
    if suspects.is_empty() {
        return "no alerts matched\n".to_string();
    }
    let rows = suspects.iter().map(|s| {
        [
            s.max_score.to_string(),
            // An agent is named by its identity; its address is where it was seen.
            s.agent.clone().unwrap_or_else(|| s.client.to_string()),
            s.group.clone(),
            s.domain.clone(),
            s.alerts.to_string(),
            human_bytes(s.bytes_estimate),
            s.last_seen.format("%m-%d %H:%M:%SZ").to_string(),
            action_state(s),
            top_features(&s.breakdown),
        ]
    });
    let mut lines = text_table(&HEADERS, &ALIGN, rows).into_iter();
    let mut table = String::new();
    if let Some(header) = lines.next() {
        table.push_str(&header);
        table.push('\n');
    }
    // One line per row, in the order given: each suspect's samples go below its row.
    for (s, row) in suspects.iter().zip(lines) {
        table.push_str(&row);
        table.push('\n');
        if !s.samples.is_empty() {
            table.push_str("       samples: ");
            // Query names as clients sent them: shown escaped, like the table's cells.
            let samples: Vec<_> = s.samples.iter().map(|q| escaped(q)).collect();
            table.push_str(&samples.join("  "));
            table.push('\n');
        }
    }
    let alerts: u64 = suspects.iter().map(|s| s.alerts).sum();
    let contained = suspects
        .iter()
        .filter(|s| matches!(s.containment, Containment::Active { .. }))
        .count();
    let _ = writeln!(
        table,
        "{} suspect{}, {alerts} alert{}, {contained} contained now",
        suspects.len(),
        plural(suspects.len() as u64),
        plural(alerts),
    );
    table
}

/// The suspects as a pretty-printed JSON array, times in RFC 3339.
#[must_use]
pub fn render_json(suspects: &[Suspect]) -> String {
    // Cannot fail: every map key is a string and every value serialises.
    serde_json::to_string_pretty(suspects)
        .unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }).to_string())
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// `alert,throttle; throttled until 19:55Z`, `…; released`, `…; expired`.
fn action_state(s: &Suspect) -> String {
    let mut cell = s.actions.join(",");
    if s.monitor_only {
        cell.push_str(" (monitor)");
    }
    let state = match &s.containment {
        Containment::None => return cell,
        Containment::Active {
            action,
            whole_client,
            until,
            ..
        } => {
            let mut state = past_tense(action);
            if *whole_client {
                state.push_str(" (whole client)");
            }
            match until {
                Some(until) if until.date_naive() == s.last_seen.date_naive() => {
                    let _ = write!(state, " until {}", until.format("%H:%MZ"));
                }
                Some(until) => {
                    let _ = write!(state, " until {}", until.format("%m-%d %H:%MZ"));
                }
                None => {}
            }
            state
        }
        Containment::Ended { reason, .. } => {
            // `released by alice: false positive` → `released by alice`: the table is for
            // scanning, the JSON has the full reason.
            reason
                .split(':')
                .next()
                .unwrap_or(reason)
                .trim()
                .to_string()
        }
    };
    format!("{cell}; {state}")
}

fn past_tense(action: &str) -> String {
    match action {
        "throttle" => "throttled".to_string(),
        "sinkhole" => "sinkholed".to_string(),
        "quarantine" => "quarantined".to_string(),
        other => other.to_string(),
    }
}

/// The top breakdown terms by points, e.g. `pattern=30 uniq=20 bytes=12`. Only the window terms
/// (which add up to the score) count; `query.*` terms explain the single query's score.
fn top_features(breakdown: &BTreeMap<String, f64>) -> String {
    let mut terms: Vec<(&str, f64)> = breakdown
        .iter()
        .filter(|(name, points)| !name.starts_with("query.") && **points > 0.0)
        .map(|(name, points)| (name.as_str(), *points))
        .collect();
    terms.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
    terms
        .iter()
        .take(TOP_FEATURES)
        .map(|(name, points)| {
            let short = match *name {
                "unique_subdomains" => "uniq",
                "payload_bytes" => "bytes",
                "nxdomain" => "nx",
                "client_spike" => "spike",
                "fleet_wide" => "fleet",
                other => other,
            };
            format!("{short}={points:.0}")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `1081` → `1.1K`, small counts exact.
fn human_bytes(n: u64) -> String {
    #[allow(clippy::cast_precision_loss)] // one decimal shown
    let f = n as f64;
    match n {
        0..1000 => n.to_string(),
        1000..1_000_000 => format!("{:.1}K", f / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1}M", f / 1e6),
        _ => format!("{:.1}G", f / 1e9),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::review::suspects::AlertsQuery;
    use crate::review::suspects::testing::*;

    #[test]
    fn table_has_a_row_per_suspect_samples_and_a_summary() {
        let suspects = scan(&AlertsQuery::default()).suspects;
        let table = render_table(&suspects);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("SCORE  CLIENT"), "{table}");
        for header in [
            "GROUP",
            "DOMAIN",
            "ALERTS",
            "BYTES",
            "LAST SEEN",
            "ACTION/STATE",
            "TOP FEATURES",
        ] {
            assert!(lines[0].contains(header), "{table}");
        }
        let tun = lines
            .iter()
            .find(|l| l.contains("tun.example"))
            .unwrap_or_else(|| panic!("{table}"));
        for cell in [
            "   88  127.0.0.61",
            "tunnel",
            "2.9K",
            "11-25 19:50:00Z",
            "alert,throttle,sinkhole; sinkholed until 20:20Z",
            "pattern=41 uniq=20 bytes=18",
        ] {
            assert!(tun.contains(cell), "{cell:?} missing from {tun:?}");
        }
        let exfil = lines.iter().find(|l| l.contains("exfil.test")).unwrap();
        assert!(
            exfil.contains("none,quarantine; released by alice"),
            "{exfil}"
        );
        let drip = lines.iter().find(|l| l.contains("drip.example")).unwrap();
        assert!(drip.contains("throttle; expired"), "{drip}");
        // Columns line up: every row's DOMAIN starts where the header's does.
        let col = lines[0].find("DOMAIN").unwrap();
        assert_eq!(tun.find("tun.example"), Some(col));
        let tun_at = lines
            .iter()
            .position(|l| l.contains("tun.example"))
            .unwrap();
        assert!(
            lines[tun_at + 1]
                .trim_start()
                .starts_with("samples: c3.tun.example  q0f3a9"),
            "{table}"
        );
        assert_eq!(
            *lines.last().unwrap(),
            "5 suspects, 8 alerts, 1 contained now"
        );
        assert_eq!(render_table(&[]), "no alerts matched\n");
    }

    #[test]
    fn json_round_trips_through_serde_json() {
        let suspects = scan(&AlertsQuery::default()).suspects;
        let v: Value = serde_json::from_str(&render_json(&suspects)).unwrap();
        let tun = &v[1];
        assert_eq!(tun["client"], "127.0.0.61");
        assert_eq!(tun["max_score"], 88);
        assert_eq!(tun["last_seen"], "2026-11-25T19:50:00.000000Z");
        assert_eq!(tun["containment"]["state"], "active");
        assert_eq!(tun["containment"]["until"], "2026-11-25T20:20:00.000000Z");
        assert_eq!(v[4]["containment"]["state"], "none");
    }
}
