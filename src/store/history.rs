//! The board's history for the figures ([`History`]): each archived task's times and each
//! question's, kept up to date from the archive and the message log. Both files only grow, so
//! each look reads only the lines appended since the last one; a file that was replaced (by
//! `vine repair`, a `/deploy`) or cut shorter is read again from its start.

use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;

use super::damage::Damages;
use super::jsonl::{parse_line, trim};
use super::paths::{ARCHIVE, LOG};
use crate::error::{Error, Result};
use crate::message::MessageKind;
use crate::metrics::{History, TaskTimes};
use crate::time::{Timestamp, ts};

/// A history and how far each file has been read into it.
#[derive(Debug, Default)]
pub(crate) struct HistoryCache {
    archive: Tail,
    log: Tail,
    history: Arc<History>,
}

/// What the figures read of an archive line.
#[derive(Deserialize)]
struct ArchivedTimes {
    #[serde(with = "ts")]
    archived_at: Timestamp,
    task: TaskTimes,
}

/// What the figures read of a log line.
#[derive(Deserialize)]
struct LoggedTimes {
    #[serde(with = "ts")]
    timestamp: Timestamp,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default)]
    kind: MessageKind,
    #[serde(default)]
    reply_to: Option<u64>,
}

impl HistoryCache {
    /// The history of the board in `dir` with what was appended since the last call. Lines
    /// that do not parse are reported to `dmg` (with every call, until the file is replaced).
    pub(crate) fn refresh(&mut self, dir: &Path, dmg: &mut Damages) -> Result<Arc<History>> {
        let archive_path = dir.join(ARCHIVE);
        let log_path = dir.join(LOG);
        let archive = self.archive.look(&archive_path)?;
        let log = self.log.look(&log_path)?;
        if !matches!((&archive, &log), (Look::Same, Look::Same)) {
            let h = Arc::make_mut(&mut self.history);
            if archive.starts_over() {
                h.clear_archived();
            }
            if let Look::New { file, .. } = archive {
                self.archive.read(file, &archive_path, |line| {
                    let l: ArchivedTimes = parse_line(line)?;
                    h.add_archived(l.task, l.archived_at);
                    Ok(())
                })?;
            }
            if log.starts_over() {
                h.clear_questions();
            }
            if let Look::New { file, .. } = log {
                self.log.read(file, &log_path, |line| {
                    let m: LoggedTimes = parse_line(line)?;
                    match (m.kind, m.seq, m.reply_to) {
                        (MessageKind::Question, Some(seq), _) => h.add_question(seq, m.timestamp),
                        (MessageKind::Answer, _, Some(q)) => h.add_answer(q, m.timestamp),
                        _ => {}
                    }
                    Ok(())
                })?;
            }
            h.seal();
        }
        for (tail, path) in [(&self.archive, &archive_path), (&self.log, &log_path)] {
            if let Some(d) = &tail.damage {
                dmg.found(path, d.clone())?;
            }
        }
        Ok(Arc::clone(&self.history))
    }
}

/// What a look at an append-only file found.
enum Look {
    /// Nothing new.
    Same,
    /// The file is gone: what was read from it must be forgotten.
    Gone,
    /// Lines to read; `fresh` when from the start (a new, replaced or shorter file: what was
    /// read from it before must be forgotten first).
    New { file: File, fresh: bool },
}

impl Look {
    fn starts_over(&self) -> bool {
        matches!(self, Look::Gone | Look::New { fresh: true, .. })
    }
}

/// How far an append-only file has been read.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Tail {
    /// The file that was read (device and inode), so a replaced file is read from its start.
    file: Option<(u64, u64)>,
    /// Bytes read: to the end of the last whole line.
    offset: u64,
    /// The first line that did not parse (reported with every look until the file changes).
    damage: Option<String>,
}

impl Tail {
    /// What is new in `path` since the last look.
    fn look(&mut self, path: &Path) -> Result<Look> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let had = *self != Tail::default();
                *self = Tail::default();
                return Ok(if had { Look::Gone } else { Look::Same });
            }
            Err(e) => return Err(Error::io("reading", path, e)),
        };
        let meta = file.metadata().map_err(|e| Error::io("reading", path, e))?;
        let id = identity(&meta);
        if id != self.file || meta.len() < self.offset {
            *self = Tail {
                file: id,
                ..Tail::default()
            };
            return Ok(Look::New { file, fresh: true });
        }
        Ok(match meta.len() > self.offset {
            true => Look::New { file, fresh: false },
            false => Look::Same,
        })
    }

    /// Reads the whole lines of `file` after the offset, handing each to `line`; a last line
    /// without its newline (an append under way, or cut off) is left for the next look.
    fn read(
        &mut self,
        file: File,
        path: &Path,
        mut line: impl FnMut(&[u8]) -> serde_json::Result<()>,
    ) -> Result<()> {
        let mut r = BufReader::with_capacity(256 * 1024, file);
        r.seek(SeekFrom::Start(self.offset))
            .map_err(|e| Error::io("reading", path, e))?;
        let mut buf = Vec::new();
        loop {
            buf.clear();
            let n = r
                .read_until(b'\n', &mut buf)
                .map_err(|e| Error::io("reading", path, e))?;
            if n == 0 || buf.last() != Some(&b'\n') {
                return Ok(());
            }
            let at = self.offset;
            self.offset += n as u64;
            let body = trim(&buf);
            if body.is_empty() {
                continue;
            }
            if let Err(e) = line(body)
                && self.damage.is_none()
            {
                self.damage = Some(format!("the line at byte {at} does not parse: {e}"));
            }
        }
    }
}

/// Device and inode of a file (elsewhere than on Unix: none, and only a shorter file is
/// taken for a replaced one).
#[cfg(unix)]
fn identity(m: &std::fs::Metadata) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    Some((m.dev(), m.ino()))
}

#[cfg(not(unix))]
fn identity(_m: &std::fs::Metadata) -> Option<(u64, u64)> {
    None
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::io::{Seek, SeekFrom, Write};

    use super::*;
    use crate::message::Message;
    use crate::metrics::{Window, report};
    use crate::store::{archive, log};
    use crate::task::{Task, TaskStatus};

    fn t0() -> Timestamp {
        crate::time::parse_timestamp("2026-03-01T12:00:00Z").unwrap()
    }

    fn finished(id: u64, status: TaskStatus) -> Task {
        let mut t = Task::new(id, "d", t0());
        t.status = status;
        t.ended_at = Some(t0());
        t.completed_at = Some(t0());
        t
    }

    /// (completed, cancelled, open questions) as the figures see the history.
    fn seen(h: &History) -> (u64, u64, u64) {
        let r = report(h, &[], BTreeMap::new(), t0(), Window::DAY);
        (r.tasks.completed, r.tasks.cancelled, r.open_questions)
    }

    #[test]
    fn only_appended_lines_are_read_and_a_replaced_file_is_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut cache = HistoryCache::default();
        let dmg = &mut Damages::refuse();
        assert_eq!(
            seen(&cache.refresh(d, dmg).unwrap()),
            (0, 0, 0),
            "no files yet"
        );

        archive::append(
            &d.join(ARCHIVE),
            &[finished(1, TaskStatus::Completed)],
            t0(),
        )
        .unwrap();
        let q = Message::new(MessageKind::Question, "w1", "q?", t0());
        log::append(&d.join(LOG), &mut [q.clone(), q]).unwrap();
        let h = cache.refresh(d, dmg).unwrap();
        assert_eq!(seen(&h), (1, 0, 2));
        let read_to = cache.archive.offset;

        // The first line changed in place (same file, same length) is not read again: only
        // what is appended is.
        let first = std::fs::read_to_string(d.join(ARCHIVE)).unwrap();
        let at = first.find("\"status\":\"completed\"").unwrap() + "\"status\":".len();
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(d.join(ARCHIVE))
            .unwrap();
        f.seek(SeekFrom::Start(at as u64)).unwrap();
        f.write_all(b"\"cancelled\"").unwrap();
        drop(f);
        archive::append(
            &d.join(ARCHIVE),
            &[finished(2, TaskStatus::Completed)],
            t0(),
        )
        .unwrap();
        let mut a = Message::new(MessageKind::Answer, "c", "a", t0());
        a.reply_to = Some(1);
        log::append(&d.join(LOG), &mut [a]).unwrap();
        let h2 = cache.refresh(d, dmg).unwrap();
        assert_eq!(seen(&h2), (2, 0, 1));
        assert!(cache.archive.offset > read_to);
        assert_eq!(seen(&h), (1, 0, 2), "a history handed out does not change");

        // Nothing new: the same history, not a copy.
        let h3 = cache.refresh(d, dmg).unwrap();
        assert!(Arc::ptr_eq(&h2, &h3));

        // Replaced (as repair does): read again from the start, the change now seen.
        let text = std::fs::read(d.join(ARCHIVE)).unwrap();
        std::fs::write(d.join("new"), &text).unwrap();
        std::fs::rename(d.join("new"), d.join(ARCHIVE)).unwrap();
        assert_eq!(seen(&cache.refresh(d, dmg).unwrap()), (1, 1, 1));

        // Gone: forgotten.
        std::fs::remove_file(d.join(LOG)).unwrap();
        assert_eq!(seen(&cache.refresh(d, dmg).unwrap()), (1, 1, 0));
    }

    #[test]
    fn a_cut_off_last_line_waits_and_a_bad_line_is_damage_every_time() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut cache = HistoryCache::default();
        archive::append(
            &d.join(ARCHIVE),
            &[finished(1, TaskStatus::Completed)],
            t0(),
        )
        .unwrap();
        let whole = std::fs::read(d.join(ARCHIVE)).unwrap();
        // An append under way: half a line.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(d.join(ARCHIVE))
            .unwrap();
        f.write_all(&whole[..whole.len() / 2]).unwrap();
        let dmg = &mut Damages::refuse();
        assert_eq!(seen(&cache.refresh(d, dmg).unwrap()).0, 1);
        f.write_all(&whole[whole.len() / 2..]).unwrap();
        // The same task archived twice counts once; a junk line is damage.
        f.write_all(b"junk\n").unwrap();
        drop(f);
        let mut salvage = Damages::salvage();
        assert_eq!(seen(&cache.refresh(d, &mut salvage).unwrap()).0, 1);
        let found = salvage.into_found();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].file, ARCHIVE);
        assert!(
            found[0].detail.contains("does not parse"),
            "{}",
            found[0].detail
        );
        // Reported again on the next read, though the line is not read again.
        let mut salvage = Damages::salvage();
        cache.refresh(d, &mut salvage).unwrap();
        assert_eq!(salvage.into_found().len(), 1);
        assert!(cache.refresh(d, &mut Damages::refuse()).is_err());
    }
}
