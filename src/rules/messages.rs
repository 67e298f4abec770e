//! Progress, messages, questions and answers.

use serde_json::{Map, Value};

use super::State;
use crate::error::{Error, Result};
use crate::message::{Message, MessageKind};
use crate::op::Reply;
use crate::time::{Timestamp, add_secs};
use crate::validate;

/// Changes the progress record; absent fields keep their values, metadata keys are merged.
pub(crate) fn set_progress(
    state: &mut State,
    current_step: Option<Value>,
    total_steps: Option<Value>,
    status: Option<String>,
    metadata: Map<String, Value>,
    now: Timestamp,
) -> Result<Reply> {
    if let Some(s) = &status {
        validate::size("the progress status", s, validate::MAX_MESSAGE)?;
    }
    validate::json_size(
        "the progress metadata",
        &Value::Object(metadata.clone()),
        validate::MAX_RESULT,
    )?;
    let p = &mut state.progress;
    if let Some(v) = current_step {
        p.current_step = v;
    }
    if let Some(v) = total_steps {
        p.total_steps = v;
    }
    if status.is_some() {
        p.status = status;
    }
    p.metadata.extend(metadata);
    p.last_updated = Some(now);
    state.dirty.progress = true;
    Ok(Reply::Progress {
        progress: state.progress.clone(),
    })
}

/// Longest wait for an answer a question may announce (30 days).
const MAX_WAIT_SECS: u64 = 30 * 86_400;

/// Appends a message or question to the log. A question with `wait_secs` from a registered
/// worker makes it wait (see [`super::workers::start_wait`]).
pub(crate) fn send(
    state: &mut State,
    kind: MessageKind,
    agent: &str,
    text: &str,
    task: Option<u64>,
    wait_secs: Option<u64>,
    now: Timestamp,
) -> Result<Reply> {
    validate::name("agent name", agent)?;
    if text.trim().is_empty() {
        return Err(Error::Invalid(format!("the {} is empty", kind.as_str())));
    }
    validate::size(
        &format!("the {}", kind.as_str()),
        text,
        validate::MAX_MESSAGE,
    )?;
    if let Some(id) = task
        && state.position(id).is_none()
        && !state.archived.contains_key(&id)
    {
        return Err(Error::UnknownTask(id));
    }
    if let Some(w) = wait_secs
        && w > MAX_WAIT_SECS
    {
        return Err(Error::Invalid(format!(
            "a wait of {w}s is too long; the limit is 30d"
        )));
    }
    let mut m = Message::new(kind, agent, text, now);
    m.task_id = task;
    let m = state.log(m);
    if let (Some(w), Some(seq)) = (wait_secs, m.seq) {
        super::workers::start_wait(state, agent, seq, add_secs(now, w), now);
    }
    Ok(Reply::Message { message: m })
}

/// Answers question `question` (needs the log loaded into the state).
pub(crate) fn answer(
    state: &mut State,
    agent: &str,
    question: u64,
    text: &str,
    now: Timestamp,
) -> Result<Reply> {
    validate::name("agent name", agent)?;
    if text.trim().is_empty() {
        return Err(Error::Invalid("the answer is empty".into()));
    }
    validate::size("the answer", text, validate::MAX_MESSAGE)?;
    let Some(q) = state.log.iter().find(|m| m.seq == Some(question)) else {
        return Err(Error::Invalid(format!(
            "there is no message number {question}; list open questions with `vine questions`"
        )));
    };
    if q.kind != MessageKind::Question {
        return Err(Error::Invalid(format!(
            "message {question} is not a question (it is a {} entry); list open questions with `vine questions`",
            q.kind.as_str()
        )));
    }
    let task = q.task_id;
    let mut m = Message::new(MessageKind::Answer, agent, text, now);
    m.reply_to = Some(question);
    m.task_id = task;
    let m = state.log(m);
    super::workers::answered(state, question, now);
    Ok(Reply::Message { message: m })
}
