//! Event sink (stub until the sink lands).
use serde::Deserialize;

use super::Event;
use crate::config_error::ConfigProblems;

/// `[events]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {}

impl EventsConfig {
    /// Validate.
    pub fn validate(&self, _at: &str, _problems: &mut ConfigProblems) {}
}

/// Sender.
#[derive(Debug, Clone)]
pub struct EventSender;

impl EventSender {
    /// Emit.
    pub fn emit(&self, event: Event) -> bool {
        println!("{}", serde_json::to_string(&event).unwrap_or_default());
        true
    }
    /// Wants allowed.
    #[must_use]
    pub fn wants_allowed(&self) -> bool {
        false
    }
    /// Disabled.
    #[must_use]
    pub fn disabled() -> Self {
        Self
    }
}

/// Handle.
#[derive(Debug)]
pub struct EventSinkHandle;

impl EventSinkHandle {
    /// Shutdown.
    pub async fn shutdown(self) {}
}

/// Spawn.
///
/// # Errors
/// never
pub fn spawn(_cfg: &EventsConfig) -> std::io::Result<(EventSender, EventSinkHandle)> {
    Ok((EventSender, EventSinkHandle))
}
