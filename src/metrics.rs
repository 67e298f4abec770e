//! The board's figures: how long tasks wait in the queue (added → first claimed), how long
//! work takes (claim → complete), how long people take to answer (asked → answered), how
//! often tasks fail or need another attempt, and how many are done per hour; with the series
//! the control room plots (throughput and queue depth over time) and the duration histograms
//! that `/metrics` exposes.
//!
//! Everything is computed from what the board records: the queue's tasks, the archive's
//! finished tasks and the log's questions and answers. The archive and the log only grow, so
//! a store keeps a [`History`] of them (each archived task's times, each question's times) and
//! adds only what was appended since its last look (`store/history.rs` for the local board);
//! a read then computes the figures from that and the queue in one pass, without parsing the
//! history again.
//!
//! Percentiles are nearest-rank: the p-th percentile of n sorted durations is the
//! ⌈p·n⌉-th of them.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::task::{Task, TaskStatus};
use crate::time::{Timestamp, opt_ts, ts};

/// The upper bounds (seconds) of the duration histograms' buckets; a last bucket holds the
/// longer ones (Prometheus' `+Inf`).
pub const DURATION_BOUNDS: [f64; 9] = [
    10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0,
];

/// The times of one task, as the figures need them (epoch milliseconds). Reads from a task's
/// JSON (a queue or archive entry) only the fields it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(from = "RawTimes")]
pub struct TaskTimes {
    /// The task id.
    pub id: u64,
    /// Where it is in its life.
    pub status: TaskStatus,
    /// When it was added.
    pub added: Option<i64>,
    /// When it was first claimed.
    pub first_claimed: Option<i64>,
    /// When its current (or last) claim was made.
    pub claimed: Option<i64>,
    /// When it completed, failed for good or was cancelled.
    pub finished: Option<i64>,
    /// Attempts it took (claims not released).
    pub attempts: u32,
}

/// The fields of a task that [`TaskTimes`] come from.
#[derive(Deserialize)]
struct RawTimes {
    id: u64,
    status: TaskStatus,
    #[serde(default, with = "opt_ts")]
    created_at: Option<Timestamp>,
    #[serde(default, with = "opt_ts")]
    first_claimed_at: Option<Timestamp>,
    #[serde(default, with = "opt_ts")]
    claimed_at: Option<Timestamp>,
    #[serde(default, with = "opt_ts")]
    completed_at: Option<Timestamp>,
    #[serde(default, with = "opt_ts")]
    ended_at: Option<Timestamp>,
    #[serde(default, deserialize_with = "crate::task::null_default")]
    attempts: u32,
}

impl From<RawTimes> for TaskTimes {
    /// A task claimed before the board recorded first claims counts its current claim as its
    /// first.
    fn from(t: RawTimes) -> Self {
        let ms = |x: Option<Timestamp>| x.map(|t| t.timestamp_millis());
        let finished = match t.status {
            TaskStatus::Completed => t.completed_at.or(t.ended_at),
            TaskStatus::Failed | TaskStatus::Cancelled => t.ended_at,
            TaskStatus::Pending | TaskStatus::InProgress => None,
        };
        TaskTimes {
            id: t.id,
            status: t.status,
            added: ms(t.created_at),
            first_claimed: ms(t.first_claimed_at.or(t.claimed_at)),
            claimed: ms(t.claimed_at),
            finished: ms(finished),
            attempts: t.attempts,
        }
    }
}

impl TaskTimes {
    /// The times of `t`.
    pub fn of(t: &Task) -> Self {
        TaskTimes::from(RawTimes {
            id: t.id,
            status: t.status,
            created_at: t.created_at,
            first_claimed_at: t.first_claimed_at,
            claimed_at: t.claimed_at,
            completed_at: t.completed_at,
            ended_at: t.ended_at,
            attempts: t.attempts,
        })
    }
}

/// A question's times (epoch milliseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Asked {
    at: i64,
    answered: Option<i64>,
}

/// What the figures need from the board's append-only files: every archived task's times
/// and every question's times. Built up line by line as the files grow; [`History::seal`]
/// then brings the all-history totals up to date with what was added, so that a read
/// computes the window's figures from the archive's last part only, and the all-history ones
/// from the totals and the queue.
#[derive(Debug, Clone, Default)]
pub struct History {
    /// Archived tasks, in archive order, each id once (a later line replaces an earlier one).
    tasks: Vec<TaskTimes>,
    /// When each of `tasks` was archived (epoch ms).
    archived_at: Vec<i64>,
    /// `archived_at` never decreases (the board's clock does not go back), so the tasks
    /// archived since a time are a tail of `tasks`. False for a hand-edited archive.
    archived_in_order: bool,
    /// Where each archived id is in `tasks`.
    index: HashMap<u64, usize>,
    /// Questions by sequence number.
    questions: BTreeMap<u64, Asked>,
    /// Questions without an answer.
    open: u64,
    /// First answers as they came: (answered, asked), epoch ms.
    answers: Vec<(i64, i64)>,
    /// `answers` are in the order of their times.
    answers_in_order: bool,
    /// The totals of all the history, up to `sealed` (tasks, answers); `None` until sealed, or
    /// after an archived task was replaced.
    totals: Option<Totals>,
    /// How many tasks and answers `totals` holds.
    sealed: (usize, usize),
}

impl History {
    /// Adds an archived task, archived at `archived_at` (a task archived twice keeps its last
    /// line).
    pub fn add_archived(&mut self, t: TaskTimes, archived_at: Timestamp) {
        let at = archived_at.timestamp_millis();
        match self.index.get(&t.id) {
            Some(&i) => {
                self.tasks[i] = t;
                self.archived_at[i] = self.archived_at[i].max(at);
                self.archived_in_order = false;
                self.totals = None;
            }
            None => {
                if self.tasks.is_empty() {
                    self.archived_in_order = true;
                } else if self.archived_at.last().is_some_and(|l| *l > at) {
                    self.archived_in_order = false;
                }
                self.index.insert(t.id, self.tasks.len());
                self.tasks.push(t);
                self.archived_at.push(at);
            }
        }
    }

    /// Adds a question (log entry `seq`, written at `at`).
    pub fn add_question(&mut self, seq: u64, at: Timestamp) {
        if let std::collections::btree_map::Entry::Vacant(e) = self.questions.entry(seq) {
            e.insert(Asked {
                at: at.timestamp_millis(),
                answered: None,
            });
            self.open += 1;
        }
    }

    /// Adds an answer to question `question`, written at `at`; the first answer counts.
    pub fn add_answer(&mut self, question: u64, at: Timestamp) {
        let at = at.timestamp_millis();
        if let Some(q) = self.questions.get_mut(&question)
            && q.answered.is_none()
        {
            q.answered = Some(at);
            self.open = self.open.saturating_sub(1);
            if self.answers.is_empty() {
                self.answers_in_order = true;
            } else if self.answers.last().is_some_and(|l| l.0 > at) {
                self.answers_in_order = false;
            }
            self.answers.push((at, q.at));
        }
    }

    /// Forgets the archived tasks (the archive was replaced, e.g. by `vine repair`).
    pub fn clear_archived(&mut self) {
        self.tasks.clear();
        self.archived_at.clear();
        self.index.clear();
        self.totals = None;
    }

    /// Forgets the questions (the log was replaced).
    pub fn clear_questions(&mut self) {
        self.questions.clear();
        self.answers.clear();
        self.open = 0;
        self.totals = None;
    }

    /// How many archived tasks it holds.
    pub fn archived(&self) -> usize {
        self.tasks.len()
    }

    /// True if task `id` is archived.
    pub fn is_archived(&self, id: u64) -> bool {
        self.index.contains_key(&id)
    }

    /// Brings the all-history totals up to date with what was added since the last seal
    /// (merging the new durations in), or builds them again after a replacement or a clear.
    pub fn seal(&mut self) {
        let (tasks, answers) = self.sealed;
        let fresh = tasks > self.tasks.len() || answers > self.answers.len();
        match &mut self.totals {
            Some(t) if !fresh => {
                t.add(&self.tasks[tasks..], &self.answers[answers..]);
            }
            _ => {
                let mut t = Totals::default();
                t.add(&self.tasks, &self.answers);
                self.totals = Some(t);
            }
        }
        self.sealed = (self.tasks.len(), self.answers.len());
    }

    /// The all-history totals: the sealed ones when up to date, else computed now.
    fn totals(&self) -> std::borrow::Cow<'_, Totals> {
        match &self.totals {
            Some(t) if self.sealed == (self.tasks.len(), self.answers.len()) => {
                std::borrow::Cow::Borrowed(t)
            }
            _ => {
                let mut t = Totals::default();
                t.add(&self.tasks, &self.answers);
                std::borrow::Cow::Owned(t)
            }
        }
    }

    /// Where the tasks archived at or after `from` start in `tasks`.
    fn archived_since(&self, from: i64) -> usize {
        if self.archived_in_order {
            self.archived_at.partition_point(|a| *a < from)
        } else {
            0
        }
    }

    /// Where the answers given at or after `from` start in `answers`.
    fn answered_since(&self, from: i64) -> usize {
        if self.answers_in_order {
            self.answers.partition_point(|a| a.0 < from)
        } else {
            0
        }
    }
}

/// Durations kept sorted, with their sum and counts per bucket.
#[derive(Debug, Clone, Default)]
struct Sorted {
    values: Vec<i64>,
    sum: i64,
    buckets: Vec<u64>,
}

impl Sorted {
    /// Merges `new` (milliseconds) in.
    fn extend(&mut self, mut new: Vec<i64>) {
        if new.is_empty() {
            return;
        }
        if self.buckets.is_empty() {
            self.buckets = vec![0; DURATION_BOUNDS.len() + 1];
        }
        for &d in &new {
            self.sum = self.sum.saturating_add(d);
            self.buckets[bucket_of(d)] += 1;
        }
        new.sort_unstable();
        if self.values.last().is_none_or(|l| *l <= new[0]) {
            self.values.extend(new);
            return;
        }
        let old = std::mem::take(&mut self.values);
        let mut merged = Vec::with_capacity(old.len() + new.len());
        let (mut i, mut j) = (0, 0);
        while i < old.len() && j < new.len() {
            if old[i] <= new[j] {
                merged.push(old[i]);
                i += 1;
            } else {
                merged.push(new[j]);
                j += 1;
            }
        }
        merged.extend_from_slice(&old[i..]);
        merged.extend_from_slice(&new[j..]);
        self.values = merged;
    }
}

/// The totals of every archived task and every answer.
#[derive(Debug, Clone, Default)]
struct Totals {
    latency: Sorted,
    work: Sorted,
    response: Sorted,
    counts: TaskCounts,
    tally: Tally,
    first_added: Option<i64>,
}

impl Totals {
    fn add(&mut self, tasks: &[TaskTimes], answers: &[(i64, i64)]) {
        let mut part = Tally::default();
        for t in tasks {
            self.counts.add(t.status);
            part.task(t, i64::MIN);
            if let Some(a) = t.added {
                self.first_added = Some(self.first_added.map_or(a, |f| f.min(a)));
            }
        }
        for (answered, asked) in answers {
            part.response.push((answered - asked).max(0));
        }
        self.latency.extend(std::mem::take(&mut part.latency));
        self.work.extend(std::mem::take(&mut part.work));
        self.response.extend(std::mem::take(&mut part.response));
        self.tally.completed += part.completed;
        self.tally.failed += part.failed;
        self.tally.cancelled += part.cancelled;
        self.tally.retried += part.retried;
    }
}

/// The bucket of [`DURATION_BOUNDS`] a duration of `ms` milliseconds falls in.
fn bucket_of(ms: i64) -> usize {
    let secs = ms as f64 / 1000.0;
    DURATION_BOUNDS
        .iter()
        .position(|b| secs <= *b)
        .unwrap_or(DURATION_BOUNDS.len())
}

/// The stretch of time the recent figures and the series cover: `buckets` equal buckets
/// ending at the time of the read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Its length in seconds (rounded up to a whole number of seconds per bucket).
    pub secs: u64,
    /// How many buckets the series have.
    pub buckets: u32,
}

impl Window {
    /// The default: the last 24 hours in hourly buckets.
    pub const DAY: Window = Window {
        secs: 24 * 3600,
        buckets: 24,
    };

    /// Seconds per bucket (at least 1).
    pub fn bucket_secs(&self) -> u64 {
        self.secs.div_ceil(u64::from(self.buckets.max(1))).max(1)
    }
}

/// Counts of a set of durations and where they fall.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Durations {
    /// How many.
    pub count: u64,
    /// Their sum, in seconds.
    pub sum_secs: f64,
    /// The median (nearest rank), in seconds; none without durations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub median_secs: Option<f64>,
    /// The 90th percentile (nearest rank), in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p90_secs: Option<f64>,
    /// The longest, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_secs: Option<f64>,
    /// How many fall in each bucket of [`DURATION_BOUNDS`] (not cumulative: bucket `i` holds
    /// those above bound `i-1` up to bound `i`), and a last one for those above every bound.
    pub buckets: Vec<u64>,
}

impl Durations {
    /// The figures of `ms` (milliseconds; reordered in place).
    fn of(ms: &mut [i64]) -> Self {
        let mut buckets = vec![0u64; DURATION_BOUNDS.len() + 1];
        let mut sum = 0i64;
        for &d in ms.iter() {
            sum = sum.saturating_add(d);
            buckets[bucket_of(d)] += 1;
        }
        let secs = |v: i64| v as f64 / 1000.0;
        Durations {
            count: ms.len() as u64,
            sum_secs: secs(sum),
            median_secs: nearest_rank(ms, 50).map(secs),
            p90_secs: nearest_rank(ms, 90).map(secs),
            max_secs: ms.iter().max().copied().map(secs),
            buckets,
        }
    }

    /// The figures of the sorted durations `all` together with `more` (milliseconds;
    /// reordered in place): counts, sums and buckets added, percentiles from both.
    fn merged(all: &Sorted, more: &mut [i64]) -> Self {
        more.sort_unstable();
        let mut d = Durations::of(more);
        let a = &all.values;
        let n = a.len() + more.len();
        if a.is_empty() {
            return d;
        }
        let secs = |v: i64| v as f64 / 1000.0;
        for (slot, k) in d.buckets.iter_mut().zip(all.buckets.iter()) {
            *slot += k;
        }
        d.count = n as u64;
        d.sum_secs = secs(all.sum.saturating_add(more.iter().sum::<i64>()));
        let rank = |pct: u64| -> Option<f64> {
            let r = (pct * n as u64).div_ceil(100).clamp(1, n as u64);
            kth(a, more, usize::try_from(r - 1).unwrap_or(0)).map(secs)
        };
        d.median_secs = rank(50);
        d.p90_secs = rank(90);
        d.max_secs = a.last().copied().max(more.last().copied()).map(secs);
        d
    }

    /// The mean in seconds; none without durations.
    pub fn mean_secs(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum_secs / self.count as f64)
    }
}

/// The `pct`-th percentile of `v` by nearest rank (reorders `v`).
fn nearest_rank(v: &mut [i64], pct: u64) -> Option<i64> {
    if v.is_empty() {
        return None;
    }
    let n = v.len() as u64;
    let rank = (pct * n).div_ceil(100).clamp(1, n);
    let i = usize::try_from(rank - 1).unwrap_or(0);
    Some(*v.select_nth_unstable(i).1)
}

/// The `k`-th smallest (from 0) of two sorted lists taken together.
fn kth(a: &[i64], b: &[i64], k: usize) -> Option<i64> {
    let (mut i, mut j) = (0, 0);
    loop {
        let next = match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) if x <= y => {
                i += 1;
                *x
            }
            (Some(_), Some(y)) => {
                j += 1;
                *y
            }
            (Some(x), None) => {
                i += 1;
                *x
            }
            (None, Some(y)) => {
                j += 1;
                *y
            }
            (None, None) => return None,
        };
        if i + j > k {
            return Some(next);
        }
    }
}

/// The figures of the work done over a stretch of time (the window, or all the history).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Figures {
    /// Where the stretch starts (absent: all the history).
    #[serde(default, with = "opt_ts", skip_serializing_if = "Option::is_none")]
    pub since: Option<Timestamp>,
    /// Added → first claimed, of the tasks first claimed in the stretch.
    pub queue_latency: Durations,
    /// Claim → complete (the completing attempt's claim), of the tasks completed in it.
    pub claim_to_complete: Durations,
    /// Asked → first answer, of the questions answered in it.
    pub human_response: Durations,
    /// Tasks completed in it.
    pub completed: u64,
    /// Tasks that failed for good in it.
    pub failed: u64,
    /// Tasks cancelled in it.
    pub cancelled: u64,
    /// Of the tasks completed or failed in it, those that took more than one attempt.
    pub retried: u64,
    /// failed / (completed + failed); none when nothing completed or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_rate: Option<f64>,
    /// retried / (completed + failed); none when nothing completed or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_rate: Option<f64>,
    /// Tasks completed per hour over the stretch (all the history: since the first task was
    /// added, counted as an hour when shorter); none without any task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tasks_per_hour: Option<f64>,
}

/// Counts over time, one per bucket of the window, oldest first.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Series {
    /// When the first bucket starts.
    #[serde(with = "ts")]
    pub start: Timestamp,
    /// Seconds per bucket.
    pub bucket_secs: u64,
    /// Tasks added in each bucket.
    pub added: Vec<u64>,
    /// Tasks completed in each bucket (throughput).
    pub completed: Vec<u64>,
    /// Tasks that failed for good in each bucket.
    pub failed: Vec<u64>,
    /// Queue depth at each bucket's end: tasks added and not yet claimed (nor finished).
    pub waiting: Vec<u64>,
    /// Tasks claimed and not finished at each bucket's end.
    pub in_progress: Vec<u64>,
}

/// Tasks by status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TaskCounts {
    /// Waiting to be claimed.
    pub pending: u64,
    /// Claimed.
    pub in_progress: u64,
    /// Completed (archived ones included).
    pub completed: u64,
    /// Failed for good.
    pub failed: u64,
    /// Cancelled (archived ones included).
    pub cancelled: u64,
}

impl TaskCounts {
    fn add(&mut self, s: TaskStatus) {
        let slot = match s {
            TaskStatus::Pending => &mut self.pending,
            TaskStatus::InProgress => &mut self.in_progress,
            TaskStatus::Completed => &mut self.completed,
            TaskStatus::Failed => &mut self.failed,
            TaskStatus::Cancelled => &mut self.cancelled,
        };
        *slot += 1;
    }

    /// The count of tasks with `status`.
    pub fn get(&self, status: TaskStatus) -> u64 {
        match status {
            TaskStatus::Pending => self.pending,
            TaskStatus::InProgress => self.in_progress,
            TaskStatus::Completed => self.completed,
            TaskStatus::Failed => self.failed,
            TaskStatus::Cancelled => self.cancelled,
        }
    }
}

/// Every figure of the board at one time: the reply of the `metrics` read.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Report {
    /// When it was computed.
    #[serde(with = "ts")]
    pub at: Timestamp,
    /// Tasks by status now (queue and archive).
    pub tasks: TaskCounts,
    /// Workers by derived state now.
    pub workers: BTreeMap<String, usize>,
    /// Questions without an answer now.
    pub open_questions: u64,
    /// The figures of the window.
    pub recent: Figures,
    /// The figures of all the history.
    pub all_time: Figures,
    /// Counts over the window, per bucket.
    pub series: Series,
    /// What the Claude sessions' recorded runs spent, in all and by worker, and how often a
    /// session was reused (absent when no run was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claude: Option<crate::reply::ClaudeSpend>,
}

/// Collects the durations and counts of one stretch of time.
#[derive(Debug, Clone, Default)]
struct Tally {
    latency: Vec<i64>,
    work: Vec<i64>,
    response: Vec<i64>,
    completed: u64,
    failed: u64,
    cancelled: u64,
    retried: u64,
}

impl Tally {
    fn task(&mut self, t: &TaskTimes, from: i64) {
        if let (Some(a), Some(c)) = (t.added, t.first_claimed)
            && c >= from
        {
            self.latency.push((c - a).max(0));
        }
        let Some(f) = t.finished.filter(|f| *f >= from) else {
            return;
        };
        match t.status {
            TaskStatus::Completed => {
                self.completed += 1;
                if let Some(c) = t.claimed {
                    self.work.push((f - c).max(0));
                }
            }
            TaskStatus::Failed => self.failed += 1,
            TaskStatus::Cancelled => self.cancelled += 1,
            TaskStatus::Pending | TaskStatus::InProgress => {}
        }
        if matches!(t.status, TaskStatus::Completed | TaskStatus::Failed) && t.attempts > 1 {
            self.retried += 1;
        }
    }

    fn figures(mut self, since: Option<Timestamp>, hours: f64) -> Figures {
        let ended = self.completed + self.failed;
        let rate = |n: u64| (ended > 0).then(|| n as f64 / ended as f64);
        Figures {
            since,
            queue_latency: Durations::of(&mut self.latency),
            claim_to_complete: Durations::of(&mut self.work),
            human_response: Durations::of(&mut self.response),
            completed: self.completed,
            failed: self.failed,
            cancelled: self.cancelled,
            retried: self.retried,
            failure_rate: rate(self.failed),
            retry_rate: rate(self.retried),
            tasks_per_hour: (hours > 0.0).then(|| self.completed as f64 / hours),
        }
    }
}

/// The window's buckets: `n` of `width` ms from `start`.
#[derive(Debug, Clone, Copy)]
struct Grid {
    start: i64,
    width: i64,
    n: usize,
}

impl Grid {
    fn new(end: i64, w: Window) -> Self {
        let n = w.buckets.max(1) as usize;
        let width = i64::try_from(w.bucket_secs().saturating_mul(1000)).unwrap_or(i64::MAX / 4);
        let start = end.saturating_sub(width.saturating_mul(n as i64));
        Grid { start, width, n }
    }

    /// The bucket `at` falls in: a bucket holds its start, not its end, except the last,
    /// which holds the window's end.
    fn bucket(&self, at: i64) -> Option<usize> {
        let end = self.start + self.width * self.n as i64;
        if at < self.start || at > end {
            return None;
        }
        let i = usize::try_from((at - self.start) / self.width).unwrap_or(0);
        Some(i.min(self.n - 1))
    }

    /// The first bucket whose end is at or after `at` (`n` if none):
    /// ⌈(at − start) / width⌉ − 1, clamped.
    fn first_end_at_or_after(&self, at: i64) -> usize {
        let x = at.saturating_sub(self.start);
        let ceil = -((-x).div_euclid(self.width));
        usize::try_from((ceil - 1).max(0)).unwrap_or(0).min(self.n)
    }
}

/// The series being built: counts per bucket, and the changes of the two depths at bucket
/// ends (summed at the end).
struct Buckets {
    grid: Grid,
    added: Vec<u64>,
    completed: Vec<u64>,
    failed: Vec<u64>,
    waiting: Vec<i64>,
    in_progress: Vec<i64>,
}

impl Buckets {
    fn new(grid: Grid) -> Self {
        let n = grid.n;
        Buckets {
            grid,
            added: vec![0; n],
            completed: vec![0; n],
            failed: vec![0; n],
            waiting: vec![0; n + 1],
            in_progress: vec![0; n + 1],
        }
    }

    fn task(&mut self, t: &TaskTimes) {
        let g = self.grid;
        let count = |v: &mut Vec<u64>, at: Option<i64>| {
            if let Some(i) = at.and_then(|a| g.bucket(a)) {
                v[i] += 1;
            }
        };
        count(&mut self.added, t.added);
        match t.status {
            TaskStatus::Completed => count(&mut self.completed, t.finished),
            TaskStatus::Failed => count(&mut self.failed, t.finished),
            _ => {}
        }
        if let Some(a) = t.added {
            let until = match (t.first_claimed, t.finished) {
                (Some(c), Some(f)) => Some(c.min(f)),
                (c, f) => c.or(f),
            };
            span(&mut self.waiting, g, a, until);
        }
        if let Some(c) = t.first_claimed {
            span(&mut self.in_progress, g, c, t.finished);
        }
    }

    fn series(self) -> Series {
        let n = self.grid.n;
        let sum = |d: Vec<i64>| -> Vec<u64> {
            let mut run = 0i64;
            d.into_iter()
                .take(n)
                .map(|x| {
                    run += x;
                    u64::try_from(run).unwrap_or(0)
                })
                .collect()
        };
        Series {
            start: Timestamp::from_timestamp_millis(self.grid.start).unwrap_or_default(),
            bucket_secs: u64::try_from(self.grid.width / 1000).unwrap_or(0),
            added: self.added,
            completed: self.completed,
            failed: self.failed,
            waiting: sum(self.waiting),
            in_progress: sum(self.in_progress),
        }
    }
}

/// Counts something present from `from` until `to` (none: still) at each bucket end `e`
/// with `from <= e < to`, as +1/−1 changes in `depth`.
fn span(depth: &mut [i64], g: Grid, from: i64, to: Option<i64>) {
    let a = g.first_end_at_or_after(from);
    let b = to.map_or(g.n, |t| g.first_end_at_or_after(t));
    if a < b {
        depth[a] += 1;
        depth[b] -= 1;
    }
}

/// The figures of the board at `now`: the archived history, the tasks on the queue (those
/// already archived are counted once), the workers by state, over `window`.
pub fn report(
    history: &History,
    queue: &[Task],
    workers: BTreeMap<String, usize>,
    now: Timestamp,
    window: Window,
) -> Report {
    let end = now.timestamp_millis();
    let grid = Grid::new(end, window);
    let from = grid.start;
    let mut buckets = Buckets::new(grid);
    let mut recent = Tally::default();
    // The queue's part of all the history; the archive's is in the totals.
    let mut live_part = Tally::default();
    let totals = history.totals();
    let mut counts = totals.counts;
    let mut first_added = totals.first_added;
    let live: Vec<TaskTimes> = queue
        .iter()
        .filter(|t| !history.is_archived(t.id))
        .map(TaskTimes::of)
        .collect();
    for t in &live {
        counts.add(t.status);
        live_part.task(t, i64::MIN);
        if let Some(a) = t.added {
            first_added = Some(first_added.map_or(a, |f| f.min(a)));
        }
    }
    // A task archived before the window finished before it: only the archive's tail since
    // the window's start can count in it.
    let since = history.archived_since(from);
    for t in history.tasks[since..].iter().chain(live.iter()) {
        recent.task(t, from);
        buckets.task(t);
    }
    for (answered, asked) in &history.answers[history.answered_since(from)..] {
        if *answered >= from {
            recent.response.push((answered - asked).max(0));
        }
    }
    let hours = |ms: i64| ms.max(0) as f64 / 3_600_000.0;
    let series = buckets.series();
    let done = &totals.tally;
    let ended = done.completed + live_part.completed + done.failed + live_part.failed;
    let rate = |n: u64| (ended > 0).then(|| n as f64 / ended as f64);
    let completed = done.completed + live_part.completed;
    // Over at least an hour: a young board's first minutes say little about an hour.
    let all_hours = first_added.map_or(0.0, |f| hours(end - f).max(1.0));
    let all_time = Figures {
        since: None,
        queue_latency: Durations::merged(&totals.latency, &mut live_part.latency),
        claim_to_complete: Durations::merged(&totals.work, &mut live_part.work),
        human_response: Durations::merged(&totals.response, &mut live_part.response),
        completed,
        failed: done.failed + live_part.failed,
        cancelled: done.cancelled + live_part.cancelled,
        retried: done.retried + live_part.retried,
        failure_rate: rate(done.failed + live_part.failed),
        retry_rate: rate(done.retried + live_part.retried),
        tasks_per_hour: (all_hours > 0.0).then(|| completed as f64 / all_hours),
    };
    Report {
        at: now,
        tasks: counts,
        workers,
        open_questions: history.open,
        recent: recent.figures(Some(series.start), hours(end - from)),
        all_time,
        series,
        claude: None,
    }
}

#[cfg(test)]
mod tests;
