//! Reading JSON-lines files (the message log and the archive): whole-file scans that skip
//! unreadable lines, and cheap reads of the last lines.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// Every line of `path` that parses as `T`, in order, plus how many lines did not parse.
/// A missing file reads as empty. A torn last line (no newline) is skipped silently.
pub fn read_all<T: DeserializeOwned>(path: &Path) -> Result<(Vec<T>, usize)> {
    let mut out = Vec::new();
    let mut bad = 0;
    scan(path, |line| match serde_json::from_slice::<T>(line) {
        Ok(v) => {
            out.push(v);
            true
        }
        Err(_) => {
            bad += 1;
            true
        }
    })?;
    Ok((out, bad))
}

/// Calls `f` with each complete non-empty line of `path`; stops early when `f` returns false.
pub fn scan(path: &Path, mut f: impl FnMut(&[u8]) -> bool) -> Result<()> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("reading", path, e)),
    };
    let mut r = BufReader::with_capacity(256 * 1024, file);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = r
            .read_until(b'\n', &mut line)
            .map_err(|e| Error::io("reading", path, e))?;
        if n == 0 || line.last() != Some(&b'\n') {
            return Ok(());
        }
        let body = trim(&line);
        if !body.is_empty() && !f(body) {
            return Ok(());
        }
    }
}

/// The last complete lines of `path`, newest first, reading backwards until `f` returns false.
pub fn scan_back(path: &Path, mut f: impl FnMut(&[u8]) -> bool) -> Result<()> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("reading", path, e)),
    };
    let len = file
        .metadata()
        .map_err(|e| Error::io("reading", path, e))?
        .len();
    let mut end = len;
    let mut carry: Vec<u8> = Vec::new();
    let mut first_chunk = true;
    const CHUNK: u64 = 64 * 1024;
    while end > 0 {
        let start = end.saturating_sub(CHUNK);
        let mut buf = vec![0u8; (end - start) as usize];
        file.seek(SeekFrom::Start(start))
            .and_then(|_| file.read_exact(&mut buf))
            .map_err(|e| Error::io("reading", path, e))?;
        buf.extend_from_slice(&carry);
        if first_chunk {
            // Drop a torn last line.
            match buf.iter().rposition(|&b| b == b'\n') {
                Some(p) => buf.truncate(p + 1),
                None if start == 0 => return Ok(()),
                None => {
                    carry = Vec::new();
                    end = start;
                    continue;
                }
            }
            first_chunk = false;
        }
        // Lines fully inside buf except possibly the first (which may continue before `start`).
        let mut lines: Vec<&[u8]> = buf.split(|&b| b == b'\n').collect();
        let head = if start > 0 {
            Some(lines.remove(0))
        } else {
            None
        };
        for l in lines.iter().rev() {
            let body = trim(l);
            if !body.is_empty() && !f(body) {
                return Ok(());
            }
        }
        carry = head.map(|h| h.to_vec()).unwrap_or_default();
        end = start;
    }
    Ok(())
}

fn trim(line: &[u8]) -> &[u8] {
    let mut s = line;
    while let Some((&b, rest)) = s.split_last() {
        if b == b'\n' || b == b'\r' || b == b' ' || b == b'\t' {
            s = rest;
        } else {
            break;
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_and_forth_agree_and_skip_torn_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.jsonl");
        let mut text = String::new();
        for i in 0..5000 {
            text.push_str(&format!(
                "{{\"n\":{i},\"pad\":\"{}\"}}\n",
                "x".repeat(i % 50)
            ));
        }
        text.push_str("{\"n\":99"); // torn
        std::fs::write(&p, &text).unwrap();
        let (fwd, bad) = read_all::<serde_json::Value>(&p).unwrap();
        assert_eq!(bad, 0);
        assert_eq!(fwd.len(), 5000);
        let mut back = Vec::new();
        scan_back(&p, |l| {
            back.push(
                serde_json::from_slice::<serde_json::Value>(l).unwrap()["n"]
                    .as_u64()
                    .unwrap(),
            );
            true
        })
        .unwrap();
        assert_eq!(back.len(), 5000);
        assert_eq!(back[0], 4999);
        assert_eq!(back[4999], 0);
    }
}
