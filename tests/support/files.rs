//! Reading a board's files directly: JSON and JSON-lines files, every board file at once
//! ([`Files`]), timestamps and heartbeats.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

/// A JSON file, parsed (panics, showing the bytes, if it does not parse).
pub fn read_json_file(path: &Path) -> Value {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!(
            "{} does not parse ({e}):\n{}",
            path.display(),
            String::from_utf8_lossy(&bytes)
        )
    })
}

/// Every non-blank line of `text` parsed as JSON; panics, naming `what` and the line, on a line
/// that does not parse.
pub fn parse_lines(text: &str, what: &str) -> Vec<Value> {
    text.split('\n')
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(n, l)| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{what} line {} does not parse ({e}): {l:?}", n + 1))
        })
        .collect()
}

/// The lines of a JSON-lines file: every complete line parsed (panics if one does not), plus
/// whether the file ends in a torn line (bytes after the last newline). No file: no lines.
pub fn jsonl(path: &Path) -> (Vec<Value>, bool) {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (vec![], false),
        Err(e) => panic!("reading {}: {e}", path.display()),
    };
    let complete = match bytes.iter().rposition(|&b| b == b'\n') {
        Some(p) => &bytes[..=p],
        None => &bytes[..0],
    };
    let torn = complete.len() < bytes.len();
    let text = std::str::from_utf8(complete)
        .unwrap_or_else(|e| panic!("{} is not UTF-8: {e}", path.display()));
    (parse_lines(text, &path.display().to_string()), torn)
}

/// Every line of a JSON-lines file, parsed; panics if the file ends in a torn line.
pub fn jsonl_whole(path: &Path) -> Vec<Value> {
    let (lines, torn) = jsonl(path);
    assert!(!torn, "{} ends in a torn line", path.display());
    lines
}

/// How long the JSON files of a board may take to catch up with its journal once it stops
/// changing: a checkpoint comes 0.2 s after the last change (`store::local::checkpoint::QUIET`)
/// while the handle that made it runs; this is that with room for a loaded machine.
pub const CHECKPOINT_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);

/// The records in the board journal of `dir` (0 when it has none): changes the JSON files do
/// not show yet. The lines before its first zero byte (the room made for records after them).
pub fn journal_records(dir: &Path) -> usize {
    fs::read(dir.join("board.journal"))
        .map(|b| {
            let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
            b[..end]
                .split(|&c| c == b'\n')
                .filter(|l| !l.is_empty())
                .count()
                .saturating_sub(1)
        })
        .unwrap_or(0)
}

/// Waits until the JSON files of the board in `dir` hold every change (its journal holds no
/// record), as a person reading them would a moment after the board stopped changing.
pub fn wait_checkpointed(dir: &Path) {
    let start = std::time::Instant::now();
    while journal_records(dir) > 0 {
        assert!(
            start.elapsed() < CHECKPOINT_WITHIN,
            "{}: the journal still holds {} records after {:?}: no checkpoint came",
            dir.display(),
            journal_records(dir),
            CHECKPOINT_WITHIN
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Every board file, parsed and checked for shape.
#[derive(Debug)]
pub struct Files {
    pub queue: Vec<Value>,
    pub archive: Vec<Value>,
    pub log: Vec<Value>,
    pub workers: Map<String, Value>,
}

impl Files {
    /// The board in `dir`; a torn last line of the log or the archive is left out, as the
    /// board's readers leave it out.
    pub fn read(dir: &Path) -> Self {
        Self::read_with(dir, jsonl)
    }

    /// The board in `dir`, insisting that the log and the archive end with whole lines.
    pub fn read_whole(dir: &Path) -> Self {
        Self::read_with(dir, |p| (jsonl_whole(p), false))
    }

    fn read_with(dir: &Path, lines: impl Fn(&Path) -> (Vec<Value>, bool)) -> Self {
        wait_checkpointed(dir);
        let board = read_json_file(&dir.join("board.json"));
        assert!(board["settings"].is_object(), "board.json: {board}");
        let queue = match read_json_file(&dir.join("task-queue.json")) {
            Value::Array(a) => a,
            other => panic!("task-queue.json is not an array: {other}"),
        };
        let workers = match read_json_file(&dir.join("worker-status.json")) {
            Value::Object(o) => o,
            other => panic!("worker-status.json is not an object: {other}"),
        };
        let progress = read_json_file(&dir.join("progress.json"));
        assert!(progress.is_object(), "progress.json: {progress}");
        let (archive, _) = lines(&dir.join("task-archive.jsonl"));
        for l in &archive {
            assert!(l["task"]["id"].is_u64(), "archive line without a task: {l}");
        }
        let (log, _) = lines(&dir.join("agent-comms.jsonl"));
        Files {
            queue,
            archive,
            log,
            workers,
        }
    }

    /// How often each id appears across the queue and the raw archive lines.
    pub fn id_counts(&self) -> BTreeMap<u64, usize> {
        let mut m = BTreeMap::new();
        let archived = self.archive.iter().map(|l| &l["task"]);
        for t in self.queue.iter().chain(archived) {
            *m.entry(t["id"].as_u64().expect("task id")).or_insert(0) += 1;
        }
        m
    }

    /// Every task record, queue and archive, by id (panics on a duplicate id).
    pub fn tasks_once(&self) -> BTreeMap<u64, Value> {
        let mut m = BTreeMap::new();
        let archived = self.archive.iter().map(|l| &l["task"]);
        for t in self.queue.iter().chain(archived) {
            let id = t["id"].as_u64().expect("task id");
            if let Some(old) = m.insert(id, t.clone()) {
                panic!("task {id} is on the board twice:\n{old}\n{t}");
            }
        }
        m
    }
}

/// Asserts that the log's sequence numbers strictly increase (no number given twice, even
/// when writers were killed mid-append).
pub fn assert_log_sane(files: &Files, ctx: &str) {
    let seqs: Vec<u64> = files
        .log
        .iter()
        .map(|m| {
            m["seq"]
                .as_u64()
                .unwrap_or_else(|| panic!("{ctx}: log entry without seq: {m}"))
        })
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "{ctx}: log sequence numbers do not increase: {seqs:?}"
    );
}

/// A JSON timestamp (RFC 3339).
pub fn ts(v: &Value) -> DateTime<Utc> {
    let s = v.as_str().unwrap_or_else(|| panic!("not a timestamp: {v}"));
    DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("{s:?} is not RFC 3339: {e}"))
        .with_timezone(&Utc)
}

/// The last heartbeat `worker-status.json` in `dir` records for `worker`, if it can be read.
pub fn last_heartbeat(dir: &Path, worker: &str) -> Option<String> {
    let file: Value =
        serde_json::from_slice(&fs::read(dir.join("worker-status.json")).ok()?).ok()?;
    file[worker]["last_heartbeat"].as_str().map(str::to_string)
}
