//! Group commit: several ops under one lock, one load and one commit (one fsync for all of
//! them), each applied as if it had run alone in order. A failed op leaves no change but the
//! log entries it must keep. Compact and repair, which work on files, are carried out here.

use super::LocalStore;
use crate::error::{Error, Result};
use crate::op::{ClaimedTask, Op, Reply};
use crate::rules::{self, Needs};
use crate::store::{log, paths::LOG, repair};
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
        let lock = match tracing::trace_span!("lock").in_scope(|| self.lock()) {
            Ok(l) => l,
            Err(e) => return fail_all(e),
        };
        if n == 1 && matches!(ops[0].0, Op::Repair(_)) {
            return vec![repair::repair(&self.dir)];
        }
        let mut st = match tracing::trace_span!("load").in_scope(|| self.load_change(&ops)) {
            Ok(st) => st,
            Err(e) => return fail_all(e),
        };
        // The board clock (see `clock`): the file system's time when this process's is off.
        let now = lock.now();
        let mut replies = Vec::with_capacity(n);
        let mut applied = 0;
        for (op, key) in ops {
            if let Op::Compact(_) | Op::Repair(_) = op {
                let (take, kept) = rules::archivable(&st.tasks);
                replies.push(match op {
                    Op::Compact(_) => self
                        .compact(&mut st, &take, now)
                        .map(|archived| Reply::Compacted { archived, kept }),
                    _ => Err(Error::Invalid("repair runs alone, not in a batch".into())),
                });
                continue;
            }
            if let Err(e) = self.precheck(&op.needs()) {
                replies.push(Err(e));
                continue;
            }
            // Alone, a failed op is simply not committed; in a batch, undo it before the next.
            let reply = rules::apply_in_batch(&mut st, op, key.as_deref(), now, n > 1);
            applied += usize::from(reply.is_ok());
            replies.push(reply);
        }
        let committed = tracing::trace_span!("commit").in_scope(|| {
            if applied > 0 {
                self.commit(&mut st, now)
            } else {
                log::append(&self.dir.join(LOG), &mut st.outbox)
            }
        });
        match &committed {
            Ok(()) => {
                if applied > 0 {
                    lock.record(now);
                }
                self.keep_queue(&mut st, true)
            }
            Err(_) => self.cache().clear(),
        }
        tracing::trace_span!("unlock").in_scope(|| drop(lock));
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
            match self.read_board_file(&f) {
                Ok(text) => c.instructions = Some(text),
                Err(e) => c.instructions_error = Some(e.to_string()),
            }
        }
    }
}
