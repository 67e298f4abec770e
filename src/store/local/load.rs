//! Loading what ops need into a `rules::State` (see `rules::Needs`), and answering reads from
//! it. A change loads under the lock and refuses damage; a read takes no lock, salvages what it
//! can and reports the damaged files with its answer.

use std::collections::HashSet;

use super::LocalStore;
use super::live::Loaded;
use crate::error::{Error, Result};
use crate::op::{Op, Reply};
use crate::rules::{self, LogNeed, Needs, State};
use crate::store::damage::Damages;
use crate::store::paths::{ARCHIVE, LOG};
use crate::store::{archive, log};
use crate::task::TaskStatus;

/// How many of the log's last lines a keyed send or ask searches for an earlier application.
const RECENT_KEYED: usize = 1000;

impl LocalStore {
    /// The state the changes in `ops` (each with its request key, if any) are applied to:
    /// the live board `b` (its tasks, workers, progress and sessions moved in; the caller
    /// gives them back), the settings, and the rest as the ops' [`Needs`] say. A change is
    /// never made from a damaged file.
    pub(super) fn load_change(
        &self,
        b: &mut Loaded,
        ops: &[(Op, Option<String>)],
    ) -> Result<State> {
        let mut need = Needs::default();
        let mut recent = false;
        for (op, key) in ops {
            let n = op.needs();
            need.next_id |= n.next_id;
            need.next_seq |= n.next_seq;
            // A change reads the whole log, or its recent entries when keyed (filtered reads
            // of the log are for reads).
            match n.log {
                LogNeed::All => need.log = LogNeed::All,
                LogNeed::RecentWhenKeyed => recent |= key.is_some(),
                LogNeed::None | LogNeed::Matching(_) | LogNeed::Questions => {}
            }
            need.task_ids.extend(n.task_ids);
        }
        let dmg = &mut Damages::refuse();
        let settings = tracing::trace_span!("settings").in_scope(|| self.settings_with(dmg))?;
        let mut st = State {
            tasks: std::mem::take(&mut b.tasks),
            workers: std::mem::take(&mut b.workers),
            progress: std::mem::take(&mut b.progress),
            sessions: std::mem::take(&mut b.sessions),
            settings,
            derived: std::mem::take(&mut b.derived),
            ..State::default()
        };
        if need.next_id {
            let max_queue = st.tasks.iter().map(|t| t.id).max().unwrap_or(0);
            let max_arch = archive::totals(&self.dir.join(ARCHIVE), dmg)?.max_id;
            st.min_next_id = max_queue.max(max_arch) + 1;
        }
        if need.next_seq {
            st.next_seq = log::next_seq(&self.dir.join(LOG), dmg)?;
        }
        if need.log == LogNeed::All {
            st.log = log::all(&self.dir.join(LOG), dmg)?;
        } else if recent {
            st.log = log::recent(&self.dir.join(LOG), RECENT_KEYED, dmg)?;
        }
        self.load_archived(&mut st, &need.task_ids, dmg)?;
        Ok(st)
    }

    /// Loads what a read needs, with damaged files reported to `dmg`.
    fn load_read(&self, need: &Needs, dmg: &mut Damages) -> Result<State> {
        let mut st = State::default();
        if need.queue || need.progress || need.sessions {
            let mut live = self.live_for_read();
            let b = live.refresh(&self.dir, false, dmg)?;
            if need.queue {
                st.tasks = b.tasks.clone();
                st.workers = b.workers.clone();
            }
            if need.progress {
                st.progress = b.progress.clone();
            }
            if need.sessions {
                st.sessions = b.sessions.clone();
            }
        }
        if need.settings {
            st.settings = self.settings_with(dmg)?;
        }
        let archive_path = self.dir.join(ARCHIVE);
        if need.archive_counts {
            st.archived_counts = archive::totals(&archive_path, dmg)?.by_status();
            // The finished tasks on the queue that a compaction may have archived already.
            let finished = st
                .tasks
                .iter()
                .filter(|t| matches!(t.status, TaskStatus::Completed | TaskStatus::Cancelled))
                .count();
            st.archive_tail = archive::tail_ids(&archive_path, finished, dmg)?;
        }
        let log_path = self.dir.join(LOG);
        match &need.log {
            LogNeed::None => {}
            LogNeed::RecentWhenKeyed => st.log = log::recent(&log_path, RECENT_KEYED, dmg)?,
            LogNeed::All => st.log = log::all(&log_path, dmg)?,
            LogNeed::Matching(filter) => st.log = log::read(&log_path, filter, dmg)?,
            LogNeed::Questions => st.log = log::questions_and_answers(&log_path, dmg)?,
        }
        if need.archive_all {
            st.archived_tasks = archive::all(&archive_path, dmg)?
                .into_iter()
                .map(|t| (t.id, t))
                .collect();
        }
        if need.history {
            st.history = self.history(dmg)?;
        }
        self.load_archived(&mut st, &need.task_ids, dmg)?;
        Ok(st)
    }

    /// Looks the tasks among `ids` that are not on the queue up in the archive.
    fn load_archived(&self, st: &mut State, ids: &[u64], dmg: &mut Damages) -> Result<()> {
        let missing: HashSet<u64> = ids
            .iter()
            .copied()
            .filter(|id| st.position(*id).is_none())
            .collect();
        if !missing.is_empty() {
            let found = archive::find(&self.dir.join(ARCHIVE), &missing, dmg)?;
            st.archived = found.iter().map(|(id, t)| (*id, t.status)).collect();
            st.archived_tasks.extend(found);
        }
        Ok(())
    }

    /// Answers a read with the pure rules (`rules::read`), from what it needs loaded. Damaged
    /// files do not stop it: it shows what can be read (salvaged as `vine repair` would,
    /// nothing written) and returns [`Error::DamagedRead`] with the reply and the damaged files.
    pub(super) fn read(&self, op: Op) -> Result<Reply> {
        let mut dmg = Damages::salvage();
        let now = crate::time::now();
        let result = self
            .load_read(&op.needs(), &mut dmg)
            .and_then(|mut st| rules::read(&mut st, op, now));
        let damage = dmg.into_found();
        match (result, damage.first()) {
            (result, None) => result,
            (Ok(reply), Some(_)) => Err(Error::DamagedRead {
                reply: Box::new(reply),
                damage,
            }),
            // Not found in what could be read: it may be in what could not.
            (Err(Error::UnknownTask(id)), Some(d)) => Err(Error::Damaged {
                path: self.dir.join(&d.file),
                detail: format!(
                    "{}; task {id} is not in what can be read, it may be in what cannot",
                    d.detail
                ),
            }),
            (Err(e), Some(_)) => Err(e),
        }
    }
}
