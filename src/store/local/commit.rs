//! Committing what a batch of changes did to the live board: instruction files first, then
//! either one journal record (appended, one fdatasync) followed by the log entries it holds
//! (appended, their fsync comes with the next checkpoint), or, for a handle that commits to
//! files while the journal holds nothing, the changed JSON files rewritten as they always
//! were. Finished tasks beyond the board's `archive_after` then move to the archive.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use super::live::Loaded;
use super::staged::Reserved;
use super::{Commit, LocalStore, checkpoint};
use crate::error::{Error, Result};
use crate::message::Message;
use crate::rules::{self, Dirty, State};
use crate::store::paths::{ARCHIVE, JOURNAL, LOG, TASKS_DIR, WORKERS};
use crate::store::{SOFT_WRITE_EVERY, archive, durable, journal, log};
use crate::task::TaskStatus;
use crate::time::Timestamp;

impl LocalStore {
    /// Commits what the ops applied to `st` did; `b` is the live board `st` was taken from,
    /// already given its tasks, workers, progress and sessions back. `finished_on_queue` is
    /// `st`'s [`State::finished_on_queue`] before that: while it is within `archive_after`
    /// nothing can move to the archive, and the queue is not searched.
    pub(super) fn commit(
        &self,
        st: &mut State,
        b: &mut Loaded,
        now: Timestamp,
        finished_on_queue: usize,
        reserved: &mut Reserved,
    ) -> Result<()> {
        let d = &self.dir;
        // The log's end is read (and checked) before anything is written.
        let log_bytes = log::encode(&d.join(LOG), &mut st.outbox)?;
        if !st.files.is_empty() {
            let _files = tracing::trace_span!("instruction files").entered();
            let tasks_dir = d.join(TASKS_DIR);
            fs::create_dir_all(&tasks_dir).map_err(|e| Error::io("creating", &tasks_dir, e))?;
            // Every file replaced durably (all written, then all fsynced, then renamed), then
            // each directory they are in synced once.
            let paths = st
                .files
                .iter()
                .map(|(rel, _)| self.resolve(rel))
                .collect::<Result<Vec<PathBuf>>>()?;
            // The last text of a path wins.
            let last: BTreeMap<&Path, &str> = paths
                .iter()
                .zip(&st.files)
                .map(|(p, (_, text))| (p.as_path(), text.as_str()))
                .collect();
            self.write_instructions(last, reserved)?;
            for ((rel, text), p) in st.files.iter().zip(&paths) {
                self.texts.keep(rel, p, text);
            }
        }
        let messages = std::mem::take(&mut st.outbox);
        self.commit_change(b, &st.touched, &st.dirty, messages, &log_bytes, now)?;
        // Only what is committed may be archived: the change is on disk by now. The op has
        // succeeded; an archive move that fails here is tried again by the next change, and
        // the board is consistent either way, so its error does not fail the op.
        let finished = finished_on_queue > st.settings.archive_after
            && st.touched.iter().any(|id| {
                b.task(*id).is_some_and(|t| {
                    matches!(t.status, TaskStatus::Completed | TaskStatus::Cancelled)
                })
            });
        if finished {
            let (take, _kept) = rules::archivable(&b.tasks);
            if take.len() > st.settings.archive_after {
                let _ = tracing::trace_span!("archive").in_scope(|| self.archive(b, &take, now));
            }
        }
        Ok(())
    }

    /// Writes instruction files durably: a text staged ahead (see `staged`) by renaming its
    /// temp file to the file's name, the others written now (all written, then all fsynced,
    /// then renamed); then each folder they are in synced once.
    fn write_instructions(
        &self,
        files: BTreeMap<&Path, &str>,
        reserved: &mut Reserved,
    ) -> Result<()> {
        let mut moves = Vec::new();
        let mut written = Vec::new();
        for (path, text) in files {
            match reserved.take(&self.staged, text) {
                Some(tmp) => moves.push((tmp, path, text)),
                None => written.push((path, text.as_bytes())),
            }
        }
        let mut dirs = BTreeSet::new();
        let renamed = durable::replace_all(&written).and_then(|()| {
            for (tmp, path, text) in &moves {
                if let Err(e) = fs::rename(tmp, path) {
                    // Written again as the others were (the temp is gone or elsewhere).
                    let _ = fs::remove_file(tmp);
                    tracing::debug!("a staged text could not be moved into place: {e}");
                    durable::replace_all(&[(path, text.as_bytes())])?;
                }
                dirs.extend(path.parent());
            }
            Ok(())
        });
        if let Err(e) = renamed {
            for (tmp, ..) in &moves {
                let _ = fs::remove_file(tmp);
            }
            return Err(e);
        }
        for dir in dirs {
            durable::sync_dir(dir)?;
        }
        Ok(())
    }

    /// Commits one change to `b` (already applied to it): the tasks in `touched`, what
    /// `dirty` marks, `messages` (numbered, encoded as `log_bytes`).
    fn commit_change(
        &self,
        b: &mut Loaded,
        touched: &BTreeSet<u64>,
        dirty: &Dirty,
        messages: Vec<Message>,
        log_bytes: &[u8],
        now: Timestamp,
    ) -> Result<()> {
        let d = &self.dir;
        b.index_added();
        let changed = dirty.tasks || dirty.workers || dirty.workers_soft;
        let files_changed = changed || dirty.progress || dirty.sessions;
        if self.commit == Commit::Files && b.since.records == 0 && !files_changed {
            if !log_bytes.is_empty() {
                durable::append_lines(&d.join(LOG), log_bytes, true)?;
            }
        } else if self.commit == Commit::Files && b.since.records == 0 {
            // The files are the board's only copy of this change.
            b.touched.extend(touched.iter().copied());
            b.since.tasks = dirty.tasks;
            b.since.workers = dirty.workers
                || (dirty.workers_soft
                    && workers_file_older_than(d, SOFT_WRITE_EVERY.as_secs_f64()));
            b.since.progress = dirty.progress;
            b.since.sessions = dirty.sessions;
            checkpoint::write_files(d, b, false)?;
            b.since = Default::default();
            if b.has_journal() {
                b.start_journal(d, b.seq + 1)?;
            } else {
                b.files_written(d)?;
            }
            if !log_bytes.is_empty() {
                let _log = tracing::trace_span!("log").entered();
                durable::append_lines(&d.join(LOG), log_bytes, true)?;
            }
        } else {
            if !b.has_journal() {
                // A board without a journal gets one at its first record.
                b.start_journal(d, b.seq)?;
            }
            let record = b.record_of(
                touched,
                dirty.workers || dirty.workers_soft,
                dirty.progress,
                dirty.sessions,
                messages,
                now.timestamp_millis(),
            );
            if !record.is_empty() {
                let line = journal::line(&record)?;
                b.append(&line, &d.join(JOURNAL))?;
                b.appended(&record, line.len() as u64);
                if !log_bytes.is_empty() {
                    let _log = tracing::trace_span!("log").entered();
                    durable::append_lines(&d.join(LOG), log_bytes, false)?;
                }
                if checkpoint::due(b, now.timestamp_millis()) {
                    checkpoint::write(d, b, false)?;
                    self.checkpointer.written();
                } else if self.commit == Commit::Journal {
                    self.checkpointer.appended();
                }
            }
        }
        if changed {
            self.changes
                .fetch_add(1, std::sync::atomic::Ordering::Release);
        }
        Ok(())
    }

    /// Moves the committed tasks at `take` to the archive (appended and fsynced first), then
    /// commits their leaving the queue. A crash in between leaves identical copies in both
    /// places; readers count them once and the next move does not append them again.
    fn archive(&self, b: &mut Loaded, take: &[usize], now: Timestamp) -> Result<usize> {
        let moving: Vec<_> = take
            .iter()
            .filter_map(|&i| b.tasks.get(i).cloned())
            .collect();
        if moving.is_empty() {
            return Ok(0);
        }
        let path = self.dir.join(ARCHIVE);
        // An archive as this board's last committed move left it holds none of these at its
        // tail: that move's tasks left the queue.
        let tail_known = b.archive_left.is_some() && b.archive_left == journal::file_id(&path)?;
        b.archive_left = None;
        archive::append_after(&path, &moving, now, tail_known)?;
        let ids: BTreeSet<u64> = moving.iter().map(|t| t.id).collect();
        b.tasks.retain(|t| !ids.contains(&t.id));
        b.reindex();
        // Their claims and completions leave the queue: the workers keep them.
        let dirty = Dirty {
            tasks: true,
            workers: true,
            ..Dirty::default()
        };
        self.commit_change(b, &ids, &dirty, Vec::new(), &[], now)?;
        b.archive_left = journal::file_id(&path)?;
        Ok(moving.len())
    }
}

/// True if `worker-status.json` was last written longer than `secs` ago (or is missing).
fn workers_file_older_than(dir: &std::path::Path, secs: f64) -> bool {
    fs::metadata(dir.join(WORKERS))
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_none_or(|age| age.as_secs_f64() >= secs)
}
