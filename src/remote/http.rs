//! HTTP to `vine serve` (or the original server): the API key on every request, a timeout on
//! every request, and retries with exponential backoff and jitter when the server cannot be
//! reached or a proxy says it is unavailable.
//!
//! A client may know several servers of one board (`VINE_URL=https://a,https://b`): a request
//! that one cannot answer (no connection, a reset or a timeout, a proxy's 502/503/504, or 429)
//! goes to the next at once, unchanged (the same body, so a board op keeps its request key and
//! is still applied once); only when every server failed in turn does the client back off
//! before the next round. An answer from a server — a 4xx included — is the answer, never a
//! reason to try another. The server that answered last is where the next request of this
//! process starts.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::resolve::KeptResolver;
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

/// The longest wait for a connection (below the request timeout when that is longer): a server
/// that does not accept a connection by then is treated as unreachable, and the next one of a
/// list is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A request moved from one server of a list to another: what [`on_failover`] is told.
#[derive(Debug, Clone)]
pub struct Failover {
    /// The server first tried.
    pub from: String,
    /// Why it did not answer.
    pub why: String,
    /// The server that answered.
    pub to: String,
}

static FAILOVER_OBSERVER: OnceLock<fn(&Failover)> = OnceLock::new();

/// Calls `observe` whenever a request of this process was answered by another server of a list
/// than the one it was first sent to (`vine -v` prints it on stderr). Set once per process;
/// later calls are ignored.
pub fn on_failover(observe: fn(&Failover)) {
    let _ = FAILOVER_OBSERVER.set(observe);
}

/// The index of the server of `servers` that answered last in this process, shared by every
/// client of the same list.
fn preferred(servers: &[String]) -> Arc<AtomicUsize> {
    static LAST: OnceLock<Mutex<HashMap<String, Arc<AtomicUsize>>>> = OnceLock::new();
    let map = LAST.get_or_init(Mutex::default);
    let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
    map.entry(servers.join(",")).or_default().clone()
}

/// Splits a server list (`URL[,URL...]`) into base URLs without a trailing `/`, each checked;
/// empty entries and repeats are dropped.
pub fn parse_servers(list: &str) -> Result<Vec<String>> {
    let mut servers: Vec<String> = Vec::new();
    for part in list.split(',') {
        let base = part.trim().trim_end_matches('/');
        if base.is_empty() {
            continue;
        }
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(Error::Invalid(format!(
                "server URL {base:?} must start with http:// or https://, e.g. https://vps.example.com:5555 \
                 (several servers of one board: comma-separated, https://a:5555,https://b:5555)"
            )));
        }
        if !servers.iter().any(|s| s == base) {
            servers.push(base.to_string());
        }
    }
    if servers.is_empty() {
        return Err(Error::Invalid(format!(
            "no server URL in {list:?}: give one, e.g. https://vps.example.com:5555, or several, comma-separated"
        )));
    }
    Ok(servers)
}

/// A server's answer: HTTP status and JSON body.
#[derive(Debug, Clone)]
pub struct HttpReply {
    /// The HTTP status.
    pub status: u16,
    /// The body, parsed (a non-JSON body becomes a string value).
    pub body: Value,
}

/// A client for one server, or for several servers of one board (failing over between them).
#[derive(Debug, Clone)]
pub struct Http {
    /// The servers' base URLs, in the order given.
    servers: Vec<String>,
    /// Where the next request starts: the server that answered last (shared in the process).
    current: Arc<AtomicUsize>,
    key: Option<ApiKey>,
    agent: ureq::Agent,
    opts: HttpOptions,
}

impl Http {
    /// A client for the server at `url` (http:// or https://), or for the servers of a
    /// comma-separated list of such URLs (see the module doc).
    pub fn new(url: &str, key: Option<ApiKey>, opts: HttpOptions) -> Result<Self> {
        let servers = parse_servers(url)?;
        let mut cfg = ureq::Agent::config_builder()
            .timeout_global(Some(opts.timeout))
            .timeout_connect(Some(opts.timeout.min(CONNECT_TIMEOUT)))
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
            current: preferred(&servers),
            servers,
            key,
            agent: ureq::Agent::with_parts(
                cfg.build(),
                ureq::unversioned::transport::DefaultConnector::new(),
                KeptResolver::default(),
            ),
            opts,
        })
    }

    /// The base URL of the server in use: the one that answered last (the first at the start).
    pub fn url(&self) -> &str {
        &self.servers[self.current_index()]
    }

    /// Every server's base URL, in the order given.
    pub fn servers(&self) -> &[String] {
        &self.servers
    }

    /// The servers as one would give them again: comma-separated.
    pub fn location(&self) -> String {
        self.servers.join(",")
    }

    fn current_index(&self) -> usize {
        self.current.load(Ordering::Relaxed) % self.servers.len()
    }

    /// `GET path?query`.
    pub fn get(&self, path: &str, query: &[(&str, &str)]) -> Result<HttpReply> {
        self.send(true, false, |base| {
            let mut req = self.agent.get(format!("{base}{path}"));
            for (k, v) in query {
                req = req.query(*k, *v);
            }
            self.keyed(req).call()
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

    /// `POST path` with a body already encoded as JSON, retried like every request. An answer
    /// `fast` reads (given the status and the body) comes back as `Ok(T)` — the common answer
    /// parsed straight into its type, with no [`Value`] on the way — and any other as the
    /// [`HttpReply`] [`Http::post`] gives.
    pub fn post_encoded<T>(
        &self,
        path: &str,
        json: &str,
        fast: impl Fn(u16, &str) -> Option<T>,
    ) -> Result<std::result::Result<T, HttpReply>> {
        let call = |base: &str| {
            let req = self
                .agent
                .post(format!("{base}{path}"))
                .content_type("application/json");
            self.keyed(req).send(json)
        };
        self.send_then(true, false, call, |base, status, text| {
            match fast(status, text) {
                Some(t) => Ok(Ok(t)),
                None => self.answer(base, status, text).map(Err),
            }
        })
    }

    fn post_with(&self, path: &str, body: &Value, idempotent: bool) -> Result<HttpReply> {
        self.send(idempotent, false, |base| {
            self.keyed(self.agent.post(format!("{base}{path}")))
                .send_json(body)
        })
    }

    /// `req` with the API key's header, when there is a key.
    fn keyed<B>(&self, req: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.key {
            Some(key) => req.header("X-API-Key", key.secret()),
            None => req,
        }
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
        self.send(true, true, |base| {
            let left = until.saturating_duration_since(Instant::now());
            let req = self
                .agent
                .post(format!("{base}{path}"))
                .config()
                .timeout_global(Some(left + self.opts.timeout))
                .build();
            self.keyed(req).send_json(body(left))
        })
    }

    /// Sends a request made by `call` (given a server's base URL): to the server in use, and
    /// when it cannot answer, to the next of the list at once; after a round in which every
    /// server failed, again after a backoff. Retried for `retry_for` from the start (or, for a
    /// `held` request, from its first failure, and again after each attempt that was held a
    /// while); every server gets one try even when `retry_for` is zero.
    fn send(
        &self,
        idempotent: bool,
        held: bool,
        call: impl Fn(&str) -> std::result::Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<HttpReply> {
        self.send_then(idempotent, held, call, |base, status, text| {
            self.answer(base, status, text)
        })
    }

    /// [`Http::send`], with the answer (the server's base URL, the status and the body) made
    /// into what the caller wants by `finish`.
    fn send_then<R>(
        &self,
        idempotent: bool,
        held: bool,
        call: impl Fn(&str) -> std::result::Result<ureq::http::Response<ureq::Body>, ureq::Error>,
        finish: impl FnOnce(&str, u16, &str) -> Result<R>,
    ) -> Result<R> {
        let n = self.servers.len();
        let started = Instant::now();
        let mut retry_until = (!held).then(|| started + self.opts.retry_for);
        let first = self.current_index();
        let mut at = first;
        let mut attempt: u32 = 0;
        let mut rounds: u32 = 0;
        let mut failed_in_round = 0;
        // Why each server failed last (for the error when all did).
        let mut whys: Vec<Option<String>> = vec![None; n];
        loop {
            attempt += 1;
            let base = self.servers[at].as_str();
            let sent = Instant::now();
            let outcome = match call(base) {
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
                Ok((status, text)) => {
                    self.answered(first, at, &whys);
                    return finish(base, status, &text);
                }
                Err(e) if permanent(&e) => {
                    return Err(Error::Unreachable(format!("cannot talk to {base}: {e}")));
                }
                Err(e) if idempotent || not_sent(&e) => e.to_string(),
                Err(e) => {
                    return Err(Error::Unreachable(format!(
                        "no answer from {base} ({e}); the command may or may not have run, so it was not sent again"
                    )));
                }
            };
            whys[at] = Some(why);
            at = (at + 1) % n;
            failed_in_round += 1;
            let now = Instant::now();
            if held && now - sent >= HELD_A_WHILE {
                // The server (or a proxy before it) held the request and then it was cut off
                // (a proxy's read timeout, or the server went away): it was reachable, so the
                // retry time and the round start again.
                retry_until = None;
                failed_in_round = 1;
            }
            if failed_in_round < n {
                // The next server of the list, at once.
                continue;
            }
            failed_in_round = 0;
            rounds += 1;
            let retry_until = *retry_until.get_or_insert(now + self.opts.retry_for);
            if now >= retry_until {
                return Err(Error::Unreachable(self.unreachable(
                    attempt,
                    started.elapsed(),
                    &whys,
                )));
            }
            let backoff = Duration::from_millis(50u64.saturating_mul(1 << rounds.min(6)))
                .min(Duration::from_secs(2));
            let sleep = jitter(backoff).min(retry_until.saturating_duration_since(now));
            std::thread::sleep(sleep);
        }
    }

    /// A server answered: it is where the next request starts; a move from the first one tried
    /// is reported to the observer.
    fn answered(&self, first: usize, at: usize, whys: &[Option<String>]) {
        self.current.store(at, Ordering::Relaxed);
        if at == first {
            return;
        }
        if let Some(observe) = FAILOVER_OBSERVER.get() {
            observe(&Failover {
                from: self.servers[first].clone(),
                why: whys[first].clone().unwrap_or_default(),
                to: self.servers[at].clone(),
            });
        }
    }

    /// The error when no server answered.
    fn unreachable(&self, attempts: u32, waited: Duration, whys: &[Option<String>]) -> String {
        let hint = "Is `vine serve` running there, and is VINE_URL right?";
        match &self.servers[..] {
            [one] => format!(
                "cannot reach {one} ({attempts} attempts over {}s): {}. {hint}",
                waited.as_secs(),
                whys[0].as_deref().unwrap_or("")
            ),
            all => {
                let each: Vec<String> = all
                    .iter()
                    .zip(whys)
                    .map(|(s, why)| format!("{s}: {}", why.as_deref().unwrap_or("not tried")))
                    .collect();
                format!(
                    "cannot reach any of the {} servers ({attempts} attempts over {}s): {}. {hint}",
                    all.len(),
                    waited.as_secs(),
                    each.join("; ")
                )
            }
        }
    }

    fn answer(&self, base: &str, status: u16, text: &str) -> Result<HttpReply> {
        let body: Value =
            serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()));
        let message = body
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| first_line(text));
        match status {
            401 => Err(Error::Unauthorized(format!(
                "the server at {base} refused the API key ({message}); set VINE_API_KEY (or VPS_API_KEY, or VINE_API_KEY_FILE) to the server's key"
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::Mutex;

    /// What a test server does with each connection.
    #[derive(Clone, Copy)]
    enum Behave {
        /// Reads the request and answers with this status and a small JSON body.
        Answer(u16),
        /// Reads the request and closes the connection without a word.
        Hang,
    }

    /// A server on 127.0.0.1 that records every request body it reads.
    struct TestServer {
        url: String,
        bodies: Arc<Mutex<Vec<String>>>,
    }

    impl TestServer {
        fn start(behave: Behave) -> TestServer {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            let bodies = Arc::new(Mutex::new(Vec::new()));
            let seen = bodies.clone();
            std::thread::spawn(move || {
                for conn in listener.incoming().flatten() {
                    let _ = Self::serve(conn, behave, &seen);
                }
            });
            TestServer { url, bodies }
        }

        fn serve(
            conn: TcpStream,
            behave: Behave,
            seen: &Mutex<Vec<String>>,
        ) -> std::io::Result<()> {
            let mut from = BufReader::new(conn.try_clone()?);
            let mut length = 0;
            loop {
                let mut line = String::new();
                if from.read_line(&mut line)? == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            from.read_exact(&mut body)?;
            seen.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&body).into_owned());
            let mut to = conn;
            match behave {
                Behave::Hang => Ok(()),
                Behave::Answer(status) => {
                    let body = format!(r#"{{"status":"ok","code":{status}}}"#);
                    write!(
                        to,
                        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                }
            }
        }

        fn requests(&self) -> usize {
            self.bodies.lock().unwrap().len()
        }
    }

    /// A URL where nothing listens.
    fn dead_url() -> String {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    }

    fn client(urls: &[&str], retry_for: Duration) -> Http {
        let opts = HttpOptions {
            timeout: Duration::from_secs(5),
            retry_for,
            ca_cert: None,
        };
        Http::new(&urls.join(","), None, opts).unwrap()
    }

    #[test]
    fn server_lists_are_parsed_and_checked() {
        assert_eq!(
            parse_servers(" http://a:1/ , ,https://b:2,http://a:1").unwrap(),
            ["http://a:1", "https://b:2"]
        );
        assert!(parse_servers("http://a:1,ftp://b").is_err());
        assert!(parse_servers(" , ").is_err());
        assert!(parse_servers("vps.example.com:5555").is_err());
    }

    #[test]
    fn an_unreachable_server_is_skipped_and_the_one_that_answered_is_tried_first_next_time() {
        let hang = TestServer::start(Behave::Hang);
        let live = TestServer::start(Behave::Answer(200));
        let http = client(&[&hang.url, &live.url], Duration::ZERO);
        assert_eq!(http.url(), hang.url, "the first server is tried first");
        let r = http.get("/test", &[]).unwrap();
        assert_eq!(r.status, 200);
        assert_eq!((hang.requests(), live.requests()), (1, 1));
        assert_eq!(http.url(), live.url);
        // The next request, and a new client of the same list in this process, start there.
        http.get("/test", &[]).unwrap();
        client(&[&hang.url, &live.url], Duration::ZERO)
            .get("/test", &[])
            .unwrap();
        assert_eq!((hang.requests(), live.requests()), (1, 3));
    }

    #[test]
    fn a_refused_connection_and_a_proxys_503_move_on_with_the_same_body() {
        let unavailable = TestServer::start(Behave::Answer(503));
        let live = TestServer::start(Behave::Answer(200));
        let http = client(&[&dead_url(), &unavailable.url, &live.url], Duration::ZERO);
        let body = serde_json::json!({"op": {"op": "claim"}, "key": "k-1"});
        assert_eq!(http.post("/v1/op", &body).unwrap().status, 200);
        let sent = |s: &TestServer| -> Vec<Value> {
            let bodies = s.bodies.lock().unwrap();
            bodies
                .iter()
                .map(|b| serde_json::from_str(b).unwrap())
                .collect()
        };
        assert_eq!(sent(&unavailable), std::slice::from_ref(&body));
        assert_eq!(sent(&live), [body], "the same request, key and all");
    }

    #[test]
    fn an_answer_of_the_board_is_not_a_reason_to_try_another_server() {
        for status in [400, 404, 409, 422, 500] {
            let first = TestServer::start(Behave::Answer(status));
            let second = TestServer::start(Behave::Answer(200));
            let http = client(&[&first.url, &second.url], Duration::from_secs(5));
            let r = http.post("/v1/op", &serde_json::json!({})).unwrap();
            assert_eq!(r.status, status);
            assert_eq!((first.requests(), second.requests()), (1, 0), "{status}");
        }
        let refuses_key = TestServer::start(Behave::Answer(401));
        let second = TestServer::start(Behave::Answer(200));
        let http = client(&[&refuses_key.url, &second.url], Duration::from_secs(5));
        let e = http.get("/test", &[]).unwrap_err();
        assert!(matches!(e, Error::Unauthorized(_)), "{e}");
        assert_eq!(second.requests(), 0);
    }

    #[test]
    fn a_command_that_may_have_run_is_not_sent_to_another_server() {
        let hang = TestServer::start(Behave::Hang);
        let second = TestServer::start(Behave::Answer(200));
        let http = client(&[&hang.url, &second.url], Duration::from_secs(5));
        let e = http
            .post_once("/execute", &serde_json::json!({}))
            .unwrap_err();
        assert!(e.to_string().contains("may or may not have run"), "{e}");
        assert_eq!(second.requests(), 0);
        // One that surely did not reach a server goes to the next.
        let http = client(&[&dead_url(), &second.url], Duration::from_secs(5));
        assert_eq!(
            http.post_once("/execute", &serde_json::json!({}))
                .unwrap()
                .status,
            200
        );
        assert_eq!(second.requests(), 1);
    }

    #[test]
    fn when_no_server_answers_the_error_names_each() {
        let (a, b) = (dead_url(), dead_url());
        let http = client(&[&a, &b], Duration::ZERO);
        let e = http.get("/test", &[]).unwrap_err();
        assert!(matches!(e, Error::Unreachable(_)), "{e}");
        let text = e.to_string();
        assert!(
            text.contains("cannot reach any of the 2 servers (2 attempts"),
            "{text}"
        );
        assert!(
            text.contains(&format!("{a}: ")) && text.contains(&format!("{b}: ")),
            "{text}"
        );
        // One server: the message it always had.
        let e = client(&[&a], Duration::ZERO).get("/test", &[]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with(&format!("cannot reach {a} (1 attempts")),
            "{e}"
        );
    }
}
