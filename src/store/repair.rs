//! `vine repair`: keeps a copy of every damaged board file and rebuilds it from every entry
//! that can still be read, reporting what was dropped.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use chrono::Utc;
use serde::de::DeserializeOwned;

use super::json_file::{read_bytes, to_pretty};
use super::paths::{ARCHIVE, BOARD, LOG, PROGRESS, QUEUE, SESSIONS, TASKS_DIR, WORKERS};
use super::{archive::ArchiveLine, durable, jsonl, queue_file, salvage};
use crate::error::{Error, Result};
use crate::message::Message;
use crate::progress::Progress;
use crate::reply::{RepairedFile, Reply};
use crate::sessions::SessionRecord;
use crate::settings::BoardFile;
use crate::worker::Worker;

/// Repairs every board file of the board in `dir`; the caller holds the board lock.
pub fn repair(dir: &Path) -> Result<Reply> {
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
        (SESSIONS, to_pretty(&Vec::<SessionRecord>::new())?),
    ] {
        let ok = match name {
            PROGRESS => parses::<Progress>(dir, name),
            SESSIONS => parses::<Vec<SessionRecord>>(dir, name),
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
    // Temp files a killed writer left behind: beside the board files, and beside the
    // instruction files the board writes (in `tasks/`, when that is a folder of the board's
    // own, not a link that could lead elsewhere).
    remove_temps(dir)?;
    let tasks = dir.join(TASKS_DIR);
    if fs::symlink_metadata(&tasks).is_ok_and(|m| m.is_dir()) {
        remove_temps(&tasks)?;
    }
    Ok(Reply::Repaired { files })
}

/// Removes the `.NAME.tmp` files in `dir` (not in its subfolders), then syncs `dir`.
fn remove_temps(dir: &Path) -> Result<()> {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            let file = e.file_type().is_ok_and(|t| t.is_file());
            if file && name.starts_with('.') && name.ends_with(".tmp") {
                let _ = fs::remove_file(e.path());
            }
        }
    }
    durable::sync_dir(dir)
}

fn parses<T: DeserializeOwned>(dir: &Path, name: &str) -> bool {
    match fs::read(dir.join(name)) {
        Ok(b) => serde_json::from_slice::<T>(&b).is_ok(),
        Err(_) => true,
    }
}

/// Copies the board file `name` aside as `NAME.damaged-STAMP`; returns the copy's name.
pub(crate) fn backup(dir: &Path, name: &str, stamp: &str) -> Result<String> {
    let b = format!("{name}.damaged-{stamp}");
    if let Err(e) = fs::copy(dir.join(name), dir.join(&b)) {
        // A copy cut off (a full disk) is no backup.
        let _ = fs::remove_file(dir.join(&b));
        return Err(Error::io("copying", dir.join(name), e));
    }
    Ok(b)
}

fn read_text(dir: &Path, name: &str) -> Result<Option<Vec<u8>>> {
    read_bytes(&dir.join(name))
}

fn repair_queue(dir: &Path, stamp: &str) -> Result<Option<RepairedFile>> {
    let Some(bytes) = read_text(dir, QUEUE)? else {
        return Ok(None);
    };
    // Damage is what loading calls damage: the same decode.
    if queue_file::decode(&bytes, &mut Default::default()).is_ok() {
        return Ok(None);
    }
    let salvaged = salvage::queue(&bytes);
    let backup = backup(dir, QUEUE, stamp)?;
    let kept = salvaged.value;
    let bytes = queue_file::encode(&kept, &Default::default(), &Default::default())
        .map_err(|e| Error::Protocol(e.to_string()))?
        .bytes;
    durable::replace(dir, QUEUE, &bytes, true)?;
    Ok(Some(RepairedFile {
        file: QUEUE.into(),
        backup,
        kept: kept.len(),
        dropped: salvaged.dropped,
    }))
}

fn repair_workers(dir: &Path, stamp: &str) -> Result<Option<RepairedFile>> {
    let Some(bytes) = read_text(dir, WORKERS)? else {
        return Ok(None);
    };
    if serde_json::from_slice::<BTreeMap<String, Worker>>(&bytes).is_ok() {
        return Ok(None);
    }
    let salvaged = salvage::workers(&bytes);
    let backup = backup(dir, WORKERS, stamp)?;
    durable::replace(dir, WORKERS, &to_pretty(&salvaged.value)?, true)?;
    Ok(Some(RepairedFile {
        file: WORKERS.into(),
        backup,
        kept: salvaged.value.len(),
        dropped: salvaged.dropped,
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
            match jsonl::parse_line::<T>(body) {
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
