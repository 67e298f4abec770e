//! `progress.json`: the overall progress of the work on the board.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::task::null_default;
use crate::time::{Timestamp, opt_ts};

/// The board's progress record. Steps are kept as JSON values so the original files read as they are.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Progress {
    /// The current step (usually a number).
    #[serde(default)]
    pub current_step: Value,
    /// How many steps there are (usually a number).
    #[serde(default)]
    pub total_steps: Value,
    /// A short status word or sentence.
    #[serde(default)]
    pub status: Option<String>,
    /// When it was last changed.
    #[serde(default, with = "opt_ts")]
    pub last_updated: Option<Timestamp>,
    /// Free-form details (phase, blockers...).
    #[serde(default, deserialize_with = "null_default")]
    pub metadata: Map<String, Value>,
    /// Fields this version does not know; kept as they were.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}
