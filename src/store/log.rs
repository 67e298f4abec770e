//! The message log `agent-comms.jsonl`: appends under the board lock, reads without it.

use std::collections::BTreeMap;
use std::path::Path;

use super::{durable, jsonl};
use crate::error::{Error, Result};
use crate::message::{Message, MessageKind};
use crate::op::{MessageFilter, QuestionView};

/// The sequence number the next entry gets: one above the last numbered entry, or (for a log
/// the original plan wrote, without numbers) one above its line count.
pub fn next_seq(path: &Path) -> Result<u64> {
    let mut last = None;
    let mut looked = 0;
    jsonl::scan_back(path, |line| {
        looked += 1;
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(line)
            && let Some(s) = v.get("seq").and_then(|s| s.as_u64())
        {
            last = Some(s);
            return false;
        }
        looked < 1000
    })?;
    if let Some(s) = last {
        return Ok(s + 1);
    }
    let mut lines = 0u64;
    jsonl::scan(path, |_| {
        lines += 1;
        true
    })?;
    Ok(lines + 1)
}

/// Appends entries in one write and fsyncs, numbering them from the log's current end.
pub fn append(path: &Path, entries: &mut [Message]) -> Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let first = next_seq(path)?;
    let mut buf = Vec::new();
    for (seq, m) in (first..).zip(entries.iter_mut()) {
        m.seq = Some(seq);
        serde_json::to_writer(&mut buf, m).map_err(|e| Error::Protocol(e.to_string()))?;
        buf.push(b'\n');
    }
    durable::append_lines(path, &buf, true)
}

/// Entries matching `filter`, oldest first.
pub fn read(path: &Path, filter: &MessageFilter) -> Result<Vec<Message>> {
    let mut out = Vec::new();
    jsonl::scan(path, |line| {
        if let Ok(m) = serde_json::from_slice::<Message>(line) {
            let keep = filter.since.is_none_or(|t| m.timestamp > t)
                && filter
                    .after_seq
                    .is_none_or(|s| m.seq.is_some_and(|q| q > s))
                && filter.reply_to.is_none_or(|q| m.reply_to == Some(q));
            if keep {
                out.push(m);
            }
        }
        true
    })?;
    if let Some(n) = filter.limit
        && out.len() > n
    {
        out.drain(..out.len() - n);
    }
    Ok(out)
}

/// The last `n` readable entries, oldest first.
pub fn recent(path: &Path, n: usize) -> Result<Vec<Message>> {
    let mut out = Vec::new();
    jsonl::scan_back(path, |line| {
        if let Ok(m) = serde_json::from_slice::<Message>(line) {
            out.push(m);
        }
        out.len() < n
    })?;
    out.reverse();
    Ok(out)
}

/// Every readable entry.
pub fn all(path: &Path) -> Result<Vec<Message>> {
    Ok(jsonl::read_all::<Message>(path)?.0)
}

/// Questions with their answers; only unanswered ones unless `all`.
pub fn questions(path: &Path, all: bool) -> Result<Vec<QuestionView>> {
    let mut qs: BTreeMap<u64, QuestionView> = BTreeMap::new();
    jsonl::scan(path, |line| {
        if let Ok(m) = serde_json::from_slice::<Message>(line) {
            match (m.kind, m.seq, m.reply_to) {
                (MessageKind::Question, Some(s), _) => {
                    qs.insert(
                        s,
                        QuestionView {
                            question: m,
                            answers: vec![],
                        },
                    );
                }
                (MessageKind::Answer, _, Some(q)) => {
                    if let Some(v) = qs.get_mut(&q) {
                        v.answers.push(m);
                    }
                }
                _ => {}
            }
        }
        true
    })?;
    Ok(qs
        .into_values()
        .filter(|q| all || q.answers.is_empty())
        .collect())
}
