//! The queue's index: what the rules look up on every op, derived from [`State::tasks`] and
//! kept up to date as the rules change tasks, so that an op's own work does not grow with the
//! backlog. Where each task is (by id), the tasks in progress (all, and by holder), the pending
//! tasks in claim order (those no unfinished dependency on the queue holds back: plain ones,
//! open to any worker, apart from those meant for a specialist or in a retry delay), the tasks
//! by request key, and how many finished tasks the queue holds.
//!
//! The index describes one vector: its buffer, length and capacity. A store that replaces
//! `tasks`, or takes tasks off it, or adds some, makes it stale, which the next look sees: the
//! rules then scan the queue as they would without an index, and build it again at the next
//! op (a state used for one op alone, as a store that loads the queue for every op has, is
//! never indexed: a build costs about one scan). A store that changes a task in place, outside
//! the rules, must say so ([`State::tasks_changed`]) or change it with [`State::put_task`];
//! the first, middle and last tasks are compared with the index before every op, and
//! lookups check the tasks they find, as a safety net; debug builds compare the index with a
//! fresh build at every op and panic on a difference. Every change the rules make to a task
//! goes through [`State::change`] (or [`State::push_task`]), which keeps the index, `touched`
//! and the undo journal (`undo.rs`) in step.
//!
//! A queue with two tasks under one id (a damaged file) is not indexed: the rules scan it.

use std::collections::{BTreeSet, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};

use super::State;
use crate::settings::Settings;
use crate::task::{Task, TaskStatus};

/// The vector an index describes: its buffer's address, its length and its capacity. Two live
/// vectors never share a buffer, so a vector put in the place of another is seen (an empty
/// one has nothing to describe).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Shape {
    ptr: usize,
    len: usize,
    cap: usize,
}

impl Shape {
    fn of(tasks: &Vec<Task>) -> Shape {
        Shape {
            ptr: tasks.as_ptr().addr(),
            len: tasks.len(),
            cap: tasks.capacity(),
        }
    }
}

/// The index of a state's queue (see the module's doc). Cloning a [`State`] gives the clone
/// an index of its own queue.
#[derive(Clone, Default)]
pub struct TaskIndex {
    inner: Inner,
}

#[derive(Clone)]
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
            Inner::Built(b) => write!(f, "TaskIndex({} tasks)", b.entries.len()),
        }
    }
}

/// A position in the claim order: priority rank, id, position on the queue.
type Rank = (u8, u64, usize);

/// The index proper.
#[derive(Debug, Clone, PartialEq)]
struct Built {
    shape: Shape,
    /// Position of each task, by id.
    pos: HashMap<u64, usize>,
    /// What each task (by position) is indexed as.
    entries: Vec<Entry>,
    /// Positions of the tasks in progress, by holder.
    held: HashMap<String, BTreeSet<usize>>,
    /// Positions of every task in progress (with or without a holder).
    in_progress: BTreeSet<usize>,
    /// Pending tasks no dependency on the queue holds back, open to any worker.
    plain: BTreeSet<Rank>,
    /// The other pending tasks no dependency on the queue holds back: meant for a specialist
    /// (an assignee or required capabilities) or with a retry delay.
    special: BTreeSet<Rank>,
    /// Positions of tasks carrying a request key, by the key's hash.
    keys: HashMap<u64, BTreeSet<usize>>,
    /// Positions of the tasks that depend on an id, by that id.
    dependents: HashMap<u64, BTreeSet<usize>>,
    /// Completed and cancelled tasks.
    finished: usize,
}

/// What a task is indexed as.
#[derive(Debug, Clone, PartialEq)]
struct Entry {
    id: u64,
    status: TaskStatus,
    rank: u8,
    /// No assignee, no required capability, no retry delay.
    plain: bool,
    /// The holder of a task in progress.
    holder: Option<String>,
    /// The hash of its request key.
    key: Option<u64>,
    depends_on: Vec<u64>,
    /// Its dependencies on the queue that have not completed.
    unmet: u32,
}

impl Entry {
    fn of(t: &Task, unmet: u32) -> Entry {
        Entry {
            id: t.id,
            status: t.status,
            rank: t.priority.rank(),
            plain: t.assigned_to.as_deref().is_none_or(str::is_empty)
                && t.requires.is_empty()
                && t.not_before.is_none(),
            holder: if t.status == TaskStatus::InProgress {
                t.claimed_by.clone()
            } else {
                None
            },
            key: t.request_key.as_deref().map(key_hash),
            depends_on: t.depends_on.clone(),
            unmet,
        }
    }

    /// Where the task is in the claim order, if it is a candidate for a claim.
    fn candidate(&self, p: usize) -> Option<(bool, Rank)> {
        (self.status == TaskStatus::Pending && self.unmet == 0)
            .then_some((self.plain, (self.rank, self.id, p)))
    }
}

fn key_hash(key: &str) -> u64 {
    let mut h = DefaultHasher::new();
    key.hash(&mut h);
    h.finish()
}

/// True for the statuses a dependent waits on (or never gets past): not completed.
fn unmet_status(s: TaskStatus) -> bool {
    s != TaskStatus::Completed
}

impl Built {
    /// The index of `tasks`, or `None` if two tasks share an id.
    fn build(tasks: &Vec<Task>) -> Option<Built> {
        let mut pos = HashMap::with_capacity(tasks.len());
        for (i, t) in tasks.iter().enumerate() {
            if pos.insert(t.id, i).is_some() {
                return None;
            }
        }
        let mut b = Built {
            shape: Shape::of(tasks),
            pos,
            entries: Vec::with_capacity(tasks.len()),
            held: HashMap::new(),
            in_progress: BTreeSet::new(),
            plain: BTreeSet::new(),
            special: BTreeSet::new(),
            keys: HashMap::new(),
            dependents: HashMap::new(),
            finished: 0,
        };
        for (p, t) in tasks.iter().enumerate() {
            let unmet = t
                .depends_on
                .iter()
                .filter(|d| b.pos.get(d).is_some_and(|&q| unmet_status(tasks[q].status)))
                .count();
            let e = Entry::of(t, u32::try_from(unmet).unwrap_or(u32::MAX));
            b.link(p, &e);
            b.entries.push(e);
        }
        Some(b)
    }

    /// The dependencies of the task at `p` that are on the queue and not completed, as the
    /// index sees their statuses.
    fn unmet_of(&self, deps: &[u64]) -> u32 {
        let n = deps
            .iter()
            .filter(|d| {
                self.pos
                    .get(d)
                    .is_some_and(|&q| unmet_status(self.entries[q].status))
            })
            .count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// Adds the task at `p`, indexed as `e`, to the sets (not to `pos` or `entries`).
    fn link(&mut self, p: usize, e: &Entry) {
        if e.status == TaskStatus::InProgress {
            self.in_progress.insert(p);
            if let Some(h) = &e.holder {
                self.held.entry(h.clone()).or_default().insert(p);
            }
        }
        if matches!(e.status, TaskStatus::Completed | TaskStatus::Cancelled) {
            self.finished += 1;
        }
        if let Some((plain, r)) = e.candidate(p) {
            if plain {
                self.plain.insert(r);
            } else {
                self.special.insert(r);
            }
        }
        if let Some(k) = e.key {
            self.keys.entry(k).or_default().insert(p);
        }
        for d in &e.depends_on {
            self.dependents.entry(*d).or_default().insert(p);
        }
    }

    /// Takes the task at `p`, indexed as `e`, out of the sets.
    fn unlink(&mut self, p: usize, e: &Entry) {
        if e.status == TaskStatus::InProgress {
            self.in_progress.remove(&p);
            if let Some(h) = &e.holder {
                remove_from(&mut self.held, h.as_str(), p);
            }
        }
        if matches!(e.status, TaskStatus::Completed | TaskStatus::Cancelled) {
            self.finished = self.finished.saturating_sub(1);
        }
        if let Some((plain, r)) = e.candidate(p) {
            if plain {
                self.plain.remove(&r);
            } else {
                self.special.remove(&r);
            }
        }
        if let Some(k) = e.key {
            remove_from(&mut self.keys, &k, p);
        }
        for d in &e.depends_on {
            remove_from(&mut self.dependents, d, p);
        }
    }

    /// True if the first, middle and last tasks are those indexed there, with the status
    /// indexed.
    fn looks_like(&self, tasks: &[Task]) -> bool {
        let n = tasks.len();
        [0, n / 2, n.saturating_sub(1)]
            .into_iter()
            .filter(|&p| p < n)
            .all(|p| {
                self.entries
                    .get(p)
                    .is_some_and(|e| e.id == tasks[p].id && e.status == tasks[p].status)
            })
    }

    /// Indexes the task at `p` again as it is now. False if it is not the task indexed there.
    fn update(&mut self, tasks: &[Task], p: usize) -> bool {
        let (Some(t), Some(old)) = (tasks.get(p), self.entries.get(p)) else {
            return false;
        };
        if t.id != old.id {
            return false;
        }
        let mut new = Entry::of(t, old.unmet);
        if new.depends_on != old.depends_on {
            new.unmet = self.unmet_of(&new.depends_on);
        }
        if new == *old {
            return true;
        }
        let old = std::mem::replace(&mut self.entries[p], new.clone());
        self.unlink(p, &old);
        self.link(p, &new);
        if unmet_status(old.status) != unmet_status(new.status) {
            self.recount_dependents(new.id);
        }
        true
    }

    /// Counts again the unmet dependencies of the tasks that depend on `id`.
    fn recount_dependents(&mut self, id: u64) {
        let Some(ds) = self.dependents.get(&id) else {
            return;
        };
        for q in ds.clone() {
            let unmet = self.unmet_of(&self.entries[q].depends_on);
            if unmet != self.entries[q].unmet {
                let old = self.entries[q].clone();
                self.unlink(q, &old);
                self.entries[q].unmet = unmet;
                let new = self.entries[q].clone();
                self.link(q, &new);
            }
        }
    }

    /// Indexes the task just pushed at the end of `tasks`. False if its id is taken.
    fn pushed(&mut self, tasks: &Vec<Task>) -> bool {
        let p = tasks.len() - 1;
        let t = &tasks[p];
        if p != self.entries.len() || self.pos.contains_key(&t.id) {
            return false;
        }
        self.pos.insert(t.id, p);
        let e = Entry::of(t, 0);
        self.entries.push(e.clone());
        let unmet = self.unmet_of(&e.depends_on);
        self.entries[p].unmet = unmet;
        let e = self.entries[p].clone();
        self.link(p, &e);
        self.recount_dependents(e.id);
        self.shape = Shape::of(tasks);
        true
    }

    /// Takes the tasks from position `len` on out of the index (the queue is about to be cut
    /// there).
    fn cut(&mut self, len: usize) {
        while self.entries.len() > len {
            let p = self.entries.len() - 1;
            let Some(e) = self.entries.pop() else {
                break;
            };
            self.unlink(p, &e);
            self.pos.remove(&e.id);
            self.recount_dependents(e.id);
        }
    }
}

fn remove_from<K, Q>(map: &mut HashMap<K, BTreeSet<usize>>, k: &Q, p: usize)
where
    K: std::borrow::Borrow<Q> + Eq + Hash,
    Q: Eq + Hash + ?Sized,
{
    if let Some(s) = map.get_mut(k) {
        s.remove(&p);
        if s.is_empty() {
            map.remove(k);
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

    /// Called by each op before it runs: keeps the index if it still describes `tasks`,
    /// builds it if the previous op saw the same queue, else notes the queue for the next.
    /// The first, middle and last tasks are compared with the index too, so that a queue
    /// reordered in place is seen.
    fn sync(&mut self, tasks: &Vec<Task>) {
        let shape = Shape::of(tasks);
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

    /// The index of `to`, a clone of `from` (which this index describes, or not).
    pub(super) fn clone_for(&self, from: &Vec<Task>, to: &Vec<Task>) -> TaskIndex {
        let (old, new) = (Shape::of(from), Shape::of(to));
        let inner = match &self.inner {
            Inner::Built(b) if b.shape == old => {
                let mut b = b.clone();
                b.shape = new;
                Inner::Built(b)
            }
            Inner::Duplicates(s) if *s == old => Inner::Duplicates(new),
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
        match self.index() {
            Some(b) => match b.pos.get(&id) {
                Some(&p) if self.tasks[p].id == id => Some(p),
                Some(_) => self.tasks.iter().position(|t| t.id == id),
                None => None,
            },
            None => self.tasks.iter().position(|t| t.id == id),
        }
    }

    /// The status of the queue's task `id` (the last, should two share it, as a map built
    /// from the queue has it).
    pub(crate) fn status_of(&self, id: u64) -> Option<TaskStatus> {
        match self.index() {
            Some(b) => b
                .pos
                .get(&id)
                .map(|&p| &self.tasks[p])
                .filter(|t| t.id == id)
                .map(|t| t.status),
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
            Some(b) => {
                let mut v: Vec<usize> = ids
                    .iter()
                    .filter_map(|id| b.pos.get(id).copied().filter(|&p| self.tasks[p].id == *id))
                    .collect();
                v.sort_unstable();
                v.dedup();
                v
            }
            None => self
                .tasks
                .iter()
                .enumerate()
                .filter(|(_, t)| ids.contains(&t.id))
                .map(|(i, _)| i)
                .collect(),
        }
    }

    /// Positions of the tasks `worker` holds (in progress, claimed by it), in queue order.
    pub(crate) fn held_by(&self, worker: &str) -> Vec<usize> {
        let holds = |t: &Task| {
            t.status == TaskStatus::InProgress && t.claimed_by.as_deref() == Some(worker)
        };
        match self.index() {
            Some(b) => b
                .held
                .get(worker)
                .map(|s| {
                    s.iter()
                        .copied()
                        .filter(|&p| holds(&self.tasks[p]))
                        .collect()
                })
                .unwrap_or_default(),
            None => self
                .tasks
                .iter()
                .enumerate()
                .filter(|(_, t)| holds(t))
                .map(|(i, _)| i)
                .collect(),
        }
    }

    /// The position of the first task on the queue that `worker` holds.
    pub(crate) fn first_held(&self, worker: &str) -> Option<usize> {
        let holds = |t: &Task| {
            t.status == TaskStatus::InProgress && t.claimed_by.as_deref() == Some(worker)
        };
        match self.index() {
            Some(b) => b
                .held
                .get(worker)
                .and_then(|s| s.iter().copied().find(|&p| holds(&self.tasks[p]))),
            None => self.tasks.iter().position(holds),
        }
    }

    /// True if `worker` holds at least one task.
    pub fn holds_task(&self, worker: &str) -> bool {
        self.first_held(worker).is_some()
    }

    /// Positions of the tasks in progress, in queue order.
    pub(crate) fn in_progress(&self) -> Vec<usize> {
        match self.index() {
            Some(b) => b
                .in_progress
                .iter()
                .copied()
                .filter(|&p| self.tasks[p].status == TaskStatus::InProgress)
                .collect(),
            None => self
                .tasks
                .iter()
                .enumerate()
                .filter(|(_, t)| t.status == TaskStatus::InProgress)
                .map(|(i, _)| i)
                .collect(),
        }
    }

    /// Positions of the tasks carrying request key `key`, in queue order.
    pub(crate) fn with_key(&self, key: &str) -> Vec<usize> {
        let has = |t: &Task| t.request_key.as_deref() == Some(key);
        match self.index() {
            Some(b) => b
                .keys
                .get(&key_hash(key))
                .map(|s| s.iter().copied().filter(|&p| has(&self.tasks[p])).collect())
                .unwrap_or_default(),
            None => self
                .tasks
                .iter()
                .enumerate()
                .filter(|(_, t)| has(t))
                .map(|(i, _)| i)
                .collect(),
        }
    }

    /// The candidates for a claim in claim order, if the queue is indexed: the pending tasks
    /// no dependency on the queue holds back, as the plain ones (open to any worker) and the
    /// special ones (meant for a specialist, or with a retry delay). Each must still be
    /// checked for eligibility.
    pub(crate) fn candidates(&self) -> Option<Candidates<'_>> {
        self.index().map(|b| Candidates {
            plain: &b.plain,
            special: &b.special,
        })
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
    plain: &'a BTreeSet<Rank>,
    special: &'a BTreeSet<Rank>,
}

impl Candidates<'_> {
    /// The position of the first candidate in claim order that `ok` accepts: the first plain
    /// one it accepts, unless a special one ahead of it is accepted first.
    pub(crate) fn first(&self, mut ok: impl FnMut(usize) -> bool) -> Option<usize> {
        let plain = self.plain.iter().find(|r| ok(r.2)).copied();
        let special = match plain {
            Some(bound) => self.special.range(..bound).find(|r| ok(r.2)),
            None => self.special.iter().find(|r| ok(r.2)),
        };
        special.or(plain.as_ref()).map(|r| r.2)
    }
}

#[cfg(test)]
#[path = "index_tests.rs"]
mod tests;
