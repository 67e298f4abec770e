//! Idempotent retries. A client that lost a reply sends the same op again with the same
//! request key; the board answers with what the first application did instead of applying it
//! twice: a retried add creates one task, a retried claim returns the same task.
//!
//! The key is kept where the op left its mark, committed with it: on the task an op changed
//! (`Task::request_key`, the last op's; an add's also in `Task::added_key`, which later ops
//! leave alone, so a retried add is answered after a worker claimed its task) or on the log
//! entry it wrote (`Message::key`).

use super::{Rule, State};
use crate::error::{Error, Result};
use crate::reply::{ClaimedTask, Reply, TaskView};
use crate::task::{Task, TaskStatus};
use crate::time::Timestamp;

/// Longest request key, in bytes.
pub const MAX_KEY: usize = 128;

/// Applies one op of a group commit as if it ran alone: keyed (`apply_keyed`); the log
/// entries it wrote join `state.log` (so a later op of the batch, or its retry, sees them);
/// and, when `undo` (the batch holds more ops), a refused op leaves the state as it was but for
/// the log entries it must keep (a late result). Every store's batch uses it.
///
/// The undo keeps only what the op changes (see `undo.rs`), not a copy of the state, so it
/// costs about as much as the op itself.
pub fn apply_in_batch(
    state: &mut State,
    op: crate::op::Op,
    key: Option<&str>,
    now: Timestamp,
    undo: bool,
) -> Result<Reply> {
    // Debug builds check the undo against a copy of the whole state.
    #[cfg(debug_assertions)]
    let copy = undo.then(|| state.clone());
    if undo {
        state.begin_undo();
    }
    let logged = state.outbox.len();
    let applied = tracing::trace_span!("apply").in_scope(|| apply_keyed(state, op, key, now));
    match applied {
        Ok(reply) => {
            state.keep_op();
            if !state.log.is_empty() || key.is_some() {
                let new: Vec<_> = state.outbox[logged..].to_vec();
                state.log.extend(new);
            }
            Ok(reply)
        }
        Err(e) => {
            state.undo();
            state.check_index();
            #[cfg(debug_assertions)]
            if let Some(copy) = copy {
                super::undo::assert_undone(&copy, state);
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
    state.sync_index();
    let Some(key) = key else {
        let reply = op.apply(state, now);
        state.check_index();
        return reply;
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
    state.check_index();
    Ok(reply)
}

/// The reply of an add (or add-plan) applied with `key`: the tasks it added.
pub(crate) fn added(state: &State, key: &str) -> Option<Reply> {
    let tasks: Vec<_> = state
        .with_key(key)
        .into_iter()
        .map(|i| state.tasks[i].clone())
        .collect();
    (!tasks.is_empty()).then_some(Reply::Added { tasks })
}

/// The reply of a claim by `worker` applied with `key`: the task it still holds.
pub(crate) fn claimed(state: &State, worker: &str, key: &str) -> Option<Reply> {
    state
        .with_key(key)
        .into_iter()
        .map(|i| &state.tasks[i])
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
    let keyed = |t: &&Task| t.request_key.as_deref() == Some(key);
    let on_queue = if state.is_indexed() {
        state.position(id).map(|i| &state.tasks[i]).filter(keyed)
    } else {
        state.tasks.iter().filter(keyed).find(|t| t.id == id)
    };
    let archived = state.archived_tasks.get(&id).filter(keyed);
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
    let mut added = false;
    if let Some(c) = reply.claimed_task_mut() {
        c.task.request_key.clone_from(&key);
        ids.push(c.task.id);
    }
    match reply {
        Reply::Added { tasks } => {
            added = true;
            for t in tasks {
                t.request_key.clone_from(&key);
                t.added_key.clone_from(&key);
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
    for i in state.positions_of(&ids) {
        state.change(i, |t, _| {
            t.request_key.clone_from(&key);
            if added {
                t.added_key.clone_from(&key);
            }
        });
    }
}
