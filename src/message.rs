//! One line of `agent-comms.jsonl`: a message, question, answer or kept result.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::time::{Timestamp, ts};

/// What a log entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageKind {
    /// A plain note from an agent or human (the original plan's only kind).
    #[default]
    Message,
    /// A question from a worker, waiting for an answer.
    Question,
    /// An answer to a question (`reply_to` names it).
    Answer,
    /// A result or error a worker sent for a claim it no longer held, kept so nothing is lost.
    Result,
}

impl MessageKind {
    /// The name used in the log.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageKind::Message => "message",
            MessageKind::Question => "question",
            MessageKind::Answer => "answer",
            MessageKind::Result => "result",
        }
    }
}

/// One entry of the message log. Unknown fields are kept in `extra`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// When it was written.
    #[serde(with = "ts")]
    pub timestamp: Timestamp,
    /// Who wrote it (worker id, `coordinator`, a human's name).
    pub agent: String,
    /// The text.
    pub message: String,
    /// Position in the log, increasing by one per entry (absent on the original plan's lines).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// What kind of entry this is.
    #[serde(default)]
    pub kind: MessageKind,
    /// The task it is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<u64>,
    /// The question this answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<u64>,
    /// The request key of the op that wrote it (retried requests are answered, not repeated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Fields this version does not know; kept as they were.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Message {
    /// A new entry (its `seq` is set when it is appended).
    pub fn new(kind: MessageKind, agent: &str, text: &str, now: Timestamp) -> Self {
        Message {
            timestamp: now,
            agent: agent.to_string(),
            message: text.to_string(),
            seq: None,
            kind,
            task_id: None,
            reply_to: None,
            key: None,
            extra: Map::new(),
        }
    }
}

/// Which log entries to read.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct MessageFilter {
    /// Only entries written after this time.
    #[serde(with = "crate::time::opt_ts", skip_serializing_if = "Option::is_none")]
    pub since: Option<Timestamp>,
    /// Only entries with a sequence number above this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after_seq: Option<u64>,
    /// Only answers to this question.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<u64>,
    /// Only the last N matching entries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    /// Only entries about this task.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task: Option<u64>,
    /// Only entries written by this agent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// Only entries of this kind.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<MessageKind>,
}

impl MessageFilter {
    /// True if `m` passes the filter's conditions (the limit aside).
    pub fn matches(&self, m: &Message) -> bool {
        self.since.is_none_or(|t| m.timestamp > t)
            && self.after_seq.is_none_or(|s| m.seq.is_some_and(|q| q > s))
            && self.reply_to.is_none_or(|q| m.reply_to == Some(q))
            && self.task.is_none_or(|t| m.task_id == Some(t))
            && self.agent.as_deref().is_none_or(|a| m.agent == a)
            && self.kind.is_none_or(|k| m.kind == k)
    }

    /// The entries of `log` (oldest first) that match, at most the last `limit` of them.
    pub fn select(&self, log: Vec<Message>) -> Vec<Message> {
        let mut out: Vec<Message> = log.into_iter().filter(|m| self.matches(m)).collect();
        if let Some(n) = self.limit
            && out.len() > n
        {
            out.drain(..out.len() - n);
        }
        out
    }
}
