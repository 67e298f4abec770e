//! The queue's index: what the rules look up on every op, derived from [`State::tasks`] and
//! kept up to date as the rules change tasks, so that an op's own work does not grow with the
//! backlog. Where each task is (by id), the tasks in progress (all, and by holder), the pending
//! tasks in claim order (those no unfinished dependency on the queue holds back: the ones open
//! to any worker, and those meant for a specialist by [`Class`], so that a claim passes over
//! a whole class it may not take yet at once), the tasks by request key, and how many
//! finished tasks the queue holds.
//!
//! The index describes one vector: its buffer, length and capacity. A store that replaces
//! `tasks` or adds tasks to it makes it stale, which the next op sees: the rules then scan the
//! queue as they would without an index, and build it again at the op after (a state used
//! for one op alone, as a store that loads the queue for every op has, is never indexed: a
//! build costs about one scan). Tasks taken off the queue in place (`retain`, as a store's
//! archive does) are taken off the index at the next op, without a build. A store that changes
//! a task in place, outside the rules, must say so ([`State::tasks_changed`]) or change it
//! with [`State::put_task`]; as a safety net, the first, middle and last tasks are compared
//! with the index before every op and lookups check the tasks they find; debug builds compare
//! the index with a fresh build at every op and panic on a difference. Every change the rules
//! make to a task goes through [`State::change`] (or [`State::push_task`]), which keeps the
//! index, `touched` and the undo journal (`undo.rs`) in step. The index's own structure is in
//! `built.rs`.
//!
//! A queue with two tasks under one id (a damaged file) is not indexed: the rules scan it.

mod built;

pub(crate) use built::Class;
use built::{Built, Rank, key_hash};

use super::State;
use crate::settings::Settings;
use crate::task::{Task, TaskStatus};
use crate::time::Timestamp;

/// The vector an index describes: its buffer's address, its length and its capacity. Two live
/// vectors never share a buffer, so a vector put in the place of another is seen (an empty
/// one has nothing to describe).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Shape {
    ptr: usize,
    len: usize,
    cap: usize,
}

impl Shape {
    pub(super) fn of(tasks: &Vec<Task>) -> Shape {
        Shape {
            ptr: tasks.as_ptr().addr(),
            len: tasks.len(),
            cap: tasks.capacity(),
        }
    }
}

/// The index of a state's queue (see the module's doc). A copy of a [`State`] builds its own
/// at its first op.
#[derive(Default)]
pub struct TaskIndex {
    inner: Inner,
}

enum Inner {
    /// Not built. `seen`: the queue was looked at by an op at this shape (the next op builds
    /// the index if the queue is still the same).
    Unbuilt { seen: Option<Shape> },
    /// The queue at this shape has two tasks under one id: the rules scan it.
    Duplicates(Shape),
    /// Built and up to date with the queue at its shape.
    Built(Box<Built>),
}

impl Default for Inner {
    fn default() -> Self {
        Inner::Unbuilt { seen: None }
    }
}

impl std::fmt::Debug for TaskIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.inner {
            Inner::Unbuilt { .. } => f.write_str("TaskIndex(unbuilt)"),
            Inner::Duplicates(_) => f.write_str("TaskIndex(duplicate ids: none)"),
            Inner::Built(b) => write!(f, "TaskIndex(built for {} tasks)", b.shape.len),
        }
    }
}

impl TaskIndex {
    /// The index, if it is built and describes `tasks`.
    fn built(&self, tasks: &Vec<Task>) -> Option<&Built> {
        match &self.inner {
            Inner::Built(b) if b.shape == Shape::of(tasks) => Some(b),
            _ => None,
        }
    }

    /// Called by each op before it runs: keeps the index if it still describes `tasks` (or
    /// brings it up to date when tasks were only taken off the queue in place, as a store's
    /// archive does), builds it if the previous op saw the same queue, else notes the queue
    /// for the next. The first, middle and last tasks are compared with the index too, so
    /// that a queue reordered in place is seen.
    fn sync(&mut self, tasks: &Vec<Task>) {
        let shape = Shape::of(tasks);
        if let Inner::Built(b) = &mut self.inner
            && b.shape.ptr == shape.ptr
            && b.shape.cap == shape.cap
            && shape.len < b.shape.len
            && !b.retained(tasks)
        {
            self.inner = Inner::default();
        }
        match &self.inner {
            Inner::Built(b) if b.shape == shape && !b.looks_like(tasks) => self.build(tasks),
            Inner::Built(b) if b.shape == shape => {
                #[cfg(debug_assertions)]
                self.check(tasks);
            }
            Inner::Duplicates(s) if *s == shape => {}
            Inner::Unbuilt { seen: Some(s) } if *s == shape => self.build(tasks),
            _ => self.inner = Inner::Unbuilt { seen: Some(shape) },
        }
    }

    fn build(&mut self, tasks: &Vec<Task>) {
        self.inner = match Built::build(tasks) {
            Some(b) => Inner::Built(Box::new(b)),
            None => Inner::Duplicates(Shape::of(tasks)),
        };
    }

    /// Debug builds: the index is what a fresh build of `tasks` gives.
    #[cfg(debug_assertions)]
    fn check(&self, tasks: &Vec<Task>) {
        if let Some(b) = self.built(tasks) {
            let fresh = Built::build(tasks);
            assert!(
                fresh.as_ref() == Some(b),
                "the queue's index is stale: a task was changed in place outside the rules \
                 without State::tasks_changed or State::put_task"
            );
        }
    }

    /// The task at `p` changed (through the rules).
    fn update(&mut self, tasks: &Vec<Task>, p: usize) {
        if let Inner::Built(b) = &mut self.inner
            && (b.shape != Shape::of(tasks) || !b.update(tasks, p))
        {
            self.inner = Inner::default();
        }
    }

    /// A task was pushed (through the rules); `before` is the queue's shape before.
    fn pushed(&mut self, tasks: &Vec<Task>, before: Shape) {
        let now = Shape::of(tasks);
        match &mut self.inner {
            Inner::Built(b) => {
                if b.shape != before || !b.pushed(tasks) {
                    self.inner = Inner::default();
                }
            }
            Inner::Unbuilt { seen } => {
                if *seen == Some(before) {
                    *seen = Some(now);
                }
            }
            Inner::Duplicates(s) => {
                if *s == before {
                    *s = now;
                }
            }
        }
    }

    /// The queue is cut at `len` (through the rules: an undone add).
    fn cut(&mut self, tasks: &mut Vec<Task>, len: usize) {
        let before = Shape::of(tasks);
        if let Inner::Built(b) = &mut self.inner
            && b.shape == before
        {
            b.cut(len);
        }
        tasks.truncate(len);
        let now = Shape::of(tasks);
        match &mut self.inner {
            Inner::Built(b) if b.shape == before => b.shape = now,
            Inner::Built(_) => self.inner = Inner::default(),
            Inner::Unbuilt { seen } => {
                if *seen == Some(before) {
                    *seen = Some(now);
                }
            }
            Inner::Duplicates(s) => {
                if *s == before {
                    // Cutting may have removed the duplicate.
                    self.inner = Inner::Unbuilt { seen: Some(now) };
                }
            }
        }
    }

    /// The index for `to`, a copy of `from`: none yet, but built at the copy's first op if
    /// this one describes `from` (a copy made for a read never needs one).
    pub(super) fn for_copy(&self, from: &Vec<Task>, to: &Vec<Task>) -> TaskIndex {
        let (old, new) = (Shape::of(from), Shape::of(to));
        let inner = match &self.inner {
            Inner::Duplicates(s) if *s == old => Inner::Duplicates(new),
            Inner::Built(b) if b.shape == old => Inner::Unbuilt { seen: Some(new) },
            Inner::Unbuilt { seen: Some(s) } if *s == old => Inner::Unbuilt { seen: Some(new) },
            _ => Inner::default(),
        };
        TaskIndex { inner }
    }
}

impl State {
    /// Says that `tasks` changed in place outside the rules (a task replaced or edited): the
    /// index is built again at the next op. Replacing the vector, or adding or removing tasks,
    /// is seen without it.
    pub fn tasks_changed(&mut self) {
        self.derived.index.inner = Inner::Unbuilt {
            seen: Some(Shape::of(&self.tasks)),
        };
    }

    /// Brings the index up to date before an op (see [`TaskIndex`]).
    pub(crate) fn sync_index(&mut self) {
        self.derived.index.sync(&self.tasks);
    }

    /// Debug builds: the index, if built, is what a fresh build gives.
    pub(crate) fn check_index(&self) {
        #[cfg(debug_assertions)]
        self.derived.index.check(&self.tasks);
    }

    fn index(&self) -> Option<&Built> {
        self.derived.index.built(&self.tasks)
    }

    /// True if the rules use the index rather than scanning the queue.
    pub fn is_indexed(&self) -> bool {
        self.index().is_some()
    }

    /// The index of task `id` on the queue (the first, should two share it).
    pub fn position(&self, id: u64) -> Option<usize> {
        let scan = || self.tasks.iter().position(|t| t.id == id);
        match self.index() {
            Some(b) => match b.position(id) {
                Some(p) if self.tasks[p].id == id => Some(p),
                Some(_) => scan(),
                None => None,
            },
            None => scan(),
        }
    }

    /// The status of the queue's task `id` (the last, should two share it, as a map built
    /// from the queue has it).
    pub(crate) fn status_of(&self, id: u64) -> Option<TaskStatus> {
        match self.index() {
            Some(_) => self.position(id).map(|p| self.tasks[p].status),
            None => self
                .tasks
                .iter()
                .rev()
                .find(|t| t.id == id)
                .map(|t| t.status),
        }
    }

    /// Positions of the tasks whose id is one of `ids`, in queue order.
    pub(crate) fn positions_of(&self, ids: &[u64]) -> Vec<usize> {
        match self.index() {
            Some(_) => {
                let mut v: Vec<usize> = ids.iter().filter_map(|id| self.position(*id)).collect();
                v.sort_unstable();
                v.dedup();
                v
            }
            None => self.scan(|t| ids.contains(&t.id)),
        }
    }

    /// Positions of the tasks that `pick` picks, in queue order, by a scan of the queue; on an
    /// indexed queue, of those among `indexed` (positions, in queue order).
    fn picked(&self, indexed: Option<Vec<usize>>, pick: impl Fn(&Task) -> bool) -> Vec<usize> {
        match indexed {
            // Each checked, should a task have changed in place unsaid.
            Some(v) => v.into_iter().filter(|&p| pick(&self.tasks[p])).collect(),
            None => self.scan(pick),
        }
    }

    fn scan(&self, pick: impl Fn(&Task) -> bool) -> Vec<usize> {
        self.tasks
            .iter()
            .enumerate()
            .filter(|(_, t)| pick(t))
            .map(|(i, _)| i)
            .collect()
    }

    /// Positions of the tasks `worker` holds (in progress, claimed by it), in queue order.
    pub(crate) fn held_by(&self, worker: &str) -> Vec<usize> {
        self.picked(self.index().map(|b| b.held_by(worker)), |t| {
            t.status == TaskStatus::InProgress && t.claimed_by.as_deref() == Some(worker)
        })
    }

    /// The position of the first task on the queue that `worker` holds.
    pub(crate) fn first_held(&self, worker: &str) -> Option<usize> {
        self.held_by(worker).first().copied()
    }

    /// True if `worker` holds at least one task.
    pub fn holds_task(&self, worker: &str) -> bool {
        self.first_held(worker).is_some()
    }

    /// Positions of the tasks in progress, in queue order.
    pub(crate) fn in_progress(&self) -> Vec<usize> {
        self.picked(self.index().map(Built::in_progress), |t| {
            t.status == TaskStatus::InProgress
        })
    }

    /// Positions of the tasks carrying request key `key`, in queue order.
    pub(crate) fn with_key(&self, key: &str) -> Vec<usize> {
        self.picked(self.index().map(|b| b.with_key(key_hash(key))), |t| {
            t.request_key.as_deref() == Some(key) || t.added_key.as_deref() == Some(key)
        })
    }

    /// The candidates for a claim, if the queue is indexed: the pending tasks no dependency
    /// on the queue holds back, in claim order, those open to any worker apart from those
    /// meant for a specialist (by [`Class`]). Each must still be checked for eligibility.
    pub(crate) fn candidates(&self) -> Option<Candidates<'_>> {
        self.index().map(|index| Candidates { index })
    }

    /// How many completed and cancelled tasks the queue holds: at least as many as
    /// `rules::archivable` can take, so a store that keeps `archive_after` need not look for
    /// them while there are no more than that.
    pub fn finished_on_queue(&self) -> usize {
        match self.index() {
            Some(b) => b.finished,
            None => self
                .tasks
                .iter()
                .filter(|t| matches!(t.status, TaskStatus::Completed | TaskStatus::Cancelled))
                .count(),
        }
    }

    /// Changes the task at `i` with `f` (which also sees the settings): the only way the
    /// rules change a task. Records it as touched (the store writes it), keeps the index, and,
    /// while an op may be undone, keeps the task as it was first.
    pub(crate) fn change<R>(&mut self, i: usize, f: impl FnOnce(&mut Task, &Settings) -> R) -> R {
        if let Some(u) = self.derived.undo.as_mut() {
            u.save(i, &self.tasks);
        }
        let r = f(&mut self.tasks[i], &self.settings);
        self.touched.insert(self.tasks[i].id);
        self.dirty.tasks = true;
        self.derived.index.update(&self.tasks, i);
        r
    }

    /// Adds `t` at the end of the queue: the only way the rules add a task.
    pub(crate) fn push_task(&mut self, t: Task) {
        let before = Shape::of(&self.tasks);
        self.touched.insert(t.id);
        self.dirty.tasks = true;
        self.tasks.push(t);
        self.derived.index.pushed(&self.tasks, before);
    }

    /// Puts `t` on the queue in the place of the task with its id, or at the end: for a store
    /// that brings a state it keeps up to date with a change made elsewhere (not touched:
    /// the rules did not make it).
    pub fn put_task(&mut self, t: Task) {
        match self.position(t.id) {
            Some(i) => {
                self.tasks[i] = t;
                self.derived.index.update(&self.tasks, i);
            }
            None => {
                let before = Shape::of(&self.tasks);
                self.tasks.push(t);
                self.derived.index.pushed(&self.tasks, before);
            }
        }
    }

    /// Puts the task at `i` back as `t` (undoing a change) without touching it.
    pub(super) fn restore_task(&mut self, i: usize, t: Task) {
        self.tasks[i] = t;
        self.derived.index.update(&self.tasks, i);
    }

    /// Cuts the queue at `len` (undoing an add).
    pub(super) fn cut_tasks(&mut self, len: usize) {
        self.derived.index.cut(&mut self.tasks, len);
    }
}

/// The candidates for a claim (see [`State::candidates`]).
pub(crate) struct Candidates<'a> {
    index: &'a Built,
}

impl Candidates<'_> {
    /// The position of the first candidate in claim order that `ok` accepts, passing over
    /// the classes that `open` (given the class and its earliest creation time) says none of
    /// whose tasks it would accept.
    pub(crate) fn first(
        &self,
        mut open: impl FnMut(&Class, Option<Timestamp>) -> bool,
        mut ok: impl FnMut(usize) -> bool,
    ) -> Option<usize> {
        let b = self.index;
        let mut accept = |r: &&Rank| b.position(r.1).is_some_and(&mut ok);
        let mut found: Option<Rank> = b.plain.iter().find(&mut accept).copied();
        for (class, tasks) in &b.special {
            if !open(class, tasks.earliest()) {
                continue;
            }
            let set = &tasks.ranks;
            let hit = match found {
                Some(bound) => set.range(..bound).find(&mut accept),
                None => set.iter().find(&mut accept),
            };
            if let Some(r) = hit {
                found = Some(*r);
            }
        }
        found.and_then(|r| b.position(r.1))
    }
}

#[cfg(test)]
mod tests;
