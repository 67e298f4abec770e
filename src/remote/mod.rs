//! Remote boards: a [`RemoteStore`] carries board ops to `vine serve` over HTTP (the native
//! `/v1/op` endpoint), or, against a server with only the original four endpoints, runs `vine`
//! on the server through `/execute`. Changing ops carry a request key, so retries after a lost
//! reply are answered instead of applied twice. [`Vps`] holds the original plan's file and
//! command helpers.

mod http;
mod vps;

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};

pub use http::{Http, HttpOptions, HttpReply};
pub use vps::{ExecOutput, Vps};

use crate::apikey::ApiKey;
use crate::error::{Error, Result};
use crate::op::{Op, Reply};
use crate::server::{OpRequest, parse_reply};
use crate::store::Transport;

/// How ops reach the board on a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `POST /v1/op`: one round trip per op, applied atomically by `vine serve`.
    Native,
    /// `POST /execute` running `vine op` on the server (servers with only the original API).
    Exec,
}

/// A board on a server.
#[derive(Debug)]
pub struct RemoteStore {
    http: Http,
    mode: OnceLock<Mode>,
    remote_bin: String,
}

impl RemoteStore {
    /// A board at `url`; the transport is chosen on first use from what `/test` says.
    pub fn connect(url: &str, key: Option<ApiKey>) -> Result<Self> {
        Self::connect_with(url, key, HttpOptions::from_env()?)
    }

    /// A board at `url` with explicit timeouts and retries.
    pub fn connect_with(url: &str, key: Option<ApiKey>, opts: HttpOptions) -> Result<Self> {
        Ok(RemoteStore {
            http: Http::new(url, key, opts)?,
            mode: OnceLock::new(),
            remote_bin: std::env::var("VINE_REMOTE_BIN")
                .ok()
                .filter(|v| !v.trim().is_empty())
                .unwrap_or_else(|| "vine".into()),
        })
    }

    /// The transport in use (probing the server the first time).
    pub fn mode(&self) -> Result<Mode> {
        if let Some(m) = self.mode.get() {
            return Ok(*m);
        }
        let r = self.http.get("/test", &[])?;
        let native = r.body.pointer("/agentvine/op").and_then(Value::as_str) == Some("/v1/op");
        let m = if native { Mode::Native } else { Mode::Exec };
        Ok(*self.mode.get_or_init(|| m))
    }

    fn run_exec(&self, req: &OpRequest) -> Result<Reply> {
        let json = serde_json::to_string(req).map_err(|e| Error::Protocol(e.to_string()))?;
        let command = format!(
            "{} --dir . op {}",
            shell_quote(&self.remote_bin),
            shell_quote(&json)
        );
        let r = self
            .http
            .post("/execute", &json!({"command": command, "workdir": null}))?;
        let stdout = r.body.get("stdout").and_then(Value::as_str).unwrap_or("");
        match stdout
            .lines()
            .rev()
            .find(|l| l.trim_start().starts_with('{'))
        {
            Some(line) => {
                let v: Value = serde_json::from_str(line).map_err(|e| {
                    Error::Protocol(format!("`vine op` on the server printed {line:?}: {e}"))
                })?;
                parse_reply(v)
            }
            None => {
                let stderr = r.body.get("stderr").and_then(Value::as_str).unwrap_or("");
                let message = r.body.get("message").and_then(Value::as_str).unwrap_or("");
                Err(Error::Protocol(format!(
                    "this server has no board endpoint, and running `{}` on it failed ({}{}). Install vine on the server \
                     (see README: Running the VPS) or set VINE_REMOTE_BIN to its path",
                    self.remote_bin,
                    stderr.trim(),
                    message
                )))
            }
        }
    }
}

impl Transport for RemoteStore {
    fn execute(&self, op: Op) -> Result<Reply> {
        if matches!(op, Op::Repair) {
            // Repair is allowed remotely too; it runs under the server's lock.
        }
        let key = (!op.is_read_only()).then(new_request_key);
        let req = OpRequest { op, key };
        match self.mode()? {
            Mode::Native => {
                let body =
                    serde_json::to_value(&req).map_err(|e| Error::Protocol(e.to_string()))?;
                let r = self.http.post("/v1/op", &body)?;
                if r.status == 404 && r.body.get("kind").is_none() {
                    return Err(Error::Protocol(format!(
                        "{} has no /v1/op endpoint although /test said so",
                        self.http.url()
                    )));
                }
                parse_reply(r.body)
            }
            Mode::Exec => self.run_exec(&req),
        }
    }

    fn location(&self) -> String {
        self.http.url().to_string()
    }
}

/// A request key unique to this process and moment.
pub fn new_request_key() -> String {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(nanos);
    h.write_u64(n);
    format!(
        "{:x}-{:x}-{n:x}-{:016x}",
        std::process::id(),
        nanos,
        h.finish()
    )
}

/// Quotes a word for `sh`.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}
