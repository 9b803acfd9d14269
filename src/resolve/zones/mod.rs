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
//!   the rcode is that of the last link (RFC 6604); the pipeline resolves a target outside the
//!   zone (another local zone, or upstream) and appends the rest of the chain;
//! - the name exists (or is an empty non-terminal) but has no such type: NOERROR/NODATA with the
//!   zone SOA in the authority section, its TTL the negative TTL `min(SOA TTL, SOA MINIMUM)`
//!   (RFC 2308 §5);
//! - the name does not exist: NXDOMAIN with the same SOA;
//! - wildcards (`*.apps.corp.internal`) synthesise answers owned by the query name when no
//!   closer name exists (RFC 4592: the source of synthesis is `*.` + the closest encloser); a
//!   query for the literal `*` label asks for the wildcard's own owner and gets its records;
//! - names are labels of bytes: zone owners and query names are keyed by the same text form
//!   ([`crate::wire::name_text`], `\DDD` decimal escapes), so a label holding a dot, a
//!   backslash, NUL or a byte above 127 matches only itself, and answers carry names built from
//!   labels, never re-read from text;
//! - NS below the apex (a delegation): names at and below the cut are not answered from this
//!   file; they are sent to the delegated servers, whose addresses the zone must hold (glue, or
//!   a sibling's A/AAAA: a delegation without is logged and answered from the file as before),
//!   as a recursive resolver follows a referral ([`Delegation`], turned into a forward zone by
//!   the policy);
//! - `ANY`: answered with a single RRset as RFC 8482 §4.1 allows (the CNAME if there is one,
//!   otherwise the RRset with the lowest type number), so `ANY` cannot be used to pull a whole
//!   node in one small query; operators ask for the type they want;
//! - MX, NS and SRV answers carry the in-zone A/AAAA records of their targets as additionals
//!   (the pipeline keeps only those whose names the asking group may resolve).
//!
//! ## Loading
//! Zone files are read in full at load time and never again; the [`ZoneSet`] is immutable, so a
//! reload builds a new one. Every problem is reported with `path:line`, and a broken file never
//! stops the others from being read. `$ORIGIN` and `$TTL` are supported; `$INCLUDE` is refused
//! (a zone file must not be able to pull in arbitrary files). Only class `IN` is served.
//! Escapes are RFC 1035's: `\DDD` is a decimal byte (`dec\065` is `decA`), `\X` is X; a bad
//! one is reported with `path:line`. Zone transfers are not served (the pipeline refuses AXFR and
//! IXFR before any zone is asked).
//!
//! ## Files
//! - `parse`: RFC 1035 zone-file parsing (entries, directives, records) and the structural
//!   checks that turn one file into a zone.
//! - `authority`: answering from a loaded zone (CNAME chase, wildcards, NODATA vs NXDOMAIN,
//!   additionals) and [`ZoneSet::lookup`].
//!
//! Like the rest of `resolve`, this module may import only the foundation modules.

mod authority;
mod defaults;
#[cfg(test)]
mod fixture;
mod parse;

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::Record;
use serde::Deserialize;

use crate::config_error::{ConfigProblems, FileProblems};

use authority::Zone;
pub use parse::MAX_ZONE_RECORDS;
use parse::parse_zone;

/// Longest CNAME chain followed inside one zone before answering with what was found so far.
/// Real chains are one or two links; the bound only stops pathological zone files.
pub const MAX_CNAME_CHAIN: usize = 8;

/// The `[zones]` section: which zone files to serve. The default serves none of its own, and the
/// built-in zones of every resolver ([`defaults`]: localhost, private reverse zones).
///
/// ```toml
/// [zones]
/// dir = "zones"   # every *.zone file in it
/// files = [{ origin = "corp.internal", path = "extra/corp.internal.zone" }]
/// defaults = true # localhost, RFC 6303 reverse zones, invalid/test/onion/home.arpa
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZonesConfig {
    /// A directory whose every `*.zone` file is loaded (not recursively). Each file's origin is
    /// its first `$ORIGIN` (before any record) or else its file name without `.zone`.
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// Zone files listed one by one.
    #[serde(default)]
    pub files: Vec<ZoneFileConfig>,
    /// Serve the built-in local zones ([`defaults`]) where no configured zone or forward zone
    /// covers them.
    #[serde(default = "default_true")]
    pub defaults: bool,
}

fn default_true() -> bool {
    true
}

impl Default for ZonesConfig {
    fn default() -> Self {
        Self {
            dir: None,
            files: Vec::new(),
            defaults: true,
        }
    }
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
    /// Origin → index into `zones`, so the longest match is one hash probe per label (every
    /// cache miss probes each of its name's labels: foldhash, a third of SipHash's cost; the
    /// keys are the operator's zones, not a client's).
    by_origin: ZoneMap,
    /// Files that were read, for the policy content hash.
    files: Vec<PathBuf>,
    /// How many of `zones` (the first ones) were configured; the rest are built in.
    configured: usize,
    /// The top-level labels of the built-in zones served (`arpa`, `localhost`, …): a name
    /// under none of them is in no built-in zone, found without a lookup.
    built_in_tlds: Vec<Box<str>>,
    /// The last bytes of `built_in_tlds`, as a set: most names end in none of them.
    built_in_last: [u64; 4],
    /// Delegations inside the configured zones (NS below an apex, with in-zone addresses for
    /// their servers): their names are not answered here but sent to those servers.
    delegations: Vec<Delegation>,
    /// The delegated names of `delegations`, each with the index of the zone that delegates
    /// it, for [`ZoneSet::serves`] (a cut in `internal` says nothing about a more specific
    /// configured zone `d.internal`).
    cuts: ZoneMap,
}

/// Zone names to indexes.
type ZoneMap = HashMap<Box<str>, usize, foldhash::fast::RandomState>;

/// A sub-zone a local zone delegates (`lab NS ns.lab` with `ns.lab A 10.0.5.53`): its names are
/// resolved by asking those servers (port 53), as a recursive resolver follows a referral,
/// instead of being answered NXDOMAIN from the parent's file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delegation {
    /// The delegated name (lower-case, no trailing dot).
    pub zone: String,
    /// Its name servers' addresses, from the parent zone's file.
    pub addresses: Vec<std::net::IpAddr>,
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

        if let Some(dir) = &cfg.dir
            && dir.as_os_str().is_empty()
        {
            problems.push(
                "zones.dir",
                "is empty: leave it out for no zone directory, or write \".\" for the \
                 configuration's own directory",
            );
        } else if let Some(dir) = &cfg.dir {
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
        // Records of the zones loaded so far, against [`MAX_ZONE_RECORDS`].
        let mut records = 0usize;
        // Origin → the file that defined it, to name both files in a duplicate report.
        let mut origin_files: HashMap<String, PathBuf> = HashMap::new();
        for (key, path, origin) in sources {
            // The same file reached through `dir` and `files` is one zone, not a duplicate.
            let canonical = fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
            if !seen_paths.insert(canonical) {
                continue;
            }
            let text = match crate::config_error::read_text_file(
                &path,
                crate::config_error::MAX_ZONE_FILE,
            ) {
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
            // A file's problems are bounded (a few in full, the rest counted): a path naming
            // some other file must not copy it into a reload's reply and the event log.
            let mut found = ConfigProblems::default();
            let zone = parse_zone(
                &text,
                &path,
                origin.as_deref(),
                MAX_ZONE_RECORDS.saturating_sub(records),
                &mut found,
            );
            records += zone.as_ref().map_or(0, Zone::record_count);
            FileProblems::new(path.display().to_string(), problems).absorb(found);
            let Some(zone) = zone else {
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
            for cut in zone.cuts() {
                if cut.addresses.is_empty() {
                    // Not an error (a zone that loaded before must still load): its names
                    // are answered from this file's records, as before, and the log says why.
                    tracing::warn!(
                        "{}: {} delegates {} to {}, with no address for those servers in the \
                         zone: not followed, its names are answered from this file; add the \
                         servers' A/AAAA records (glue), or forward the sub-zone with \
                         [[upstream.forward]]",
                        path.display(),
                        zone.origin,
                        cut.name,
                        cut.ns.join(", ")
                    );
                    continue;
                }
                set.cuts
                    .insert(cut.name.clone().into_boxed_str(), set.zones.len());
                set.delegations.push(Delegation {
                    zone: cut.name,
                    addresses: cut.addresses,
                });
            }
            let loops = zone.cname_loops();
            if !loops.is_empty() {
                // Not an error either: the zone's other names are served; these are SERVFAIL.
                tracing::warn!(
                    "{}: CNAME loop in zone {} through {}: those names are answered SERVFAIL",
                    path.display(),
                    zone.origin,
                    loops.join(", ")
                );
            }
            origin_files.insert(zone.origin.clone(), path);
            set.by_origin
                .insert(zone.origin.clone().into_boxed_str(), set.zones.len());
            set.zones.push(zone);
        }
        set.configured = set.zones.len();
        set
    }

    /// Add the built-in zones ([`defaults`]) that no configured zone is at or above (a
    /// configured `172.in-addr.arpa` keeps `16.172.in-addr.arpa`, which the longest match would
    /// otherwise give the built-in zone; a configured zone below one, `lab.home.arpa`, answers
    /// its own names by the longest match and leaves the rest to the built-in zone) and for
    /// which `covered` (a forward zone at, above or below it: zones are asked before forward
    /// zones) is false.
    pub fn add_defaults(&mut self, covered: impl Fn(&str) -> bool) {
        let configured: Vec<String> = self.origins().map(str::to_string).collect();
        for (origin, text) in defaults::zones() {
            let above = |zone: &String| crate::names::is_at_or_below(&origin, zone);
            if configured.iter().any(above) || covered(&origin) {
                continue;
            }
            let mut problems = ConfigProblems::default();
            let path = PathBuf::from(format!("built-in zone {origin}"));
            let zone = parse_zone(&text, &path, Some(&origin), usize::MAX, &mut problems);
            debug_assert!(problems.is_empty(), "{problems}");
            if let Some(zone) = zone.filter(|_| problems.is_empty()) {
                let tld = top_label(&zone.origin);
                if !self.built_in_tlds.iter().any(|t| &**t == tld) {
                    self.built_in_tlds.push(tld.into());
                }
                if let Some(&b) = tld.as_bytes().last() {
                    self.built_in_last[usize::from(b >> 6)] |= 1 << (b & 63);
                }
                self.by_origin
                    .insert(zone.origin.clone().into_boxed_str(), self.zones.len());
                self.zones.push(zone);
            }
        }
    }

    /// Whether `qname` (the wire parser's text form) is answered by a built-in zone
    /// ([`defaults`]) rather than by one the operator configured.
    #[must_use]
    pub fn serves_built_in(&self, qname: &str) -> bool {
        // On the deny path of every blocked query: a suffix compare per built-in top label
        // (five), after a last-byte check that turns nearly every other name away at once.
        let Some(&last) = qname.as_bytes().last() else {
            return false;
        };
        if self.built_in_last[usize::from(last >> 6)] >> (last & 63) & 1 == 0 {
            return false;
        }
        let under = |tld: &str| {
            qname.ends_with(tld)
                && (qname.len() == tld.len()
                    || qname.as_bytes()[qname.len() - tld.len() - 1] == b'.')
        };
        self.built_in_tlds
            .iter()
            .any(|t| t.as_bytes().last() == Some(&last) && under(t))
            && self
                .zone_index_of(qname)
                .is_some_and(|i| i >= self.configured)
    }

    /// The delegations inside the configured zones, whose names go to their own servers.
    #[must_use]
    pub fn delegations(&self) -> &[Delegation] {
        &self.delegations
    }

    /// The zone files that were read (for policy content hashing), in load order.
    #[must_use]
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Configured zone origins served (lower-case, no trailing dot).
    pub fn origins(&self) -> impl Iterator<Item = &str> {
        self.zones[..self.configured]
            .iter()
            .map(|z| z.origin.as_str())
    }

    /// Every zone origin served, the built-in ones too.
    pub fn all_origins(&self) -> impl Iterator<Item = &str> {
        self.zones.iter().map(|z| z.origin.as_str())
    }
}

/// A name's last label (text form: a dot inside a label is escaped, so the last `.` ends it).
fn top_label(name: &str) -> &str {
    name.rsplit('.').next().unwrap_or(name)
}

/// `*.zone` entries directly in `dir`, sorted so load order (and duplicate reports) are stable.
/// Every one is a zone file: one that is not a regular file (a directory, a FIFO, a device, a
/// broken symlink) is reported by the reader, so a reload keeps the running zone rather than
/// dropping it. Only Emacs's lock files (`.#name.zone`, a dangling symlink while a buffer is
/// being edited) are passed over.
fn list_zone_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let lock = path
            .file_name()
            .is_some_and(|n| n.as_encoded_bytes().starts_with(b".#"));
        if !lock && path.extension().is_some_and(|e| e == "zone") {
            found.push(path);
        }
    }
    found.sort();
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::fixture::{example, from_texts};
    use super::{ZoneSet, ZonesConfig};
    use crate::config_error::ConfigProblems;

    #[test]
    fn zone_sets_can_be_shared_across_threads() {
        fn shared<T: Send + Sync>() {}
        shared::<ZoneSet>();
    }

    #[test]
    fn built_in_zones_answer_localhost_and_keep_private_reverse_names_local() {
        use super::fixture::{a_addrs, qname};
        use hickory_proto::op::ResponseCode;
        use hickory_proto::rr::{RData, RecordType};
        let mut set = example();
        set.add_defaults(|origin| origin == "168.192.in-addr.arpa");
        assert_eq!(
            set.origins().collect::<Vec<_>>(),
            ["corp.internal"],
            "built-in zones are not listed as configured"
        );
        for name in ["localhost", "db.localhost", "LocalHost"] {
            let a = set.lookup(&qname(name), RecordType::A).unwrap();
            assert_eq!(
                a_addrs(&a.answers),
                ["127.0.0.1".parse::<std::net::Ipv4Addr>().unwrap()],
                "{name}"
            );
            let aaaa = set.lookup(&qname(name), RecordType::AAAA).unwrap();
            assert!(
                matches!(&aaaa.answers[0].data, RData::AAAA(a) if a.0.is_loopback()),
                "{name}"
            );
        }
        let v6_loopback = format!("1.{}ip6.arpa", "0.".repeat(31));
        for name in ["1.0.0.127.in-addr.arpa", v6_loopback.as_str()] {
            let ptr = set.lookup(&qname(name), RecordType::PTR).unwrap();
            assert!(
                matches!(&ptr.answers[0].data, RData::PTR(p) if p.0.to_ascii() == "localhost."),
                "{name}: {ptr:?}"
            );
        }
        // RFC 6303 and special-use names: NXDOMAIN with the zone's SOA, never forwarded.
        for name in [
            "5.0.0.10.in-addr.arpa",
            "9.1.20.172.in-addr.arpa",
            "7.7.100.100.in-addr.arpa",
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa",
            "2.0.0.127.in-addr.arpa",
            "x.invalid",
            "hidden.onion",
            "printer.home.arpa",
        ] {
            let nx = set
                .lookup(&qname(name), RecordType::PTR)
                .unwrap_or_else(|| panic!("{name}"));
            assert_eq!(nx.rcode, ResponseCode::NXDomain, "{name}");
            assert_eq!(nx.authorities.len(), 1, "{name}: the SOA");
        }
        // Public reverse names and a zone a forward zone covers are not answered here.
        assert!(
            set.lookup(&qname("4.4.8.8.in-addr.arpa"), RecordType::PTR)
                .is_none()
        );
        assert!(
            set.lookup(&qname("1.1.168.192.in-addr.arpa"), RecordType::PTR)
                .is_none()
        );
        assert!(
            set.lookup(&qname("5.0.0.11.in-addr.arpa"), RecordType::PTR)
                .is_none()
        );
    }

    #[test]
    fn a_configured_zone_replaces_the_built_in_one_and_defaults_can_be_off() {
        use super::fixture::qname;
        use hickory_proto::rr::RecordType;
        // One configured zone (SOA and NS at the apex, then `records`), then the built-in ones.
        let with_defaults = |file: &str, records: &str| {
            let text =
                format!("@ 60 IN SOA ns hm 1 2 3 4 60\n@ 60 IN NS ns.corp.internal.\n{records}");
            let (mut set, problems, _dir) = from_texts(&[(file, &text)]);
            assert!(problems.is_empty(), "{problems}");
            set.add_defaults(|_| false);
            set
        };
        let set = with_defaults(
            "10.in-addr.arpa.zone",
            "1.0.0 60 IN PTR host.corp.internal.\n",
        );
        let ptr = set
            .lookup(&qname("1.0.0.10.in-addr.arpa"), RecordType::PTR)
            .unwrap();
        assert_eq!(ptr.zone, "10.in-addr.arpa");
        assert_eq!(ptr.answers.len(), 1, "the operator's zone answers");
        assert_eq!(set.origins().count(), 1);
        // A configured zone above built-in ones keeps all of its names.
        let set = with_defaults(
            "172.in-addr.arpa.zone",
            "1.0.16 60 IN PTR host.corp.internal.\n",
        );
        let ptr = set
            .lookup(&qname("1.0.16.172.in-addr.arpa"), RecordType::PTR)
            .unwrap();
        assert_eq!(ptr.zone, "172.in-addr.arpa");
        assert_eq!(ptr.answers.len(), 1);
        // One below a built-in zone answers its names; the built-in zone keeps the rest.
        let set = with_defaults("lab.home.arpa.zone", "nas 60 IN A 10.0.0.5\n");
        let nas = set
            .lookup(&qname("nas.lab.home.arpa"), RecordType::A)
            .unwrap();
        assert_eq!((nas.zone.as_str(), nas.answers.len()), ("lab.home.arpa", 1));
        let other = set
            .lookup(&qname("printer.home.arpa"), RecordType::A)
            .unwrap();
        assert_eq!(other.zone, "home.arpa");
        let parsed: ZonesConfig = toml::from_str("defaults = false").unwrap();
        assert!(!parsed.defaults);
        assert!(
            toml::from_str::<ZonesConfig>("").unwrap().defaults,
            "on by default"
        );
    }

    #[test]
    fn the_example_zone_loads() {
        let set = example();
        assert_eq!(set.origins().collect::<Vec<_>>(), ["corp.internal"]);
        assert_eq!(set.files().len(), 1);
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

    /// A `*.zone` entry in `zones.dir` that is not a regular file is reported (a reload then
    /// keeps the running zone); it was passed over, and a reload dropped its zone and sent its
    /// names upstream. Emacs's lock files (`.#name.zone`) are still passed over.
    #[cfg(unix)]
    #[test]
    fn a_zone_entry_that_is_not_a_file_is_reported_not_passed_over() {
        let cfg: ZonesConfig = toml::from_str("dir = \".\"").unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("a.internal.zone")).unwrap();
        std::os::unix::fs::symlink("/nonexistent", dir.path().join("b.internal.zone")).unwrap();
        std::os::unix::fs::symlink("/dev/zero", dir.path().join("c.internal.zone")).unwrap();
        std::os::unix::fs::symlink("user@host.1234", dir.path().join(".#d.internal.zone")).unwrap();
        let mut problems = ConfigProblems::default();
        ZoneSet::load(&cfg, dir.path(), &mut problems);
        let shown = problems.to_string();
        assert_eq!(problems.len(), 3, "{shown}");
        for (name, why) in [
            ("a.internal.zone", "directory"),
            ("b.internal.zone", "No such file"),
            ("c.internal.zone", "not a regular file"),
        ] {
            assert!(
                problems
                    .problems
                    .iter()
                    .any(|p| p.message.contains(name) && p.message.contains(why)),
                "{name}: {shown}"
            );
        }
    }

    /// The local zones hold at most [`super::MAX_ZONE_RECORDS`] records together: the zone
    /// that crosses the bound is refused with its line (a million records in one legal-sized
    /// file took 1.5 GB to load), the zones before it load.
    #[test]
    fn the_local_zones_hold_a_bounded_number_of_records_together() {
        let zone = |origin: &str, n: usize| {
            let mut text = format!("$ORIGIN {origin}.\n$TTL 60\n@ SOA ns hm 1 2 3 4 60\n");
            for i in 0..n {
                text.push_str(&format!("h{i} A 10.0.0.1\n"));
            }
            text
        };
        let half = super::MAX_ZONE_RECORDS / 2;
        let (set, problems, _dir) = from_texts(&[
            ("a.internal.zone", &zone("a.internal", half)),
            ("b.internal.zone", &zone("b.internal", half + 10)),
        ]);
        assert_eq!(problems.len(), 1, "{problems}");
        let shown = problems.to_string();
        // The SOA is a's record too: b's 200,000th record is its line 3 + (half - 1).
        assert!(
            shown.contains(&format!("b.internal.zone:{}", 3 + half - 1))
                && shown.contains("more than 200000 records in the local zones together"),
            "{shown}"
        );
        assert_eq!(set.origins().collect::<Vec<_>>(), ["a.internal"]);
    }

    /// `@` in record data is the origin (RFC 1035 §5.1), as BIND reads it; hickory's parser
    /// took it for an owner only ("unrecognized token in stream: At"). In quotes it is text.
    #[test]
    fn an_at_sign_in_record_data_is_the_origin() {
        use super::fixture::qname;
        use hickory_proto::rr::{RData, RecordType};
        let text = "$ORIGIN x.internal.\n$TTL 60\n@ IN SOA @ hostmaster 1 2 3 4 60\n\
                    @ IN A 10.0.0.1\n@ IN MX 10 @\nwww IN CNAME @\nt IN TXT \"@\" \"a @ b\"\n\
                    u IN TXT @\n";
        let (set, problems, _dir) = from_texts(&[("x.internal.zone", text)]);
        assert!(problems.is_empty(), "{problems}");
        let www = set
            .lookup(&qname("www.x.internal."), RecordType::CNAME)
            .unwrap();
        assert!(
            matches!(&www.answers[0].data, RData::CNAME(c) if c.0.to_string() == "x.internal."),
            "{:?}",
            www.answers
        );
        let mx = set.lookup(&qname("x.internal."), RecordType::MX).unwrap();
        assert!(
            matches!(&mx.answers[0].data, RData::MX(m) if m.exchange.to_string() == "x.internal."),
            "{:?}",
            mx.answers
        );
        let t = set
            .lookup(&qname("t.x.internal."), RecordType::TXT)
            .unwrap();
        // The two strings "@" and "a @ b", shown joined.
        assert_eq!(t.answers[0].data.to_string(), "@a @ b");
        // In a TXT record's data, unquoted, it is text too (as BIND reads it).
        let u = set
            .lookup(&qname("u.x.internal."), RecordType::TXT)
            .unwrap();
        assert_eq!(u.answers[0].data.to_string(), "@");
    }

    /// The records of one RRset are served with one TTL, the lowest written (RFC 2181 §5.2).
    /// Other types at the name keep theirs.
    #[test]
    fn an_rrset_written_with_different_ttls_is_served_with_the_lowest() {
        use super::fixture::qname;
        use hickory_proto::rr::RecordType;
        let text = "$ORIGIN y.internal.\n$TTL 300\n@ SOA ns hm 1 2 3 4 60\n\
                    d A 10.0.0.9\nd 600 A 10.0.0.10\nd 120 A 10.0.0.11\nd 900 TXT \"x\"\n";
        let (set, problems, _dir) = from_texts(&[("y.internal.zone", text)]);
        assert!(problems.is_empty(), "{problems}");
        let a = set.lookup(&qname("d.y.internal."), RecordType::A).unwrap();
        let ttls: Vec<u32> = a.answers.iter().map(|r| r.ttl).collect();
        assert_eq!(ttls, [120, 120, 120], "{:?}", a.answers);
        let t = set
            .lookup(&qname("d.y.internal."), RecordType::TXT)
            .unwrap();
        assert_eq!(t.answers[0].ttl, 900);
    }

    #[test]
    fn an_empty_zone_directory_setting_is_an_error() {
        let cfg: ZonesConfig = toml::from_str("dir = \"\"").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut problems = ConfigProblems::default();
        ZoneSet::load(&cfg, dir.path(), &mut problems);
        assert_eq!(problems.len(), 1, "{problems}");
        assert!(
            problems.to_string().contains("zones.dir: is empty"),
            "{problems}"
        );
    }

    #[test]
    fn ttls_too_large_are_named_with_their_line() {
        let text = "$ORIGIN x.internal.\n@ 99999999999 IN SOA ns1 host 1 2 3 4 5\n\
                    a IN 3000000000 A 192.0.2.1\nb 1h A 192.0.2.2\n$TTL 4294967296\n\
                    c 2147483647 A 192.0.2.3\n";
        let (_, problems, _dir) = from_texts(&[("x.internal.zone", text)]);
        let shown: Vec<String> = problems.problems.iter().map(ToString::to_string).collect();
        assert!(
            shown[0].ends_with(
                "x.internal.zone:2: bad record: TTL 99999999999 is too large: at most 2147483647 seconds (RFC 2181 §8)"
            ),
            "{problems}"
        );
        assert!(
            shown[1].contains("x.internal.zone:3: bad record: TTL 3000000000 is too large"),
            "{problems}"
        );
        assert!(
            shown[2].contains("x.internal.zone:5: bad $TTL: TTL 4294967296 is too large"),
            "{problems}"
        );
        // Lines 4 and 6 are fine (a duration, and the largest TTL there is); the zone then has
        // no SOA, reported last.
        assert_eq!(problems.len(), 4, "{problems}");
        assert!(
            !problems.to_string().contains("record type string unknown"),
            "{problems}"
        );
    }

    #[test]
    fn a_file_that_is_not_a_zone_is_not_copied_into_the_problems() {
        // A type hickory's parser quotes back in its message, then shadow-like lines.
        let mut text = String::from("@ IN SECRETSECRETSECRETSECRETSECRETSECRET 1\n");
        for i in 0..30 {
            text.push_str(&format!(
                "user{i}:$y$j9T$saltsalt$hashhashhashhash:20228:0:99999:7:::\n"
            ));
        }
        let (set, problems, _dir) = from_texts(&[("x.internal.zone", &text)]);
        assert_eq!(set.origins().count(), 0);
        let all = problems.to_string();
        assert_eq!(
            problems.len(),
            crate::config_error::PROBLEMS_PER_FILE + 1,
            "{all}"
        );
        assert!(all.contains("x.internal.zone:1: "), "{all}");
        assert!(
            all.contains("more problem(s), not shown, on line(s) 6, 7, 8"),
            "{all}"
        );
        assert!(!all.contains("hashhash"), "{all}");
        assert!(!all.contains("SECRETSECRETSECRETSECRETS"), "{all}");
    }

    #[test]
    fn duplicate_origins_are_reported() {
        let text = "$ORIGIN same.internal.\n@ 60 IN SOA ns hm 1 2 3 4 60\n";
        let (set, problems, _dir) = from_texts(&[("a.zone", text), ("b.zone", text)]);
        assert_eq!(problems.len(), 1, "{problems}");
        assert!(problems.problems[0].message.contains("already loaded"));
        assert_eq!(set.origins().count(), 1);
    }

    /// A delegation with in-zone addresses for its servers (glue below the cut, or a sibling
    /// name) takes its names out of the zone (the highest cut only); one whose servers have no
    /// address here is a load error that says what to do.
    #[test]
    fn delegations_take_their_names_out_of_the_zone_and_need_addresses() {
        let text = "$ORIGIN d.internal.\n$TTL 60\n@ IN SOA ns hm 1 2 3 4 60\n@ IN NS ns\n\
                    ns IN A 10.0.0.1\nwww IN A 10.0.0.2\n\
                    lab IN NS ns.lab\nlab IN NS ns\nns.lab IN A 10.0.5.53\n\
                    deep.lab IN NS ns.lab\n\
                    ops IN NS ns\n";
        let (set, problems, _dir) = from_texts(&[("d.zone", text)]);
        assert!(problems.is_empty(), "{problems}");
        let mut got: Vec<(String, Vec<String>)> = set
            .delegations()
            .iter()
            .map(|d| {
                let a = d.addresses.iter().map(ToString::to_string).collect();
                (d.zone.clone(), a)
            })
            .collect();
        got.sort();
        assert_eq!(
            got,
            [
                (
                    "lab.d.internal".to_string(),
                    vec!["10.0.0.1".into(), "10.0.5.53".into()]
                ),
                ("ops.d.internal".to_string(), vec!["10.0.0.1".into()]),
            ]
        );
        for name in [
            "lab.d.internal",
            "x.lab.d.internal",
            "ns.lab.d.internal",
            "ops.d.internal",
        ] {
            assert!(!set.serves(name), "{name}");
        }
        for name in [
            "d.internal",
            "www.d.internal",
            "ns.d.internal",
            "labx.d.internal",
        ] {
            assert!(set.serves(name), "{name}");
        }

        let text = "$ORIGIN e.internal.\n$TTL 60\n@ IN SOA ns hm 1 2 3 4 60\n\
                    aws IN NS ns-1.awsdns.example.\n";
        let (set, problems, _dir) = from_texts(&[("e.zone", text)]);
        assert!(
            problems.is_empty(),
            "a zone that loaded before still loads: {problems}"
        );
        assert!(set.delegations().is_empty());
        assert!(
            set.serves("x.aws.e.internal"),
            "answered from the file, as before"
        );

        // A cut in one zone says nothing about a more specific configured zone.
        let outer = "$ORIGIN internal.\n$TTL 60\n@ IN SOA ns hm 1 2 3 4 60\n@ IN NS ns\n\
                     ns IN A 10.0.0.1\nlab.d IN NS ns.lab.d\nns.lab.d IN A 10.0.5.53\n";
        let inner = "$ORIGIN d.internal.\n$TTL 60\n@ IN SOA ns hm 1 2 3 4 60\n\
                     lab IN A 10.0.9.9\n";
        let (set, problems, _dir) = from_texts(&[("a.zone", outer), ("b.zone", inner)]);
        assert!(problems.is_empty(), "{problems}");
        assert!(
            set.serves("lab.d.internal"),
            "d.internal answers its own lab"
        );
        assert!(set.serves("x.lab.d.internal"));
    }
}
