//! Remote boards: a [`RemoteStore`] carries board ops to `vine serve` over HTTP (the native
//! `/v1/op` endpoint), or, against a server with only the original four endpoints, runs `vine`
//! on the server through `/execute`. Changing ops carry a request key, so retries after a lost
//! reply are answered instead of applied twice. [`Vps`] holds the original plan's file and
//! command helpers.

mod http;
mod resolve;
mod vps;

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub use http::{Failover, Http, HttpOptions, HttpReply, on_failover, parse_servers};
pub use vps::{ExecOutput, Vps};

use crate::apikey::ApiKey;
use crate::error::{Error, Result};
use crate::op::turn::wait_more;
use crate::op::{Op, Reply};
use crate::settings::{BoardFile, Settings};
use crate::store::Transport;
use crate::store::paths::BOARD;
use crate::wire::{ErrorBody, OpRequest, parse_reply};

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

    /// Runs `vine ARGS` in the server's base directory through `/execute` (servers without
    /// the board endpoint); returns the JSON object it printed last.
    fn exec_vine(&self, args: &str) -> Result<Value> {
        let command = format!("{} {args}", shell_quote(&self.remote_bin));
        let r = self
            .http
            .post("/execute", &json!({"command": command, "workdir": null}))?;
        let stdout = r.body.get("stdout").and_then(Value::as_str).unwrap_or("");
        match stdout
            .lines()
            .rev()
            .find(|l| l.trim_start().starts_with('{'))
        {
            Some(line) => serde_json::from_str(line).map_err(|e| {
                Error::Protocol(format!("`vine` on the server printed {line:?}: {e}"))
            }),
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

    fn run_exec(&self, req: &OpRequest) -> Result<Reply> {
        let json = serde_json::to_string(req).map_err(|e| Error::Protocol(e.to_string()))?;
        parse_reply(self.exec_vine(&format!("--dir . op {}", shell_quote(&json)))?)
    }

    /// Creates the board in the server's base directory, keeping every board file already
    /// there (so it is safe to run again), and with `settings`, replaces the board's settings.
    /// Returns the board's settings.
    ///
    /// `vine serve` made its board when it started, so there is nothing to create. A server
    /// with only the original API gets it from `vine init` run there through `/execute` (the
    /// `vine` every board command there needs anyway; it creates the missing files under the
    /// board lock and never replaces one). Settings are written as `board.json` with `/deploy`,
    /// which both kinds of server have.
    pub fn init(&self, settings: Option<&Settings>) -> Result<Settings> {
        if self.mode()? == Mode::Exec {
            let v = self.exec_vine("--json init .")?;
            if v.get("ok") != Some(&Value::Bool(true)) {
                return Err(ErrorBody::from_value(v.get("error").unwrap_or(&v)).into());
            }
        }
        if let Some(s) = settings {
            let file = BoardFile {
                settings: s.clone(),
                ..BoardFile::default()
            };
            let mut text =
                serde_json::to_string_pretty(&file).map_err(|e| Error::Protocol(e.to_string()))?;
            text.push('\n');
            let r = self.http.post(
                "/deploy",
                &json!({"filepath": BOARD, "content": text, "encoding": "utf-8"}),
            )?;
            if r.body.get("status").and_then(Value::as_str) != Some("success") {
                return Err(Error::Protocol(format!(
                    "the server refused the board's settings (HTTP {}): {}",
                    r.status,
                    r.body.get("message").and_then(Value::as_str).unwrap_or("")
                )));
            }
        }
        match self.execute(Op::Settings(crate::op::Settings))? {
            Reply::Settings { settings } => Ok(settings),
            other => Err(Error::Protocol(format!(
                "the server answered a settings request with {other:?}"
            ))),
        }
    }

    /// A board op's error, with the way out when the server has no board yet.
    fn explain(&self, e: Error) -> Error {
        if e.kind() != "no-board" {
            return e;
        }
        let url = self.http.url();
        Error::NoBoard(format!(
            "there is no board on the server at {url} yet: its base directory has neither board.json nor task-queue.json. \
             Create it with `vine --url {url} init` (safe to run again: it keeps what is there)"
        ))
    }
}

impl RemoteStore {
    /// Sends `req` to `/v1/op`; `None` when the server has no such endpoint (the original API
    /// answers 404 without an error kind). A turn-ended op with a wait is held by the server
    /// until it has an answer (a long-poll): its timeout is the wait plus the usual one, and a
    /// retry asks for only what is left of the wait.
    fn run_native(&self, req: &OpRequest) -> Result<Option<Result<Reply>>> {
        let to_json =
            |r: &OpRequest| serde_json::to_value(r).map_err(|e| Error::Protocol(e.to_string()));
        let r = match &req.op {
            Op::TurnEnded(t) if t.wait_secs > 0 => {
                // Checked here, as the server cannot answer for a body it never got.
                to_json(req)?;
                let until = Instant::now() + t.wait();
                self.http.post_held("/v1/op", until, |left| {
                    let held = OpRequest {
                        op: Op::TurnEnded(t.with_wait_left(left)),
                        key: req.key.clone(),
                    };
                    to_json(&held).unwrap_or(Value::Null)
                })?
            }
            _ => {
                let json =
                    serde_json::to_string(req).map_err(|e| Error::Protocol(e.to_string()))?;
                match self
                    .http
                    .post_encoded("/v1/op", &json, crate::wire::read_success)?
                {
                    Ok(reply) => return Ok(Some(Ok(reply))),
                    Err(r) => r,
                }
            }
        };
        if r.status == 404 && r.body.get("kind").is_none() {
            return Ok(None);
        }
        Ok(Some(parse_reply(r.body)))
    }

    /// Runs `req` through `/execute`. A wait is cut into parts the server's command timeout
    /// allows, each a request, until there is an answer or the wait is over.
    fn run_exec_waiting(&self, req: OpRequest) -> Result<Reply> {
        let Op::TurnEnded(t) = &req.op else {
            return self.run_exec(&req);
        };
        let until = Instant::now() + t.wait();
        loop {
            let left = until.saturating_duration_since(Instant::now());
            let part = left.min(EXEC_WAIT);
            let outcome = self.run_exec(&OpRequest {
                op: Op::TurnEnded(t.with_wait_left(part)),
                key: req.key.clone(),
            });
            if part == left || wait_more(&outcome, left).is_none() {
                return outcome;
            }
        }
    }
}

/// The longest wait one `/execute` request asks `vine op` for: well below the server's command
/// timeout (60 s by default) and the client's request timeout (30 s).
const EXEC_WAIT: Duration = Duration::from_secs(20);

impl Transport for RemoteStore {
    fn execute(&self, op: Op) -> Result<Reply> {
        // Every op is allowed remotely (a repair too: it runs under the server's lock).
        let key = (!op.is_read_only()).then(new_request_key);
        let req = OpRequest { op, key };
        // Until the transport is known, `/v1/op` is tried at once (one request, not a probe
        // of `/test` first); a server without it is used through `/execute` from then on.
        let result = match self.mode.get().copied() {
            Some(Mode::Exec) => self.run_exec_waiting(req),
            known => match self.run_native(&req)? {
                Some(result) => {
                    let _ = self.mode.set(Mode::Native);
                    result
                }
                None if known == Some(Mode::Native) => {
                    return Err(Error::Protocol(format!(
                        "{} has no /v1/op endpoint although /test said so",
                        self.http.url()
                    )));
                }
                None => {
                    let _ = self.mode.set(Mode::Exec);
                    self.run_exec_waiting(req)
                }
            },
        };
        result.map_err(|e| self.explain(e))
    }

    fn location(&self) -> String {
        self.http.location()
    }
}

/// A request key unique to this process and moment: process id, time, a count within the
/// process, and 64 random bits.
pub(crate) fn new_request_key() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{:x}-{nanos:x}-{n:x}-{:016x}",
        std::process::id(),
        fastrand::u64(..)
    )
}

/// Quotes a word for `sh`.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}
