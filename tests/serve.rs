//! Integration tests of `vine serve`: every test starts the real binary on 127.0.0.1 with a free
//! port and a fresh base directory, talks plain HTTP/1.1 to it over a `TcpStream` (so that odd
//! and malformed requests reach the server exactly as written), and kills it at the end.
//!
//! Every JSON reply to a documented route is checked against `src/server/openapi.json`: its
//! HTTP status must be documented for that route and its body must match the documented schema
//! (required fields, types, constants). So the document is kept true by every test here.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::sleep;
use std::time::{Duration, Instant};

use agentvine::server::ROUTES;
use serde_json::{Value, json};
use support::{BOARD_ENV, CLIENT_ENV, ChildGuard, URL_ENV, pid_alive, pids, vine_without};
use tempfile::TempDir;

const KEY: &str = "serve-test-key-0123456789";
/// Text of the file outside the base directory that no request may reach.
const SECRET: &str = "TOPSECRET-outside-the-base";
/// The message of the fallback reply for unknown routes.
const NO_ROUTE: &str = "no such endpoint";

// ---------------------------------------------------------------------------------------------
// HTTP over a TcpStream
// ---------------------------------------------------------------------------------------------

/// A reply as received.
#[derive(Debug, Clone)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "reply (HTTP {}) is not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// Asserts an error reply: this status, `{"status":"error","message":...}`; returns the body.
    fn error(&self, status: u16) -> Value {
        let v = self.json();
        assert_eq!(self.status, status, "expected HTTP {status}, got {v}");
        assert_eq!(v["status"], "error", "{v}");
        let m = v["message"]
            .as_str()
            .unwrap_or_else(|| panic!("no message: {v}"));
        assert!(!m.is_empty(), "{v}");
        v
    }

    /// Asserts a success reply (HTTP 200, `"status":"success"`); returns the body.
    fn ok(&self) -> Value {
        let v = self.json();
        assert_eq!(
            self.status, 200,
            "expected success, got HTTP {}: {v}",
            self.status
        );
        assert_eq!(v["status"], "success", "{v}");
        v
    }
}

fn parse_response(buf: &[u8]) -> std::io::Result<Resp> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| {
            bad(&format!(
                "no end of headers in {:?}",
                String::from_utf8_lossy(buf)
            ))
        })?;
    let head = String::from_utf8_lossy(&buf[..end]).to_string();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(&format!("bad status line {status_line:?}")))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let rest = &buf[end + 4..];
    let find = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.clone())
    };
    let body = if find("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        let mut out = Vec::new();
        let mut rest = rest;
        while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
            let size = usize::from_str_radix(
                String::from_utf8_lossy(&rest[..eol])
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim(),
                16,
            )
            .map_err(|_| bad("bad chunk size"))?;
            rest = &rest[eol + 2..];
            if size == 0 || rest.len() < size {
                break;
            }
            out.extend_from_slice(&rest[..size]);
            rest = &rest[(size + 2).min(rest.len())..];
        }
        out
    } else if let Some(n) = find("content-length").and_then(|v| v.parse::<usize>().ok()) {
        rest[..n.min(rest.len())].to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Resp {
        status,
        headers,
        body,
    })
}

/// Sends raw bytes on a new connection and reads until the server closes it.
fn send_raw(addr: SocketAddr, req: &[u8]) -> std::io::Result<Resp> {
    send_from(None, addr, req, Duration::from_secs(120))
}

/// A loopback address of its own (127.x.y.z) each time, for requests that must come from
/// different client addresses.
fn fresh_loopback() -> std::net::IpAddr {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(2);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::net::Ipv4Addr::from(0x7f00_0000 | (n & 0x00ff_ffff)).into()
}

/// A connection to `addr` from the client address `from` (the system's choice if `None`).
fn connect_from(from: Option<std::net::IpAddr>, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let Some(ip) = from else {
        return TcpStream::connect_timeout(&addr, Duration::from_secs(10));
    };
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    sock.bind(&SocketAddr::new(ip, 0).into())?;
    sock.connect_timeout(&addr.into(), Duration::from_secs(10))?;
    Ok(sock.into())
}

/// [`send_raw`] from a given client address, waiting at most `wait` for each read.
fn send_from(
    from: Option<std::net::IpAddr>,
    addr: SocketAddr,
    req: &[u8],
    wait: Duration,
) -> std::io::Result<Resp> {
    let mut s = connect_from(from, addr)?;
    s.set_read_timeout(Some(wait))?;
    s.set_write_timeout(Some(Duration::from_secs(30)))?;
    // The server may answer (413, 401) before it has read everything: a failed write is fine.
    let _ = s.write_all(req);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) if !buf.is_empty() => break,
            Err(e) => return Err(e),
        }
    }
    parse_response(&buf)
}

/// Sends bytes that may not be a whole request, closes the sending side, and reads whatever
/// comes back for a few seconds.
fn send_junk(addr: SocketAddr, bytes: &[u8]) {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(10)) else {
        return;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(5)));
    let _ = s.write_all(bytes);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut sink = Vec::new();
    let _ = s.read_to_end(&mut sink);
}

/// An HTTP/1.1 request with `Connection: close`.
fn request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Vec<u8> {
    let mut r = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        if !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        {
            r.push_str("Content-Type: application/json\r\n");
        }
        r.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    r.push_str("\r\n");
    let mut bytes = r.into_bytes();
    if let Some(b) = body {
        bytes.extend_from_slice(b);
    }
    bytes
}

/// Percent-encodes a query value.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The OpenAPI document, and a small JSON Schema checker for replies
// ---------------------------------------------------------------------------------------------

fn doc() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| {
        serde_json::from_str(agentvine::server::OPENAPI).expect("openapi.json parses as JSON")
    })
}

fn resolve<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let target = r
                .strip_prefix('#')
                .and_then(|p| doc.pointer(p))
                .unwrap_or_else(|| panic!("openapi.json: $ref {r} does not resolve"));
            resolve(doc, target)
        }
        None => v,
    }
}

fn type_ok(t: &str, v: &Value) -> bool {
    match t {
        "null" => v.is_null(),
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        other => panic!("openapi.json: unknown type {other}"),
    }
}

/// Checks `v` against a JSON Schema (the subset openapi.json uses).
fn check(doc: &Value, schema: &Value, v: &Value, at: &str) -> Result<(), String> {
    let schema = resolve(doc, schema);
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        for s in all {
            check(doc, s, v, at)?;
        }
    }
    for (key, exactly_one) in [("oneOf", true), ("anyOf", false)] {
        if let Some(alts) = schema.get(key).and_then(Value::as_array) {
            let results: Vec<_> = alts.iter().map(|s| check(doc, s, v, at)).collect();
            let n = results.iter().filter(|r| r.is_ok()).count();
            if n == 0 || (exactly_one && n > 1) {
                let why: Vec<String> = results.into_iter().filter_map(Result::err).collect();
                return Err(format!(
                    "{at}: {n} of the {key} alternatives match {v}; {}",
                    why.join(" | ")
                ));
            }
        }
    }
    if let Some(t) = schema.get("type") {
        let ok = match t {
            Value::String(t) => type_ok(t, v),
            Value::Array(ts) => ts.iter().any(|t| type_ok(t.as_str().unwrap_or("?"), v)),
            _ => true,
        };
        if !ok {
            return Err(format!("{at}: {v} is not of type {t}"));
        }
    }
    if let Some(c) = schema.get("const")
        && c != v
    {
        return Err(format!("{at}: {v} is not {c}"));
    }
    if let Some(e) = schema.get("enum").and_then(Value::as_array)
        && !e.contains(v)
    {
        return Err(format!("{at}: {v} is not one of {e:?}"));
    }
    if let (Some(min), Some(n)) = (
        schema.get("minimum").and_then(Value::as_f64),
        v.as_f64().filter(|_| v.is_number()),
    ) && n < min
    {
        return Err(format!("{at}: {n} is below {min}"));
    }
    if let Value::Object(m) = v {
        if let Some(req) = schema.get("required").and_then(Value::as_array) {
            for r in req {
                let r = r.as_str().unwrap_or("?");
                if !m.contains_key(r) {
                    return Err(format!("{at}: required field {r:?} is missing in {v}"));
                }
            }
        }
        let props = schema.get("properties").and_then(Value::as_object);
        for (k, fv) in m {
            match props.and_then(|p| p.get(k)) {
                Some(s) => check(doc, s, fv, &format!("{at}.{k}"))?,
                None => match schema.get("additionalProperties") {
                    Some(Value::Bool(false)) => {
                        return Err(format!("{at}: field {k:?} is not allowed"));
                    }
                    Some(s @ Value::Object(_)) => check(doc, s, fv, &format!("{at}.{k}"))?,
                    _ => {}
                },
            }
        }
    }
    if let (Value::Array(items), Some(s)) = (v, schema.get("items")) {
        for (i, item) in items.iter().enumerate() {
            check(doc, s, item, &format!("{at}[{i}]"))?;
        }
    }
    Ok(())
}

/// A named schema of the document.
fn schema(name: &str) -> &'static Value {
    doc()
        .pointer(&format!("/components/schemas/{name}"))
        .unwrap_or_else(|| panic!("openapi.json has no schema {name}"))
}

/// The documented operation for a route, if documented.
fn operation(method: &str, path: &str) -> Option<&'static Value> {
    doc()
        .get("paths")?
        .get(path)?
        .get(method.to_ascii_lowercase())
}

/// Checks a reply against the document: the status must be documented for the route and the
/// body must match its schema. Unknown routes and wrong methods must get the Error schema.
fn check_reply(method: &str, target: &str, r: &Resp) {
    let path = target.split('?').next().unwrap_or("");
    // A documented reply that is not JSON (the metrics' text): its content type is checked.
    if let Some(resp) =
        operation(method, path).and_then(|op| op["responses"].get(r.status.to_string()))
        && let Some(content) = resolve(doc(), resp)
            .get("content")
            .and_then(Value::as_object)
        && !content.contains_key("application/json")
    {
        let ct = r.header("content-type").unwrap_or("");
        assert!(
            content.keys().any(|k| ct.starts_with(k.as_str())),
            "{method} {target}: HTTP {} content type {ct:?} is not one openapi.json documents ({:?})",
            r.status,
            content.keys().collect::<Vec<_>>()
        );
        return;
    }
    let body: Value = match serde_json::from_slice(&r.body) {
        Ok(v) => v,
        Err(e) => panic!(
            "{method} {target}: HTTP {} reply is not JSON ({e}): {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        ),
    };
    let Some(op) = operation(method, path) else {
        // Not a documented operation: a refusal with the plain error shape.
        assert!(
            matches!(r.status, 401 | 404 | 405),
            "{method} {target}: undocumented route answered HTTP {}: {body}",
            r.status
        );
        check(doc(), schema("Error"), &body, "reply").unwrap_or_else(|e| panic!("{e}"));
        return;
    };
    let code = r.status.to_string();
    let resp = op["responses"]
        .get(&code)
        .or_else(|| op["responses"].get("default"))
        .unwrap_or_else(|| {
            panic!(
                "{method} {path} answered HTTP {code}, which openapi.json does not document: {body}"
            )
        });
    let resp = resolve(doc(), resp);
    let s = resp
        .pointer("/content/application~1json/schema")
        .unwrap_or_else(|| panic!("openapi.json: {method} {path} {code} has no JSON schema"));
    if let Err(e) = check(doc(), s, &body, "reply") {
        panic!("{method} {target} HTTP {code}: the reply does not match openapi.json: {e}");
    }
}

// ---------------------------------------------------------------------------------------------
// A `vine serve` process
// ---------------------------------------------------------------------------------------------

/// `vine` without the caller's board, worker and server variables.
fn vine() -> Command {
    vine_without(&[BOARD_ENV, URL_ENV, CLIENT_ENV])
}

/// How a request authenticates.
#[derive(Clone, Copy)]
enum Auth<'a> {
    /// The server's key in `X-API-Key` (nothing when the server has none).
    Key,
    /// No key.
    None,
    /// This header.
    Header(&'a str, &'a str),
}

/// A `vine serve` with a key (or none) serving `base/` of a temporary directory.
struct Server {
    process: support::Server,
    addr: SocketAddr,
    key: Option<String>,
    /// Holds `base/` (the served directory) and `outside/` (holding a secret).
    tmp: TempDir,
    /// Check every reply against openapi.json (off for `--original-only`).
    check_doc: bool,
}

struct Opts<'a> {
    key: Option<&'a str>,
    args: Vec<String>,
}

impl<'a> Opts<'a> {
    fn new() -> Self {
        Opts {
            key: Some(KEY),
            args: vec![],
        }
    }
    fn no_key(mut self) -> Self {
        self.key = None;
        self
    }
    fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }
    fn start(self) -> Server {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().join("base");
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(&base).unwrap();
        std::fs::create_dir_all(outside.join("sub")).unwrap();
        std::fs::write(outside.join("secret.txt"), format!("{SECRET}\n")).unwrap();
        std::fs::write(outside.join("sub/deeper.txt"), format!("{SECRET}\n")).unwrap();
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = self.key.map(|k| ("VINE_API_KEY", k)).into_iter().collect();
        let process = support::Server::start(&base, &args, &env);
        Server {
            addr: process.addr,
            process,
            key: self.key.map(str::to_string),
            tmp,
            check_doc: !self.args.iter().any(|a| a == "--original-only"),
        }
    }
}

impl Server {
    fn start() -> Server {
        Opts::new().start()
    }

    fn base(&self) -> PathBuf {
        self.tmp.path().join("base").canonicalize().unwrap()
    }

    fn outside(&self) -> PathBuf {
        self.tmp.path().join("outside").canonicalize().unwrap()
    }

    /// Sends a request and checks the reply against openapi.json.
    fn call(&self, method: &str, target: &str, auth: Auth, body: Option<&[u8]>) -> Resp {
        self.call_from(None, method, target, auth, body)
    }

    /// [`Server::call`] from a given client address.
    fn call_from(
        &self,
        from: Option<std::net::IpAddr>,
        method: &str,
        target: &str,
        auth: Auth,
        body: Option<&[u8]>,
    ) -> Resp {
        let mut headers = vec![];
        match auth {
            Auth::Key => {
                if let Some(k) = &self.key {
                    headers.push(("X-API-Key", k.as_str()));
                }
            }
            Auth::None => {}
            Auth::Header(k, v) => headers.push((k, v)),
        }
        let req = request(self.addr, method, target, &headers, body);
        let r = send_from(from, self.addr, &req, Duration::from_secs(120)).unwrap_or_else(|e| {
            panic!(
                "{method} {target}: no reply ({e}); server stderr: {}",
                self.process.stderr()
            )
        });
        if self.check_doc {
            check_reply(method, target, &r);
        }
        r
    }

    fn get(&self, target: &str) -> Resp {
        self.call("GET", target, Auth::Key, None)
    }

    fn post(&self, path: &str, body: &Value) -> Resp {
        self.call("POST", path, Auth::Key, Some(body.to_string().as_bytes()))
    }

    fn post_bytes(&self, path: &str, body: &[u8]) -> Resp {
        self.call("POST", path, Auth::Key, Some(body))
    }

    /// `POST /v1/op` with one op; the whole reply body.
    fn op(&self, op: Value) -> Resp {
        self.post("/v1/op", &json!({ "op": op }))
    }

    /// An op that must succeed with a reply of `kind`; the `reply` object.
    fn op_ok(&self, op: Value, kind: &str) -> Value {
        let what = op.to_string();
        let v = self.op(op).ok();
        assert_eq!(v["reply"]["reply"], kind, "{what} -> {v}");
        v["reply"].clone()
    }

    fn exec(&self, command: &str) -> Resp {
        self.post("/execute", &json!({ "command": command }))
    }

    /// A request refused with 401, sent from a client address of its own, so that it is not
    /// slowed down by the refusals before it (bad keys from one address are answered more
    /// slowly each time).
    fn refused(&self, method: &str, target: &str, auth: Auth, body: Option<&[u8]>) -> Value {
        self.call_from(Some(fresh_loopback()), method, target, auth, body)
            .error(401)
    }

    /// The server is still running and answers `/test`.
    fn assert_alive(&mut self) {
        assert!(
            self.process.is_running(),
            "vine serve exited; stderr: {}",
            self.process.stderr()
        );
        let v = self.call("GET", "/test", Auth::None, None).ok();
        assert_eq!(v["message"], "VPS API is running");
    }
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------------
// The OpenAPI document is true
// ---------------------------------------------------------------------------------------------

fn documented_routes() -> BTreeSet<(String, String)> {
    let mut set = BTreeSet::new();
    for (path, item) in doc()["paths"].as_object().expect("paths") {
        for method in item.as_object().unwrap().keys() {
            if ["get", "post", "put", "patch", "delete", "head", "options"]
                .contains(&method.as_str())
            {
                set.insert((method.to_ascii_uppercase(), path.clone()));
            }
        }
    }
    set
}

#[test]
fn openapi_documents_exactly_the_routes() {
    let d = doc();
    assert!(
        d["openapi"].as_str().unwrap().starts_with("3.1"),
        "OpenAPI 3.1"
    );
    let on_disk: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src/server/openapi.json"
        ))
        .unwrap(),
    )
    .unwrap();
    assert_eq!(&on_disk, d, "the served document is the file");
    let routes: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(ROUTES.len(), routes.len(), "ROUTES has duplicates");
    assert_eq!(documented_routes(), routes, "openapi.json paths == ROUTES");

    // Security: the key in X-API-Key or as a bearer token; /test and /openapi.json open.
    let schemes = &d["components"]["securitySchemes"];
    let mut header_scheme = None;
    let mut bearer_scheme = None;
    for (name, s) in schemes.as_object().unwrap() {
        if s["type"] == "apiKey" && s["in"] == "header" && s["name"] == "X-API-Key" {
            header_scheme = Some(name.clone());
        }
        if s["type"] == "http" && s["scheme"] == "bearer" {
            bearer_scheme = Some(name.clone());
        }
    }
    let (h, b) = (
        header_scheme.expect("X-API-Key scheme"),
        bearer_scheme.expect("bearer"),
    );
    let global = d["security"].as_array().expect("global security");
    assert!(global.contains(&json!({ h.clone(): [] })));
    assert!(global.contains(&json!({ b.clone(): [] })));
    for (m, p) in ROUTES {
        let op = operation(m, p).unwrap();
        let open = matches!(*p, "/test" | "/openapi.json");
        assert_eq!(
            op.get("security") == Some(&json!([])),
            open,
            "{m} {p}: open routes (and only they) have security []"
        );
        assert!(op["responses"]["200"].is_object(), "{m} {p} documents 200");
        if !open {
            assert!(op["responses"]["401"].is_object(), "{m} {p} documents 401");
        }
        if *m == "POST" {
            assert!(op["requestBody"].is_object(), "{m} {p} documents its body");
            assert!(op["responses"]["400"].is_object(), "{m} {p} documents 400");
            assert!(op["responses"]["413"].is_object(), "{m} {p} documents 413");
        }
    }
    // Every $ref resolves.
    fn refs(doc: &Value, v: &Value) {
        match v {
            Value::Object(m) => {
                if m.contains_key("$ref") {
                    resolve(doc, v);
                }
                m.values().for_each(|x| refs(doc, x));
            }
            Value::Array(a) => a.iter().for_each(|x| refs(doc, x)),
            _ => {}
        }
    }
    refs(d, d);
}

/// One op of every kind. The match below has no wildcard: a new op does not compile until it is
/// added here, and then this test checks that openapi.json documents it.
fn every_op() -> Vec<agentvine::Op> {
    use agentvine::op::{self, MessageFilter, NewTask, Op, PlanTask};
    fn _exhaustive(op: &Op) {
        match op {
            Op::Add(op::Add { .. })
            | Op::AddPlan(op::AddPlan { .. })
            | Op::Claim(op::Claim { .. })
            | Op::Complete(op::Complete { .. })
            | Op::Fail(op::Fail { .. })
            | Op::Release(op::Release { .. })
            | Op::Cancel(op::Cancel { .. })
            | Op::Retry(op::Retry { .. })
            | Op::SetPriority(op::SetPriority { .. })
            | Op::Register(op::Register { .. })
            | Op::Heartbeat(op::Heartbeat { .. })
            | Op::Deregister(op::Deregister { .. })
            | Op::ShouldContinue(op::ShouldContinue { .. })
            | Op::TurnEnded(op::TurnEnded { .. })
            | Op::SetProgress(op::SetProgress { .. })
            | Op::Send(op::Send { .. })
            | Op::Ask(op::Ask { .. })
            | Op::Answer(op::Answer { .. })
            | Op::RequeueStale(op::RequeueStale)
            | Op::Compact(op::Compact)
            | Op::Repair(op::Repair)
            | Op::Status(op::Status)
            | Op::Tasks(op::Tasks { .. })
            | Op::Show(op::Show { .. })
            | Op::Workers(op::Workers)
            | Op::Progress(op::Progress)
            | Op::Settings(op::Settings)
            | Op::ReadMessages(op::ReadMessages { .. })
            | Op::Questions(op::Questions { .. })
            | Op::RecordRun(op::RecordRun { .. })
            | Op::EndSession(op::EndSession { .. })
            | Op::Sessions(op::Sessions { .. })
            | Op::Metrics(op::Metrics { .. }) => {}
        }
    }
    let w = || "w1".to_string();
    let task = NewTask {
        description: "d".into(),
        instructions: Some("i".into()),
        context_files: vec!["docs/a.md".into()],
        after: vec![1],
        ..NewTask::default()
    };
    vec![
        Op::Add(op::Add { task: task.clone() }),
        Op::AddPlan(op::AddPlan {
            tasks: vec![PlanTask {
                key: Some("a".into()),
                task,
                after_keys: vec!["b".into()],
            }],
        }),
        Op::Claim(op::Claim { worker: w() }),
        Op::Complete(op::Complete {
            task: 1,
            worker: w(),
            attempt: Some(1),
            result: Some(json!({"ok": true})),
        }),
        Op::Fail(op::Fail {
            task: 1,
            worker: w(),
            attempt: None,
            error: "e".into(),
            no_retry: true,
        }),
        Op::Release(op::Release {
            task: 1,
            worker: w(),
            attempt: Some(2),
        }),
        Op::Cancel(op::Cancel {
            task: 1,
            reason: Some("r".into()),
        }),
        Op::Retry(op::Retry { task: 1 }),
        Op::SetPriority(op::SetPriority {
            task: 1,
            priority: agentvine::Priority::High,
        }),
        Op::Register(op::Register {
            worker: w(),
            capabilities: vec!["rust".into()],
            session_id: Some("s".into()),
        }),
        Op::Heartbeat(op::Heartbeat { worker: w() }),
        Op::Deregister(op::Deregister { worker: w() }),
        Op::ShouldContinue(op::ShouldContinue {
            worker: w(),
            max_idle_secs: 60,
        }),
        Op::TurnEnded(op::TurnEnded {
            worker: w(),
            max_idle_secs: 60,
            tool_calls: 3,
            reminded: Some(op::Reminder {
                task: 1,
                attempt: 1,
                tool_calls: 2,
            }),
            wait_secs: 0,
            pooled: false,
        }),
        Op::SetProgress(op::SetProgress {
            current_step: Some(json!(2)),
            total_steps: Some(json!(5)),
            status: Some("going".into()),
            metadata: serde_json::Map::from_iter([("phase".to_string(), json!("x"))]),
        }),
        Op::Send(op::Send {
            agent: "a".into(),
            message: "m".into(),
            task: Some(1),
        }),
        Op::Ask(op::Ask {
            agent: "a".into(),
            question: "q".into(),
            task: None,
            wait_secs: Some(600),
        }),
        Op::Answer(op::Answer {
            agent: "a".into(),
            question: 3,
            answer: "x".into(),
        }),
        Op::RequeueStale(op::RequeueStale),
        Op::Compact(op::Compact),
        Op::Repair(op::Repair),
        Op::Status(op::Status),
        Op::Tasks(op::Tasks {
            status: Some(agentvine::task::StatusFilter::Pending),
            all: true,
        }),
        Op::Show(op::Show { task: 1 }),
        Op::Workers(op::Workers),
        Op::Progress(op::Progress),
        Op::Settings(op::Settings),
        Op::ReadMessages(op::ReadMessages {
            filter: MessageFilter {
                since: Some(agentvine::time::now()),
                after_seq: Some(1),
                reply_to: None,
                limit: Some(5),
                task: Some(1),
                agent: Some("w1".into()),
                kind: Some(agentvine::MessageKind::Question),
            },
        }),
        Op::Questions(op::Questions { all: true }),
        Op::RecordRun(op::RecordRun {
            session: "s-1".into(),
            worker: w(),
            task: 1,
            attempt: 1,
            resumed: true,
            why: "related".into(),
            outcome: "success".into(),
            turns: 2,
            cost_usd: 0.5,
            usage: agentvine::sessions::Usage::default(),
            duration_ms: 10,
        }),
        Op::EndSession(op::EndSession {
            session: "s-1".into(),
            reason: "idle".into(),
        }),
        Op::Sessions(op::Sessions {
            worker: Some(w()),
            all: true,
        }),
        Op::Metrics(op::Metrics {
            window_secs: Some(3600),
            buckets: Some(12),
        }),
    ]
}

#[test]
fn the_schema_checker_is_not_vacuous() {
    let good = json!({"status": "success", "path": "/x", "truncated": false,
        "files": [{"name": "a", "is_directory": false, "size": 1, "modified": null}]});
    check(doc(), schema("ListReply"), &good, "r").unwrap();
    for bad in [
        json!({"status": "success", "path": "/x", "files": []}),
        json!({"status": "error", "path": "/x", "files": [], "truncated": false}),
        json!({"status": "success", "path": 1, "files": [], "truncated": false}),
        json!({"status": "success", "path": "/x", "truncated": false,
            "files": [{"name": "a", "is_directory": false, "size": -1, "modified": null}]}),
        json!({"status": "success", "path": "/x", "truncated": false,
            "files": [{"name": "a", "size": 1, "modified": null}]}),
    ] {
        assert!(
            check(doc(), schema("ListReply"), &bad, "r").is_err(),
            "{bad}"
        );
    }
    let op = json!({"status": "success", "reply": {"reply": "claimed", "claim": null}});
    check(doc(), schema("OpReply"), &op, "r").unwrap();
    for bad in [
        json!({"status": "success", "reply": {"reply": "claimed"}}),
        json!({"status": "success", "reply": {"reply": "nope", "claim": null}}),
        json!({"status": "success", "reply": {"reply": "status", "pending": 0}}),
    ] {
        assert!(check(doc(), schema("OpReply"), &bad, "r").is_err(), "{bad}");
    }
    let err = json!({"status": "error", "message": "m"});
    check(doc(), schema("Error"), &err, "r").unwrap();
    assert!(check(doc(), schema("BoardError"), &err, "r").is_err());
    assert!(check(doc(), schema("Error"), &json!({"status": "error"}), "r").is_err());
}

#[test]
fn openapi_documents_every_op() {
    let ops = every_op();
    let mapping = schema("Op")["discriminator"]["mapping"]
        .as_object()
        .expect("Op has a discriminator mapping");
    let names: BTreeSet<&str> = ops.iter().map(|o| o.name()).collect();
    assert_eq!(names.len(), ops.len());
    assert_eq!(
        names,
        mapping.keys().map(String::as_str).collect::<BTreeSet<_>>(),
        "documented op names == Op"
    );
    for op in &ops {
        let v = serde_json::to_value(op).unwrap();
        assert_eq!(v["op"], op.name());
        check(doc(), schema("Op"), &v, op.name()).unwrap_or_else(|e| panic!("{e}"));
        let req = json!({"op": v, "key": "k-1"});
        check(doc(), schema("OpRequest"), &req, "request").unwrap_or_else(|e| panic!("{e}"));
        // And the smallest body the document allows is one the server's parser takes.
        let variant = doc()
            .pointer(&mapping[op.name()].as_str().unwrap()[1..])
            .unwrap();
        let mut minimal = serde_json::Map::new();
        for f in variant["required"].as_array().unwrap() {
            let f = f.as_str().unwrap();
            minimal.insert(f.to_string(), v[f].clone());
        }
        let parsed: Result<agentvine::Op, _> =
            serde_json::from_value(Value::Object(minimal.clone()));
        assert!(parsed.is_ok(), "{minimal:?} does not parse: {parsed:?}");
    }
    // What the document says is required really is: dropping it fails to parse (or is refused).
    assert!(serde_json::from_value::<agentvine::Op>(json!({"op": "claim"})).is_err());
    assert!(serde_json::from_value::<agentvine::Op>(json!({"op": "fly"})).is_err());
}

#[test]
fn openapi_is_served_and_every_route_answers() {
    let mut s = Server::start();
    // Served without a key, and equal to the compiled-in document.
    let r = s.call("GET", "/openapi.json", Auth::None, None);
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("application/json")
    );
    assert_eq!(&r.json(), doc());
    let t = s.call("GET", "/test", Auth::None, None).ok();
    assert_eq!(t["agentvine"]["op"], "/v1/op");
    assert_eq!(t["agentvine"]["openapi"], "/openapi.json");
    assert_eq!(t["agentvine"]["exec"], true);
    assert_eq!(t["agentvine"]["version"], env!("CARGO_PKG_VERSION"));

    for (m, p) in ROUTES {
        let body = (*m == "POST").then_some(&b"{}"[..]);
        // With the key: never the unknown-route reply.
        let r = s.call(m, p, Auth::Key, body);
        // (Not every reply is JSON: /metrics is text.)
        let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        assert!(
            !(r.status == 404 && v["message"].as_str().unwrap_or("").contains(NO_ROUTE)),
            "{m} {p} is documented but not routed: {v}"
        );
        // Without the key: open routes answer, the others refuse with 401.
        if matches!(*p, "/test" | "/openapi.json") {
            let r = s.call(m, p, Auth::None, body);
            assert_eq!(r.status, 200, "{m} {p} is open");
        } else {
            s.refused(m, p, Auth::None, body);
        }
        // The other method is 405 (with the error shape), not 404.
        let other = if *m == "GET" { "POST" } else { "GET" };
        if !ROUTES.contains(&(other, p)) {
            let r = s.call(other, p, Auth::Key, (other == "POST").then_some(&b"{}"[..]));
            r.error(405);
        }
    }
    s.assert_alive();
}

#[test]
fn a_batch_answers_each_op_as_v1_op_would_and_replays_keyed_ops() {
    let mut s = Server::start();
    let adds = json!({"ops": [
        {"op": {"op": "add", "task": {"description": "one"}}, "key": "b-1"},
        {"op": {"op": "complete", "task": 1, "worker": "w1"}},
        {"op": {"op": "add", "task": {"description": "two"}}, "key": "b-2"},
    ]});
    let v = s.post("/v1/batch", &adds).ok();
    let r = v["replies"].as_array().unwrap();
    assert_eq!(r.len(), 3, "{v}");
    assert!(v["changes"].as_u64().is_some(), "{v}");
    assert_eq!(r[0]["reply"]["tasks"][0]["description"], "one", "{v}");
    // Each op's outcome is its own: an error does not fail the batch.
    assert_eq!(r[1]["status"], "error", "{v}");
    assert_eq!(r[1]["kind"], "unknown-task", "{v}");
    assert_eq!(r[2]["reply"]["tasks"][0]["description"], "two", "{v}");
    // The same batch again: the keyed ops are answered, not applied again.
    let again = s.post("/v1/batch", &adds).ok();
    assert_eq!(again["replies"][0], r[0], "{again}");
    assert_eq!(again["replies"][2], r[2], "{again}");
    let claims = json!({"ops": [
        {"op": {"op": "claim", "worker": "w1"}, "key": "c-1"},
        {"op": {"op": "claim", "worker": "w2"}, "key": "c-2"},
    ]});
    let c = s.post("/v1/batch", &claims).ok();
    let got = |v: &Value, i: usize| v["replies"][i]["reply"]["claim"]["task"]["id"].clone();
    assert_ne!(got(&c, 0), got(&c, 1), "{c}");
    let again = s.post("/v1/batch", &claims).ok();
    assert_eq!(again["replies"], c["replies"], "{again}");
    let tasks = s.op_ok(json!({"op": "tasks", "all": true}), "tasks");
    assert_eq!(tasks["tasks"].as_array().unwrap().len(), 2, "{tasks}");
    // Too many ops at once, a read, or a bad key: the batch is refused whole.
    let many: Vec<Value> = (0..1025)
        .map(|_| json!({"op": {"op": "heartbeat", "worker": "w1"}}))
        .collect();
    let m = s.post("/v1/batch", &json!({ "ops": many })).error(400);
    assert!(
        m["message"].as_str().unwrap().contains("at most 1024"),
        "{m}"
    );
    let read = json!({"ops": [{"op": {"op": "status"}}]});
    let m = s.post("/v1/batch", &read).error(400);
    assert!(m["message"].as_str().unwrap().contains("/v1/op"), "{m}");
    let bad = json!({"ops": [{"op": {"op": "heartbeat", "worker": "w1"}, "key": "has space"}]});
    s.post("/v1/batch", &bad).error(400);
    s.assert_alive();
}

#[test]
fn openapi_required_parameters_and_body_fields_are_required() {
    let mut s = Server::start();
    std::fs::write(s.base().join("f.txt"), "hello\n").unwrap();
    // A value that works for each parameter and body field.
    let good = |name: &str| -> Value {
        match name {
            "path" | "directory" => json!("."),
            "filepath" => json!("f.txt"),
            "pattern" => json!("hello"),
            "content" => json!("hello\n"),
            "command" => json!("true"),
            "op" => json!({"op": "status"}),
            "ops" => json!([{"op": {"op": "heartbeat", "worker": "w1"}}]),
            other => panic!("no sample value for {other}"),
        }
    };
    for (m, p) in ROUTES {
        let op = operation(m, p).unwrap();
        if let Some(params) = op.get("parameters").and_then(Value::as_array) {
            let all: Vec<(String, bool)> = params
                .iter()
                .map(|q| {
                    assert_eq!(q["in"], "query");
                    (
                        q["name"].as_str().unwrap().to_string(),
                        q["required"] == true,
                    )
                })
                .collect();
            let query = |skip: Option<&str>, only_required: bool| {
                all.iter()
                    .filter(|(n, req)| Some(n.as_str()) != skip && (*req || !only_required))
                    .map(|(n, _)| format!("{n}={}", enc(good(n).as_str().unwrap())))
                    .collect::<Vec<_>>()
                    .join("&")
            };
            s.get(&format!("{p}?{}", query(None, false))).ok();
            // Optional parameters may be left out.
            s.get(&format!("{p}?{}", query(None, true))).ok();
            for (n, req) in &all {
                if *req {
                    let r = s.get(&format!("{p}?{}", query(Some(n), false)));
                    r.error(400);
                }
            }
        }
        if let Some(body) = op.pointer("/requestBody/content/application~1json/schema") {
            let body = resolve(doc(), body);
            let required: Vec<&str> = body["required"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r.as_str().unwrap())
                .collect();
            let full: serde_json::Map<String, Value> =
                required.iter().map(|n| (n.to_string(), good(n))).collect();
            s.post(p, &Value::Object(full.clone())).ok();
            for n in &required {
                let mut less = full.clone();
                less.remove(*n);
                s.post(p, &Value::Object(less)).error(400);
            }
        }
    }
    s.assert_alive();
}

/// A value for a string parameter or body field that the server takes, `len` characters long.
fn value_of_length(name: &str, len: usize) -> String {
    match name {
        // "./././." resolves to the base directory at any length.
        "path" | "directory" | "workdir" => "./".repeat(len.div_ceil(2))[..len].to_string(),
        // Folders of 200 characters (a file name may have 255).
        "filepath" => {
            let mut p = String::new();
            let mut left = len;
            while left > 201 {
                p.push_str(&"a".repeat(200));
                p.push('/');
                left -= 201;
            }
            p + &"a".repeat(left)
        }
        "pattern" => "h".repeat(len),
        "content" => "x".repeat(len),
        // `:` does nothing; the spaces after it make the length.
        "command" if len > 0 => format!(":{}", " ".repeat(len - 1)),
        "command" => String::new(),
        "key" => "k".repeat(len),
        other => panic!("no sample value of length {len} for {other}"),
    }
}

#[test]
fn openapi_length_limits_are_what_the_server_enforces() {
    // For every string parameter and body field: a value shorter than its minLength (an empty
    // one when it has none) or longer than its maxLength is refused with 400 exactly when the
    // document says it is invalid.
    let mut s = Server::start();
    std::fs::write(s.base().join("f.txt"), "hello\n").unwrap();
    let good = |name: &str| -> Value {
        match name {
            "path" | "directory" => json!("."),
            "filepath" => json!("f.txt"),
            "pattern" => json!("hello"),
            "content" => json!("hello\n"),
            "command" => json!("true"),
            "op" => json!({"op": "status"}),
            "ops" => json!([{"op": {"op": "heartbeat", "worker": "w1"}}]),
            other => panic!("no sample value for {other}"),
        }
    };
    let mut checked = BTreeSet::new();
    for (m, p) in ROUTES {
        let op = operation(m, p).unwrap();
        // (name, schema) of each parameter and body field.
        let mut fields: Vec<(String, Value)> = vec![];
        let params = op.get("parameters").and_then(Value::as_array);
        for q in params.into_iter().flatten() {
            fields.push((q["name"].as_str().unwrap().into(), q["schema"].clone()));
        }
        let body = op
            .pointer("/requestBody/content/application~1json/schema")
            .map(|b| resolve(doc(), b).clone());
        if let Some(b) = &body {
            for (name, schema) in b["properties"].as_object().unwrap() {
                fields.push((name.clone(), schema.clone()));
            }
        }
        let send = |field: &str, value: &str| -> Resp {
            let mut query = vec![];
            for q in params.into_iter().flatten() {
                let n = q["name"].as_str().unwrap();
                let v = if n == field {
                    value.to_string()
                } else {
                    good(n).as_str().unwrap().to_string()
                };
                query.push(format!("{n}={}", enc(&v)));
            }
            match &body {
                None => s.get(&format!("{p}?{}", query.join("&"))),
                Some(b) => {
                    let mut full = serde_json::Map::new();
                    for r in b["required"].as_array().unwrap() {
                        let r = r.as_str().unwrap();
                        full.insert(r.into(), good(r));
                    }
                    full.insert(field.into(), json!(value));
                    s.post(p, &Value::Object(full))
                }
            }
        };
        for (name, schema) in &fields {
            let is_text = match &schema["type"] {
                Value::String(t) => t == "string",
                Value::Array(ts) => ts.contains(&json!("string")),
                _ => false,
            };
            if !is_text || schema.get("enum").is_some() {
                continue;
            }
            checked.insert(name.clone());
            let min = schema["minLength"].as_u64().unwrap_or(0) as usize;
            let what = |len: usize| format!("{m} {p} with {name} of {len} characters");
            if min > 0 {
                let r = send(name, &value_of_length(name, min - 1));
                assert_eq!(
                    r.status,
                    400,
                    "{}: below minLength {min}: {r:?}",
                    what(min - 1)
                );
            }
            let r = send(name, &value_of_length(name, min));
            assert_ne!(
                r.status,
                400,
                "{}: the document allows it: {:?}",
                what(min),
                r.json()
            );
            if let Some(max) = schema["maxLength"].as_u64() {
                let max = max as usize;
                let r = send(name, &value_of_length(name, max));
                assert_ne!(
                    r.status,
                    400,
                    "{}: the document allows it: {:?}",
                    what(max),
                    r.json()
                );
                let r = send(name, &value_of_length(name, max + 1));
                assert_eq!(r.status, 400, "{}: over maxLength {max}", what(max + 1));
            }
        }
    }
    assert_eq!(
        checked.into_iter().collect::<Vec<_>>(),
        [
            "command",
            "content",
            "directory",
            "filepath",
            "key",
            "path",
            "pattern",
            "workdir"
        ],
        "the text fields checked"
    );
    // The patterns: a command of spaces only, a key with a space or beyond ASCII.
    s.exec(" \t ").error(400);
    for key in ["a b", "clé", "tab\t"] {
        s.post("/v1/op", &json!({"op": {"op": "status"}, "key": key}))
            .error(400);
    }
    s.post(
        "/v1/op",
        &json!({"op": {"op": "status"}, "key": "w1-17_x.y~!"}),
    )
    .ok();
    s.assert_alive();
}

// ---------------------------------------------------------------------------------------------
// Endpoints: success and error shapes
// ---------------------------------------------------------------------------------------------

#[test]
fn list_read_deploy_round_trip() {
    let mut s = Server::start();
    // Deploy text into a new folder, read it back.
    let text = "print('héllo')\nline 2\n";
    let v = s
        .post(
            "/deploy",
            &json!({"filepath": "src/app/main.py", "content": text, "encoding": "utf-8"}),
        )
        .ok();
    assert_eq!(v["message"], "File deployed successfully");
    let full = PathBuf::from(v["full_path"].as_str().unwrap());
    assert_eq!(full, s.base().join("src/app/main.py"));
    assert_eq!(std::fs::read_to_string(&full).unwrap(), text);
    let v = s.get("/read?filepath=src%2Fapp%2Fmain.py").ok();
    assert_eq!(v["content"], text);
    assert_eq!(v["encoding"], "utf-8");
    assert_eq!(v["size"], text.len());
    // The original client sends no encoding at all.
    s.post("/deploy", &json!({"filepath": "plain.txt", "content": "x"}))
        .ok();
    assert_eq!(std::fs::read(s.base().join("plain.txt")).unwrap(), b"x");
    // Binary through base64, both ways.
    let bytes: Vec<u8> = (0..=255u8).chain([0, 0xff, 0xfe]).collect();
    let b64 = {
        // Binary bytes on disk come back from /read as base64 ...
        std::fs::write(s.base().join("bin.dat"), &bytes).unwrap();
        let v = s.get("/read?filepath=bin.dat").ok();
        assert_eq!(v["encoding"], "base64");
        assert_eq!(v["size"], bytes.len());
        v["content"].as_str().unwrap().to_string()
    };
    // ... and that base64 deployed back gives the same bytes.
    s.post(
        "/deploy",
        &json!({"filepath": "copy/bin2.dat", "content": b64, "encoding": "base64"}),
    )
    .ok();
    assert_eq!(
        std::fs::read(s.base().join("copy/bin2.dat")).unwrap(),
        bytes
    );
    // A known base64 value, in case both directions were wrong the same way.
    s.post(
        "/deploy",
        &json!({"filepath": "foobar.txt", "content": "Zm9v\nYmFy", "encoding": "BASE64"}),
    )
    .ok();
    assert_eq!(
        std::fs::read(s.base().join("foobar.txt")).unwrap(),
        b"foobar"
    );
    // Overwrite is atomic and complete.
    s.post(
        "/deploy",
        &json!({"filepath": "plain.txt", "content": "second"}),
    )
    .ok();
    assert_eq!(
        std::fs::read(s.base().join("plain.txt")).unwrap(),
        b"second"
    );

    // /list: fields of every entry; the default path is the base directory.
    let v = s.get("/list").ok();
    assert_eq!(PathBuf::from(v["path"].as_str().unwrap()), s.base());
    assert_eq!(v["truncated"], false);
    let files = v["files"].as_array().unwrap();
    let names: Vec<&str> = files.iter().map(|f| f["name"].as_str().unwrap()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "entries are sorted by name");
    for n in ["src", "plain.txt", "bin.dat", "task-queue.json"] {
        assert!(names.contains(&n), "{n} in {names:?}");
    }
    for f in files {
        assert!(f["name"].is_string() && f["is_directory"].is_boolean());
        assert!(f["size"].is_u64());
        let m = f["modified"].as_str().expect("modified is a timestamp");
        assert!(
            chrono::DateTime::parse_from_rfc3339(m).is_ok(),
            "modified {m} is RFC 3339"
        );
    }
    let src = files.iter().find(|f| f["name"] == "src").unwrap();
    assert_eq!(src["is_directory"], true);
    let plain = files.iter().find(|f| f["name"] == "plain.txt").unwrap();
    assert_eq!(plain["is_directory"], false);
    assert_eq!(plain["size"], 6);
    let v = s.get("/list?path=.").ok();
    assert_eq!(PathBuf::from(v["path"].as_str().unwrap()), s.base());
    let v = s.get("/list?path=src%2Fapp").ok();
    assert_eq!(v["files"][0]["name"], "main.py");
    assert_eq!(v["files"][0]["size"], text.len());

    // Errors.
    s.get("/read?filepath=nope.txt").error(404);
    s.get("/read?filepath=src").error(400); // a directory
    s.get("/read").error(400); // no filepath
    s.get("/list?path=nope").error(404);
    s.get("/list?path=plain.txt").error(400); // not a directory
    s.post(
        "/deploy",
        &json!({"filepath": "x.bin", "content": "@@not base64@@", "encoding": "base64"}),
    )
    .error(400);
    s.post(
        "/deploy",
        &json!({"filepath": "x.bin", "content": "x", "encoding": "latin-1"}),
    )
    .error(400);
    s.post("/deploy", &json!({"filepath": "src", "content": "x"}))
        .error(400); // a directory
    s.post("/deploy", &json!({"filepath": ".", "content": "x"}))
        .error(400);
    s.post(
        "/deploy",
        &json!({"filepath": "plain.txt/below", "content": "x"}),
    )
    .error(400); // a file used as a folder
    s.post("/deploy", &json!({"filepath": "", "content": "x"}))
        .error(400);
    assert!(!s.base().join("x.bin").exists());
    s.post("/deploy", &json!({"filepath": 5, "content": "x"}))
        .error(400);
    s.post("/deploy", &json!(["filepath", "content"]))
        .error(400);

    // A file larger than /read returns (16 MiB): 413 without reading it (a sparse file).
    let big = std::fs::File::create(s.base().join("big.bin")).unwrap();
    big.set_len(17 * 1024 * 1024).unwrap();
    s.get("/read?filepath=big.bin").error(413);
    s.assert_alive();
}

#[test]
fn search_files_and_content_are_bounded() {
    let mut s = Server::start();
    let base = s.base();
    std::fs::create_dir_all(base.join("src/deep/er")).unwrap();
    std::fs::write(base.join("src/a.py"), "import os\nneedle = 1\n").unwrap();
    std::fs::write(
        base.join("src/deep/b.py"),
        "x = 'needle'\nno\nneedle again\n",
    )
    .unwrap();
    std::fs::write(base.join("src/deep/er/c.txt"), "nothing here\n").unwrap();
    std::fs::write(base.join("src/bin.dat"), b"needle\0\x01binary").unwrap();
    let v = s.get("/search/files?pattern=*.py").ok();
    assert_eq!(v["files"], json!(["src/a.py", "src/deep/b.py"]));
    assert_eq!(v["truncated"], false);
    let v = s
        .get("/search/files?pattern=%3F.txt&directory=src%2Fdeep")
        .ok();
    assert_eq!(v["files"], json!(["src/deep/er/c.txt"]));
    let v = s.get("/search/files?pattern=*.rs").ok();
    assert_eq!(v["files"], json!([]));
    let v = s.get("/search/content?pattern=needle&directory=src").ok();
    assert_eq!(
        v["matches"],
        json!([
            {"file": "src/a.py", "line": 2, "text": "needle = 1"},
            {"file": "src/deep/b.py", "line": 1, "text": "x = 'needle'"},
            {"file": "src/deep/b.py", "line": 3, "text": "needle again"},
        ]),
        "binary files are skipped"
    );
    assert_eq!(v["truncated"], false);

    // Bounded: 1500 files, 1500 matching lines in one file -> 1000 results each, truncated.
    std::fs::create_dir_all(base.join("many")).unwrap();
    for i in 0..1500 {
        std::fs::write(base.join(format!("many/f{i:04}.log")), "").unwrap();
    }
    std::fs::write(base.join("many/lines.txt"), "hit\n".repeat(1500)).unwrap();
    let v = s.get("/search/files?pattern=*.log&directory=many").ok();
    assert_eq!(v["files"].as_array().unwrap().len(), 1000);
    assert_eq!(v["truncated"], true);
    let v = s.get("/search/content?pattern=hit&directory=many").ok();
    assert_eq!(v["matches"].as_array().unwrap().len(), 1000);
    assert_eq!(v["truncated"], true);
    // A very long line is cut in the reply.
    std::fs::write(
        base.join("src/long.txt"),
        format!("needle{}\n", "y".repeat(5000)),
    )
    .unwrap();
    let v = s.get("/search/content?pattern=needle&directory=src").ok();
    let long = v["matches"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["file"] == "src/long.txt")
        .unwrap();
    assert!(long["text"].as_str().unwrap().len() <= 500);

    // Errors.
    s.get("/search/files?pattern=").error(400);
    s.get("/search/files").error(400);
    s.get("/search/content?pattern=").error(400);
    s.get("/search/content?directory=src").error(400);
    s.assert_alive();
}

#[test]
fn execute_runs_commands() {
    let mut s = Server::start();
    std::fs::create_dir_all(s.base().join("sub")).unwrap();
    let v = s.exec("echo out; echo err >&2; pwd").ok();
    assert_eq!(
        v["stdout"],
        format!("out\n{}\n", s.base().display()),
        "runs in the base directory"
    );
    assert_eq!(v["stderr"], "err\n");
    assert_eq!(v["returncode"], 0);
    assert_eq!(v["truncated"], false);
    let v = s
        .post("/execute", &json!({"command": "pwd", "workdir": "sub"}))
        .ok();
    assert_eq!(v["stdout"], format!("{}\n", s.base().join("sub").display()));
    let v = s
        .post("/execute", &json!({"command": "pwd", "workdir": null}))
        .ok();
    assert_eq!(v["stdout"], format!("{}\n", s.base().display()));
    // A failing command: HTTP 200, status error, its exit code.
    let r = s.exec("echo no >&2; exit 3");
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["status"], "error");
    assert_eq!(v["returncode"], 3);
    assert_eq!(v["stderr"], "no\n");
    // The API key is not handed to commands.
    let v = s
        .exec("echo \"[$VINE_API_KEY][$VPS_API_KEY][$VINE_API_KEY_FILE]\"")
        .ok();
    assert_eq!(v["stdout"], "[][][]\n");
    // Errors.
    s.exec("   ").error(400);
    s.post("/execute", &json!({"command": "true", "workdir": "nope"}))
        .error(400);
    std::fs::write(s.base().join("file"), "").unwrap();
    s.post("/execute", &json!({"command": "true", "workdir": "file"}))
        .error(400);
    s.post("/execute", &json!({"cmd": "true"})).error(400);
    s.assert_alive();
}

#[test]
fn op_endpoint_runs_every_op() {
    let mut s = Server::start();
    s.op_ok(
        json!({"op": "register", "worker": "w1", "capabilities": ["rust"]}),
        "worker",
    );
    s.op_ok(json!({"op": "heartbeat", "worker": "w1"}), "worker");
    let added = s.op_ok(
        json!({"op": "add", "task": {"description": "first", "instructions": "do it",
               "metadata": {"working_directory": "src"}}}),
        "added",
    );
    let first = added["tasks"][0]["id"].as_u64().unwrap();
    assert_eq!(added["tasks"][0]["status"], "pending");
    assert!(
        s.base()
            .join(added["tasks"][0]["instruction_file"].as_str().unwrap())
            .exists()
    );
    let plan = s.op_ok(
        json!({"op": "add-plan", "tasks": [
            {"key": "a", "task": {"description": "p1"}},
            {"key": "b", "task": {"description": "p2"}, "after_keys": ["a"]}]}),
        "added",
    );
    let (p1, p2) = (
        plan["tasks"][0]["id"].as_u64().unwrap(),
        plan["tasks"][1]["id"].as_u64().unwrap(),
    );
    assert_eq!(plan["tasks"][1]["depends_on"], json!([p1]));
    let c = s.op_ok(json!({"op": "claim", "worker": "w1"}), "claimed");
    assert_eq!(c["claim"]["task"]["id"], first);
    assert_eq!(c["claim"]["task"]["status"], "in_progress");
    assert_eq!(c["claim"]["instructions"], "do it");
    s.op_ok(json!({"op": "show", "task": first}), "task");
    let done = s.op_ok(
        json!({"op": "complete", "task": first, "worker": "w1", "result": "ok"}),
        "task",
    );
    assert_eq!(done["task"]["status"], "completed");
    let c = s.op_ok(json!({"op": "claim", "worker": "w1"}), "claimed");
    assert_eq!(c["claim"]["task"]["id"], p1);
    let f = s.op_ok(
        json!({"op": "fail", "task": p1, "worker": "w1", "error": "boom", "no_retry": true}),
        "task",
    );
    assert_eq!(f["task"]["status"], "failed");
    s.op_ok(json!({"op": "retry", "task": p1}), "task");
    s.op_ok(json!({"op": "claim", "worker": "w1"}), "claimed");
    s.op_ok(json!({"op": "release", "task": p1, "worker": "w1"}), "task");
    s.op_ok(
        json!({"op": "cancel", "task": p2, "reason": "not needed"}),
        "task",
    );
    s.op_ok(
        json!({"op": "should-continue", "worker": "w1", "max_idle_secs": 600}),
        "decision",
    );
    s.op_ok(
        json!({"op": "set-progress", "current_step": 2, "total_steps": 5, "status": "going"}),
        "progress",
    );
    let p = s.op_ok(json!({"op": "progress"}), "progress");
    assert_eq!(p["progress"]["current_step"], 2);
    s.op_ok(
        json!({"op": "send", "agent": "w1", "message": "hi"}),
        "message",
    );
    let q = s.op_ok(
        json!({"op": "ask", "agent": "w1", "question": "why?"}),
        "message",
    );
    let seq = q["message"]["seq"].as_u64().unwrap();
    s.op_ok(
        json!({"op": "answer", "agent": "coordinator", "question": seq, "answer": "because"}),
        "message",
    );
    let m = s.op_ok(json!({"op": "read-messages"}), "messages");
    assert_eq!(m["messages"].as_array().unwrap().len(), 3);
    s.op_ok(
        json!({"op": "read-messages", "filter": {"limit": 1}}),
        "messages",
    );
    s.op_ok(json!({"op": "questions", "all": true}), "questions");
    s.op_ok(json!({"op": "requeue-stale"}), "requeued");
    s.op_ok(json!({"op": "tasks"}), "tasks");
    s.op_ok(
        json!({"op": "tasks", "status": "completed", "all": true}),
        "tasks",
    );
    s.op_ok(json!({"op": "workers"}), "workers");
    s.op_ok(json!({"op": "settings"}), "settings");
    let st = s.op_ok(json!({"op": "status"}), "status");
    assert_eq!(st["total"], 3);
    assert_eq!(st["completed"], 1);
    assert_eq!(st["cancelled"], 1);
    s.op_ok(json!({"op": "cancel", "task": p1}), "task");
    s.op_ok(json!({"op": "compact"}), "compacted");
    s.op_ok(json!({"op": "repair"}), "repaired");
    s.op_ok(json!({"op": "deregister", "worker": "w1"}), "worker");
    // Nothing to claim: success with no claim and a reason.
    s.op_ok(json!({"op": "register", "worker": "w2"}), "worker");
    let c = s.op_ok(json!({"op": "claim", "worker": "w2"}), "claimed");
    assert!(c["claim"].is_null());
    assert!(c["reason"].is_string());
    s.assert_alive();
}

#[test]
fn op_endpoint_errors_and_request_keys() {
    let mut s = Server::start();
    // A board error: its kind, vine's exit code, and a fitting HTTP status.
    let e = s
        .op(json!({"op": "complete", "task": 999, "worker": "w1"}))
        .error(404);
    assert_eq!(e["kind"], "unknown-task");
    assert_eq!(e["code"], 2);
    let e = s
        .op(json!({"op": "claim", "worker": "bad worker"}))
        .error(400);
    assert_eq!(e["kind"], "invalid");
    assert_eq!(e["code"], 2);
    let e = s
        .op(json!({"op": "add", "task": {"description": "x".repeat(5000)}}))
        .error(400);
    assert_eq!(e["kind"], "invalid");
    let id = s.op_ok(json!({"op": "add", "task": {"description": "t"}}), "added")["tasks"][0]["id"]
        .as_u64()
        .unwrap();
    s.op_ok(json!({"op": "claim", "worker": "w1"}), "claimed");
    let e = s
        .op(json!({"op": "complete", "task": id, "worker": "w2"}))
        .error(409);
    assert_eq!(e["kind"], "conflict");
    assert_eq!(e["code"], 4);
    // Not an op at all: 400 with a message (no kind: it never reached the board).
    for body in [
        json!({}),
        json!({"op": {"op": "fly"}}),
        json!({"op": {"worker": "w1"}}),
        json!({"op": "claim"}),
        json!({"op": {"op": "claim", "worker": 7}}),
    ] {
        let e = s.post("/v1/op", &body).error(400);
        assert!(e["message"].as_str().unwrap().contains("JSON"), "{e}");
    }
    // A retry with the same request key is answered, not applied twice.
    let body = json!({"op": {"op": "add", "task": {"description": "once"}}, "key": "req-1"});
    let a = s.post("/v1/op", &body).ok();
    let b = s.post("/v1/op", &body).ok();
    assert_eq!(a["reply"]["tasks"][0]["id"], b["reply"]["tasks"][0]["id"]);
    let st = s.op_ok(json!({"op": "status"}), "status");
    assert_eq!(st["total"], 2);
    s.assert_alive();
}

#[test]
fn concurrent_ops_are_atomic() {
    // Many clients claiming at once: every task is claimed exactly once (group commit).
    let s = Server::start();
    let n = 20;
    let plan: Vec<Value> = (0..n)
        .map(|i| json!({"task": {"description": format!("t{i}")}}))
        .collect();
    s.op_ok(json!({"op": "add-plan", "tasks": plan}), "added");
    let s = Arc::new(Mutex::new(s));
    let addr = s.lock().unwrap().addr;
    let handles: Vec<_> = (0..n + 5)
        .map(|i| {
            std::thread::spawn(move || {
                let body = json!({"op": {"op": "claim", "worker": format!("w{i}")}}).to_string();
                let req = request(
                    addr,
                    "POST",
                    "/v1/op",
                    &[("X-API-Key", KEY)],
                    Some(body.as_bytes()),
                );
                let r = send_raw(addr, &req).unwrap();
                check_reply("POST", "/v1/op", &r);
                r.ok()["reply"]["claim"]["task"]["id"].as_u64()
            })
        })
        .collect();
    let ids: Vec<u64> = handles
        .into_iter()
        .filter_map(|h| h.join().unwrap())
        .collect();
    let unique: BTreeSet<u64> = ids.iter().copied().collect();
    assert_eq!(ids.len(), n, "{ids:?}");
    assert_eq!(unique.len(), n, "no task claimed twice: {ids:?}");
    s.lock().unwrap().assert_alive();
}

#[test]
fn original_only_mode_serves_the_four_endpoints() {
    let mut s = Opts::new().arg("--original-only").start();
    let v = s.call("GET", "/test", Auth::None, None).ok();
    assert!(v.get("agentvine").is_none(), "{v}");
    s.get("/list").ok();
    s.exec("true").ok();
    for (m, p) in [
        ("GET", "/read?filepath=x"),
        ("POST", "/v1/op"),
        ("GET", "/openapi.json"),
    ] {
        let r = s.call(m, p, Auth::Key, (m == "POST").then_some(&b"{}"[..]));
        r.error(404);
    }
    s.assert_alive();
}

// ---------------------------------------------------------------------------------------------
// Refusals: the key
// ---------------------------------------------------------------------------------------------

#[test]
fn key_is_required_and_bad_keys_get_slower() {
    let mut s = Server::start();
    // No key / wrong key: 401 with a message. (Each refusal is followed by a good request, which
    // resets the slow-down, so this part stays fast.)
    let e = s.refused("GET", "/list", Auth::None, None);
    assert!(e["message"].as_str().unwrap().contains("X-API-Key"), "{e}");
    // Open routes need no key.
    s.call("GET", "/test", Auth::None, None).ok();
    // Tricks around the open routes do not skip the check.
    for t in [
        "/test/../list",
        "/list/",
        "//list",
        "/LIST",
        "/%6cist",
        "/test/x",
        "/test%2F..%2Flist",
        "/openapi.json/../list",
    ] {
        s.refused("GET", t, Auth::None, None);
    }
    // The key works in X-API-Key and as a bearer token (either case of the scheme word).
    let bearer = format!("Bearer {KEY}");
    s.call("GET", "/list", Auth::Header("Authorization", &bearer), None)
        .ok();
    let lower = format!("bearer {KEY}");
    s.call("GET", "/list", Auth::Header("authorization", &lower), None)
        .ok();
    s.refused("GET", "/list", Auth::Header("Authorization", KEY), None);
    s.refused(
        "GET",
        "/list",
        Auth::Header("Authorization", "Bearer nope"),
        None,
    );
    let e = s.refused("GET", "/list", Auth::Header("X-API-Key", "nope"), None);
    assert!(e["message"].as_str().unwrap().contains("wrong"), "{e}");
    s.refused("GET", "/list", Auth::Header("X-API-Key", ""), None);
    // A prefix of the key is not the key.
    s.refused(
        "GET",
        "/list",
        Auth::Header("X-API-Key", &KEY[..KEY.len() - 1]),
        None,
    );
    s.refused(
        "POST",
        "/v1/op",
        Auth::Header("X-API-Key", "nope"),
        Some(br#"{"op":{"op":"status"}}"#),
    );

    // Repeated bad keys from one address are answered more and more slowly.
    let me = Some(fresh_loopback());
    let mut took = vec![];
    for _ in 0..4 {
        let t = Instant::now();
        s.call_from(me, "GET", "/list", Auth::Header("X-API-Key", "wrong"), None)
            .error(401);
        took.push(t.elapsed());
    }
    assert!(
        took[3] >= took[0] + Duration::from_millis(300),
        "the 4th bad key should take much longer than the 1st: {took:?}"
    );
    assert!(took[0] >= Duration::from_millis(90), "{took:?}");
    // The right key is not held back by the failures before it ...
    let t = Instant::now();
    s.call_from(me, "GET", "/list", Auth::Key, None).ok();
    assert!(t.elapsed() < took[3], "{:?} vs {took:?}", t.elapsed());
    // ... and does not wipe them out (behind a proxy or NAT, one address is many clients).
    let t = Instant::now();
    s.call_from(me, "GET", "/list", Auth::Header("X-API-Key", "wrong"), None)
        .error(401);
    assert!(
        t.elapsed() > took[3],
        "a good key reset the count: {:?} vs {took:?}",
        t.elapsed()
    );
    // Another address is not slowed down by this one's failures.
    let t = Instant::now();
    s.refused("GET", "/list", Auth::Header("X-API-Key", "wrong"), None);
    assert!(t.elapsed() < took[3], "{:?} vs {took:?}", t.elapsed());
    s.assert_alive();
}

#[test]
fn parallel_bad_keys_from_one_address_are_answered_one_at_a_time() {
    const GUESSES: usize = 40;
    let mut s = Server::start();
    let (addr, me) = (s.addr, fresh_loopback());
    let started = Instant::now();
    let guesses: Vec<_> = (0..GUESSES)
        .map(|i| {
            std::thread::spawn(move || {
                let key = format!("guess-{i}");
                let req = request(addr, "GET", "/list", &[("X-API-Key", &key)], None);
                // Whatever has not been answered after 7 s counts as held.
                let r = send_from(Some(me), addr, &req, Duration::from_secs(7));
                r.ok().map(|r| (r.status, started.elapsed()))
            })
        })
        .collect();
    // While they wait, the right key from the same address goes through at once.
    sleep(Duration::from_millis(500));
    let t = Instant::now();
    s.call_from(Some(me), "GET", "/list", Auth::Key, None).ok();
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "a good key was held {:?} behind the guesses",
        t.elapsed()
    );
    let answers: Vec<_> = guesses.into_iter().map(|g| g.join().unwrap()).collect();
    let early: Vec<Duration> = answers
        .iter()
        .flatten()
        .filter(|(status, at)| *status == 401 && *at < Duration::from_secs(6))
        .map(|(_, at)| *at)
        .collect();
    // One at a time, 100 ms doubling: 0.1, 0.3, 0.7, 1.5, 3.1 s, then 6.3 s.
    assert!(
        !early.is_empty() && early.len() <= 6,
        "{} of {GUESSES} parallel bad keys from one address were answered within 6 s: {early:?}",
        early.len()
    );
    assert!(
        answers.iter().flatten().all(|(status, _)| *status == 401),
        "{answers:?}"
    );
    s.assert_alive();
}

#[test]
fn key_from_a_key_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("key");
    std::fs::write(&file, format!("{KEY}\n")).unwrap();
    let mut s = Opts::new()
        .no_key()
        .arg("--key-file")
        .arg(file.to_str().unwrap())
        .start();
    s.key = Some(KEY.to_string());
    s.get("/list").ok();
    s.call("GET", "/list", Auth::None, None).error(401);
    s.assert_alive();
}

#[test]
fn no_key_on_loopback_is_open() {
    let mut s = Opts::new().no_key().start();
    s.get("/list").ok();
    s.op_ok(json!({"op": "status"}), "status");
    wait_for("the no-key warning", Duration::from_secs(10), || {
        s.process.stderr().contains("no API key")
    });
    s.assert_alive();
}

#[test]
fn refuses_a_public_address_without_a_key() {
    for (listen, key) in [
        ("0.0.0.0:0", None),
        ("[::]:0", None),
        ("0.0.0.0:0", Some("   ")),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut c = vine();
        c.args(["serve", "--listen", listen, "--root"])
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(k) = key {
            c.env("VINE_API_KEY", k);
        }
        let mut child = c.spawn().unwrap();
        let start = Instant::now();
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            if start.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                let _ = child.wait();
                panic!("vine serve --listen {listen} without a key kept running");
            }
            sleep(Duration::from_millis(20));
        };
        let mut out = String::new();
        let mut err = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        assert!(!status.success(), "{listen}: {status:?}");
        assert!(!out.contains("listening"), "{listen}: {out}");
        assert!(
            err.contains("refusing") && err.contains("API key") && err.contains("VINE_API_KEY"),
            "{listen}: a clear message: {err}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Refusals: paths outside the base directory
// ---------------------------------------------------------------------------------------------

#[test]
fn paths_outside_the_base_are_refused() {
    let mut s = Server::start();
    let base = s.base();
    let outside = s.outside();
    std::fs::create_dir_all(base.join("inside")).unwrap();
    std::fs::write(base.join("inside/ok.txt"), "fine\n").unwrap();
    std::os::unix::fs::symlink(&outside, base.join("link")).unwrap();
    std::os::unix::fs::symlink(outside.join("secret.txt"), base.join("filelink")).unwrap();
    std::os::unix::fs::symlink("../../outside", base.join("inside/rel")).unwrap();
    // Created after the server started: paths are resolved at request time.
    s.get("/list?path=inside").ok();
    std::os::unix::fs::symlink(&outside, base.join("late")).unwrap();
    std::os::unix::fs::symlink(outside.join("sub"), base.join("inside/late2")).unwrap();

    let abs = outside.join("secret.txt").display().to_string();
    // Directory-like targets (raw query text: some encoded by hand on purpose).
    let dirs_raw: Vec<String> = vec![
        enc(".."),
        enc("../outside"),
        "..%2F..%2Fetc".into(),
        "%2e%2e%2foutside".into(),
        "..%2f".into(),
        enc("inside/../../outside"),
        enc("./../outside"),
        enc("/etc"),
        enc(&outside.display().to_string()),
        "%2Fetc".into(),
        enc("link"),
        enc("link/sub"),
        enc("late"),
        enc("late/sub"),
        enc("inside/rel"),
        enc("inside/late2"),
        enc("inside\\..\\..\\outside"),
        enc("C:/x"),
        "inside%00".into(),
    ];
    // File-like targets.
    let files_raw: Vec<String> = vec![
        enc("../outside/secret.txt"),
        "..%2F..%2Fetc%2Fpasswd".into(),
        "..%2Foutside%2Fsecret.txt".into(),
        enc(&abs),
        "%2Fetc%2Fpasswd".into(),
        enc("inside/../../outside/secret.txt"),
        enc("link/secret.txt"),
        enc("late/secret.txt"),
        enc("late/sub/deeper.txt"),
        enc("filelink"),
        enc("inside/rel/secret.txt"),
        enc("inside/late2/deeper.txt"),
    ];
    let no_secret = |r: &Resp| {
        assert!(
            !String::from_utf8_lossy(&r.body).contains(SECRET),
            "the secret leaked: {}",
            String::from_utf8_lossy(&r.body)
        );
    };
    for d in &dirs_raw {
        for target in [
            format!("/list?path={d}"),
            format!("/search/files?pattern=*&directory={d}"),
            format!("/search/content?pattern=TOPSECRET&directory={d}"),
        ] {
            let r = s.get(&target);
            no_secret(&r);
            r.error(403);
        }
    }
    for f in &files_raw {
        let r = s.get(&format!("/read?filepath={f}"));
        no_secret(&r);
        r.error(403);
    }
    // The same paths, decoded, in JSON bodies: deploy and execute's workdir.
    let decode = |raw: &str| -> String {
        let mut out = Vec::new();
        let b = raw.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' && i + 2 < b.len() {
                let h = u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap(), 16);
                out.push(h.unwrap());
                i += 3;
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        String::from_utf8(out).unwrap()
    };
    let before: Vec<_> = walk_names(&outside);
    for f in files_raw.iter().chain(&dirs_raw) {
        let p = decode(f);
        let r = s.post(
            "/deploy",
            &json!({"filepath": p, "content": "pwned", "encoding": "utf-8"}),
        );
        r.error(403);
        let r = s.post(
            "/deploy",
            &json!({"filepath": format!("{p}/new.txt"), "content": "pwned"}),
        );
        r.error(403);
    }
    for d in &dirs_raw {
        let p = decode(d);
        let r = s.post(
            "/execute",
            &json!({"command": "echo pwned > pwned.txt; pwd", "workdir": p}),
        );
        r.error(403);
    }
    assert_eq!(walk_names(&outside), before, "nothing was written outside");
    assert_eq!(
        std::fs::read_to_string(outside.join("secret.txt")).unwrap(),
        format!("{SECRET}\n")
    );
    assert!(!base.join("pwned.txt").exists());

    // Searching the base directory does not follow the symlinks out of it.
    let v = s.get("/search/content?pattern=TOPSECRET").ok();
    assert_eq!(v["matches"], json!([]));
    let v = s.get("/search/files?pattern=*.txt").ok();
    assert_eq!(v["files"], json!(["inside/ok.txt"]));
    // A symlink that stays inside is fine.
    std::os::unix::fs::symlink(base.join("inside"), base.join("alias")).unwrap();
    assert_eq!(
        s.get("/read?filepath=alias%2Fok.txt").ok()["content"],
        "fine\n"
    );
    s.post("/execute", &json!({"command": "pwd", "workdir": "alias"}))
        .ok();
    s.assert_alive();
}

#[test]
fn deploy_cannot_be_redirected_by_symlinks() {
    let mut s = Server::start();
    let base = s.base();
    let outside = s.outside();
    // Dangling symlinks leading out: as a folder on the way, and as the file itself.
    std::os::unix::fs::symlink(outside.join("newdir"), base.join("dangling-dir")).unwrap();
    std::os::unix::fs::symlink(outside.join("newfile.txt"), base.join("dangling-file")).unwrap();
    let r = s.post(
        "/deploy",
        &json!({"filepath": "dangling-dir/x.txt", "content": "pwned"}),
    );
    assert!(matches!(r.status, 400 | 403), "{}", r.status);
    assert!(!outside.join("newdir").exists());
    // Deploying over a dangling symlink replaces the link, it does not write through it.
    let r = s.post(
        "/deploy",
        &json!({"filepath": "dangling-file", "content": "mine"}),
    );
    assert!(matches!(r.status, 200 | 403), "{}", r.status);
    assert!(
        !outside.join("newfile.txt").exists(),
        "written through a symlink"
    );
    // A symlink planted where a temporary file might go does not redirect the write.
    for name in [".victim.txt.tmp", ".victim.txt.deploy"] {
        std::os::unix::fs::symlink(outside.join("planted.txt"), base.join(name)).unwrap();
    }
    s.post(
        "/deploy",
        &json!({"filepath": "victim.txt", "content": "mine"}),
    )
    .ok();
    assert!(
        !outside.join("planted.txt").exists(),
        "the deploy wrote outside the base directory through a planted temporary-file symlink"
    );
    assert_eq!(
        std::fs::read_to_string(base.join("victim.txt")).unwrap(),
        "mine"
    );
    assert_eq!(
        std::fs::read_to_string(outside.join("secret.txt")).unwrap(),
        format!("{SECRET}\n")
    );
    s.assert_alive();
}

#[test]
fn concurrent_deploys_of_one_file_are_atomic() {
    let mut s = Server::start();
    let addr = s.addr;
    let n = 8;
    let size = 512 * 1024;
    let handles: Vec<_> = (0..n)
        .map(|i| {
            std::thread::spawn(move || {
                let content = char::from(b'a' + i as u8).to_string().repeat(size);
                let body = json!({"filepath": "same.txt", "content": content}).to_string();
                let req = request(
                    addr,
                    "POST",
                    "/deploy",
                    &[("X-API-Key", KEY)],
                    Some(body.as_bytes()),
                );
                let r = send_raw(addr, &req).unwrap();
                check_reply("POST", "/deploy", &r);
                r.status
            })
        })
        .collect();
    let statuses: Vec<u16> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(statuses.iter().all(|&st| st == 200), "{statuses:?}");
    let got = std::fs::read(s.base().join("same.txt")).unwrap();
    assert_eq!(got.len(), size, "one whole deploy, not a mix");
    assert!(
        got.iter().all(|&b| b == got[0]),
        "one whole deploy, not a mix"
    );
    let leftovers: Vec<_> = std::fs::read_dir(s.base())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with(".same.txt"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    s.assert_alive();
}

#[test]
fn read_refuses_what_is_not_a_regular_file() {
    let mut s = Server::start();
    let fifo = s.base().join("pipe");
    let st = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(st.success());
    // Several at once: a read that blocked would tie up the server's threads.
    let addr = s.addr;
    let handles: Vec<_> = (0..16)
        .map(|_| {
            std::thread::spawn(move || {
                let req = request(
                    addr,
                    "GET",
                    "/read?filepath=pipe",
                    &[("X-API-Key", KEY)],
                    None,
                );
                let mut c = TcpStream::connect(addr).unwrap();
                c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                c.write_all(&req).unwrap();
                let mut buf = Vec::new();
                let _ = c.read_to_end(&mut buf);
                parse_response(&buf).map(|r| r.status).ok()
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), Some(400), "a FIFO is refused, not read");
    }
    s.get("/read?filepath=pipe").error(400);
    s.assert_alive();
}

#[test]
fn repair_next_to_other_ops_is_not_refused() {
    // The server group-commits concurrent ops; repair must still run (alone), not fail.
    let mut s = Server::start();
    let addr = s.addr;
    for round in 0..5 {
        let handles: Vec<_> = (0..12)
            .map(|i| {
                std::thread::spawn(move || {
                    let op = if i == 6 {
                        json!({"op": "repair"})
                    } else {
                        json!({"op": "add", "task": {"description": format!("r{round}-{i}")}})
                    };
                    let body = json!({ "op": op }).to_string();
                    let req = request(
                        addr,
                        "POST",
                        "/v1/op",
                        &[("X-API-Key", KEY)],
                        Some(body.as_bytes()),
                    );
                    let r = send_raw(addr, &req).unwrap();
                    check_reply("POST", "/v1/op", &r);
                    (op, r)
                })
            })
            .collect();
        for h in handles {
            let (op, r) = h.join().unwrap();
            assert_eq!(r.status, 200, "{op}: {}", String::from_utf8_lossy(&r.body));
        }
    }
    assert_eq!(s.op_ok(json!({"op": "status"}), "status")["total"], 55);
    s.assert_alive();
}

fn walk_names(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out.sort();
    out
}

// ---------------------------------------------------------------------------------------------
// Refusals: bodies, JSON, routes
// ---------------------------------------------------------------------------------------------

#[test]
fn oversized_bodies_get_413() {
    let mut s = Opts::new().arg("--max-body").arg("1024").start();
    let content = "x".repeat(4000);
    for (path, body) in [
        (
            "/deploy",
            json!({"filepath": "big.txt", "content": content}),
        ),
        ("/execute", json!({"command": format!("echo {content}")})),
        (
            "/v1/op",
            json!({"op": {"op": "add", "task": {"description": content}}}),
        ),
    ] {
        let e = s.post(path, &body).error(413);
        assert!(e["message"].as_str().unwrap().contains("too large"), "{e}");
    }
    assert!(!s.base().join("big.txt").exists());
    // Chunked, without a length up front: still refused.
    let mut req = format!(
        "POST /deploy HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nX-API-Key: {KEY}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
        s.addr
    )
    .into_bytes();
    let body = json!({"filepath": "big2.txt", "content": content}).to_string();
    for part in body.as_bytes().chunks(500) {
        req.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        req.extend_from_slice(part);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let r = send_raw(s.addr, &req).unwrap();
    check_reply("POST", "/deploy", &r);
    r.error(413);
    assert!(!s.base().join("big2.txt").exists());
    // Just under the limit is fine.
    s.post(
        "/deploy",
        &json!({"filepath": "small.txt", "content": "x".repeat(900)}),
    )
    .ok();
    s.assert_alive();
}

/// Sends a request's headers and then its body one byte every 200 ms, for at most `limit`;
/// returns the reply (if one came, the server closing the connection after it) and when.
fn trickle(addr: SocketAddr, path: &str, limit: Duration) -> Option<(Resp, Duration)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).ok()?;
    s.set_read_timeout(Some(Duration::from_millis(200))).ok()?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nX-API-Key: {KEY}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{"
    );
    s.write_all(head.as_bytes()).ok()?;
    let started = Instant::now();
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    while started.elapsed() < limit {
        let _ = s.write_all(b" ");
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    let at = started.elapsed();
    parse_response(&got).ok().map(|r| (r, at))
}

#[test]
fn trickled_request_bodies_get_408() {
    const CLIENTS: usize = 30;
    let mut s = Opts::new().arg("--body-timeout").arg("1s").start();
    let addr = s.addr;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let path = ["/deploy", "/execute", "/v1/op"][i % 3];
            std::thread::spawn(move || (path, trickle(addr, path, Duration::from_secs(8))))
        })
        .collect();
    for c in clients {
        let (path, got) = c.join().unwrap();
        let Some((r, at)) = got else {
            panic!("POST {path}: a trickled body was held 8 s without a reply");
        };
        check_reply("POST", path, &r);
        let e = r.error(408);
        assert!(
            e["message"].as_str().unwrap().contains("body-timeout"),
            "{e}"
        );
        assert!(at < Duration::from_secs(5), "POST {path}: 408 after {at:?}");
    }
    // A body sent at once is not affected.
    s.post("/deploy", &json!({"filepath": "fast.txt", "content": "x"}))
        .ok();
    s.assert_alive();
}

#[test]
fn malformed_requests_get_400_and_unknown_routes_404() {
    let mut s = Server::start();
    for path in ["/deploy", "/execute", "/v1/op"] {
        for body in [
            &b"{not json"[..],
            b"",
            b"null",
            b"[]",
            b"\"text\"",
            b"{\"filepath\": \"a\", \"content\": ",
            b"\xff\xfe\x00garbage",
            b"{\"command\": 1, \"filepath\": [], \"op\": 3}",
        ] {
            let e = s.post_bytes(path, body).error(400);
            assert!(
                e["message"].as_str().unwrap().contains("JSON"),
                "{path} {body:?}: {e}"
            );
        }
        // Deeply nested JSON is refused, not a stack overflow.
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        s.post_bytes(path, deep.as_bytes()).error(400);
    }
    // Bad query strings.
    let r = s.get("/list?path=%FF%FE"); // not UTF-8: read lossily, so no such directory
    assert!(matches!(r.status, 400 | 404), "{}", r.status);
    s.get("/read?filepath=a&filepath=b").error(400);
    // Unknown routes: 404 with the error shape (`/` is the control room, see tests/web.rs).
    for target in ["/nope", "/v2/op", "/list/x", "/deploy/", "/v1/op/extra"] {
        let e = s.get(target).error(404);
        assert!(e["message"].as_str().unwrap().contains(NO_ROUTE), "{e}");
    }
    s.call("DELETE", "/list", Auth::Key, None).error(405);
    s.call("PUT", "/deploy", Auth::Key, Some(b"{}")).error(405);
    s.assert_alive();
}

#[test]
fn garbage_does_not_crash_the_server() {
    let mut s = Server::start();
    let a = s.addr;
    let junk: Vec<Vec<u8>> = vec![
        b"GARBAGE\r\n\r\n".to_vec(),
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".to_vec(), // a TLS hello on plain HTTP
        b"GET /test HTTP/9.9\r\n\r\n".to_vec(),
        b"GET /\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        format!("GET /test HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(200_000))
            .into_bytes(),
        format!("GET /list HTTP/1.1\r\nHost: x\r\nX-API-Key: {}\r\n\r\n", "k".repeat(50_000))
            .into_bytes(),
        b"POST /deploy HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n"
            .to_vec(),
        format!(
            "POST /deploy HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY}\r\nContent-Length: 100\r\n\r\n{{\"filepath\""
        )
        .into_bytes(), // body cut short
        format!(
            "POST /v1/op HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY}\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n"
        )
        .into_bytes(),
        format!(
            "POST /v1/op HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY}\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        )
        .into_bytes(),
        b"GET /test HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n".to_vec(),
        b"GET /test\r\n\r\n".to_vec(),
        b"\r\n\r\n\r\n".to_vec(),
        vec![0u8; 10_000],
        (0..=255u8).cycle().take(100_000).collect(),
    ];
    for j in &junk {
        // Any reply or none; it must not take the server down.
        send_junk(a, j);
    }
    // Connections opened and dropped mid-request, in parallel.
    let hs: Vec<_> = (0..20)
        .map(|i| {
            std::thread::spawn(move || {
                if let Ok(mut c) = TcpStream::connect(a) {
                    let _ = c.write_all(format!("POST /v1/op HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY}\r\nContent-Length: 1000\r\n\r\n{{\"op\":").as_bytes());
                    if i % 2 == 0 {
                        let _ = c.shutdown(std::net::Shutdown::Both);
                    }
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    // Odd but well-formed JSON.
    for op in [
        json!({"op": "claim", "worker": "../../etc"}),
        json!({"op": "claim", "worker": "w\u{0}1"}),
        json!({"op": "show", "task": u64::MAX}),
        json!({"op": "complete", "task": 1, "worker": "w", "result": {"a": [[[[[[1]]]]]]}}),
        json!({"op": "add", "task": {"description": "d", "instruction_file": "../../etc/passwd"}}),
        json!({"op": "add", "task": {"description": "d", "context_files": ["/etc/passwd"]}}),
        json!({"op": "add", "task": {"description": "d", "after": [123]}}),
        json!({"op": "answer", "agent": "a", "question": 424242, "answer": "x"}),
        json!({"op": "read-messages", "filter": {"since": "yesterday"}}),
        json!({"op": "should-continue", "worker": "w", "max_idle_secs": u64::MAX}),
    ] {
        let r = s.op(op.clone());
        assert!(
            matches!(r.status, 200 | 400 | 404 | 409),
            "{op}: {}",
            r.status
        );
    }
    // Longer than any path (openapi.json: maxLength 1024): a bad request.
    s.get(&format!("/read?filepath={}", "a/".repeat(2000)))
        .error(400);
    s.get("/search/files?pattern=************************************************a")
        .ok();
    s.assert_alive();
}

// ---------------------------------------------------------------------------------------------
// Board files through /deploy
// ---------------------------------------------------------------------------------------------

#[test]
fn deploy_guards_the_board_files() {
    let mut s = Server::start();
    let base = s.base();
    let lock = base.join("board.lock");
    assert!(lock.exists(), "the server made a board");
    let ino = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&lock).unwrap());
    // The lock file is never replaced.
    s.post("/deploy", &json!({"filepath": "board.lock", "content": ""}))
        .error(403);
    s.post(
        "/deploy",
        &json!({"filepath": "./board.lock", "content": "x"}),
    )
    .error(403);
    std::os::unix::fs::symlink(&base, base.join("self")).unwrap();
    s.post(
        "/deploy",
        &json!({"filepath": "self/board.lock", "content": "x"}),
    )
    .error(403);
    assert_eq!(
        std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&lock).unwrap()),
        ino
    );
    // An unparseable queue is refused and the real one is left as it was.
    s.op_ok(
        json!({"op": "add", "task": {"description": "keep me"}}),
        "added",
    );
    let queue = base.join("task-queue.json");
    let before = std::fs::read(&queue).unwrap();
    for bad in ["not json", "{\"a\": 1}", "[{\"no\": \"id\"}]", "", "[1, 2]"] {
        let e = s
            .post(
                "/deploy",
                &json!({"filepath": "task-queue.json", "content": bad}),
            )
            .error(400);
        assert!(
            e["message"].as_str().unwrap().contains("task-queue.json"),
            "{e}"
        );
        assert_eq!(std::fs::read(&queue).unwrap(), before, "{bad:?}");
    }
    s.post(
        "/deploy",
        &json!({"filepath": "self/task-queue.json", "content": "oops"}),
    )
    .error(400);
    assert_eq!(std::fs::read(&queue).unwrap(), before);
    for (file, bad) in [
        ("worker-status.json", "[]"),
        ("progress.json", "nope"),
        ("board.json", "{{{"),
    ] {
        let path = base.join(file);
        let was = std::fs::read(&path).ok();
        s.post("/deploy", &json!({"filepath": file, "content": bad}))
            .error(400);
        assert_eq!(std::fs::read(&path).ok(), was, "{file} untouched");
    }
    // The board still works.
    let st = s.op_ok(json!({"op": "status"}), "status");
    assert_eq!(st["total"], 1);
    // A queue in the original plan's format is accepted and seen by the board.
    let original = json!([{"id": 1731159000123u64, "description": "from the original",
        "instruction_file": "tasks/task-1731159000123-instructions.md", "context_files": [],
        "assigned_to": null, "status": "pending", "created_at": "2025-11-09T10:00:00",
        "claimed_by": null, "claimed_at": null, "completed_by": null, "completed_at": null,
        "result": null, "metadata": {}}]);
    s.post(
        "/deploy",
        &json!({"filepath": "task-queue.json", "content": original.to_string()}),
    )
    .ok();
    let t = s.op_ok(json!({"op": "tasks"}), "tasks");
    assert_eq!(t["tasks"][0]["description"], "from the original");
    // A file of the same name below the top is an ordinary file.
    s.post(
        "/deploy",
        &json!({"filepath": "docs/task-queue.json", "content": "anything"}),
    )
    .ok();
    s.post(
        "/deploy",
        &json!({"filepath": "docs/board.lock", "content": "x"}),
    )
    .ok();
    s.assert_alive();
}

#[test]
fn deploy_refuses_board_files_the_board_would_read_as_damaged() {
    let s = Server::start();
    let base = s.base();
    let t = s.op_ok(
        json!({"op": "add", "task": {"description": "one"}}),
        "added",
    );
    let task = t["tasks"][0].clone();
    s.op_ok(
        json!({"op": "send", "agent": "c", "message": "hello"}),
        "message",
    );
    let line = |v: &Value| format!("{v}\n");
    let message = json!({"timestamp": "2026-01-01T00:00:00Z", "agent": "c", "message": "m"});
    let archived = json!({"archived_at": "2026-01-01T00:00:00Z",
        "totals": {"completed": 1, "cancelled": 0, "max_id": 5},
        "task": {"id": 5, "description": "old", "status": "completed"}});
    let twice = format!("[\n{task},\n{task}\n]\n");
    for (file, bad) in [
        // One id twice: two workers could be handed the same task.
        ("task-queue.json", twice.clone()),
        (
            "agent-comms.jsonl",
            format!("{}junk\n{}", line(&message), line(&message)),
        ),
        (
            "agent-comms.jsonl",
            format!("{}{}", line(&message), "{\"agent\": \"no time\"}\n"),
        ),
        // A last line without a newline would be read as cut off, and dropped.
        ("agent-comms.jsonl", message.to_string()),
        (
            "task-archive.jsonl",
            format!("{}not json\n", line(&archived)),
        ),
        ("task-archive.jsonl", line(&message)),
    ] {
        let path = base.join(file);
        let was = std::fs::read(&path).ok();
        let e = s
            .post("/deploy", &json!({"filepath": file, "content": bad}))
            .error(400);
        let msg = e["message"].as_str().unwrap();
        assert!(
            msg.contains(file) && msg.contains("damaged"),
            "{file} {bad:?}: {msg}"
        );
        assert_eq!(
            std::fs::read(&path).ok(),
            was,
            "{file} untouched by {bad:?}"
        );
    }
    // What the board reads whole is accepted.
    for (file, good) in [
        (
            "agent-comms.jsonl",
            format!("{}{}", line(&message), line(&message)),
        ),
        ("agent-comms.jsonl", String::new()),
        ("task-archive.jsonl", line(&archived)),
        ("task-queue.json", format!("[\n{task}\n]\n")),
    ] {
        s.post("/deploy", &json!({"filepath": file, "content": good}))
            .ok();
    }
    s.op_ok(json!({"op": "status"}), "status");
}

#[test]
fn a_read_of_a_damaged_board_answers_with_what_it_can_read() {
    let s = Server::start();
    let base = s.base();
    for d in ["kept", "lost"] {
        s.op_ok(json!({"op": "add", "task": {"description": d}}), "added");
    }
    let queue = base.join("task-queue.json");
    support::wait_checkpointed(&base);
    let text = std::fs::read_to_string(&queue).unwrap();
    std::fs::write(&queue, text.replace("\"lost\"", "\"lost")).unwrap();
    let e = s.op(json!({"op": "tasks"})).error(500);
    assert_eq!(
        (&e["kind"], &e["code"]),
        (&json!("damaged"), &json!(5)),
        "{e}"
    );
    assert_eq!(e["damaged"][0]["file"], "task-queue.json", "{e}");
    assert_eq!(e["reply"]["reply"], "tasks", "{e}");
    let tasks = e["reply"]["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 1, "{e}");
    assert_eq!(tasks[0]["description"], "kept", "{e}");
    // A change is refused, without a reply.
    let e = s.op(json!({"op": "claim", "worker": "w1"})).error(500);
    assert_eq!(e["kind"], "damaged", "{e}");
    assert!(e.get("reply").is_none(), "{e}");
}

// ---------------------------------------------------------------------------------------------
// /execute limits
// ---------------------------------------------------------------------------------------------

#[test]
fn execute_timeout_kills_the_process_group() {
    let mut s = Opts::new().arg("--exec-timeout").arg("1s").start();
    let started = Instant::now();
    let r = s.exec("sh -c 'sleep 30 & echo $! > grandchild.pid; wait'; echo never");
    let took = started.elapsed();
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["status"], "error", "{v}");
    assert_eq!(v["returncode"], -9, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("longer than"),
        "{v}"
    );
    assert!(!v["stdout"].as_str().unwrap().contains("never"));
    assert!(took >= Duration::from_millis(900), "{took:?}");
    assert!(
        took < Duration::from_secs(8),
        "the reply came {took:?} after a 1s timeout"
    );
    let pid: u32 = std::fs::read_to_string(s.base().join("grandchild.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    wait_for(
        &format!("grandchild {pid} to be killed"),
        Duration::from_secs(10),
        || !pid_alive(pid),
    );
    s.assert_alive();
}

#[test]
fn execute_kills_what_a_finished_command_left_behind() {
    let mut s = Server::start();
    let started = Instant::now();
    // The shell exits at once; its background child still holds stdout.
    let v = s.exec("sleep 30 & echo $! > bg.pid; echo done").ok();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(v["stdout"], "done\n");
    assert_eq!(v["returncode"], 0);
    let pid: u32 = std::fs::read_to_string(s.base().join("bg.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    wait_for(
        "the background child to be killed",
        Duration::from_secs(10),
        || !pid_alive(pid),
    );
    s.assert_alive();
}

#[test]
fn execute_output_is_capped() {
    let mut s = Opts::new().arg("--exec-max-output").arg("100").start();
    let v = s.exec("yes a | head -c 100000").ok();
    assert_eq!(v["stdout"].as_str().unwrap().len(), 100);
    assert_eq!(v["truncated"], true);
    let v = s.exec("yes e | head -c 5000 >&2").ok();
    assert_eq!(v["stderr"].as_str().unwrap().len(), 100);
    assert_eq!(v["stdout"], "");
    assert_eq!(v["truncated"], true);
    // Far more than a pipe holds: drained, not blocking.
    let t = Instant::now();
    let v = s.exec("head -c 20000000 /dev/zero | tr '\\0' z").ok();
    assert_eq!(v["stdout"], "z".repeat(100));
    assert!(t.elapsed() < Duration::from_secs(30));
    let v = s.exec("printf 0123456789").ok();
    assert_eq!(v["stdout"], "0123456789");
    assert_eq!(v["truncated"], false);
    let v = s.exec("head -c 100 /dev/zero | tr '\\0' q").ok();
    assert_eq!(v["truncated"], false, "exactly the cap is not cut");
    s.assert_alive();
}

#[test]
fn execute_concurrency_is_capped() {
    let mut s = Opts::new().arg("--exec-max-concurrent").arg("1").start();
    let addr = s.addr;
    let marker = s.base().join("a.started");
    let slow = std::thread::spawn(move || {
        let body = json!({"command": "touch a.started; sleep 3; echo slow"}).to_string();
        let req = request(
            addr,
            "POST",
            "/execute",
            &[("X-API-Key", KEY)],
            Some(body.as_bytes()),
        );
        let r = send_raw(addr, &req).unwrap();
        check_reply("POST", "/execute", &r);
        r
    });
    wait_for(
        "the first command to start",
        Duration::from_secs(30),
        || marker.exists(),
    );
    // A second slow command is refused at once, not queued.
    let t = Instant::now();
    let e = s.exec("sleep 3; echo second").error(429);
    assert!(
        e["message"].as_str().unwrap().contains("already running"),
        "{e}"
    );
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    let first = slow.join().unwrap().ok();
    assert_eq!(first["stdout"], "slow\n");
    // The slot is free again.
    assert_eq!(s.exec("echo third").ok()["stdout"], "third\n");
    s.assert_alive();
}

/// Live processes whose environment holds `VINE_TEST_TAG=` followed by `prefix` (what a command
/// starts after `export VINE_TEST_TAG=...`), with the rest of each tag.
fn tagged(prefix: &str) -> Vec<(u32, String)> {
    let needle = format!("VINE_TEST_TAG={prefix}");
    let mut found = vec![];
    for pid in pids() {
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        for var in env.split(|b| *b == 0) {
            let var = String::from_utf8_lossy(var);
            if let Some(rest) = var.strip_prefix(&needle)
                && pid_alive(pid)
            {
                found.push((pid, rest.to_string()));
            }
        }
    }
    found
}

/// Kills the tagged processes a test left behind, whatever the outcome of the test.
struct KillTagged(String);

impl Drop for KillTagged {
    fn drop(&mut self) {
        for (pid, _) in tagged(&self.0) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Ways a command can leave a process running past its own end.
const DETACHED: &[(&str, &str)] = &[
    ("setsid", "setsid sleep 300 &"),
    (
        "setsid, a shell ignoring signals",
        "setsid sh -c 'trap \"\" HUP INT TERM; sleep 300' &",
    ),
    ("nohup", "nohup sleep 300 >/dev/null 2>&1 &"),
    (
        "nohup and disown",
        "bash -c 'nohup sleep 300 >/dev/null 2>&1 & disown'",
    ),
    (
        "a double fork",
        "(sleep 300 &)\n(setsid sleep 300 </dev/null >/dev/null 2>&1 &)",
    ),
    (
        "a daemon with a new session in a subshell",
        "( setsid sh -c 'sleep 300 & sleep 300' >/dev/null 2>&1 & ) &",
    ),
];

#[test]
fn execute_kills_what_a_command_detached_when_it_returns() {
    let mut s = Server::start();
    let prefix = format!("detached-{}-", std::process::id());
    let _cleanup = KillTagged(prefix.clone());
    for (i, (how, cmd)) in DETACHED.iter().enumerate() {
        let tag = format!("{prefix}{i}");
        let started = Instant::now();
        let v = s
            .exec(&format!(
                "export VINE_TEST_TAG={tag}\n{cmd}\nsleep 0.2\necho done"
            ))
            .ok();
        assert_eq!(v["stdout"], "done\n", "{how}: {v}");
        assert_eq!(v["returncode"], 0, "{how}: {v}");
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{how}: the reply took {:?}",
            started.elapsed()
        );
        let left = tagged(&tag);
        assert!(
            left.is_empty(),
            "{how}: processes {left:?} outlived the request ({cmd})"
        );
    }
    s.assert_alive();
}

#[test]
fn execute_timeout_kills_what_a_command_detached() {
    let mut s = Opts::new().arg("--exec-timeout").arg("1s").start();
    let tag = format!("timeout-{}", std::process::id());
    let _cleanup = KillTagged(tag.clone());
    let detach: Vec<&str> = DETACHED.iter().map(|(_, c)| *c).collect();
    let started = Instant::now();
    let r = s.exec(&format!(
        "export VINE_TEST_TAG={tag}\n{}\necho before; echo before-err >&2\nsleep 300\necho never",
        detach.join("\n")
    ));
    let took = started.elapsed();
    let v = r.json();
    assert_eq!(v["status"], "error", "{v}");
    assert_eq!(v["returncode"], -9, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("longer than 1s"),
        "{v}"
    );
    assert_eq!(v["stdout"], "before\n", "the output read so far: {v}");
    assert_eq!(v["stderr"], "before-err\n", "{v}");
    assert!(
        took < Duration::from_secs(5),
        "the reply came {took:?} after a 1s timeout"
    );
    let left = tagged(&tag);
    assert!(left.is_empty(), "processes {left:?} outlived the timeout");
    s.assert_alive();
}

#[test]
fn execute_returns_the_output_of_a_command_whose_detached_child_holds_the_pipe() {
    let mut s = Server::start();
    let tag = format!("pipe-{}", std::process::id());
    let _cleanup = KillTagged(tag.clone());
    let started = Instant::now();
    // The detached shell keeps stdout and stderr open after the command's shell has exited
    // (which waits until it has surely left the process group).
    let v = s
        .exec(&format!(
            "export VINE_TEST_TAG={tag}; seq 1 3; echo warn >&2
             setsid sh -c 'echo > detached; exec sleep 300' &
             while [ ! -e detached ]; do sleep 0.01; done; exit 7"
        ))
        .json();
    assert_eq!(v["stdout"], "1\n2\n3\n", "{v}");
    assert_eq!(v["stderr"], "warn\n", "{v}");
    assert_eq!(v["returncode"], 7, "{v}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert!(tagged(&tag).is_empty());
    s.assert_alive();
}

#[test]
fn execute_concurrency_cap_covers_detached_processes() {
    const COMMANDS: usize = 10;
    const CAP: usize = 4;
    let mut s = Opts::new()
        .arg("--exec-max-concurrent")
        .arg(CAP.to_string())
        .start();
    let prefix = format!("cap-{}-", std::process::id());
    let _cleanup = KillTagged(prefix.clone());
    // Watch how many commands have processes alive at once.
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (done, prefix) = (done.clone(), prefix.clone());
        std::thread::spawn(move || {
            let mut most = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let commands: BTreeSet<String> =
                    tagged(&prefix).into_iter().map(|(_, t)| t).collect();
                most = most.max(commands.len());
                sleep(Duration::from_millis(5));
            }
            most
        })
    };
    let addr = s.addr;
    let clients: Vec<_> = (0..COMMANDS)
        .map(|i| {
            let tag = format!("{prefix}{i}");
            std::thread::spawn(move || {
                let body = json!({"command": format!(
                    "export VINE_TEST_TAG={tag}\n\
                     setsid sh -c 'while :; do sleep 0.05; done' >/dev/null 2>&1 &\n\
                     sleep 0.3; echo ran"
                )})
                .to_string();
                let req = request(
                    addr,
                    "POST",
                    "/execute",
                    &[("X-API-Key", KEY)],
                    Some(body.as_bytes()),
                );
                loop {
                    let r = send_raw(addr, &req).unwrap();
                    check_reply("POST", "/execute", &r);
                    if r.status != 429 {
                        return r;
                    }
                    sleep(Duration::from_millis(20));
                }
            })
        })
        .collect();
    for c in clients {
        assert_eq!(c.join().unwrap().ok()["stdout"], "ran\n");
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let most = watcher.join().unwrap();
    assert!(most >= 1, "the watcher never saw a command's processes");
    assert!(
        most <= CAP,
        "processes of {most} commands ran at once with --exec-max-concurrent {CAP}"
    );
    let left = tagged(&prefix);
    assert!(
        left.is_empty(),
        "processes {left:?} outlived their requests"
    );
    s.assert_alive();
}

#[test]
fn context_files_through_a_symlink_leading_outside_are_refused() {
    let mut s = Server::start();
    let (base, outside) = (s.base(), s.outside());
    std::fs::create_dir_all(base.join("docs")).unwrap();
    std::fs::write(base.join("docs/spec.md"), "spec\n").unwrap();
    std::os::unix::fs::symlink(&outside, base.join("out")).unwrap();
    std::os::unix::fs::symlink(outside.join("secret.txt"), base.join("docs/secret.md")).unwrap();
    std::os::unix::fs::symlink(base.join("docs"), base.join("alias")).unwrap();
    for path in ["out/secret.txt", "docs/secret.md", "out/sub/deeper.txt"] {
        let add = json!({"op": "add", "task": {"description": "t", "context_files": [path]}});
        let e = s.op(add).error(400);
        assert_eq!(e["kind"], "invalid", "{path}: {e}");
        assert!(
            e["message"].as_str().unwrap().contains("leads outside"),
            "{path}: {e}"
        );
        let plan = json!({"op": "add-plan", "tasks": [
            {"task": {"description": "fine"}},
            {"task": {"description": "t", "context_files": ["docs/spec.md", path]}}]});
        s.op(plan).error(400);
        // The command line says the same (exit 2), on the same board.
        let out = vine()
            .args(["--dir"])
            .arg(&base)
            .args(["add", "t", "--context", path])
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(2),
            "vine add --context {path}: {out:?}"
        );
    }
    let status = s.op_ok(json!({"op": "status"}), "status");
    assert_eq!(status["total"], 0, "nothing was added: {status}");
    // Context files inside the board, through a symlink or not, and files not written yet.
    for path in ["docs/spec.md", "alias/spec.md", "docs/later.md"] {
        s.op_ok(
            json!({"op": "add", "task": {"description": "t", "context_files": [path]}}),
            "added",
        );
    }
    s.assert_alive();
}

#[test]
fn execute_refuses_a_command_no_shell_can_run() {
    let mut s = Server::start();
    let e = s.exec("echo a\u{0}b").error(400);
    assert!(e["message"].as_str().unwrap().contains("NUL"), "{e}");
    s.exec("").error(400);
    s.exec(" \t\n").error(400);
    // The longest command the system can hand to `sh -c` runs; one byte more is refused.
    const MAX: usize = 128 * 1024 - 1;
    let longest = format!(":{}", " ".repeat(MAX - 1));
    assert_eq!(s.exec(&longest).ok()["returncode"], 0);
    let e = s.exec(&format!("{longest} ")).error(400);
    assert!(e["message"].as_str().unwrap().contains("at most"), "{e}");
    s.assert_alive();
}

#[test]
fn no_exec_switches_execute_off() {
    let mut s = Opts::new().arg("--no-exec").start();
    let e = s.exec("touch ran").error(403);
    assert!(e["message"].as_str().unwrap().contains("no-exec"), "{e}");
    assert!(!s.base().join("ran").exists());
    let t = s.call("GET", "/test", Auth::None, None).ok();
    assert_eq!(t["agentvine"]["exec"], false);
    // The rest still works.
    s.op_ok(json!({"op": "status"}), "status");
    s.assert_alive();
}

// ---------------------------------------------------------------------------------------------
// TLS
// ---------------------------------------------------------------------------------------------

#[test]
fn tls_with_a_self_signed_certificate() {
    let certs = tempfile::tempdir().unwrap();
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    let cert = certs.path().join("cert.pem");
    let key = certs.path().join("key.pem");
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let s = Opts::new()
        .arg("--tls-cert")
        .arg(cert.to_str().unwrap())
        .arg("--tls-key")
        .arg(key.to_str().unwrap())
        .start();
    let url = format!("https://127.0.0.1:{}", s.addr.port());

    // The CLI, trusting the certificate through VINE_CA_CERT.
    let run = |ca: Option<&Path>, args: &[&str]| {
        let mut c = vine();
        c.args(["--url", &url, "--json"])
            .args(args)
            .env("VINE_API_KEY", KEY)
            .env("VINE_RETRY_FOR", "2s")
            .env("VINE_TIMEOUT", "20s");
        if let Some(ca) = ca {
            c.env("VINE_CA_CERT", ca);
        }
        let out = c.output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, out, err) = run(Some(&cert), &["status"]);
    assert_eq!(code, 0, "vine status over HTTPS: {out} {err}");
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["total"], 0, "{v}");
    let (code, out, err) = run(Some(&cert), &["add", "over tls"]);
    assert_eq!(code, 0, "{out} {err}");
    // Without trusting the certificate: the server cannot be reached (exit 6).
    let (code, out, err) = run(None, &["status"]);
    assert_eq!(code, 6, "untrusted certificate: {out} {err}");

    // A client library request trusting the certificate.
    let pem = std::fs::read(&cert).unwrap();
    let roots: Vec<_> = ureq::tls::parse_pem(&pem)
        .filter_map(|i| match i {
            Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::new_with_certs(&roots))
                .build(),
        )
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into();
    let get = |path: &str, key: Option<&str>| -> (u16, Value) {
        let mut req = agent.get(format!("{url}{path}"));
        if let Some(k) = key {
            req = req.header("X-API-Key", k);
        }
        let mut r = req.call().unwrap();
        let status = r.status().as_u16();
        (status, r.body_mut().read_json().unwrap())
    };
    let (st, v) = get("/test", None);
    assert_eq!((st, v["agentvine"]["op"].as_str()), (200, Some("/v1/op")));
    let (st, v) = get("/read?filepath=task-queue.json", Some(KEY));
    assert_eq!(st, 200, "{v}");
    check_reply(
        "GET",
        "/read",
        &Resp {
            status: st,
            headers: vec![],
            body: v.to_string().into_bytes(),
        },
    );
    assert!(v["content"].as_str().unwrap().contains("over tls"));
    let (st, _) = get("/list", Some("wrong"));
    assert_eq!(st, 401);

    // Plain HTTP to the TLS port gets no answer but does no harm.
    let _ = send_raw(s.addr, &request(s.addr, "GET", "/test", &[], None));
    let (st, _) = get("/test", None);
    assert_eq!(st, 200, "still serving after a plain-HTTP request");
    let mut s = s;
    assert!(s.process.is_running());
}

/// `vine ask --wait` through a server: the waiting worker keeps its task past its lease and the
/// stale limit, shows as `waiting` (in a reply the document describes), and the answer given
/// through `/v1/op` ends the wait without taking the task back.
#[test]
fn a_remote_worker_waiting_for_an_answer_keeps_its_task() {
    let s = Server::start();
    std::fs::write(
        s.base().join("board.json"),
        r#"{"agentvine": 1, "settings": {"lease_secs": 2, "stale_after_secs": 2}}"#,
    )
    .unwrap();
    s.op_ok(json!({"op": "register", "worker": "w1"}), "worker");
    let added = s.op_ok(
        json!({"op": "add", "task": {"description": "ask first"}}),
        "added",
    );
    let id = added["tasks"][0]["id"].as_u64().unwrap();
    s.op_ok(json!({"op": "claim", "worker": "w1"}), "claimed");
    let claimed = Instant::now();
    let url = format!("http://{}", s.addr);
    let child = vine()
        .args([
            "--url",
            &url,
            "--json",
            "ask",
            "Which port?",
            "--worker",
            "w1",
        ])
        .args(["--task", &id.to_string(), "--wait", "--timeout", "20s"])
        .env("VINE_API_KEY", KEY)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = ChildGuard(Some(child));
    let w1 = || {
        s.op_ok(json!({"op": "workers"}), "workers")["workers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["id"] == "w1")
            .cloned()
            .unwrap()
    };
    wait_for("w1 to wait", Duration::from_secs(15), || {
        w1()["state"] == "waiting"
    });
    let seq = w1()["waiting"]["question"].as_u64().unwrap();
    let left = Duration::from_secs(4).saturating_sub(claimed.elapsed());
    std::thread::sleep(left);
    let r = s.op_ok(json!({"op": "requeue-stale"}), "requeued");
    assert_eq!(r["tasks"], json!([]), "a waiting worker keeps its task");
    s.op_ok(
        json!({"op": "answer", "agent": "coordinator", "question": seq, "answer": "5000"}),
        "message",
    );
    let out = child.0.take().unwrap().wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["answer"]["message"], "5000", "{v}");
    let done = s.op_ok(
        json!({"op": "complete", "task": id, "worker": "w1", "attempt": 1}),
        "task",
    );
    assert_eq!(done["task"]["status"], "completed", "{done}");
    assert_eq!(done["task"]["attempts"], 1, "never taken back: {done}");
}

// ---------------------------------------------------------------------------------------------
// GET /metrics: the board's figures for Prometheus
// ---------------------------------------------------------------------------------------------

/// One sample line of the text format: `name{label="value",...} value`.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the OpenMetrics text format strictly: every line is `# HELP name text`,
/// `# TYPE name type`, `# UNIT name unit`, the final `# EOF`, or a sample; every sample belongs
/// to a family whose HELP and TYPE came before it. Returns the samples and each family's type.
fn parse_exposition(text: &str) -> (Vec<Sample>, BTreeMap<String, String>) {
    let is_name = |s: &str| {
        !s.is_empty()
            && s.chars().enumerate().all(|(i, c)| {
                c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
            })
    };
    let mut help = BTreeSet::new();
    let mut types = BTreeMap::new();
    let mut samples = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.last(), Some(&"# EOF"), "the text ends with # EOF");
    for line in &lines[..lines.len() - 1] {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kind, name, what) = (parts.next(), parts.next(), parts.next());
            let name = name.unwrap_or_else(|| panic!("a comment names its metric: {line}"));
            assert!(is_name(name), "{line}");
            let what = what.unwrap_or_else(|| panic!("{line}: nothing after the name"));
            match kind {
                Some("HELP") => assert!(help.insert(name.to_string()), "HELP twice: {line}"),
                Some("TYPE") => {
                    assert!(
                        [
                            "counter",
                            "gauge",
                            "histogram",
                            "summary",
                            "info",
                            "unknown"
                        ]
                        .contains(&what),
                        "{line}"
                    );
                    types.insert(name.to_string(), what.to_string());
                }
                Some("UNIT") => {}
                _ => panic!("not a known comment: {line}"),
            }
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("not `name value`: {line}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|e| panic!("{line}: bad value ({e})")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series, BTreeMap::new()),
            Some((name, rest)) => {
                let inner = rest
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("{line}: labels do not close"));
                let mut labels = BTreeMap::new();
                for pair in inner.split(',') {
                    let (k, v) = pair
                        .split_once('=')
                        .unwrap_or_else(|| panic!("{line}: label without ="));
                    assert!(is_name(k), "{line}: label name {k}");
                    let v = v
                        .strip_prefix('"')
                        .and_then(|v| v.strip_suffix('"'))
                        .unwrap_or_else(|| panic!("{line}: label value not quoted"));
                    labels.insert(k.to_string(), v.to_string());
                }
                (name, labels)
            }
        };
        assert!(is_name(name), "{line}: metric name");
        let family = ["_bucket", "_sum", "_count", "_total"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| types.contains_key(*f)))
            .unwrap_or(name);
        assert!(
            types.contains_key(family) && help.contains(family),
            "{line}: no HELP and TYPE for {family} before it"
        );
        samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    (samples, types)
}

#[test]
fn metrics_are_prometheus_text_that_matches_the_board() {
    let s = Server::start();
    for d in ["one", "two", "three"] {
        s.op_ok(json!({"op": "add", "task": {"description": d}}), "added");
    }
    let claim = s.op_ok(json!({"op": "claim", "worker": "w1"}), "claimed");
    let id = claim["claim"]["task"]["id"].as_u64().unwrap();
    s.op_ok(
        json!({"op": "complete", "task": id, "worker": "w1", "result": "done"}),
        "task",
    );
    s.op_ok(
        json!({"op": "ask", "agent": "w1", "question": "which?"}),
        "message",
    );

    // With the key in the header or as a bearer token (as Prometheus sends it); not without.
    let r = s.get("/metrics");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("application/openmetrics-text"),
        "{:?}",
        r.header("content-type")
    );
    let bearer = format!("Bearer {KEY}");
    let b = s.call(
        "GET",
        "/metrics",
        Auth::Header("Authorization", &bearer),
        None,
    );
    assert_eq!(b.status, 200);
    s.refused("GET", "/metrics", Auth::None, None);
    s.refused("GET", "/metrics", Auth::Header("X-API-Key", "wrong"), None);

    let text = String::from_utf8(r.body).unwrap();
    let (samples, types) = parse_exposition(&text);
    let value = |name: &str, labels: &[(&str, &str)]| -> f64 {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        samples
            .iter()
            .find(|s| s.name == name && s.labels == want)
            .unwrap_or_else(|| panic!("no sample {name}{labels:?} in:\n{text}"))
            .value
    };
    assert_eq!(types["vine_tasks"], "gauge");
    assert_eq!(types["vine_tasks_completed"], "counter");
    assert_eq!(types["vine_claim_to_complete_seconds"], "histogram");
    assert_eq!(value("vine_tasks", &[("status", "pending")]), 2.0);
    assert_eq!(value("vine_tasks", &[("status", "in_progress")]), 0.0);
    assert_eq!(value("vine_tasks", &[("status", "completed")]), 1.0);
    assert_eq!(value("vine_tasks", &[("status", "failed")]), 0.0);
    assert_eq!(value("vine_workers", &[("state", "idle")]), 1.0);
    assert_eq!(value("vine_workers", &[("state", "working")]), 0.0);
    assert_eq!(value("vine_open_questions", &[]), 1.0);
    assert_eq!(value("vine_tasks_completed_total", &[]), 1.0);
    assert_eq!(value("vine_tasks_failed_total", &[]), 0.0);
    assert_eq!(value("vine_tasks_per_hour", &[]), 1.0 / 24.0);
    assert_eq!(value("vine_failure_rate", &[]), 0.0);
    for h in [
        "vine_queue_latency_seconds",
        "vine_claim_to_complete_seconds",
    ] {
        assert_eq!(value(&format!("{h}_count"), &[]), 1.0, "{h}");
        // Buckets are cumulative, end at +Inf with the count, and the one task took under 10 s.
        let buckets: Vec<(String, f64)> = samples
            .iter()
            .filter(|s| s.name == format!("{h}_bucket"))
            .map(|s| (s.labels["le"].clone(), s.value))
            .collect();
        assert_eq!(buckets.len(), 10, "{buckets:?}");
        assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{buckets:?}");
        assert_eq!(buckets.last().unwrap(), &("+Inf".to_string(), 1.0));
        assert_eq!(buckets[0], ("10.0".to_string(), 1.0), "{buckets:?}");
        assert!(value(&format!("{h}_sum"), &[]) < 10.0);
    }
    // No answer yet: no response time measured.
    assert_eq!(value("vine_human_response_seconds_count", &[]), 0.0);

    // The same figures as the `metrics` read.
    let m = s.op_ok(json!({"op": "metrics"}), "metrics")["metrics"].clone();
    assert_eq!(m["tasks"]["pending"], 2);
    assert_eq!(m["all_time"]["claim_to_complete"]["count"], 1);
    assert_eq!(m["open_questions"], 1);
}

/// The Claude runs `vine pool` records (`record-run`, as the pool sends it) show on
/// `/metrics`: spend, runs, turns and tokens by worker, the live sessions, and the session
/// reuse rate (task attempts started in a session that had done an earlier one).
#[test]
fn metrics_show_the_claude_spend_by_worker_and_the_session_reuse_rate() {
    let s = Server::start();
    let ids: Vec<u64> = ["a", "b", "c"]
        .iter()
        .map(|d| {
            s.op_ok(json!({"op": "add", "task": {"description": d}}), "added")["tasks"][0]["id"]
                .as_u64()
                .unwrap()
        })
        .collect();
    let before = String::from_utf8(s.get("/metrics").body).unwrap();
    assert!(!before.contains("vine_claude"), "no run yet: {before}");
    let run = |session: &str, worker: &str, task: u64, resumed: bool, cost: f64, out: u64| {
        s.op_ok(
            json!({"op": "record-run", "session": session, "worker": worker, "task": task,
                "attempt": 1, "resumed": resumed, "turns": 2, "cost_usd": cost,
                "outcome": "success", "why": "test",
                "usage": {"input_tokens": 10, "output_tokens": out,
                          "cache_read_input_tokens": 100}}),
            "session",
        );
    };
    // pool-1: task a, then b resumed in the same session; pool-2: task c alone, parked and
    // resumed on the same attempt (not a new start).
    run("s1", "pool-1", ids[0], false, 0.25, 5);
    run("s1", "pool-1", ids[1], true, 0.5, 7);
    run("s2", "pool-2", ids[2], false, 0.125, 3);
    run("s2", "pool-2", ids[2], true, 0.0625, 1);
    s.op_ok(
        json!({"op": "end-session", "session": "s2", "reason": "done"}),
        "session-ended",
    );

    let text = String::from_utf8(s.get("/metrics").body).unwrap();
    let (samples, types) = parse_exposition(&text);
    let value = |name: &str, labels: &[(&str, &str)]| -> f64 {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        samples
            .iter()
            .find(|s| s.name == name && s.labels == want)
            .unwrap_or_else(|| panic!("no sample {name}{labels:?} in:\n{text}"))
            .value
    };
    assert_eq!(types["vine_claude_cost_usd"], "counter");
    assert_eq!(types["vine_claude_session_reuse_rate"], "gauge");
    let p1 = [("worker", "pool-1")];
    let p2 = [("worker", "pool-2")];
    assert_eq!(value("vine_claude_cost_usd_total", &p1), 0.75);
    assert_eq!(value("vine_claude_cost_usd_total", &p2), 0.1875);
    assert_eq!(value("vine_claude_runs_total", &p1), 2.0);
    assert_eq!(value("vine_claude_runs_total", &p2), 2.0);
    assert_eq!(value("vine_claude_turns_total", &p1), 4.0);
    assert_eq!(value("vine_claude_output_tokens_total", &p1), 12.0);
    assert_eq!(value("vine_claude_output_tokens_total", &p2), 4.0);
    assert_eq!(
        value(
            "vine_claude_input_tokens_total",
            &[("worker", "pool-1"), ("kind", "uncached")]
        ),
        20.0
    );
    assert_eq!(
        value(
            "vine_claude_input_tokens_total",
            &[("worker", "pool-2"), ("kind", "cache_read")]
        ),
        200.0
    );
    assert_eq!(value("vine_claude_live_sessions", &[]), 1.0);
    // Three task starts (a, b, c); b reused s1; c's second run resumed the same attempt.
    assert_eq!(value("vine_claude_task_starts_total", &[]), 3.0);
    assert_eq!(value("vine_claude_task_starts_reused_total", &[]), 1.0);
    assert_eq!(value("vine_claude_session_reuse_rate", &[]), 1.0 / 3.0);
    // The `metrics` read carries the same figures.
    let m = s.op_ok(json!({"op": "metrics"}), "metrics")["metrics"].clone();
    assert_eq!(m["claude"]["reuse"]["task_starts"], 3);
    assert_eq!(m["claude"]["by_worker"]["pool-1"]["runs"], 2);
}
