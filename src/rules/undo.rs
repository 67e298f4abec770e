//! Undoing a refused op of a batch without copying the whole state: while an op may be undone,
//! [`State::change`] keeps each task as it was before the op first changed it, tasks the op
//! adds are cut off again, and the few other parts an op may change (workers, progress,
//! sessions, the next id, instruction files, what is dirty and touched) are kept whole. The
//! outbox and the log's next number are not undone (a refused op keeps what it must log).

use std::collections::{BTreeMap, BTreeSet, HashSet};

use super::{Dirty, State};
use crate::progress::Progress;
use crate::sessions::SessionRecord;
use crate::task::Task;
use crate::worker::Worker;

/// What an op changed that undoing it puts back.
#[derive(Debug, Clone)]
pub(crate) struct Undo {
    /// The queue's length before the op.
    len: usize,
    /// Positions of the tasks saved.
    saved_at: HashSet<usize>,
    /// Tasks as they were before the op changed them, with their positions.
    saved: Vec<(usize, Task)>,
    workers: BTreeMap<String, Worker>,
    progress: Progress,
    sessions: Vec<SessionRecord>,
    min_next_id: u64,
    files: usize,
    dirty: Dirty,
    touched: BTreeSet<u64>,
}

impl Undo {
    /// Keeps the task at `i` as it is, the first time the op changes it.
    pub(super) fn save(&mut self, i: usize, tasks: &[Task]) {
        if i < self.len
            && self.saved_at.insert(i)
            && let Some(t) = tasks.get(i)
        {
            self.saved.push((i, t.clone()));
        }
    }
}

impl State {
    /// Starts an op that may be undone ([`State::undo`]).
    pub(crate) fn begin_undo(&mut self) {
        self.derived.undo = Some(Box::new(Undo {
            len: self.tasks.len(),
            saved_at: HashSet::new(),
            saved: Vec::new(),
            workers: self.workers.clone(),
            progress: self.progress.clone(),
            sessions: self.sessions.clone(),
            min_next_id: self.min_next_id,
            files: self.files.len(),
            dirty: self.dirty,
            touched: self.touched.clone(),
        }));
    }

    /// Ends an op that may be undone: it stays.
    pub(crate) fn keep_op(&mut self) {
        self.derived.undo = None;
    }

    /// Undoes the op begun with [`State::begin_undo`]: the state is as before it, but for the
    /// outbox and the log's next number.
    pub(crate) fn undo(&mut self) {
        let Some(u) = self.derived.undo.take() else {
            return;
        };
        let u = *u;
        self.cut_tasks(u.len);
        for (i, t) in u.saved {
            self.restore_task(i, t);
        }
        self.workers = u.workers;
        self.progress = u.progress;
        self.sessions = u.sessions;
        self.min_next_id = u.min_next_id;
        self.files.truncate(u.files);
        self.dirty = u.dirty;
        self.touched = u.touched;
    }
}

/// Debug builds: `after` (an op undone) is `before` but for the outbox and the log's next
/// number.
#[cfg(debug_assertions)]
pub(super) fn assert_undone(before: &State, after: &State) {
    let same = before.tasks == after.tasks
        && before.workers == after.workers
        && before.progress == after.progress
        && before.sessions == after.sessions
        && before.min_next_id == after.min_next_id
        && before.files == after.files
        && before.dirty == after.dirty
        && before.touched == after.touched
        && before.log == after.log
        && before.archived == after.archived
        && before.archived_tasks == after.archived_tasks
        && before.settings == after.settings;
    assert!(same, "undoing a refused op did not put the state back");
}
