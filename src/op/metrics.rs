//! The board's figures (`metrics`): queue latency, claim → complete time, human response time,
//! failure and retry rates, tasks per hour, and the series the control room plots; computed by
//! [`crate::metrics::report`] from the queue and the history a store keeps; with the Claude
//! sessions' spend and reuse (`sessions.json`).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::metrics::{Window, report};
use crate::reply::Reply;
use crate::rules::{Needs, Query, State, requeue_expired, worker_views};
use crate::time::Timestamp;

/// Longest window, in seconds (a year).
pub const MAX_WINDOW_SECS: u64 = 366 * 24 * 3600;
/// Most buckets a series may have.
pub const MAX_BUCKETS: u32 = 1000;

/// The board's figures over a window ending now (default: the last 24 hours, hourly).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Metrics {
    /// The window's length in seconds (default 86400).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_secs: Option<u64>,
    /// How many buckets the series have (default 24).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buckets: Option<u32>,
}

impl Metrics {
    /// The window asked for, checked.
    pub fn window(&self) -> Result<Window> {
        let secs = self.window_secs.unwrap_or(Window::DAY.secs);
        let buckets = self.buckets.unwrap_or(Window::DAY.buckets);
        if !(1..=MAX_WINDOW_SECS).contains(&secs) {
            return Err(Error::Invalid(format!(
                "the window must be 1 to {MAX_WINDOW_SECS} seconds long"
            )));
        }
        if !(1..=MAX_BUCKETS).contains(&buckets) {
            return Err(Error::Invalid(format!(
                "the series must have 1 to {MAX_BUCKETS} buckets"
            )));
        }
        Ok(Window { secs, buckets })
    }
}

impl Query for Metrics {
    fn needs(&self) -> Needs {
        Needs {
            history: true,
            sessions: true,
            ..Needs::board()
        }
    }

    fn answer(self, st: &mut State, now: Timestamp) -> Result<Reply> {
        let window = self.window()?;
        requeue_expired(st, now);
        let mut workers = std::collections::BTreeMap::new();
        for w in worker_views(st, now) {
            *workers.entry(w.state.as_str().to_string()).or_insert(0) += 1;
        }
        let mut figures = report(&st.history, &st.tasks, workers, now, window);
        figures.claude = crate::reply::ClaudeSpend::of(&st.sessions);
        Ok(Reply::Metrics {
            metrics: Box::new(figures),
        })
    }
}
