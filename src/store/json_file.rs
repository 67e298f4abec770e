//! Small JSON board files (`board.json`, `worker-status.json`, `progress.json`): reading them
//! (a missing file is the default; a bad one is damage), writing them pretty, and keeping the
//! last parse while the bytes are the same.

use std::fs;
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::damage::{self, Damages};
use crate::error::{Error, Result};

/// Reads a board file's bytes; `None` when it does not exist.
pub fn read_bytes(path: &Path) -> Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("reading", path, e)),
    }
}

/// Reads and parses a board file; a missing file reads as the default, a bad one is damage
/// (read as the default when `dmg` salvages: `vine repair` resets it to that).
pub fn read_json<T: DeserializeOwned + Default>(
    dir: &Path,
    name: &str,
    dmg: &mut Damages,
) -> Result<T> {
    let path = dir.join(name);
    let Some(bytes) = read_bytes(&path)? else {
        return Ok(T::default());
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
pub fn to_pretty<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    let mut out = serde_json::to_vec_pretty(v).map_err(|e| Error::Protocol(e.to_string()))?;
    out.push(b'\n');
    Ok(out)
}

/// A small board file as last parsed, shared by the clones of a store handle.
#[derive(Debug)]
pub struct Cached<T>(Arc<Mutex<Option<Parsed<T>>>>);

impl<T> Default for Cached<T> {
    fn default() -> Self {
        Cached(Arc::default())
    }
}

impl<T> Clone for Cached<T> {
    fn clone(&self) -> Self {
        Cached(Arc::clone(&self.0))
    }
}

/// A parse with the bytes it was parsed from and the file's identity when read.
#[derive(Debug)]
struct Parsed<T> {
    id: Option<super::journal::FileId>,
    bytes: Vec<u8>,
    value: T,
}

impl<T: DeserializeOwned + Default + Clone> Cached<T> {
    /// Reads the board file at `path`, reusing the last parse while the bytes are the same. A
    /// missing file is the default; one that does not parse is reported to `dmg`, and
    /// `salvage` reads what it can.
    pub fn read(&self, path: &Path, dmg: &mut Damages, salvage: fn(&[u8]) -> T) -> Result<T> {
        // The same file as last time (device, inode, length, modification time): not read.
        let id = super::journal::file_id(path)?;
        let mut cached = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = cached.as_ref()
            && id.is_some()
            && p.id == id
        {
            return Ok(p.value.clone());
        }
        let Some(bytes) = read_bytes(path)? else {
            return Ok(T::default());
        };
        if let Some(p) = cached.as_mut()
            && p.bytes == bytes
        {
            p.id = id;
            return Ok(p.value.clone());
        }
        let value: T = match serde_json::from_slice(&bytes) {
            Ok(v) => v,
            Err(e) => {
                dmg.found(path, damage::detail(&bytes, e))?;
                return Ok(salvage(&bytes));
            }
        };
        *cached = Some(Parsed {
            id,
            bytes,
            value: value.clone(),
        });
        Ok(value)
    }
}
