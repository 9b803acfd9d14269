//! Tunnel and exfiltration detection (stub until the detector lands).

use serde::Deserialize;

use crate::config_error::ConfigProblems;

/// Per-group detection settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupDetectConfig {}

impl GroupDetectConfig {
    /// Validate.
    pub fn validate(&self, _at: &str, _problems: &mut ConfigProblems) {}
}

/// `[detect]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectConfig {}

impl DetectConfig {
    /// Validate.
    pub fn validate(&self, _at: &str, _problems: &mut ConfigProblems) {}
}
