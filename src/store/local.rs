//! A board in a directory on this machine.
//!
//! Every change takes the exclusive lock on `board.lock`, reads the files it needs, applies
//! the op with the pure rules, writes what changed (temp file, fsync, rename, directory fsync)
//! and unlocks. Reads take no lock: every file is replaced atomically, so a reader sees the
//! old or the new version, never a mix within one file.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::damage::{self, Damages};
pub use super::lock::LockGuard;
use super::paths::{self, ARCHIVE, BOARD, LOG, PROGRESS, QUEUE, TASKS_DIR, WORKERS};
use super::queue_file::{self, QueueCache};
use super::{Transport, archive, durable, log, repair, salvage};
use crate::error::{Error, Result};
use crate::op::{Op, Reply, TaskView};
use crate::progress::Progress;
use crate::rules::{self, State};
use crate::settings::{BoardFile, Settings};
use crate::task::{Task, TaskStatus};
use crate::time::Timestamp;
use crate::worker::Worker;

/// Worker entries changed only in what the queue also records are written at most this often
/// (seconds); readers merge the queue's records back (`rules::merge_queue_facts`).
const SOFT_WRITE_EVERY: f64 = 1.0;

/// How many of the log's last lines a keyed send or ask searches for an earlier application.
const RECENT_KEYED: usize = 1000;

/// A board in a local directory.
#[derive(Debug, Clone)]
pub struct LocalStore {
    dir: PathBuf,
    /// Tasks as last read or written, so unchanged ones are not parsed or serialized again.
    queue_cache: Arc<Mutex<QueueCache>>,
    /// `board.json` and `worker-status.json` as last parsed, reused while their bytes match.
    settings_cache: Slot<BoardFile>,
    workers_cache: Slot<BTreeMap<String, Worker>>,
    /// The board directory, canonical (resolved once).
    canonical: Arc<std::sync::OnceLock<PathBuf>>,
}

/// A shared place for a parsed board file.
type Slot<T> = Arc<Mutex<Option<Parsed<T>>>>;

/// A small board file as last parsed, with the bytes it was parsed from.
#[derive(Debug)]
struct Parsed<T> {
    bytes: Vec<u8>,
    value: T,
}

impl LocalStore {
    /// Opens the board in `dir`, which must exist and hold a board (see [`LocalStore::init`]).
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
        LocalStore {
            dir,
            queue_cache: Arc::default(),
            settings_cache: Arc::default(),
            workers_cache: Arc::default(),
            canonical: Arc::default(),
        }
    }

    /// Creates a board in `dir` (and the directory), keeping any board files already there;
    /// `settings`, when given, replace those in `board.json`.
    pub fn init(dir: impl Into<PathBuf>, settings: Option<Settings>) -> Result<Self> {
        let dir = dir.into();
        fs::create_dir_all(dir.join(TASKS_DIR)).map_err(|e| Error::io("creating", &dir, e))?;
        let store = LocalStore::at(dir);
        let lock = store.lock()?;
        // The lock file gets the byte the board clock rewrites, so that later changes leave
        // its content as it is.
        lock.now();
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
        Ok(store)
    }

    /// The board directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Takes the board's exclusive lock (blocks until it is free). See [`lock`].
    pub fn lock(&self) -> Result<LockGuard> {
        super::lock::lock(&self.dir)
    }

    /// The board's settings (defaults when `board.json` is absent).
    pub fn settings(&self) -> Result<Settings> {
        self.settings_with(&mut Damages::refuse())
    }

    /// The board's settings; a damaged `board.json` gives the defaults (`vine repair` resets
    /// it to them) when `dmg` salvages.
    fn settings_with(&self, dmg: &mut Damages) -> Result<Settings> {
        let board = self.read_cached(BOARD, &self.settings_cache, dmg, |_| BoardFile::default())?;
        Ok(board.settings)
    }

    /// The workers, as stored.
    fn workers(&self, dmg: &mut Damages) -> Result<BTreeMap<String, Worker>> {
        self.read_cached(WORKERS, &self.workers_cache, dmg, |b| {
            salvage::workers(b).value
        })
    }

    /// Reads a small JSON board file, reusing the last parse while the bytes are the same. A
    /// file that does not parse is reported to `dmg`, and `salvage` reads what it can.
    fn read_cached<T: DeserializeOwned + Default + Clone>(
        &self,
        name: &str,
        slot: &Mutex<Option<Parsed<T>>>,
        dmg: &mut Damages,
        salvage: fn(&[u8]) -> T,
    ) -> Result<T> {
        let path = self.dir.join(name);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(T::default()),
            Err(e) => return Err(Error::io("reading", path, e)),
        };
        let mut cached = slot.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = cached.as_ref()
            && p.bytes == bytes
        {
            return Ok(p.value.clone());
        }
        let value: T = match serde_json::from_slice(&bytes) {
            Ok(v) => v,
            Err(e) => {
                dmg.found(&path, damage::detail(&bytes, e))?;
                return Ok(salvage(&bytes));
            }
        };
        *cached = Some(Parsed {
            bytes,
            value: value.clone(),
        });
        Ok(value)
    }

    /// Resolves a board-relative path inside this board (see [`paths::resolve`]).
    fn resolve(&self, rel: &str) -> Result<PathBuf> {
        let root = match self.canonical.get() {
            Some(r) => r,
            None => {
                let r = self
                    .dir
                    .canonicalize()
                    .map_err(|e| Error::io("opening the board", &self.dir, e))?;
                self.canonical.get_or_init(|| r)
            }
        };
        paths::resolve_in(root, rel)
    }

    /// Reads a board file by board-relative path, confined to the board.
    pub fn read_board_file(&self, rel: &str) -> Result<String> {
        let p = self.resolve(rel)?;
        fs::read_to_string(&p).map_err(|e| Error::io("reading", p, e))
    }

    /// The tasks on the queue, for reading (the cache keeps its copy).
    pub fn queue(&self) -> Result<Vec<Task>> {
        self.queue_with(&mut Damages::refuse())
    }

    /// The tasks on the queue, for reading; a damaged queue is salvaged when `dmg` salvages.
    fn queue_with(&self, dmg: &mut Damages) -> Result<Vec<Task>> {
        let Some(bytes) = self.queue_bytes()? else {
            return Ok(Vec::new());
        };
        let decoded = queue_file::decode_shared(&bytes, &mut self.cache());
        match decoded {
            Ok(tasks) => Ok(tasks),
            Err(e) => {
                dmg.found(&self.dir.join(QUEUE), damage::detail(&bytes, e))?;
                Ok(salvage::queue(&bytes).value)
            }
        }
    }

    /// The tasks on the queue, for changing under the lock (taken from the cache when the file
    /// is what this handle last saw; given back by [`LocalStore::keep_queue`]).
    fn take_queue(&self) -> Result<Vec<Task>> {
        let Some(bytes) = self.queue_bytes()? else {
            self.cache().clear();
            return Ok(Vec::new());
        };
        let mut cache = self.cache();
        queue_file::decode(&bytes, &mut cache).map_err(|e| Error::Damaged {
            path: self.dir.join(QUEUE),
            detail: damage::detail(&bytes, e),
        })
    }

    fn queue_bytes(&self) -> Result<Option<Vec<u8>>> {
        let path = self.dir.join(QUEUE);
        match fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("reading", path, e)),
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, QueueCache> {
        self.queue_cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes the queue durably (the caller fsyncs the directory): only touched tasks are
    /// serialized again. The cache then describes the new file.
    fn write_queue(&self, st: &mut State) -> Result<()> {
        let mut cache = self.cache();
        let encoded = queue_file::encode(&st.tasks, &st.touched, &cache)
            .map_err(|e| Error::Protocol(e.to_string()))?;
        cache.clear();
        durable::replace(&self.dir, QUEUE, &encoded.bytes, true)?;
        cache.set_written(encoded);
        st.touched.clear();
        Ok(())
    }

    /// Gives the tasks of a finished op back to the cache if they are what the file holds.
    fn keep_queue(&self, st: &mut State, file_matches: bool) {
        let mut cache = self.cache();
        if file_matches && st.touched.is_empty() {
            cache.keep(std::mem::take(&mut st.tasks));
        } else {
            cache.forget_tasks();
        }
    }

    /// Loads what the ops in `ops` need (each with whether it carries a request key).
    fn load(&self, ops: &[(Op, Option<String>)]) -> Result<State> {
        let any = |f: &dyn Fn(&Op, bool) -> bool| ops.iter().any(|(op, k)| f(op, k.is_some()));
        // A change is never made from a damaged file.
        let dmg = &mut Damages::refuse();
        let settings = self.settings_with(dmg)?;
        let tasks = self.take_queue()?;
        let workers = self.workers(dmg)?;
        let progress = if any(&|op, _| matches!(op, Op::SetProgress { .. })) {
            read_json(&self.dir, PROGRESS, dmg)?
        } else {
            Progress::default()
        };
        let mut st = State {
            tasks,
            workers,
            progress,
            settings,
            ..State::default()
        };
        rules::merge_queue_facts(&mut st);
        if any(&|op, _| matches!(op, Op::Add { .. } | Op::AddPlan { .. })) {
            let max_queue = st.tasks.iter().map(|t| t.id).max().unwrap_or(0);
            let max_arch = archive::totals(&self.dir.join(ARCHIVE), dmg)?.max_id;
            st.min_next_id = max_queue.max(max_arch) + 1;
        }
        let message = |op: &Op| matches!(op, Op::Send { .. } | Op::Ask { .. } | Op::Answer { .. });
        if any(&|op, _| message(op)) {
            st.next_seq = log::next_seq(&self.dir.join(LOG), dmg)?;
        }
        if any(&|op, _| matches!(op, Op::Answer { .. })) {
            st.log = log::all(&self.dir.join(LOG), dmg)?;
        } else if any(&|op, keyed| keyed && message(op)) {
            st.log = log::recent(&self.dir.join(LOG), RECENT_KEYED, dmg)?;
        }
        let missing: HashSet<u64> = ops
            .iter()
            .flat_map(|(op, _)| referenced_ids(op))
            .filter(|id| st.position(*id).is_none())
            .collect();
        if !missing.is_empty() {
            let found = archive::find(&self.dir.join(ARCHIVE), &missing, dmg)?;
            st.archived = found.iter().map(|(id, t)| (*id, t.status)).collect();
            st.archived_tasks = found;
        }
        Ok(st)
    }

    /// Checks what the rules cannot: that a named instruction file exists on the board, and
    /// that no instruction or context file leads outside it through a symlink.
    fn precheck(&self, op: &Op) -> Result<()> {
        let files: Vec<&String> = match op {
            Op::Add { task } => task.instruction_file.iter().collect(),
            Op::AddPlan { tasks } => tasks
                .iter()
                .filter_map(|p| p.task.instruction_file.as_ref())
                .collect(),
            _ => vec![],
        };
        for f in files {
            crate::validate::board_path("instruction file", f)?;
            let p = self.resolve(f)?;
            if !p.is_file() {
                return Err(Error::Invalid(format!(
                    "instruction file {f:?} is not on the board; write it first, or pass the text with --instructions-from"
                )));
            }
        }
        let context: Vec<&String> = match op {
            Op::Add { task } => task.context_files.iter().collect(),
            Op::AddPlan { tasks } => tasks.iter().flat_map(|p| &p.task.context_files).collect(),
            _ => vec![],
        };
        for f in context {
            crate::validate::board_path("context file", f)?;
            self.resolve(f)?;
        }
        Ok(())
    }

    /// Writes what the op changed, archiving finished tasks first when there are too many.
    fn commit(&self, st: &mut State, now: Timestamp) -> Result<()> {
        let d = &self.dir;
        // The log's end is read (and checked) before anything is written.
        let log_bytes = log::encode(&d.join(LOG), &mut st.outbox)?;
        let mut synced_dirs = false;
        if !st.files.is_empty() {
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
            durable::replace(d, PROGRESS, &to_pretty(&st.progress)?, true)?;
            synced_dirs = true;
        }
        if st.dirty.workers
            || (st.dirty.workers_soft && self.workers_file_older_than(SOFT_WRITE_EVERY))
        {
            durable::replace(d, WORKERS, &to_pretty(&st.workers)?, false)?;
        }
        if st.dirty.tasks {
            self.write_queue(st)?;
            synced_dirs = true;
        }
        if synced_dirs {
            durable::sync_dir(d)?;
        }
        if !log_bytes.is_empty() {
            durable::append_lines(&d.join(LOG), &log_bytes, true)?;
        }
        // Only what is committed may be archived: the op's own change is on disk by now.
        // The op has succeeded; a compaction that fails here is retried by the next write,
        // and the board is consistent either way, so its error does not fail the op.
        if st.dirty.tasks {
            let (take, _kept) = rules::archivable(&st.tasks);
            if take.len() > st.settings.archive_after {
                let _ = self.compact(st, &take, now);
            }
        }
        Ok(())
    }

    /// Moves the committed tasks at `take` to the archive, then rewrites the queue without them.
    /// A crash in between leaves identical copies in both places; readers count them once and
    /// the next compaction does not append them again.
    fn compact(&self, st: &mut State, take: &[usize], now: Timestamp) -> Result<usize> {
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

    /// Carries out `op` once per request key (see `rules::apply_keyed`): a retried request
    /// gets the reply of its first application.
    pub fn execute_keyed(&self, op: Op, key: Option<&str>) -> Result<Reply> {
        if op.is_read_only() {
            self.read(op)
        } else {
            self.write(op, key)
        }
    }

    fn write(&self, op: Op, key: Option<&str>) -> Result<Reply> {
        let mut replies = self.execute_batch(vec![(op, key.map(str::to_string))]);
        replies
            .pop()
            .unwrap_or_else(|| Err(Error::Protocol("a batch of one gave no reply".into())))
    }

    /// Carries out several ops under one lock and one commit (a group commit: one fsync for
    /// all of them). Each op gets its own reply, as if it had run alone in order; a failed op
    /// leaves no change but the log entries it must keep. Reads are answered without the lock.
    pub fn execute_batch(&self, ops: Vec<(Op, Option<String>)>) -> Vec<Result<Reply>> {
        let (reads, writes): (Vec<_>, Vec<_>) = ops
            .into_iter()
            .enumerate()
            .partition(|(_, (op, _))| op.is_read_only());
        let mut out: Vec<Option<Result<Reply>>> =
            (0..reads.len() + writes.len()).map(|_| None).collect();
        for (i, (op, _)) in reads {
            out[i] = Some(self.read(op));
        }
        if !writes.is_empty() {
            let (index, ops): (Vec<usize>, Vec<(Op, Option<String>)>) = writes.into_iter().unzip();
            for (i, r) in index.into_iter().zip(self.write_batch(ops)) {
                out[i] = Some(r);
            }
        }
        out.into_iter()
            .map(|r| r.unwrap_or_else(|| Err(Error::Protocol("an op got no reply".into()))))
            .collect()
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
        let lock = match self.lock() {
            Ok(l) => l,
            Err(e) => return fail_all(e),
        };
        if n == 1 && matches!(ops[0].0, Op::Repair) {
            return vec![repair::repair(self)];
        }
        let mut st = match self.load(&ops) {
            Ok(st) => st,
            Err(e) => return fail_all(e),
        };
        // The board clock (see `clock`): the file system's time when this process's is off.
        let now = lock.now();
        let mut replies = Vec::with_capacity(n);
        let mut applied = 0;
        for (op, key) in ops {
            if let Op::Compact | Op::Repair = op {
                let (take, kept) = rules::archivable(&st.tasks);
                replies.push(match op {
                    Op::Compact => self
                        .compact(&mut st, &take, now)
                        .map(|archived| Reply::Compacted { archived, kept }),
                    _ => Err(Error::Invalid("repair runs alone, not in a batch".into())),
                });
                continue;
            }
            if let Err(e) = self.precheck(&op) {
                replies.push(Err(e));
                continue;
            }
            // Alone, a failed op is simply not committed; in a batch, undo it before the next.
            let snapshot = (n > 1).then(|| st.clone());
            let logged = st.outbox.len();
            match rules::apply_keyed(&mut st, op, key.as_deref(), now) {
                Ok(reply) => {
                    applied += 1;
                    if !st.log.is_empty() || key.is_some() {
                        let new: Vec<_> = st.outbox[logged..].to_vec();
                        st.log.extend(new);
                    }
                    replies.push(Ok(reply));
                }
                Err(e) => {
                    if let Some(mut before) = snapshot {
                        // Keep what the op must log even when refused (a late result).
                        before.outbox = std::mem::take(&mut st.outbox);
                        before.next_seq = st.next_seq;
                        st = before;
                    }
                    replies.push(Err(e));
                }
            }
        }
        let committed = if applied > 0 {
            self.commit(&mut st, now)
        } else {
            log::append(&self.dir.join(LOG), &mut st.outbox)
        };
        match &committed {
            Ok(()) => self.keep_queue(&mut st, true),
            Err(_) => self.cache().clear(),
        }
        drop(lock);
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
            if let Ok(Reply::Claimed { claim: Some(c), .. }) = r
                && let Some(f) = c.task.instruction_file.clone()
            {
                match self.read_board_file(&f) {
                    Ok(text) => c.instructions = Some(text),
                    Err(e) => c.instructions_error = Some(e.to_string()),
                }
            }
        }
        replies
    }

    /// Answers a read. Damaged files do not stop it: it shows what can be read (salvaged as
    /// `vine repair` would, nothing written) and returns [`Error::DamagedRead`] with the reply
    /// and the damaged files.
    fn read(&self, op: Op) -> Result<Reply> {
        let mut dmg = Damages::salvage();
        let result = self.read_with(op, &mut dmg);
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

    /// A read, with damaged files reported to `dmg`.
    fn read_with(&self, op: Op, dmg: &mut Damages) -> Result<Reply> {
        let now = crate::time::now();
        let load_state = |dmg: &mut Damages| -> Result<State> {
            let mut st = State {
                tasks: self.queue_with(dmg)?,
                workers: self.workers(dmg)?,
                progress: read_json(&self.dir, PROGRESS, dmg)?,
                settings: self.settings_with(dmg)?,
                ..State::default()
            };
            rules::merge_queue_facts(&mut st);
            // Show the board as the next write will see it: lapsed claims taken back (in
            // memory only; reads write nothing).
            rules::requeue_expired(&mut st, now);
            Ok(st)
        };
        match op {
            Op::Status => {
                let mut st = load_state(dmg)?;
                let totals = archive::totals(&self.dir.join(ARCHIVE), dmg)?;
                // Tasks on the queue that are also at the archive's tail (a compaction that
                // was cut off, or one that ran between our two reads) are counted once.
                let finished = st
                    .tasks
                    .iter()
                    .filter(|t| matches!(t.status, TaskStatus::Completed | TaskStatus::Cancelled))
                    .count();
                let tail = archive::tail_ids(&self.dir.join(ARCHIVE), finished, dmg)?;
                st.tasks.retain(|t| !tail.contains(&t.id));
                let open = log::questions(&self.dir.join(LOG), false, dmg)?.len();
                Ok(Reply::Status {
                    report: rules::status_report(&st, &totals.by_status(), open, now),
                })
            }
            Op::Tasks { status, all } => {
                if let Some(s) = status.as_deref()
                    && s != "blocked"
                    && TaskStatus::parse(s).is_none()
                {
                    return Err(Error::Invalid(format!(
                        "unknown status {s:?}; use pending, in_progress, completed, failed, cancelled or blocked"
                    )));
                }
                let st = load_state(dmg)?;
                let mut tasks = Vec::new();
                if all {
                    let on_queue: HashSet<u64> = st.tasks.iter().map(|t| t.id).collect();
                    for t in archive::all(&self.dir.join(ARCHIVE), dmg)? {
                        let matches = match status.as_deref() {
                            None => true,
                            Some(s) => TaskStatus::parse(s) == Some(t.status),
                        };
                        if matches && !on_queue.contains(&t.id) {
                            tasks.push(TaskView::archived(t));
                        }
                    }
                }
                tasks.extend(rules::task_views(&st, status.as_deref(), now));
                tasks.sort_by_key(|v| v.task.id);
                Ok(Reply::Tasks { tasks })
            }
            Op::Show { task } => {
                let st = load_state(dmg)?;
                if let Some(v) = rules::task_views(&st, None, now)
                    .into_iter()
                    .find(|v| v.task.id == task)
                {
                    return Ok(Reply::Task { task: v });
                }
                let found = archive::find(&self.dir.join(ARCHIVE), &HashSet::from([task]), dmg)?;
                match found.into_values().next() {
                    Some(t) => Ok(Reply::Task {
                        task: TaskView::archived(t),
                    }),
                    None => Err(Error::UnknownTask(task)),
                }
            }
            Op::Workers => {
                let st = load_state(dmg)?;
                Ok(Reply::Workers {
                    workers: rules::worker_views(&st, now),
                })
            }
            Op::Settings => Ok(Reply::Settings {
                settings: self.settings_with(dmg)?,
            }),
            Op::Progress => Ok(Reply::Progress {
                progress: read_json(&self.dir, PROGRESS, dmg)?,
            }),
            Op::ReadMessages { filter } => Ok(Reply::Messages {
                messages: log::read(&self.dir.join(LOG), &filter, dmg)?,
            }),
            Op::Questions { all } => Ok(Reply::Questions {
                questions: log::questions(&self.dir.join(LOG), all, dmg)?,
            }),
            other => Err(Error::Protocol(format!("{} is not a read", other.name()))),
        }
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

/// Task ids an op refers to, whose status the rules need even when they are archived.
fn referenced_ids(op: &Op) -> Vec<u64> {
    match op {
        Op::Add { task } => task.after.clone(),
        Op::AddPlan { tasks } => tasks.iter().flat_map(|p| p.task.after.clone()).collect(),
        Op::Complete { task, .. }
        | Op::Fail { task, .. }
        | Op::Release { task, .. }
        | Op::Cancel { task, .. }
        | Op::Retry { task } => vec![*task],
        Op::Send { task, .. } | Op::Ask { task, .. } => task.iter().copied().collect(),
        _ => vec![],
    }
}

/// Reads and parses a board file; a missing file reads as the default, a bad one is damage
/// (read as the default when `dmg` salvages: `vine repair` resets it to that).
pub(crate) fn read_json<T: DeserializeOwned + Default>(
    dir: &Path,
    name: &str,
    dmg: &mut Damages,
) -> Result<T> {
    let path = dir.join(name);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(T::default()),
        Err(e) => return Err(Error::io("reading", path, e)),
    };
    match serde_json::from_slice(&bytes) {
        Ok(v) => Ok(v),
        Err(e) => {
            dmg.found(&path, damage::detail(&bytes, e))?;
            Ok(T::default())
        }
    }
}

/// Serializes a board file: pretty JSON (2-space indent) with a final newline.
pub(crate) fn to_pretty<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    let mut out = serde_json::to_vec_pretty(v).map_err(|e| Error::Protocol(e.to_string()))?;
    out.push(b'\n');
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op::NewTask;

    fn add(store: &LocalStore, d: &str) -> u64 {
        let task = NewTask {
            description: d.into(),
            ..NewTask::default()
        };
        match store.execute(Op::Add { task }) {
            Ok(Reply::Added { tasks }) => tasks[0].id,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_batch_applies_each_op_as_if_alone_and_commits_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::init(dir.path(), None).unwrap();
        let a = add(&store, "a");
        let b = add(&store, "b");
        let claim = |w: &str| (Op::Claim { worker: w.into() }, None);
        let bad = (
            Op::Complete {
                task: a,
                worker: "nobody".into(),
                attempt: None,
                result: Some("late".into()),
            },
            None,
        );
        let replies = store.execute_batch(vec![
            claim("w1"),
            bad,
            claim("w2"),
            claim("w3"),
            (Op::Status, None),
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
        let bad_plan = Op::AddPlan {
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
        };
        let good = Op::Add {
            task: NewTask {
                description: "good".into(),
                ..NewTask::default()
            },
        };
        let replies = store.execute_batch(vec![(bad_plan, None), (good, Some("k".into()))]);
        assert!(matches!(replies[0], Err(Error::Invalid(_))));
        assert!(matches!(replies[1], Ok(Reply::Added { .. })));
        let queue = store.queue().unwrap();
        assert_eq!(queue.len(), 1);
        assert_eq!(queue[0].description, "good");
        assert_eq!(queue[0].request_key.as_deref(), Some("k"));
    }
}
