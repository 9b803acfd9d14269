//! RFC 1035 zone-file parsing: a file split into logical entries with their line numbers
//! (parentheses joined, comments dropped), `$ORIGIN` / `$TTL` directives (`$INCLUDE` refused),
//! one record per entry through hickory's parser, and the structural checks (one SOA at the
//! apex, a CNAME alone at its name) that turn the records into a [`Zone`]. Every problem is
//! reported with `path:line`.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_proto::serialize::txt::{Parser, parse_ttl};

use super::authority::{Zone, name_key};
use crate::config_error::ConfigProblems;
use crate::names::self_and_parents;

/// One logical entry of a zone file: parentheses joined, comments removed.
#[derive(Debug, PartialEq)]
struct Entry {
    /// 1-based line the entry starts on.
    line: usize,
    /// The entry text on one line; a leading blank is kept because it means "same owner".
    text: String,
}

/// Split a zone file into logical entries, tracking line numbers (hickory's parser stops at the
/// first error and does not say where, so each entry is parsed on its own).
fn split_entries(text: &str, location: &str, problems: &mut ConfigProblems) -> Vec<Entry> {
    let mut entries = Vec::new();
    let mut current = String::new();
    let mut start_line = 1;
    let mut line = 1;
    let mut depth = 0usize;
    let mut in_quote = false;
    let mut in_comment = false;
    let mut escaped = false;

    let finish = |current: &mut String, start_line: usize, entries: &mut Vec<Entry>| {
        if !current.trim().is_empty() {
            entries.push(Entry {
                line: start_line,
                text: std::mem::take(current),
            });
        }
        current.clear();
    };

    for c in text.chars() {
        if c == '\n' {
            line += 1;
            in_comment = false;
            escaped = false;
            if in_quote {
                // A quoted string cannot span lines; report and drop the entry.
                problems.push(
                    format!("{location}:{start_line}"),
                    "unterminated quoted string",
                );
                in_quote = false;
                depth = 0;
                current.clear();
            }
            if depth == 0 {
                finish(&mut current, start_line, &mut entries);
                start_line = line;
            } else {
                current.push(' ');
            }
            continue;
        }
        if in_comment {
            continue;
        }
        if escaped {
            escaped = false;
            current.push(c);
            continue;
        }
        match c {
            '\\' => {
                escaped = true;
                current.push(c);
            }
            '"' => {
                in_quote = !in_quote;
                current.push(c);
            }
            _ if in_quote => current.push(c),
            ';' => in_comment = true,
            '(' => {
                depth += 1;
                current.push(' ');
            }
            ')' => {
                if depth == 0 {
                    problems.push(format!("{location}:{line}"), "unbalanced ')'");
                } else {
                    depth -= 1;
                }
                current.push(' ');
            }
            '\r' => {}
            _ => current.push(c),
        }
    }
    if in_quote || depth > 0 {
        problems.push(
            format!("{location}:{start_line}"),
            if in_quote {
                "unterminated quoted string"
            } else {
                "unclosed '(' at end of file"
            },
        );
    } else {
        finish(&mut current, start_line, &mut entries);
    }
    entries
}

/// Parse one zone file. Returns `None` when the zone cannot be served at all (no usable origin
/// or no SOA at the apex); every problem is pushed with `path:line`.
pub(super) fn parse_zone(
    text: &str,
    path: &Path,
    configured_origin: Option<&str>,
    problems: &mut ConfigProblems,
) -> Option<Zone> {
    let location = path.display().to_string();
    let at = |line: usize| format!("{location}:{line}");

    // The origin in force for relative names: configured, else the file name until `$ORIGIN`.
    let initial = configured_origin
        .map(str::to_owned)
        .or_else(|| path.file_stem().and_then(|s| s.to_str()).map(str::to_owned));
    let mut origin = match initial.as_deref().map(parse_absolute) {
        Some(Ok(n)) => Some(n),
        Some(Err(e)) => {
            if configured_origin.is_some() {
                problems.push(location.clone(), format!("bad zone origin: {e}"));
                return None;
            }
            // A file name that is not a domain name is fine as long as `$ORIGIN` comes first.
            None
        }
        None => None,
    };
    // The apex is fixed by the configuration, else by the origin in force at the first record.
    let mut apex: Option<Name> = configured_origin.and(origin.clone());
    let mut default_ttl: Option<u32> = None;
    let mut last_ttl: Option<u32> = None;
    let mut last_owner: Option<Name> = None;
    let mut records: Vec<(usize, Record)> = Vec::new();

    for entry in split_entries(text, &location, problems) {
        let inherits_owner = entry.text.starts_with([' ', '\t']);
        let body = entry.text.trim();
        if !inherits_owner && body.starts_with('$') {
            let mut words = body.split_whitespace();
            let directive = words.next().unwrap_or_default().to_ascii_uppercase();
            let arg = words.next();
            match (directive.as_str(), arg) {
                ("$ORIGIN", Some(arg)) => match Name::parse(arg, origin.as_ref()) {
                    Ok(mut n) if n.is_fqdn() || origin.is_some() => {
                        n.set_fqdn(true);
                        origin = Some(n);
                    }
                    Ok(_) => problems.push(at(entry.line), "$ORIGIN must be absolute here"),
                    Err(e) => problems.push(at(entry.line), format!("bad $ORIGIN: {e}")),
                },
                ("$TTL", Some(arg)) => match parse_ttl(arg) {
                    Ok(ttl) => default_ttl = Some(ttl),
                    Err(e) => problems.push(at(entry.line), format!("bad $TTL: {e}")),
                },
                ("$INCLUDE", _) => problems.push(
                    at(entry.line),
                    "$INCLUDE is not supported: list each zone file in the configuration",
                ),
                (_, None) if directive == "$ORIGIN" || directive == "$TTL" => {
                    problems.push(at(entry.line), format!("{directive} needs a value"));
                }
                _ => problems.push(at(entry.line), format!("unknown directive {directive}")),
            }
            continue;
        }

        let Some(current_origin) = origin.clone() else {
            problems.push(
                at(entry.line),
                "no origin: add $ORIGIN before the first record or set `origin` in the config",
            );
            // Without an origin no later line can be read either; one report is enough.
            return None;
        };
        let apex = apex.get_or_insert_with(|| current_origin.clone()).clone();

        let (owner, rest) = if inherits_owner {
            match &last_owner {
                Some(o) => (o.clone(), body),
                // The owner line above was already reported; don't repeat it for each line.
                None => continue,
            }
        } else {
            let (word, rest) = body.split_once([' ', '\t']).unwrap_or((body, ""));
            let owner = if word == "@" {
                Ok(current_origin.clone())
            } else {
                Name::parse(word, Some(&current_origin))
            };
            match owner {
                Ok(o) => (o, rest),
                Err(e) => {
                    problems.push(at(entry.line), format!("bad owner name {word:?}: {e}"));
                    last_owner = None;
                    continue;
                }
            }
        };
        last_owner = Some(owner.clone());

        match parse_record(&owner, rest, &current_origin, default_ttl.or(last_ttl)) {
            Ok(record) => {
                if !apex.zone_of(&record.name) {
                    problems.push(
                        at(entry.line),
                        format!("{} is outside the zone {apex}", record.name),
                    );
                    continue;
                }
                if record.dns_class != DNSClass::IN {
                    problems.push(
                        at(entry.line),
                        format!("class {} is not served, only IN", record.dns_class),
                    );
                    continue;
                }
                last_ttl = Some(record.ttl);
                records.push((entry.line, record));
            }
            Err(e) => problems.push(at(entry.line), format!("bad record: {e}")),
        }
    }

    let Some(apex) = apex else {
        problems.push(
            location,
            "no records: a zone needs at least an SOA at its apex",
        );
        return None;
    };
    build_zone(&apex, records, &location, problems)
}

/// Parse a name that must end up absolute (a configured origin or file name).
fn parse_absolute(name: &str) -> Result<Name, String> {
    let trimmed = name.trim().trim_end_matches('.');
    if trimmed.is_empty() {
        return Err("the root zone cannot be served locally".into());
    }
    crate::names::validate_name(trimmed)?;
    let mut n = Name::from_ascii(trimmed).map_err(|e| e.to_string())?;
    n.set_fqdn(true);
    Ok(n)
}

/// Parse one record by giving hickory's zone parser a one-record zone: the parser keeps the
/// rdata rules (relative names, quoting, every type's syntax), this file keeps the line numbers.
fn parse_record(
    owner: &Name,
    rest: &str,
    origin: &Name,
    ttl: Option<u32>,
) -> Result<Record, String> {
    let ttl_line = ttl.map(|t| format!("$TTL {t}\n")).unwrap_or_default();
    let mini = format!("{ttl_line}{} {rest}\n", owner.to_ascii());
    let (_, sets) = Parser::new(mini, None, Some(origin.clone()))
        .parse()
        .map_err(|e| e.to_string())?;
    let mut records = sets
        .into_values()
        .flat_map(|set| set.records_without_rrsigs().cloned().collect::<Vec<_>>());
    match (records.next(), records.next()) {
        (Some(record), None) => Ok(record),
        (None, _) => Err("no record type and data".into()),
        (Some(_), Some(_)) => Err("more than one record on one line".into()),
    }
}

/// Index the records of one zone and check its structure: an SOA at the apex, one SOA, CNAMEs
/// alone at their name.
fn build_zone(
    apex: &Name,
    records: Vec<(usize, Record)>,
    location: &str,
    problems: &mut ConfigProblems,
) -> Option<Zone> {
    let origin = name_key(apex);
    let mut nodes: HashMap<Box<str>, Vec<Record>> = HashMap::new();
    let mut soa: Option<Record> = None;

    for (line, record) in records {
        let key = name_key(&record.name);
        let at = format!("{location}:{line}");
        if record.record_type() == RecordType::SOA {
            if key != origin {
                problems.push(at, format!("SOA must be at the zone apex {origin}"));
                continue;
            }
            if soa.is_some() {
                problems.push(at, "second SOA at the apex");
                continue;
            }
            soa = Some(record.clone());
        }
        let node = nodes.entry(key.clone().into_boxed_str()).or_default();
        let is_cname = record.record_type() == RecordType::CNAME;
        let has_cname = node.iter().any(|r| r.record_type() == RecordType::CNAME);
        if (is_cname && !node.is_empty()) || has_cname {
            // RFC 1034 §3.6.2: a CNAME is the only data at its name.
            problems.push(
                at,
                format!("a CNAME at {key} cannot coexist with other records"),
            );
            continue;
        }
        if !node.contains(&record) {
            node.push(record);
        }
    }

    let Some(soa) = soa else {
        problems.push(
            location,
            format!("zone {origin} has no SOA record at its apex"),
        );
        return None;
    };
    let mut negative_soa = soa;
    if let RData::SOA(data) = &negative_soa.data {
        negative_soa.ttl = negative_soa.ttl.min(data.minimum);
    }

    let mut empty_non_terminals = HashSet::new();
    for owner in nodes.keys() {
        for ancestor in self_and_parents(owner).skip(1) {
            if ancestor.len() <= origin.len() {
                break;
            }
            if !nodes.contains_key(ancestor) {
                empty_non_terminals.insert(Box::from(ancestor));
            }
        }
    }

    Some(Zone {
        origin,
        negative_soa,
        nodes,
        empty_non_terminals,
    })
}

#[cfg(test)]
mod tests {
    use hickory_proto::rr::RecordType;

    use super::super::fixture::{SOA, from_texts, qname};
    use super::super::{ZoneSet, ZonesConfig};
    use super::split_entries;
    use crate::config_error::ConfigProblems;

    #[test]
    fn origin_comes_from_the_file_name_or_the_config() {
        let text = "@ 60 IN SOA ns hm 1 2 3 4 60\nwww 60 IN A 10.0.0.1\n";
        let (set, problems, dir) = from_texts(&[("fromname.internal.zone", text)]);
        assert!(problems.is_empty(), "{problems}");
        assert!(
            set.lookup(&qname("www.fromname.internal"), RecordType::A)
                .is_some()
        );

        let cfg: ZonesConfig = toml::from_str(
            r#"files = [{ origin = "Configured.Internal.", path = "fromname.internal.zone" }]"#,
        )
        .unwrap();
        let mut problems = ConfigProblems::default();
        let set = ZoneSet::load(&cfg, dir.path(), &mut problems);
        assert!(problems.is_empty(), "{problems}");
        assert_eq!(set.origins().collect::<Vec<_>>(), ["configured.internal"]);
        let a = set
            .lookup(&qname("www.configured.internal"), RecordType::A)
            .unwrap();
        assert_eq!(a.answers.len(), 1);
    }

    #[test]
    fn a_broken_zone_reports_path_and_line_and_others_still_load() {
        let broken = format!(
            "{SOA}good IN A 10.0.0.1\nbad IN A 999.1.1.1\n  IN AAAA nonsense\nx IN BOGUS 1\n\
             $INCLUDE /etc/passwd\nother.example. IN A 10.0.0.1\n"
        );
        let (set, problems, dir) = from_texts(&[
            ("t.internal.zone", &broken),
            ("ok.internal.zone", "@ 60 IN SOA ns hm 1 2 3 4 60\n"),
        ]);
        let path = dir.path().join("./t.internal.zone").display().to_string();
        let locations: Vec<_> = problems
            .problems
            .iter()
            .map(|p| p.location.clone())
            .collect();
        assert_eq!(
            locations,
            [5, 6, 7, 8, 9].map(|l| format!("{path}:{l}")),
            "{problems}"
        );
        // The good zone is served; the broken one is served without its bad lines.
        assert!(set.lookup(&qname("ok.internal"), RecordType::SOA).is_some());
        let good = set
            .lookup(&qname("good.t.internal"), RecordType::A)
            .unwrap();
        assert_eq!(good.answers.len(), 1);
    }

    #[test]
    fn errors_in_two_files_are_all_reported() {
        let (set, problems, _dir) = from_texts(&[
            ("a.internal.zone", "www 60 IN A 10.0.0.1\n"),
            (
                "b.internal.zone",
                "@ 60 IN SOA ns hm 1 2 3 4 60\nwww 60 IN A nope\n",
            ),
        ]);
        assert_eq!(problems.len(), 2, "{problems}");
        assert!(problems.problems[0].location.ends_with("a.internal.zone"));
        assert!(problems.problems[0].message.contains("no SOA"));
        assert!(problems.problems[1].location.ends_with("b.internal.zone:2"));
        // The zone without an SOA is not served; the other one is.
        assert_eq!(set.origins().collect::<Vec<_>>(), ["b.internal"]);
    }

    #[test]
    fn structural_errors_are_reported() {
        let text = format!(
            "{SOA}@ IN SOA ns hm 2 2 3 4 60\nsub IN SOA ns hm 1 2 3 4 60\n\
             c IN CNAME x\nc IN A 10.0.0.1\nq IN TXT \"unterminated\n\
             p IN TXT ( \"a\"\n"
        );
        let (_set, problems, _dir) = from_texts(&[("t.internal.zone", &text)]);
        let lines: Vec<_> = problems
            .problems
            .iter()
            .map(|p| p.location.rsplit(':').next().unwrap().to_owned())
            .collect();
        assert_eq!(lines, ["8", "9", "4", "5", "7"], "{problems}");
    }

    #[test]
    fn negative_ttl_is_the_soa_ttl_when_lower() {
        let text = "$ORIGIN t.internal.\n@ 30 IN SOA ns hm 1 2 3 4 600\n";
        let (set, problems, _dir) = from_texts(&[("t.internal.zone", text)]);
        assert!(problems.is_empty(), "{problems}");
        let a = set
            .lookup(&qname("nope.t.internal"), RecordType::A)
            .unwrap();
        assert_eq!(a.authorities[0].ttl, 30);
    }

    #[test]
    fn the_splitter_joins_parentheses_and_drops_comments() {
        let mut problems = ConfigProblems::default();
        let entries = split_entries(
            "a IN TXT \"x;y\" ; note\n\n  IN MX ( 10\n mail ) ; c\nb IN A 1.2.3.4",
            "f",
            &mut problems,
        );
        assert!(problems.is_empty());
        let got: Vec<_> = entries.iter().map(|e| (e.line, e.text.trim())).collect();
        assert_eq!(
            got,
            [
                (1, "a IN TXT \"x;y\""),
                (3, "IN MX   10  mail"),
                (5, "b IN A 1.2.3.4")
            ]
        );
        assert!(entries[1].text.starts_with(' '));
    }
}
