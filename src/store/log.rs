//! The message log `agent-comms.jsonl`: appends under the board lock, reads without it.

use std::path::Path;

use super::damage::Damages;
use super::{durable, jsonl};
use crate::error::{Error, Result};
use crate::message::{Message, MessageFilter, MessageKind};

/// The sequence number the next entry gets: one above the last numbered entry, or (for a log
/// the original plan wrote, without numbers) one above its line count.
pub fn next_seq(path: &Path, dmg: &mut Damages) -> Result<u64> {
    let mut last = None;
    let mut looked = 0;
    jsonl::each_back::<Message>(path, dmg, |m| {
        looked += 1;
        if let Some(s) = m.seq {
            last = Some(s);
            return false;
        }
        looked < 1000
    })?;
    if let Some(s) = last {
        return Ok(s + 1);
    }
    let mut lines = 0u64;
    jsonl::scan(path, |_, _| {
        lines += 1;
        true
    })?;
    Ok(lines + 1)
}

/// The bytes that append `entries` to the log, numbered from its current end. Reading the
/// end of the log first means a damaged end is found before anything is written.
pub fn encode(path: &Path, entries: &mut [Message]) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    if entries.is_empty() {
        return Ok(buf);
    }
    let first = next_seq(path, &mut Damages::refuse())?;
    for (seq, m) in (first..).zip(entries.iter_mut()) {
        m.seq = Some(seq);
        serde_json::to_writer(&mut buf, m).map_err(|e| Error::Protocol(e.to_string()))?;
        buf.push(b'\n');
    }
    Ok(buf)
}

/// Appends entries in one write and fsyncs, numbering them from the log's current end.
pub fn append(path: &Path, entries: &mut [Message]) -> Result<()> {
    let buf = encode(path, entries)?;
    if buf.is_empty() {
        return Ok(());
    }
    durable::append_lines(path, &buf, true)
}

/// Entries matching `filter` (at most its last `limit`), oldest first.
pub fn read(path: &Path, filter: &MessageFilter, dmg: &mut Damages) -> Result<Vec<Message>> {
    let mut out = Vec::new();
    jsonl::each::<Message>(path, dmg, |m| {
        if filter.matches(&m) {
            out.push(m);
        }
        true
    })?;
    Ok(filter.select(out))
}

/// The last `n` entries, oldest first.
pub fn recent(path: &Path, n: usize, dmg: &mut Damages) -> Result<Vec<Message>> {
    let mut out = Vec::new();
    jsonl::each_back::<Message>(path, dmg, |m| {
        out.push(m);
        out.len() < n
    })?;
    out.reverse();
    Ok(out)
}

/// Every entry.
pub fn all(path: &Path, dmg: &mut Damages) -> Result<Vec<Message>> {
    jsonl::read_all::<Message>(path, dmg)
}

/// The questions and the answers, oldest first (`rules::questions` pairs them).
pub fn questions_and_answers(path: &Path, dmg: &mut Damages) -> Result<Vec<Message>> {
    let mut out = Vec::new();
    jsonl::each::<Message>(path, dmg, |m| {
        if matches!(m.kind, MessageKind::Question | MessageKind::Answer) {
            out.push(m);
        }
        true
    })?;
    Ok(out)
}
