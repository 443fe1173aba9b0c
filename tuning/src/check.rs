//! One host check's result and the report of all of them.

use serde::Serialize;

/// Whether a failed check stops the broker from working (`Required`: `sluice tune check`
/// exits non-zero) or only costs performance or latency (`Recommended`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Required,
    Recommended,
}

/// The outcome: `Unknown` when the value could not be read (no such knob on this host).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
    Unknown,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "fail",
            Status::Unknown => "unknown",
        }
    }
}

/// One item of `sluice tune check`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub current: String,
    pub recommended: String,
    pub why: String,
    pub severity: Severity,
    pub status: Status,
}

impl Check {
    /// A check whose status follows from `good`: met → ok; not met → fail if required,
    /// warn if recommended.
    pub fn judged(
        name: &'static str,
        severity: Severity,
        good: bool,
        current: impl Into<String>,
        recommended: impl Into<String>,
        why: impl Into<String>,
    ) -> Check {
        let status = match (good, severity) {
            (true, _) => Status::Ok,
            (false, Severity::Required) => Status::Fail,
            (false, Severity::Recommended) => Status::Warn,
        };
        Check {
            name,
            current: current.into(),
            recommended: recommended.into(),
            why: why.into(),
            severity,
            status,
        }
    }

    /// A check whose value could not be read; `current` says why.
    pub fn unknown(
        name: &'static str,
        severity: Severity,
        current: impl Into<String>,
        recommended: impl Into<String>,
        why: impl Into<String>,
    ) -> Check {
        Check {
            name,
            current: current.into(),
            recommended: recommended.into(),
            why: why.into(),
            severity,
            status: Status::Unknown,
        }
    }

    pub fn with_status(mut self, status: Status) -> Check {
        self.status = status;
        self
    }
}

/// Every check's result, in a fixed order.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub profile: String,
    pub checks: Vec<Check>,
}

impl Report {
    /// Required checks that failed: `sluice tune check` exits non-zero when there are any.
    pub fn required_failures(&self) -> usize {
        self.checks
            .iter()
            .filter(|c| c.severity == Severity::Required && c.status == Status::Fail)
            .count()
    }
}
