//! Configuration problems, collected rather than returned one at a time.
//!
//! Every stage validates its own section and pushes each problem it finds into a
//! [`ConfigProblems`], tagged with where it was found (a TOML key path, or `file:line`), so that
//! `dnsward check` and a reload can report every problem at once.

use std::fmt;

/// One problem found in the configuration or a file it pulls in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Where: a TOML key path such as `groups[1].cidrs[0]`, or `path/to/file:12`.
    pub location: String,
    /// What is wrong, in words an operator can act on.
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

/// Every problem found while loading and validating a configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, thiserror::Error)]
pub struct ConfigProblems {
    /// The problems, in the order they were found.
    pub problems: Vec<ConfigProblem>,
}

impl ConfigProblems {
    /// Record a problem at `location`.
    pub fn push(&mut self, location: impl Into<String>, message: impl Into<String>) {
        self.problems.push(ConfigProblem {
            location: location.into(),
            message: message.into(),
        });
    }

    /// True when nothing was recorded.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.problems.is_empty()
    }

    /// Number of problems recorded.
    #[must_use]
    pub fn len(&self) -> usize {
        self.problems.len()
    }

    /// `Ok(value)` when no problems were recorded, otherwise `Err(self)`.
    ///
    /// # Errors
    /// Returns the collected problems when there is at least one.
    pub fn into_result<T>(self, value: T) -> Result<T, Self> {
        if self.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }
}

impl fmt::Display for ConfigProblems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} configuration problem(s):", self.problems.len())?;
        for p in &self.problems {
            writeln!(f, "  - {p}")?;
        }
        Ok(())
    }
}
