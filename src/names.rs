//! Domain-name helpers shared by the policy, the detector and the events.
//!
//! Names travel through the pipeline as lower-case dotted text without the trailing dot
//! (`www.example.com`; the root is `.`), produced once per query by the wire parser.

/// The registrable domain (eTLD+1) of a lower-case dotted name, from the Public Suffix List.
///
/// Names that are themselves a public suffix (`com`, `co.uk`) or have no registrable part are
/// returned whole, so every name maps to some key. Names under private-use TLDs that the list
/// does not know (`corp.internal`) fall under the list's default `*` rule: the TLD is the suffix.
#[must_use]
pub fn registrable_domain(name: &str) -> &str {
    thread_local! {
        /// Per thread: names' registrable domains, as `(start, length)` in the name; 2,048
        /// entries of one cache line (128 KiB a thread).
        static KEPT: std::cell::RefCell<crate::recall::NameSlots<(u8, u8)>> =
            std::cell::RefCell::new(crate::recall::NameSlots::new(2048));
    }
    if name.len() > crate::recall::MAX_NAME {
        return registrable_domain_of(name);
    }
    // Never a panic: with the table gone (a thread's exit) or in use, the list is read.
    let kept = KEPT.try_with(|t| {
        t.try_borrow_mut().ok().map(|mut t| {
            t.get_or(
                1, // one owner: the list is compiled in and never changes
                name.as_bytes(),
                |_| true,
                || {
                    let domain = registrable_domain_of(name);
                    let start = (domain.as_ptr() as usize).wrapping_sub(name.as_ptr() as usize);
                    // Always a slice of the name; (start, length) fit a byte (the name is short).
                    match (u8::try_from(start), u8::try_from(domain.len())) {
                        (Ok(s), Ok(l)) if name.get(start..start + domain.len()) == Some(domain) => {
                            (s, l)
                        }
                        _ => (u8::MAX, u8::MAX),
                    }
                },
            )
        })
    });
    let Ok(Some((start, len))) = kept else {
        return registrable_domain_of(name);
    };
    let start = usize::from(start);
    name.get(start..start + usize::from(len))
        .unwrap_or_else(|| registrable_domain_of(name))
}

/// [`registrable_domain`] from the list, every time.
fn registrable_domain_of(name: &str) -> &str {
    let Some(domain) = psl::domain(name.as_bytes()) else {
        return name;
    };
    let bytes = domain.trim().as_bytes();
    // The list returns a slice of the name itself: cut the name there instead of checking
    // its UTF-8 again (`psl::domain_str` does; ~130 instructions a query).
    let start = (bytes.as_ptr() as usize).wrapping_sub(name.as_ptr() as usize);
    start
        .checked_add(bytes.len())
        .and_then(|end| name.get(start..end))
        .filter(|s| std::ptr::eq(s.as_bytes(), bytes))
        .or_else(|| std::str::from_utf8(bytes).ok())
        .unwrap_or(name)
}

/// The part of `name` left of its registrable domain (`a.b` for `a.b.example.com`), without the
/// joining dot; empty when the name is the registrable domain itself.
#[must_use]
pub fn subdomain_part<'a>(name: &'a str, registrable: &str) -> &'a str {
    if name.len() > registrable.len() && name.ends_with(registrable) {
        let cut = name.len() - registrable.len();
        name[..cut].strip_suffix('.').unwrap_or("")
    } else {
        ""
    }
}

/// Iterates `name` and each parent: `a.b.c`, `b.c`, `c`.
pub fn self_and_parents(name: &str) -> impl Iterator<Item = &str> {
    let mut next = Some(name);
    std::iter::from_fn(move || {
        let current = next?;
        // A byte search: `str::find(char)` runs the generic char searcher, ~4× slower on
        // names this short (the policy's rule walk calls this for every query).
        next = current
            .bytes()
            .position(|b| b == b'.')
            .map(|i| &current[i + 1..])
            .filter(|s| !s.is_empty());
        Some(current)
    })
}

/// True when `name` is `zone` or a name below it (both lower-case, no trailing dot; the root
/// `"."` or `""` covers every name).
#[must_use]
pub fn is_at_or_below(name: &str, zone: &str) -> bool {
    if zone.is_empty() || zone == "." {
        return true;
    }
    name == zone
        || (name.len() > zone.len()
            && name.ends_with(zone)
            && name.as_bytes()[name.len() - zone.len() - 1] == b'.')
}

/// Whether `name` (lower-case, no trailing dot) is in a reverse-mapping tree: `in-addr.arpa`
/// or `ip6.arpa`.
#[must_use]
pub fn is_reverse_name(name: &str) -> bool {
    is_at_or_below(name, "in-addr.arpa") || is_at_or_below(name, "ip6.arpa")
}

/// Whether `name` ends in a suffix the Public Suffix List knows (`com`, `co.uk`), not one only
/// its default `*` rule gives (`local`, `internal`, `svc`).
#[must_use]
pub fn has_known_public_suffix(name: &str) -> bool {
    psl::suffix(name.as_bytes()).is_some_and(|s| s.is_known())
}

/// Whether `name` is itself a suffix the Public Suffix List knows (`com`, `co.uk`, `github.io`).
#[must_use]
pub fn is_known_public_suffix(name: &str) -> bool {
    psl::suffix(name.as_bytes()).is_some_and(|s| s.is_known() && s.as_bytes() == name.as_bytes())
}

/// If `name` is a search-list expansion under `search` (a resolver's search suffix), the public
/// name it expands: `name` is `<public name>.<at most two labels>.<search>` or
/// `<public name>.<search>`, where the public name has a known public suffix and a registrable
/// domain (`api.github.com.agents.svc.cluster.local` under `cluster.local` expands
/// `api.github.com`). `None` for any other name, under `search` or not.
#[must_use]
pub fn search_expansion<'a>(name: &'a str, search: &str) -> Option<&'a str> {
    let head = name.strip_suffix(search)?.strip_suffix('.')?;
    // The head itself, then without its last label, then without its last two.
    let mut candidate = Some(head);
    for _ in 0..3 {
        let c = candidate?;
        if has_known_public_suffix(c) && psl::domain(c.as_bytes()).is_some() {
            return Some(c);
        }
        candidate = c.rfind('.').map(|dot| &c[..dot]);
    }
    None
}

/// Why `name` (normalised) cannot be a detection exception, if it cannot: it must be a valid
/// name of at least two labels. An exception covers the name and everything under it, so a
/// single label (`com`, `_domainkey`) would switch appearance scoring off for a whole TLD or
/// for that label's every use. The same rule for `[detect] exceptions`, the admin API and the
/// review console's false-positive exceptions.
#[must_use]
pub fn exception_problem(name: &str) -> Option<String> {
    if let Err(why) = validate_name(name) {
        return Some(why);
    }
    (!name.contains('.')).then(|| {
        format!(
            "{name:?} is a single label: an exception is a registrable domain or a suffix with \
             at least two labels (e.g. \"_domainkey.example.com\"), never a label matched \
             anywhere"
        )
    })
}

/// Normalise a configured name: trim, lower-case, drop one trailing dot. An internationalised
/// name (`bücher.example`, `*.münchen.de`) becomes the A-label form queries carry
/// (`xn--bcher-kva.example`, UTS #46 as browsers map it); one that does not convert stays as
/// written, for [`validate_name`] to name the character.
#[must_use]
pub fn normalise(name: &str) -> String {
    let trimmed = name.trim();
    let trimmed = trimmed.strip_suffix('.').unwrap_or(trimmed);
    if trimmed.is_ascii() {
        return trimmed.to_ascii_lowercase();
    }
    let (wildcard, rest) = match trimmed.strip_prefix("*.") {
        Some(rest) => ("*.", rest),
        None => ("", trimmed),
    };
    match idna::domain_to_ascii(rest) {
        Ok(ascii) if !ascii.is_empty() => format!("{wildcard}{ascii}"),
        _ => trimmed.to_lowercase(),
    }
}

/// Checks that a configured name is a plausible DNS name: labels of 1–63 bytes, at most 253
/// bytes in all, made of letters, digits, `-` and `_`.
///
/// # Errors
/// Returns a human-readable reason when the name is not valid. The reason does not repeat the
/// name (callers say which name it was, and a name read from a file is quoted only as a short
/// excerpt: see [`crate::config_error::excerpt`]).
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty name".into());
    }
    if name.len() > 253 {
        return Err(format!(
            "name is {} bytes long, the limit is 253",
            name.len()
        ));
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err("empty label".into());
        }
        if label.len() > 63 {
            return Err(format!(
                "a label is {} bytes long, the limit is 63",
                label.len()
            ));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Err(format!(
                "character {} is not allowed in a name",
                crate::printable::excerpt(c.encode_utf8(&mut [0; 4]), 1)
            ));
        }
    }
    Ok(())
}

/// Why `name` is not a name as the query path writes one, or `None`: the lower-case
/// presentation form of [`crate::wire`] (letters, digits, `-` and `_` as they are, any other byte
/// as `\DDD`), labels of 1–63 bytes, at most 255 bytes on the wire. For names read back from a
/// file that only dnsward writes (a domain a containment was started on), where
/// [`validate_name`] would refuse the escapes a query may carry.
#[must_use]
pub fn query_name_problem(name: &str) -> Option<String> {
    let mut wire = 1usize;
    for label in name.split('.') {
        let b = label.as_bytes();
        let (mut i, mut len) = (0, 0usize);
        while i < b.len() {
            match b[i] {
                b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' => i += 1,
                b'\\'
                    if b.get(i + 1..i + 4).is_some_and(|d| {
                        d.iter().all(u8::is_ascii_digit)
                            && (u16::from(d[0] - b'0') * 100
                                + u16::from(d[1] - b'0') * 10
                                + u16::from(d[2] - b'0'))
                                <= 255
                    }) =>
                {
                    i += 4;
                }
                _ => {
                    let c = label[i..].chars().next().unwrap_or('?');
                    return Some(format!(
                        "character {} is not allowed in a name",
                        crate::printable::excerpt(c.encode_utf8(&mut [0; 4]), 1)
                    ));
                }
            }
            len += 1;
        }
        if len == 0 {
            return Some("empty label".into());
        }
        if len > 63 {
            return Some(format!("a label is {len} bytes long, the limit is 63"));
        }
        wire += len + 1;
    }
    (wire > 255).then(|| format!("name is {wire} bytes long on the wire, the limit is 255"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internationalised_names_become_the_a_labels_queries_carry() {
        assert_eq!(normalise("Bücher.Example."), "xn--bcher-kva.example");
        assert_eq!(normalise(" *.münchen.de "), "*.xn--mnchen-3ya.de");
        assert_eq!(normalise("xn--mnchen-3ya.de"), "xn--mnchen-3ya.de");
        assert_eq!(normalise("WWW.Example.COM."), "www.example.com");
        for name in ["bücher.example", "*.münchen.de", "例え.テスト"] {
            assert_eq!(
                validate_name(normalise(name).trim_start_matches("*.")),
                Ok(()),
                "{name}"
            );
        }
        // What does not convert stays, for the name check to say what is wrong with it.
        let bad = normalise("a\u{0}b.example");
        assert!(validate_name(&bad).is_err(), "{bad}");
    }

    #[test]
    fn an_exception_is_a_valid_name_of_two_labels_or_more() {
        for ok in ["example.com", "_domainkey.example.com", "in-addr.arpa"] {
            assert_eq!(exception_problem(ok), None, "{ok}");
        }
        for single in ["com", "_domainkey", "localhost"] {
            let why = exception_problem(single).unwrap();
            assert!(why.contains("single label"), "{single}: {why}");
        }
        assert_eq!(exception_problem("bad..name").unwrap(), "empty label");
    }

    /// The names the query path writes pass, escapes included; nothing else does.
    #[test]
    fn query_names_are_checked_as_the_query_path_writes_them() {
        let long_label = "a".repeat(63);
        let ok_long = [long_label.as_str(); 3].join(".");
        for ok in [
            "tun.example",
            "_dmarc.x-y.example",
            "a\\046b.example",
            "\\000\\255.example",
            "com",
            ok_long.as_str(),
        ] {
            assert_eq!(query_name_problem(ok), None, "{ok}");
        }
        let too_long = [long_label.as_str(); 4].join(".");
        let label_64 = format!("{}a.example", long_label);
        for (bad, why) in [
            ("", "empty label"),
            ("a..b", "empty label"),
            (".", "empty label"),
            ("A.example", "character \"A\""),
            ("a b.example", "character \" \""),
            ("a\\256.example", "character \"\\\\\""),
            ("a\\04.example", "character \"\\\\\""),
            ("a\u{1b}.example", "character \"\\u001b\""),
            (label_64.as_str(), "64 bytes"),
            (too_long.as_str(), "the limit is 255"),
        ] {
            let got = query_name_problem(bad).unwrap_or_default();
            assert!(got.contains(why), "{bad:?}: {got:?} should say {why:?}");
        }
    }

    #[test]
    fn search_expansions_of_public_names_are_recognised() {
        let s = "cluster.local";
        for (name, want) in [
            (
                "api.github.com.agents.svc.cluster.local",
                Some("api.github.com"),
            ),
            ("api.github.com.svc.cluster.local", Some("api.github.com")),
            ("api.github.com.cluster.local", Some("api.github.com")),
            ("github.com.agents.svc.cluster.local", Some("github.com")),
            ("www.bbc.co.uk.cluster.local", Some("www.bbc.co.uk")),
            // Not a public name before the search path: scored as any other name.
            ("my-service.agents.svc.cluster.local", None),
            ("mzxw6ytboi2gk3tf.agents.svc.cluster.local", None),
            ("com.agents.svc.cluster.local", None),
            // More than two labels of search path, or not under the search domain at all.
            ("api.github.com.a.b.c.cluster.local", None),
            ("api.github.com", None),
            ("api.github.com.notcluster.local", None),
            ("cluster.local", None),
        ] {
            assert_eq!(search_expansion(name, s), want, "{name}");
        }
        assert!(is_known_public_suffix("com") && is_known_public_suffix("co.uk"));
        assert!(!is_known_public_suffix("cluster.local") && !is_known_public_suffix("github.com"));
    }

    #[test]
    fn at_or_below_respects_label_boundaries() {
        assert!(is_at_or_below("corp.internal", "corp.internal"));
        assert!(is_at_or_below("a.b.corp.internal", "corp.internal"));
        assert!(!is_at_or_below("evilcorp.internal", "corp.internal"));
        assert!(!is_at_or_below("internal", "corp.internal"));
        assert!(is_at_or_below("anything", "."));
    }

    #[test]
    fn the_registrable_domain_is_the_lists_own_answer_cut_from_the_name() {
        for name in [
            "a.b.example.com",
            "example.com",
            "com",
            ".",
            "",
            "example.com.",
            "a..example.com",
            "x\\046y.example.co.uk",
            "user.github.io",
            "b\\255.\\000.corp.internal",
            "xn--bcher-kva.example",
            "bücher.example",
            "a.b.c.d.e.f.g.h.s3.amazonaws.com",
        ] {
            let want = psl::domain_str(name).unwrap_or(name);
            assert_eq!(registrable_domain(name), want, "{name:?}");
        }
    }

    #[test]
    fn registrable_domains_follow_the_public_suffix_list() {
        assert_eq!(registrable_domain("a.b.example.com"), "example.com");
        assert_eq!(registrable_domain("x.example.co.uk"), "example.co.uk");
        assert_eq!(registrable_domain("com"), "com");
        assert_eq!(registrable_domain("host.corp.internal"), "corp.internal");
    }

    #[test]
    fn subdomain_part_strips_the_registrable_domain() {
        assert_eq!(subdomain_part("a.b.example.com", "example.com"), "a.b");
        assert_eq!(subdomain_part("example.com", "example.com"), "");
        assert_eq!(subdomain_part("badexample.com", "example.com"), "");
    }

    #[test]
    fn parents_are_walked_up_to_the_tld() {
        let v: Vec<_> = self_and_parents("a.b.c").collect();
        assert_eq!(v, ["a.b.c", "b.c", "c"]);
        assert_eq!(self_and_parents(".").collect::<Vec<_>>(), ["."]);
    }

    #[test]
    fn names_are_validated() {
        assert!(validate_name("api.openai.com").is_ok());
        assert!(validate_name("_dmarc.example.com").is_ok());
        assert!(validate_name("a..b").is_err());
        assert!(validate_name("bad name.com").is_err());
        assert!(validate_name(&"a".repeat(64)).is_err());
    }
}
