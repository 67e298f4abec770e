//! The original plan's VPS helpers (`deploy_file`, `list_files`, `read_file`,
//! `execute_command`, `search_files`, `search_content`, `test_connection`) as a Rust API.
//! Against a server without `/read` or the search endpoints, they fall back to `/execute`.

use serde_json::{Value, json};

use super::http::{Http, HttpReply};
use super::shell_quote;
use crate::error::{Error, Result};

/// A server's file and command API.
#[derive(Debug, Clone)]
pub struct Vps {
    http: Http,
}

/// What a command printed and returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    /// Its standard output (capped by the server).
    pub stdout: String,
    /// Its standard error (capped by the server).
    pub stderr: String,
    /// Its exit status (-9 when the server killed it at its timeout).
    pub returncode: i64,
    /// The server's message, when it gave one (a timeout).
    pub message: Option<String>,
}

/// Turns an error reply into an error: a bad request (missing file, bad input) exits 2 like
/// other invalid input, anything else 1.
fn check(r: &HttpReply, what: &str) -> Result<()> {
    match r.body.get("status").and_then(Value::as_str) {
        Some("success") => Ok(()),
        _ => Err(Error::Remote {
            kind: "remote".into(),
            exit: if (400..500).contains(&r.status) {
                crate::error::ExitCode::Invalid
            } else {
                crate::error::ExitCode::Other
            },
            message: format!(
                "{what}: {}",
                r.body
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("the server reported an error")
            ),
        }),
    }
}

impl Vps {
    /// The API of the server at `url`.
    pub fn new(http: Http) -> Self {
        Vps { http }
    }

    /// `GET /test`: the server's own reply.
    pub fn test(&self) -> Result<Value> {
        let r = self.http.get("/test", &[])?;
        check(&r, "test")?;
        Ok(r.body)
    }

    /// `GET /list?path=`: the entries of a folder.
    pub fn list(&self, path: &str) -> Result<Value> {
        let r = self.http.get("/list", &[("path", path)])?;
        check(&r, &format!("list {path}"))?;
        Ok(r.body)
    }

    /// The content of a file (through `/read`, or `cat` on servers without it).
    pub fn read(&self, path: &str) -> Result<String> {
        let r = self.http.get("/read", &[("filepath", path)])?;
        // No /read on this server: ours says "no such endpoint"; the original answers 404 HTML.
        if r.status == 404
            && r.body
                .get("message")
                .and_then(Value::as_str)
                .is_none_or(|m| m.contains("no such endpoint"))
        {
            let out = self.exec(&format!("cat -- {}", shell_quote(path)), None)?;
            if out.returncode != 0 {
                return Err(Error::Invalid(format!(
                    "read {path}: {}",
                    out.stderr.trim()
                )));
            }
            return Ok(out.stdout);
        }
        check(&r, &format!("read {path}"))?;
        let content = r.body.get("content").and_then(Value::as_str).unwrap_or("");
        Ok(content.to_string())
    }

    /// `POST /deploy`: writes a file on the server (parent folders are created).
    pub fn deploy(&self, path: &str, content: &str) -> Result<Value> {
        let r = self.http.post(
            "/deploy",
            &json!({"filepath": path, "content": content, "encoding": "utf-8"}),
        )?;
        check(&r, &format!("deploy {path}"))?;
        Ok(r.body)
    }

    /// Deploys several files; stops at the first failure.
    pub fn deploy_many(&self, files: &[(String, String)]) -> Result<Vec<Value>> {
        files.iter().map(|(p, c)| self.deploy(p, c)).collect()
    }

    /// `POST /execute`: runs a shell command on the server.
    pub fn exec(&self, command: &str, workdir: Option<&str>) -> Result<ExecOutput> {
        let r = self
            .http
            .post_once("/execute", &json!({"command": command, "workdir": workdir}))?;
        let get = |k: &str| {
            r.body
                .get(k)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        if r.body.get("returncode").is_none() {
            check(&r, "execute")?;
        }
        Ok(ExecOutput {
            stdout: get("stdout"),
            stderr: get("stderr"),
            returncode: r
                .body
                .get("returncode")
                .and_then(Value::as_i64)
                .unwrap_or(-1),
            message: r
                .body
                .get("message")
                .and_then(Value::as_str)
                .map(str::to_string),
        })
    }

    /// File paths under `dir` whose names match `pattern` (`*` and `?`).
    pub fn find(&self, pattern: &str, dir: &str) -> Result<Vec<String>> {
        let r = self
            .http
            .get("/search/files", &[("pattern", pattern), ("directory", dir)])?;
        if r.status == 404 {
            let out = self.exec(
                &format!(
                    "find {} -type f -name {} | head -n 1000",
                    shell_quote(dir),
                    shell_quote(pattern)
                ),
                None,
            )?;
            return Ok(out
                .stdout
                .lines()
                .map(|l| l.trim_start_matches("./").to_string())
                .collect());
        }
        check(&r, "find")?;
        Ok(r.body["files"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Lines containing `pattern` in files under `dir`: (file, line number, text).
    pub fn grep(&self, pattern: &str, dir: &str) -> Result<Vec<(String, u64, String)>> {
        let r = self.http.get(
            "/search/content",
            &[("pattern", pattern), ("directory", dir)],
        )?;
        if r.status == 404 {
            let out = self.exec(
                &format!(
                    "grep -rnF -- {} {} | head -n 1000",
                    shell_quote(pattern),
                    shell_quote(dir)
                ),
                None,
            )?;
            return Ok(out
                .stdout
                .lines()
                .filter_map(|l| {
                    let mut parts = l.splitn(3, ':');
                    let file = parts.next()?.trim_start_matches("./").to_string();
                    let line = parts.next()?.parse().ok()?;
                    Some((file, line, parts.next().unwrap_or("").to_string()))
                })
                .collect());
        }
        check(&r, "grep")?;
        Ok(r.body["matches"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|m| {
                        (
                            m["file"].as_str().unwrap_or("").to_string(),
                            m["line"].as_u64().unwrap_or(0),
                            m["text"].as_str().unwrap_or("").to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default())
    }
}
