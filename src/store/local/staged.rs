//! Instruction texts written ahead of the change that adds their tasks.
//!
//! An add's instruction texts become files named after the tasks' ids, which the rules give
//! under the board lock. Creating and fsyncing those files is most of a large plan's work, and
//! under the lock it holds up every other change. So the texts are written first, before the
//! lock, to temp files in `tasks/` (`.staged-PID-N.tmp`, fsynced), and kept here by their text.
//! Under the lock, the commit renames a temp holding the same text to the file's name and syncs
//! the folder once, before the change's record, as it did for files it wrote itself; a text
//! nothing was staged for is written there as before. `vine serve` stages an add's texts on
//! the request's own thread, before the op reaches the one writer thread (see
//! `BatchStore::stage`); a batch stages what is still missing before it takes the lock.
//!
//! A temp an op did not use (the op was refused, or answered from its request key) is removed
//! after its batch. What is left when the handle goes (a request that never reached its batch)
//! is removed then, and `vine repair` removes what a killed process left.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};
use crate::store::durable;

/// Numbers the temp files of this process (whatever handle stages them).
static NEXT: AtomicU64 = AtomicU64::new(0);

/// Temp files holding instruction texts, by text; shared by a handle's clones.
#[derive(Debug, Default)]
pub(super) struct Staged {
    ready: Mutex<HashMap<String, Vec<PathBuf>>>,
}

impl Staged {
    fn ready(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<PathBuf>>> {
        self.ready.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes each of `texts` to a new temp file in `dir` (fsynced) and keeps it for a
    /// commit. Nothing is kept when a write fails.
    pub(super) fn stage(&self, dir: &Path, texts: &[&str]) -> Result<()> {
        if texts.is_empty() {
            return Ok(());
        }
        fs::create_dir_all(dir).map_err(|e| Error::io("creating", dir, e))?;
        let pid = std::process::id();
        let names: Vec<PathBuf> = texts
            .iter()
            .map(|_| {
                dir.join(format!(
                    ".staged-{pid}-{}.tmp",
                    NEXT.fetch_add(1, Ordering::Relaxed)
                ))
            })
            .collect();
        let files: Vec<(&Path, &[u8])> = names
            .iter()
            .zip(texts)
            .map(|(n, t)| (n.as_path(), t.as_bytes()))
            .collect();
        durable::write_temps(&files)?;
        let mut ready = self.ready();
        for (name, text) in names.into_iter().zip(texts) {
            ready.entry((*text).to_string()).or_default().push(name);
        }
        Ok(())
    }

    /// Stages in `dir` those of `texts` that are not staged yet (as many times as they
    /// appear). A text that cannot be staged is written by the commit itself.
    pub(super) fn stage_missing(&self, dir: &Path, texts: &[&str]) {
        let want = Reserved::of(texts.iter().copied()).left;
        let missing: Vec<&str> = {
            let ready = self.ready();
            want.iter()
                .flat_map(|(t, &n)| {
                    let have = ready.get(t).map_or(0, Vec::len);
                    std::iter::repeat_n(t.as_str(), n.saturating_sub(have))
                })
                .collect()
        };
        let _ = self.stage(dir, &missing);
    }

    /// Takes a temp holding `text`, if one is kept.
    fn take(&self, text: &str) -> Option<PathBuf> {
        let mut ready = self.ready();
        let names = ready.get_mut(text)?;
        let name = names.pop();
        if names.is_empty() {
            ready.remove(text);
        }
        name
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        for name in self.ready().drain().flat_map(|(_, names)| names) {
            let _ = fs::remove_file(name);
        }
    }
}

/// The temps one batch may take: one per instruction text its ops write.
#[derive(Debug, Default)]
pub(super) struct Reserved {
    left: HashMap<String, usize>,
}

impl Reserved {
    /// One temp for each of `texts` (a batch's ops' texts, refused ops' too, so that what was
    /// staged for them is removed after the batch).
    pub(super) fn of<'a>(texts: impl IntoIterator<Item = &'a str>) -> Reserved {
        let mut left: HashMap<String, usize> = HashMap::new();
        for t in texts {
            *left.entry(t.to_string()).or_default() += 1;
        }
        Reserved { left }
    }

    /// Whether the batch writes no instruction text.
    pub(super) fn is_empty(&self) -> bool {
        self.left.is_empty()
    }

    /// A temp holding `text` for the commit to rename, within what the batch reserved.
    pub(super) fn take(&mut self, staged: &Staged, text: &str) -> Option<PathBuf> {
        let left = self.left.get_mut(text).filter(|n| **n > 0)?;
        let name = staged.take(text)?;
        *left -= 1;
        Some(name)
    }

    /// Removes as many temps of each text as the batch reserved and did not take.
    pub(super) fn release(self, staged: &Staged) {
        for (text, left) in self.left {
            for _ in 0..left {
                match staged.take(&text) {
                    Some(name) => {
                        let _ = fs::remove_file(name);
                    }
                    None => break,
                }
            }
        }
    }
}
