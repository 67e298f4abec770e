//! Idempotent retries. A client that lost a reply sends the same op again with the same
//! request key; the board answers with what the first application did instead of applying it
//! twice: a retried add creates one task, a retried claim returns the same task.
//!
//! The key is kept where the op left its mark, committed with it: on the task an op changed
//! (`Task::request_key`) or on the log entry it wrote (`Message::key`).

use super::{Rule, State};
use crate::error::{Error, Result};
use crate::reply::{ClaimedTask, Reply, TaskView};
use crate::task::{Task, TaskStatus};
use crate::time::Timestamp;

/// Longest request key, in bytes.
pub const MAX_KEY: usize = 128;

/// Applies one op of a group commit as if it ran alone: keyed ([`apply_keyed`]); the log
/// entries it wrote join `state.log` (so a later op of the batch, or its retry, sees them);
/// and, when `undo` (the batch holds more ops), a refused op leaves the state as it was but for
/// the log entries it must keep (a late result). Every store's batch uses it.
pub fn apply_in_batch(
    state: &mut State,
    op: crate::op::Op,
    key: Option<&str>,
    now: Timestamp,
    undo: bool,
) -> Result<Reply> {
    let snapshot = undo.then(|| state.clone());
    let logged = state.outbox.len();
    let applied = tracing::trace_span!("apply").in_scope(|| apply_keyed(state, op, key, now));
    match applied {
        Ok(reply) => {
            if !state.log.is_empty() || key.is_some() {
                let new: Vec<_> = state.outbox[logged..].to_vec();
                state.log.extend(new);
            }
            Ok(reply)
        }
        Err(e) => {
            if let Some(mut before) = snapshot {
                before.outbox = std::mem::take(&mut state.outbox);
                before.next_seq = state.next_seq;
                *state = before;
            }
            Err(e)
        }
    }
}

/// Applies `op` once per request `key`: a repeat of an op already applied is answered from
/// the board ([`Rule::replay`]). Without a key this is [`super::apply`].
pub(crate) fn apply_keyed(
    state: &mut State,
    op: impl Rule,
    key: Option<&str>,
    now: Timestamp,
) -> Result<Reply> {
    let Some(key) = key else {
        return op.apply(state, now);
    };
    if key.is_empty() || key.len() > MAX_KEY {
        return Err(Error::Invalid(format!(
            "a request key must be 1 to {MAX_KEY} bytes"
        )));
    }
    if let Some(reply) = op.replay(state, key) {
        return Ok(reply);
    }
    let mut reply = op.apply(state, now)?;
    stamp(state, &mut reply, key);
    Ok(reply)
}

fn keyed<'a>(key: &'a str) -> impl Fn(&&Task) -> bool + 'a {
    move |t| t.request_key.as_deref() == Some(key)
}

/// The reply of an add (or add-plan) applied with `key`: the tasks it added.
pub(crate) fn added(state: &State, key: &str) -> Option<Reply> {
    let tasks: Vec<_> = state.tasks.iter().filter(keyed(key)).cloned().collect();
    (!tasks.is_empty()).then_some(Reply::Added { tasks })
}

/// The reply of a claim by `worker` applied with `key`: the task it still holds.
pub(crate) fn claimed(state: &State, worker: &str, key: &str) -> Option<Reply> {
    state
        .tasks
        .iter()
        .filter(keyed(key))
        .find(|t| t.status == TaskStatus::InProgress && t.claimed_by.as_deref() == Some(worker))
        .map(|t| Reply::Claimed {
            claim: Some(ClaimedTask {
                task: t.clone(),
                instructions: None,
                instructions_error: None,
            }),
            reason: None,
        })
}

/// The reply of an op on task `id` applied with `key`: the task, on the queue or archived.
pub(crate) fn task(state: &State, id: u64, key: &str) -> Option<Reply> {
    let on_queue = state.tasks.iter().filter(keyed(key)).find(|t| t.id == id);
    let archived = state.archived_tasks.get(&id).filter(keyed(key));
    on_queue
        .map(|t| (t, false))
        .or(archived.map(|t| (t, true)))
        .map(|(t, archived)| Reply::Task {
            task: TaskView {
                archived,
                ..TaskView::of(t.clone())
            },
        })
}

/// The reply of an op that wrote a log entry with `key`: the entry.
pub(crate) fn message(state: &State, key: &str) -> Option<Reply> {
    state
        .log
        .iter()
        .rev()
        .find(|m| m.key.as_deref() == Some(key))
        .map(|m| Reply::Message { message: m.clone() })
}

/// Records `key` where the op's effect was committed, and in the reply, so that the first
/// answer and a replayed one are the same.
fn stamp(state: &mut State, reply: &mut Reply, key: &str) {
    let key = Some(key.to_string());
    let mut ids = Vec::new();
    if let Some(c) = reply.claimed_task_mut() {
        c.task.request_key.clone_from(&key);
        ids.push(c.task.id);
    }
    match reply {
        Reply::Added { tasks } => {
            for t in tasks {
                t.request_key.clone_from(&key);
                ids.push(t.id);
            }
        }
        Reply::Task { task } => {
            task.task.request_key.clone_from(&key);
            ids.push(task.task.id);
        }
        Reply::Session { session } => {
            if let Some(r) = session.runs.last_mut() {
                r.request_key.clone_from(&key);
            }
            if let Some(r) = state
                .sessions
                .iter_mut()
                .find(|s| s.id == session.id)
                .and_then(|s| s.runs.last_mut())
            {
                r.request_key.clone_from(&key);
            }
        }
        Reply::Message { message } => {
            message.key.clone_from(&key);
            if let Some(m) = state.outbox.last_mut() {
                m.key.clone_from(&key);
            }
        }
        _ => {}
    }
    for t in state.tasks.iter_mut().filter(|t| ids.contains(&t.id)) {
        t.request_key.clone_from(&key);
        state.dirty.tasks = true;
        state.touched.insert(t.id);
    }
}
