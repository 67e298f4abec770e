//! `vine repair`: keeps a copy of every damaged board file and rebuilds it from every entry
//! that can still be read, reporting what was dropped.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::Path;

use chrono::Utc;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::local::{LocalStore, to_pretty};
use super::paths::{ARCHIVE, BOARD, LOG, PROGRESS, QUEUE, WORKERS};
use super::{archive::ArchiveLine, durable};
use crate::error::{Error, Result};
use crate::message::Message;
use crate::op::{RepairedFile, Reply};
use crate::progress::Progress;
use crate::settings::BoardFile;
use crate::task::Task;
use crate::worker::Worker;

/// Repairs every board file; the caller holds the board lock.
pub fn repair(store: &LocalStore) -> Result<Reply> {
    let dir = store.dir();
    let stamp = Utc::now().format("%Y%m%dT%H%M%S%.3fZ").to_string();
    let mut files = Vec::new();
    if let Some(r) = repair_queue(dir, &stamp)? {
        files.push(r);
    }
    if let Some(r) = repair_workers(dir, &stamp)? {
        files.push(r);
    }
    for (name, default) in [
        (PROGRESS, to_pretty(&Progress::default())?),
        (BOARD, to_pretty(&BoardFile::default())?),
    ] {
        let ok = match name {
            PROGRESS => parses::<Progress>(dir, name),
            _ => parses::<BoardFile>(dir, name),
        };
        if !ok {
            let backup = backup(dir, name, &stamp)?;
            durable::replace(dir, name, &default, true)?;
            files.push(RepairedFile {
                file: name.into(),
                backup,
                kept: 0,
                dropped: vec!["the whole file (reset to defaults)".into()],
            });
        }
    }
    if let Some(r) = repair_lines::<Message>(dir, LOG, &stamp)? {
        files.push(r);
    }
    if let Some(r) = repair_lines::<ArchiveLine>(dir, ARCHIVE, &stamp)? {
        files.push(r);
    }
    // Temp files a killed writer left behind.
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if name.starts_with('.') && name.ends_with(".tmp") {
                let _ = fs::remove_file(e.path());
            }
        }
    }
    durable::sync_dir(dir)?;
    Ok(Reply::Repaired { files })
}

fn parses<T: DeserializeOwned>(dir: &Path, name: &str) -> bool {
    match fs::read(dir.join(name)) {
        Ok(b) => serde_json::from_slice::<T>(&b).is_ok(),
        Err(_) => true,
    }
}

fn backup(dir: &Path, name: &str, stamp: &str) -> Result<String> {
    let b = format!("{name}.damaged-{stamp}");
    if let Err(e) = fs::copy(dir.join(name), dir.join(&b)) {
        // A copy cut off (a full disk) is no backup.
        let _ = fs::remove_file(dir.join(&b));
        return Err(Error::io("copying", dir.join(name), e));
    }
    Ok(b)
}

fn read_text(dir: &Path, name: &str) -> Result<Option<Vec<u8>>> {
    match fs::read(dir.join(name)) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("reading", dir.join(name), e)),
    }
}

fn repair_queue(dir: &Path, stamp: &str) -> Result<Option<RepairedFile>> {
    let Some(bytes) = read_text(dir, QUEUE)? else {
        return Ok(None);
    };
    let mut dropped = Vec::new();
    let tasks: Vec<Task> = match serde_json::from_slice::<Vec<Task>>(&bytes) {
        Ok(t) => t,
        Err(_) => {
            // The queue is written one task per line: each line that parses is a task, and a
            // damaged line cannot swallow the next one. Bracket matching covers other layouts;
            // whichever reads more tasks wins.
            let (by_line, line_drops) = salvage_lines(&bytes);
            let mut out = Vec::new();
            let (objects, open) = objects_at_depth(&bytes, 1);
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
    let clean = serde_json::from_slice::<Vec<Task>>(&bytes).is_ok() && dropped.is_empty();
    if clean {
        return Ok(None);
    }
    let backup = backup(dir, QUEUE, stamp)?;
    let bytes = super::queue_file::encode(&kept, &Default::default(), &Default::default())
        .map_err(|e| Error::Protocol(e.to_string()))?
        .bytes;
    durable::replace(dir, QUEUE, &bytes, true)?;
    Ok(Some(RepairedFile {
        file: QUEUE.into(),
        backup,
        kept: kept.len(),
        dropped,
    }))
}

fn repair_workers(dir: &Path, stamp: &str) -> Result<Option<RepairedFile>> {
    let Some(bytes) = read_text(dir, WORKERS)? else {
        return Ok(None);
    };
    if serde_json::from_slice::<BTreeMap<String, Worker>>(&bytes).is_ok() {
        return Ok(None);
    }
    let mut dropped = Vec::new();
    let mut kept: BTreeMap<String, Worker> = BTreeMap::new();
    if let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(&bytes) {
        for (k, v) in map {
            match serde_json::from_value::<Worker>(v) {
                Ok(w) => {
                    kept.insert(k, w);
                }
                Err(e) => dropped.push(format!("worker {k:?}: {e}")),
            }
        }
    } else {
        let (objects, open) = objects_at_depth(&bytes, 1);
        for (at, slice) in objects {
            let key = key_before(&bytes, at);
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
    let backup = backup(dir, WORKERS, stamp)?;
    durable::replace(dir, WORKERS, &to_pretty(&kept)?, true)?;
    Ok(Some(RepairedFile {
        file: WORKERS.into(),
        backup,
        kept: kept.len(),
        dropped,
    }))
}

fn repair_lines<T: DeserializeOwned>(
    dir: &Path,
    name: &str,
    stamp: &str,
) -> Result<Option<RepairedFile>> {
    let Some(bytes) = read_text(dir, name)? else {
        return Ok(None);
    };
    let mut good = Vec::new();
    let mut dropped = Vec::new();
    let mut kept = 0;
    let mut at = 0;
    for line in bytes.split_inclusive(|&b| b == b'\n') {
        let body = line.trim_ascii();
        let complete = line.last() == Some(&b'\n');
        if !body.is_empty() {
            match serde_json::from_slice::<T>(body) {
                Ok(_) if complete => {
                    good.extend_from_slice(body);
                    good.push(b'\n');
                    kept += 1;
                }
                Ok(_) => dropped.push(format!("line at byte {at}: cut off (no newline)")),
                Err(e) => dropped.push(format!("line at byte {at}: {e}")),
            }
        }
        at += line.len();
    }
    if dropped.is_empty() {
        return Ok(None);
    }
    let backup = backup(dir, name, stamp)?;
    durable::replace(dir, name, &good, true)?;
    Ok(Some(RepairedFile {
        file: name.into(),
        backup,
        kept,
        dropped,
    }))
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
