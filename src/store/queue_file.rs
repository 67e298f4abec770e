//! `task-queue.json` on disk: a JSON array written one task per line, and a cache that lets a
//! long-lived process skip parsing and serializing the tasks that did not change.
//!
//! ```text
//! [
//! {"id":1795248529762,"description":"Create hello.txt",...},
//! {"id":1795248529767,"description":"Second task",...}
//! ]
//! ```
//!
//! The file is plain JSON (any JSON reader takes it) and one task per line keeps it easy to
//! grep and diff. Files in any other layout, such as the original plan's indented ones, are
//! read with a full parse and rewritten in this layout by the next change.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ops::Range;

use crate::task::Task;

/// What a long-lived handle knows of the file: the bytes it last read or wrote and where
/// each task's line is in them (a checkpoint copies the lines of unchanged tasks).
#[derive(Debug, Default)]
pub struct QueueCache {
    bytes: Vec<u8>,
    lines: HashMap<u64, Range<usize>>,
}

impl QueueCache {
    /// Records what was just written durably.
    pub fn set_written(&mut self, encoded: Encoded) {
        self.bytes = encoded.bytes;
        self.lines = encoded.lines;
    }

    /// Forgets everything (after a failed write, the file and memory may differ).
    pub fn clear(&mut self) {
        *self = QueueCache::default();
    }
}

/// The bytes of a queue file and where each task's line is in them.
#[derive(Debug)]
pub struct Encoded {
    /// The whole file.
    pub bytes: Vec<u8>,
    lines: HashMap<u64, Range<usize>>,
}

/// Why a queue file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// It is not a JSON array of tasks.
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    /// It holds one task id twice: two workers could be handed the same task.
    #[error("task id {0} is on the queue twice")]
    Duplicate(u64),
}

/// Parses the queue file; `cache` then describes it (in this module's layout). A queue that
/// holds an id twice is refused like one that does not parse.
pub fn decode(bytes: &[u8], cache: &mut QueueCache) -> Result<Vec<Task>, QueueError> {
    cache.clear();
    if let Some(lines) = split_lines(bytes) {
        let mut out = Vec::with_capacity(lines.len());
        let mut ranges = HashMap::with_capacity(lines.len());
        let mut ok = true;
        for range in lines {
            match serde_json::from_slice::<Task>(&bytes[range.clone()]) {
                Ok(task) => {
                    if ranges.insert(task.id, range).is_some() {
                        return Err(QueueError::Duplicate(task.id));
                    }
                    out.push(task);
                }
                Err(_) => {
                    ok = false;
                    break;
                }
            }
        }
        if ok {
            cache.bytes = bytes.to_vec();
            cache.lines = ranges;
            return Ok(out);
        }
    }
    // Another layout, or a line that does not parse: a full parse gives the exact answer.
    let tasks: Vec<Task> = serde_json::from_slice(bytes)?;
    let mut ids = HashSet::with_capacity(tasks.len());
    match tasks.iter().find(|t| !ids.insert(t.id)) {
        Some(t) => Err(QueueError::Duplicate(t.id)),
        None => Ok(tasks),
    }
}

/// Serializes the queue one task per line. Tasks not in `touched` whose line the cache knows
/// keep their bytes; the others are serialized.
pub fn encode(
    tasks: &[Task],
    touched: &BTreeSet<u64>,
    cache: &QueueCache,
) -> Result<Encoded, serde_json::Error> {
    if tasks.is_empty() {
        return Ok(Encoded {
            bytes: b"[]\n".to_vec(),
            lines: HashMap::new(),
        });
    }
    let mut out = Vec::with_capacity(cache.bytes.len() + 4096);
    let mut lines = HashMap::with_capacity(tasks.len());
    out.extend_from_slice(b"[\n");
    let n = tasks.len();
    for (i, t) in tasks.iter().enumerate() {
        let start = out.len();
        match cache.lines.get(&t.id) {
            Some(r) if !touched.contains(&t.id) => {
                let line = &cache.bytes[r.clone()];
                // Every change to a task must be in `touched`; tests check that the kept
                // bytes are what serializing the task gives.
                debug_assert_eq!(
                    serde_json::from_slice::<Task>(line).ok().as_ref(),
                    Some(t),
                    "task {} changed without being marked touched",
                    t.id
                );
                out.extend_from_slice(line);
            }
            _ => serde_json::to_writer(&mut out, t)?,
        }
        lines.insert(t.id, start..out.len());
        out.extend_from_slice(if i + 1 < n { b",\n" } else { b"\n" });
    }
    out.extend_from_slice(b"]\n");
    Ok(Encoded { bytes: out, lines })
}

/// The byte ranges of the task lines of a file in this module's layout, or `None` for any
/// other layout.
fn split_lines(bytes: &[u8]) -> Option<Vec<Range<usize>>> {
    let end = bytes.strip_suffix(b"\n").map_or(bytes.len(), <[u8]>::len);
    let body = &bytes[..end];
    if body == b"[]" {
        return Some(Vec::new());
    }
    if !body.starts_with(b"[\n") || !body.ends_with(b"\n]") {
        return None;
    }
    let (from, to) = (2, end - 2);
    if from > to {
        return None;
    }
    let mut out = Vec::new();
    let mut start = from;
    while start < to {
        let stop = bytes[start..to]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(to, |p| start + p);
        let last = stop == to;
        let mut line = start..stop;
        if !last {
            if stop == start || bytes[stop - 1] != b',' {
                return None;
            }
            line = start..stop - 1;
        } else if bytes[start..stop].ends_with(b",") {
            return None;
        }
        let l = &bytes[line.clone()];
        if !l.starts_with(b"{") || !l.ends_with(b"}") {
            return None;
        }
        out.push(line);
        start = stop + 1;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    fn tasks(n: u64) -> Vec<Task> {
        (0..n)
            .map(|i| Task::new(100 + i, format!("task {i}"), crate::time::now()))
            .collect()
    }

    fn none() -> BTreeSet<u64> {
        BTreeSet::new()
    }

    #[test]
    fn round_trips_and_is_plain_json() {
        for n in [0, 1, 3] {
            let t = tasks(n);
            let bytes = encode(&t, &none(), &QueueCache::default()).unwrap().bytes;
            let plain: Vec<Task> = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(plain, t);
            assert_eq!(decode(&bytes, &mut QueueCache::default()).unwrap(), t);
        }
    }

    #[test]
    fn a_cache_reuses_the_lines_of_untouched_tasks() {
        let mut cache = QueueCache::default();
        let mut t = tasks(3);
        let e = encode(&t, &none(), &cache).unwrap();
        let first = e.bytes.clone();
        cache.set_written(e);
        assert_eq!(decode(&first, &mut cache).unwrap(), t);
        t[1].description = "changed".into();
        let touched = BTreeSet::from([t[1].id]);
        let e = encode(&t, &touched, &cache).unwrap();
        let second = e.bytes.clone();
        assert_eq!(serde_json::from_slice::<Vec<Task>>(&second).unwrap(), t);
        cache.set_written(e);
        // Someone else wrote the first version back: it is parsed.
        let back = decode(&first, &mut cache).unwrap();
        assert_eq!(back[1].description, "task 1");
        // And the lines of what was parsed are reused for untouched tasks.
        let again = encode(&back, &none(), &cache).unwrap();
        assert_eq!(again.bytes, first);
    }

    #[test]
    fn other_layouts_and_damage_fall_back_to_a_full_parse() {
        let t = tasks(2);
        let pretty = serde_json::to_vec_pretty(&t).unwrap();
        assert_eq!(decode(&pretty, &mut QueueCache::default()).unwrap(), t);
        let good = encode(&t, &none(), &QueueCache::default()).unwrap().bytes;
        // Missing comma between lines: not valid JSON, must not be accepted line by line.
        let s = String::from_utf8(good.clone())
            .unwrap()
            .replacen("},\n", "}\n", 1);
        assert!(decode(s.as_bytes(), &mut QueueCache::default()).is_err());
        // Cut off.
        assert!(decode(&good[..good.len() / 2], &mut QueueCache::default()).is_err());
        // Empty lines are not this layout.
        let s = String::from_utf8(good).unwrap().replacen(",\n", ",\n\n", 1);
        assert_eq!(decode(s.as_bytes(), &mut QueueCache::default()).unwrap(), t);
    }

    #[test]
    fn an_id_twice_is_refused_in_every_layout() {
        let mut t = tasks(3);
        t[2].id = t[0].id;
        let lines = encode(&t, &none(), &QueueCache::default()).unwrap().bytes;
        let pretty = serde_json::to_vec_pretty(&t).unwrap();
        for bytes in [&lines, &pretty] {
            let mut cache = QueueCache::default();
            assert!(matches!(
                decode(bytes, &mut cache),
                Err(QueueError::Duplicate(id)) if id == t[0].id
            ));
        }
    }
}
