//! HTTP tests of the control room's tasks, workers and messages pages and the overview's
//! figures, against a real `vine serve` with a key on 127.0.0.1, the board changed by real
//! `vine --url` processes: the lists and their filters, a task's page (Markdown instructions
//! with hostile parts shown as text, context files, dependencies both ways, attempts and their
//! errors, result, messages), and every action (add with instructions, change priority,
//! release, cancel, retry) as a form with the session's token that the same op carries out,
//! POST → redirect → GET with a message; refused ones say why and change nothing.
//!
//! Requests are plain HTTP/1.1 over a `TcpStream`.

mod support;

use std::process::{Command, Stdio};

use serde_json::Value;
use support::{CSP, ISOLATED, Resp, Run, Server, enc, run, send, vine_without};
use tempfile::TempDir;

const KEY: &str = "web-pages-test-key-0123456789";

/// What every page must be: 200, the CSP, no inline style or script.
trait Page {
    /// Asserts it and gives the body.
    fn page(&self) -> &str;
}

impl Page for Resp {
    fn page(&self) -> &str {
        self.expect(200);
        assert_eq!(self.header("content-security-policy"), Some(CSP));
        let lower = self.body.to_ascii_lowercase();
        assert!(!lower.contains(" style="), "an inline style: {}", self.body);
        assert!(!lower.contains("<style"), "a style element");
        assert!(
            !lower.contains("javascript:"),
            "a javascript: URL: {}",
            self.body
        );
        assert_eq!(
            lower.matches("<script").count(),
            lower.matches("<script src=\"/assets/").count(),
            "only our own script file"
        );
        &self.body
    }
}

/// A `vine serve` with a key, and a browser session signed in to its control room.
struct Room {
    server: Server,
    cookie: String,
    csrf: String,
    _tmp: TempDir,
}

impl Room {
    fn start() -> Room {
        let tmp = tempfile::tempdir().unwrap();
        let server = Server::start(
            &tmp.path().join("base"),
            &["--no-exec"],
            &[("VINE_API_KEY", KEY)],
        );
        let mut room = Room {
            server,
            cookie: String::new(),
            csrf: String::new(),
            _tmp: tmp,
        };
        room.sign_in();
        room
    }

    fn sign_in(&mut self) {
        let first = self.raw_get("/login", None);
        self.cookie = session_cookie(&first).expect("a session cookie");
        self.csrf = csrf_of(&first.body);
        let r = self.post("/login", &[("key", KEY)]);
        r.expect(303);
        self.cookie = session_cookie(&r).expect("a new session when signed in");
        let page = self.get("/");
        page.page();
        self.csrf = csrf_of(&page.body);
    }

    fn raw_get(&self, path: &str, cookie: Option<&str>) -> Resp {
        let mut req = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            self.server.addr
        );
        if let Some(c) = cookie {
            req.push_str(&format!("Cookie: vine_session={c}\r\n"));
        }
        req.push_str("\r\n");
        send(self.server.addr, &req)
    }

    fn get(&self, path: &str) -> Resp {
        self.raw_get(path, Some(&self.cookie))
    }

    /// A form as a browser sends it (same origin), with the session's token first.
    fn post(&self, path: &str, form: &[(&str, &str)]) -> Resp {
        self.post_with(path, &[&[("csrf", self.csrf.as_str())][..], form].concat())
    }

    fn post_with(&self, path: &str, form: &[(&str, &str)]) -> Resp {
        let body = form
            .iter()
            .map(|(k, v)| format!("{k}={}", enc(v)))
            .collect::<Vec<_>>()
            .join("&");
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nOrigin: http://{host}\r\n\
             Cookie: vine_session={}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
             Content-Length: {}\r\n\r\n{body}",
            self.cookie,
            body.len(),
            host = self.server.addr,
        );
        send(self.server.addr, &req)
    }

    /// A form, its redirect followed: the page it lands on (with its message).
    fn submit(&self, path: &str, form: &[(&str, &str)]) -> (String, Resp) {
        let r = self.post(path, form);
        assert_eq!(r.status, 303, "{path}: {}", r.body);
        let to = r.header("location").expect("a redirect").to_string();
        let page = self.get(&to);
        page.page();
        (to, page)
    }

    fn cmd(&self, args: &[&str]) -> Command {
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

    fn vine(&self, args: &[&str]) -> Run {
        run(&mut self.cmd(args))
    }

    fn ok(&self, args: &[&str]) -> Value {
        let r = self.vine(&[args, &["--json"]].concat());
        assert_eq!(r.code, 0, "vine {args:?}: {r:?}");
        r.json()
    }

    fn add(&self, args: &[&str]) -> u64 {
        self.ok(&[&["add"][..], args].concat())["tasks"][0]["id"]
            .as_u64()
            .unwrap()
    }

    fn show(&self, id: u64) -> Value {
        self.ok(&["show", &id.to_string()])["task"].clone()
    }

    fn queue(&self) -> Vec<u8> {
        std::fs::read(self.server.root.join("task-queue.json")).unwrap()
    }
}

fn session_cookie(r: &Resp) -> Option<String> {
    r.headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
        .find_map(|(_, v)| v.strip_prefix("vine_session="))
        .and_then(|v| v.split(';').next())
        .map(str::to_string)
}

fn csrf_of(body: &str) -> String {
    let marker = "name=\"csrf\" value=\"";
    let at = body
        .find(marker)
        .unwrap_or_else(|| panic!("no form token in the page: {body}"));
    let rest = &body[at + marker.len()..];
    rest[..rest.find('"').unwrap()].to_string()
}

/// The ids of the task links in a page's table of tasks (`<a class="task" href="/tasks/ID">`).
fn listed(body: &str) -> Vec<u64> {
    let table = body
        .split("<table class=\"tasks\">")
        .nth(1)
        .and_then(|t| t.split("</table>").next())
        .unwrap_or("");
    table
        .split("href=\"/tasks/")
        .skip(1)
        .filter_map(|s| s.split('"').next()?.parse().ok())
        .collect()
}

#[test]
fn the_task_list_filters_by_status_priority_worker_and_capability() {
    let room = Room::start();
    let a = room.add(&["Train the model", "--priority", "high", "--requires", "gpu"]);
    let b = room.add(&["Tidy the docs", "--priority", "low"]);
    let c = room.add(&["Fix <b>the</b> parser", "--assign", "w2"]);
    room.ok(&["register", "--worker", "w1", "--capability", "gpu"]);
    let claimed = room.ok(&["claim", "--worker", "w1"])["claim"]["task"]["id"]
        .as_u64()
        .unwrap();
    assert_eq!(claimed, a);

    let all = room.get("/tasks");
    let body = all.page();
    let mut ids = listed(body);
    ids.sort_unstable();
    assert_eq!(ids, [a, b, c]);
    assert!(
        body.contains("Fix &lt;b&gt;the&lt;/b&gt; parser"),
        "escaped"
    );
    assert!(!body.contains("<b>the</b>"));
    for (query, want) in [
        ("?priority=high", vec![a]),
        ("?priority=low", vec![b]),
        ("?capability=gpu", vec![a]),
        ("?worker=w1", vec![a]),
        ("?worker=w2", vec![c]),
        ("?status=in_progress", vec![a]),
        ("?status=pending&priority=normal", vec![c]),
        ("?status=completed", vec![]),
    ] {
        let r = room.get(&format!("/tasks{query}"));
        assert_eq!(listed(r.page()), want, "{query}");
    }
    // Completed and archived: shown with "archived too".
    room.ok(&["complete", &a.to_string(), "--worker", "w1"]);
    room.ok(&["compact"]);
    assert!(!listed(room.get("/tasks").page()).contains(&a));
    assert!(listed(room.get("/tasks?all=1").page()).contains(&a));
    // A filter that is not one: refused with the reason.
    let bad = room.get("/tasks?status=finished");
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains("finished"), "{}", bad.body);
}

#[test]
fn a_task_page_shows_instructions_dependencies_attempts_result_and_messages() {
    let room = Room::start();
    let first = room.add(&["Lay the groundwork"]);
    let instructions = "# Build the API\n\nSteps:\n\n1. **Read** [the spec](docs/spec.md)\n\
                        2. Then <script>window.pwned=1</script> and [click](javascript:alert(1))\n";
    let id = room.add(&[
        "Build the API",
        "--instructions",
        instructions,
        "--context",
        "docs/spec.md",
        "--after",
        &first.to_string(),
        "--max-retries",
        "3",
    ]);
    let later = room.add(&["Ship it", "--after", &id.to_string()]);
    let (f, s) = (first.to_string(), id.to_string());
    room.ok(&["claim", "--worker", "w1"]);
    room.ok(&[
        "complete",
        &f,
        "--worker",
        "w1",
        "--result",
        "groundwork laid",
    ]);
    room.ok(&["claim", "--worker", "w1"]);
    room.ok(&[
        "fail",
        &s,
        "--worker",
        "w1",
        "--error",
        "tests <fail> on CI",
    ]);
    room.ok(&[
        "msg",
        "send",
        "looking into the CI failure",
        "--as",
        "w1",
        "--task",
        &s,
    ]);
    room.ok(&["msg", "send", "unrelated chatter", "--as", "w2"]);

    let r = room.get(&format!("/tasks/{id}"));
    let body = r.page();
    // Instructions rendered from Markdown, the hostile parts as text.
    assert!(body.contains("<h1>Build the API</h1>"), "{body}");
    assert!(body.contains("<strong>Read</strong>"), "{body}");
    assert!(
        body.contains("<a href=\"docs/spec.md\">the spec</a>"),
        "{body}"
    );
    assert!(
        body.contains("&lt;script&gt;window.pwned=1&lt;/script&gt;"),
        "{body}"
    );
    assert!(!body.contains("<script>window.pwned"));
    assert!(
        body.contains("and click"),
        "the unsafe link's text stays: {body}"
    );
    // Context files, dependencies both ways.
    assert!(body.contains("<code>docs/spec.md</code>"), "{body}");
    assert!(
        body.contains(&format!("href=\"/tasks/{first}\"")),
        "depends on"
    );
    assert!(
        body.contains(&format!("href=\"/tasks/{later}\"")),
        "needed by"
    );
    // The attempt and its error (escaped), the retry delay.
    assert!(body.contains("tests &lt;fail&gt; on CI"), "{body}");
    assert!(body.contains("3 retries allowed"), "{body}");
    // Its messages only.
    assert!(body.contains("looking into the CI failure"));
    assert!(!body.contains("unrelated chatter"));
    // The first task's page has its result, rendered.
    let done = room.get(&format!("/tasks/{first}"));
    assert!(
        done.page().contains("<p>groundwork laid</p>"),
        "{}",
        done.body
    );
    // An unknown task: 404 with the reason; not a number: 400.
    let unknown = room.get("/tasks/4242");
    assert_eq!(unknown.status, 404, "{}", unknown.body);
    assert!(unknown.body.contains("4242"));
    assert_eq!(room.get("/tasks/abc").status, 400);
}

#[test]
fn actions_go_through_the_ops_and_say_what_happened() {
    let room = Room::start();
    // Add from the form: the task's page, with a message; `vine` lists it with its
    // instructions.
    let (to, page) = room.submit(
        "/tasks",
        &[
            ("description", "Write the release notes"),
            ("instructions", "## Notes\r\n\r\nList every change."),
            ("priority", "high"),
            ("requires", "docs, english"),
            ("context", "CHANGELOG.md"),
            ("after", ""),
            ("assign", ""),
        ],
    );
    let id: u64 = to.strip_prefix("/tasks/").unwrap().parse().unwrap();
    assert!(
        page.body.contains(&format!("Task {id} added.")),
        "{}",
        page.body
    );
    assert!(page.body.contains("<h2>Notes</h2>"), "{}", page.body);
    let listed = room.ok(&["tasks"]);
    let t = listed["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id)
        .expect("vine tasks lists the task added from the page")
        .clone();
    assert_eq!(t["description"], "Write the release notes");
    assert_eq!(t["priority"], "high");
    assert_eq!(t["requires"], serde_json::json!(["docs", "english"]));
    assert_eq!(t["context_files"], serde_json::json!(["CHANGELOG.md"]));
    let file = t["instruction_file"].as_str().unwrap();
    let text = std::fs::read_to_string(room.server.root.join(file)).unwrap();
    assert_eq!(text, "## Notes\n\nList every change.");
    let s = id.to_string();
    let path = format!("/tasks/{id}");

    // Priority.
    let (_, page) = room.submit(&format!("{path}/priority"), &[("priority", "low")]);
    assert!(page.body.contains("now has low priority"), "{}", page.body);
    assert_eq!(room.show(id)["priority"], "low");

    // Release a claim: the form names the claimant and the attempt it saw.
    room.ok(&[
        "register",
        "--worker",
        "w1",
        "--capability",
        "docs",
        "--capability",
        "english",
    ]);
    room.ok(&["claim", "--worker", "w1"]);
    let page = room.get(&path);
    assert!(page.page().contains("Release from w1"), "{}", page.body);
    let (_, page) = room.submit(
        &format!("{path}/release"),
        &[("worker", "w1"), ("attempt", "1")],
    );
    assert!(page.body.contains("released from w1"), "{}", page.body);
    let t = room.show(id);
    assert_eq!(
        (t["status"].as_str(), t["attempts"].as_u64()),
        (Some("pending"), Some(0))
    );

    // A refused action says why and changes nothing: retry of a pending task.
    let before = room.queue();
    let (_, page) = room.submit(&format!("{path}/retry"), &[]);
    assert!(page.body.contains("Not done"), "{}", page.body);
    assert!(
        page.body.contains("only failed tasks can be retried"),
        "{}",
        page.body
    );
    assert_eq!(room.queue(), before);

    // Fail it for good, then retry from the page.
    room.ok(&["claim", "--worker", "w1"]);
    room.ok(&["fail", &s, "--worker", "w1", "--error", "no", "--no-retry"]);
    let (_, page) = room.submit(&format!("{path}/retry"), &[]);
    assert!(page.body.contains("pending again"), "{}", page.body);
    assert_eq!(room.show(id)["status"], "pending");

    // Cancel with a reason; then it can change no more, and the page offers no action.
    let (_, page) = room.submit(&format!("{path}/cancel"), &[("reason", "not needed")]);
    assert!(
        page.body.contains(&format!("Task {id} cancelled.")),
        "{}",
        page.body
    );
    let t = room.show(id);
    assert_eq!(t["status"], "cancelled");
    assert_eq!(t["last_error"], "cancelled: not needed");
    assert!(!page.body.contains(&format!("action=\"{path}/cancel\"")));
    let (_, page) = room.submit(&format!("{path}/priority"), &[("priority", "high")]);
    assert!(page.body.contains("Not done"), "{}", page.body);
    assert_eq!(room.show(id)["priority"], "low");

    // Without the form token: refused, nothing changes.
    let before = room.queue();
    let r = room.post_with(&format!("{path}/priority"), &[("priority", "high")]);
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(room.queue(), before);
    // An action that does not exist.
    assert_eq!(room.post(&format!("{path}/explode"), &[]).status, 400);
}

#[test]
fn a_refused_add_shows_the_form_again_with_the_reason() {
    let room = Room::start();
    let before = room.queue();
    let r = room.post(
        "/tasks",
        &[
            ("description", "   "),
            ("instructions", "Keep <this> text"),
            ("after", "12 nope"),
        ],
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("The task was not added"), "{}", r.body);
    assert!(r.body.contains("nope"), "{}", r.body);
    assert!(
        r.body.contains("Keep &lt;this&gt; text"),
        "the typed text is kept"
    );
    let r = room.post("/tasks", &[("description", ""), ("instructions", "x")]);
    assert_eq!(r.status, 400, "{}", r.body);
    let r = room.post(
        "/tasks",
        &[("description", "depends on nothing"), ("after", "4242")],
    );
    assert_eq!(r.status, 404, "{}", r.body);
    assert!(r.body.contains("4242"), "{}", r.body);
    assert_eq!(room.queue(), before, "nothing was added");
}

#[test]
fn workers_are_listed_with_their_state_and_history() {
    let room = Room::start();
    room.ok(&["register", "--worker", "w1", "--capability", "python"]);
    room.ok(&["register", "--worker", "w2"]);
    let a = room.add(&["First job"]);
    let b = room.add(&["Second job"]);
    room.ok(&["claim", "--worker", "w1"]);
    room.ok(&[
        "complete",
        &a.to_string(),
        "--worker",
        "w1",
        "--result",
        "ok",
    ]);
    room.ok(&["claim", "--worker", "w1"]);
    room.ok(&[
        "msg",
        "send",
        "on it",
        "--as",
        "w1",
        "--task",
        &b.to_string(),
    ]);
    room.ok(&["deregister", "--worker", "w2"]);

    let list = room.get("/workers");
    let body = list.page();
    assert!(body.contains("href=\"/workers/w1\""), "{body}");
    assert!(body.contains("href=\"/workers/w2\""), "{body}");
    assert!(body.contains("badge s-working"), "{body}");
    assert!(body.contains("badge s-offline"), "{body}");
    assert!(body.contains("python"));
    // w1 (working) is listed before w2 (offline).
    assert!(body.find("/workers/w1").unwrap() < body.find("/workers/w2").unwrap());

    let page = room.get("/workers/w1");
    let body = page.page();
    assert!(
        body.contains(&format!("href=\"/tasks/{a}\"")),
        "history: {body}"
    );
    assert!(
        body.contains(&format!("href=\"/tasks/{b}\"")),
        "holds: {body}"
    );
    assert!(body.contains("on it"), "what it wrote");
    assert!(body.contains("First job"));
    let nobody = room.get("/workers/nobody");
    assert_eq!(nobody.status, 400, "{}", nobody.body);
    assert!(nobody.body.contains("nobody"));
}

#[test]
fn the_message_log_filters_by_kind_agent_and_task() {
    let room = Room::start();
    let t = room.add(&["A task"]).to_string();
    room.ok(&["msg", "send", "hello from alice", "--as", "alice"]);
    room.ok(&[
        "msg",
        "send",
        "bob on the task",
        "--as",
        "bob",
        "--task",
        &t,
    ]);
    let q = room.ok(&["ask", "which <port>?", "--as", "bob", "--task", &t])["message"]["seq"]
        .as_u64()
        .unwrap();
    room.ok(&["answer", &q.to_string(), "5000", "--as", "alice"]);

    let all = room.get("/messages");
    let body = all.page();
    for text in [
        "hello from alice",
        "bob on the task",
        "which &lt;port&gt;?",
        "5000",
    ] {
        assert!(body.contains(text), "{text} in {body}");
    }
    // Newest first.
    assert!(body.find("5000").unwrap() < body.find("hello from alice").unwrap());
    let only = |query: &str| room.get(&format!("/messages{query}")).page().to_string();
    let alice = only("?agent=alice");
    assert!(alice.contains("hello from alice") && alice.contains("5000"));
    assert!(!alice.contains("bob on the task"));
    let questions = only("?kind=question");
    assert!(questions.contains("which &lt;port&gt;?") && !questions.contains("hello from alice"));
    let on_task = only(&format!("?task={t}"));
    assert!(on_task.contains("bob on the task") && on_task.contains("5000"));
    assert!(!on_task.contains("hello from alice"));
    let last = only("?limit=50&kind=");
    assert!(last.contains("hello from alice"));
    assert_eq!(room.get("/messages?kind=shout").status, 400);
    assert_eq!(room.get("/messages?task=abc").status, 400);
}

#[test]
fn the_overview_shows_the_figures_and_charts() {
    let room = Room::start();
    let a = room.add(&["One"]).to_string();
    room.add(&["Two"]);
    room.ok(&["claim", "--worker", "w1"]);
    room.ok(&["complete", &a, "--worker", "w1"]);
    let r = room.get("/");
    let body = r.page();
    assert!(body.contains("id=\"figures-h\""), "{body}");
    assert!(body.contains("queue latency (added → claimed)"), "{body}");
    for class in [
        "plot plot-throughput",
        "plot plot-depth",
        "plot plot-durations",
    ] {
        assert!(body.contains(class), "{class} in {body}");
    }
    assert!(
        body.contains("<title>Throughput: tasks completed per 1h</title>"),
        "{body}"
    );
    // One completion in the last 24 h: 1 task per 24 hours.
    assert!(body.contains("<td>1</td>"), "{body}");
}

/// The sessions `vine pool` records (`record-run` through `POST /v1/op`, as the pool sends it)
/// are listed with their worker, tasks, runs, turns and cost, with the totals above them.
#[test]
fn the_sessions_page_shows_what_each_session_did_and_cost() {
    let room = Room::start();
    let id = room.add(&["Pooled work"]);
    let op = |session: &str, cost: f64| {
        let body = serde_json::json!({"op": {"op": "record-run", "session": session,
            "worker": "pool-1", "task": id, "attempt": 1, "turns": 3, "cost_usd": cost,
            "outcome": "success", "why": "no earlier session"}})
        .to_string();
        let req = format!(
            "POST /v1/op HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nX-API-Key: {KEY}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            room.server.addr,
            body.len()
        );
        send(room.server.addr, &req).expect(200);
    };
    let empty = room.get("/sessions");
    assert!(
        empty
            .page()
            .contains("No Claude session has been recorded yet"),
        "{}",
        empty.body
    );
    op("s-one", 0.25);
    op("s-two", 0.5);
    let r = room.get("/sessions");
    let body = r.page();
    for want in [
        "s-one",
        "s-two",
        "$0.7500",
        "$0.2500",
        "href=\"/workers/pool-1\"",
        &format!("href=\"/tasks/{id}\""),
        "2 runs, 6 turns",
    ] {
        assert!(body.contains(want), "{want} in {body}");
    }
    assert!(
        room.get("/").page().contains("href=\"/sessions\""),
        "in the nav"
    );
}
