//! `insights.yaml`: the settings of trace analysis (all optional).

use serde::{Deserialize, Serialize};

use crate::detect::Thresholds;
use crate::proposals::DEFAULT_MIN_SESSIONS;

/// Settings of trace analysis. Unknown keys are rejected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InsightsConfig {
    /// Sessions a pattern must recur in, at one step of one workflow, to become a
    /// proposal. 3: twice can be chance; three sessions with the same pattern at the same
    /// step point at the step.
    pub min_sessions: u64,
    /// Turns kept per trace (later turns are counted only): bounds memory per session.
    pub max_turns: usize,
    /// Detector thresholds.
    pub thresholds: Thresholds,
}

impl Default for InsightsConfig {
    fn default() -> Self {
        Self {
            min_sessions: DEFAULT_MIN_SESSIONS,
            max_turns: 20_000,
            thresholds: Thresholds::default(),
        }
    }
}

impl InsightsConfig {
    /// Parse YAML; errors name the line, column and field.
    pub fn from_yaml(text: &str) -> Result<Self, String> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        let de = serde_norway::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let at = inner
                .location()
                .map(|l| format!("line {}, column {}: ", l.line(), l.column()))
                .unwrap_or_default();
            if path == "." || path.is_empty() {
                format!("{at}{inner}")
            } else {
                format!("{at}`{path}`: {inner}")
            }
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn unknown_keys_and_types_are_precise_errors() {
        let e = InsightsConfig::from_yaml("min_sessions: 3\nthresholds:\n  repeated_call_mn: 4\n")
            .unwrap_err();
        assert!(
            e.contains("line 3") && e.contains("repeated_call_mn"),
            "{e}"
        );
        let e = InsightsConfig::from_yaml("min_sessions: many\n").unwrap_err();
        assert!(e.contains("min_sessions"), "{e}");
        let c = InsightsConfig::from_yaml("thresholds:\n  disabled: [stall]\n").unwrap();
        assert_eq!(
            c.thresholds.disabled,
            vec![crate::detect::DetectorId::Stall]
        );
        assert_eq!(
            InsightsConfig::from_yaml("").unwrap(),
            InsightsConfig::default()
        );
    }
}
