//! What one `claude -p --output-format json` run printed: one JSON object with the session
//! id, how the run ended, its turns, tokens, cost and duration. Unknown fields are ignored
//! and absent ones default, so a newer Claude Code that adds fields (or an older one without
//! some) is still read.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
pub use crate::sessions::Usage;

/// One run's result object (`"type": "result"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// The Claude session the run was (or continued) — what `--resume` takes.
    pub session_id: String,
    /// How the run ended: `success`, `error_max_turns`, `error_during_execution`, ...
    #[serde(default)]
    pub subtype: String,
    /// True when the run ended in an error.
    #[serde(default)]
    pub is_error: bool,
    /// The model's last text.
    #[serde(default)]
    pub result: Option<String>,
    /// Model turns the run took.
    #[serde(default)]
    pub num_turns: u32,
    /// What the run cost, in US dollars, as Claude Code computed it.
    #[serde(default)]
    pub total_cost_usd: f64,
    /// Wall time of the run, in milliseconds.
    #[serde(default)]
    pub duration_ms: u64,
    /// Tokens used.
    #[serde(default)]
    pub usage: Usage,
}

impl Outcome {
    /// Reads the result from what `claude -p --output-format json` printed on stdout: its one
    /// result object, or — when other output came first (warnings, a stream) — the last line
    /// that is one.
    pub fn parse(stdout: &str) -> Result<Outcome> {
        if let Some(o) = Self::from_object(stdout.trim()) {
            return Ok(o);
        }
        stdout
            .lines()
            .rev()
            .find_map(|l| Self::from_object(l.trim()))
            .ok_or_else(|| {
                let shown: String = stdout.trim().chars().take(200).collect();
                Error::Protocol(format!(
                    "claude printed no result object (is it run with --output-format json?): {shown:?}"
                ))
            })
    }

    /// The result if `text` is one JSON object of type `result` with a session id.
    fn from_object(text: &str) -> Option<Outcome> {
        let v: serde_json::Value = serde_json::from_str(text).ok()?;
        if v.get("type").and_then(|t| t.as_str()) != Some("result") {
            return None;
        }
        let o: Outcome = serde_json::from_value(v).ok()?;
        (!o.session_id.is_empty()).then_some(o)
    }

    /// True when the run hit its `--max-turns`.
    pub fn out_of_turns(&self) -> bool {
        self.subtype == "error_max_turns"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A result as Claude Code 2.1 prints it, with a field it does not have yet.
    const SUCCESS: &str = r#"{"type":"result","subtype":"success","is_error":false,"duration_ms":2120,"duration_api_ms":1900,"num_turns":3,"result":"Done.","session_id":"0f5e7c1a-2b3c-4d5e-8f90-123456789abc","total_cost_usd":0.0123,"usage":{"input_tokens":12,"cache_creation_input_tokens":2000,"cache_read_input_tokens":18000,"output_tokens":150,"server_tool_use":{"web_search_requests":0}},"permission_denials":[],"some_future_field":[1,2]}"#;

    #[test]
    fn a_success_is_read_with_its_figures() {
        let o = Outcome::parse(SUCCESS).unwrap();
        assert_eq!(o.session_id, "0f5e7c1a-2b3c-4d5e-8f90-123456789abc");
        assert_eq!(o.subtype, "success");
        assert!(!o.is_error);
        assert_eq!(o.num_turns, 3);
        assert_eq!(o.duration_ms, 2120);
        assert!((o.total_cost_usd - 0.0123).abs() < 1e-12);
        assert_eq!(o.result.as_deref(), Some("Done."));
        assert_eq!(o.usage.input_total(), 20_012);
        assert_eq!(o.usage.output_tokens, 150);
        assert!(!o.out_of_turns());
    }

    #[test]
    fn other_output_before_the_result_is_skipped() {
        let text = format!(
            "warning: something\n{{\"type\":\"system\",\"session_id\":\"x\"}}\n{SUCCESS}\n"
        );
        assert_eq!(Outcome::parse(&text).unwrap().num_turns, 3);
    }

    #[test]
    fn absent_figures_default_and_errors_are_kept() {
        let o = Outcome::parse(
            r#"{"type":"result","subtype":"error_max_turns","is_error":true,"session_id":"s1"}"#,
        )
        .unwrap();
        assert!(o.is_error && o.out_of_turns());
        assert_eq!((o.num_turns, o.duration_ms), (0, 0));
        assert_eq!(o.usage, Usage::default());
    }

    #[test]
    fn anything_else_is_a_clear_error() {
        for bad in [
            "",
            "Not logged in",
            "{}",
            r#"{"type":"result"}"#,
            r#"{"type":"result","session_id":""}"#,
            r#"{"type":"assistant","session_id":"s"}"#,
            "[1,2,3]",
        ] {
            let e = Outcome::parse(bad).unwrap_err().to_string();
            assert!(e.contains("no result object"), "{bad:?}: {e}");
        }
    }
}
