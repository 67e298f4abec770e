//! HTTP to `vine serve` (or the original server): the API key on every request, a timeout on
//! every request, and retries with exponential backoff and jitter when the server cannot be
//! reached or a proxy says it is unavailable.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::apikey::ApiKey;
use crate::error::{Error, Result};

/// How a client talks to a server.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// Longest wait for one request (`$VINE_TIMEOUT`, default 30 s).
    pub timeout: Duration,
    /// How long to keep retrying a request the server did not answer (`$VINE_RETRY_FOR`, default 30 s).
    pub retry_for: Duration,
    /// A PEM file with extra trusted certificates, for servers with their own CA (`$VINE_CA_CERT`).
    pub ca_cert: Option<std::path::PathBuf>,
}

impl HttpOptions {
    /// Options from the environment, with defaults.
    pub fn from_env() -> Result<Self> {
        let secs = |var: &str, default: u64| -> Result<Duration> {
            match std::env::var(var) {
                Ok(v) if !v.trim().is_empty() => crate::time::parse_duration(&v)
                    .map(Duration::from_secs)
                    .map_err(|m| Error::Invalid(format!("${var}: {m}"))),
                _ => Ok(Duration::from_secs(default)),
            }
        };
        Ok(HttpOptions {
            timeout: secs("VINE_TIMEOUT", 30)?,
            retry_for: secs("VINE_RETRY_FOR", 30)?,
            ca_cert: std::env::var_os("VINE_CA_CERT")
                .filter(|v| !v.is_empty())
                .map(Into::into),
        })
    }
}

/// A held request cut off after being open this long had reached the server (see `post_held`).
const HELD_A_WHILE: Duration = Duration::from_secs(5);

/// A server's answer: HTTP status and JSON body.
#[derive(Debug, Clone)]
pub struct HttpReply {
    /// The HTTP status.
    pub status: u16,
    /// The body, parsed (a non-JSON body becomes a string value).
    pub body: Value,
}

/// A client for one server.
#[derive(Debug, Clone)]
pub struct Http {
    base: String,
    key: Option<ApiKey>,
    agent: ureq::Agent,
    opts: HttpOptions,
}

impl Http {
    /// A client for the server at `url` (http:// or https://).
    pub fn new(url: &str, key: Option<ApiKey>, opts: HttpOptions) -> Result<Self> {
        let base = url.trim().trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(Error::Invalid(format!(
                "server URL {url:?} must start with http:// or https://, e.g. https://vps.example.com:5555"
            )));
        }
        let mut cfg = ureq::Agent::config_builder()
            .timeout_global(Some(opts.timeout))
            .http_status_as_error(false);
        if let Some(ca) = &opts.ca_cert {
            let pem = std::fs::read(ca).map_err(|e| {
                Error::Invalid(format!("cannot read VINE_CA_CERT {}: {e}", ca.display()))
            })?;
            let certs: Vec<_> = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect();
            if certs.is_empty() {
                return Err(Error::Invalid(format!(
                    "VINE_CA_CERT {} holds no PEM certificate",
                    ca.display()
                )));
            }
            let tls = ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::new_with_certs(&certs))
                .build();
            cfg = cfg.tls_config(tls);
        }
        Ok(Http {
            base,
            key,
            agent: cfg.build().into(),
            opts,
        })
    }

    /// The server's base URL.
    pub fn url(&self) -> &str {
        &self.base
    }

    /// `GET path?query`.
    pub fn get(&self, path: &str, query: &[(&str, &str)]) -> Result<HttpReply> {
        self.send(true, false, || {
            let mut req = self.agent.get(format!("{}{path}", self.base));
            for (k, v) in query {
                req = req.query(*k, *v);
            }
            if let Some(key) = &self.key {
                req = req.header("X-API-Key", key.secret());
            }
            req.call()
        })
    }

    /// `POST path` with a JSON body; retried like every request (for idempotent requests).
    pub fn post(&self, path: &str, body: &Value) -> Result<HttpReply> {
        self.post_with(path, body, true)
    }

    /// `POST path` for a request that must not run twice (a shell command): retried only when
    /// it surely did not reach the server (no connection) or was refused before running (429).
    pub fn post_once(&self, path: &str, body: &Value) -> Result<HttpReply> {
        self.post_with(path, body, false)
    }

    fn post_with(&self, path: &str, body: &Value, idempotent: bool) -> Result<HttpReply> {
        self.send(idempotent, false, || {
            let mut req = self.agent.post(format!("{}{path}", self.base));
            if let Some(key) = &self.key {
                req = req.header("X-API-Key", key.secret());
            }
            req.send_json(body)
        })
    }

    /// `POST path` for a request the server may hold open until `until` (a long-poll), retried
    /// like every request. Each attempt's body is `body(left)`, with `left` the time until
    /// `until` (so a retry asks for only what is left of the wait), and its timeout is `left`
    /// plus the usual timeout; retries go on for the usual retry time from the first failure
    /// (a server that cannot be reached fails as fast as for any request), counted again after
    /// an attempt that was held a while and then cut off (a proxy's read timeout), so the wait
    /// goes on in a new request.
    pub fn post_held(
        &self,
        path: &str,
        until: Instant,
        body: impl Fn(Duration) -> Value,
    ) -> Result<HttpReply> {
        self.send(true, true, || {
            let left = until.saturating_duration_since(Instant::now());
            let mut req = self
                .agent
                .post(format!("{}{path}", self.base))
                .config()
                .timeout_global(Some(left + self.opts.timeout))
                .build();
            if let Some(key) = &self.key {
                req = req.header("X-API-Key", key.secret());
            }
            req.send_json(body(left))
        })
    }

    /// Sends a request made by `call`, retried for `retry_for` from the start (or, for a `held`
    /// request, from its first failure, and again after each attempt that was held a while).
    fn send(
        &self,
        idempotent: bool,
        held: bool,
        call: impl Fn() -> std::result::Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<HttpReply> {
        let started = Instant::now();
        let mut retry_until = (!held).then(|| started + self.opts.retry_for);
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let sent = Instant::now();
            let outcome = match call() {
                Ok(mut resp) => {
                    let status = resp.status().as_u16();
                    match resp
                        .body_mut()
                        .with_config()
                        .limit(64 * 1024 * 1024)
                        .read_to_string()
                    {
                        Ok(text) => Ok((status, text)),
                        Err(e) => Err(e),
                    }
                }
                Err(e) => Err(e),
            };
            let why = match outcome {
                // Too busy to run the request (429): nothing was done, so trying again is
                // safe for any request.
                Ok((429, text)) => format!("the server is busy: {}", first_line(&text)),
                // A proxy saying the server is unavailable: the request may have run.
                Ok((502..=504, text)) if idempotent => {
                    format!("the server (or a proxy) answered: {}", first_line(&text))
                }
                Ok((status, text)) => return self.answer(status, &text),
                Err(e) if permanent(&e) => {
                    return Err(Error::Unreachable(format!(
                        "cannot talk to {}: {e}",
                        self.base
                    )));
                }
                Err(e) if idempotent || not_sent(&e) => e.to_string(),
                Err(e) => {
                    return Err(Error::Unreachable(format!(
                        "no answer from {} ({e}); the command may or may not have run, so it was not sent again",
                        self.base
                    )));
                }
            };
            let waited = started.elapsed();
            let now = Instant::now();
            if held && now - sent >= HELD_A_WHILE {
                // The server (or a proxy before it) held the request and then it was cut off
                // (a proxy's read timeout): it was reachable, so the retry time starts again.
                retry_until = None;
            }
            let retry_until = *retry_until.get_or_insert(now + self.opts.retry_for);
            if now >= retry_until {
                return Err(Error::Unreachable(format!(
                    "cannot reach {} ({attempt} attempts over {}s): {why}. Is `vine serve` running there, and is VINE_URL right?",
                    self.base,
                    waited.as_secs()
                )));
            }
            let backoff = Duration::from_millis(50u64.saturating_mul(1 << attempt.min(6)))
                .min(Duration::from_secs(2));
            let sleep = jitter(backoff).min(retry_until.saturating_duration_since(now));
            std::thread::sleep(sleep);
        }
    }

    fn answer(&self, status: u16, text: &str) -> Result<HttpReply> {
        let body: Value =
            serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()));
        let message = body
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| first_line(text));
        match status {
            401 => Err(Error::Unauthorized(format!(
                "the server at {} refused the API key ({message}); set VINE_API_KEY (or VPS_API_KEY, or VINE_API_KEY_FILE) to the server's key",
                self.base
            ))),
            403 => Err(Error::Forbidden(format!("the server refused: {message}"))),
            _ => Ok(HttpReply { status, body }),
        }
    }
}

/// Errors that retrying cannot fix (bad URLs, certificate problems).
fn permanent(e: &ureq::Error) -> bool {
    matches!(
        e,
        ureq::Error::BadUri(_)
            | ureq::Error::Tls(_)
            | ureq::Error::Rustls(_)
            | ureq::Error::InvalidProxyUrl
    ) || {
        let text = e.to_string().to_ascii_lowercase();
        text.contains("certificate") || text.contains("unknownissuer")
    }
}

/// Errors that mean the request never reached the server.
fn not_sent(e: &ureq::Error) -> bool {
    matches!(e, ureq::Error::ConnectionFailed | ureq::Error::HostNotFound)
        || matches!(e, ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused)
}

fn first_line(text: &str) -> String {
    text.lines()
        .next()
        .unwrap_or("")
        .chars()
        .take(300)
        .collect()
}

/// `d` scaled by a random factor in [0.5, 1.5).
fn jitter(d: Duration) -> Duration {
    d.mul_f64(0.5 + fastrand::f64())
}
