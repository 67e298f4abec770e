//! The tasks, workers and messages pages in a real browser (headless Chromium through
//! `tests/support/browser.rs`) against a real `vine serve` with a key: a person signs in, adds
//! a task with Markdown instructions from the form, lands on its page (instructions rendered,
//! a hostile part shown as text and never run), and a real `vine tasks` process lists the task.
//! Screenshots of the tasks list, a task's page, the workers and the messages at desktop and
//! phone width go to `target/screenshots/tasks_pages/`.
//!
//! Needs `chromium` and `chromedriver` (`scripts/install-browser.sh`); without them this test
//! fails with the install command.

#[path = "support/browser.rs"]
mod browser;
mod support;

use std::process::Stdio;

use browser::Browser;
use serde_json::Value;
use support::{ISOLATED, Server, run, vine_without};

const KEY: &str = "browser-tasks-key-0123456789";

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

    fn ok(&self, args: &[&str]) -> Value {
        let mut c = vine_without(ISOLATED);
        c.env("VINE_API_KEY", KEY)
            .arg("--url")
            .arg(&self.server.url)
            .args(args)
            .arg("--json")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let r = run(&mut c);
        assert_eq!(r.code, 0, "vine {args:?}: {r:?}");
        r.json()
    }

    /// Workers, tasks of each kind and a conversation, so the pages have something to show.
    fn populate(&self) {
        self.ok(&["register", "--worker", "w1", "--capability", "python"]);
        self.ok(&["register", "--worker", "w2", "--capability", "docs"]);
        let warm = self.ok(&["add", "Warm the build cache", "--priority", "high"]);
        let warm = warm["tasks"][0]["id"].as_u64().unwrap().to_string();
        self.ok(&["claim", "--worker", "w2"]);
        self.ok(&[
            "complete",
            &warm,
            "--worker",
            "w2",
            "--result",
            "cache warm",
        ]);
        let a = self.ok(&[
            "add",
            "Migrate the users table",
            "--priority",
            "high",
            "--requires",
            "python",
        ]);
        let a = a["tasks"][0]["id"].as_u64().unwrap().to_string();
        self.ok(&[
            "add",
            "Write the API guide",
            "--requires",
            "docs",
            "--after",
            &a,
        ]);
        self.ok(&["add", "Tidy the CI cache", "--priority", "low"]);
        self.ok(&["claim", "--worker", "w1"]);
        self.ok(&[
            "msg",
            "send",
            "Starting on the migration",
            "--as",
            "w1",
            "--task",
            &a,
        ]);
        let q = self.ok(&["ask", "Keep the old column?", "--as", "w1", "--task", &a]);
        let q = q["message"]["seq"].as_u64().unwrap().to_string();
        self.ok(&["answer", &q, "Yes, for one release", "--as", "alice"]);
    }
}

#[test]
fn a_task_added_from_the_form_is_listed_by_vine_tasks() {
    let room = Room::start();
    room.populate();
    let mut b = Browser::start("tasks_pages");
    b.open(&room.url("/tasks"));
    b.wait_for("#login");
    b.type_into("#key", KEY);
    b.submit("#login");
    b.wait_for_text("h1", "Overview");
    b.open(&room.url("/tasks"));
    b.wait_for_text("h1", "Tasks");
    b.screenshots("tasks");

    b.type_into("#add-description", "Write the release notes");
    b.type_into(
        "#add-instructions",
        "## Release notes\n\n- list **every** change\n- <script>window.pwned = 1</script>\n",
    );
    b.type_into("#add-context", "CHANGELOG.md");
    b.submit("form.add");
    b.wait_for_text("h1", "Task ");
    let flash = b.text_of(".flash");
    assert!(flash.contains("added"), "{flash}");
    let id: u64 = b
        .text_of("h1")
        .trim_start_matches("Task ")
        .trim()
        .parse()
        .expect("the task's page names it");
    // The instructions as Markdown; the hostile part is text and did not run.
    assert_eq!(b.text_of(".markdown h2"), "Release notes");
    assert_eq!(b.text_of(".markdown strong"), "every");
    assert!(
        b.text_of(".markdown")
            .contains("<script>window.pwned = 1</script>"),
        "shown as text"
    );
    assert_eq!(b.eval("return window.pwned === undefined;"), true);
    b.screenshots("task");

    // A real `vine tasks` lists it, as added.
    let tasks = room.ok(&["tasks"]);
    let t = tasks["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id)
        .unwrap_or_else(|| panic!("vine tasks does not list task {id}: {tasks}"));
    assert_eq!(t["description"], "Write the release notes");
    assert_eq!(t["context_files"], serde_json::json!(["CHANGELOG.md"]));

    // Back on the list, the new task is there.
    b.open(&room.url("/tasks"));
    b.wait_for_text("table.tasks", "Write the release notes");

    b.open(&room.url("/workers"));
    b.wait_for_text("h1", "Workers");
    b.wait_for_text("table.workers", "w1");
    b.screenshots("workers");
    b.open(&room.url("/workers/w1"));
    b.wait_for_text("h1", "Worker w1");
    b.screenshots("worker");

    b.open(&room.url("/messages"));
    b.wait_for_text("h1", "Messages");
    b.wait_for_text("ol.log", "Yes, for one release");
    b.screenshots("messages");

    b.open(&room.url("/"));
    b.wait_for("svg.plot-throughput");
    assert_eq!(b.count("svg.plot"), 3, "three charts");
    b.eval("document.getElementById('figures-h').scrollIntoView(); return null;");
    b.screenshots("overview_figures");
}
