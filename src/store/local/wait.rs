//! Waiting for work on a local board: a turn-ended op whose answer would be "wait" is held and
//! applied again when the queue or the workers file changes (see `store::watch`), and at least
//! every `RECHECK` for what time alone changes, until it has another answer or its wait is
//! over. Each look is a whole op under the lock; one that still finds nothing writes nothing
//! (see `op::turn`), so waiters do not wake each other.

use std::time::Instant;

use super::LocalStore;
use crate::error::Result;
use crate::op::turn::{RECHECK, wait_more};
use crate::op::{Op, Reply, TurnEnded};
use crate::store::watch::Changes;

impl LocalStore {
    /// Applies `op`, holding it while its answer is a wait (at most its `wait_secs`).
    pub(super) fn execute_waiting(&self, op: TurnEnded, key: Option<&str>) -> Result<Reply> {
        let deadline = Instant::now() + op.wait();
        // Watching starts before the first look, so that no change after it is missed.
        let changes = Changes::watch(&self.dir);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let outcome = self.execute_once(Op::TurnEnded(op.with_wait_left(left)), key);
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(more) = wait_more(&outcome, left) else {
                return outcome;
            };
            changes.wait(more.min(RECHECK));
        }
    }
}
