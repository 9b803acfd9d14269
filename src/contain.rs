//! Containment (stub until it lands).
use serde::Deserialize;

use crate::config_error::ConfigProblems;

/// `[containment]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainConfig {}

impl ContainConfig {
    /// Validate.
    pub fn validate(&self, _at: &str, _problems: &mut ConfigProblems) {}
}
