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

use std::collections::HashMap;

use crate::task::Task;

/// Tasks as last read or written, with their exact line bytes.
#[derive(Debug, Default)]
pub struct QueueCache {
    entries: HashMap<u64, Entry>,
}

#[derive(Debug)]
struct Entry {
    line: Vec<u8>,
    task: Task,
}

/// Parses the queue file. Lines identical to cached ones are not parsed again.
pub fn decode(bytes: &[u8], cache: &mut QueueCache) -> Result<Vec<Task>, serde_json::Error> {
    if let Some(lines) = split_lines(bytes) {
        let mut out = Vec::with_capacity(lines.len());
        let mut next = HashMap::with_capacity(lines.len());
        let mut ok = true;
        for line in lines {
            if let Some(id) = leading_id(line)
                && let Some(e) = cache.entries.remove(&id)
                && e.line == line
            {
                out.push(e.task.clone());
                next.insert(id, e);
                continue;
            }
            match serde_json::from_slice::<Task>(line) {
                Ok(task) => {
                    next.insert(
                        task.id,
                        Entry {
                            line: line.to_vec(),
                            task: task.clone(),
                        },
                    );
                    out.push(task);
                }
                Err(_) => {
                    ok = false;
                    break;
                }
            }
        }
        if ok {
            cache.entries = next;
            return Ok(out);
        }
    }
    // Another layout, or a line that does not parse: a full parse gives the exact answer.
    cache.entries.clear();
    serde_json::from_slice(bytes)
}

/// Serializes the queue one task per line, reusing the bytes of unchanged cached tasks.
pub fn encode(tasks: &[Task], cache: &mut QueueCache) -> Result<Vec<u8>, serde_json::Error> {
    if tasks.is_empty() {
        cache.entries.clear();
        return Ok(b"[]\n".to_vec());
    }
    let mut out = Vec::with_capacity(64 + tasks.len() * 1024);
    out.extend_from_slice(b"[\n");
    let mut next = HashMap::with_capacity(tasks.len());
    let n = tasks.len();
    for (i, t) in tasks.iter().enumerate() {
        let entry = match cache.entries.remove(&t.id) {
            Some(e) if e.task == *t => e,
            _ => Entry {
                line: serde_json::to_vec(t)?,
                task: t.clone(),
            },
        };
        out.extend_from_slice(&entry.line);
        out.extend_from_slice(if i + 1 < n { b",\n" } else { b"\n" });
        next.insert(t.id, entry);
    }
    out.extend_from_slice(b"]\n");
    cache.entries = next;
    Ok(out)
}

/// The task lines of a file in this module's layout, or `None` for any other layout.
fn split_lines(bytes: &[u8]) -> Option<Vec<&[u8]>> {
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    if body == b"[]" {
        return Some(Vec::new());
    }
    let body = body.strip_prefix(b"[\n")?.strip_suffix(b"]")?;
    let body = body.strip_suffix(b"\n")?;
    let mut lines: Vec<&[u8]> = body.split(|&b| b == b'\n').collect();
    let last = lines.len() - 1;
    for (i, line) in lines.iter_mut().enumerate() {
        if i < last {
            *line = line.strip_suffix(b",")?;
        } else if line.ends_with(b",") {
            return None;
        }
        if !line.starts_with(b"{") || !line.ends_with(b"}") {
            return None;
        }
    }
    Some(lines)
}

/// The id at the start of a line this module wrote (`{"id":123,`).
fn leading_id(line: &[u8]) -> Option<u64> {
    let rest = line.strip_prefix(b"{\"id\":")?;
    let end = rest.iter().position(|b| !b.is_ascii_digit())?;
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    fn tasks(n: u64) -> Vec<Task> {
        (0..n)
            .map(|i| Task::new(100 + i, format!("task {i}"), crate::time::now()))
            .collect()
    }

    #[test]
    fn round_trips_and_is_plain_json() {
        for n in [0, 1, 3] {
            let t = tasks(n);
            let bytes = encode(&t, &mut QueueCache::default()).unwrap();
            let plain: Vec<Task> = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(plain, t);
            assert_eq!(decode(&bytes, &mut QueueCache::default()).unwrap(), t);
            let mut warm = QueueCache::default();
            encode(&t, &mut warm).unwrap();
            assert_eq!(decode(&bytes, &mut warm).unwrap(), t);
        }
    }

    #[test]
    fn cached_lines_follow_changes() {
        let mut cache = QueueCache::default();
        let mut t = tasks(3);
        let a = encode(&t, &mut cache).unwrap();
        t[1].description = "changed".into();
        let b = encode(&t, &mut cache).unwrap();
        assert_ne!(a, b);
        // A cache that saw `b` reads `a` (written by someone else) correctly.
        let back = decode(&a, &mut cache).unwrap();
        assert_eq!(back[1].description, "task 1");
        assert_eq!(decode(&b, &mut cache).unwrap(), t);
    }

    #[test]
    fn other_layouts_and_damage_fall_back_to_a_full_parse() {
        let t = tasks(2);
        let pretty = serde_json::to_vec_pretty(&t).unwrap();
        assert_eq!(decode(&pretty, &mut QueueCache::default()).unwrap(), t);
        let good = encode(&t, &mut QueueCache::default()).unwrap();
        // Missing comma between lines: not valid JSON, must not be accepted line by line.
        let s = String::from_utf8(good.clone())
            .unwrap()
            .replacen("},\n", "}\n", 1);
        assert!(decode(s.as_bytes(), &mut QueueCache::default()).is_err());
        // Cut off.
        assert!(decode(&good[..good.len() / 2], &mut QueueCache::default()).is_err());
    }
}
