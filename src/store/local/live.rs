//! The live board a handle keeps in memory: the checkpoint (the JSON files) plus the journal's
//! records (see `store::journal`), brought up to date at every look by reading only what was
//! appended since. Everything is read again when that cannot be trusted: another process
//! wrote a checkpoint this one cannot follow (it missed records that are gone), a file of the
//! checkpoint was replaced by something other than a checkpoint (a person, a `/deploy`, an
//! older `vine`), or the journal is not the one it knew.
//!
//! A look under the board lock (a change) may also finish what a crashed writer left: a torn
//! last record is cut off, and log entries a record holds but `agent-comms.jsonl` lacks are
//! appended. A look without the lock (a read) changes nothing on disk; it retries when a
//! checkpoint moved the journal while it read the files.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{File, OpenOptions};
use std::path::Path;

use crate::error::{Error, Result};
use crate::message::Message;
use crate::progress::Progress;
use crate::rules;
use crate::sessions::SessionRecord;
use crate::store::damage::{self, Damages};
use crate::store::journal::{self, FileId, Header, Record};
use crate::store::json_file::{read_bytes, read_json};
use crate::store::paths::{CHECKPOINT_FILES, JOURNAL, LOG, PROGRESS, QUEUE, SESSIONS, WORKERS};
use crate::store::queue_file::{self, QueueCache};
use crate::store::{durable, inode, log, salvage};
use crate::task::Task;
use crate::worker::Worker;

/// How many times a look without the lock reads everything again when a checkpoint moved the
/// journal meanwhile, before it gives up.
const READ_TRIES: usize = 50;

/// The board as of change `seq`, and where on disk that is.
#[derive(Debug)]
pub(super) struct Loaded {
    /// The queue.
    pub tasks: Vec<Task>,
    /// The rules' index of `tasks`, kept between ops with it (so an op does not scan the
    /// queue); dropped when a record from elsewhere changes tasks in place.
    pub derived: rules::Derived,
    /// Task id → index in `tasks`.
    index: HashMap<u64, usize>,
    /// The workers (with what the queue records about them merged in).
    pub workers: BTreeMap<String, Worker>,
    /// The workers as the checkpoint and the journal have them (what a record must change).
    recorded_workers: BTreeMap<String, Worker>,
    /// `progress.json`.
    pub progress: Progress,
    /// `sessions.json`.
    pub sessions: Vec<SessionRecord>,
    /// The number of the last change this board includes.
    pub seq: u64,
    /// The journal as last read (`None`: the board has none).
    journal: Option<Opened>,
    /// The checkpoint's files as last read or written.
    files: BTreeMap<String, Option<FileId>>,
    /// The queue file's bytes and lines as last read or written: a checkpoint serializes again
    /// only the tasks changed since (`touched`).
    pub queue_lines: QueueCache,
    /// Tasks changed since `queue_lines` (or that left the queue).
    pub touched: BTreeSet<u64>,
    /// What changed since the checkpoint.
    pub since: Since,
    /// Read again whole at the next look: read with damage salvaged (so the damage is seen
    /// again), or holding more log entries to check than are kept.
    damaged: bool,
    /// The archive (its identity) as this board's last committed move to it left it: while
    /// it is still so, its tail holds no task of the queue.
    pub archive_left: Option<FileId>,
    /// The log entries of the records read from others since the last locked look: a writer
    /// that crashed after its record and before the log lacks them, and the next look under
    /// the lock appends those the log lacks.
    unrecovered: Vec<Message>,
}

/// The journal a handle reads and appends to.
#[derive(Debug)]
struct Opened {
    /// Open for reading and appending.
    file: File,
    /// Device and inode: whether the journal at the path is still this one.
    at: (u64, u64),
    /// Where its records start (after the header).
    start: u64,
    /// Where its last good record ends.
    end: u64,
    /// Its size as this handle last knew it: the room for records ends there.
    len: u64,
    /// Whether the room after `end` is known to hold only zeros (checked once under the lock:
    /// a crash of the machine can leave parts of a torn append there).
    clear: bool,
}

/// What the journal holds beyond the checkpoint.
#[derive(Debug, Default, Clone)]
pub(super) struct Since {
    /// Records.
    pub records: u64,
    /// When the oldest was appended (ms since the epoch).
    pub oldest_ms: Option<i64>,
    /// Whether any wrote log entries (the log must be fsynced before the journal is dropped).
    pub messages: bool,
    /// Which files a checkpoint must write again.
    pub tasks: bool,
    pub workers: bool,
    pub progress: bool,
    pub sessions: bool,
}

/// A handle's live board: loaded on first use, `None` again when it cannot be trusted.
#[derive(Debug, Default)]
pub(super) struct Live {
    board: Option<Loaded>,
    /// Changes use this board: its journal is opened for appending whoever looks.
    for_changes: bool,
}

/// How many log entries a board brought up to date without the lock may hold for the next
/// locked look to check; beyond, it is forgotten (the next change reads the board whole).
const UNRECOVERED_MAX: usize = 4096;

impl Live {
    /// The live board that changes use (its journal opened for appending, also when a read
    /// brought it up to date).
    pub fn for_changes() -> Live {
        Live {
            board: None,
            for_changes: true,
        }
    }

    /// Forgets the board (after a failed write the disk and memory may differ).
    pub fn forget(&mut self) {
        self.board = None;
    }

    /// The board brought up to date with what is on disk. `locked`: the caller holds the
    /// board lock (a torn tail is cut, a crashed writer's log entries appended, also those of
    /// records read before without the lock); otherwise nothing is written. Damage goes to
    /// `dmg`.
    pub fn refresh(&mut self, dir: &Path, locked: bool, dmg: &mut Damages) -> Result<&mut Loaded> {
        let had = dmg.any();
        let open = Open {
            locked,
            append: locked || self.for_changes,
        };
        let current = match self.board.take() {
            Some(mut b) if !b.damaged => match b.follow(dir, open, dmg)? {
                true => Some(b),
                false => None,
            },
            _ => None,
        };
        let mut board = match current {
            Some(b) => b,
            None => Loaded::read(dir, open, dmg)?,
        };
        // Read again whole at the next look: damage (so it is seen again), or more log
        // entries to check than are kept (the whole read checks them all).
        board.damaged =
            (dmg.any() && !had) || (!locked && board.unrecovered.len() > UNRECOVERED_MAX);
        if locked {
            recover_log(dir, &board.unrecovered)?;
            board.unrecovered.clear();
        }
        Ok(self.board.insert(board))
    }

    /// Whether a board is loaded (a read may then bring it up to date instead of its own).
    pub fn is_loaded(&self) -> bool {
        self.board.is_some()
    }

    /// The board as loaded, without looking at the disk (after [`Live::refresh`]).
    pub fn loaded(&mut self) -> Option<&mut Loaded> {
        self.board.as_mut()
    }
}

/// How a look at the board opens and treats the journal.
#[derive(Debug, Clone, Copy)]
struct Open {
    /// The caller holds the lock: a torn tail may be cut.
    locked: bool,
    /// The journal is opened for appending (the board changes use).
    append: bool,
}

impl Loaded {
    /// Reads the whole board: the journal's header, the checkpoint's files, the journal's
    /// records. Without the lock, again if a checkpoint moved the journal meanwhile.
    fn read(dir: &Path, open: Open, dmg: &mut Damages) -> Result<Loaded> {
        let locked = open.locked;
        let jpath = dir.join(JOURNAL);
        for _ in 0..READ_TRIES {
            let opened = open_journal(&jpath, open.append)?;
            let opened_at = opened.as_ref().map(|(_, at, _)| *at);
            let (header, start, bytes) = match &opened {
                Some((f, _, _)) => {
                    let bytes = journal::read_from(f, 0, &jpath)?;
                    match journal::header(&bytes) {
                        Ok((h, start)) => (Some(h), start, bytes),
                        Err(detail) => {
                            dmg.found(&jpath, detail)?;
                            (None, 0, Vec::new())
                        }
                    }
                }
                None => (None, 0, Vec::new()),
            };
            let mut b = Loaded::read_checkpoint(dir, dmg)?;
            b.seq = header.as_ref().map_or(0, |h| h.base);
            let mut foreign = Vec::new();
            if let (Some((file, at, len)), Some(h)) = (opened, header.as_ref()) {
                let scan = journal::scan(&bytes[start as usize..], start, h.base + 1);
                if let Some(detail) = &scan.damage {
                    dmg.found(&jpath, detail.clone())?;
                }
                for r in scan.records {
                    foreign.extend(r.messages.iter().cloned());
                    b.apply(r);
                }
                let mut j = Opened {
                    file,
                    at,
                    start,
                    end: scan.end,
                    len,
                    clear: false,
                };
                if locked && scan.damage.is_none() {
                    j.tidy(scan.torn, &jpath)?;
                }
                b.journal = Some(j);
            }
            // Without the lock, a checkpoint may have replaced the files after the journal was
            // opened: then the journal read is not the one that follows them.
            if !locked && opened_at != journal_at(&jpath)? {
                continue;
            }
            b.merge_queue_facts();
            b.recorded_workers = b.workers.clone();
            b.unrecovered = foreign;
            return Ok(b);
        }
        Err(Error::io(
            "reading",
            jpath,
            std::io::Error::other(
                "checkpoints kept replacing the journal while the board was read",
            ),
        ))
    }

    /// Reads the checkpoint's files (damage salvaged or refused as `dmg` says).
    fn read_checkpoint(dir: &Path, dmg: &mut Damages) -> Result<Loaded> {
        let mut files = BTreeMap::new();
        for name in CHECKPOINT_FILES {
            files.insert(name.to_string(), journal::file_id(&dir.join(name))?);
        }
        let qpath = dir.join(QUEUE);
        let mut queue_lines = QueueCache::default();
        let tasks = match read_bytes(&qpath)? {
            None => Vec::new(),
            Some(bytes) => match queue_file::decode(&bytes, &mut queue_lines) {
                Ok(t) => t,
                Err(e) => {
                    dmg.found(&qpath, damage::detail(&bytes, e))?;
                    queue_lines.clear();
                    salvage::queue(&bytes).value
                }
            },
        };
        let wpath = dir.join(WORKERS);
        let workers = match read_bytes(&wpath)? {
            None => BTreeMap::new(),
            Some(bytes) => match serde_json::from_slice(&bytes) {
                Ok(w) => w,
                Err(e) => {
                    dmg.found(&wpath, damage::detail(&bytes, e))?;
                    salvage::workers(&bytes).value
                }
            },
        };
        let progress = read_json(dir, PROGRESS, dmg)?;
        let sessions = read_json(dir, SESSIONS, dmg)?;
        let index = tasks.iter().enumerate().map(|(i, t)| (t.id, i)).collect();
        Ok(Loaded {
            tasks,
            derived: rules::Derived::default(),
            index,
            workers,
            recorded_workers: BTreeMap::new(),
            progress,
            sessions,
            seq: 0,
            journal: None,
            files,
            queue_lines,
            touched: BTreeSet::new(),
            since: Since::default(),
            damaged: false,
            archive_left: None,
            unrecovered: Vec::new(),
        })
    }

    /// Brings the board up to date from the journal; false when it must be read again whole.
    fn follow(&mut self, dir: &Path, open: Open, dmg: &mut Damages) -> Result<bool> {
        let locked = open.locked;
        let jpath = dir.join(JOURNAL);
        let now = inode::look(&jpath)?;
        let now_at = now.map(|(at, _)| at);
        let Some(j) = &self.journal else {
            // No journal when last read: one now means a writer started one.
            return Ok(now_at.is_none() && self.files_unchanged(dir)?);
        };
        if now_at == Some(j.at) {
            // The same journal: what follows the last record read says whether it grew (the
            // size just looked at only whether it was cut).
            if !self.read_more(&jpath, locked, dmg, now.map(|(_, len)| len))? {
                return Ok(false);
            }
        } else {
            // The journal was replaced (a checkpoint): the rest of the old one first, then the
            // new one if its checkpoint is where that leaves this board.
            if !self.read_more(&jpath, locked, dmg, None)? {
                return Ok(false);
            }
            let Some((file, new_at, len)) = open_journal(&jpath, open.append)? else {
                return Ok(false);
            };
            let bytes = journal::read_from(&file, 0, &jpath)?;
            let Ok((h, start)) = journal::header(&bytes) else {
                return Ok(false);
            };
            let files_now = self.current_files(dir)?;
            if h.base != self.seq || h.files != files_now {
                return Ok(false);
            }
            self.files = files_now;
            self.since = Since::default();
            self.journal = Some(Opened {
                file,
                at: new_at,
                start,
                end: start,
                len,
                clear: false,
            });
            if !self.read_more(&jpath, locked, dmg, None)? {
                return Ok(false);
            }
        }
        self.files_unchanged(dir)
    }

    /// Reads the records appended to the journal this board follows since the last look;
    /// false when the journal is not as this board left it (cut shorter). `len`: its length,
    /// when the caller just looked.
    fn read_more(
        &mut self,
        jpath: &Path,
        locked: bool,
        dmg: &mut Damages,
        len: Option<u64>,
    ) -> Result<bool> {
        let Some(j) = &self.journal else {
            return Ok(true);
        };
        let len = match len {
            Some(l) => l,
            None => inode::look_open(&j.file, jpath)?.1,
        };
        if len < j.end {
            return Ok(false);
        }
        // The journal's size does not say whether records came (they fill room the file
        // had): what follows the last record read does.
        let bytes = match len == j.end {
            true => Vec::new(),
            false => journal::read_from(&j.file, j.end, jpath)?,
        };
        let scan = journal::scan(&bytes, j.end, self.seq + 1);
        if let Some(detail) = &scan.damage {
            dmg.found(jpath, detail.clone())?;
        }
        for r in scan.records {
            self.unrecovered.extend(r.messages.iter().cloned());
            self.apply(r);
        }
        if let Some(j) = &mut self.journal {
            j.end = scan.end;
            j.len = len;
            if locked && scan.damage.is_none() {
                j.tidy(scan.torn, jpath)?;
            }
        }
        Ok(true)
    }

    /// The identities of the checkpoint's files now.
    fn current_files(&self, dir: &Path) -> Result<BTreeMap<String, Option<FileId>>> {
        let mut now = BTreeMap::new();
        for name in CHECKPOINT_FILES {
            now.insert(name.to_string(), journal::file_id(&dir.join(name))?);
        }
        Ok(now)
    }

    /// Whether the checkpoint's files are the ones this board was read from or wrote.
    fn files_unchanged(&self, dir: &Path) -> Result<bool> {
        for name in CHECKPOINT_FILES {
            if self.files.get(name).copied().flatten() != journal::file_id(&dir.join(name))? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Applies one record (read from the journal, or just appended by this handle).
    pub fn apply(&mut self, r: Record) {
        self.seq = r.seq;
        self.since.records += 1;
        self.since.oldest_ms.get_or_insert(r.at);
        self.since.messages |= !r.messages.is_empty();
        if !r.tasks.is_empty() {
            // Changed in place outside the rules: their index is built again.
            self.derived = rules::Derived::default();
        }
        for t in r.tasks {
            self.touched.insert(t.id);
            self.since.tasks = true;
            match self.index.get(&t.id) {
                Some(&i) if self.tasks.get(i).is_some_and(|x| x.id == t.id) => self.tasks[i] = t,
                _ => {
                    self.index.insert(t.id, self.tasks.len());
                    self.tasks.push(t);
                }
            }
        }
        if !r.gone.is_empty() {
            let gone: BTreeSet<u64> = r.gone.into_iter().collect();
            self.tasks.retain(|t| !gone.contains(&t.id));
            self.reindex();
            self.touched.extend(gone);
            self.since.tasks = true;
        }
        for (id, w) in r.workers {
            self.since.workers = true;
            match w {
                Some(w) => {
                    self.recorded_workers.insert(id.clone(), w.clone());
                    self.workers.insert(id, w);
                }
                None => {
                    self.recorded_workers.remove(&id);
                    self.workers.remove(&id);
                }
            }
        }
        if let Some(p) = r.progress {
            self.progress = p;
            self.since.progress = true;
        }
        if let Some(s) = r.sessions {
            self.sessions = s;
            self.since.sessions = true;
        }
    }

    /// Merges what the queue records about workers into them (see
    /// `rules::merge_queue_facts`): the worker file may be older than the queue.
    fn merge_queue_facts(&mut self) {
        let mut st = rules::State {
            tasks: std::mem::take(&mut self.tasks),
            workers: std::mem::take(&mut self.workers),
            ..rules::State::default()
        };
        rules::merge_queue_facts(&mut st);
        self.tasks = st.tasks;
        self.workers = st.workers;
    }

    /// Rebuilds the id → index map (after tasks left the queue, or a new queue was set).
    pub fn reindex(&mut self) {
        self.index = self
            .tasks
            .iter()
            .enumerate()
            .map(|(i, t)| (t.id, i))
            .collect();
    }

    /// The record of what a change did to this board: the tasks in `touched` (those no longer
    /// on the queue as gone), the workers that differ from what is recorded, the progress and
    /// sessions when `dirty`, and `messages`. The board is then as the record leaves it.
    pub fn record_of(
        &mut self,
        touched: &BTreeSet<u64>,
        workers_changed: bool,
        progress: bool,
        sessions: bool,
        messages: Vec<Message>,
        at: i64,
    ) -> Record {
        let mut r = Record {
            seq: self.seq + 1,
            at,
            messages,
            ..Record::default()
        };
        self.index_added();
        for id in touched {
            match self.index.get(id).and_then(|&i| self.tasks.get(i)) {
                Some(t) if t.id == *id => r.tasks.push(t.clone()),
                _ => r.gone.push(*id),
            }
        }
        // Tasks appear in a record in queue order, so added ones are added in that order.
        r.tasks
            .sort_by_key(|t| self.index.get(&t.id).copied().unwrap_or(usize::MAX));
        if workers_changed {
            for (id, w) in &self.workers {
                if self.recorded_workers.get(id) != Some(w) {
                    r.workers.insert(id.clone(), Some(w.clone()));
                }
            }
            for id in self.recorded_workers.keys() {
                if !self.workers.contains_key(id) {
                    r.workers.insert(id.clone(), None);
                }
            }
            for (id, w) in &r.workers {
                match w {
                    Some(w) => self.recorded_workers.insert(id.clone(), w.clone()),
                    None => self.recorded_workers.remove(id),
                };
            }
        }
        if progress {
            r.progress = Some(self.progress.clone());
        }
        if sessions {
            r.sessions = Some(self.sessions.clone());
        }
        r
    }

    /// Notes that `r` (made by [`Loaded::record_of`]) was appended: `n` bytes.
    pub fn appended(&mut self, r: &Record, n: u64) {
        self.seq = r.seq;
        self.since.records += 1;
        self.since.oldest_ms.get_or_insert(r.at);
        self.since.messages |= !r.messages.is_empty();
        self.since.tasks |= !r.tasks.is_empty() || !r.gone.is_empty();
        self.since.workers |= !r.workers.is_empty();
        self.since.progress |= r.progress.is_some();
        self.since.sessions |= r.sessions.is_some();
        self.touched.extend(r.tasks.iter().map(|t| t.id));
        self.touched.extend(r.gone.iter().copied());
        // Tasks left the queue: the index is built again, unless the caller did so already
        // (an index not built since still holds the ids that left).
        if r.gone.iter().any(|id| self.index.contains_key(id)) {
            self.reindex();
        }
        debug_assert!(
            self.index.len() == self.tasks.len()
                && self
                    .tasks
                    .iter()
                    .enumerate()
                    .all(|(i, t)| self.index.get(&t.id) == Some(&i)),
            "the queue's index is not the queue's"
        );
        if let Some(j) = &mut self.journal {
            j.end += n;
        }
    }

    /// The bytes of the checkpoint's files as last read or written.
    pub fn checkpoint_bytes(&self) -> u64 {
        self.files.values().flatten().map(|id| id[2]).sum()
    }

    /// The bytes of the records beyond the checkpoint.
    pub fn journal_bytes(&self) -> u64 {
        self.journal.as_ref().map_or(0, |j| j.end - j.start)
    }

    /// The task `id` on the queue.
    pub fn task(&self, id: u64) -> Option<&Task> {
        self.index
            .get(&id)
            .and_then(|&i| self.tasks.get(i))
            .filter(|t| t.id == id)
    }

    /// Indexes the tasks added at the end of the queue since the last look.
    pub fn index_added(&mut self) {
        for i in self.index.len()..self.tasks.len() {
            self.index.insert(self.tasks[i].id, i);
        }
    }

    /// Whether this board follows a journal.
    pub fn has_journal(&self) -> bool {
        self.journal.is_some()
    }

    /// Appends `bytes` (whole records) to the journal: writes them where its records end,
    /// into the room the file has, making [`journal::ROOM`] more beyond them when it has too
    /// little, and fdatasyncs it. On failure the journal is cut back to where it ended.
    pub fn append(&mut self, bytes: &[u8], jpath: &Path) -> Result<()> {
        use std::os::unix::fs::FileExt;
        let Some(j) = &mut self.journal else {
            return Err(Error::Protocol(
                "a change was recorded without a journal".into(),
            ));
        };
        let _append = tracing::trace_span!("append").entered();
        let end = j.end + bytes.len() as u64;
        let grow = end > j.len;
        let written = j
            .file
            .write_all_at(bytes, j.end)
            .and_then(|()| match grow {
                true => j.file.write_all_at(&vec![0u8; journal::ROOM as usize], end),
                false => Ok(()),
            })
            .map_err(|e| Error::io("appending to", jpath, e))
            .and_then(|()| {
                tracing::trace_span!("fsync").in_scope(|| {
                    j.file
                        .sync_data()
                        .map_err(|e| Error::io("syncing", jpath, e))
                })
            });
        match written {
            Ok(()) if grow => j.len = end + journal::ROOM,
            Ok(()) => {}
            Err(_) => {
                let _ = j.file.set_len(j.end);
                j.len = j.end;
            }
        }
        written
    }

    /// Replaces the journal with an empty one that follows a checkpoint at change `base`
    /// whose files are as they are now (the caller holds the lock and has written them). It
    /// has no room yet: the first record makes it, so a checkpoint of a board that then stays
    /// quiet writes none.
    pub fn start_journal(&mut self, dir: &Path, base: u64) -> Result<()> {
        let files = self.current_files(dir)?;
        let header = Header {
            journal: journal::FORMAT,
            base,
            files: files.clone(),
        };
        let line = journal::line(&header)?;
        durable::replace(dir, JOURNAL, &line, true)?;
        durable::sync_dir(dir)?;
        let jpath = dir.join(JOURNAL);
        let Some((file, at, _)) = open_journal(&jpath, true)? else {
            return Err(Error::io(
                "opening",
                &jpath,
                std::io::Error::other("the journal just written is not there"),
            ));
        };
        self.journal = Some(Opened {
            file,
            at,
            start: line.len() as u64,
            end: line.len() as u64,
            len: line.len() as u64,
            clear: true,
        });
        self.seq = base;
        self.files = files;
        self.since = Since::default();
        Ok(())
    }

    /// Notes that the checkpoint's files are as they are now (after this handle wrote them
    /// without starting a journal: a board that has none).
    pub fn files_written(&mut self, dir: &Path) -> Result<()> {
        self.files = self.current_files(dir)?;
        Ok(())
    }
}

/// An opened journal, its device and inode, and its size.
type OpenedFile = (File, (u64, u64), u64);

/// Opens the journal (for writing too when `append`); `None` when the board has none.
fn open_journal(path: &Path, append: bool) -> Result<Option<OpenedFile>> {
    let mut options = OpenOptions::new();
    options.read(true).write(append);
    let opened = inode::open_without_atime(&options, path);
    match opened {
        Ok(f) => {
            let (at, len) = inode::look_open(&f, path)?;
            Ok(Some((f, at, len)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("opening", path, e)),
    }
}

/// Device and inode of the journal at `path`, if there is one.
fn journal_at(path: &Path) -> Result<Option<(u64, u64)>> {
    Ok(inode::look(path)?.map(|(at, _)| at))
}

impl Opened {
    /// Under the lock, once per journal opened: cuts off a torn last record (`torn` bytes
    /// after `end`) and whatever else a crash left in the room after the records, with the
    /// room (the next append makes room again). Durably, so it stays cut.
    fn tidy(&mut self, torn: u64, path: &Path) -> Result<()> {
        if torn == 0 && self.clear {
            return Ok(());
        }
        let clear = torn == 0
            && journal::room_is_clear(&self.file, self.end, self.len)
                .map_err(|e| Error::io("reading", path, e))?;
        if !clear {
            self.file
                .set_len(self.end)
                .and_then(|()| self.file.sync_data())
                .map_err(|e| Error::io("cutting a torn record off", path, e))?;
            self.len = self.end;
        }
        self.clear = true;
        Ok(())
    }
}

/// Appends to the log the entries of `records` it lacks: a writer that crashed after its
/// record and before the log.
fn recover_log(dir: &Path, messages: &[Message]) -> Result<()> {
    if messages.is_empty() {
        return Ok(());
    }
    let path = dir.join(LOG);
    let next = log::next_seq(&path, &mut Damages::refuse())?;
    let mut buf = Vec::new();
    for m in messages.iter().filter(|m| m.seq.is_some_and(|s| s >= next)) {
        serde_json::to_writer(&mut buf, m).map_err(|e| Error::Protocol(e.to_string()))?;
        buf.push(b'\n');
    }
    if buf.is_empty() {
        return Ok(());
    }
    durable::append_lines(&path, &buf, true)
}
