//! Files under the base directory: `/list`, `/read`, `/deploy`, `/search/files`,
//! `/search/content`. Every path is resolved at request time and refused with 403 when it
//! leaves the base directory (absolute, `..`, or a symlink leading out, even a new one).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use base64::Engine;
use base64::engine::{GeneralPurpose, GeneralPurposeConfig};
use serde::Deserialize;
use serde_json::{Value, json};

use super::App;
use super::reply::{ErrorReply, check_len, parse_body, parse_query, success};
use crate::store::{durable, paths};
use crate::time::format_timestamp;
use crate::validate::MAX_PATH;

/// Standard base64 with padding, for binary files over `/read` and `/deploy` (a last character
/// with stray low bits is read, as it always was).
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
);

/// Most directory entries `/list` returns.
const MAX_LIST: usize = 10_000;
/// Most results a search returns.
const MAX_RESULTS: usize = 1_000;
/// Most directory entries a search visits.
const MAX_VISIT: usize = 100_000;
/// Largest file `/search/content` looks into.
const MAX_SEARCH_FILE: u64 = 1024 * 1024;

/// Resolves a client path inside the base directory, or the 403 reply.
fn inside(app: &App, rel: &str) -> Result<PathBuf, ErrorReply> {
    let rel = if rel.is_empty() { "." } else { rel };
    paths::resolve(&app.root, rel).map_err(|e| ErrorReply::forbidden(&e))
}

/// The path relative to the base directory, for replies.
fn relative(app: &App, p: &Path) -> String {
    p.strip_prefix(&app.root)
        .map(|r| r.to_string_lossy().to_string())
        .unwrap_or_default()
}

fn modified(m: &std::fs::Metadata) -> Value {
    m.modified()
        .ok()
        .map(|t| Value::String(format_timestamp(&chrono::DateTime::<chrono::Utc>::from(t))))
        .unwrap_or(Value::Null)
}

#[derive(Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    path: String,
}

/// `GET /list?path=DIR`.
pub async fn list(
    State(app): State<Arc<App>>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, ErrorReply> {
    let q = parse_query(q)?;
    check_len("path", &q.path, 0, MAX_PATH)?;
    let dir = inside(&app, &q.path)?;
    let entries = std::fs::read_dir(&dir).map_err(|e| io_error(&q.path, &e))?;
    let mut files = Vec::new();
    let mut truncated = false;
    for e in entries.flatten() {
        if files.len() >= MAX_LIST {
            truncated = true;
            break;
        }
        let Ok(m) = e.metadata() else { continue };
        files.push(json!({
            "name": e.file_name().to_string_lossy(),
            "is_directory": m.is_dir(),
            "size": m.len(),
            "modified": modified(&m),
        }));
    }
    files.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    Ok(success(
        json!({"path": dir.to_string_lossy(), "files": files, "truncated": truncated}),
    ))
}

fn io_error(what: &str, e: &std::io::Error) -> ErrorReply {
    let status = match e.kind() {
        std::io::ErrorKind::NotFound => StatusCode::NOT_FOUND,
        std::io::ErrorKind::PermissionDenied => StatusCode::FORBIDDEN,
        _ => StatusCode::BAD_REQUEST,
    };
    ErrorReply::new(status, format!("{what}: {e}"))
}

#[derive(Deserialize)]
pub struct ReadQuery {
    filepath: String,
}

/// `GET /read?filepath=FILE` -> `{"content": ..., "encoding": "utf-8"|"base64", "size": n}`.
/// Before a `/read` of one of the board's JSON files: the journal's changes are written into
/// them (a checkpoint), so what is read is the board as it is. Best effort: a board that
/// cannot be checkpointed (damaged) is read as its files are.
async fn up_to_date(app: &Arc<App>, path: &Path) {
    let ours = path.parent().map(Path::canonicalize).and_then(|p| p.ok())
        == app.root.canonicalize().ok()
        && path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| paths::CHECKPOINT_FILES.contains(&n));
    if !ours {
        return;
    }
    let app = Arc::clone(app);
    let _ = tokio::task::spawn_blocking(move || {
        if let Some(local) = app.store.as_ref().and_then(|s| s.files())
            && let Ok(_lock) = local.lock()
        {
            let _ = local.checkpoint_held();
        }
    })
    .await;
}

pub async fn read(
    State(app): State<Arc<App>>,
    q: Result<Query<ReadQuery>, QueryRejection>,
) -> Result<Response, ErrorReply> {
    let q = parse_query(q)?;
    check_len("filepath", &q.filepath, 1, MAX_PATH)?;
    let path = inside(&app, &q.filepath)?;
    up_to_date(&app, &path).await;
    match std::fs::metadata(&path) {
        Ok(m) if m.is_dir() => {
            return Err(ErrorReply::bad_request(format!(
                "{} is a directory; use /list",
                q.filepath
            )));
        }
        Ok(m) if !m.is_file() => {
            // A FIFO or device would block the reader (and a server thread) forever.
            return Err(ErrorReply::bad_request(format!(
                "{} is not a regular file",
                q.filepath
            )));
        }
        Ok(m) if m.len() > app.max_read as u64 => {
            return Err(ErrorReply::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "{} is {} bytes; /read returns at most {}",
                    q.filepath,
                    m.len(),
                    app.max_read
                ),
            ));
        }
        Ok(_) => {}
        Err(e) => return Err(io_error(&q.filepath, &e)),
    }
    let bytes = std::fs::read(&path).map_err(|e| io_error(&q.filepath, &e))?;
    let size = bytes.len();
    Ok(match String::from_utf8(bytes) {
        Ok(text) => success(json!({"content": text, "encoding": "utf-8", "size": size})),
        Err(e) => success(json!({
            "content": BASE64.encode(e.as_bytes()),
            "encoding": "base64",
            "size": size,
        })),
    })
}

#[derive(Deserialize)]
pub struct DeployBody {
    filepath: String,
    content: String,
    #[serde(default)]
    encoding: Option<String>,
}

/// `POST /deploy {"filepath","content","encoding"}`: writes the file atomically (temp file,
/// fsync, rename). Board files are written under the board lock and must parse.
pub async fn deploy(
    State(app): State<Arc<App>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ErrorReply> {
    let b: DeployBody = parse_body(body)?;
    check_len("filepath", &b.filepath, 1, MAX_PATH)?;
    let path = inside(&app, &b.filepath)?;
    let bytes = match b
        .encoding
        .as_deref()
        .unwrap_or("utf-8")
        .to_ascii_lowercase()
        .as_str()
    {
        "utf-8" | "utf8" | "text" => b.content.into_bytes(),
        "base64" => decode_base64(&b.content)
            .ok_or_else(|| ErrorReply::bad_request("content is not valid base64"))?,
        other => {
            return Err(ErrorReply::bad_request(format!(
                "unknown encoding {other:?}; use utf-8 or base64"
            )));
        }
    };
    if path == app.root || path.is_dir() {
        return Err(ErrorReply::bad_request(format!(
            "{} is a directory",
            b.filepath
        )));
    }
    let (Some(parent), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str()))
    else {
        return Err(ErrorReply::bad_request(format!(
            "{} is not a file path",
            b.filepath
        )));
    };
    let app2 = app.clone();
    let (parent, name) = (parent.to_path_buf(), name.to_string());
    let full = path.clone();
    tokio::task::spawn_blocking(move || -> Result<(), ErrorReply> {
        std::fs::create_dir_all(&parent).map_err(|e| io_error("creating the folder", &e))?;
        // Re-check after creating folders: nothing on the way may lead outside.
        paths::resolve(&app2.root, &relative(&app2, &full))
            .map_err(|e| ErrorReply::forbidden(&e))?;
        if parent == app2.root && (name == paths::LOCK || name == paths::JOURNAL) {
            return Err(ErrorReply::new(
                StatusCode::FORBIDDEN,
                format!(
                    "{name} is the board's {}; it cannot be deployed over",
                    if name == paths::LOCK {
                        "lock file"
                    } else {
                        "journal"
                    }
                ),
            ));
        }
        let board_file = parent == app2.root && super::BOARD_FILES.contains(&name.as_str());
        if board_file && let Some(store) = app2.store.as_ref().filter(|s| s.files().is_none()) {
            return deploy_beside_database(store.as_ref(), &name, &bytes);
        }
        let _lock = if board_file {
            check_board_file(&name, &bytes)?;
            let lock = app2.board_lock().map_err(ErrorReply::internal)?;
            // The journal's changes go into the files first, so the file deployed is the
            // board's from now on. A board too damaged for that is deployed over as it is.
            if let Some(local) = app2.store.as_ref().and_then(|s| s.files()) {
                let _ = local.checkpoint_held();
            }
            lock
        } else {
            None
        };
        replace(&parent, &name, &bytes).map_err(ErrorReply::internal)?;
        durable::sync_dir(&parent).map_err(ErrorReply::internal)?;
        // A board kept in a database has its instruction files there: one deployed under
        // tasks/ is stored on the board too, so `vine add --instruction-file` can name it.
        let rel = relative(&app2, &full);
        if let Some(store) = app2.store.as_ref().filter(|s| s.files().is_none())
            && rel.starts_with(&format!("{}/", paths::TASKS_DIR))
        {
            store
                .put_board_file(&rel, &bytes)
                .map_err(|e| ErrorReply::board(&e))?;
        }
        Ok(())
    })
    .await
    .map_err(ErrorReply::internal)??;
    Ok(success(json!({
        "message": "File deployed successfully",
        "full_path": path.to_string_lossy(),
    })))
}

/// A `/deploy` over a board file on a server whose board is not kept in files (PostgreSQL):
/// `board.json` sets the board's settings (as `vine --url URL init --lease ...` does), checked
/// as on files; any other board file is refused, as the files in the base directory are not
/// the board.
fn deploy_beside_database(
    store: &dyn crate::store::BatchStore,
    name: &str,
    bytes: &[u8],
) -> Result<(), ErrorReply> {
    if name == paths::BOARD {
        check_board_file(name, bytes)?;
        let file: crate::settings::BoardFile =
            serde_json::from_slice(bytes).map_err(|e| ErrorReply::bad_request(e.to_string()))?;
        return store
            .set_settings(file.settings)
            .map_err(|e| ErrorReply::board(&e));
    }
    Err(ErrorReply::new(
        StatusCode::CONFLICT,
        format!(
            "this server keeps its board in {}, not in files: {name} in its base directory is not \
             the board, so it is not deployed. Change the board with its ops (vine add, vine claim ...)",
            store.location()
        ),
    ))
}

/// Decodes standard base64 (with padding), whitespace such as line breaks ignored; `None` if
/// it is not base64.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let clean: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    BASE64.decode(clean).ok()
}

/// Writes `dir/name` atomically: a new temporary file beside it, fsync, rename. The temporary
/// file is created with `O_EXCL` under a name of its own, so a symlink planted at the temporary
/// name cannot redirect the write outside the base directory, and two deploys of the same file
/// at once cannot write into each other's temporary file.
fn replace(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.{}-{n}.deploy", std::process::id()));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .and_then(|mut f| {
            f.write_all(bytes)?;
            f.sync_data()
        })
        .and_then(|()| std::fs::rename(&tmp, dir.join(name)));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Refuses a deploy that would put a board file in place that the board would read as damaged
/// (checked by the parsers the board loads it with).
fn check_board_file(name: &str, bytes: &[u8]) -> Result<(), ErrorReply> {
    crate::store::damage::check_file(name, bytes).map_err(|detail| {
        ErrorReply::bad_request(format!(
            "refusing to deploy {name}: the board would read it as damaged ({detail}); \
             nothing was changed. Prefer the board API (vine add, vine claim ...)"
        ))
    })
}

#[derive(Deserialize)]
pub struct SearchQuery {
    pattern: String,
    #[serde(default)]
    directory: String,
}

/// Longest search pattern, in characters.
const MAX_PATTERN: usize = 1024;

impl SearchQuery {
    /// The lengths openapi.json gives (an empty pattern has its own message).
    fn check(&self) -> Result<(), ErrorReply> {
        check_len("pattern", &self.pattern, 0, MAX_PATTERN)?;
        check_len("directory", &self.directory, 0, MAX_PATH)
    }
}

/// `GET /search/files?pattern=*.py&directory=DIR`: file names matching a `*`/`?` pattern.
pub async fn search_files(
    State(app): State<Arc<App>>,
    q: Result<Query<SearchQuery>, QueryRejection>,
) -> Result<Response, ErrorReply> {
    let q = parse_query(q)?;
    q.check()?;
    let dir = inside(&app, &q.directory)?;
    if q.pattern.is_empty() {
        return Err(ErrorReply::bad_request("give a pattern, e.g. pattern=*.py"));
    }
    let app2 = app.clone();
    let res = tokio::task::spawn_blocking(move || {
        let mut found = Vec::new();
        let truncated = walk(&dir, &mut |p, _| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default();
            if glob(&q.pattern, &name) {
                found.push(json!(relative(&app2, p)));
            }
            found.len() < MAX_RESULTS
        });
        json!({"files": found, "truncated": truncated})
    })
    .await
    .map_err(ErrorReply::internal)?;
    Ok(success(res))
}

/// `GET /search/content?pattern=TEXT&directory=DIR`: lines containing TEXT.
pub async fn search_content(
    State(app): State<Arc<App>>,
    q: Result<Query<SearchQuery>, QueryRejection>,
) -> Result<Response, ErrorReply> {
    let q = parse_query(q)?;
    if q.pattern.is_empty() {
        return Err(ErrorReply::bad_request(
            "give a pattern: the text to look for",
        ));
    }
    q.check()?;
    let dir = inside(&app, &q.directory)?;
    let app2 = app.clone();
    let res = tokio::task::spawn_blocking(move || {
        let mut matches = Vec::new();
        let truncated = walk(&dir, &mut |p, m| {
            if m.len() > MAX_SEARCH_FILE {
                return true;
            }
            let Ok(bytes) = std::fs::read(p) else {
                return true;
            };
            if bytes.iter().take(8192).any(|&b| b == 0) {
                return true;
            }
            let text = String::from_utf8_lossy(&bytes);
            for (n, line) in text.lines().enumerate() {
                if line.contains(&q.pattern) {
                    let shown: String = line.chars().take(500).collect();
                    matches.push(json!({"file": relative(&app2, p), "line": n + 1, "text": shown}));
                    if matches.len() >= MAX_RESULTS {
                        return false;
                    }
                }
            }
            true
        });
        json!({"matches": matches, "truncated": truncated})
    })
    .await
    .map_err(ErrorReply::internal)?;
    Ok(success(res))
}

/// Visits regular files under `dir` (symlinks are not followed), sorted; `f` returns false to
/// stop. Returns true if the walk stopped early (results cut off).
fn walk(dir: &Path, f: &mut dyn FnMut(&Path, &std::fs::Metadata) -> bool) -> bool {
    let mut stack = vec![dir.to_path_buf()];
    let mut visited = 0;
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        let mut entries: Vec<_> = rd.flatten().map(|e| e.path()).collect();
        entries.sort();
        let mut subdirs = Vec::new();
        for p in entries {
            visited += 1;
            if visited > MAX_VISIT {
                return true;
            }
            let Ok(m) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            if m.is_dir() {
                subdirs.push(p);
            } else if m.is_file() && !f(&p, &m) {
                return true;
            }
        }
        stack.extend(subdirs.into_iter().rev());
    }
    false
}

/// Matches a file name against a pattern with `*` (any run) and `?` (any one character).
fn glob(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut pi, mut ni) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_as_it_always_was() {
        for s in [
            &b""[..],
            b"f",
            b"fo",
            b"foo",
            b"foob",
            b"\x00\xff\x10binary",
        ] {
            assert_eq!(decode_base64(&BASE64.encode(s)).as_deref(), Some(s));
        }
        assert_eq!(BASE64.encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(decode_base64("Zm9v\nYg=="), Some(b"foob".to_vec()));
        assert_eq!(decode_base64("Zh=="), Some(b"f".to_vec()));
        assert!(decode_base64("Zm9").is_none());
        assert!(decode_base64("Z=9v").is_none());
    }

    #[test]
    fn globs() {
        assert!(glob("*.py", "app.py"));
        assert!(!glob("*.py", "app.pyc"));
        assert!(glob("a?c", "abc"));
        assert!(glob("*", ""));
        assert!(glob("t*-*.md", "task-1-instructions.md"));
        assert!(!glob("x*", "yx"));
    }
}
