//! `board.json`: the board's settings (lease length, stale limit, retries, archiving).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Board-wide defaults. A board without `board.json` (the original plan's) uses [`Settings::default`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// Lease of a claim, in seconds, when the task sets none (30 min).
    pub lease_secs: u64,
    /// A worker without a sign of life for this long is stale, in seconds (3 min); a task it
    /// holds is taken back.
    pub stale_after_secs: u64,
    /// A task meant for a specialist (an assignee, or required capabilities) falls back to
    /// any worker when no live specialist has been seen for this long, in seconds, unless the
    /// task is strict or sets its own. Absent: the stale limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback_after_secs: Option<u64>,
    /// Retries after the first attempt, when the task sets none.
    pub max_retries: u32,
    /// First retry delay in seconds; doubles with each attempt.
    pub retry_backoff_secs: u64,
    /// Longest retry delay in seconds.
    pub retry_backoff_max_secs: u64,
    /// Finished tasks kept on the queue before they move to the archive automatically.
    pub archive_after: usize,
    /// Fields this version does not know; kept as they were.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            lease_secs: 30 * 60,
            stale_after_secs: 3 * 60,
            fallback_after_secs: None,
            max_retries: 3,
            retry_backoff_secs: 10,
            retry_backoff_max_secs: 15 * 60,
            archive_after: 200,
            extra: Map::new(),
        }
    }
}

impl Settings {
    /// Seconds without a live specialist after which a task meant for one falls back to any
    /// worker (the board's setting, else the stale limit).
    pub fn fallback_after(&self) -> u64 {
        self.fallback_after_secs.unwrap_or(self.stale_after_secs)
    }
}

/// The whole `board.json` file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BoardFile {
    /// Format version of the board (1).
    pub agentvine: u32,
    /// The board's settings.
    #[serde(default)]
    pub settings: Settings,
}

impl Default for BoardFile {
    fn default() -> Self {
        BoardFile {
            agentvine: 1,
            settings: Settings::default(),
        }
    }
}
