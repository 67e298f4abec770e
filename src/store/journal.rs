//! The board journal (`board.journal`): what every change since the last checkpoint did, one
//! record a line, so that a change is one append and one fdatasync whatever the size of the
//! board. The board is the checkpoint (the JSON files) plus the journal's records applied in
//! order.
//!
//! ```text
//! 3a1f00c2 {"journal":1,"base":41,"files":{"task-queue.json":[2050,16,5120,1795248529762000000],...}}
//! 9c0e11d4 {"seq":42,"at":1795248530001,"tasks":[{"id":7,...}],"workers":{"w1":{...}}}
//! 0b77e1a9 {"seq":43,"at":1795248530019,"tasks":[{"id":7,...}],"messages":[{"seq":9,...}]}
//! ```
//!
//! Every line is a CRC-32 of its JSON (8 hex digits), a space, the JSON and a newline. The
//! first line is the header: the format, the number of the last change the checkpoint holds
//! (`base`) and which files the checkpoint wrote (device, inode, length, modification time),
//! so that a process that kept the board in memory can tell a checkpoint from a file replaced
//! by something else. Each record carries the number of its change (`base + 1`, `+ 2` ...) and
//! the whole new value of every row it changed: tasks (a task not on the queue yet is added at
//! its end), tasks that left the queue (`gone`), workers (`null`: removed), the progress
//! record, the Claude sessions, and the log entries the change wrote. Applying a record twice
//! gives what applying it once gives, and log entries are numbered, so a crash at any point of
//! a checkpoint never applies a change twice in effect.
//!
//! After the last record the file may hold zero bytes up to its length: room made ahead of
//! time (see [`ROOM`]), so that an append writes over blocks that are already the file's and
//! its fdatasync flushes the record alone, with no change to the file's size or allocation to
//! commit as well. No line holds a zero byte (JSON writes one as `\u0000`), so the records end
//! where the first zero byte is. Readers read up to it, not to the file's end.
//!
//! A line cut short or whose CRC does not match at the end of the records is a torn tail (a
//! crash during an append): it is ignored by readers and cut off by the next writer, together
//! with the room after it. One followed by good records is damage.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::message::Message;
use crate::progress::Progress;
use crate::sessions::SessionRecord;
use crate::store::inode;
use crate::task::Task;
use crate::worker::Worker;

/// The journal's format, in its header; a newer one is refused.
pub const FORMAT: u32 = 1;

/// Room for records made ahead of time: an append that finds too little (the first after a
/// checkpoint, then about one in every 64 KiB of records) makes this much beyond its record.
/// An append into room the file already has does not change the file's size, so its
/// fdatasync has no size to commit (with `store::inode`'s looks, one local worker did
/// 1.26–1.38× the cycles of before: BENCHMARKS.md). Making room costs its bytes once, and one
/// fdatasync that commits the new size.
pub const ROOM: u64 = 64 << 10;

/// Where a file of the checkpoint stands: device, inode, length and modification time (ns).
/// Two looks that give the same identity saw the same file, as far as a process can tell
/// without reading it.
pub type FileId = [u64; 4];

/// The journal's first line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header {
    /// The journal format ([`FORMAT`]).
    pub journal: u32,
    /// The number of the last change the checkpoint (the JSON files) holds; records follow
    /// from `base + 1`.
    pub base: u64,
    /// The checkpoint's files as the checkpoint left them, by name (`None`: absent).
    #[serde(default)]
    pub files: BTreeMap<String, Option<FileId>>,
}

/// One change: the new value of every row it changed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The change's number: one more than the record before (or the header's `base`).
    pub seq: u64,
    /// When it was appended (ms since the epoch): how old the oldest unsaved change is.
    pub at: i64,
    /// Tasks changed or added, whole, in queue order for added ones.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tasks: Vec<Task>,
    /// Tasks that left the queue (moved to the archive).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gone: Vec<u64>,
    /// Workers changed (`None`: removed).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub workers: BTreeMap<String, Option<Worker>>,
    /// The progress record, when it changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
    /// The Claude sessions' records, when they changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sessions: Option<Vec<SessionRecord>>,
    /// Log entries the change wrote (numbered), also appended to `agent-comms.jsonl`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub messages: Vec<Message>,
}

impl Record {
    /// True if the record changes nothing.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
            && self.gone.is_empty()
            && self.workers.is_empty()
            && self.progress.is_none()
            && self.sessions.is_none()
            && self.messages.is_empty()
    }
}

/// A value as one journal line: CRC-32 of the JSON, a space, the JSON, a newline.
pub fn line<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    let json = serde_json::to_vec(value).map_err(|e| Error::Protocol(e.to_string()))?;
    let mut out = Vec::with_capacity(json.len() + 10);
    out.extend_from_slice(format!("{:08x} ", crc32fast::hash(&json)).as_bytes());
    out.extend_from_slice(&json);
    out.push(b'\n');
    Ok(out)
}

/// The JSON of a whole line (without its newline) if its CRC matches.
fn body(line: &[u8]) -> Option<&[u8]> {
    if line.len() < 10 || line[8] != b' ' {
        return None;
    }
    let crc = u32::from_str_radix(std::str::from_utf8(&line[..8]).ok()?, 16).ok()?;
    let json = &line[9..];
    (crc32fast::hash(json) == crc).then_some(json)
}

/// What a look at the journal found.
#[derive(Debug, Default)]
pub struct Scan {
    /// Records in order.
    pub records: Vec<Record>,
    /// Where the last good line ends (the offset the next look starts from).
    pub end: u64,
    /// Bytes after `end` that are not a whole good line (a torn tail, or an append in
    /// progress when looked at without the lock).
    pub torn: u64,
    /// Damage found after the records read (they are what can be salvaged).
    pub damage: Option<Damage>,
}

/// Why the journal cannot be used (the detail of an `Error::Damaged`).
pub type Damage = String;

/// Reads the lines of `bytes` (which start at file offset `start`): records numbered from
/// `next` on. A bad line followed by a good one, a record out of order, or a header where a
/// record should be is damage (the records before it are returned with it); a bad last line
/// is a torn tail.
pub fn scan(bytes: &[u8], start: u64, next: u64) -> Scan {
    let bytes = records_part(bytes);
    let mut out = Scan {
        end: start,
        ..Scan::default()
    };
    let mut pos = 0usize;
    let mut expect = next;
    let mut bad: Option<usize> = None;
    while pos < bytes.len() {
        let Some(nl) = bytes[pos..].iter().position(|&b| b == b'\n') else {
            break;
        };
        let raw = &bytes[pos..pos + nl];
        let parsed = body(raw).map(serde_json::from_slice::<Record>);
        match parsed {
            Some(Ok(r)) => {
                if let Some(at) = bad {
                    out.damage = Some(format!(
                        "a damaged line at byte {} is followed by good records",
                        start + at as u64
                    ));
                    break;
                }
                if r.seq != expect {
                    out.damage = Some(format!(
                        "record {} where record {expect} should be (byte {})",
                        r.seq,
                        start + pos as u64
                    ));
                    break;
                }
                expect += 1;
                out.records.push(r);
                pos += nl + 1;
                out.end = start + pos as u64;
            }
            _ => {
                bad.get_or_insert(pos);
                pos += nl + 1;
            }
        }
    }
    out.torn = start + bytes.len() as u64 - out.end;
    out
}

/// Reads the header line at the start of `bytes`; returns it and where the records start.
pub fn header(bytes: &[u8]) -> std::result::Result<(Header, u64), Damage> {
    let nl = bytes
        .iter()
        .position(|&b| b == b'\n')
        .ok_or_else(|| "the journal has no header line".to_string())?;
    let json =
        body(&bytes[..nl]).ok_or_else(|| "the journal's header line is damaged".to_string())?;
    let h: Header =
        serde_json::from_slice(json).map_err(|e| format!("the journal's header: {e}"))?;
    if h.journal > FORMAT {
        return Err(format!(
            "the journal is in format {}, newer than this vine knows ({FORMAT}): use a newer vine",
            h.journal
        ));
    }
    Ok((h, nl as u64 + 1))
}

/// The header of the journal at `path` and the number of the last change the journal holds:
/// its last good record's, or the header's `base` when it has none (a line cut short or
/// failing its CRC at the end is left out, as readers leave it). `None` when there is no
/// journal. Reads the header and the journal's end only, not the records between.
pub fn last_change(path: &Path) -> Result<Option<(Header, u64)>> {
    use std::os::unix::fs::FileExt;
    let file = match inode::open_without_atime(std::fs::OpenOptions::new().read(true), path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("opening", path, e)),
    };
    let (_, size) = inode::look_open(&file, path)?;
    let len = records_end(&file, size).map_err(|e| Error::io("reading", path, e))?;
    let range = |from: u64, to: u64| -> Result<Vec<u8>> {
        let mut buf = vec![0u8; (to - from) as usize];
        file.read_exact_at(&mut buf, from)
            .map_err(|e| Error::io("reading", path, e))?;
        Ok(buf)
    };
    const SPAN: u64 = 16 << 10;
    let mut head = range(0, len.min(SPAN))?;
    if !head.contains(&b'\n') && len > SPAN {
        head = range(0, len)?;
    }
    let (h, start) = header(&head).map_err(|detail| Error::Damaged {
        path: path.to_path_buf(),
        detail,
    })?;
    let mut span = SPAN;
    loop {
        let from = len.saturating_sub(span).max(start);
        let bytes = range(from, len)?;
        let mut lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
        // What follows the last newline is not a whole line; what precedes the first may be
        // the end of one that started before `from`.
        lines.pop();
        if from > start && !lines.is_empty() {
            lines.remove(0);
        }
        let last = lines.iter().rev().find_map(|l| {
            let json = body(l)?;
            serde_json::from_slice::<Numbered>(json).ok().map(|n| n.seq)
        });
        if let Some(seq) = last {
            return Ok(Some((h, seq)));
        }
        if from == start {
            let base = h.base;
            return Ok(Some((h, base)));
        }
        span = span.saturating_mul(4);
    }
}

/// A record's number alone (the rest of it is skipped).
#[derive(Deserialize)]
struct Numbered {
    seq: u64,
}

/// `bytes` up to their first zero byte: the records' part of what was read (the rest is room,
/// or what a crash left after a torn record).
fn records_part(bytes: &[u8]) -> &[u8] {
    match bytes.iter().position(|&b| b == 0) {
        Some(i) => &bytes[..i],
        None => bytes,
    }
}

/// The bytes of `file` from `offset` up to its records' end: its first zero byte there or,
/// in a journal without room, its end. Reads a little at a time, not the room after.
pub fn read_from(file: &File, offset: u64, path: &Path) -> Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let mut buf = Vec::new();
    let mut at = offset;
    let mut want = 4usize << 10;
    loop {
        let from = buf.len();
        buf.resize(from + want, 0);
        let n = loop {
            match file.read_at(&mut buf[from..], at) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io("reading", path, e)),
            }
        };
        buf.truncate(from + n);
        if let Some(i) = buf[from..].iter().position(|&b| b == 0) {
            buf.truncate(from + i);
            return Ok(buf);
        }
        if n == 0 {
            return Ok(buf);
        }
        at += n as u64;
        want = (want * 2).min(4 << 20);
    }
}

/// Whether the bytes of `file` from `offset` to `len` are all zero: room no crash wrote into.
pub fn room_is_clear(file: &File, offset: u64, len: u64) -> std::io::Result<bool> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; 64 << 10];
    let mut at = offset;
    while at < len {
        let want = ((len - at) as usize).min(buf.len());
        let n = file.read_at(&mut buf[..want], at)?;
        if n == 0 {
            break;
        }
        if buf[..n].iter().any(|&b| b != 0) {
            return Ok(false);
        }
        at += n as u64;
    }
    Ok(true)
}

/// Where the records of `file` (of `size` bytes) end: the first zero byte, found by halving
/// (records hold no zero byte and the room after them is all zeros), or `size` when its last
/// byte is not zero (a journal without room).
fn records_end(file: &File, size: u64) -> std::io::Result<u64> {
    use std::os::unix::fs::FileExt;
    let zero_at = |at: u64| -> std::io::Result<bool> {
        let mut b = [0u8; 1];
        let n = file.read_at(&mut b, at)?;
        Ok(n == 0 || b[0] == 0)
    };
    if size == 0 || !zero_at(size - 1)? {
        return Ok(size);
    }
    // Invariant: the byte at `hi` is zero; the records end at or before it.
    let (mut lo, mut hi) = (0u64, size - 1);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if zero_at(mid)? {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    Ok(hi)
}

/// The identity of the file at `path` (`None` when there is none).
pub fn file_id(path: &Path) -> Result<Option<FileId>> {
    match std::fs::metadata(path) {
        Ok(m) => Ok(Some(id_of(&m))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("looking at", path, e)),
    }
}

/// The identity of a file from its metadata.
pub fn id_of(m: &std::fs::Metadata) -> FileId {
    use std::os::unix::fs::MetadataExt;
    let mtime = (m.mtime() as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(m.mtime_nsec() as u64);
    [m.dev(), m.ino(), m.len(), mtime]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(seq: u64) -> Record {
        Record {
            seq,
            at: 1,
            gone: vec![seq],
            ..Record::default()
        }
    }

    fn lines(recs: &[Record]) -> Vec<u8> {
        recs.iter().flat_map(|r| line(r).unwrap()).collect()
    }

    #[test]
    fn records_round_trip_and_a_torn_tail_is_left_out() {
        let mut bytes = lines(&[rec(5), rec(6)]);
        let whole = bytes.len() as u64;
        let third = line(&rec(7)).unwrap();
        bytes.extend_from_slice(&third[..third.len() / 2]);
        let s = scan(&bytes, 100, 5);
        assert_eq!(s.records, vec![rec(5), rec(6)]);
        assert_eq!(s.end, 100 + whole);
        assert_eq!(s.torn, (third.len() / 2) as u64);
        // A whole line whose bytes changed is torn too when it is the last.
        let mut flipped = lines(&[rec(5), rec(6)]);
        let n = flipped.len();
        flipped[n - 3] ^= 1;
        let s = scan(&flipped, 0, 5);
        assert_eq!(s.records, vec![rec(5)]);
        assert!(s.torn > 0);
        // Zeros after a crash (no newline) are a torn tail.
        let mut zeros = lines(&[rec(5)]);
        zeros.extend_from_slice(&[0u8; 4096]);
        assert_eq!(scan(&zeros, 0, 5).records.len(), 1);
    }

    #[test]
    fn a_bad_line_before_good_ones_or_a_gap_is_damage() {
        let mut bytes = lines(&[rec(5)]);
        bytes.extend_from_slice(b"00000000 {}\n");
        bytes.extend_from_slice(&lines(&[rec(6)]));
        let s = scan(&bytes, 0, 5);
        assert!(s.damage.unwrap().contains("followed by good records"));
        assert_eq!(
            s.records,
            vec![rec(5)],
            "what comes before the damage is salvaged"
        );
        let gap = scan(&lines(&[rec(5), rec(7)]), 0, 5);
        assert!(gap.damage.unwrap().contains("record 7 where record 6"));
        assert_eq!(gap.records, vec![rec(5)]);
        assert!(scan(&lines(&[rec(5)]), 0, 4).damage.is_some());
    }

    #[test]
    fn records_end_at_the_first_zero_byte_and_reads_stop_there() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        let recs = lines(&[rec(5), rec(6)]);
        for room in [0usize, 1, 4095, 4096, 70_000] {
            let mut bytes = recs.clone();
            bytes.resize(recs.len() + room, 0);
            std::fs::write(&path, &bytes).unwrap();
            let f = File::open(&path).unwrap();
            assert_eq!(
                records_end(&f, bytes.len() as u64).unwrap(),
                recs.len() as u64,
                "room {room}"
            );
            assert_eq!(read_from(&f, 0, &path).unwrap(), recs, "room {room}");
            assert!(read_from(&f, recs.len() as u64, &path).unwrap().is_empty());
            assert!(room_is_clear(&f, recs.len() as u64, bytes.len() as u64).unwrap());
        }
        // Records longer than the first reads.
        let many: Vec<Record> = (1..2000).map(rec).collect();
        let mut bytes = lines(&many);
        let n = bytes.len();
        bytes.resize(n + 100, 0);
        bytes[n + 50] = b'x';
        std::fs::write(&path, &bytes).unwrap();
        let f = File::open(&path).unwrap();
        assert_eq!(read_from(&f, 0, &path).unwrap().len(), n);
        assert_eq!(scan(&bytes, 0, 1).records.len(), 1999);
        assert!(!room_is_clear(&f, n as u64, bytes.len() as u64).unwrap());
        let empty = dir.path().join("e");
        std::fs::write(&empty, b"").unwrap();
        assert_eq!(records_end(&File::open(&empty).unwrap(), 0).unwrap(), 0);
    }

    #[test]
    fn the_header_is_read_and_a_newer_format_refused() {
        let h = Header {
            journal: FORMAT,
            base: 9,
            files: BTreeMap::from([("task-queue.json".to_string(), Some([1, 2, 3, 4]))]),
        };
        let mut bytes = line(&h).unwrap();
        let start = bytes.len() as u64;
        bytes.extend_from_slice(&lines(&[rec(10)]));
        let (got, at) = header(&bytes).unwrap();
        assert_eq!((got, at), (h.clone(), start));
        assert_eq!(scan(&bytes[at as usize..], at, 10).records.len(), 1);
        let newer = line(&Header {
            journal: FORMAT + 1,
            ..h
        })
        .unwrap();
        assert!(header(&newer).unwrap_err().contains("newer"));
        assert!(header(b"garbage\n").is_err());
    }
}
