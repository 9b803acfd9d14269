//! Local authoritative zones, loaded from RFC 1035 zone files.
//!
//! An agent fleet usually needs a few internal names (`api.corp.internal`, a package mirror, a
//! model server) that must resolve even with no internet and must never leak upstream. Queries
//! inside a configured zone are answered here, like a small authoritative server would; queries
//! outside every zone get `None` from [`ZoneSet::lookup`] and are forwarded.
//!
//! ## Answer semantics
//! - exact name and type: the records;
//! - a CNAME at the name (and the query is not for CNAME): the CNAME, then the chain is chased
//!   while the target stays in the same zone (at most [`MAX_CNAME_CHAIN`] links, loops stop);
//!   the rcode is that of the last link (RFC 6604);
//! - the name exists (or is an empty non-terminal) but has no such type: NOERROR/NODATA with the
//!   zone SOA in the authority section, its TTL the negative TTL `min(SOA TTL, SOA MINIMUM)`
//!   (RFC 2308 §5);
//! - the name does not exist: NXDOMAIN with the same SOA;
//! - wildcards (`*.apps.corp.internal`) synthesise answers owned by the query name when no
//!   closer name exists (RFC 4592: the source of synthesis is `*.` + the closest encloser);
//! - NS below the apex (a delegation) is *not* turned into a referral: such names are answered
//!   from the records present, which is out of scope to improve here;
//! - `ANY`: answered with a single RRset as RFC 8482 §4.1 allows (the CNAME if there is one,
//!   otherwise the RRset with the lowest type number), so `ANY` cannot be used to pull a whole
//!   node in one small query; operators ask for the type they want;
//! - MX, NS and SRV answers carry the in-zone A/AAAA records of their targets as additionals.
//!
//! ## Loading
//! Zone files are read in full at load time and never again; the [`ZoneSet`] is immutable, so a
//! reload builds a new one. Every problem is reported with `path:line`, and a broken file never
//! stops the others from being read. `$ORIGIN` and `$TTL` are supported; `$INCLUDE` is refused
//! (a zone file must not be able to pull in arbitrary files). Only class `IN` is served.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_proto::serialize::txt::{Parser, parse_ttl};
use serde::Deserialize;

use crate::config_error::ConfigProblems;
use crate::names::self_and_parents;

/// Longest CNAME chain followed inside one zone before answering with what was found so far.
/// Real chains are one or two links; the bound only stops pathological zone files.
pub const MAX_CNAME_CHAIN: usize = 8;

/// The `[zones]` section: which zone files to serve. The default serves none.
///
/// ```toml
/// [zones]
/// dir = "zones"   # every *.zone file in it
/// files = [{ origin = "corp.internal", path = "extra/corp.internal.zone" }]
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZonesConfig {
    /// A directory whose every `*.zone` file is loaded (not recursively). Each file's origin is
    /// its first `$ORIGIN` (before any record) or else its file name without `.zone`.
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// Zone files listed one by one.
    #[serde(default)]
    pub files: Vec<ZoneFileConfig>,
}

/// One explicitly listed zone file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneFileConfig {
    /// Path to the zone file; relative paths are relative to the config file's directory.
    pub path: PathBuf,
    /// The zone origin (apex). When absent: the file's first `$ORIGIN`, else its file name
    /// without `.zone`.
    #[serde(default)]
    pub origin: Option<String>,
}

/// An answer from a local zone, ready to be put into a response.
#[derive(Debug, Clone, PartialEq)]
pub struct ZoneAnswer {
    /// The zone that answered (its origin, lower-case, no trailing dot).
    pub zone: String,
    /// `NoError` (records or NODATA) or `NXDomain`.
    pub rcode: ResponseCode,
    /// The answer section.
    pub answers: Vec<Record>,
    /// The authority section: the zone SOA for negative answers, otherwise empty.
    pub authorities: Vec<Record>,
    /// The additional section: in-zone addresses of MX/NS/SRV targets.
    pub additionals: Vec<Record>,
}

/// Every local zone, immutable after [`ZoneSet::load`]. Lookups take no lock and allocate only
/// for the records they return.
#[derive(Debug, Default)]
pub struct ZoneSet {
    /// The zones, in load order.
    zones: Vec<Zone>,
    /// Origin → index into `zones`, so the longest match is one hash probe per label.
    by_origin: HashMap<Box<str>, usize>,
    /// Files that were read, for the policy content hash.
    files: Vec<PathBuf>,
}

impl ZoneSet {
    /// A set with no zones: every lookup is `None`.
    #[must_use]
    pub fn empty() -> ZoneSet {
        ZoneSet::default()
    }

    /// Load every configured zone; relative paths are resolved against `base_dir` (the config
    /// file's directory). Each problem is pushed with `path:line` (or the config key) as its
    /// location, and every file is read even when an earlier one is broken. A zone without an
    /// SOA at its apex is not served; a zone with bad lines is served without them (the caller
    /// rejects the configuration anyway when `problems` is not empty).
    pub fn load(cfg: &ZonesConfig, base_dir: &Path, problems: &mut ConfigProblems) -> ZoneSet {
        let mut set = ZoneSet::empty();
        let mut sources: Vec<(String, PathBuf, Option<String>)> = Vec::new();

        if let Some(dir) = &cfg.dir {
            let dir = base_dir.join(dir);
            match list_zone_files(&dir) {
                Ok(found) => {
                    sources.extend(found.into_iter().map(|p| ("zones.dir".to_owned(), p, None)));
                }
                Err(e) => problems.push(
                    "zones.dir",
                    format!("cannot list zone directory {}: {e}", dir.display()),
                ),
            }
        }
        for (i, f) in cfg.files.iter().enumerate() {
            sources.push((
                format!("zones.files[{i}].path"),
                base_dir.join(&f.path),
                f.origin.clone(),
            ));
        }

        let mut seen_paths: HashSet<PathBuf> = HashSet::new();
        // Origin → the file that defined it, to name both files in a duplicate report.
        let mut origin_files: HashMap<String, PathBuf> = HashMap::new();
        for (key, path, origin) in sources {
            // The same file reached through `dir` and `files` is one zone, not a duplicate.
            let canonical = fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
            if !seen_paths.insert(canonical) {
                continue;
            }
            let text = match fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) => {
                    problems.push(
                        key,
                        format!("cannot read zone file {}: {e}", path.display()),
                    );
                    continue;
                }
            };
            set.files.push(path.clone());
            let Some(zone) = parse_zone(&text, &path, origin.as_deref(), problems) else {
                continue;
            };
            if let Some(first) = origin_files.get(&zone.origin) {
                problems.push(
                    path.display().to_string(),
                    format!(
                        "zone {} is already loaded from {}",
                        zone.origin,
                        first.display()
                    ),
                );
                continue;
            }
            origin_files.insert(zone.origin.clone(), path);
            set.by_origin
                .insert(zone.origin.clone().into_boxed_str(), set.zones.len());
            set.zones.push(zone);
        }
        set
    }

    /// The zone files that were read (for policy content hashing), in load order.
    #[must_use]
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Zone origins served (lower-case, no trailing dot).
    pub fn origins(&self) -> impl Iterator<Item = &str> {
        self.zones.iter().map(|z| z.origin.as_str())
    }

    /// Answer `qname`/`qtype` from the local zones. `qname` is lower-case dotted without a
    /// trailing dot (other spellings are normalised). `None` means the name is not inside any
    /// local zone, so it should be forwarded. The longest-matching zone answers.
    #[must_use]
    pub fn lookup(&self, qname: &str, qtype: RecordType) -> Option<ZoneAnswer> {
        let qname = normalise_qname(qname);
        let zone_index = self.zone_index_of(&qname)?;
        let zone = &self.zones[zone_index];
        let mut answer = ZoneAnswer {
            zone: zone.origin.clone(),
            rcode: ResponseCode::NoError,
            answers: Vec::new(),
            authorities: Vec::new(),
            additionals: Vec::new(),
        };

        let mut current: Cow<'_, str> = Cow::Borrowed(&qname);
        let mut visited: Vec<String> = Vec::new();
        for _ in 0..MAX_CNAME_CHAIN {
            match zone.resolve(&current, qtype) {
                NodeAnswer::Records(records) => {
                    zone.add_target_addresses(&records, &mut answer.additionals);
                    answer.answers.extend(records);
                    break;
                }
                NodeAnswer::NoData => {
                    answer.authorities.push(zone.negative_soa.clone());
                    break;
                }
                NodeAnswer::NxDomain => {
                    answer.rcode = ResponseCode::NXDomain;
                    answer.authorities.push(zone.negative_soa.clone());
                    break;
                }
                NodeAnswer::Cname(record) => {
                    let target = match &record.data {
                        RData::CNAME(c) => name_key(&c.0),
                        _ => String::new(),
                    };
                    answer.answers.push(*record);
                    visited.push(current.into_owned());
                    // Chase only inside this zone: a target in another zone (even another
                    // local one) is the client's resolver's job, as with a real authoritative.
                    let same_zone = self.zone_index_of(&target) == Some(zone_index);
                    if !same_zone || visited.contains(&target) {
                        break;
                    }
                    current = Cow::Owned(target);
                }
            }
        }
        Some(answer)
    }

    /// Index of the longest zone origin equal to or above `name`.
    fn zone_index_of(&self, name: &str) -> Option<usize> {
        if self.zones.is_empty() {
            return None;
        }
        self_and_parents(name).find_map(|n| self.by_origin.get(n).copied())
    }
}

/// One loaded zone.
#[derive(Debug)]
struct Zone {
    /// Apex, lower-case, no trailing dot.
    origin: String,
    /// The apex SOA with its TTL already lowered to the negative TTL, for NODATA/NXDOMAIN.
    negative_soa: Record,
    /// Owner (lower-case, no trailing dot) → every record at it.
    nodes: HashMap<Box<str>, Vec<Record>>,
    /// Names with no records but with descendants: they exist, so they answer NODATA.
    empty_non_terminals: HashSet<Box<str>>,
}

/// What one name in a zone says about one type.
enum NodeAnswer {
    Records(Vec<Record>),
    /// Boxed: a record is large and the other outcomes are small.
    Cname(Box<Record>),
    NoData,
    NxDomain,
}

impl Zone {
    fn resolve(&self, name: &str, qtype: RecordType) -> NodeAnswer {
        let (records, synthesised) = if let Some(records) = self.nodes.get(name) {
            (records, false)
        } else if self.empty_non_terminals.contains(name) {
            return NodeAnswer::NoData;
        } else {
            match self.wildcard_for(name) {
                Wildcard::Source(records) => (records, true),
                Wildcard::EmptyNonTerminal => return NodeAnswer::NoData,
                Wildcard::None => return NodeAnswer::NxDomain,
            }
        };
        // Wildcard answers are owned by the query name (RFC 4592 §2.2.1).
        let owner = if synthesised {
            match Name::from_ascii(format!("{name}.")) {
                Ok(n) => Some(n),
                Err(_) => return NodeAnswer::NxDomain,
            }
        } else {
            None
        };
        let owned = |r: &Record| {
            let mut r = r.clone();
            if let Some(owner) = &owner {
                r.name = owner.clone();
            }
            r
        };

        if qtype != RecordType::CNAME
            && let Some(cname) = records
                .iter()
                .find(|r| r.record_type() == RecordType::CNAME)
        {
            return NodeAnswer::Cname(Box::new(owned(cname)));
        }
        let wanted = if qtype == RecordType::ANY {
            // RFC 8482 §4.1: one RRset; the lowest type number keeps the choice stable.
            match records
                .iter()
                .map(Record::record_type)
                .min_by_key(|t| u16::from(*t))
            {
                Some(t) => t,
                None => return NodeAnswer::NoData,
            }
        } else {
            qtype
        };
        let matching: Vec<Record> = records
            .iter()
            .filter(|r| r.record_type() == wanted)
            .map(owned)
            .collect();
        if matching.is_empty() {
            NodeAnswer::NoData
        } else {
            NodeAnswer::Records(matching)
        }
    }

    /// RFC 4592 §3.3.1: find the closest encloser of `name` (a name that exists), then look for
    /// `*.` + closest encloser.
    fn wildcard_for(&self, name: &str) -> Wildcard<'_> {
        for ancestor in self_and_parents(name).skip(1) {
            let exists = ancestor == self.origin
                || self.nodes.contains_key(ancestor)
                || self.empty_non_terminals.contains(ancestor);
            if !exists {
                if ancestor.len() <= self.origin.len() {
                    break;
                }
                continue;
            }
            let source = format!("*.{ancestor}");
            if let Some(records) = self.nodes.get(source.as_str()) {
                return Wildcard::Source(records);
            }
            if self.empty_non_terminals.contains(source.as_str()) {
                return Wildcard::EmptyNonTerminal;
            }
            break;
        }
        Wildcard::None
    }

    /// In-zone A/AAAA of the targets of MX, NS and SRV records, so a client needs no second
    /// query for a name only this zone knows.
    fn add_target_addresses(&self, records: &[Record], additionals: &mut Vec<Record>) {
        for record in records {
            let target = match &record.data {
                RData::MX(mx) => &mx.exchange,
                RData::NS(ns) => &ns.0,
                RData::SRV(srv) => &srv.target,
                _ => continue,
            };
            if let Some(node) = self.nodes.get(name_key(target).as_str()) {
                for addr in node
                    .iter()
                    .filter(|r| matches!(r.record_type(), RecordType::A | RecordType::AAAA))
                {
                    if !additionals.contains(addr) {
                        additionals.push(addr.clone());
                    }
                }
            }
        }
    }
}

enum Wildcard<'a> {
    Source(&'a Vec<Record>),
    EmptyNonTerminal,
    None,
}

/// Lower-case and drop one trailing dot, borrowing when the name is already in that form (the
/// usual case: the wire parser hands names over normalised).
fn normalise_qname(qname: &str) -> Cow<'_, str> {
    let trimmed = qname.strip_suffix('.').unwrap_or(qname);
    if trimmed.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(trimmed.to_ascii_lowercase())
    } else {
        Cow::Borrowed(trimmed)
    }
}

/// The lookup key of a name: lower-case, no trailing dot.
fn name_key(name: &Name) -> String {
    let mut s = name.to_lowercase().to_ascii();
    if s.ends_with('.') {
        s.pop();
    }
    s
}

/// `*.zone` files directly in `dir`, sorted so load order (and duplicate reports) are stable.
fn list_zone_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_file() && path.extension().is_some_and(|e| e == "zone") {
            found.push(path);
        }
    }
    found.sort();
    Ok(found)
}

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
fn parse_zone(
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
    use std::net::Ipv4Addr;

    use super::*;

    /// The example zone shipped in `zones/`, so the tests also prove it loads cleanly.
    fn example() -> ZoneSet {
        let cfg = ZonesConfig {
            dir: Some(PathBuf::from("zones")),
            files: Vec::new(),
        };
        let mut problems = ConfigProblems::default();
        let set = ZoneSet::load(&cfg, Path::new(env!("CARGO_MANIFEST_DIR")), &mut problems);
        assert!(problems.is_empty(), "{problems}");
        set
    }

    /// A set built from zone texts written into a temporary directory.
    fn from_texts(files: &[(&str, &str)]) -> (ZoneSet, ConfigProblems, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            fs::write(dir.path().join(name), text).unwrap();
        }
        let cfg = ZonesConfig {
            dir: Some(PathBuf::from(".")),
            files: Vec::new(),
        };
        let mut problems = ConfigProblems::default();
        let set = ZoneSet::load(&cfg, dir.path(), &mut problems);
        (set, problems, dir)
    }

    fn a_addrs(records: &[Record]) -> Vec<Ipv4Addr> {
        records
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(a.0),
                _ => None,
            })
            .collect()
    }

    fn owners(records: &[Record]) -> Vec<String> {
        records.iter().map(|r| r.name.to_ascii()).collect()
    }

    const SOA: &str = "$ORIGIN t.internal.\n$TTL 300\n@ 3600 IN SOA ns hm 1 2 3 4 60\n";

    #[test]
    fn zone_sets_can_be_shared_across_threads() {
        fn shared<T: Send + Sync>() {}
        shared::<ZoneSet>();
    }

    #[test]
    fn the_example_zone_loads() {
        let set = example();
        assert_eq!(set.origins().collect::<Vec<_>>(), ["corp.internal"]);
        assert_eq!(set.files().len(), 1);
    }

    #[test]
    fn exact_match_returns_the_records() {
        let a = example()
            .lookup("api.corp.internal", RecordType::A)
            .unwrap();
        assert_eq!(a.rcode, ResponseCode::NoError);
        assert_eq!(a.zone, "corp.internal");
        assert_eq!(
            a_addrs(&a.answers),
            [Ipv4Addr::new(10, 0, 1, 10), Ipv4Addr::new(10, 0, 1, 11)]
        );
        assert!(a.authorities.is_empty());
        assert_eq!(a.answers[0].ttl, 300);

        let aaaa = example()
            .lookup("models.corp.internal", RecordType::AAAA)
            .unwrap();
        assert_eq!(aaaa.answers.len(), 1);
        let txt = example().lookup("corp.internal", RecordType::TXT).unwrap();
        assert_eq!(txt.answers.len(), 1);
    }

    #[test]
    fn names_match_case_insensitively_and_with_a_trailing_dot() {
        let a = example()
            .lookup("API.Corp.Internal.", RecordType::A)
            .unwrap();
        assert_eq!(a.answers.len(), 2);
    }

    #[test]
    fn names_outside_every_zone_are_forwarded() {
        let set = example();
        assert!(set.lookup("example.com", RecordType::A).is_none());
        assert!(set.lookup("internal", RecordType::A).is_none());
        assert!(set.lookup("xcorp.internal", RecordType::A).is_none());
        assert!(
            ZoneSet::empty()
                .lookup("api.corp.internal", RecordType::A)
                .is_none()
        );
    }

    #[test]
    fn cname_is_chased_inside_the_zone() {
        let a = example()
            .lookup("registry.corp.internal", RecordType::A)
            .unwrap();
        assert_eq!(a.rcode, ResponseCode::NoError);
        assert_eq!(a.answers[0].record_type(), RecordType::CNAME);
        assert_eq!(a_addrs(&a.answers), [Ipv4Addr::new(192, 0, 2, 30)]);

        // Asking for the CNAME itself does not chase.
        let c = example()
            .lookup("registry.corp.internal", RecordType::CNAME)
            .unwrap();
        assert_eq!(c.answers.len(), 1);

        // A target with no such type ends in NODATA, carrying the CNAME.
        let none = example()
            .lookup("registry.corp.internal", RecordType::MX)
            .unwrap();
        assert_eq!(none.answers.len(), 1);
        assert_eq!(none.authorities.len(), 1);
    }

    #[test]
    fn cname_chains_stop_at_loops_and_other_zones() {
        let text = format!(
            "{SOA}a IN CNAME b\nb IN CNAME a\nout IN CNAME www.example.com.\n\
             gone IN CNAME missing\n"
        );
        let (set, problems, _dir) = from_texts(&[("t.internal.zone", &text)]);
        assert!(problems.is_empty(), "{problems}");

        let looped = set.lookup("a.t.internal", RecordType::A).unwrap();
        assert_eq!(looped.rcode, ResponseCode::NoError);
        assert_eq!(owners(&looped.answers), ["a.t.internal.", "b.t.internal."]);

        let out = set.lookup("out.t.internal", RecordType::A).unwrap();
        assert_eq!(out.answers.len(), 1);
        assert!(out.authorities.is_empty());

        // RFC 6604: the rcode is that of the last link.
        let gone = set.lookup("gone.t.internal", RecordType::A).unwrap();
        assert_eq!(gone.rcode, ResponseCode::NXDomain);
        assert_eq!(gone.answers.len(), 1);
    }

    #[test]
    fn cname_chains_are_bounded() {
        let mut text = SOA.to_owned();
        for i in 0..20 {
            text.push_str(&format!("c{i} IN CNAME c{}\n", i + 1));
        }
        text.push_str("c20 IN A 10.0.0.1\n");
        let (set, problems, _dir) = from_texts(&[("t.internal.zone", &text)]);
        assert!(problems.is_empty(), "{problems}");
        let a = set.lookup("c0.t.internal", RecordType::A).unwrap();
        assert_eq!(a.answers.len(), MAX_CNAME_CHAIN);
    }

    #[test]
    fn nodata_carries_the_soa_with_the_negative_ttl() {
        let a = example()
            .lookup("git.corp.internal", RecordType::AAAA)
            .unwrap();
        assert_eq!(a.rcode, ResponseCode::NoError);
        assert!(a.answers.is_empty());
        assert_eq!(a.authorities.len(), 1);
        assert_eq!(a.authorities[0].record_type(), RecordType::SOA);
        // SOA TTL 3600, MINIMUM 60.
        assert_eq!(a.authorities[0].ttl, 60);
    }

    #[test]
    fn negative_ttl_is_the_soa_ttl_when_lower() {
        let text = "$ORIGIN t.internal.\n@ 30 IN SOA ns hm 1 2 3 4 600\n";
        let (set, problems, _dir) = from_texts(&[("t.internal.zone", text)]);
        assert!(problems.is_empty(), "{problems}");
        let a = set.lookup("nope.t.internal", RecordType::A).unwrap();
        assert_eq!(a.authorities[0].ttl, 30);
    }

    #[test]
    fn missing_names_are_nxdomain_with_the_soa() {
        let a = example()
            .lookup("nope.corp.internal", RecordType::A)
            .unwrap();
        assert_eq!(a.rcode, ResponseCode::NXDomain);
        assert!(a.answers.is_empty());
        assert_eq!(a.authorities[0].record_type(), RecordType::SOA);
        let deep = example()
            .lookup("x.git.corp.internal", RecordType::A)
            .unwrap();
        assert_eq!(deep.rcode, ResponseCode::NXDomain);
    }

    #[test]
    fn empty_non_terminals_are_nodata() {
        let set = example();
        // `_tcp.api` only has a descendant (`_https._tcp.api`).
        let ent = set.lookup("_tcp.api.corp.internal", RecordType::A).unwrap();
        assert_eq!(ent.rcode, ResponseCode::NoError);
        assert!(ent.answers.is_empty());
        assert_eq!(ent.authorities.len(), 1);
        // `apps` only has the wildcard below it.
        let apps = set.lookup("apps.corp.internal", RecordType::A).unwrap();
        assert_eq!(apps.rcode, ResponseCode::NoError);
        assert!(apps.answers.is_empty());
    }

    #[test]
    fn wildcards_synthesise_answers_owned_by_the_query_name() {
        let set = example();
        let a = set
            .lookup("agent-7.apps.corp.internal", RecordType::A)
            .unwrap();
        assert_eq!(a.rcode, ResponseCode::NoError);
        assert_eq!(a_addrs(&a.answers), [Ipv4Addr::new(10, 0, 3, 1)]);
        assert_eq!(owners(&a.answers), ["agent-7.apps.corp.internal."]);
        // Deeper names are covered too: `apps` is still the closest encloser.
        let deep = set.lookup("x.y.apps.corp.internal", RecordType::A).unwrap();
        assert_eq!(owners(&deep.answers), ["x.y.apps.corp.internal."]);
        // A type the wildcard lacks is NODATA, not NXDOMAIN.
        let mx = set
            .lookup("agent-7.apps.corp.internal", RecordType::MX)
            .unwrap();
        assert_eq!(mx.rcode, ResponseCode::NoError);
        assert!(mx.answers.is_empty());
    }

    #[test]
    fn wildcards_do_not_apply_below_an_existing_closer_name() {
        let text = format!("{SOA}*.w IN A 10.0.0.1\nhost.w IN A 10.0.0.2\n");
        let (set, problems, _dir) = from_texts(&[("t.internal.zone", &text)]);
        assert!(problems.is_empty(), "{problems}");
        // `host.w` exists, so `x.host.w` has closest encloser `host.w` and no `*.host.w`.
        let below = set.lookup("x.host.w.t.internal", RecordType::A).unwrap();
        assert_eq!(below.rcode, ResponseCode::NXDomain);
        let exact = set.lookup("host.w.t.internal", RecordType::A).unwrap();
        assert_eq!(a_addrs(&exact.answers), [Ipv4Addr::new(10, 0, 0, 2)]);
        let other = set.lookup("other.w.t.internal", RecordType::A).unwrap();
        assert_eq!(a_addrs(&other.answers), [Ipv4Addr::new(10, 0, 0, 1)]);
    }

    #[test]
    fn wildcard_cnames_are_synthesised_and_chased() {
        let text = format!("{SOA}*.w IN CNAME target\ntarget IN A 10.0.0.9\n");
        let (set, problems, _dir) = from_texts(&[("t.internal.zone", &text)]);
        assert!(problems.is_empty(), "{problems}");
        let a = set.lookup("any.w.t.internal", RecordType::A).unwrap();
        assert_eq!(
            owners(&a.answers),
            ["any.w.t.internal.", "target.t.internal."]
        );
    }

    #[test]
    fn delegations_answer_the_records_present() {
        let text = format!("{SOA}sub IN NS ns.sub\nns.sub IN A 10.0.0.5\n");
        let (set, problems, _dir) = from_texts(&[("t.internal.zone", &text)]);
        assert!(problems.is_empty(), "{problems}");
        let ns = set.lookup("sub.t.internal", RecordType::NS).unwrap();
        assert_eq!(ns.answers.len(), 1);
        assert_eq!(a_addrs(&ns.additionals), [Ipv4Addr::new(10, 0, 0, 5)]);
        let a = set.lookup("sub.t.internal", RecordType::A).unwrap();
        assert_eq!(a.rcode, ResponseCode::NoError);
        assert!(a.answers.is_empty());
    }

    #[test]
    fn mx_and_srv_answers_carry_in_zone_addresses() {
        let mx = example().lookup("corp.internal", RecordType::MX).unwrap();
        assert_eq!(a_addrs(&mx.additionals), [Ipv4Addr::new(10, 0, 0, 25)]);
        let srv = example()
            .lookup("_https._tcp.api.corp.internal", RecordType::SRV)
            .unwrap();
        assert_eq!(srv.answers.len(), 1);
        assert_eq!(srv.additionals.len(), 3);
    }

    #[test]
    fn any_returns_one_rrset() {
        let set = example();
        let any = set.lookup("api.corp.internal", RecordType::ANY).unwrap();
        assert_eq!(a_addrs(&any.answers).len(), 2);
        assert!(any.answers.iter().all(|r| r.record_type() == RecordType::A));
        let apex = set.lookup("corp.internal", RecordType::ANY).unwrap();
        assert!(
            apex.answers
                .iter()
                .all(|r| r.record_type() == RecordType::NS)
        );
        let cname = set
            .lookup("registry.corp.internal", RecordType::ANY)
            .unwrap();
        assert_eq!(cname.answers[0].record_type(), RecordType::CNAME);
    }

    #[test]
    fn the_longest_matching_zone_answers() {
        let parent = format!("{SOA}host.sub IN A 10.0.0.1\n");
        let child =
            "$ORIGIN sub.t.internal.\n@ 60 IN SOA ns hm 1 2 3 4 60\nhost 60 IN A 10.9.9.9\n";
        let (set, problems, _dir) =
            from_texts(&[("t.internal.zone", &parent), ("sub.t.internal.zone", child)]);
        assert!(problems.is_empty(), "{problems}");
        let a = set.lookup("host.sub.t.internal", RecordType::A).unwrap();
        assert_eq!(a.zone, "sub.t.internal");
        assert_eq!(a_addrs(&a.answers), [Ipv4Addr::new(10, 9, 9, 9)]);
    }

    #[test]
    fn origin_comes_from_the_file_name_or_the_config() {
        let text = "@ 60 IN SOA ns hm 1 2 3 4 60\nwww 60 IN A 10.0.0.1\n";
        let (set, problems, dir) = from_texts(&[("fromname.internal.zone", text)]);
        assert!(problems.is_empty(), "{problems}");
        assert!(set.lookup("www.fromname.internal", RecordType::A).is_some());

        let cfg: ZonesConfig = toml::from_str(
            r#"files = [{ origin = "Configured.Internal.", path = "fromname.internal.zone" }]"#,
        )
        .unwrap();
        let mut problems = ConfigProblems::default();
        let set = ZoneSet::load(&cfg, dir.path(), &mut problems);
        assert!(problems.is_empty(), "{problems}");
        assert_eq!(set.origins().collect::<Vec<_>>(), ["configured.internal"]);
        let a = set
            .lookup("www.configured.internal", RecordType::A)
            .unwrap();
        assert_eq!(a.answers.len(), 1);
    }

    #[test]
    fn unknown_config_keys_are_refused() {
        assert!(toml::from_str::<ZonesConfig>("directory = \"zones\"").is_err());
        assert!(toml::from_str::<ZonesConfig>("files = [{ path = \"a\", ttl = 1 }]").is_err());
        assert_eq!(
            toml::from_str::<ZonesConfig>("").unwrap(),
            ZonesConfig::default()
        );
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
        assert!(set.lookup("ok.internal", RecordType::SOA).is_some());
        let good = set.lookup("good.t.internal", RecordType::A).unwrap();
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
    fn unreadable_files_are_reported_by_config_key() {
        let cfg: ZonesConfig =
            toml::from_str("dir = \"missing\"\nfiles = [{ path = \"nope.zone\" }]").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut problems = ConfigProblems::default();
        let set = ZoneSet::load(&cfg, dir.path(), &mut problems);
        let locations: Vec<_> = problems
            .problems
            .iter()
            .map(|p| p.location.as_str())
            .collect();
        assert_eq!(locations, ["zones.dir", "zones.files[0].path"]);
        assert_eq!(set.origins().count(), 0);
    }

    #[test]
    fn duplicate_origins_are_reported() {
        let text = "$ORIGIN same.internal.\n@ 60 IN SOA ns hm 1 2 3 4 60\n";
        let (set, problems, _dir) = from_texts(&[("a.zone", text), ("b.zone", text)]);
        assert_eq!(problems.len(), 1, "{problems}");
        assert!(problems.problems[0].message.contains("already loaded"));
        assert_eq!(set.origins().count(), 1);
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
