//! A board in a directory on this machine.
//!
//! Every change takes the exclusive lock on `board.lock`, reads the files it needs, applies
//! the op with the pure rules, writes what changed (temp file, fsync, rename, directory fsync)
//! and unlocks. Reads take no lock: every file is replaced atomically, so a reader sees the
//! old or the new version, never a mix within one file.
//!
//! This file holds the handle and its cached reads of the board files; loading what ops need
//! and answering reads is in `load.rs`, applying a batch of changes under one lock in
//! `group_commit.rs`, writing what they changed in `commit.rs`.

mod checkpoint;
mod commit;
mod group_commit;
mod live;
mod load;
mod staged;
mod texts;
mod wait;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::damage::Damages;
use super::history::HistoryCache;
use super::json_file::{Cached, to_pretty};
pub use super::lock::LockGuard;
use super::paths::{self, BOARD, LOG, PROGRESS, QUEUE, TASKS_DIR, WORKERS};
use super::{Transport, durable};
use crate::error::{Error, Result};
use crate::op::{Op, Reply};
use crate::progress::Progress;
use crate::settings::{BoardFile, Settings};
#[cfg(test)]
use crate::task::Task;
use live::Live;

/// How a handle commits a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    /// One record appended to the journal (one fdatasync); the JSON files are rewritten as a
    /// checkpoint now and then (see `checkpoint.rs`). For handles that live on: `vine serve`,
    /// `vine pool`, a program's `Board`.
    Journal,
    /// The JSON files rewritten at once when the journal holds nothing (as a board without
    /// a journal always was), a record otherwise. For a process that makes one change and
    /// exits (a `vine` command): the files are never behind because of it.
    Files,
}

/// A board in a local directory.
#[derive(Debug, Clone)]
pub struct LocalStore {
    /// Writes a checkpoint when the board has been quiet, and when the last clone goes
    /// (declared first: dropped before the live board it writes).
    checkpointer: Arc<checkpoint::Checkpointer>,
    dir: PathBuf,
    /// How changes are committed.
    commit: Commit,
    /// The live board for changes (under the lock), shared by clones.
    live: Arc<Mutex<Live>>,
    /// The live board for reads (no lock), shared by clones.
    read_live: Arc<Mutex<Live>>,
    /// `board.json` as last parsed, reused while its bytes match.
    settings_cache: Cached<BoardFile>,
    /// The board directory, canonical (resolved once).
    canonical: Arc<std::sync::OnceLock<PathBuf>>,
    /// Commits through this handle (and its clones) that changed the queue or the workers.
    changes: Arc<AtomicU64>,
    /// The lock's files, kept open between changes.
    kept_lock: Arc<super::lock::KeptLock>,
    /// Instruction texts this handle wrote or read, for the claims that hand them out.
    texts: Arc<texts::Texts>,
    /// Instruction texts written ahead of the changes that add them (see `staged`).
    staged: Arc<staged::Staged>,
    /// The history the figures read, brought up to date from what the archive and the log
    /// gained since the last read (shared by clones: a server reads only the new lines).
    history: Arc<Mutex<HistoryCache>>,
}

impl LocalStore {
    /// Opens the board in `dir`, which must exist and hold a board (see [`LocalStore::init`]).
    /// Changes go to the journal ([`Commit::Journal`]).
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        if !dir.is_dir() {
            return Err(Error::NoBoard(format!(
                "no board at {}: the directory does not exist. Create one with `vine init {}`",
                dir.display(),
                dir.display()
            )));
        }
        if !dir.join(BOARD).exists() && !dir.join(QUEUE).exists() {
            return Err(Error::NoBoard(format!(
                "{} is not a board (it has neither {BOARD} nor {QUEUE}). Create one with `vine init {}`",
                dir.display(),
                dir.display()
            )));
        }
        Ok(LocalStore::at(dir))
    }

    fn at(dir: PathBuf) -> Self {
        let live = Arc::new(Mutex::new(Live::for_changes()));
        LocalStore {
            checkpointer: checkpoint::Checkpointer::new(&dir, &live),
            dir,
            commit: Commit::Journal,
            live,
            read_live: Arc::default(),
            settings_cache: Cached::default(),
            canonical: Arc::default(),
            changes: Arc::default(),
            kept_lock: Arc::default(),
            texts: Arc::default(),
            staged: Arc::default(),
            history: Arc::default(),
        }
    }

    /// The same board, committing changes as `commit` says.
    pub fn committing(mut self, commit: Commit) -> Self {
        self.commit = commit;
        self
    }

    /// Creates a board in `dir` (and the directory), keeping any board files already there;
    /// `settings`, when given, replace those in `board.json`.
    pub fn init(dir: impl Into<PathBuf>, settings: Option<Settings>) -> Result<Self> {
        let dir = dir.into();
        fs::create_dir_all(dir.join(TASKS_DIR)).map_err(|e| Error::io("creating", &dir, e))?;
        let store = LocalStore::at(dir);
        let lock = store.lock()?;
        // The lock file gets the stamp the board clock rewrites, so that refused changes
        // leave its content as it is.
        lock.start_clock();
        let d = &store.dir;
        if settings.is_some() || !d.join(BOARD).exists() {
            let board = BoardFile {
                settings: settings.unwrap_or_default(),
                ..BoardFile::default()
            };
            durable::replace(d, BOARD, &to_pretty(&board)?, true)?;
        }
        if !d.join(QUEUE).exists() {
            durable::replace(d, QUEUE, b"[]\n", true)?;
        }
        if !d.join(WORKERS).exists() {
            durable::replace(d, WORKERS, b"{}\n", true)?;
        }
        if !d.join(PROGRESS).exists() {
            durable::replace(d, PROGRESS, &to_pretty(&Progress::default())?, true)?;
        }
        if !d.join(LOG).exists() {
            durable::append_lines(&d.join(LOG), b"", true)?;
        }
        durable::sync_dir(d)?;
        drop(lock);
        Ok(store)
    }

    /// The board directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// How many commits through this handle (and its clones) changed the queue or the
    /// workers: a waiter that saw it change knows the board may have work for it.
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::Acquire)
    }

    /// Takes the board's exclusive lock (blocks until it is free), through the lock files this
    /// handle and its clones keep open. See [`crate::store::lock`].
    pub fn lock(&self) -> Result<LockGuard<'_>> {
        self.kept_lock.lock(&self.dir)
    }

    /// The board's settings (defaults when `board.json` is absent).
    pub fn settings(&self) -> Result<Settings> {
        self.settings_with(&mut Damages::refuse())
    }

    /// The board's settings; a damaged `board.json` gives the defaults (`vine repair` resets
    /// it to them) when `dmg` salvages.
    fn settings_with(&self, dmg: &mut Damages) -> Result<Settings> {
        let board = self
            .settings_cache
            .read(&self.dir.join(BOARD), dmg, |_| BoardFile::default())?;
        Ok(board.settings)
    }

    /// Resolves a board-relative path inside this board (see [`paths::resolve`]).
    fn resolve(&self, rel: &str) -> Result<PathBuf> {
        paths::resolve_in(self.root()?, rel)
    }

    /// The board directory, canonical.
    fn root(&self) -> Result<&PathBuf> {
        match self.canonical.get() {
            Some(r) => Ok(r),
            None => {
                let r = self
                    .dir
                    .canonicalize()
                    .map_err(|e| Error::io("opening the board", &self.dir, e))?;
                Ok(self.canonical.get_or_init(|| r))
            }
        }
    }

    /// Reads a task's instruction file by board path, confined to the board, as
    /// [`LocalStore::read_board_file`] does; a text this handle wrote or read before is used
    /// while its file is unchanged (see `texts`).
    fn read_instructions(&self, rel: &str) -> Result<String> {
        let root = self.root()?;
        if let Some(text) = self.texts.get(rel, &root.join(rel)) {
            return Ok(text);
        }
        let p = paths::resolve_in(root, rel)?;
        self.texts
            .read(rel, &p)
            .map_err(|e| Error::io("reading", p, e))
    }

    /// Reads a board file by board-relative path, confined to the board.
    pub fn read_board_file(&self, rel: &str) -> Result<String> {
        let p = self.resolve(rel)?;
        fs::read_to_string(&p).map_err(|e| Error::io("reading", p, e))
    }

    /// Reads a board file's bytes by board-relative path, confined to the board (for moving
    /// a board into PostgreSQL).
    #[cfg(feature = "postgres")]
    pub(crate) fn read_board_file_bytes(&self, rel: &str) -> Result<Vec<u8>> {
        let p = self.resolve(rel)?;
        fs::read(&p).map_err(|e| Error::io("reading", p, e))
    }

    /// The tasks on the queue, for reading.
    #[cfg(test)]
    fn queue(&self) -> Result<Vec<Task>> {
        let mut live = self.live_for_read();
        Ok(live
            .refresh(&self.dir, false, &mut Damages::refuse())?
            .tasks
            .clone())
    }

    /// The live board for changes.
    fn live(&self) -> MutexGuard<'_, Live> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The live board for reads.
    fn read_live(&self) -> MutexGuard<'_, Live> {
        self.read_live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The live board a read brings up to date: the one changes use, when it is loaded and no
    /// change holds it (so a handle that reads and changes the board follows the journal
    /// once, and a read after this handle's own change has nothing to read); else the
    /// reads' own, so a read never waits for a change in progress.
    fn live_for_read(&self) -> MutexGuard<'_, Live> {
        let changes = match self.live.try_lock() {
            Ok(g) => Some(g),
            Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        };
        if let Some(g) = changes
            && g.is_loaded()
        {
            return g;
        }
        self.read_live()
    }

    /// The history for the figures, with what the archive and the log gained since the last
    /// read; lines that do not parse go to `dmg`.
    fn history(&self, dmg: &mut Damages) -> Result<Arc<crate::metrics::History>> {
        self.history
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .refresh(&self.dir, dmg)
    }

    /// Writes the instruction texts `op` will write as files ahead of its change, outside the
    /// lock (see `staged`); its batch then only renames them. Does nothing for other ops, or
    /// when the texts cannot be written (the commit writes them then).
    pub fn stage(&self, op: &Op) {
        let texts = op.instruction_texts();
        if texts.is_empty() {
            return;
        }
        if let Ok(dir) = self.resolve(TASKS_DIR) {
            let _ = self.staged.stage(&dir, &texts);
        }
    }

    /// Carries out `op` once per request key (see `rules::apply_keyed`): a retried request
    /// gets the reply of its first application. A turn-ended op that asks for a wait is held
    /// while it would only wait (see `wait.rs`).
    pub fn execute_keyed(&self, op: Op, key: Option<&str>) -> Result<Reply> {
        match op {
            Op::TurnEnded(t) if t.wait_secs > 0 => self.execute_waiting(t, key),
            op => self.execute_once(op, key),
        }
    }

    /// Carries out `op` once (no wait).
    fn execute_once(&self, op: Op, key: Option<&str>) -> Result<Reply> {
        if op.is_read_only() {
            self.read(op)
        } else {
            let mut replies = self.execute_batch(vec![(op, key.map(str::to_string))]);
            replies
                .pop()
                .unwrap_or_else(|| Err(Error::Protocol("a batch of one gave no reply".into())))
        }
    }
}

impl super::BatchStore for LocalStore {
    fn execute_batch(&self, ops: Vec<(Op, Option<String>)>) -> Vec<Result<Reply>> {
        LocalStore::execute_batch(self, ops)
    }

    fn stage(&self, op: &Op) {
        self.stage(op);
    }

    fn changes(&self) -> u64 {
        LocalStore::changes(self)
    }

    fn files(&self) -> Option<&LocalStore> {
        Some(self)
    }

    fn read_board_file(&self, rel: &str) -> Result<String> {
        LocalStore::read_board_file(self, rel)
    }

    fn set_settings(&self, _settings: Settings) -> Result<()> {
        Err(Error::Invalid(
            "a board kept in files takes its settings from board.json".into(),
        ))
    }
}

impl Transport for LocalStore {
    fn execute(&self, op: Op) -> Result<Reply> {
        self.execute_keyed(op, None)
    }

    fn location(&self) -> String {
        self.dir.display().to_string()
    }
}

#[cfg(test)]
mod journal_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op::{self, NewTask};
    use crate::store::log;

    /// Adds a task described `d`; its id.
    pub(super) fn add(store: &LocalStore, d: &str) -> u64 {
        let task = NewTask {
            description: d.into(),
            ..NewTask::default()
        };
        match store.execute(Op::Add(op::Add { task })) {
            Ok(Reply::Added { tasks }) => tasks[0].id,
            other => panic!("{other:?}"),
        }
    }

    /// The staged temp files in the board's `tasks/`.
    fn staged_temps(dir: &Path) -> Vec<std::path::PathBuf> {
        let mut v: Vec<_> = std::fs::read_dir(dir.join(TASKS_DIR))
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        v.retain(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(".staged-"))
        });
        v
    }

    fn add_with_text(text: &str) -> Op {
        Op::Add(op::Add {
            task: NewTask {
                description: "d".into(),
                instructions: Some(text.into()),
                ..NewTask::default()
            },
        })
    }

    #[test]
    fn an_instruction_text_staged_ahead_becomes_the_file_by_a_rename() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::init(dir.path(), None).unwrap();
        let op = add_with_text("staged text");
        store.stage(&op);
        let temps = staged_temps(dir.path());
        assert_eq!(temps.len(), 1, "{temps:?}");
        assert_eq!(std::fs::read_to_string(&temps[0]).unwrap(), "staged text");
        let staged_inode = std::fs::metadata(&temps[0]).unwrap().ino();
        let task = match store.execute(op) {
            Ok(Reply::Added { tasks }) => tasks[0].clone(),
            other => panic!("{other:?}"),
        };
        let file = dir.path().join(task.instruction_file.unwrap());
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "staged text");
        assert_eq!(std::fs::metadata(&file).unwrap().ino(), staged_inode);
        assert_eq!(staged_temps(dir.path()), Vec::<std::path::PathBuf>::new());
        // Not staged ahead (the library's own path): written all the same, nothing left over.
        let task = match store.execute(add_with_text("written in the batch")) {
            Ok(Reply::Added { tasks }) => tasks[0].clone(),
            other => panic!("{other:?}"),
        };
        let file = dir.path().join(task.instruction_file.unwrap());
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            "written in the batch"
        );
        assert_eq!(staged_temps(dir.path()), Vec::<std::path::PathBuf>::new());
    }

    #[test]
    fn texts_staged_for_a_refused_op_or_one_that_never_came_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::init(dir.path(), None).unwrap();
        // A plan refused by its rule (an entry after a key no entry has).
        let refused = Op::AddPlan(op::AddPlan {
            tasks: vec![op::PlanTask {
                key: Some("a".into()),
                task: NewTask {
                    description: "d".into(),
                    instructions: Some("never written".into()),
                    ..NewTask::default()
                },
                after_keys: vec!["nobody".into()],
            }],
        });
        store.stage(&refused);
        assert_eq!(staged_temps(dir.path()).len(), 1);
        assert!(store.execute(refused).is_err());
        assert_eq!(staged_temps(dir.path()), Vec::<std::path::PathBuf>::new());
        // An add refused before the lock (a context file outside the board).
        let outside = Op::Add(op::Add {
            task: NewTask {
                description: "d".into(),
                instructions: Some("not written either".into()),
                context_files: vec!["../elsewhere.md".into()],
                ..NewTask::default()
            },
        });
        store.stage(&outside);
        assert_eq!(staged_temps(dir.path()).len(), 1);
        assert!(store.execute(outside).is_err());
        assert_eq!(staged_temps(dir.path()), Vec::<std::path::PathBuf>::new());
        // Staged by a request whose op never reached a batch: gone with the handle.
        store.stage(&add_with_text("orphan"));
        assert_eq!(staged_temps(dir.path()).len(), 1);
        drop(store);
        assert_eq!(staged_temps(dir.path()), Vec::<std::path::PathBuf>::new());
    }

    #[test]
    fn a_claim_gets_its_instruction_file_as_it_is_now_even_when_this_handle_wrote_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::init(dir.path(), None).unwrap();
        let add_with = |text: &str| {
            let task = NewTask {
                description: "d".into(),
                instructions: Some(text.into()),
                ..NewTask::default()
            };
            match store.execute(Op::Add(op::Add { task })) {
                Ok(Reply::Added { tasks }) => tasks[0].clone(),
                other => panic!("{other:?}"),
            }
        };
        let claim = || match store.execute(Op::Claim(op::Claim { worker: "w".into() })) {
            Ok(Reply::Claimed { claim: Some(c), .. }) => c,
            other => panic!("{other:?}"),
        };
        let done = |id: u64| {
            store
                .execute(Op::Complete(op::Complete {
                    task: id,
                    worker: "w".into(),
                    attempt: None,
                    result: None,
                }))
                .unwrap();
        };
        // Written and handed out by the same handle.
        add_with("as written");
        let c = claim();
        assert_eq!(c.instructions.as_deref(), Some("as written"));
        done(c.task.id);
        // Edited by hand after it was written: the claim reads the edit.
        let t2 = add_with("before the edit");
        let file = t2.instruction_file.clone().unwrap();
        std::fs::write(dir.path().join(&file), "after the edit, longer").unwrap();
        let c = claim();
        assert_eq!(c.instructions.as_deref(), Some("after the edit, longer"));
        done(c.task.id);
        // The tasks directory swapped for a symlink to a directory outside the board that
        // holds a file of the same name and length: refused, not served from memory.
        #[cfg(unix)]
        {
            let t3 = add_with("inside");
            let rel = t3.instruction_file.clone().unwrap();
            let outside = tempfile::tempdir().unwrap();
            let name = Path::new(&rel).file_name().unwrap();
            std::fs::write(outside.path().join(name), "insidE").unwrap();
            let tasks = dir.path().join(TASKS_DIR);
            std::fs::rename(&tasks, dir.path().join("tasks-moved")).unwrap();
            std::os::unix::fs::symlink(outside.path(), &tasks).unwrap();
            let c = claim();
            assert_eq!(c.task.id, t3.id);
            assert_eq!(c.instructions, None, "{:?}", c.instructions);
            assert!(
                c.instructions_error
                    .as_deref()
                    .is_some_and(|e| e.contains("outside the board")),
                "{:?}",
                c.instructions_error
            );
        }
    }

    #[test]
    fn a_batch_applies_each_op_as_if_alone_and_commits_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::init(dir.path(), None).unwrap();
        let a = add(&store, "a");
        let b = add(&store, "b");
        let claim = |w: &str| (Op::Claim(op::Claim { worker: w.into() }), None);
        let bad = (
            Op::Complete(op::Complete {
                task: a,
                worker: "nobody".into(),
                attempt: None,
                result: Some("late".into()),
            }),
            None,
        );
        let replies = store.execute_batch(vec![
            claim("w1"),
            bad,
            claim("w2"),
            claim("w3"),
            (Op::Status(op::Status), None),
        ]);
        let claimed: Vec<Option<u64>> = replies
            .iter()
            .map(|r| match r {
                Ok(Reply::Claimed { claim, .. }) => claim.as_ref().map(|c| c.task.id),
                _ => None,
            })
            .collect();
        assert_eq!(claimed[0], Some(a));
        assert!(matches!(replies[1], Err(Error::Conflict(_))));
        assert_eq!(claimed[2], Some(b));
        assert!(matches!(replies[3], Ok(Reply::Claimed { claim: None, .. })));
        assert!(matches!(replies[4], Ok(Reply::Status { .. })));
        // The committed board says the same: both claimed once, the refused result kept.
        let queue = store.queue().unwrap();
        assert_eq!(queue[0].claimed_by.as_deref(), Some("w1"));
        assert_eq!(queue[1].claimed_by.as_deref(), Some("w2"));
        let log = log::all(&store.dir().join(LOG), &mut Damages::refuse()).unwrap();
        assert_eq!(log.len(), 1);
        assert_eq!(log[0].message, "late");
    }

    #[test]
    fn a_failed_op_in_a_batch_is_undone_before_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::init(dir.path(), None).unwrap();
        let bad_plan = Op::AddPlan(op::AddPlan {
            tasks: vec![
                crate::op::PlanTask {
                    key: Some("x".into()),
                    task: NewTask {
                        description: "ok".into(),
                        ..NewTask::default()
                    },
                    after_keys: vec![],
                },
                crate::op::PlanTask {
                    key: None,
                    task: NewTask::default(),
                    after_keys: vec![],
                },
            ],
        });
        let good = Op::Add(op::Add {
            task: NewTask {
                description: "good".into(),
                ..NewTask::default()
            },
        });
        let replies = store.execute_batch(vec![(bad_plan, None), (good, Some("k".into()))]);
        assert!(matches!(replies[0], Err(Error::Invalid(_))));
        assert!(matches!(replies[1], Ok(Reply::Added { .. })));
        let queue = store.queue().unwrap();
        assert_eq!(queue.len(), 1);
        assert_eq!(queue[0].description, "good");
        assert_eq!(queue[0].request_key.as_deref(), Some("k"));
    }
}
