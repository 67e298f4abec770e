//! Group commit: several ops under one lock, one load and one commit (one fsync for all of
//! them), each applied as if it had run alone in order. A failed op leaves no change but the
//! log entries it must keep. Compact and repair, which work on files, are carried out here.

use super::live::Live;
use super::staged::Reserved;
use super::{LocalStore, checkpoint};
use crate::error::{Error, Result};
use crate::op::{ClaimedTask, Op, Reply};
use crate::reply::RepairedFile;
use crate::rules::{self, Needs};
use crate::store::damage::Damages;
use crate::store::paths::{ARCHIVE, JOURNAL, LOG, TASKS_DIR};
use crate::store::{log, repair};
use crate::validate;

impl LocalStore {
    /// Carries out several ops under one lock and one commit (a group commit: one fsync for
    /// all of them). Each op gets its own reply, as if it had run alone in order; a failed op
    /// leaves no change but the log entries it must keep. Reads are answered without the lock.
    pub fn execute_batch(&self, ops: Vec<(Op, Option<String>)>) -> Vec<Result<Reply>> {
        crate::store::split_batch(ops, |op| self.read(op), |ops| self.write_batch(ops))
    }

    fn write_batch(&self, ops: Vec<(Op, Option<String>)>) -> Vec<Result<Reply>> {
        let n = ops.len();
        let fail_all = |e: Error| -> Vec<Result<Reply>> {
            let msg = e.to_string();
            let mut v = vec![Err(e)];
            v.extend((1..n).map(|_| {
                Err(Error::io(
                    "committing",
                    "",
                    std::io::Error::other(msg.clone()),
                ))
            }));
            v
        };
        // Spans name each step of a change (trace level: free without a subscriber); the
        // benchmark's breakdown of a claim is read from them.
        let _write = tracing::trace_span!("write", ops = n).entered();
        // What the rules cannot check (files on the board, symlinks) is looked at before the
        // lock: the lock does not guard the file system, and other changes need not wait
        // while an add's instruction and context files are looked at.
        let refused: Vec<Option<Error>> = ops
            .iter()
            .map(|(op, _)| match op {
                Op::Compact(_) | Op::Repair(_) => None,
                _ => self.precheck(&op.needs()).err(),
            })
            .collect();
        // Instruction texts are written to temp files before the lock (unless `vine serve`
        // staged them already); the commit renames them (see `staged`).
        let mut reserved = Reserved::of(ops.iter().flat_map(|(op, _)| op.instruction_texts()));
        if !reserved.is_empty() {
            let texts: Vec<&str> = ops
                .iter()
                .zip(&refused)
                .filter(|(_, r)| r.is_none())
                .flat_map(|((op, _), _)| op.instruction_texts())
                .collect();
            if let Ok(dir) = self.resolve(TASKS_DIR) {
                self.staged.stage_missing(&dir, &texts);
            }
        }
        let replies = self.write_reserved(ops, refused, &mut reserved, fail_all);
        reserved.release(&self.staged);
        replies
    }

    /// [`LocalStore::write_batch`] from the lock on: `refused` holds what the look before the
    /// lock refused, `reserved` the staged texts the batch may take.
    fn write_reserved(
        &self,
        ops: Vec<(Op, Option<String>)>,
        refused: Vec<Option<Error>>,
        reserved: &mut Reserved,
        fail_all: impl Fn(Error) -> Vec<Result<Reply>>,
    ) -> Vec<Result<Reply>> {
        let n = ops.len();
        let lock = match tracing::trace_span!("lock").in_scope(|| self.lock()) {
            Ok(l) => l,
            Err(e) => return fail_all(e),
        };
        let mut live = self.live();
        if n == 1 && matches!(ops[0].0, Op::Repair(_)) {
            let repaired = self.repair(&mut live);
            live.forget();
            return vec![repaired];
        }
        let loaded = tracing::trace_span!("load").in_scope(|| {
            live.refresh(&self.dir, true, &mut Damages::refuse())
                .map(|_| ())
        });
        if let Err(e) = loaded {
            live.forget();
            return fail_all(e);
        }
        let Some(b) = live.loaded() else {
            return fail_all(Error::Protocol("the board was not loaded".into()));
        };
        let mut st = match tracing::trace_span!("load").in_scope(|| self.load_change(b, &ops)) {
            Ok(st) => st,
            Err(e) => {
                live.forget();
                return fail_all(e);
            }
        };
        // The board clock (see `clock`): the file system's time when this process's is off.
        let now = lock.now();
        let mut replies: Vec<Option<Result<Reply>>> = Vec::with_capacity(n);
        let mut compacted = false;
        let mut applied = 0;
        for ((op, key), refused) in ops.into_iter().zip(refused) {
            match op {
                // In its place in the batch; the checkpoint follows the batch's commit.
                Op::Compact(_) => {
                    let done = self.compact_in_batch(&mut st, now);
                    compacted |= done.is_ok();
                    applied += usize::from(done.is_ok());
                    replies.push(Some(done));
                    continue;
                }
                Op::Repair(_) => {
                    replies.push(Some(Err(Error::Invalid(
                        "repair runs alone, not in a batch".into(),
                    ))));
                    continue;
                }
                _ => {}
            }
            if let Some(e) = refused {
                replies.push(Some(Err(e)));
                continue;
            }
            // Alone, a failed op is simply not committed; in a batch, undo it before the next.
            let reply = rules::apply_in_batch(&mut st, op, key.as_deref(), now, n > 1);
            applied += usize::from(reply.is_ok());
            replies.push(Some(reply));
        }
        // A failed op alone is not undone: what it may have changed is not kept.
        let mut spoiled =
            applied == 0 && n == 1 && (st.dirty != Default::default() || !st.touched.is_empty());
        let finished_on_queue = st.finished_on_queue();
        b.tasks = std::mem::take(&mut st.tasks);
        b.derived = std::mem::take(&mut st.derived);
        if compacted {
            b.reindex();
        }
        b.workers = std::mem::take(&mut st.workers);
        b.progress = std::mem::take(&mut st.progress);
        b.sessions = std::mem::take(&mut st.sessions);
        let committed = tracing::trace_span!("commit").in_scope(|| {
            if spoiled {
                let mut outbox = std::mem::take(&mut st.outbox);
                log::append(&self.dir.join(LOG), &mut outbox)
            } else if applied > 0 || !st.outbox.is_empty() {
                self.commit(&mut st, b, now, finished_on_queue, reserved)
            } else {
                Ok(())
            }
        });
        if compacted && committed.is_ok() {
            // `vine compact` leaves the JSON files as the whole board.
            let written = checkpoint::write(&self.dir, b, false);
            spoiled |= written.is_err();
            if written.is_ok() {
                self.checkpointer.written();
            }
        }
        match &committed {
            Ok(()) if spoiled => live.forget(),
            Ok(()) => {
                if applied > 0 {
                    lock.record(now);
                }
            }
            Err(_) => live.forget(),
        }
        drop(live);
        tracing::trace_span!("unlock").in_scope(|| drop(lock));
        let mut replies: Vec<Result<Reply>> = replies
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(Error::Protocol("an op got no reply".into()))))
            .collect();
        if let Err(e) = committed {
            let msg = e.to_string();
            return replies
                .into_iter()
                .map(|r| match r {
                    Ok(_) => Err(Error::io(
                        "committing",
                        &self.dir,
                        std::io::Error::other(msg.clone()),
                    )),
                    err => err,
                })
                .collect();
        }
        for r in replies.iter_mut() {
            if let Some(c) = r.as_mut().ok().and_then(Reply::claimed_task_mut) {
                tracing::trace_span!("instructions").in_scope(|| self.add_instructions(c));
            }
        }
        replies
    }

    /// `vine compact` in a batch: the finished tasks that may leave the queue are appended
    /// to the archive (fsynced) and leave the state; the batch's record says they are gone.
    /// A crash before that record leaves identical copies in both places; readers count
    /// them once and the next compaction does not append them again.
    fn compact_in_batch(
        &self,
        st: &mut rules::State,
        now: crate::time::Timestamp,
    ) -> Result<Reply> {
        let (take, kept) = rules::archivable(&st.tasks);
        let moving: Vec<_> = take
            .iter()
            .filter_map(|&i| st.tasks.get(i).cloned())
            .collect();
        if !moving.is_empty() {
            crate::store::archive::append(&self.dir.join(ARCHIVE), &moving, now)?;
            let ids: std::collections::BTreeSet<u64> = moving.iter().map(|t| t.id).collect();
            st.tasks.retain(|t| !ids.contains(&t.id));
            st.touched.extend(ids);
            st.dirty.tasks = true;
            // Their claims and completions leave the queue: the workers keep them.
            st.dirty.workers = true;
        }
        Ok(Reply::Compacted {
            archived: moving.len(),
            kept,
        })
    }

    /// `vine repair`: the JSON files repaired (`store::repair`), then the journal: its good
    /// records applied over them and written out as a checkpoint, a damaged journal copied
    /// aside first. The caller holds the lock.
    fn repair(&self, live: &mut Live) -> Result<Reply> {
        let Reply::Repaired { mut files } = repair::repair(&self.dir)? else {
            return Err(Error::Protocol("repair gave another reply".into()));
        };
        live.forget();
        let mut dmg = Damages::salvage();
        let b = live.refresh(&self.dir, true, &mut dmg)?;
        let found = dmg.into_found();
        let damaged = found.iter().find(|d| d.file == JOURNAL);
        if let Some(d) = damaged {
            let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ").to_string();
            files.push(RepairedFile {
                file: JOURNAL.into(),
                backup: repair::backup(&self.dir, JOURNAL, &stamp)?,
                kept: b.since.records as usize,
                dropped: vec![d.detail.clone()],
            });
        }
        if b.since.records > 0 || damaged.is_some() {
            checkpoint::write(&self.dir, b, true)?;
            self.checkpointer.written();
        }
        Ok(Reply::Repaired { files })
    }

    /// Checks what the rules cannot: that a named instruction file exists on the board, and
    /// that no instruction or context file leads outside it through a symlink.
    fn precheck(&self, needs: &Needs) -> Result<()> {
        for f in &needs.instruction_files {
            validate::board_path("instruction file", f)?;
            let p = self.resolve(f)?;
            if !p.is_file() {
                return Err(Error::Invalid(format!(
                    "instruction file {f:?} is not on the board; write it first, or pass the text with --instructions-from"
                )));
            }
        }
        for f in &needs.context_files {
            validate::board_path("context file", f)?;
            self.resolve(f)?;
        }
        Ok(())
    }

    /// Gives a claim the text of its instruction file, or why it could not be read.
    fn add_instructions(&self, c: &mut ClaimedTask) {
        if let Some(f) = c.task.instruction_file.clone() {
            match self.read_instructions(&f) {
                Ok(text) => c.instructions = Some(text),
                Err(e) => c.instructions_error = Some(e.to_string()),
            }
        }
    }
}
