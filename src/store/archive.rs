//! The archive: finished tasks moved off the queue, one JSON line each, append-only.
//! Each line carries running totals, so counts come from the last line alone.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::damage::Damages;
use super::{durable, jsonl};
use crate::error::Result;
use crate::task::{Task, TaskStatus};
use crate::time::{Timestamp, ts};

/// Running totals of the archive, as of a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Totals {
    /// Completed tasks archived so far.
    pub completed: usize,
    /// Cancelled tasks archived so far.
    pub cancelled: usize,
    /// The largest task id archived so far.
    pub max_id: u64,
}

impl Totals {
    /// The totals as counts by status.
    pub fn by_status(&self) -> BTreeMap<TaskStatus, usize> {
        let mut m = BTreeMap::new();
        if self.completed > 0 {
            m.insert(TaskStatus::Completed, self.completed);
        }
        if self.cancelled > 0 {
            m.insert(TaskStatus::Cancelled, self.cancelled);
        }
        m
    }
}

/// One line of the archive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArchiveLine {
    /// When the task was archived.
    #[serde(with = "ts")]
    pub archived_at: Timestamp,
    /// Totals including this line.
    pub totals: Totals,
    /// The task as it was when archived.
    pub task: Task,
}

/// The totals of the last line (zero for an empty archive).
pub fn totals(path: &Path, dmg: &mut Damages) -> Result<Totals> {
    let mut out = Totals::default();
    jsonl::each_back::<ArchiveLine>(path, dmg, |l| {
        out = l.totals;
        false
    })?;
    Ok(out)
}

/// Appends `tasks` to the archive durably. Tasks already at the archive's tail (left there by a
/// compaction that crashed before rewriting the queue) are not written twice.
pub fn append(path: &Path, tasks: &[Task], now: Timestamp) -> Result<usize> {
    append_after(path, tasks, now, false)
}

/// [`append`]; `tail_known`: the caller knows the archive's tail holds none of `tasks` (it is
/// as the caller's last committed move left it), so only its last line is read.
pub fn append_after(
    path: &Path,
    tasks: &[Task],
    now: Timestamp,
    tail_known: bool,
) -> Result<usize> {
    if tasks.is_empty() {
        return Ok(0);
    }
    let mut totals = None;
    let mut tail_ids = HashSet::new();
    let want = if tail_known { 1 } else { tasks.len() };
    let mut seen = 0;
    jsonl::each_back::<ArchiveLine>(path, &mut Damages::refuse(), |l| {
        if totals.is_none() {
            totals = Some(l.totals);
        }
        tail_ids.insert(l.task.id);
        seen += 1;
        seen < want
    })?;
    let mut totals = totals.unwrap_or_default();
    let mut buf = Vec::new();
    let mut n = 0;
    for t in tasks.iter().filter(|t| !tail_ids.contains(&t.id)) {
        match t.status {
            TaskStatus::Completed => totals.completed += 1,
            TaskStatus::Cancelled => totals.cancelled += 1,
            _ => {}
        }
        totals.max_id = totals.max_id.max(t.id);
        let line = ArchiveLine {
            archived_at: now,
            totals,
            task: t.clone(),
        };
        serde_json::to_writer(&mut buf, &line)
            .map_err(|e| crate::error::Error::Protocol(e.to_string()))?;
        buf.push(b'\n');
        n += 1;
    }
    if !buf.is_empty() {
        durable::append_lines(path, &buf, true)?;
    }
    Ok(n)
}

/// Ids of the last `n` lines of the archive.
pub fn tail_ids(path: &Path, n: usize, dmg: &mut Damages) -> Result<HashSet<u64>> {
    let mut ids = HashSet::new();
    if n == 0 {
        return Ok(ids);
    }
    let mut seen = 0;
    jsonl::each_back::<ArchiveLine>(path, dmg, |l| {
        ids.insert(l.task.id);
        seen += 1;
        seen < n
    })?;
    Ok(ids)
}

/// Finds archived tasks by id (the last line wins if an id appears twice).
pub fn find(path: &Path, ids: &HashSet<u64>, dmg: &mut Damages) -> Result<BTreeMap<u64, Task>> {
    let mut out = BTreeMap::new();
    if ids.is_empty() {
        return Ok(out);
    }
    jsonl::each::<ArchiveLine>(path, dmg, |l| {
        if ids.contains(&l.task.id) {
            out.insert(l.task.id, l.task);
        }
        true
    })?;
    Ok(out)
}

/// Every archived task, oldest archived first, each id once.
pub fn all(path: &Path, dmg: &mut Damages) -> Result<Vec<Task>> {
    let lines = jsonl::read_all::<ArchiveLine>(path, dmg)?;
    let mut seen = HashSet::new();
    let mut out: Vec<Task> = Vec::with_capacity(lines.len());
    for l in lines.into_iter().rev() {
        if seen.insert(l.task.id) {
            out.push(l.task);
        }
    }
    out.reverse();
    Ok(out)
}
