//! Waiting for answers (`vine ask --wait`): a waiting worker keeps its tasks; an answer ends
//! the wait and restarts its clocks.

use super::State;
use super::leases::extend_leases;
use crate::time::Timestamp;
use crate::worker::Waiting;

/// Records that worker `id` waits for the answer to `question` until `until`: its tasks are
/// not taken back meanwhile. Only a registered worker waits; the ask is a sign of life.
pub(crate) fn start_wait(
    state: &mut State,
    id: &str,
    question: u64,
    until: Timestamp,
    now: Timestamp,
) {
    if let Some(w) = state.workers.get_mut(id) {
        w.waiting = Some(Waiting { question, until });
        w.last_heartbeat = Some(now);
        state.dirty.workers = true;
    }
}

/// Ends every wait on `question` (it has been answered). A worker still waiting then gets its
/// clocks restarted: fresh leases, and the answer counts as its sign of life, so a worker
/// parked for hours is not taken over the moment its answer arrives.
pub(crate) fn answered(state: &mut State, question: u64, now: Timestamp) {
    let waiting: Vec<(String, bool)> = state
        .workers
        .iter()
        .filter(|(_, w)| w.waiting.is_some_and(|x| x.question == question))
        .map(|(id, w)| (id.clone(), w.waits_on(now).is_some()))
        .collect();
    for (id, still) in waiting {
        if still {
            extend_leases(state, &id, now, true);
        }
        if let Some(w) = state.workers.get_mut(&id) {
            w.waiting = None;
            if still {
                w.last_heartbeat = Some(now);
            }
            state.dirty.workers = true;
        }
    }
}

/// Ends `id`'s wait, if it has one (its own claim, complete, fail or release: it is back).
pub(crate) fn end_wait(state: &mut State, id: &str) {
    if let Some(w) = state.workers.get_mut(id)
        && w.waiting.take().is_some()
    {
        state.dirty.workers = true;
    }
}
