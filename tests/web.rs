//! HTTP tests of the control room against a real `vine serve` (and `vine dashboard`) on
//! 127.0.0.1: logging in with the right and a wrong key, the session cookie's flags, the
//! security headers (the strict CSP) on every page, forms refused without the right token or
//! from another site (changing nothing), no key or session id in any URL, board text escaped,
//! the live-update stream, answering a question that a real `vine ask --wait` waits on, and
//! `vine dashboard` printing a URL that serves the overview.
//!
//! Requests are plain HTTP/1.1 over a `TcpStream`, so every header is seen as sent.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::{
    CSP, ChildGuard, ISOLATED, Resp, Run, Server, TestBoard, enc, run, send, vine_without,
};
use tempfile::TempDir;

const KEY: &str = "control-room-test-key-0123456789";
const HOSTILE: &str = "<script>window.pwned=1</script><img src=x onerror=alert(1)>";

// ---------------------------------------------------------------------------------------------
// HTTP over a TcpStream
// ---------------------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------------------
// A control room to test
// ---------------------------------------------------------------------------------------------

/// A `vine serve` (with or without a key) on a fresh board.
struct Room {
    server: Server,
    key: Option<&'static str>,
    _tmp: TempDir,
}

/// A browser's session: its cookie and its form token.
#[derive(Clone)]
struct Session {
    id: String,
    csrf: String,
}

impl Room {
    fn start(key: Option<&'static str>) -> Room {
        Room::start_with(key, &[])
    }

    fn start_with(key: Option<&'static str>, args: &[&str]) -> Room {
        let tmp = tempfile::tempdir().unwrap();
        let mut flags = vec!["--no-exec"];
        flags.extend_from_slice(args);
        let env: Vec<(&str, &str)> = key.map(|k| ("VINE_API_KEY", k)).into_iter().collect();
        let server = Server::start(&tmp.path().join("base"), &flags, &env);
        Room {
            server,
            key,
            _tmp: tmp,
        }
    }

    fn host(&self) -> String {
        self.server.addr.to_string()
    }

    fn get(&self, path: &str, session: Option<&Session>) -> Resp {
        self.get_with(path, session, &[])
    }

    fn get_with(&self, path: &str, session: Option<&Session>, headers: &[(&str, &str)]) -> Resp {
        let mut req = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            self.host()
        );
        if let Some(s) = session {
            req.push_str(&format!("Cookie: vine_session={}\r\n", s.id));
        }
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        send(self.server.addr, &req)
    }

    fn post(
        &self,
        path: &str,
        session: Option<&Session>,
        form: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> Resp {
        let body: Vec<String> = form
            .iter()
            .map(|(k, v)| format!("{k}={}", enc(v)))
            .collect();
        let body = body.join("&");
        let mut req = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
            self.host(),
            body.len()
        );
        if let Some(s) = session {
            req.push_str(&format!("Cookie: vine_session={}\r\n", s.id));
        }
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        req.push_str(&body);
        send(self.server.addr, &req)
    }

    /// A new browser session, signed in (with the key when the server has one).
    fn sign_in(&self) -> Session {
        let first = self.get("/login", None);
        let id = first.session_id().expect("a session cookie");
        let anonymous = Session {
            id,
            csrf: if self.key.is_some() {
                first.csrf()
            } else {
                String::new()
            },
        };
        let Some(key) = self.key else {
            // No key: the session is signed in already; its token is in every form (read it
            // with `token` once a page has one).
            self.get("/", Some(&anonymous)).expect(200);
            return anonymous;
        };
        let r = self.post(
            "/login",
            Some(&anonymous),
            &[("csrf", &anonymous.csrf), ("key", key)],
            &[],
        );
        r.expect(303);
        assert_eq!(r.header("location"), Some("/"));
        let id = r.session_id().expect("a new session on login");
        let s = Session {
            id,
            csrf: String::new(),
        };
        let page = self.get("/", Some(&s));
        page.expect(200);
        Session {
            csrf: page.csrf(),
            ..s
        }
    }

    /// The session's form token, from the questions page (which has a form when a question
    /// is open).
    fn token(&self, s: &Session) -> Session {
        Session {
            id: s.id.clone(),
            csrf: self.get("/questions", Some(s)).csrf(),
        }
    }

    /// `vine --url URL ARGS` with the room's key.
    fn vine(&self, args: &[&str]) -> Run {
        run(&mut self.vine_cmd(args))
    }

    fn vine_cmd(&self, args: &[&str]) -> Command {
        let mut c = vine_without(ISOLATED);
        if let Some(k) = self.key {
            c.env("VINE_API_KEY", k);
        }
        c.arg("--url").arg(&self.server.url).args(args);
        c.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    fn ok(&self, args: &[&str]) -> serde_json::Value {
        let r = self.vine(&[args, &["--json"]].concat());
        assert_eq!(r.code, 0, "vine {args:?}: {r:?}");
        r.json()
    }

    /// The board's message log, as bytes.
    fn log(&self) -> Vec<u8> {
        std::fs::read(self.server.root.join("agent-comms.jsonl")).unwrap_or_default()
    }
}

/// Checks the headers every control-room reply carries.
fn assert_secure_headers(r: &Resp, what: &str) {
    assert_eq!(
        r.header("content-security-policy"),
        Some(CSP),
        "{what}: the CSP"
    );
    assert_eq!(
        r.header("x-content-type-options"),
        Some("nosniff"),
        "{what}"
    );
    assert_eq!(r.header("referrer-policy"), Some("same-origin"), "{what}");
    assert_eq!(r.header("x-frame-options"), Some("DENY"), "{what}");
}

/// Checks that a page has no inline script, style or event handler (which the CSP would
/// block anyway, breaking the page).
fn assert_no_inline_code(body: &str, what: &str) {
    let lower = body.to_ascii_lowercase();
    assert!(!lower.contains(" style="), "{what}: an inline style");
    assert!(!lower.contains("<style"), "{what}: a style element");
    for (i, _) in lower.match_indices("<script") {
        let tag = &lower[i..i + lower[i..].find('>').unwrap()];
        assert!(
            tag.contains(" src=\"/assets/"),
            "{what}: inline script {tag}"
        );
        assert!(
            lower[i..].starts_with(&format!("{tag}></script>")),
            "{what}: script body"
        );
    }
    for handler in [
        " onclick=",
        " onload=",
        " onerror=",
        " onsubmit=",
        "javascript:",
    ] {
        assert!(!lower.contains(handler), "{what}: {handler}");
    }
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn login_with_the_right_key_signs_in_and_a_wrong_key_does_not() {
    let room = Room::start(Some(KEY));

    // Not signed in: every page sends the browser to the login form, with a session cookie
    // that carries its flags.
    let r = room.get("/", None);
    r.expect(303);
    assert_eq!(r.header("location"), Some("/login"));
    let cookie = r.session_cookie().expect("a session cookie").to_string();
    let attrs: Vec<&str> = cookie.split(';').map(str::trim).skip(1).collect();
    assert!(attrs.contains(&"HttpOnly"), "{cookie}");
    assert!(attrs.contains(&"SameSite=Strict"), "{cookie}");
    assert!(attrs.contains(&"Path=/"), "{cookie}");
    assert!(
        !attrs.contains(&"Secure"),
        "no Secure over plain HTTP: {cookie}"
    );
    let id = r.session_id().unwrap();
    assert_eq!(id.len(), 64, "256 bits in hex: {id}");
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    room.get("/questions", None).expect(303);
    room.get_with("/events", None, &[]).expect(401);

    let login = room.get("/login", None);
    login.expect(200);
    assert!(login.body.contains("type=\"password\""), "{}", login.body);
    let anon = Session {
        id: login.session_id().unwrap(),
        csrf: login.csrf(),
    };

    // A wrong key: refused (after the throttle's delay), the session still signed out.
    let started = Instant::now();
    let r = room.post(
        "/login",
        Some(&anon),
        &[("csrf", &anon.csrf), ("key", "nope")],
        &[],
    );
    r.expect(401);
    assert!(
        started.elapsed() >= Duration::from_millis(90),
        "the bad-key throttle holds it"
    );
    assert!(r.body.contains("not the key"), "{}", r.body);
    assert!(r.session_id().is_none(), "no new session for a wrong key");
    room.get("/", Some(&anon)).expect(303);
    // The login form needs its token too.
    room.post("/login", Some(&anon), &[("key", KEY)], &[])
        .expect(403);
    room.get("/", Some(&anon)).expect(303);

    // The right key: a new session id (the old one is dropped), signed in.
    let r = room.post(
        "/login",
        Some(&anon),
        &[("csrf", &anon.csrf), ("key", KEY)],
        &[],
    );
    r.expect(303);
    let signed = Session {
        id: r.session_id().expect("a new session"),
        csrf: String::new(),
    };
    assert_ne!(signed.id, anon.id);
    let page = room.get("/", Some(&signed));
    page.expect(200);
    assert!(page.body.contains("<h1>Overview</h1>"), "{}", page.body);
    assert!(page.body.contains("Log out"));
    room.get("/", Some(&anon)).expect(303);
    room.get("/login", Some(&signed)).expect(303);

    // The API still wants its key: a session cookie is no key.
    let r = room.get("/list", Some(&signed));
    r.expect(401);

    // Logging out ends the session.
    let csrf = page.csrf();
    let r = room.post("/logout", Some(&signed), &[("csrf", &csrf)], &[]);
    r.expect(303);
    assert_eq!(r.header("location"), Some("/login"));
    assert!(r.session_cookie().unwrap().contains("Max-Age=0"));
    room.get("/", Some(&signed)).expect(303);
}

#[test]
fn every_page_has_the_security_headers_and_no_inline_code() {
    let room = Room::start(Some(KEY));
    let s = room.sign_in();
    room.ok(&["add", "a task"]);
    room.ok(&["ask", "what now?", "--as", "w1"]);

    let page = room.get("/", Some(&s));
    let css = page.body.split("href=\"/assets/").nth(1).unwrap();
    let css = format!("/assets/{}", &css[..css.find('"').unwrap()]);
    let js = page.body.split("src=\"/assets/").nth(1).unwrap();
    let js = format!("/assets/{}", &js[..js.find('"').unwrap()]);
    for path in ["/", "/questions", "/login"] {
        let r = room.get(path, Some(&s));
        assert!(matches!(r.status, 200 | 303), "{path}: {}", r.status);
        assert_secure_headers(&r, path);
        assert_eq!(r.header("cache-control"), Some("no-store"), "{path}");
        if r.status == 200 {
            assert!(r.header("content-type").unwrap().starts_with("text/html"));
            assert_no_inline_code(&r.body, path);
        }
    }
    // Signed out, refused and login pages too.
    let r = room.get("/login", None);
    assert_secure_headers(&r, "login");
    assert_no_inline_code(&r.body, "login");
    let r = room.post("/questions/1/answer", Some(&s), &[("answer", "x")], &[]);
    r.expect(403);
    assert_secure_headers(&r, "a refused form");

    // The assets: long cache, content type, ETag revalidation.
    for (path, ty) in [(&css, "text/css"), (&js, "text/javascript")] {
        let r = room.get(path, None);
        r.expect(200);
        assert_secure_headers(&r, path);
        assert!(r.header("content-type").unwrap().starts_with(ty), "{path}");
        assert!(
            r.header("cache-control").unwrap().contains("immutable"),
            "{path}"
        );
        let etag = r.header("etag").expect("an ETag").to_string();
        room.get_with(path, None, &[("If-None-Match", &etag)])
            .expect(304);
    }
    room.get("/assets/app-0000000000000000.css", None)
        .expect(404);
    room.get("/assets/../list", None).expect(404);
    // The script uses no eval and writes no HTML of its own.
    let script = room.get(&js, None).body;
    for sink in [
        "eval(",
        "innerHTML =",
        "outerHTML =",
        "insertAdjacentHTML",
        "document.write",
    ] {
        assert!(!script.contains(sink), "the script uses {sink}");
    }
}

/// A form post: what it is, its fields, its extra headers, its session.
type Attempt<'a> = (
    &'a str,
    Vec<(&'a str, &'a str)>,
    Vec<(&'a str, &'a str)>,
    Option<&'a Session>,
);

#[test]
fn forms_without_the_right_token_or_from_another_site_change_nothing() {
    let room = Room::start(Some(KEY));
    let s = room.sign_in();
    let other = room.sign_in();
    let q = room.ok(&["ask", "which database?", "--as", "w1"]);
    let seq = q["message"]["seq"].as_u64().unwrap();
    let path = format!("/questions/{seq}/answer");
    let before = room.log();
    let origin = format!("http://{}", room.host());

    let refused: Vec<Attempt> = vec![
        ("no token", vec![("answer", "postgres")], vec![], Some(&s)),
        (
            "a wrong token",
            vec![("csrf", "00ff"), ("answer", "postgres")],
            vec![],
            Some(&s),
        ),
        (
            "another session's token",
            vec![("csrf", &other.csrf), ("answer", "postgres")],
            vec![],
            Some(&s),
        ),
        (
            "a cross-origin Origin",
            vec![("csrf", &s.csrf), ("answer", "postgres")],
            vec![("Origin", "http://evil.example")],
            Some(&s),
        ),
        (
            "Origin null",
            vec![("csrf", &s.csrf), ("answer", "postgres")],
            vec![("Origin", "null")],
            Some(&s),
        ),
        (
            "a cross-site fetch",
            vec![("csrf", &s.csrf), ("answer", "postgres")],
            vec![("Sec-Fetch-Site", "cross-site")],
            Some(&s),
        ),
        (
            "no session",
            vec![("csrf", &s.csrf), ("answer", "postgres")],
            vec![],
            None,
        ),
    ];
    for (what, form, headers, session) in &refused {
        let r = room.post(&path, *session, form, headers);
        assert_eq!(r.status, 403, "{what}: {r:#?}");
        assert_secure_headers(&r, what);
        assert_eq!(room.log(), before, "{what} changed the board");
    }
    let open = room.ok(&["questions"]);
    assert_eq!(open["questions"].as_array().unwrap().len(), 1);

    // The same form from the page itself goes through.
    let r = room.post(
        &path,
        Some(&s),
        &[
            ("csrf", &s.csrf),
            ("answer", "postgres"),
            ("back", "/questions"),
        ],
        &[("Origin", &origin), ("Sec-Fetch-Site", "same-origin")],
    );
    r.expect(303);
    assert_eq!(r.header("location"), Some("/questions"));
    let open = room.ok(&["questions"]);
    assert_eq!(open["questions"].as_array().unwrap().len(), 0, "{open}");
    // The flash says so once.
    let page = room.get("/questions", Some(&s));
    assert!(
        page.body
            .contains(&format!("Answer to question {seq} sent."))
    );
    assert!(page.body.contains("postgres"));
    let again = room.get("/questions", Some(&s));
    assert!(!again.body.contains("sent."));
}

#[test]
fn no_key_or_session_id_appears_in_a_page_or_url() {
    let room = Room::start(Some(KEY));
    let s = room.sign_in();
    room.ok(&["add", "a task"]);
    room.ok(&["ask", "ok?", "--as", "w1"]);
    for path in ["/", "/questions", "/login", "/nope"] {
        let r = room.get(path, Some(&s));
        for (name, value) in &r.headers {
            if !name.eq_ignore_ascii_case("set-cookie") {
                assert!(
                    !value.contains(KEY) && !value.contains(&s.id),
                    "{path}: header {name}"
                );
            }
        }
        assert!(!r.body.contains(KEY), "{path}: the key in the page");
        assert!(
            !r.body.contains(&s.id),
            "{path}: the session id in the page"
        );
    }
    // The login form posts the key in the body, never in the URL.
    let login = room.get("/login", None);
    assert!(
        login.body.contains("method=\"post\" action=\"/login\""),
        "{}",
        login.body
    );
    // A key in a query string signs nobody in.
    let anon_id = login.session_id().unwrap();
    let r = room.get(
        &format!("/?key={KEY}"),
        Some(&Session {
            id: anon_id,
            csrf: String::new(),
        }),
    );
    r.expect(303);
}

#[test]
fn board_text_is_escaped() {
    let room = Room::start(None);
    let s = room.sign_in();
    let added = room.ok(&["add", HOSTILE]);
    let id = added["tasks"][0]["id"].as_u64().unwrap();
    room.ok(&["ask", HOSTILE, "--as", "w1", "--task", &id.to_string()]);
    room.ok(&["msg", "send", HOSTILE, "--as", "w1"]);
    for path in ["/", "/questions"] {
        let r = room.get(path, Some(&s));
        r.expect(200);
        assert!(
            !r.body.contains("<script>window.pwned"),
            "{path}: {}",
            r.body
        );
        assert!(!r.body.contains("<img src=x"), "{path}");
        assert!(
            r.body
                .contains("&lt;script&gt;window.pwned=1&lt;/script&gt;"),
            "{path}"
        );
        assert_eq!(
            r.body.matches("<script").count(),
            1,
            "{path}: only the page's own script"
        );
    }
}

#[test]
fn without_a_key_no_login_is_needed_but_forms_still_need_their_token() {
    let room = Room::start(None);
    let r = room.get("/", None);
    r.expect(200);
    assert!(r.session_id().is_some(), "a session for the form token");
    assert!(!r.body.contains("Log out"));
    room.get("/login", None).expect(303);
    let s = room.sign_in();
    let q = room.ok(&["ask", "go?", "--as", "w1"]);
    let seq = q["message"]["seq"].as_u64().unwrap();
    let s = room.token(&s);
    let before = room.log();
    room.post(
        &format!("/questions/{seq}/answer"),
        Some(&s),
        &[("answer", "yes")],
        &[],
    )
    .expect(403);
    assert_eq!(room.log(), before);
    room.post(
        &format!("/questions/{seq}/answer"),
        Some(&s),
        &[
            ("csrf", &s.csrf),
            ("answer", "yes"),
            ("agent", "alice"),
            ("back", "/"),
        ],
        &[],
    )
    .expect(303);
    let all = room.ok(&["questions", "--all"]);
    let answer = &all["questions"][0]["answers"][0];
    assert_eq!(answer["message"], "yes");
    assert_eq!(answer["agent"], "alice");
    // A bad answer is refused by the op, said in the flash, and changes nothing.
    let before = room.log();
    let r = room.post(
        &format!("/questions/{}/answer", seq + 100),
        Some(&s),
        &[("csrf", &s.csrf), ("answer", "lost")],
        &[],
    );
    r.expect(303);
    assert_eq!(room.log(), before);
    let page = room.get("/questions", Some(&s));
    assert!(page.body.contains("was not answered"), "{}", page.body);
}

#[test]
fn the_overview_shows_tasks_workers_questions_and_events() {
    let room = Room::start(None);
    let s = room.sign_in();
    room.ok(&["add", "ship the release", "--priority", "high"]);
    room.ok(&["add", "write notes"]);
    room.ok(&["register", "--worker", "w1"]);
    let claim = room.ok(&["claim", "--worker", "w1"]);
    let id = claim["claim"]["task"]["id"].as_u64().unwrap();
    room.ok(&[
        "ask",
        "which branch?",
        "--worker",
        "w1",
        "--task",
        &id.to_string(),
    ]);
    let r = room.get("/", Some(&s));
    r.expect(200);
    let body = &r.body;
    for needle in [
        "Open questions",
        "which branch?",
        "ship the release",
        "Queue depth by priority",
        "w1",
        "badge s-working",
        "Recent events",
        &format!("href=\"/tasks/{id}\""),
        "Figures",
    ] {
        assert!(
            body.contains(needle),
            "{needle:?} missing from the overview:\n{body}"
        );
    }
    // Open questions come first.
    assert!(body.find("Open questions").unwrap() < body.find("Queue depth").unwrap());
}

#[test]
fn the_event_stream_says_when_the_board_changes() {
    let room = Room::start(Some(KEY));
    let s = room.sign_in();
    let mut stream = TcpStream::connect(room.server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET /events HTTP/1.1\r\nHost: {}\r\nCookie: vine_session={}\r\n\r\n",
        room.host(),
        s.id
    )
    .unwrap();
    let mut reader = BufReader::new(stream);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line == "\r\n" || line.is_empty() {
            break;
        }
        head.push_str(&line);
    }
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/event-stream"),
        "{head}"
    );
    assert!(head.contains(CSP), "{head}");
    // A question (a log append only) and a task (the queue) each make an event.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
            if line.contains("event: change") {
                let _ = tx.send(Instant::now());
            }
            line.clear();
        }
    });
    // Each is one event: the checkpoint that rewrites the board's files a moment later holds
    // the same board, and is not a second change.
    let journal = room.server.root.join("board.journal");
    for args in [&["ask", "q?", "--as", "w1"][..], &["add", "t"][..]] {
        let sent = Instant::now();
        room.ok(args);
        let seen = rx
            .recv_timeout(Duration::from_secs(2))
            .unwrap_or_else(|_| panic!("no event within 2 s of {args:?}"));
        assert!(seen >= sent);
        let checkpointed = eventually(Duration::from_secs(5), || {
            // The header alone, before the room for records (zero bytes).
            std::fs::read_to_string(&journal)
                .is_ok_and(|j| j.trim_end_matches('\0').lines().count() == 1)
        });
        assert!(checkpointed, "no checkpoint after {args:?}");
        // The checkpoint's files settle, then the stream's coalescing gap passes.
        std::thread::sleep(Duration::from_millis(600));
        // A checkpoint made beside the server (`vine compact` on the directory) is none
        // either.
        let compact = run(vine_without(ISOLATED)
            .arg("--dir")
            .arg(&room.server.root)
            .args(["compact", "--json"]));
        assert_eq!(compact.code, 0, "{compact:?}");
        std::thread::sleep(Duration::from_millis(600));
        let more: Vec<Instant> = rx.try_iter().collect();
        assert!(
            more.is_empty(),
            "{} more events after {args:?} (at {:?} after it)",
            more.len(),
            more.iter().map(|t| *t - sent).collect::<Vec<_>>()
        );
    }
    // A stream opened with an old version reports a change at once.
    let r = {
        let mut s2 = TcpStream::connect(room.server.addr).unwrap();
        s2.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(
            s2,
            "GET /events?since=0-0 HTTP/1.1\r\nHost: {}\r\nCookie: vine_session={}\r\n\r\n",
            room.host(),
            s.id
        )
        .unwrap();
        let mut buf = vec![0u8; 4096];
        let mut got = String::new();
        let start = Instant::now();
        while !got.contains("event: change") && start.elapsed() < Duration::from_secs(3) {
            match s2.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.push_str(&String::from_utf8_lossy(&buf[..n])),
            }
        }
        got
    };
    assert!(r.contains("event: change"), "{r}");
}

#[test]
fn an_answer_from_the_page_reaches_a_waiting_vine_ask() {
    let room = Room::start(Some(KEY));
    let s = room.sign_in();
    room.ok(&["register", "--worker", "w1"]);
    let ask = room
        .vine_cmd(&[
            "ask",
            "May I drop the table?",
            "--worker",
            "w1",
            "--wait",
            "--timeout",
            "60s",
        ])
        .spawn()
        .unwrap();
    let mut ask = ChildGuard(Some(ask));
    // The question shows on the page.
    let deadline = Instant::now() + Duration::from_secs(20);
    let seq = loop {
        let qs = room.ok(&["questions"]);
        if let Some(q) = qs["questions"].as_array().unwrap().first() {
            break q["question"]["seq"].as_u64().unwrap();
        }
        assert!(Instant::now() < deadline, "the question never came");
        std::thread::sleep(Duration::from_millis(50));
    };
    let page = room.get("/questions", Some(&s));
    assert!(page.body.contains("May I drop the table?"));
    assert!(
        page.body.contains("badge s-waiting"),
        "the asker waits: {}",
        page.body
    );
    room.post(
        &format!("/questions/{seq}/answer"),
        Some(&s),
        &[("csrf", &s.csrf), ("answer", "No: archive it first.")],
        &[],
    )
    .expect(303);
    let child = ask.0.take().unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "No: archive it first."
    );
    let answered = room.get("/questions", Some(&s));
    assert!(
        answered.body.contains("human</strong> answered after"),
        "{}",
        answered.body
    );
}

#[test]
fn original_only_has_no_control_room() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(
        &tmp.path().join("base"),
        &["--original-only", "--no-exec"],
        &[],
    );
    let r = send(
        server.addr,
        &format!(
            "GET / HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            server.addr
        ),
    );
    assert_eq!(r.status, 404, "{r:#?}");
}

/// `vine dashboard` in the background; its URL from what it prints.
fn dashboard(board: &TestBoard, args: &[&str]) -> (ChildGuard, String) {
    let mut c = vine_without(ISOLATED);
    c.arg("--dir")
        .arg(&board.dir)
        .arg("dashboard")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = c.spawn().unwrap();
    let out = child.stdout.take().unwrap();
    let guard = ChildGuard(Some(child));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(url) = line.strip_prefix("control room: ") {
                let _ = tx.send(url.to_string());
            }
        }
    });
    let url = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("vine dashboard prints `control room: URL`");
    (guard, url)
}

#[test]
fn vine_dashboard_prints_a_url_that_serves_the_overview() {
    let board = TestBoard::new();
    board.ok(&["add", "local task"]);
    let (_dash, url) = dashboard(&board, &[]);
    let hostport = url
        .strip_prefix("http://")
        .and_then(|u| u.strip_suffix('/'))
        .unwrap_or_else(|| panic!("{url}"));
    let addr: SocketAddr = hostport.parse().unwrap();
    assert!(addr.ip().is_loopback(), "{url}");
    assert_ne!(addr.port(), 0);
    let r = send(
        addr,
        &format!("GET / HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n\r\n"),
    );
    assert_eq!(r.status, 200, "{r:#?}");
    assert!(r.body.contains("<h1>Overview</h1>"));
    assert!(r.body.contains("local task"));
    assert_secure_headers(&r, "dashboard");
    // No /execute on a dashboard.
    let r = send(
        addr,
        &format!(
            "POST /execute HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}"
        ),
    );
    assert_ne!(r.status, 200, "{r:#?}");
}

#[test]
fn vine_dashboard_without_a_board_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let r = run(vine_without(ISOLATED)
        .current_dir(tmp.path())
        .arg("dashboard")
        .stdin(Stdio::null()));
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("vine init"), "{r:?}");
    assert!(!tmp.path().join(".vine").exists(), "no board is made");
    // Not on another address without a key.
    let board = TestBoard::new();
    let r = run(vine_without(ISOLATED)
        .arg("--dir")
        .arg(&board.dir)
        .args(["dashboard", "--listen", "0.0.0.0:0"])
        .stdin(Stdio::null()));
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("--key-file"), "{r:?}");
}

#[test]
fn under_tls_the_cookie_is_secure_and_forms_need_the_https_origin() {
    let tmp = tempfile::tempdir().unwrap();
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    let cert = tmp.path().join("cert.pem");
    let key = tmp.path().join("key.pem");
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let server = Server::start(
        &tmp.path().join("base"),
        &[
            "--no-exec",
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
        &[("VINE_API_KEY", KEY)],
    );
    assert!(server.url.starts_with("https://"), "{}", server.url);
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
        .max_redirects(0)
        .max_redirects_will_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into();

    let mut r = agent.get(format!("{}/login", server.url)).call().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let cookie = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("vine_session="))
        .expect("a session cookie")
        .to_string();
    let attrs: Vec<&str> = cookie.split(';').map(str::trim).collect();
    assert!(attrs.contains(&"Secure"), "{cookie}");
    assert!(
        attrs.contains(&"HttpOnly") && attrs.contains(&"SameSite=Strict"),
        "{cookie}"
    );
    let id = attrs[0].to_string();
    let page = Resp {
        status: 200,
        headers: vec![],
        body: r.body_mut().read_to_string().unwrap(),
    };
    let csrf = page.csrf();
    let login = |origin: &str| {
        agent
            .post(format!("{}/login", server.url))
            .header("Cookie", &id)
            .header("Origin", origin)
            .send_form([("csrf", csrf.as_str()), ("key", KEY)])
            .unwrap()
    };
    // The page is https: a form whose Origin is the plain-HTTP address is another site's.
    let plain = format!("http://{}", server.addr);
    assert_eq!(login(&plain).status().as_u16(), 403);
    let r = login(&server.url);
    assert_eq!(r.status().as_u16(), 303);
    let signed = r
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(signed.contains("; Secure"), "{signed}");
}

/// Whether `f` holds within `limit` (looked at every 20 ms).
fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if f() {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
