//! Upkeep of the board: taking lapsed claims back, and the two ops the store carries out
//! itself because they work on files, not on the state: compact (moving finished tasks to the
//! archive; which ones is `rules::archivable`) and repair.

use crate::error::{Error, Result};
use crate::reply::Reply;
use crate::rules::{Rule, State, requeue_expired};
use crate::time::Timestamp;

super::no_fields! {
    /// Take back every claim whose lease has expired or whose holder is stale.
    RequeueStale,
    /// Move finished tasks to the archive (carried out by the store).
    Compact,
    /// Rebuild damaged board files from what can be read (carried out by the store).
    Repair,
}

impl Rule for RequeueStale {
    fn apply(self, st: &mut State, now: Timestamp) -> Result<Reply> {
        let tasks = requeue_expired(st, now);
        Ok(Reply::Requeued { tasks })
    }
}

/// The error for an op the store carries out, given to the rules.
fn by_the_store(name: &str) -> Error {
    Error::Protocol(format!(
        "{name} is carried out by the store, not by the rules"
    ))
}

impl Rule for Compact {
    fn apply(self, _st: &mut State, _now: Timestamp) -> Result<Reply> {
        Err(by_the_store("compact"))
    }
}

impl Rule for Repair {
    fn apply(self, _st: &mut State, _now: Timestamp) -> Result<Reply> {
        Err(by_the_store("repair"))
    }
}
