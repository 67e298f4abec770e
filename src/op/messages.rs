//! The progress record and the message log: set-progress, send, ask (a question; with a wait,
//! the asking worker keeps its tasks until the answer), answer (which ends the waits).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::message::{Message, MessageKind};
use crate::reply::Reply;
use crate::rules::waits::{answered, start_wait};
use crate::rules::{LogNeed, Needs, Rule, State, replay, requeue_expired};
use crate::time::{Timestamp, add_secs};
use crate::validate;

/// Change the progress record (absent fields stay as they are).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetProgress {
    /// New current step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_step: Option<Value>,
    /// New total.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_steps: Option<Value>,
    /// New status text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Keys to merge into the metadata.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub metadata: Map<String, Value>,
}

/// Append a message to the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Send {
    /// Who sends it.
    pub agent: String,
    /// The text.
    pub message: String,
    /// The task it is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<u64>,
}

/// Ask a question (a log entry of kind `question`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ask {
    /// Who asks.
    pub agent: String,
    /// The question.
    pub question: String,
    /// The task it is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<u64>,
    /// The asking worker waits for the answer for at most this many seconds: until the
    /// answer (or this time) its tasks are not taken back, and it shows as `waiting`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_secs: Option<u64>,
}

/// Answer a question.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    /// Who answers.
    pub agent: String,
    /// The question's sequence number.
    pub question: u64,
    /// The answer.
    pub answer: String,
}

impl Rule for SetProgress {
    fn needs(&self) -> Needs {
        Needs {
            progress: true,
            ..Needs::default()
        }
    }

    fn apply(self, st: &mut State, now: Timestamp) -> Result<Reply> {
        let reply = set_progress(st, self, now)?;
        requeue_expired(st, now);
        Ok(reply)
    }
}

/// What writing a log entry needs: the next sequence number; for a keyed op, the recent
/// entries (an earlier application left its key there); the task it is about when archived.
fn entry_needs(task: Option<u64>) -> Needs {
    Needs {
        next_seq: true,
        log: LogNeed::RecentWhenKeyed,
        task_ids: task.into_iter().collect(),
        ..Needs::default()
    }
}

impl Rule for Send {
    fn needs(&self) -> Needs {
        entry_needs(self.task)
    }

    fn apply(self, st: &mut State, now: Timestamp) -> Result<Reply> {
        let entry = Entry {
            kind: MessageKind::Message,
            agent: &self.agent,
            text: &self.message,
            task: self.task,
            wait_secs: None,
        };
        let reply = send(st, entry, now)?;
        requeue_expired(st, now);
        Ok(reply)
    }

    fn replay(&self, st: &State, key: &str) -> Option<Reply> {
        replay::message(st, key)
    }
}

impl Rule for Ask {
    fn needs(&self) -> Needs {
        entry_needs(self.task)
    }

    fn apply(self, st: &mut State, now: Timestamp) -> Result<Reply> {
        let entry = Entry {
            kind: MessageKind::Question,
            agent: &self.agent,
            text: &self.question,
            task: self.task,
            wait_secs: self.wait_secs,
        };
        let reply = send(st, entry, now)?;
        requeue_expired(st, now);
        Ok(reply)
    }

    fn replay(&self, st: &State, key: &str) -> Option<Reply> {
        replay::message(st, key)
    }
}

impl Rule for Answer {
    fn needs(&self) -> Needs {
        // The question is looked up in the whole log.
        Needs {
            next_seq: true,
            log: LogNeed::All,
            ..Needs::default()
        }
    }

    fn apply(self, st: &mut State, now: Timestamp) -> Result<Reply> {
        let reply = answer(st, &self.agent, self.question, &self.answer, now)?;
        requeue_expired(st, now);
        Ok(reply)
    }

    fn replay(&self, st: &State, key: &str) -> Option<Reply> {
        replay::message(st, key)
    }
}

/// A message or question to append.
struct Entry<'a> {
    kind: MessageKind,
    agent: &'a str,
    text: &'a str,
    task: Option<u64>,
    wait_secs: Option<u64>,
}

/// Changes the progress record; absent fields keep their values, metadata keys are merged.
fn set_progress(state: &mut State, change: SetProgress, now: Timestamp) -> Result<Reply> {
    let SetProgress {
        current_step,
        total_steps,
        status,
        metadata,
    } = change;
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
/// worker makes it wait (see `rules::waits::start_wait`).
fn send(state: &mut State, entry: Entry, now: Timestamp) -> Result<Reply> {
    let Entry {
        kind,
        agent,
        text,
        task,
        wait_secs,
    } = entry;
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
        start_wait(state, agent, seq, add_secs(now, w), now);
    }
    Ok(Reply::Message { message: m })
}

/// Answers question `question` (needs the log loaded into the state).
fn answer(
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
    answered(state, question, now);
    Ok(Reply::Message { message: m })
}
