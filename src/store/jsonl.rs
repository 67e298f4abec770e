//! Reading JSON-lines files (the message log and the archive): forwards, backwards from the
//! end (cheap reads of the last lines), or whole.
//!
//! A last line without a newline is what a writer killed mid-append leaves: it is skipped
//! silently (and cut off by the next append). Any other line that does not parse is damage,
//! reported to the caller's [`Damages`]: a change is refused, a read skips the line and says
//! the file is damaged. Only the lines a read looks at are checked; a read of the last line
//! does not scan the whole file.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use serde::de::DeserializeOwned;

use super::damage::Damages;
use crate::error::{Error, Result};

/// Parses one line of a JSON-lines board file.
pub fn parse_line<T: DeserializeOwned>(line: &[u8]) -> serde_json::Result<T> {
    serde_json::from_slice(line)
}

/// Every line of `path` parsed as `T`, in order. A missing file reads as empty.
pub fn read_all<T: DeserializeOwned>(path: &Path, dmg: &mut Damages) -> Result<Vec<T>> {
    let mut out = Vec::new();
    each(path, dmg, |v| {
        out.push(v);
        true
    })?;
    Ok(out)
}

/// Calls `f` with each line of `path` parsed as `T`, oldest first, until `f` returns false.
pub fn each<T: DeserializeOwned>(
    path: &Path,
    dmg: &mut Damages,
    f: impl FnMut(T) -> bool,
) -> Result<()> {
    parsed(path, dmg, f, |p, g| scan(p, g))
}

/// Calls `f` with each line of `path` parsed as `T`, newest first, until `f` returns false.
pub fn each_back<T: DeserializeOwned>(
    path: &Path,
    dmg: &mut Damages,
    f: impl FnMut(T) -> bool,
) -> Result<()> {
    parsed(path, dmg, f, |p, g| scan_back(p, g))
}

/// Runs `scanner` over `path`, handing `f` each line parsed as `T`; a line that does not
/// parse goes to `dmg`, which either lets the scan go on or stops it with its error.
fn parsed<T: DeserializeOwned>(
    path: &Path,
    dmg: &mut Damages,
    mut f: impl FnMut(T) -> bool,
    scanner: impl FnOnce(&Path, &mut dyn FnMut(u64, &[u8]) -> bool) -> Result<()>,
) -> Result<()> {
    let mut bad = None;
    scanner(path, &mut |at, line| match parse_line::<T>(line) {
        Ok(v) => f(v),
        Err(e) => match dmg.found(path, bad_line(at, &e)) {
            Ok(()) => true,
            Err(err) => {
                bad = Some(err);
                false
            }
        },
    })?;
    bad.map_or(Ok(()), Err)
}

/// Checks the whole content of a JSON-lines board file (for a `/deploy` over one): every line
/// must parse as `T`, and the last must end with a newline (the board would read it as cut
/// off and drop it).
pub fn check<T: DeserializeOwned>(bytes: &[u8]) -> std::result::Result<(), String> {
    let mut at = 0;
    for line in bytes.split_inclusive(|&b| b == b'\n') {
        let body = trim(line);
        if !body.is_empty() {
            if line.last() != Some(&b'\n') {
                return Err(format!(
                    "the last line (at byte {at}) does not end with a newline, so it would be read as cut off"
                ));
            }
            if let Err(e) = parse_line::<T>(body) {
                return Err(bad_line(at, &e));
            }
        }
        at += line.len() as u64;
    }
    Ok(())
}

/// The damage detail of a line that does not parse.
fn bad_line(at: u64, e: &serde_json::Error) -> String {
    format!("the line at byte {at} does not parse: {e}")
}

/// Calls `f` with the byte offset and body of each complete non-empty line of `path`; stops
/// early when `f` returns false.
pub fn scan(path: &Path, mut f: impl FnMut(u64, &[u8]) -> bool) -> Result<()> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("reading", path, e)),
    };
    let mut r = BufReader::with_capacity(256 * 1024, file);
    let mut line = Vec::new();
    let mut at = 0u64;
    loop {
        line.clear();
        let n = r
            .read_until(b'\n', &mut line)
            .map_err(|e| Error::io("reading", path, e))?;
        if n == 0 || line.last() != Some(&b'\n') {
            return Ok(());
        }
        let body = trim(&line);
        if !body.is_empty() && !f(at, body) {
            return Ok(());
        }
        at += n as u64;
    }
}

/// The last complete lines of `path` with their byte offsets, newest first, reading
/// backwards until `f` returns false.
pub fn scan_back(path: &Path, mut f: impl FnMut(u64, &[u8]) -> bool) -> Result<()> {
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
        // `buf` holds the file's bytes from `start` on, so a line's offset is `start` plus
        // its place in `buf`.
        let mut lines: Vec<(u64, &[u8])> = Vec::new();
        let mut pos = 0usize;
        for l in buf.split(|&b| b == b'\n') {
            lines.push((start + pos as u64, l));
            pos += l.len() + 1;
        }
        let head = if start > 0 {
            Some(lines.remove(0).1)
        } else {
            None
        };
        for (at, l) in lines.iter().rev() {
            let body = trim(l);
            if !body.is_empty() && !f(*at, body) {
                return Ok(());
            }
        }
        carry = head.map(|h| h.to_vec()).unwrap_or_default();
        end = start;
    }
    Ok(())
}

/// `line` without its line end and trailing blanks.
pub(crate) fn trim(line: &[u8]) -> &[u8] {
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
        let fwd = read_all::<serde_json::Value>(&p, &mut Damages::refuse()).unwrap();
        assert_eq!(fwd.len(), 5000);
        let mut back = Vec::new();
        let mut offsets = Vec::new();
        scan_back(&p, |at, l| {
            back.push(
                serde_json::from_slice::<serde_json::Value>(l).unwrap()["n"]
                    .as_u64()
                    .unwrap(),
            );
            offsets.push(at);
            true
        })
        .unwrap();
        let mut fwd_offsets = Vec::new();
        scan(&p, |at, _| {
            fwd_offsets.push(at);
            true
        })
        .unwrap();
        offsets.reverse();
        assert_eq!(
            offsets, fwd_offsets,
            "both directions give the same offsets"
        );
        assert_eq!(&text.as_bytes()[offsets[1] as usize..][..7], b"{\"n\":1,");
        assert_eq!(back.len(), 5000);
        assert_eq!(back[0], 4999);
        assert_eq!(back[4999], 0);
    }

    #[test]
    fn a_line_that_does_not_parse_is_damage_but_a_torn_last_line_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.jsonl");
        std::fs::write(&p, "{\"n\":1}\njunk\n{\"n\":3}\n{\"n\":4").unwrap();
        let err = read_all::<serde_json::Value>(&p, &mut Damages::refuse()).unwrap_err();
        assert!(
            matches!(&err, Error::Damaged { detail, .. } if detail.contains("byte 8")),
            "{err}"
        );
        let mut dmg = Damages::salvage();
        let got = read_all::<serde_json::Value>(&p, &mut dmg).unwrap();
        assert_eq!(got.len(), 2, "the junk line is skipped, the torn one too");
        assert_eq!(dmg.into_found().len(), 1);
        // Backwards, the junk is found only when reading reaches it.
        let mut last = None;
        each_back::<serde_json::Value>(&p, &mut Damages::refuse(), |v| {
            last = Some(v);
            false
        })
        .unwrap();
        assert_eq!(last.unwrap()["n"], 3);
        assert!(each_back::<serde_json::Value>(&p, &mut Damages::refuse(), |_| true).is_err());
        assert!(check::<serde_json::Value>(b"{}\n{}\n").is_ok());
        assert!(check::<serde_json::Value>(b"{}\njunk\n").is_err());
        assert!(check::<serde_json::Value>(b"{}\n{}").is_err());
    }
}
