//! The control room in a real browser (headless Chromium through `tests/support/browser.rs`)
//! against a real `vine serve` with a key: a person signs in, sees the overview, sees a question
//! that a real `vine ask --wait` asks appear without reloading (within 2 s), types an answer
//! while the page updates under it, sends it, and the waiting `vine ask` prints it. Hostile
//! board text renders as text. Screenshots of the overview and the questions at desktop and
//! phone width go to `target/screenshots/control_room/`.
//!
//! Needs `chromium` and `chromedriver` (`scripts/install-browser.sh`); without them these tests
//! fail with the install command.

#[path = "support/browser.rs"]
mod browser;
mod support;

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use browser::{Browser, Viewport};
use serde_json::Value;
use support::{ChildGuard, ISOLATED, Server, run, vine_without};

const KEY: &str = "browser-control-room-key-0123456789";
const HOSTILE: &str = "<script>window.pwned = 1</script><img src=x onerror=\"window.pwned = 2\">";

/// A `vine serve` with a key on a fresh board, and `vine --url` against it.
struct Room {
    server: Server,
    _tmp: tempfile::TempDir,
}

impl Room {
    fn start() -> Room {
        let tmp = tempfile::tempdir().unwrap();
        let server = Server::start(
            &tmp.path().join("base"),
            &["--no-exec"],
            &[("VINE_API_KEY", KEY)],
        );
        Room { server, _tmp: tmp }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.url)
    }

    fn cmd(&self, args: &[&str]) -> std::process::Command {
        let mut c = vine_without(ISOLATED);
        c.env("VINE_API_KEY", KEY)
            .arg("--url")
            .arg(&self.server.url)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    fn ok(&self, args: &[&str]) -> Value {
        let r = run(&mut self.cmd(&[args, &["--json"]].concat()));
        assert_eq!(r.code, 0, "vine {args:?}: {r:?}");
        r.json()
    }

    /// A small working board: tasks of each priority, two workers, one busy. Returns the
    /// task the busy one holds.
    fn populate(&self) -> String {
        self.ok(&["add", "Ship the release notes", "--priority", "high"]);
        self.ok(&["add", "Migrate the users table"]);
        self.ok(&["add", "Tidy the CI cache", "--priority", "low"]);
        self.ok(&["add", "Write the changelog"]);
        self.ok(&["register", "--worker", "w1", "--capability", "python"]);
        self.ok(&["register", "--worker", "w2"]);
        let c = self.ok(&["claim", "--worker", "w1"]);
        let first = c["claim"]["task"]["id"].as_u64().unwrap().to_string();
        self.ok(&[
            "complete",
            &first,
            "--worker",
            "w1",
            "--result",
            "notes shipped",
        ]);
        let held = self.ok(&["claim", "--worker", "w1"]);
        self.ok(&["msg", "send", "Starting on the migration", "--as", "w1"]);
        held["claim"]["task"]["id"].as_u64().unwrap().to_string()
    }

    /// The open questions' numbers.
    fn open_questions(&self) -> Vec<u64> {
        let v = self.ok(&["questions"]);
        v["questions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|q| q["question"]["seq"].as_u64().unwrap())
            .collect()
    }
}

/// Signs in through the login form.
fn sign_in(b: &Browser, room: &Room) {
    b.open(&room.url("/"));
    b.wait_for("#login");
    assert!(b.url().ends_with("/login"), "{}", b.url());
    b.type_into("#key", KEY);
    b.submit("#login");
    b.wait_for_text("h1", "Overview");
    let cookie = b.cookie("vine_session").expect("the session cookie");
    assert_eq!(cookie.http_only(), Some(true));
    assert_eq!(
        cookie.same_site().map(|s| s.to_string()).as_deref(),
        Some("Strict")
    );
    assert_eq!(cookie.path(), Some("/"));
    assert_eq!(
        b.eval("return document.cookie;"),
        "",
        "HttpOnly hides it from scripts"
    );
    assert!(!b.url().contains(KEY) && !b.url().contains(cookie.value()));
}

/// Waits until the page's script follows the board over Server-Sent Events.
fn wait_live(b: &Browser) {
    b.wait_until("the page listens to /events", Duration::from_secs(5), |b| {
        b.eval("return document.documentElement.getAttribute('data-live');") == "sse"
    });
}

/// Waits (at most `limit`) for `child` to end; its stdout.
fn finish(child: Child, limit: Duration) -> String {
    let mut guard = ChildGuard(Some(child));
    let start = Instant::now();
    loop {
        let c = guard.0.as_mut().unwrap();
        if c.try_wait().unwrap().is_some() {
            let out = guard.0.take().unwrap().wait_with_output().unwrap();
            assert!(out.status.success(), "vine ask failed: {out:?}");
            return String::from_utf8_lossy(&out.stdout).to_string();
        }
        assert!(
            start.elapsed() < limit,
            "vine ask still waits after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_question_asked_by_a_waiting_worker_is_answered_from_the_page() {
    let room = Room::start();
    let held = room.populate();
    let mut b = Browser::start("control_room");
    sign_in(&b, &room);
    wait_live(&b);
    assert!(b.page_text().contains("Ship the release notes") || b.page_text().contains("Migrate"));
    b.screenshots("overview-quiet");

    // A real worker asks and waits; the page shows it without a reload.
    b.eval("window.notReloaded = true; return 1;");
    let asked = Instant::now();
    let ask = room
        .cmd(&[
            "ask",
            "Should the migration keep the old column?",
            "--worker",
            "w1",
            "--task",
            &held,
            "--wait",
            "--timeout",
            "2m",
        ])
        .spawn()
        .unwrap();
    b.wait_until(
        "the question shows on the overview",
        Duration::from_secs(2),
        |b| {
            b.page_text()
                .contains("Should the migration keep the old column?")
        },
    );
    eprintln!(
        "the question showed {:?} after `vine ask` started",
        asked.elapsed()
    );
    assert_eq!(
        b.eval("return window.notReloaded === true;"),
        true,
        "no reload"
    );
    let seq = room.open_questions()[0];
    b.screenshots("overview");

    // The questions page: the question with its worker (waiting) and its task one click away.
    b.click("header nav a[href='/questions']");
    b.wait_for_text("h1", "Questions");
    wait_live(&b);
    let card = format!("#q-{seq}");
    b.wait_for(&card);
    assert!(b.text_of(&card).contains("w1"));
    assert!(
        b.exists(&format!("{card} .badge.s-waiting")),
        "the asker shows as waiting"
    );
    assert!(b.exists(&format!("{card} details.task-brief a[href^='/tasks/']")));
    b.screenshots("questions");

    // Typing survives a live update under it.
    let field = format!("#answer-{seq}");
    b.click(&field);
    b.type_into(&field, "Keep it for one release, ");
    let before = b.eval("return document.documentElement.getAttribute('data-refreshed');");
    room.ok(&["add", "A task added while someone types"]);
    b.wait_until("the page updates", Duration::from_secs(2), |b| {
        b.eval("return document.documentElement.getAttribute('data-refreshed');") != before
    });
    assert_eq!(
        b.eval(&format!("return document.querySelector('{field}').value;")),
        "Keep it for one release, "
    );
    assert_eq!(
        b.eval(&format!(
            "return document.activeElement === document.querySelector('{field}');"
        )),
        true,
        "the field keeps the focus"
    );
    b.type_into(&field, "then drop it.");
    b.submit(&format!("{card} form.answer"));
    b.wait_for_text(".flash", &format!("Answer to question {seq} sent."));

    // The waiting `vine ask` gets it.
    let printed = finish(ask, Duration::from_secs(10));
    assert_eq!(printed.trim(), "Keep it for one release, then drop it.");
    b.wait_for_text(&card, "answered after");
    assert!(b.text_of(&card).contains("human"));
    b.set_viewport(Viewport::Desktop);
    b.screenshots("questions-answered");
}

#[test]
fn hostile_board_text_renders_as_text() {
    let room = Room::start();
    let added = room.ok(&["add", HOSTILE]);
    let id = added["tasks"][0]["id"].as_u64().unwrap().to_string();
    room.ok(&["ask", HOSTILE, "--as", "w9", "--task", &id]);
    let b = Browser::start("control_room_hostile");
    sign_in(&b, &room);
    for path in ["/", "/questions"] {
        b.open(&room.url(path));
        b.wait_for("main h1");
        assert!(b.page_text().contains(HOSTILE), "{path}: the text as typed");
        assert_eq!(b.eval("return typeof window.pwned;"), "undefined", "{path}");
        assert_eq!(b.count("main img, main p.text script"), 0, "{path}");
    }
    let seq = room.open_questions()[0];
    assert_eq!(
        b.text_content(&format!("#q-{seq} > p.text")).as_deref(),
        Some(HOSTILE)
    );
}

/// Pretends the tab is hidden (or shown again), as the browser says when a person switches
/// tabs.
fn set_hidden(b: &Browser, hidden: bool) {
    b.eval_with(
        "Object.defineProperty(document, 'hidden', { value: arguments[0], configurable: true }); \
         document.dispatchEvent(new Event('visibilitychange')); return 1;",
        vec![Value::Bool(hidden)],
    );
}

#[test]
fn a_hidden_tab_gives_back_its_stream_and_catches_up_when_shown() {
    let room = Room::start();
    let b = Browser::start("control_room_hidden");
    sign_in(&b, &room);
    wait_live(&b);
    set_hidden(&b, true);
    assert_eq!(
        b.eval("return document.documentElement.getAttribute('data-live');"),
        "paused"
    );
    // A question asked while the tab is hidden is not shown yet...
    room.ok(&["ask", "Asked while nobody looked", "--as", "w3"]);
    std::thread::sleep(Duration::from_millis(800));
    assert!(!b.page_text().contains("Asked while nobody looked"));
    // ... and is, soon after the tab is shown again.
    set_hidden(&b, false);
    b.wait_until(
        "the page catches up once shown",
        Duration::from_secs(2),
        |b| b.page_text().contains("Asked while nobody looked"),
    );
    wait_live(&b);
}
