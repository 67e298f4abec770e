//! The index proper, built from a queue and kept up to date task by task. Every set holds task
//! ids, not positions, so that when a store takes tasks off the queue (its archive) only the
//! positions of the tasks after them move ([`Built::retained`]).

use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasherDefault, DefaultHasher, Hash, Hasher};

use super::Shape;
use crate::task::{Task, TaskStatus};
use crate::time::Timestamp;

/// Hashes task ids fast (FxHash's step: rotate, xor, multiply). Ids come from the board's own
/// files; a board's writer can slow it down by choosing them, no more.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

/// A map by task id.
type Ids<V> = HashMap<u64, V, BuildHasherDefault<IdHasher>>;

/// A place in the claim order: priority rank, then id.
pub(super) type Rank = (u8, u64);

/// The candidates of one [`Class`]: in claim order, and by creation time (the earliest decides
/// when the first of them may fall back to any worker).
#[derive(Debug, Default, PartialEq)]
pub(super) struct ClassTasks {
    pub(super) ranks: BTreeSet<Rank>,
    created: BTreeSet<(Option<Timestamp>, u64)>,
}

impl ClassTasks {
    fn insert(&mut self, r: Rank, created: Option<Timestamp>) {
        self.ranks.insert(r);
        self.created.insert((created, r.1));
    }

    fn remove(&mut self, r: Rank, created: Option<Timestamp>) {
        self.ranks.remove(&r);
        self.created.remove(&(created, r.1));
    }

    /// The earliest creation time (none first: a task without one).
    pub(super) fn earliest(&self) -> Option<Timestamp> {
        self.created.first().and_then(|c| c.0)
    }
}

/// Whom a pending task is meant for: its assignee, the capabilities it requires, whether it is
/// strict and after how long without a live specialist it falls back to any worker. Tasks of
/// one class are open to a given worker at a given time alike, but for their creation time,
/// dependencies and retry delay (see `eligibility::may_be_open`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Class {
    /// The assignee (not empty).
    pub(crate) assignee: Option<String>,
    /// The required capabilities.
    pub(crate) requires: Vec<String>,
    /// Only the specialist may take it, ever.
    pub(crate) strict: bool,
    /// The task's own fallback time.
    pub(crate) fallback_after_secs: Option<u64>,
}

impl Class {
    /// The class of `t`, if it is meant for a specialist.
    fn of(t: &Task) -> Option<Class> {
        let assignee = t.assigned_to.clone().filter(|a| !a.is_empty());
        (assignee.is_some() || !t.requires.is_empty()).then(|| Class {
            assignee,
            requires: t.requires.clone(),
            strict: t.strict,
            fallback_after_secs: t.fallback_after_secs,
        })
    }
}

/// What a task is indexed as.
#[derive(Debug, Clone, PartialEq)]
struct Entry {
    id: u64,
    status: TaskStatus,
    rank: u8,
    /// Whom a pending task is meant for (none: any worker).
    class: Option<Class>,
    /// The holder of a task in progress.
    holder: Option<String>,
    /// The hashes of its request key and of the key of the add that made it.
    keys: [Option<u64>; 2],
    created_at: Option<Timestamp>,
    depends_on: Vec<u64>,
    /// Its dependencies on the queue that have not completed.
    unmet: u32,
}

impl Entry {
    fn of(t: &Task, unmet: u32) -> Entry {
        let pending = t.status == TaskStatus::Pending;
        let in_progress = t.status == TaskStatus::InProgress;
        Entry {
            id: t.id,
            status: t.status,
            rank: t.priority.rank(),
            class: if pending { Class::of(t) } else { None },
            holder: if in_progress {
                t.claimed_by.clone()
            } else {
                None
            },
            keys: [
                t.request_key.as_deref().map(key_hash),
                t.added_key
                    .as_deref()
                    .filter(|k| t.request_key.as_deref() != Some(*k))
                    .map(key_hash),
            ],
            created_at: t.created_at,
            depends_on: t.depends_on.clone(),
            unmet,
        }
    }

    /// Its place in the claim order, if it is a candidate for a claim: pending, and no
    /// dependency on the queue holds it back.
    fn candidate(&self) -> Option<Rank> {
        (self.status == TaskStatus::Pending && self.unmet == 0).then_some((self.rank, self.id))
    }

    fn finished(&self) -> bool {
        matches!(self.status, TaskStatus::Completed | TaskStatus::Cancelled)
    }
}

/// The hash a request key is indexed by.
pub(super) fn key_hash(key: &str) -> u64 {
    let mut h = DefaultHasher::new();
    key.hash(&mut h);
    h.finish()
}

/// True for the statuses a dependent waits on (or never gets past): not completed.
fn unmet_status(s: TaskStatus) -> bool {
    s != TaskStatus::Completed
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The index of one queue.
#[derive(Debug, PartialEq)]
pub(super) struct Built {
    /// The vector it describes.
    pub(super) shape: Shape,
    /// Position of each task, by id.
    pos: Ids<usize>,
    /// What each task (by position) is indexed as.
    entries: Vec<Entry>,
    /// The tasks in progress, by holder.
    held: HashMap<String, BTreeSet<u64>>,
    /// Every task in progress (with or without a holder).
    in_progress: BTreeSet<u64>,
    /// Pending tasks no dependency on the queue holds back, open to any worker.
    pub(super) plain: BTreeSet<Rank>,
    /// The other pending tasks no dependency on the queue holds back (meant for a
    /// specialist), by class.
    pub(super) special: HashMap<Class, ClassTasks>,
    /// Tasks carrying a request key or an add's key: (the key's hash, id).
    keys: BTreeSet<(u64, u64)>,
    /// Dependencies: (the id depended on, the dependent's id).
    dependents: BTreeSet<(u64, u64)>,
    /// Completed and cancelled tasks.
    pub(super) finished: usize,
}

impl Built {
    /// The index of `tasks`, or `None` if two tasks share an id.
    pub(super) fn build(tasks: &Vec<Task>) -> Option<Built> {
        let mut pos = Ids::with_capacity_and_hasher(tasks.len(), Default::default());
        for (i, t) in tasks.iter().enumerate() {
            if pos.insert(t.id, i).is_some() {
                return None;
            }
        }
        let mut entries = Vec::with_capacity(tasks.len());
        let mut plain = Vec::new();
        let mut special: HashMap<Class, ClassTasks> = HashMap::new();
        let mut held: HashMap<String, BTreeSet<u64>> = HashMap::new();
        let mut in_progress = Vec::new();
        let mut keys = Vec::new();
        let mut dependents = Vec::new();
        let mut finished = 0;
        for t in tasks {
            let unmet = t
                .depends_on
                .iter()
                .filter(|d| pos.get(d).is_some_and(|&q| unmet_status(tasks[q].status)))
                .count();
            let e = Entry::of(t, count(unmet));
            if let Some(r) = e.candidate() {
                match &e.class {
                    None => plain.push(r),
                    Some(c) => match special.get_mut(c) {
                        Some(v) => v.insert(r, e.created_at),
                        None => {
                            let mut v = ClassTasks::default();
                            v.insert(r, e.created_at);
                            special.insert(c.clone(), v);
                        }
                    },
                }
            }
            if e.status == TaskStatus::InProgress {
                in_progress.push(e.id);
                if let Some(h) = &e.holder {
                    held.entry(h.clone()).or_default().insert(e.id);
                }
            }
            finished += usize::from(e.finished());
            keys.extend(e.keys.iter().flatten().map(|&k| (k, e.id)));
            dependents.extend(e.depends_on.iter().map(|&d| (d, e.id)));
            entries.push(e);
        }
        Some(Built {
            shape: Shape::of(tasks),
            pos,
            entries,
            held,
            in_progress: in_progress.into_iter().collect(),
            plain: plain.into_iter().collect(),
            special,
            keys: keys.into_iter().collect(),
            dependents: dependents.into_iter().collect(),
            finished,
        })
    }

    /// The position of task `id`, as indexed.
    pub(super) fn position(&self, id: u64) -> Option<usize> {
        self.pos.get(&id).copied()
    }

    /// Positions of the tasks `ids` (those indexed), in queue order.
    fn positions(&self, ids: impl Iterator<Item = u64>) -> Vec<usize> {
        let mut v: Vec<usize> = ids.filter_map(|id| self.position(id)).collect();
        v.sort_unstable();
        v
    }

    /// Positions of the tasks `worker` holds, as indexed, in queue order.
    pub(super) fn held_by(&self, worker: &str) -> Vec<usize> {
        self.held
            .get(worker)
            .map(|s| self.positions(s.iter().copied()))
            .unwrap_or_default()
    }

    /// Positions of the tasks in progress, as indexed, in queue order.
    pub(super) fn in_progress(&self) -> Vec<usize> {
        self.positions(self.in_progress.iter().copied())
    }

    /// Positions of the tasks whose request key has the hash `key`, in queue order.
    pub(super) fn with_key(&self, key: u64) -> Vec<usize> {
        self.positions(
            self.keys
                .range((key, 0)..=(key, u64::MAX))
                .map(|&(_, id)| id),
        )
    }

    /// Its dependencies on the queue that have not completed, as the index has their
    /// statuses.
    fn unmet_of(&self, deps: &[u64]) -> u32 {
        let n = deps
            .iter()
            .filter(|d| {
                self.position(**d)
                    .is_some_and(|q| unmet_status(self.entries[q].status))
            })
            .count();
        count(n)
    }

    /// Adds a task indexed as `e` to the sets (not to `pos` or `entries`).
    fn link(&mut self, e: &Entry) {
        if e.status == TaskStatus::InProgress {
            self.in_progress.insert(e.id);
            if let Some(h) = &e.holder {
                self.held.entry(h.clone()).or_default().insert(e.id);
            }
        }
        self.finished += usize::from(e.finished());
        if let Some(r) = e.candidate() {
            match &e.class {
                None => {
                    self.plain.insert(r);
                }
                Some(c) => {
                    self.special
                        .entry(c.clone())
                        .or_default()
                        .insert(r, e.created_at);
                }
            }
        }
        for &k in e.keys.iter().flatten() {
            self.keys.insert((k, e.id));
        }
        for &d in &e.depends_on {
            self.dependents.insert((d, e.id));
        }
    }

    /// Takes a task indexed as `e` out of the sets.
    fn unlink(&mut self, e: &Entry) {
        if e.status == TaskStatus::InProgress {
            self.in_progress.remove(&e.id);
            if let Some(h) = &e.holder
                && let Some(s) = self.held.get_mut(h.as_str())
            {
                s.remove(&e.id);
                if s.is_empty() {
                    self.held.remove(h.as_str());
                }
            }
        }
        self.finished = self.finished.saturating_sub(usize::from(e.finished()));
        if let Some(r) = e.candidate() {
            match &e.class {
                None => {
                    self.plain.remove(&r);
                }
                Some(c) => {
                    if let Some(s) = self.special.get_mut(c) {
                        s.remove(r, e.created_at);
                        if s.ranks.is_empty() {
                            self.special.remove(c);
                        }
                    }
                }
            }
        }
        for &k in e.keys.iter().flatten() {
            self.keys.remove(&(k, e.id));
        }
        for &d in &e.depends_on {
            self.dependents.remove(&(d, e.id));
        }
    }

    /// True if the first, middle and last tasks are those indexed there, with the status
    /// indexed.
    pub(super) fn looks_like(&self, tasks: &[Task]) -> bool {
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
    pub(super) fn update(&mut self, tasks: &[Task], p: usize) -> bool {
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
        self.unlink(&old);
        self.link(&new);
        if unmet_status(old.status) != unmet_status(new.status) {
            self.recount_dependents(new.id);
        }
        true
    }

    /// Counts again the unmet dependencies of the tasks that depend on `id`.
    fn recount_dependents(&mut self, id: u64) {
        let ids: Vec<u64> = self
            .dependents
            .range((id, 0)..=(id, u64::MAX))
            .map(|&(_, d)| d)
            .collect();
        for d in ids {
            let Some(q) = self.position(d) else {
                continue;
            };
            let unmet = self.unmet_of(&self.entries[q].depends_on);
            if unmet != self.entries[q].unmet {
                let old = self.entries[q].clone();
                self.unlink(&old);
                self.entries[q].unmet = unmet;
                let new = self.entries[q].clone();
                self.link(&new);
            }
        }
    }

    /// Indexes the task just pushed at the end of `tasks`. False if its id is taken.
    pub(super) fn pushed(&mut self, tasks: &Vec<Task>) -> bool {
        let Some(t) = tasks.last() else {
            return false;
        };
        let p = tasks.len() - 1;
        if p != self.entries.len() || self.pos.contains_key(&t.id) {
            return false;
        }
        self.pos.insert(t.id, p);
        self.entries.push(Entry::of(t, 0));
        let unmet = self.unmet_of(&t.depends_on);
        self.entries[p].unmet = unmet;
        let e = self.entries[p].clone();
        self.link(&e);
        self.recount_dependents(e.id);
        self.shape = Shape::of(tasks);
        true
    }

    /// Takes the tasks from position `len` on out of the index (the queue is about to be cut
    /// there).
    pub(super) fn cut(&mut self, len: usize) {
        while self.entries.len() > len {
            let Some(e) = self.entries.pop() else {
                break;
            };
            self.unlink(&e);
            self.pos.remove(&e.id);
            self.recount_dependents(e.id);
        }
    }

    /// Brings the index up to date with `tasks` after tasks were taken off the queue (the
    /// others kept in order, unchanged): false if `tasks` is not such a subsequence of the
    /// tasks indexed (the index is then spoilt).
    pub(super) fn retained(&mut self, tasks: &Vec<Task>) -> bool {
        let old = std::mem::take(&mut self.entries);
        let mut kept = Vec::with_capacity(tasks.len());
        let mut removed = Vec::new();
        let mut rest = old.into_iter();
        for t in tasks {
            loop {
                match rest.next() {
                    Some(e) if e.id == t.id => {
                        kept.push(e);
                        break;
                    }
                    Some(e) => removed.push(e),
                    None => return false,
                }
            }
        }
        removed.extend(rest);
        let first_moved = kept
            .iter()
            .enumerate()
            .find(|(i, e)| self.position(e.id) != Some(*i))
            .map_or(kept.len(), |(i, _)| i);
        self.entries = kept;
        for e in &removed {
            self.unlink(e);
            self.pos.remove(&e.id);
        }
        for (i, e) in self.entries.iter().enumerate().skip(first_moved) {
            self.pos.insert(e.id, i);
        }
        for e in &removed {
            self.recount_dependents(e.id);
        }
        self.shape = Shape::of(tasks);
        true
    }
}
