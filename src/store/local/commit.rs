//! Writing what a batch of changes did: instruction files, progress, workers, the queue (only
//! touched tasks serialized again), one directory fsync, then the log; and moving finished
//! tasks to the archive when there are too many (or on `vine compact`).

use crate::store::SOFT_WRITE_EVERY;
use std::collections::HashSet;
use std::fs;

use super::LocalStore;
use crate::error::{Error, Result};
use crate::rules::{self, State};
use crate::store::durable;
use crate::store::json_file::to_pretty;
use crate::store::log;
use crate::store::paths::{ARCHIVE, LOG, PROGRESS, QUEUE, SESSIONS, TASKS_DIR, WORKERS};
use crate::store::{archive, queue_file};
use crate::task::Task;
use crate::time::Timestamp;

impl LocalStore {
    /// Writes the queue durably (the caller fsyncs the directory): only touched tasks are
    /// serialized again. The cache then describes the new file.
    fn write_queue(&self, st: &mut State) -> Result<()> {
        let _queue = tracing::trace_span!("queue").entered();
        let mut cache = self.cache();
        let encoded = tracing::trace_span!("encode")
            .in_scope(|| queue_file::encode(&st.tasks, &st.touched, &cache))
            .map_err(|e| Error::Protocol(e.to_string()))?;
        cache.clear();
        durable::replace(&self.dir, QUEUE, &encoded.bytes, true)?;
        cache.set_written(encoded);
        st.touched.clear();
        Ok(())
    }

    /// Gives the tasks of a finished op back to the cache if they are what the file holds.
    pub(super) fn keep_queue(&self, st: &mut State, file_matches: bool) {
        let mut cache = self.cache();
        if file_matches && st.touched.is_empty() {
            cache.keep(std::mem::take(&mut st.tasks));
        } else {
            cache.forget_tasks();
        }
    }

    /// Writes what the op changed, archiving finished tasks first when there are too many.
    pub(super) fn commit(&self, st: &mut State, now: Timestamp) -> Result<()> {
        let d = &self.dir;
        // The log's end is read (and checked) before anything is written.
        let log_bytes = log::encode(&d.join(LOG), &mut st.outbox)?;
        let mut synced_dirs = false;
        if !st.files.is_empty() {
            let _files = tracing::trace_span!("instruction files").entered();
            let tasks_dir = d.join(TASKS_DIR);
            fs::create_dir_all(&tasks_dir).map_err(|e| Error::io("creating", &tasks_dir, e))?;
            for (rel, text) in &st.files {
                let p = self.resolve(rel)?;
                let (Some(parent), Some(name)) =
                    (p.parent(), p.file_name().and_then(|n| n.to_str()))
                else {
                    return Err(Error::Invalid(format!("bad instruction path {rel:?}")));
                };
                durable::replace(parent, name, text.as_bytes(), true)?;
                durable::sync_dir(parent)?;
            }
        }
        if st.dirty.progress {
            let _progress = tracing::trace_span!("progress").entered();
            durable::replace(d, PROGRESS, &to_pretty(&st.progress)?, true)?;
            synced_dirs = true;
        }
        if st.dirty.sessions {
            let _sessions = tracing::trace_span!("sessions").entered();
            durable::replace(d, SESSIONS, &to_pretty(&st.sessions)?, true)?;
            synced_dirs = true;
        }
        let mut changed = false;
        tracing::trace_span!("workers").in_scope(|| {
            if st.dirty.workers
                || (st.dirty.workers_soft
                    && self.workers_file_older_than(SOFT_WRITE_EVERY.as_secs_f64()))
            {
                durable::replace(d, WORKERS, &to_pretty(&st.workers)?, false)?;
                changed = true;
            }
            Ok::<_, Error>(())
        })?;
        if st.dirty.tasks {
            self.write_queue(st)?;
            synced_dirs = true;
            changed = true;
        }
        if synced_dirs {
            durable::sync_dir(d)?;
        }
        if !log_bytes.is_empty() {
            let _log = tracing::trace_span!("log").entered();
            durable::append_lines(&d.join(LOG), &log_bytes, true)?;
        }
        if changed {
            self.changes
                .fetch_add(1, std::sync::atomic::Ordering::Release);
        }
        // Only what is committed may be archived: the op's own change is on disk by now.
        // The op has succeeded; a compaction that fails here is retried by the next write,
        // and the board is consistent either way, so its error does not fail the op.
        if st.dirty.tasks {
            let (take, _kept) = rules::archivable(&st.tasks);
            if take.len() > st.settings.archive_after {
                let _ = tracing::trace_span!("archive").in_scope(|| self.compact(st, &take, now));
            }
        }
        Ok(())
    }

    /// Moves the committed tasks at `take` to the archive, then rewrites the queue without them.
    /// A crash in between leaves identical copies in both places; readers count them once and
    /// the next compaction does not append them again.
    pub(super) fn compact(&self, st: &mut State, take: &[usize], now: Timestamp) -> Result<usize> {
        let archived = self.archive(st, take, now)?;
        if archived > 0 {
            // The archived claims and completions leave the queue: keep their facts in the
            // worker file first (merged at load).
            durable::replace(&self.dir, WORKERS, &to_pretty(&st.workers)?, false)?;
            self.write_queue(st)?;
            durable::sync_dir(&self.dir)?;
        }
        Ok(archived)
    }

    /// True if `worker-status.json` was last written longer than `secs` ago (or is missing).
    fn workers_file_older_than(&self, secs: f64) -> bool {
        fs::metadata(self.dir.join(WORKERS))
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_none_or(|age| age.as_secs_f64() >= secs)
    }

    /// Appends the tasks at `take` to the archive and drops them from the in-memory queue.
    fn archive(&self, st: &mut State, take: &[usize], now: Timestamp) -> Result<usize> {
        let set: HashSet<usize> = take.iter().copied().collect();
        let moving: Vec<Task> = take.iter().map(|&i| st.tasks[i].clone()).collect();
        archive::append(&self.dir.join(ARCHIVE), &moving, now)?;
        let mut i = 0;
        st.tasks.retain(|_| {
            let keep = !set.contains(&i);
            i += 1;
            keep
        });
        st.dirty.tasks = true;
        Ok(moving.len())
    }
}
