//! Reading what can still be read from a damaged board file: every task, worker or line that
//! parses, and a note of each thing dropped. `vine repair` writes the result back (keeping a
//! copy of the damaged file); reads of a damaged board only show it.

use std::collections::{BTreeMap, HashSet};

use serde_json::Value;

use crate::task::Task;
use crate::worker::Worker;

/// What could be read from a damaged file, and what had to be dropped.
#[derive(Debug, Default)]
pub struct Salvaged<T> {
    /// Everything that could be read.
    pub value: T,
    /// One line per thing dropped (where it was, why).
    pub dropped: Vec<String>,
}

/// The tasks of a damaged `task-queue.json`, each id once (the first copy is kept).
pub fn queue(bytes: &[u8]) -> Salvaged<Vec<Task>> {
    let mut dropped = Vec::new();
    let tasks: Vec<Task> = match serde_json::from_slice::<Vec<Task>>(bytes) {
        Ok(t) => t,
        Err(_) => {
            // The queue is written one task per line: each line that parses is a task, and a
            // damaged line cannot swallow the next one. Bracket matching covers other layouts;
            // whichever reads more tasks wins.
            let (by_line, line_drops) = salvage_lines(bytes);
            let mut out = Vec::new();
            let (objects, open) = objects_at_depth(bytes, 1);
            for (at, slice) in objects {
                match serde_json::from_slice::<Task>(slice) {
                    Ok(t) => out.push(t),
                    Err(e) => dropped.push(format!("entry at byte {at}: {e}")),
                }
            }
            if let Some(at) = open {
                dropped.push(format!("entry at byte {at}: cut off"));
            }
            if by_line.len() > out.len() {
                out = by_line;
                dropped = line_drops;
            }
            if out.is_empty() && dropped.is_empty() && !bytes.trim_ascii().is_empty() {
                dropped.push(format!(
                    "unreadable content ({} bytes), no task found in it",
                    bytes.len()
                ));
            }
            out
        }
    };
    let mut seen = HashSet::new();
    let mut kept = Vec::with_capacity(tasks.len());
    for t in tasks {
        if seen.insert(t.id) {
            kept.push(t);
        } else {
            dropped.push(format!("task {}: a second copy of the same id", t.id));
        }
    }
    Salvaged {
        value: kept,
        dropped,
    }
}

/// The workers of a damaged `worker-status.json`.
pub fn workers(bytes: &[u8]) -> Salvaged<BTreeMap<String, Worker>> {
    let mut dropped = Vec::new();
    let mut kept: BTreeMap<String, Worker> = BTreeMap::new();
    if let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(bytes) {
        for (k, v) in map {
            match serde_json::from_value::<Worker>(v) {
                Ok(w) => {
                    kept.insert(k, w);
                }
                Err(e) => dropped.push(format!("worker {k:?}: {e}")),
            }
        }
    } else {
        let (objects, open) = objects_at_depth(bytes, 1);
        for (at, slice) in objects {
            let key = key_before(bytes, at);
            match (key, serde_json::from_slice::<Worker>(slice)) {
                (Some(k), Ok(w)) => {
                    kept.insert(k, w);
                }
                (None, _) => dropped.push(format!("entry at byte {at}: no worker id before it")),
                (Some(k), Err(e)) => dropped.push(format!("worker {k:?}: {e}")),
            }
        }
        if let Some(at) = open {
            dropped.push(format!("entry at byte {at}: cut off"));
        }
    }
    if kept.is_empty() && dropped.is_empty() && !bytes.trim_ascii().is_empty() {
        dropped.push(format!(
            "unreadable content ({} bytes), no worker found in it",
            bytes.len()
        ));
    }
    Salvaged {
        value: kept,
        dropped,
    }
}

/// Tasks read line by line (the queue's own layout), and what each unreadable line was.
fn salvage_lines(bytes: &[u8]) -> (Vec<Task>, Vec<String>) {
    let mut tasks = Vec::new();
    let mut dropped = Vec::new();
    let mut at = 0;
    for line in bytes.split_inclusive(|&b| b == b'\n') {
        let body = line.trim_ascii();
        let body = body.strip_suffix(b",").unwrap_or(body);
        if body.starts_with(b"{") {
            match serde_json::from_slice::<Task>(body) {
                Ok(t) => tasks.push(t),
                Err(e) => dropped.push(format!("line at byte {at}: {e}")),
            }
        }
        at += line.len();
    }
    (tasks, dropped)
}

/// The JSON objects that open at nesting depth `depth` (depth 0 is the top level), found by
/// bracket matching that respects strings: each closed one with its byte offset, and the
/// offset of one left open at the end (a cut-off file).
fn objects_at_depth(bytes: &[u8], depth: usize) -> (Vec<(usize, &[u8])>, Option<usize>) {
    let mut out = Vec::new();
    let mut level = 0usize;
    let mut in_str = false;
    let mut esc = false;
    let mut start = None;
    for (i, &b) in bytes.iter().enumerate() {
        if in_str {
            if esc {
                esc = false;
            } else if b == b'\\' {
                esc = true;
            } else if b == b'"' {
                in_str = false;
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'{' | b'[' => {
                if b == b'{' && level == depth {
                    start = Some(i);
                }
                level += 1;
            }
            b'}' | b']' => {
                level = level.saturating_sub(1);
                if b == b'}'
                    && level == depth
                    && let Some(s) = start.take()
                {
                    out.push((s, &bytes[s..=i]));
                }
            }
            _ => {}
        }
    }
    (out, start)
}

/// The JSON string key just before the object at `at` (`"key": {`), if there is one.
fn key_before(bytes: &[u8], at: usize) -> Option<String> {
    let head = bytes[..at].trim_ascii_end();
    let head = head.strip_suffix(b":")?.trim_ascii_end();
    let head = head.strip_suffix(b"\"")?;
    let mut i = head.len();
    while i > 0 {
        i -= 1;
        if head[i] == b'"' && (i == 0 || head[i - 1] != b'\\') {
            let raw = &bytes[i..head.len() + 1];
            return serde_json::from_slice::<String>(raw).ok();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_cut_inside_a_string_does_not_swallow_the_next_task() {
        let t = |id: u64| format!(r#"{{"id":{id},"description":"t{id}","status":"pending"}}"#);
        let cut = &t(2)[..25];
        let text = format!("[\n{},\n{cut}\n{},\n{}\n]\n", t(1), t(3), t(4));
        let (tasks, dropped) = salvage_lines(text.as_bytes());
        let ids: Vec<u64> = tasks.iter().map(|t| t.id).collect();
        assert_eq!(ids, [1, 3, 4]);
        assert_eq!(dropped.len(), 1);
    }

    #[test]
    fn finds_objects_and_keys_in_cut_off_json() {
        let text = br#"{"w1": {"status":"active","x":"}{"}, "w2": {"status":"act"#;
        let (objs, open) = objects_at_depth(text, 1);
        assert_eq!(objs.len(), 1);
        assert_eq!(key_before(text, objs[0].0).as_deref(), Some("w1"));
        assert!(open.is_some());
    }
}
