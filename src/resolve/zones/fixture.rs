//! Test helpers shared by the zones submodule tests: the shipped example zone, zone sets built
//! from texts in a temporary directory, and record accessors.

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use hickory_proto::rr::{Name, RData, Record};

use super::{ZoneSet, ZonesConfig};
use crate::config_error::ConfigProblems;

/// The example zone shipped in `zones/`, so the tests also prove it loads cleanly.
pub(super) fn example() -> ZoneSet {
    let cfg = ZonesConfig {
        dir: Some(PathBuf::from("zones")),
        files: Vec::new(),
        defaults: false,
    };
    let mut problems = ConfigProblems::default();
    let set = ZoneSet::load(&cfg, Path::new(env!("CARGO_MANIFEST_DIR")), &mut problems);
    assert!(problems.is_empty(), "{problems}");
    set
}

/// A set built from zone texts written into a temporary directory.
pub(super) fn from_texts(files: &[(&str, &str)]) -> (ZoneSet, ConfigProblems, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        fs::write(dir.path().join(name), text).unwrap();
    }
    let cfg = ZonesConfig {
        dir: Some(PathBuf::from(".")),
        files: Vec::new(),
        defaults: false,
    };
    let mut problems = ConfigProblems::default();
    let set = ZoneSet::load(&cfg, dir.path(), &mut problems);
    (set, problems, dir)
}

pub(super) fn a_addrs(records: &[Record]) -> Vec<Ipv4Addr> {
    records
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect()
}

/// A query name from plain text (test names need no escapes).
pub(super) fn qname(text: &str) -> Name {
    Name::from_ascii(text).expect("a plain test name")
}

pub(super) fn owners(records: &[Record]) -> Vec<String> {
    records.iter().map(|r| r.name.to_ascii()).collect()
}

pub(super) const SOA: &str = "$ORIGIN t.internal.\n$TTL 300\n@ 3600 IN SOA ns hm 1 2 3 4 60\n";
