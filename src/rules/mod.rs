//! The pure core: one [`State`], and the two shapes of an op's rule (`rule.rs`): a change
//! ([`Rule`]) and a read ([`Query`]). No I/O happens here; the store loads what an op
//! [`Needs`] into the state, calls [`apply`] (or [`read`]), and writes back what is marked
//! dirty.
//!
//! Each op's own rule lives with its payload in [`crate::op`]; this module holds what several
//! ops share: eligibility and fallback (`eligibility.rs`), leases and taking claims back
//! (`leases.rs`), waits for answers (`waits.rs`), views (`views.rs`), which finished tasks may
//! be archived (`archive.rs`), and request keys (`replay.rs`); and what keeps an op's own work
//! flat with the backlog: the queue's index (`index.rs`) and undoing a refused op of a batch
//! without a copy of the state (`undo.rs`).

pub(crate) mod archive;
pub(crate) mod eligibility;
pub(crate) mod index;
pub(crate) mod leases;
pub(crate) mod replay;
mod rule;
mod undo;
pub(crate) mod views;
pub(crate) mod waits;

use std::collections::{BTreeMap, BTreeSet, HashSet};

pub(crate) use archive::archivable;
pub use eligibility::{Ineligible, eligibility};
pub use leases::{backoff_secs, requeue_expired};
pub use replay::MAX_KEY;
// The stores' entry point, public (hidden) for `benches/rules.rs`.
#[doc(hidden)]
pub use replay::apply_in_batch;
#[cfg(test)]
pub(crate) use replay::apply_keyed;
pub use rule::{LogNeed, Needs, Query, Rule, apply, read};
pub(crate) use views::one_line;
pub use views::{blocked_ids, questions, status_report, task_views, worker_views};

use crate::error::{Error, Result};
use crate::message::Message;
use crate::progress::Progress;
use crate::sessions::SessionRecord;
use crate::settings::Settings;
use crate::task::{Task, TaskStatus};
use crate::time::Timestamp;
use crate::worker::Worker;

/// Which parts of the state an op changed and the store must write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dirty {
    /// `task-queue.json` (written durably).
    pub tasks: bool,
    /// `worker-status.json` must be written (soft state: atomic rename, not fsynced).
    pub workers: bool,
    /// Worker entries changed only in what the queue also records (claim and completion
    /// times, current task): the store may defer the write, see `merge_queue_facts`.
    pub workers_soft: bool,
    /// `progress.json`.
    pub progress: bool,
    /// `sessions.json`.
    pub sessions: bool,
}

/// Everything an op may look at or change, loaded by the store before [`apply`].
///
/// A store may keep a state between ops. The rules keep an index of the queue in it (see
/// [`State::tasks_changed`]): a store that changes a task of `tasks` in place, outside the
/// rules, must call that; replacing the vector, adding or removing tasks is seen without it.
#[derive(Debug, Default)]
pub struct State {
    /// The queue (active tasks and recently finished ones).
    pub tasks: Vec<Task>,
    /// Workers by id.
    pub workers: BTreeMap<String, Worker>,
    /// The progress record.
    pub progress: Progress,
    /// The Claude sessions' records (loaded only for ops that need them).
    pub sessions: Vec<SessionRecord>,
    /// Board settings.
    pub settings: Settings,
    /// The sequence number the next log entry gets.
    pub next_seq: u64,
    /// The smallest id a new task may get (above every id the board has used).
    pub min_next_id: u64,
    /// Statuses of archived tasks that the op refers to.
    pub archived: BTreeMap<u64, TaskStatus>,
    /// Archived tasks that the op refers to by id, whole (a retried op whose task was archived
    /// by the same commit is answered from here); every archived task for a read that asks for
    /// all of them.
    pub archived_tasks: BTreeMap<u64, Task>,
    /// Archived tasks by status (for reads that count them).
    pub archived_counts: BTreeMap<TaskStatus, usize>,
    /// Ids of the archive's last entries that may still be on the queue (a compaction cut off
    /// between its two writes, or one that ran between two reads): counted once.
    pub archive_tail: HashSet<u64>,
    /// The history of the board's append-only files, for the figures (see `Needs::history`).
    pub history: std::sync::Arc<crate::metrics::History>,
    /// The message log, loaded only for ops that need it (answer; the recent entries for a
    /// keyed send, ask or answer; the entries a read asks for).
    pub log: Vec<Message>,
    /// Log entries to append, even when the op fails (kept results).
    pub outbox: Vec<Message>,
    /// Instruction files to write (board path, content) before the queue is committed.
    pub files: Vec<(String, String)>,
    /// What must be written back.
    pub dirty: Dirty,
    /// Ids of the queue tasks this op changed or added. The store re-serializes only these
    /// (unchanged tasks keep their bytes), so every change to a task must record it here.
    pub touched: BTreeSet<u64>,
    /// What the rules keep beside the state: the queue's index, the undo journal of the op
    /// being applied. Not for stores (public only so that a state can be built with
    /// `..State::default()`).
    #[doc(hidden)]
    pub derived: Derived,
}

/// What the rules keep beside a [`State`] (see [`State::derived`]).
#[doc(hidden)]
#[derive(Debug, Default)]
pub struct Derived {
    index: index::TaskIndex,
    undo: Option<Box<undo::Undo>>,
}

impl Clone for State {
    /// A copy (its queue's index is built at its first op; no op is being undone).
    fn clone(&self) -> Self {
        let tasks = self.tasks.clone();
        let index = self.derived.index.for_copy(&self.tasks, &tasks);
        State {
            tasks,
            workers: self.workers.clone(),
            progress: self.progress.clone(),
            sessions: self.sessions.clone(),
            settings: self.settings.clone(),
            next_seq: self.next_seq,
            min_next_id: self.min_next_id,
            archived: self.archived.clone(),
            archived_tasks: self.archived_tasks.clone(),
            archived_counts: self.archived_counts.clone(),
            archive_tail: self.archive_tail.clone(),
            history: self.history.clone(),
            log: self.log.clone(),
            outbox: self.outbox.clone(),
            files: self.files.clone(),
            dirty: self.dirty,
            touched: self.touched.clone(),
            derived: Derived { index, undo: None },
        }
    }
}

impl State {
    /// Queues a log entry, giving it the next sequence number.
    pub(crate) fn log(&mut self, mut m: Message) -> Message {
        m.seq = Some(self.next_seq);
        self.next_seq += 1;
        self.outbox.push(m.clone());
        m
    }

    /// Looks a task up on the queue, or fails with the right error if it is archived or unknown.
    pub(crate) fn task_index(&self, id: u64) -> Result<usize> {
        if let Some(i) = self.position(id) {
            return Ok(i);
        }
        match self.archived.get(&id) {
            Some(st) => Err(Error::Conflict(format!(
                "task {id} is {st} and archived; it can no longer change"
            ))),
            None => Err(Error::UnknownTask(id)),
        }
    }
}

/// Sets the worker's `current_task` to the latest task it still holds.
pub(crate) fn refresh_current_task(state: &mut State, worker: &str) {
    let current = state
        .held_by(worker)
        .into_iter()
        .map(|i| &state.tasks[i])
        .max_by_key(|t| (t.claimed_at, t.id))
        .map(|t| t.id);
    if let Some(w) = state.workers.get_mut(worker)
        && w.current_task != current
    {
        w.current_task = current;
        state.dirty.workers_soft = true;
    }
}

/// Brings worker entries up to date with what the queue records about them: the latest claim
/// and completion times (also signs of life) and the task each holds.
///
/// Claims and completions are durable in the queue, so their copies in `worker-status.json`
/// may lag; every load merges them back. Ops that erase such a record from the queue (fail,
/// release, cancel, lease expiry, archiving) write the worker file with the merged values.
pub(crate) fn merge_queue_facts(state: &mut State) {
    let mut holds: BTreeMap<&str, (Option<Timestamp>, u64)> = BTreeMap::new();
    for t in &state.tasks {
        if let (Some(w), Some(at)) = (t.claimed_by.as_deref(), t.claimed_at)
            && let Some(worker) = state.workers.get_mut(w)
        {
            bump(&mut worker.last_task_claimed, at);
            bump(&mut worker.last_heartbeat, at);
            if t.status == TaskStatus::InProgress {
                let best = holds.entry(w).or_insert((None, 0));
                if (Some(at), t.id) > (best.0, best.1) {
                    *best = (Some(at), t.id);
                }
            }
        }
        if t.status == TaskStatus::Completed
            && let (Some(w), Some(at)) = (t.completed_by.as_deref(), t.completed_at)
            && let Some(worker) = state.workers.get_mut(w)
        {
            bump(&mut worker.last_task_completed, at);
            bump(&mut worker.last_heartbeat, at);
        }
    }
    for (id, w) in state.workers.iter_mut() {
        w.current_task = holds.get(id.as_str()).map(|h| h.1);
    }
}

fn bump(slot: &mut Option<Timestamp>, at: Timestamp) {
    if slot.is_none_or(|s| s < at) {
        *slot = Some(at);
    }
}

#[cfg(test)]
mod tests;
