//! Adding tasks and moving them through their lives: complete, fail, release, cancel, retry,
//! taking claims back (expired leases, stale holders), and which finished tasks may move to
//! the archive.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::Value;

use super::{State, refresh_current_task};
use crate::error::{Error, Result};
use crate::message::{Message, MessageKind};
use crate::op::{PlanTask, Reply, TaskView};
use crate::settings::Settings;
use crate::task::{Task, TaskStatus};
use crate::time::{Timestamp, add_secs, epoch_ms, format_duration, secs_between};
use crate::validate;

/// Longest lease a task may ask for (30 days).
const MAX_LEASE_SECS: u64 = 30 * 86_400;
/// Most retries a task may ask for.
const MAX_RETRIES: u32 = 1000;

/// Adds the tasks of a plan, all or nothing.
pub(crate) fn add(state: &mut State, plan: Vec<PlanTask>, now: Timestamp) -> Result<Reply> {
    if plan.is_empty() {
        return Err(Error::Invalid("the plan has no tasks".into()));
    }
    if plan.len() > validate::MAX_PLAN {
        return Err(Error::Invalid(format!(
            "the plan has {} tasks; the limit is {}",
            plan.len(),
            validate::MAX_PLAN
        )));
    }
    let mut keys: HashMap<&str, usize> = HashMap::new();
    for (i, entry) in plan.iter().enumerate() {
        if let Some(k) = entry.key.as_deref() {
            if k.is_empty() {
                return Err(Error::Invalid(format!(
                    "plan entry {} has an empty key",
                    i + 1
                )));
            }
            if keys.insert(k, i).is_some() {
                return Err(Error::Invalid(format!("plan key {k:?} is used twice")));
            }
        }
    }
    let label = |i: usize| -> String {
        match plan[i].key.as_deref() {
            Some(k) => format!("plan entry {k:?}"),
            None if plan.len() == 1 => "the task".into(),
            None => format!("plan entry {}", i + 1),
        }
    };
    // Validate everything before changing anything.
    let mut local_deps: Vec<Vec<usize>> = Vec::with_capacity(plan.len());
    for (i, entry) in plan.iter().enumerate() {
        check_new_task(state, &entry.task).map_err(|e| match e {
            Error::Invalid(m) if plan.len() > 1 => Error::Invalid(format!("{}: {m}", label(i))),
            other => other,
        })?;
        let mut deps = Vec::new();
        for k in &entry.after_keys {
            match keys.get(k.as_str()) {
                Some(&j) if j == i => {
                    return Err(Error::Invalid(format!("{} depends on itself", label(i))));
                }
                Some(&j) => deps.push(j),
                None => {
                    return Err(Error::Invalid(format!(
                        "{} depends on key {k:?}, which is not in the plan",
                        label(i)
                    )));
                }
            }
        }
        local_deps.push(deps);
    }
    if let Some(i) = find_cycle(&local_deps) {
        return Err(Error::Invalid(format!(
            "{} is part of a dependency cycle; no task was added",
            label(i)
        )));
    }

    let first = state.min_next_id.max(epoch_ms(&now));
    let ids: Vec<u64> = (0..plan.len() as u64).map(|n| first + n).collect();
    let mut added = Vec::with_capacity(plan.len());
    for (i, entry) in plan.into_iter().enumerate() {
        let nt = entry.task;
        let id = ids[i];
        let mut t = Task::new(id, nt.description.trim(), now);
        if let Some(text) = nt.instructions {
            let path = Task::instruction_path(id);
            state.files.push((path.clone(), text));
            t.instruction_file = Some(path);
        } else {
            t.instruction_file = nt.instruction_file;
        }
        t.context_files = nt.context_files;
        t.assigned_to = nt.assign;
        t.priority = nt.priority;
        t.requires = nt.requires;
        t.depends_on = nt.after;
        t.depends_on.extend(local_deps[i].iter().map(|&j| ids[j]));
        t.max_retries = nt.max_retries;
        t.lease_secs = nt.lease_secs;
        t.strict = nt.strict;
        t.fallback_after_secs = nt.fallback_after_secs;
        t.metadata = nt.metadata;
        added.push(t);
    }
    state.min_next_id = ids[ids.len() - 1] + 1;
    state.tasks.extend(added.iter().cloned());
    for t in &added {
        state.touch(t.id);
    }
    Ok(Reply::Added { tasks: added })
}

/// Checks one new task against the limits and the board.
fn check_new_task(state: &State, nt: &crate::op::NewTask) -> Result<()> {
    if nt.description.trim().is_empty() {
        return Err(Error::Invalid(
            "a task needs a description: one line saying what to do".into(),
        ));
    }
    validate::size(
        "the description",
        &nt.description,
        validate::MAX_DESCRIPTION,
    )?;
    if nt.description.trim().chars().any(char::is_control) {
        return Err(Error::Invalid(
            "the description must be one line (no newlines or control characters); \
             put details in the instructions"
                .into(),
        ));
    }
    if nt.instructions.is_some() && nt.instruction_file.is_some() {
        return Err(Error::Invalid(
            "give instruction text or an instruction file, not both".into(),
        ));
    }
    if let Some(text) = &nt.instructions {
        validate::size("the instructions", text, validate::MAX_INSTRUCTIONS)?;
    }
    if let Some(p) = &nt.instruction_file {
        validate::board_path("instruction file", p)?;
    }
    validate::list_len("context files", &nt.context_files)?;
    for p in &nt.context_files {
        validate::board_path("context file", p)?;
    }
    if let Some(w) = &nt.assign {
        validate::name("assigned worker", w)?;
    }
    validate::list_len("required capabilities", &nt.requires)?;
    for c in &nt.requires {
        validate::name("capability", c)?;
    }
    validate::list_len("dependencies", &nt.after)?;
    for &dep in &nt.after {
        if state.position(dep).is_none() {
            match state.archived.get(&dep) {
                Some(TaskStatus::Completed) => {}
                Some(st) => {
                    return Err(Error::Invalid(format!(
                        "dependency {dep} is {st} and archived, so this task could never run"
                    )));
                }
                None => return Err(Error::UnknownTask(dep)),
            }
        }
    }
    if let Some(n) = nt.max_retries
        && n > MAX_RETRIES
    {
        return Err(Error::Invalid(format!(
            "max retries {n} is too many; the limit is {MAX_RETRIES}"
        )));
    }
    if let Some(l) = nt.lease_secs
        && (l == 0 || l > MAX_LEASE_SECS)
    {
        return Err(Error::Invalid(format!(
            "lease {l}s is out of range; use 1s to 30d"
        )));
    }
    let specialist = nt.assign.as_deref().is_some_and(|a| !a.is_empty()) || !nt.requires.is_empty();
    if (nt.strict || nt.fallback_after_secs.is_some()) && !specialist {
        return Err(Error::Invalid(
            "strict and fallback-after concern a task meant for a specialist; give --assign \
             or --requires too"
                .into(),
        ));
    }
    if nt.strict && nt.fallback_after_secs.is_some() {
        return Err(Error::Invalid(
            "a strict task never falls back to other workers; give strict or fallback-after, \
             not both"
                .into(),
        ));
    }
    if let Some(f) = nt.fallback_after_secs
        && f > MAX_LEASE_SECS
    {
        return Err(Error::Invalid(format!(
            "fallback-after {f}s is out of range; use 0s to 30d"
        )));
    }
    validate::json_size(
        "the metadata",
        &Value::Object(nt.metadata.clone()),
        validate::MAX_RESULT,
    )?;
    Ok(())
}

/// Returns an entry on a cycle of the local dependency graph, if there is one.
fn find_cycle(deps: &[Vec<usize>]) -> Option<usize> {
    // Kahn's algorithm: whatever cannot be ordered is on (or behind) a cycle.
    let n = deps.len();
    let mut indegree = vec![0usize; n];
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, ds) in deps.iter().enumerate() {
        for &d in ds {
            indegree[i] += 1;
            dependents[d].push(i);
        }
    }
    let mut ready: Vec<usize> = (0..n).filter(|&i| indegree[i] == 0).collect();
    let mut done = 0;
    while let Some(i) = ready.pop() {
        done += 1;
        for &j in &dependents[i] {
            indegree[j] -= 1;
            if indegree[j] == 0 {
                ready.push(j);
            }
        }
    }
    if done == n {
        None
    } else {
        (0..n).find(|&i| indegree[i] > 0)
    }
}

/// Checks that `worker` holds the current claim on task at `i`; otherwise explains why not.
fn check_claimant(state: &State, i: usize, worker: &str, attempt: Option<u32>) -> Result<()> {
    let t = &state.tasks[i];
    let id = t.id;
    let taken_back = taken_back_why(t, worker, &state.settings);
    if t.status == TaskStatus::InProgress && t.claimed_by.as_deref() == Some(worker) {
        if let Some(a) = attempt
            && a != t.attempts
        {
            return Err(Error::Conflict(format!(
                "your claim on task {id} (attempt {a}) was taken back{}; the task is now on \
                 attempt {}. Claim again with `vine claim --worker {worker}`",
                taken_back.map(|w| format!(" {w}")).unwrap_or_default(),
                t.attempts
            )));
        }
        return Ok(());
    }
    let why = match (t.status, t.claimed_by.as_deref(), taken_back) {
        (TaskStatus::InProgress, Some(other), _) => {
            format!("task {id} is claimed by {other}, not {worker}")
        }
        (TaskStatus::Pending | TaskStatus::Failed, _, Some(why)) => {
            format!(
                "your claim on task {id} was taken back {why}; it is {} now. \
                 Claim again with `vine claim --worker {worker}`",
                t.status
            )
        }
        (st, _, _) => format!("task {id} is {st}, not claimed by {worker}"),
    };
    Err(Error::Conflict(why))
}

/// The queue index of task `id` if `worker` holds its claim. On a conflict, what the worker
/// sent (`(what, text)`) is kept in the log, also when the task has been archived since.
fn claimed_index(
    state: &mut State,
    id: u64,
    worker: &str,
    attempt: Option<u32>,
    sent: Option<(&str, String)>,
    now: Timestamp,
) -> Result<usize> {
    let checked = state
        .task_index(id)
        .and_then(|i| check_claimant(state, i, worker, attempt).map(|()| i));
    if let (Err(Error::Conflict(why)), Some((what, text))) = (&checked, sent) {
        keep_orphan(state, id, worker, what, text, why, now);
    }
    checked
}

/// Keeps a result or error that arrived for a claim the worker no longer holds.
fn keep_orphan(
    state: &mut State,
    task: u64,
    worker: &str,
    what: &str,
    body: String,
    why: &str,
    now: Timestamp,
) {
    let mut m = Message::new(MessageKind::Result, worker, &body, now);
    m.task_id = Some(task);
    m.extra.insert(
        "note".into(),
        Value::String(format!("{what} kept from a refused write: {why}")),
    );
    state.log(m);
}

/// Completes a task claimed by `worker`.
pub(crate) fn complete(
    state: &mut State,
    id: u64,
    worker: &str,
    attempt: Option<u32>,
    result: Option<Value>,
    now: Timestamp,
) -> Result<Reply> {
    validate::name("worker id", worker)?;
    if let Some(r) = &result {
        validate::json_size("the result", r, validate::MAX_RESULT)?;
    }
    let body = result.as_ref().map(|r| match r {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    });
    let i = claimed_index(state, id, worker, attempt, body.map(|b| ("result", b)), now)?;
    super::workers::end_wait(state, worker);
    let t = &mut state.tasks[i];
    t.status = TaskStatus::Completed;
    t.completed_by = Some(worker.to_string());
    t.completed_at = Some(now);
    t.result = result;
    t.lease_expires_at = None;
    let view = TaskView::of(t.clone());
    state.touch(state.tasks[i].id);
    if let Some(w) = state.workers.get_mut(worker) {
        // Recorded in the queue too (completed_by/at): a soft change.
        w.last_task_completed = Some(now);
        w.last_heartbeat = Some(now);
        state.dirty.workers_soft = true;
    }
    refresh_current_task(state, worker);
    Ok(Reply::Task { task: view })
}

/// Reports a failed attempt of a task claimed by `worker`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn fail(
    state: &mut State,
    id: u64,
    worker: &str,
    attempt: Option<u32>,
    error: &str,
    no_retry: bool,
    now: Timestamp,
) -> Result<Reply> {
    validate::name("worker id", worker)?;
    if error.trim().is_empty() {
        return Err(Error::Invalid("say what went wrong with --error".into()));
    }
    validate::size("the error", error, validate::MAX_MESSAGE)?;
    let sent = Some(("error", error.to_string()));
    let i = claimed_index(state, id, worker, attempt, sent, now)?;
    super::workers::end_wait(state, worker);
    let settings = state.settings.clone();
    end_attempt(
        &mut state.tasks[i],
        error.to_string(),
        if no_retry {
            Retry::Never
        } else {
            Retry::AfterBackoff
        },
        &settings,
        now,
    );
    let view = TaskView::of(state.tasks[i].clone());
    state.touch(state.tasks[i].id);
    if let Some(w) = state.workers.get_mut(worker) {
        w.last_heartbeat = Some(now);
        state.dirty.workers = true;
    }
    refresh_current_task(state, worker);
    Ok(Reply::Task { task: view })
}

/// The retry delay after `attempts` attempts: base, doubling, capped.
pub fn backoff_secs(settings: &Settings, attempts: u32) -> u64 {
    let shift = attempts.saturating_sub(1).min(40);
    settings
        .retry_backoff_secs
        .saturating_mul(1u64 << shift)
        .min(settings.retry_backoff_max_secs)
}

/// What happens to a task after an attempt that did not complete it (while retries remain).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// Back to pending after the retry delay (a failed attempt).
    AfterBackoff,
    /// Back to pending, claimable at once (taken back from a dead worker: not the task's fault).
    AtOnce,
    /// Failed for good (`--no-retry`).
    Never,
}

/// Ends the current attempt of a claimed task: back to pending (after a delay, or at once),
/// or failed when out of retries.
fn end_attempt(t: &mut Task, error: String, retry: Retry, settings: &Settings, now: Timestamp) {
    let max = t.max_retries.unwrap_or(settings.max_retries);
    t.last_error = Some(error);
    t.claimed_by = None;
    t.claimed_at = None;
    t.lease_expires_at = None;
    if retry != Retry::Never && t.attempts <= max {
        t.status = TaskStatus::Pending;
        t.not_before = match retry {
            Retry::AfterBackoff => Some(add_secs(now, backoff_secs(settings, t.attempts))),
            Retry::AtOnce | Retry::Never => None,
        };
    } else {
        t.status = TaskStatus::Failed;
        t.not_before = None;
        t.ended_at = Some(now);
    }
}

/// Gives a claimed task back without counting the attempt.
pub(crate) fn release(
    state: &mut State,
    id: u64,
    worker: &str,
    attempt: Option<u32>,
    now: Timestamp,
) -> Result<Reply> {
    validate::name("worker id", worker)?;
    let i = state.task_index(id)?;
    check_claimant(state, i, worker, attempt)?;
    super::workers::end_wait(state, worker);
    release_at(state, i);
    let view = TaskView::of(state.tasks[i].clone());
    if let Some(w) = state.workers.get_mut(worker) {
        w.last_heartbeat = Some(now);
        state.dirty.workers = true;
    }
    refresh_current_task(state, worker);
    Ok(Reply::Task { task: view })
}

/// Puts the claimed task at `i` back to pending, undoing its attempt count.
pub(crate) fn release_at(state: &mut State, i: usize) {
    let t = &mut state.tasks[i];
    t.status = TaskStatus::Pending;
    t.claimed_by = None;
    t.claimed_at = None;
    t.lease_expires_at = None;
    t.attempts = t.attempts.saturating_sub(1);
    let id = t.id;
    state.touch(id);
}

/// Cancels a task that has not completed.
pub(crate) fn cancel(
    state: &mut State,
    id: u64,
    reason: Option<String>,
    now: Timestamp,
) -> Result<Reply> {
    if let Some(r) = &reason {
        validate::size("the reason", r, validate::MAX_MESSAGE)?;
    }
    let i = state.task_index(id)?;
    let st = state.tasks[i].status;
    if matches!(st, TaskStatus::Completed | TaskStatus::Cancelled) {
        return Err(Error::Conflict(format!("task {id} is already {st}")));
    }
    let claimant = state.tasks[i].claimed_by.take();
    let t = &mut state.tasks[i];
    t.status = TaskStatus::Cancelled;
    t.ended_at = Some(now);
    t.lease_expires_at = None;
    t.not_before = None;
    t.claimed_at = None;
    if let Some(r) = reason {
        t.last_error = Some(format!("cancelled: {r}"));
    }
    let view = TaskView::of(t.clone());
    state.touch(state.tasks[i].id);
    if let Some(w) = claimant {
        state.dirty.workers = true;
        refresh_current_task(state, &w);
    }
    Ok(Reply::Task { task: view })
}

/// Puts a failed task back to pending with its attempts reset.
pub(crate) fn retry(state: &mut State, id: u64) -> Result<Reply> {
    let i = state.task_index(id)?;
    let t = &mut state.tasks[i];
    if t.status != TaskStatus::Failed {
        return Err(Error::Conflict(format!(
            "task {id} is {}; only failed tasks can be retried",
            t.status
        )));
    }
    t.status = TaskStatus::Pending;
    t.attempts = 0;
    t.not_before = None;
    t.ended_at = None;
    let view = TaskView::of(t.clone());
    state.touch(state.tasks[i].id);
    Ok(Reply::Task { task: view })
}

/// When the claim on `t` lapses: its lease, or (for claims the original plan made) claim time + lease.
fn lease_end(t: &Task, settings: &Settings) -> Option<Timestamp> {
    t.lease_expires_at.or_else(|| {
        t.claimed_at
            .map(|c| add_secs(c, t.lease_secs.unwrap_or(settings.lease_secs)))
    })
}

/// Why a claim is taken back from its holder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TakeBack {
    /// The lease ran out without a heartbeat extending it.
    Lease,
    /// The holder showed no sign of life for longer than the stale limit (this many seconds).
    Stale(u64),
}

/// Whether the claim on `t` must be taken back at `now`, and why.
///
/// Never while its holder waits on an open question (`vine ask --wait`). Otherwise when the
/// lease has expired, or when the holder is stale. A holder without a worker entry (boards of
/// the original plan) or without any recorded time is judged by its lease only.
fn take_back_cause(t: &Task, state: &State, now: Timestamp) -> Option<TakeBack> {
    if t.status != TaskStatus::InProgress {
        return None;
    }
    let holder = t.claimed_by.as_deref().and_then(|w| state.workers.get(w));
    if holder.is_some_and(|w| w.waits_on(now).is_some()) {
        return None;
    }
    if lease_end(t, &state.settings).is_some_and(|end| end <= now) {
        return Some(TakeBack::Lease);
    }
    let seen = holder.and_then(|w| w.last_seen())?;
    let silent = secs_between(seen, now);
    (silent > state.settings.stale_after_secs).then_some(TakeBack::Stale(silent))
}

/// The `last_error` of a claim taken back from `who`.
fn take_back_error(cause: TakeBack, who: &str, settings: &Settings) -> String {
    match cause {
        TakeBack::Lease => lease_error(who),
        TakeBack::Stale(silent) => format!(
            "{}{} (stale limit {})",
            stale_error_prefix(who),
            format_duration(silent),
            format_duration(settings.stale_after_secs)
        ),
    }
}

fn lease_error(who: &str) -> String {
    format!("lease expired while claimed by {who}")
}

fn stale_error_prefix(who: &str) -> String {
    format!("taken back from {who}, who showed no sign of life for ")
}

/// Why `worker`'s claim on `t` was taken back ("when its lease expired", ...), read from the
/// task's last error; None if it was not taken back from `worker`.
fn taken_back_why(t: &Task, worker: &str, settings: &Settings) -> Option<String> {
    let e = t.last_error.as_deref()?;
    if e == lease_error(worker) {
        Some("when its lease expired".into())
    } else if e.starts_with(&stale_error_prefix(worker)) {
        Some(format!(
            "because {worker} showed no sign of life for longer than the stale limit ({}); \
             a worker must heartbeat at least that often (`vine heartbeat`)",
            format_duration(settings.stale_after_secs)
        ))
    } else {
        None
    }
}

/// Takes back every claim whose lease has expired or whose holder is stale (see
/// [`take_back_cause`]) and returns their ids.
///
/// Each such task loses the attempt (it counts towards max retries, so a task that kills every
/// worker still ends failed) but is claimable again at once: a dead worker is not the task's
/// failure. Applied lazily by every write, by `requeue-stale`, and in memory by reads.
pub fn requeue_expired(state: &mut State, now: Timestamp) -> Vec<u64> {
    let causes: Vec<(usize, TakeBack)> = state
        .tasks
        .iter()
        .enumerate()
        .filter_map(|(i, t)| take_back_cause(t, state, now).map(|c| (i, c)))
        .collect();
    if causes.is_empty() {
        return Vec::new();
    }
    let settings = state.settings.clone();
    let mut ids = Vec::with_capacity(causes.len());
    let mut holders = Vec::with_capacity(causes.len());
    for (i, cause) in causes {
        let t = &mut state.tasks[i];
        let who = t.claimed_by.clone().unwrap_or_else(|| "?".into());
        let error = take_back_error(cause, &who, &settings);
        end_attempt(t, error, Retry::AtOnce, &settings, now);
        ids.push(t.id);
        holders.push(who);
    }
    for &id in &ids {
        state.touched.insert(id);
    }
    state.dirty.tasks = true;
    // The claims leave the queue's record: persist the merged worker facts.
    state.dirty.workers = true;
    for w in holders {
        refresh_current_task(state, &w);
    }
    ids
}

/// Splits the queue's finished tasks into those that may move to the archive and those that stay.
///
/// Completed and cancelled tasks move unless an unfinished task depends on them; failed tasks
/// stay on the queue (the dead-letter list) until they are retried or cancelled.
pub fn archivable(tasks: &[Task]) -> (Vec<usize>, usize) {
    let needed: HashSet<u64> = tasks
        .iter()
        .filter(|t| !t.status.is_terminal())
        .flat_map(|t| t.depends_on.iter().copied())
        .collect();
    let mut take = Vec::new();
    let mut kept = 0;
    for (i, t) in tasks.iter().enumerate() {
        if matches!(t.status, TaskStatus::Completed | TaskStatus::Cancelled) {
            if needed.contains(&t.id) {
                kept += 1;
            } else {
                take.push(i);
            }
        }
    }
    (take, kept)
}

/// Counts queue tasks per status (used by status views).
pub(crate) fn counts(tasks: &[Task]) -> BTreeMap<TaskStatus, usize> {
    TaskStatus::count(tasks)
}
