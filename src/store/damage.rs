//! What a read does with a board file that does not parse: a change refuses it (the board is
//! never written from a damaged file), a read salvages what it can, as `vine repair` would but
//! without writing, and reports the file.
//!
//! Every loader of a board file takes a [`Damages`] and reports damage to it; the same loaders
//! serve changes (with [`Damages::refuse`]) and reads (with [`Damages::salvage`]), so what
//! counts as damage is decided in one place per file.

use std::collections::BTreeMap;
use std::path::Path;

use super::archive::ArchiveLine;
use super::jsonl;
use super::paths::{ARCHIVE, BOARD, LOG, PROGRESS, QUEUE, SESSIONS, WORKERS};
use super::queue_file::{self, QueueCache};
use crate::error::{Damage, Error, Result};
use crate::message::Message;

/// Where damage found while loading board files goes.
#[derive(Debug)]
pub struct Damages {
    salvage: bool,
    found: Vec<Damage>,
}

impl Damages {
    /// Damage is an error ([`Error::Damaged`]): for changes.
    pub fn refuse() -> Self {
        Damages {
            salvage: false,
            found: Vec::new(),
        }
    }

    /// Damage is noted and the loader goes on with what it can read: for reads.
    pub fn salvage() -> Self {
        Damages {
            salvage: true,
            found: Vec::new(),
        }
    }

    /// Reports damage in the board file at `path`: an error when refusing; when salvaging,
    /// noted (the first problem of each file) and `Ok`, and the caller uses what it can read.
    pub fn found(&mut self, path: &Path, detail: impl Into<String>) -> Result<()> {
        let detail = detail.into();
        if !self.salvage {
            return Err(Error::Damaged {
                path: path.to_path_buf(),
                detail,
            });
        }
        let file = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        if !self.found.iter().any(|d| d.file == file) {
            self.found.push(Damage { file, detail });
        }
        Ok(())
    }

    /// True if damage was noted.
    pub fn any(&self) -> bool {
        !self.found.is_empty()
    }

    /// The damaged files noted so far.
    pub fn into_found(self) -> Vec<Damage> {
        self.found
    }
}

/// The detail of damage to a whole file that did not parse.
pub fn detail(bytes: &[u8], e: impl std::fmt::Display) -> String {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        "the file is empty".into()
    } else {
        e.to_string()
    }
}

/// Whether `bytes` would be read as the board file `name` without damage, checked with the
/// parsers the store loads that file with (the queue: no id twice; the logs: every line, and
/// a newline at the end). For a `/deploy` over a board file. Other names pass.
pub fn check_file(name: &str, bytes: &[u8]) -> std::result::Result<(), String> {
    let whole = |r: std::result::Result<(), serde_json::Error>| r.map_err(|e| detail(bytes, e));
    match name {
        QUEUE => queue_file::decode(bytes, &mut QueueCache::default())
            .map(drop)
            .map_err(|e| detail(bytes, e)),
        WORKERS => whole(
            serde_json::from_slice::<BTreeMap<String, crate::worker::Worker>>(bytes).map(drop),
        ),
        PROGRESS => whole(serde_json::from_slice::<crate::progress::Progress>(bytes).map(drop)),
        BOARD => whole(serde_json::from_slice::<crate::settings::BoardFile>(bytes).map(drop)),
        SESSIONS => {
            whole(serde_json::from_slice::<Vec<crate::sessions::SessionRecord>>(bytes).map(drop))
        }
        LOG => jsonl::check::<Message>(bytes),
        ARCHIVE => jsonl::check::<ArchiveLine>(bytes),
        _ => Ok(()),
    }
}
