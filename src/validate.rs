//! Input checks shared by every entry point: names, board paths and size limits.

use crate::error::{Error, Result};

/// Longest worker id, agent name or capability name, in bytes.
pub const MAX_NAME: usize = 64;
/// Longest task description, in bytes.
pub const MAX_DESCRIPTION: usize = 4 * 1024;
/// Largest instruction text stored with a task, in bytes.
pub const MAX_INSTRUCTIONS: usize = 1024 * 1024;
/// Largest task result or metadata object (as JSON), in bytes.
pub const MAX_RESULT: usize = 256 * 1024;
/// Largest message, question, answer or error text, in bytes.
pub const MAX_MESSAGE: usize = 64 * 1024;
/// Longest board-relative path, in bytes.
pub const MAX_PATH: usize = 1024;
/// Most entries in one list field (context files, capabilities, dependencies).
pub const MAX_LIST: usize = 256;
/// Most tasks in one plan file.
pub const MAX_PLAN: usize = 10_000;

/// Checks a worker id, agent name or capability: `[A-Za-z0-9._-]`, 1 to 64 bytes.
pub fn name(what: &str, value: &str) -> Result<()> {
    if value.is_empty() {
        return Err(Error::Invalid(format!("{what} must not be empty")));
    }
    if value.len() > MAX_NAME {
        return Err(Error::Invalid(format!(
            "{what} {:?}... is {} bytes long; the limit is {MAX_NAME}",
            truncate(value, 20),
            value.len()
        )));
    }
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(Error::Invalid(format!(
            "{what} {value:?} contains {c:?}; use only letters, digits, '.', '_' and '-'"
        )));
    }
    Ok(())
}

/// Checks a path inside the board: relative, no `..`, no empty or odd components.
pub fn board_path(what: &str, value: &str) -> Result<()> {
    let bad = |why: &str| Err(Error::Invalid(format!("{what} {value:?} {why}")));
    if value.is_empty() {
        return bad("is empty; give a path relative to the board, e.g. docs/spec.md");
    }
    if value.len() > MAX_PATH {
        return bad("is too long");
    }
    if value.starts_with('/') || value.starts_with('\\') || value.contains(':') {
        return bad("is absolute; give a path relative to the board, e.g. docs/spec.md");
    }
    if value.contains('\0') || value.contains('\\') {
        return bad("contains a NUL or backslash");
    }
    for part in value.split('/') {
        if part == ".." {
            return bad("contains '..'; paths must stay inside the board");
        }
    }
    Ok(())
}

/// Checks that a text field is within its size limit.
pub fn size(what: &str, value: &str, limit: usize) -> Result<()> {
    if value.len() > limit {
        return Err(Error::Invalid(format!(
            "{what} is {} bytes; the limit is {limit}",
            value.len()
        )));
    }
    Ok(())
}

/// Checks that a list is not longer than [`MAX_LIST`].
pub fn list_len<T>(what: &str, list: &[T]) -> Result<()> {
    if list.len() > MAX_LIST {
        return Err(Error::Invalid(format!(
            "{what} has {} entries; the limit is {MAX_LIST}",
            list.len()
        )));
    }
    Ok(())
}

/// Checks that a JSON value serializes within `limit` bytes.
pub fn json_size(what: &str, value: &serde_json::Value, limit: usize) -> Result<()> {
    let n = serde_json::to_vec(value)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if n > limit {
        return Err(Error::Invalid(format!(
            "{what} is {n} bytes as JSON; the limit is {limit}"
        )));
    }
    Ok(())
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(name("worker id", "w-1.a_B").is_ok());
        assert!(name("worker id", "").is_err());
        assert!(name("worker id", "a b").is_err());
        assert!(name("worker id", "a/b").is_err());
        assert!(name("worker id", &"x".repeat(65)).is_err());
        assert!(name("worker id", "wörker").is_err());
    }

    #[test]
    fn paths() {
        assert!(board_path("p", "docs/spec.md").is_ok());
        assert!(board_path("p", "./a").is_ok());
        assert!(board_path("p", "/etc/passwd").is_err());
        assert!(board_path("p", "../x").is_err());
        assert!(board_path("p", "a/../../x").is_err());
        assert!(board_path("p", "C:x").is_err());
        assert!(board_path("p", "").is_err());
    }
}
