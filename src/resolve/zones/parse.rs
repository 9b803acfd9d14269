//! RFC 1035 zone-file parsing: a file split into logical entries with their line numbers
//! (parentheses joined, comments dropped), `$ORIGIN` / `$TTL` directives (`$INCLUDE` refused),
//! one record per entry through hickory's parser, and the structural checks (one SOA at the
//! apex, a CNAME alone at its name) that turn the records into a [`Zone`]. Every problem is
//! reported with `path:line`.
//!
//! Escapes follow RFC 1035 §5.1: `\DDD` is the byte with *decimal* value DDD and `\X` is X
//! itself. hickory's text parser reads `\DDD` as octal (and garbles it in quoted strings), so
//! owner names and `$ORIGIN` are read here ([`crate::wire::parse_name_text`], the inverse of
//! the form query names take), and decimal escapes in record data are rewritten into forms
//! hickory reads right before it sees them ([`decimal_escapes`]).

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::path::Path;

use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_proto::serialize::txt::{Parser, parse_ttl};

use super::authority::{Zone, name_key};
use crate::config_error::{ConfigProblems, clipped, excerpt};
use crate::names::self_and_parents;
use crate::wire;

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
    let mut reported_line = None;

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
        // A raw control byte (NUL, ESC, DEL, …) is no text a zone file may hold (RFC 1035
        // §5.1 writes such a byte `\DDD`); read as it is, it would go into a name or a string
        // unseen by whoever reads the file. Reported once a line, and the zone is refused.
        if c.is_control() && c != '\t' && c != '\r' {
            if reported_line != Some(line) {
                problems.push(
                    format!("{location}:{line}"),
                    format!(
                        "control character U+{:04X} in the text: write a byte as \\DDD \
                         (RFC 1035 §5.1)",
                        u32::from(c)
                    ),
                );
                reported_line = Some(line);
            }
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

/// The most records the local zones hold together. Parsed and indexed, a record takes about a
/// kilobyte (1.5 GB for a million short records in one file, within the file size limit), and a
/// reload holds the old zones and the new at once.
pub const MAX_ZONE_RECORDS: usize = 200_000;

/// Parse one zone file, of at most `max_records` records (what [`MAX_ZONE_RECORDS`] leaves after
/// the zones before it). Returns `None` when the zone cannot be served at all (no usable origin,
/// no SOA at the apex, too many records); every problem is pushed with `path:line`.
pub(super) fn parse_zone(
    text: &str,
    path: &Path,
    configured_origin: Option<&str>,
    max_records: usize,
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
                ("$ORIGIN", Some(arg)) => match parse_zone_name(arg, origin.as_ref()) {
                    Ok(mut n) if n.is_fqdn() || origin.is_some() => {
                        n.set_fqdn(true);
                        origin = Some(n);
                    }
                    Ok(_) => problems.push(at(entry.line), "$ORIGIN must be absolute here"),
                    Err(e) => problems.push(
                        at(entry.line),
                        format!("bad $ORIGIN: {}", clipped(&e.to_string())),
                    ),
                },
                ("$TTL", Some(arg)) => match zone_ttl(arg) {
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
                _ => problems.push(
                    at(entry.line),
                    format!("unknown directive {}", excerpt(&directive)),
                ),
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
            let (word, rest) = split_first_word(body);
            let owner = if word == "@" {
                Ok(current_origin.clone())
            } else {
                parse_zone_name(word, Some(&current_origin))
            };
            match owner {
                Ok(o) => (o, rest),
                Err(e) => {
                    problems.push(
                        at(entry.line),
                        format!(
                            "bad owner name {}: {}",
                            excerpt(word),
                            clipped(&e.to_string())
                        ),
                    );
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
                if records.len() >= max_records {
                    problems.push(
                        at(entry.line),
                        format!(
                            "more than {MAX_ZONE_RECORDS} records in the local zones together; \
                             serve a zone this large from an authoritative server and forward \
                             to it ([[upstream.forward]])"
                        ),
                    );
                    return None;
                }
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

/// The first word of an entry (up to the first blank that is not escaped) and the rest.
fn split_first_word(body: &str) -> (&str, &str) {
    let mut escaped = false;
    for (i, c) in body.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            ' ' | '\t' => return (&body[..i], &body[i + 1..]),
            _ => {}
        }
    }
    (body, "")
}

/// A domain name as a zone file writes it (`\DDD` decimal, `\X` the character X), relative
/// to `origin` unless it ends with a dot. The labels' bytes go into the name as they are, with
/// no second reading of the text. A name in non-ASCII text with no escapes is an
/// internationalised name and becomes its `xn--` form (IDNA), as before.
fn parse_zone_name(text: &str, origin: Option<&Name>) -> Result<Name, String> {
    if !text.is_ascii() && !text.contains('\\') {
        return Name::parse(text, origin).map_err(|e| e.to_string());
    }
    let (labels, absolute) = wire::parse_name_text(text).map_err(|e| e.to_string())?;
    let mut name = Name::from_labels(labels).map_err(|e| e.to_string())?;
    match origin {
        Some(origin) if !absolute => name.append_domain(origin).map_err(|e| e.to_string()),
        _ => {
            name.set_fqdn(absolute);
            Ok(name)
        }
    }
}

/// Record data with its RFC 1035 decimal escapes (`\DDD`) rewritten into what hickory's parser
/// reads as the same bytes, since it would read them as octal in names and garble them in
/// quoted strings: outside quotes a letter, digit, `-` or `_` becomes itself and other
/// printable ASCII `\X`; inside quotes any byte below 128 becomes itself (`"` and `\` as `\"`
/// and `\\`). Escapes that cannot be carried that way are an error, never a different record.
/// Other escapes (`\X`) are left as they are.
fn decimal_escapes(rdata: &str) -> Result<Cow<'_, str>, String> {
    if !rdata.contains('\\') {
        return Ok(Cow::Borrowed(rdata));
    }
    let mut out = String::with_capacity(rdata.len());
    let mut in_quote = false;
    let mut chars = rdata.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                in_quote = !in_quote;
                out.push(c);
            }
            '\\' => match chars.next() {
                Some(d) if d.is_ascii_digit() => {
                    let mut digits = String::from(d);
                    while digits.len() < 3 {
                        match chars.next_if(char::is_ascii_digit) {
                            Some(n) => digits.push(n),
                            None => {
                                return Err(format!(
                                    "escape \\{digits} needs exactly three decimal digits (\\DDD)"
                                ));
                            }
                        }
                    }
                    let byte = digits
                        .parse::<u8>()
                        .map_err(|_| format!("escape \\{digits} is above 255"))?;
                    let ch = char::from(byte);
                    if in_quote && byte < 0x80 {
                        if matches!(ch, '"' | '\\') {
                            out.push('\\');
                        }
                        out.push(ch);
                    } else if in_quote {
                        return Err(format!(
                            "escape \\{digits} in a quoted string: only bytes below 128 can be \
                             escaped here; write UTF-8 text as it is"
                        ));
                    } else if ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_') {
                        out.push(ch);
                    } else if ch.is_ascii_graphic() {
                        out.push('\\');
                        out.push(ch);
                    } else {
                        return Err(format!(
                            "escape \\{digits} in record data: outside quotes only printable \
                             ASCII can be escaped here"
                        ));
                    }
                }
                Some(x) => {
                    out.push('\\');
                    out.push(x);
                }
                None => out.push('\\'),
            },
            _ => out.push(c),
        }
    }
    Ok(Cow::Owned(out))
}

/// Parse one record by giving hickory's zone parser a one-record zone owned by the origin: the
/// parser keeps the rdata rules (relative names, quoting, every type's syntax), this file keeps
/// the line numbers and the owner, which was read here already and is set afterwards (so it
/// never goes back through text).
fn parse_record(
    owner: &Name,
    rest: &str,
    origin: &Name,
    ttl: Option<u32>,
) -> Result<Record, String> {
    // `[TTL] [class] type` or `[class] [TTL] type`: hickory takes a TTL it cannot read for a
    // type ("record type string unknown: 99999999999"), so a TTL is checked here first
    // ([`RecordHead`]). Types and classes never start with a digit; what follows the type is
    // its data.
    let head = RecordHead::of(rest)?;
    if let Some(record) = generic_record(owner, &head, ttl)? {
        return Ok(record);
    }
    // `TYPE1` for a type hickory knows by its mnemonic, with the data in that type's own form.
    let renamed;
    let rest = match head.generic_type {
        Some(rtype) => {
            renamed = format!("{}{rtype}{}", &rest[..head.type_at], &rest[head.data_at..]);
            renamed.as_str()
        }
        None => rest,
    };
    extra_fields(rest)?;
    let rest = expand_at(rest, origin);
    // No TTL written, none in force (no `$TTL`, no record before): an SOA's TTL is its MINIMUM
    // field, as BIND and Knot read such a zone; any other record is an error.
    let soa_takes_minimum =
        ttl.is_none() && head.ttl.is_none() && head.rtype == Some(RecordType::SOA);
    let ttl = match (ttl, head.ttl, head.rtype) {
        (None, None, Some(RecordType::SOA)) => Some(0),
        (None, None, _) => {
            return Err(
                "no TTL: write one on the record or a $TTL line before it (RFC 2308 §4)".into(),
            );
        }
        (ttl, _, _) => ttl,
    };
    let ttl_line = ttl.map(|t| format!("$TTL {t}\n")).unwrap_or_default();
    let mini = format!("{ttl_line}@ {}\n", decimal_escapes(&rest)?);
    let (_, sets) = Parser::new(mini, None, Some(origin.clone()))
        .parse()
        .map_err(|e| clipped(&e.to_string()))?;
    let mut records = sets
        .into_values()
        .flat_map(|set| set.records_without_rrsigs().cloned().collect::<Vec<_>>());
    match (records.next(), records.next()) {
        (Some(mut record), None) => {
            encodable(&record)?;
            record.name = owner.clone();
            if soa_takes_minimum && let RData::SOA(soa) = &record.data {
                record.ttl = soa.minimum.min(MAX_TTL);
            }
            Ok(record)
        }
        (None, _) => Err("no record type and data".into()),
        (Some(_), Some(_)) => Err("more than one record on one line".into()),
    }
}

/// What comes before a record's data: `[TTL] [class]` or `[class] [TTL]`, then the type, read
/// the way RFC 3597 §5 writes unknown types (`TYPE65534`) as well as by mnemonic.
#[derive(Debug)]
struct RecordHead<'a> {
    /// The TTL written on the record, if any.
    ttl: Option<u32>,
    /// The class written on the record, if any.
    class: Option<DNSClass>,
    /// The type, when it is one: a mnemonic hickory knows or `TYPEnnn`.
    rtype: Option<RecordType>,
    /// Set when the type was written `TYPEnnn` (RFC 3597 §5).
    generic_type: Option<RecordType>,
    /// Byte offsets in the text of the type word and of what follows it.
    type_at: usize,
    data_at: usize,
    /// The data after the type.
    data: &'a str,
}

impl<'a> RecordHead<'a> {
    fn of(rest: &'a str) -> Result<Self, String> {
        let mut ttl = None;
        let mut class = None;
        let mut at = 0;
        for _ in 0..3 {
            let word_start = at + rest[at..].len() - rest[at..].trim_start().len();
            let word_end = rest[word_start..]
                .find([' ', '\t'])
                .map_or(rest.len(), |n| word_start + n);
            let word = &rest[word_start..word_end];
            if word.is_empty() {
                break;
            }
            if word.starts_with(|c: char| c.is_ascii_digit()) {
                ttl = Some(zone_ttl(word)?);
            } else if word.len() > 1
                && word.starts_with('-')
                && word[1..].starts_with(|c: char| c.is_ascii_digit())
            {
                return Err(format!("TTL {} is negative", excerpt(word)));
            } else if !is_class(word) {
                let generic_type = generic_type_code(word)?.map(RecordType::from);
                let rtype = generic_type.or_else(|| word.to_ascii_uppercase().parse().ok());
                // Served as data, a DNAME would redirect nothing: the names below it would get
                // this zone's NXDOMAIN (RFC 6672 §2.3 asks for a synthesised CNAME).
                if rtype == Some(RecordType::DNAME) {
                    return Err(
                        "DNAME is not served from local zones (names below it would \
                                not be redirected): write CNAME records, or forward that \
                                subtree with [[upstream.forward]]"
                            .to_string(),
                    );
                }
                return Ok(Self {
                    ttl,
                    class,
                    rtype,
                    generic_type,
                    type_at: word_start,
                    data_at: word_end,
                    data: rest[word_end..].trim(),
                });
            } else {
                class = Some(
                    word.to_ascii_uppercase()
                        .parse()
                        .map_err(|_| format!("class {} is not served, only IN", excerpt(word)))?,
                );
            }
            at = word_end;
        }
        Ok(Self {
            ttl,
            class,
            rtype: None,
            generic_type: None,
            type_at: rest.len(),
            data_at: rest.len(),
            data: "",
        })
    }
}

/// A type as a zone file writes it: its mnemonic, else `TYPEnnn` (RFC 3597 §5).
fn type_text(rtype: RecordType) -> String {
    match rtype {
        RecordType::Unknown(code) => format!("TYPE{code}"),
        known => known.to_string(),
    }
}

/// `TYPEnnn` (RFC 3597 §5) as its number; `None` for any other word.
fn generic_type_code(word: &str) -> Result<Option<u16>, String> {
    let Some(digits) = word
        .get(..4)
        .filter(|p| p.eq_ignore_ascii_case("TYPE"))
        .map(|_| &word[4..])
    else {
        return Ok(None);
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(None);
    }
    digits
        .parse::<u16>()
        .map(Some)
        .map_err(|_| format!("type {} is above TYPE65535", excerpt(word)))
}

/// A record whose data is in RFC 3597's generic form, `\# <length> <hex>`, for a type known or
/// not (`x TYPE65534 \# 3 abcdef`, `y A \# 4 c0000201`): a known type's data is read as that
/// type's wire form and served as if written in its own syntax (§5). `None` when the data is in
/// a type's own syntax; an unknown type (`TYPEnnn` hickory has no mnemonic for) must use the
/// generic form.
fn generic_record(
    owner: &Name,
    head: &RecordHead<'_>,
    ttl: Option<u32>,
) -> Result<Option<Record>, String> {
    use hickory_proto::serialize::binary::{BinDecoder, Restrict};
    let Some(rtype) = head.rtype else {
        return Ok(None);
    };
    let mut words = head.data.split_whitespace();
    if words.next() != Some("\\#") {
        if matches!(rtype, RecordType::Unknown(_)) {
            return Err(format!(
                "type {} has no text form here: write its data as \\# <length> <hex> \
                 (RFC 3597 §5)",
                type_text(rtype)
            ));
        }
        return Ok(None);
    }
    let code = u16::from(rtype);
    // Meta-types and QTYPEs (RFC 6895 §3.1: OPT, 128–255 such as TSIG, AXFR, ANY) are not data.
    if code == 0 || code == 41 || (128..=255).contains(&code) {
        return Err(format!(
            "type {} is a meta-type or query type, not record data (RFC 6895 §3.1)",
            type_text(rtype)
        ));
    }
    let length = words
        .next()
        .ok_or("\\# needs the data's length in bytes, then its hex (RFC 3597 §5)")?;
    let length: u16 = length.parse().map_err(|_| {
        format!(
            "\\# length {} is not a number of bytes up to 65535",
            excerpt(length)
        )
    })?;
    let hex: String = words.collect();
    if !hex.len().is_multiple_of(2) || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "\\# data {} is not whole bytes of hexadecimal",
            excerpt(&hex)
        ));
    }
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap_or_default())
        .collect();
    if bytes.len() != usize::from(length) {
        return Err(format!(
            "\\# says {length} bytes but its hex holds {}",
            bytes.len()
        ));
    }
    let ttl = head
        .ttl
        .or(ttl)
        .ok_or("no TTL: write one on the record or a $TTL line before it (RFC 2308 §4)")?;
    let mut decoder = BinDecoder::new(&bytes);
    let data = RData::read(&mut decoder, rtype, Restrict::new(length)).map_err(|e| {
        format!(
            "\\# data is not a valid {} record: {}",
            type_text(rtype),
            clipped(&e.to_string())
        )
    })?;
    let mut record = Record::from_rdata(owner.clone(), ttl, data);
    record.dns_class = head.class.unwrap_or(DNSClass::IN);
    encodable(&record)?;
    Ok(Some(record))
}

/// `rest` with every field of a name-bearing type's data that is exactly `@` (unescaped,
/// outside quotes) written as the origin in force (RFC 1035 §5.1: `@` is the current origin,
/// in record data too: `www CNAME @`, `@ SOA @ hostmaster …`, `@ MX 10 @`), which hickory's
/// parser reads only as an owner. In other types' data (`TXT @`) it is the text `@`, as in
/// BIND.
fn expand_at<'a>(rest: &'a str, origin: &Name) -> std::borrow::Cow<'a, str> {
    const NAME_TYPES: &[&str] = &[
        "CNAME", "DNAME", "NS", "PTR", "MX", "SRV", "SOA", "NAPTR", "RP", "AFSDB", "KX", "RT",
        "MINFO", "SVCB", "HTTPS",
    ];
    if !rest.contains('@') {
        return std::borrow::Cow::Borrowed(rest);
    }
    let is_name_type = rest
        .split_whitespace()
        .find(|w| !w.starts_with(|c: char| c.is_ascii_digit()) && !is_class(w))
        .is_some_and(|t| NAME_TYPES.iter().any(|n| t.eq_ignore_ascii_case(n)));
    // Elsewhere (`TXT @`) the text "@", quoted, since hickory's parser reads a bare `@` as an
    // owner only.
    let origin = if is_name_type {
        origin.to_string()
    } else {
        "\"@\"".to_string()
    };
    let mut out = String::with_capacity(rest.len() + origin.len());
    let (mut quoted, mut escaped) = (false, false);
    // Whether the character before was an unescaped blank outside quotes (or the start).
    let mut field_start = true;
    let mut chars = rest.chars().peekable();
    while let Some(c) = chars.next() {
        let was_escaped = escaped;
        escaped = false;
        if !was_escaped
            && c == '@'
            && !quoted
            && field_start
            && chars.peek().is_none_or(|&n| n == ' ' || n == '\t')
        {
            out.push_str(&origin);
            field_start = false;
            continue;
        }
        if !was_escaped && c == '\\' {
            escaped = true;
        } else if !was_escaped && c == '"' {
            quoted = !quoted;
        }
        field_start = !was_escaped && !quoted && (c == ' ' || c == '\t');
        out.push(c);
    }
    std::borrow::Cow::Owned(out)
}

/// Refuses text after the last field of a type whose data has a fixed number of fields
/// (`r IN A 1.1.1.1 2.2.2.2`, `m IN MX 10 mail extra`): hickory's text parser reads the fields
/// it needs and ignores the rest, so the zone would serve a record other than the one written
/// (BIND's named-checkzone says "extra input text"). `rest` is the line after the owner, with
/// comments and parentheses already gone; a backslash keeps the next character in its field.
fn extra_fields(rest: &str) -> Result<(), String> {
    let mut fields: Vec<String> = Vec::new();
    let mut field = String::new();
    let mut escaped = false;
    for c in rest.chars() {
        if escaped {
            field.push(c);
            escaped = false;
        } else if c == '\\' {
            field.push(c);
            escaped = true;
        } else if c.is_whitespace() {
            if !field.is_empty() {
                fields.push(std::mem::take(&mut field));
            }
        } else {
            field.push(c);
        }
    }
    if !field.is_empty() {
        fields.push(field);
    }
    // `[TTL] [class]` or `[class] [TTL]`, then the type.
    let Some(at) = fields
        .iter()
        .take(3)
        .position(|w| !(w.starts_with(|c: char| c.is_ascii_digit() || c == '-') || is_class(w)))
    else {
        return Ok(());
    };
    let ty = fields[at].to_ascii_uppercase();
    let takes = match ty.as_str() {
        "A" | "AAAA" | "NS" | "CNAME" | "PTR" | "DNAME" => 1,
        "MX" => 2,
        "SRV" => 4,
        "SOA" => 7,
        _ => return Ok(()),
    };
    let data = &fields[at + 1..];
    match data.get(takes) {
        Some(extra) => Err(format!(
            "extra text after the {ty} record's {takes} field{}: {}",
            if takes == 1 { "" } else { "s" },
            excerpt(extra)
        )),
        None => Ok(()),
    }
}

/// Checks that a record's data can go on the wire: hickory's text parser takes what its encoder
/// then refuses (a TXT string over 255 bytes, RFC 1035 §3.3) or cannot frame (data over 65,535
/// bytes, RDLENGTH being 16 bits, §3.2.1), and such a record would answer SERVFAIL, or nothing,
/// every time it is asked. Only the data is encoded (uncompressed, an upper bound): hickory's
/// record encoder asserts on an oversized RDLENGTH.
fn encodable(record: &Record) -> Result<(), String> {
    use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};
    let mut bytes = Vec::new();
    let mut encoder = BinEncoder::new(&mut bytes);
    // The encoder stops at 65,535 bytes itself.
    record.data.emit(&mut encoder).map_err(|e| match e {
        hickory_proto::ProtoError::MaxBufferSizeExceeded(max) => format!(
            "{} data is over {max} bytes long, the limit (RFC 1035 §3.2.1)",
            record.record_type()
        ),
        e => format!("{} data cannot be encoded: {e}", record.record_type()),
    })
}

// Largest TTL a zone may give, in seconds: 2^31 - 1 (RFC 2181 §8, which has resolvers read
// anything larger as 0).
use crate::wire::MAX_TTL;

/// A TTL as written in a zone (`3600`, `1h30m`), at most [`MAX_TTL`].
fn zone_ttl(word: &str) -> Result<u32, String> {
    if word.bytes().all(|b| b.is_ascii_digit()) {
        return match word.parse::<u64>() {
            Ok(n) if n <= u64::from(MAX_TTL) => Ok(n as u32),
            Ok(n) => Err(format!(
                "TTL {n} is too large: at most {MAX_TTL} seconds (RFC 2181 §8)"
            )),
            Err(_) => Err(format!(
                "TTL {} is too large: at most {MAX_TTL} seconds (RFC 2181 §8)",
                excerpt(word)
            )),
        };
    }
    match parse_ttl(word) {
        Ok(ttl) if ttl <= MAX_TTL => Ok(ttl),
        Ok(ttl) => Err(format!(
            "TTL {} is {ttl} seconds, too large: at most {MAX_TTL} (RFC 2181 §8)",
            excerpt(word)
        )),
        Err(_) => Err(format!(
            "TTL {} is neither seconds nor a duration like 1h30m (or it is too large)",
            excerpt(word)
        )),
    }
}

/// True for a DNS class mnemonic as zone files write it.
fn is_class(word: &str) -> bool {
    ["IN", "CH", "CS", "HS", "NONE", "ANY"]
        .iter()
        .any(|c| word.eq_ignore_ascii_case(c))
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
    // RFC 2181 §5.2: the records of one RRset share one TTL. Written with different TTLs, the
    // lowest holds for all (they were served as written, which a client may take for a bad
    // answer). A record written twice is one record already (the first kept, above).
    for records in nodes.values_mut() {
        let mut lowest: HashMap<RecordType, u32> = HashMap::new();
        for r in records.iter() {
            let e = lowest.entry(r.record_type()).or_insert(r.ttl);
            *e = (*e).min(r.ttl);
        }
        for r in records.iter_mut() {
            r.ttl = lowest[&r.record_type()];
        }
    }
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

    use hickory_proto::rr::{RData, RecordType};

    use super::super::fixture::{SOA, a_addrs, from_texts, qname};
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

    /// The owner labels of the first record `name` has (any type).
    fn first_owner(set: &ZoneSet, name: &hickory_proto::rr::Name) -> Vec<Vec<u8>> {
        let a = set.lookup(name, RecordType::ANY).expect("in the zone");
        a.answers[0].name.iter().map(<[u8]>::to_vec).collect()
    }

    #[test]
    fn owner_escapes_are_decimal_as_rfc_1035_says() {
        let text = format!(
            "{SOA}dec\\065 IN A 10.9.9.65\nq\\092r IN A 10.9.9.92\n\
             sp\\ ace IN A 10.9.9.32\nhi\\255 IN A 10.9.9.255\n\
             $ORIGIN sub\\046x.t.internal.\nin IN A 10.9.9.1\n"
        );
        let (set, problems, _dir) = from_texts(&[("t.internal.zone", &text)]);
        assert!(problems.is_empty(), "{problems}");
        // `dec\065` is `decA`: `deca` exists, `dec5` (the octal reading) does not.
        assert_eq!(
            first_owner(&set, &qname("deca.t.internal")),
            [&b"decA"[..], b"t", b"internal"]
        );
        let octal = set
            .lookup(&qname("dec5.t.internal"), RecordType::A)
            .unwrap();
        assert_eq!(octal.rcode, hickory_proto::op::ResponseCode::NXDomain);
        let name =
            |labels: &[&[u8]]| hickory_proto::rr::Name::from_labels(labels.to_vec()).unwrap();
        assert_eq!(
            first_owner(&set, &name(&[b"q\\r", b"t", b"internal"]))[0],
            b"q\\r"
        );
        assert_eq!(
            first_owner(&set, &name(&[b"sp ace", b"t", b"internal"]))[0],
            b"sp ace"
        );
        assert_eq!(
            first_owner(&set, &name(&[b"hi\xff", b"t", b"internal"]))[0],
            b"hi\xff"
        );
        // `$ORIGIN` is read the same way: `sub\046x` is one label with a dot in it.
        assert_eq!(
            first_owner(&set, &name(&[b"in", b"sub.x", b"t", b"internal"])),
            [&b"in"[..], b"sub.x", b"t", b"internal"]
        );
    }

    /// `text` loaded as `t.internal.zone`: the set, its problems, the file's path as problems
    /// name it, and each problem as (location, message).
    fn one_zone_problems(text: &str) -> (ZoneSet, ConfigProblems, String, Vec<(String, String)>) {
        let (set, problems, dir) = from_texts(&[("t.internal.zone", text)]);
        let path = dir.path().join("./t.internal.zone").display().to_string();
        let got = problems
            .problems
            .iter()
            .map(|p| (p.location.clone(), p.message.clone()))
            .collect();
        (set, problems, path, got)
    }

    #[test]
    fn records_that_cannot_go_on_the_wire_and_negative_ttls_are_reported() {
        let long = "a".repeat(300);
        let strings = format!("\"{}\" ", "b".repeat(255)).repeat(260);
        let text = format!(
            "{SOA}ok IN TXT \"short\"\nl IN TXT \"{long}\"\nm IN TXT {strings}\nn -5 IN A 10.0.0.1\n"
        );
        let (set, problems, path, got) = one_zone_problems(&text);
        assert_eq!(got.len(), 3, "{problems}");
        assert_eq!(got[0].0, format!("{path}:5"));
        assert!(
            got[0].1.contains("TXT data cannot be encoded"),
            "{}",
            got[0].1
        );
        assert_eq!(got[1].0, format!("{path}:6"));
        assert!(
            got[1].1.contains("TXT data is over 65535 bytes long"),
            "{}",
            got[1].1
        );
        assert_eq!(got[2].0, format!("{path}:7"));
        assert!(got[2].1.contains("TTL \"-5\" is negative"), "{}", got[2].1);
        assert!(
            set.lookup(&qname("ok.t.internal"), RecordType::TXT)
                .is_some()
        );
    }

    #[test]
    fn bad_escapes_are_reported_with_file_and_line() {
        let text = format!(
            "{SOA}ok IN A 10.0.0.1\nq\\09 IN A 10.0.0.2\nx\\256 IN A 10.0.0.3\n\
             t1 IN TXT \"\\200\"\nc1 IN CNAME a\\032b\nt2 IN TXT \"x\\1\"\n"
        );
        let (set, problems, path, got) = one_zone_problems(&text);
        assert_eq!(got.len(), 5, "{problems}");
        for (i, line) in [5, 6, 7, 8, 9].into_iter().enumerate() {
            assert_eq!(got[i].0, format!("{path}:{line}"), "{problems}");
        }
        assert!(
            got[0].1.contains("bad owner name \"q\\\\09\""),
            "{}",
            got[0].1
        );
        assert!(got[0].1.contains("three decimal digits"), "{}", got[0].1);
        assert!(got[1].1.contains("above 255"), "{}", got[1].1);
        assert!(got[2].1.contains("quoted string"), "{}", got[2].1);
        assert!(got[3].1.contains("printable"), "{}", got[3].1);
        assert!(got[4].1.contains("three decimal digits"), "{}", got[4].1);
        assert!(set.lookup(&qname("ok.t.internal"), RecordType::A).is_some());
    }

    #[test]
    fn record_data_escapes_are_decimal_too() {
        use hickory_proto::rr::RData;
        let text = format!(
            "{SOA}t IN TXT \"a\\065\\034\\092b\\009c\" x\\065y\n\
             c IN CNAME x\\065y\nm IN MX 10 mail\\046x\n"
        );
        let (set, problems, _dir) = from_texts(&[("t.internal.zone", &text)]);
        assert!(problems.is_empty(), "{problems}");
        let t = set.lookup(&qname("t.t.internal"), RecordType::TXT).unwrap();
        let RData::TXT(txt) = &t.answers[0].data else {
            panic!("{t:?}")
        };
        let strings: Vec<&[u8]> = txt.txt_data.iter().map(|s| &s[..]).collect();
        assert_eq!(strings, [&b"aA\"\\b\tc"[..], b"xAy"]);
        let c = set
            .lookup(&qname("c.t.internal"), RecordType::CNAME)
            .unwrap();
        let RData::CNAME(target) = &c.answers[0].data else {
            panic!("{c:?}")
        };
        // hickory's name parser lower-cases names in record data (IDNA mapping).
        assert_eq!(target.0.iter().next(), Some(&b"xay"[..]));
        let m = set.lookup(&qname("m.t.internal"), RecordType::MX).unwrap();
        let RData::MX(mx) = &m.answers[0].data else {
            panic!("{m:?}")
        };
        assert_eq!(mx.exchange.iter().next(), Some(&b"mail.x"[..]));
    }

    #[test]
    fn internationalised_owners_become_their_xn_form() {
        let text = format!("{SOA}caf\u{e9} IN A 10.0.0.1\n");
        let (set, problems, _dir) = from_texts(&[("t.internal.zone", &text)]);
        assert!(problems.is_empty(), "{problems}");
        assert!(
            set.lookup(&qname("xn--caf-dma.t.internal"), RecordType::A)
                .unwrap()
                .answers
                .len()
                == 1
        );
    }

    #[test]
    fn rfc_3597_generic_types_and_data_are_read_and_checked() {
        let text = format!(
            "{SOA}x TYPE65534 \\# 3 abcdef\ny IN A \\# 4 c0000201\nz TYPE1 \\# 4 c0000202\n\
             w 60 IN TYPE16 \"hello\"\ne TYPE65000 \\# 0\nm MX \\# 3 000a00\nt TYPE1 192.0.2.3\n"
        );
        let (set, problems, _, _) = one_zone_problems(&text);
        assert!(problems.is_empty(), "{problems}");
        for (line, want) in [
            ("b1 TYPE65534 abc", "type TYPE65534 has no text form here"),
            ("b1 TYPE65534", "type TYPE65534 has no text form here"),
            ("b2 A \\# 4 c00002", "\\# says 4 bytes but its hex holds 3"),
            ("b3 A \\# 3 c00002", "\\# data is not a valid A record"),
            ("b4 TYPE41 \\# 0", "type OPT is a meta-type"),
            ("b5 TYPE65536 \\# 0", "above TYPE65535"),
            ("b6 TYPE255 \\# 0", "type ANY is a meta-type"),
            ("b7 TYPE1 \\# 2 0g", "is not whole bytes of hexadecimal"),
            ("b8 TXT \\# x 00", "is not a number of bytes"),
            ("b9 CS TYPE1 \\# 4 c0000201", "class \"CS\" is not served"),
            (
                "c1 DNAME ext.example.",
                "DNAME is not served from local zones",
            ),
            (
                "c2 TYPE39 \\# 13 03657874076578616d706c6500",
                "DNAME is not served from local zones",
            ),
        ] {
            let (_, problems, path, got) = one_zone_problems(&format!("{SOA}{line}\n"));
            assert_eq!(got.len(), 1, "{line}: {problems}");
            assert_eq!(got[0].0, format!("{path}:4"));
            assert!(got[0].1.contains(want), "{line}: {}", got[0].1);
        }
        let answer = |name: &str, rtype| {
            set.lookup(&qname(name), rtype)
                .map(|a| a.answers)
                .unwrap_or_default()
        };
        let unknown = answer("x.t.internal", RecordType::Unknown(65534));
        assert_eq!(unknown.len(), 1);
        match &unknown[0].data {
            RData::Unknown { code, rdata } => {
                assert_eq!(*code, RecordType::Unknown(65534));
                assert_eq!(rdata.anything, [0xab, 0xcd, 0xef]);
            }
            other => panic!("{other:?}"),
        }
        // A known type in the generic form is that type, as if written in its own syntax.
        assert_eq!(
            a_addrs(&answer("y.t.internal", RecordType::A)),
            [Ipv4Addr::new(192, 0, 2, 1)]
        );
        assert_eq!(
            a_addrs(&answer("z.t.internal", RecordType::A)),
            [Ipv4Addr::new(192, 0, 2, 2)]
        );
        assert_eq!(
            a_addrs(&answer("t.t.internal", RecordType::A)),
            [Ipv4Addr::new(192, 0, 2, 3)]
        );
        let txt = answer("w.t.internal", RecordType::TXT);
        assert!(matches!(&txt[0].data, RData::TXT(t) if t.to_string() == "hello"));
        assert_eq!(answer("e.t.internal", RecordType::Unknown(65000)).len(), 1);
        let mx = answer("m.t.internal", RecordType::MX);
        assert!(matches!(&mx[0].data, RData::MX(m) if m.preference == 10 && m.exchange.is_root()));
    }

    #[test]
    fn an_soa_with_no_ttl_in_force_takes_its_minimum_and_other_records_need_one() {
        let text = "$ORIGIN t.internal.\n@ IN SOA ns hm 1 2 3 4 600\nwww IN A 10.0.0.1\n";
        let (set, problems, _dir) = from_texts(&[("t.internal.zone", text)]);
        assert!(problems.is_empty(), "{problems}");
        let soa = set.lookup(&qname("t.internal"), RecordType::SOA).unwrap();
        assert_eq!(soa.answers[0].ttl, 600);
        // The records after it take the last TTL (RFC 1035 §5.1).
        let www = set.lookup(&qname("www.t.internal"), RecordType::A).unwrap();
        assert_eq!(www.answers[0].ttl, 600);

        // A TTL in force, 0 included, is the SOA's as any record's.
        let text = "$ORIGIN t.internal.\n$TTL 0\n@ IN SOA ns hm 1 2 3 4 600\n";
        let (set, problems, _dir) = from_texts(&[("t.internal.zone", text)]);
        assert!(problems.is_empty(), "{problems}");
        let soa = set.lookup(&qname("t.internal"), RecordType::SOA).unwrap();
        assert_eq!(soa.answers[0].ttl, 0);

        let text = "$ORIGIN t.internal.\nwww IN A 10.0.0.1\n@ IN SOA ns hm 1 2 3 4 600\n";
        let (_, problems, path, got) = one_zone_problems(text);
        assert_eq!(got.len(), 1, "{problems}");
        assert_eq!(got[0].0, format!("{path}:2"));
        assert!(got[0].1.contains("no TTL"), "{}", got[0].1);
    }

    #[test]
    fn raw_control_characters_are_refused_with_their_line() {
        for ch in ['\0', '\u{1b}', '\u{7f}', '\u{85}'] {
            let text =
                format!("{SOA}a{ch}b IN A 10.0.0.1\nc IN TXT \"x{ch}{ch}\"\nok IN A 10.0.0.2\n");
            let (_, problems, path, got) = one_zone_problems(&text);
            assert_eq!(got.len(), 2, "{problems}");
            assert_eq!(got[0].0, format!("{path}:4"));
            assert_eq!(got[1].0, format!("{path}:5"));
            assert!(
                got[0].1.contains(&format!("U+{:04X}", u32::from(ch))),
                "{}",
                got[0].1
            );
        }
        // In a comment it is nobody's data.
        let (_, problems, _, _) = one_zone_problems(&format!("{SOA}ok IN A 10.0.0.2 ; \0\n"));
        assert!(problems.is_empty(), "{problems}");
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
    fn text_after_a_fixed_records_last_field_is_an_error() {
        for (line, ok) in [
            ("r IN A 1.1.1.1 2.2.2.2", false),
            ("m IN MX 10 mail extra junk", false),
            ("m 300 IN MX 10 mail", true),
            ("s IN SRV 0 5 5060 sip.t.internal. x", false),
            ("c IN CNAME a b", false),
            ("t IN TXT \"a\" \"b\" c", true),
            ("e IN A 1.1.1.1", true),
        ] {
            let text = format!(
                "$ORIGIN t.internal.\n@ 300 IN SOA ns1 hostmaster 1 3600 600 86400 60\n{line}\n"
            );
            let (_, problems, _, _) = one_zone_problems(&text);
            let text = format!("{problems:?}");
            assert_eq!(problems.is_empty(), ok, "{line}: {text}");
            if !ok {
                assert!(text.contains("extra text after"), "{line}: {text}");
            }
        }
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
