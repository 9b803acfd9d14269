//! Local authoritative zones (stub until the zone loader lands).
use std::path::{Path, PathBuf};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{Record, RecordType};
use serde::Deserialize;

use crate::config_error::ConfigProblems;

/// `[zones]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZonesConfig {
    /// Directory of zone files.
    pub dir: Option<PathBuf>,
}

/// Loaded zones.
#[derive(Debug, Default)]
pub struct ZoneSet {
    files: Vec<PathBuf>,
}

/// An authoritative answer.
#[derive(Debug)]
pub struct ZoneAnswer {
    /// Zone origin.
    pub zone: String,
    /// Rcode.
    pub rcode: ResponseCode,
    /// Answers.
    pub answers: Vec<Record>,
    /// Authorities.
    pub authorities: Vec<Record>,
    /// Additionals.
    pub additionals: Vec<Record>,
}

impl ZoneSet {
    /// Load.
    pub fn load(_cfg: &ZonesConfig, _base_dir: &Path, _problems: &mut ConfigProblems) -> Self {
        Self::default()
    }
    /// Empty.
    #[must_use]
    pub fn empty() -> Self {
        Self::default()
    }
    /// Files.
    #[must_use]
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }
    /// Lookup.
    #[must_use]
    pub fn lookup(&self, _qname: &str, _qtype: RecordType) -> Option<ZoneAnswer> {
        None
    }
}
