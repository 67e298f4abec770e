//! Integration tests of the `vine` command line: every test runs the real binary as a process
//! on a board in a temporary directory and checks exit codes, `--json` output and the board
//! files themselves.

mod support;

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use assert_cmd::Command;
use chrono::Utc;
use serde_json::{Value, json};
use support::{
    ARCHIVE, BOARD_FILE, ChildGuard, LOG, PROGRESS, QUEUE, Run, TestBoard, WORKERS,
    assert_unchanged, ids_of, one_object, run_cmd, ts, vine, vine_std,
};
use tempfile::TempDir;

// ---------------------------------------------------------------------------------------------
// Help and usage
// ---------------------------------------------------------------------------------------------

#[test]
fn help_lists_every_exit_code() {
    for flag in ["--help", "-h"] {
        let r = run_cmd(vine().arg(flag));
        assert_eq!(r.code, 0, "{r:?}");
        let at = r
            .stdout
            .find("Exit codes:")
            .unwrap_or_else(|| panic!("vine {flag} has no exit code section:\n{}", r.stdout));
        let section = &r.stdout[at..];
        for (code, word) in [
            (0, "done"),
            (1, "anything else"),
            (2, "bad usage"),
            (3, "nothing to do"),
            (4, "conflict"),
            (5, "damaged"),
        ] {
            assert!(
                section
                    .lines()
                    .any(|l| l.trim_start().starts_with(&format!("{code} ")) && l.contains(word)),
                "vine {flag} does not explain exit code {code} ({word}):\n{section}"
            );
        }
        assert!(section.contains("vine repair"), "{section}");
    }
}

#[test]
fn clap_usage_errors_exit_2_in_text_and_json() {
    let b = TestBoard::new();
    b.add("a task", &[]);
    let before = b.snapshot();
    let cases: &[&[&str]] = &[
        &[],
        &["bogus-command"],
        &["claim", "--no-such-flag"],
        &["complete", "abc", "--worker", "w1"],
        &["complete", "-5", "--worker", "w1"],
        &["add"],
        &["add", "x", "--plan", "p.json"],
        &[
            "complete",
            "1",
            "--worker",
            "w1",
            "--result",
            "a",
            "--result-json",
            "1",
        ],
        &[
            "add",
            "x",
            "--instructions",
            "a",
            "--instructions-from",
            "b",
        ],
        &["fail", "1", "--worker", "w1"],
        &["ask"],
        &["msg"],
        &["answer", "one", "two"],
        &["add", "x", "--max-retries", "-1"],
    ];
    for args in cases {
        let r = b.run(args);
        assert_eq!(r.code, 2, "vine {args:?}: {r:?}");
        assert!(r.stdout.is_empty(), "vine {args:?}: {r:?}");
        assert!(
            r.stderr.contains("error:") || r.stderr.contains("Usage:"),
            "vine {args:?}: {r:?}"
        );

        let (code, v) = b.json(args);
        assert_eq!(code, 2, "vine {args:?} --json: {v}");
        assert_eq!(v["ok"], false);
        assert_eq!(v["error"]["kind"], "usage", "{v}");
        assert_eq!(v["error"]["code"], 2, "{v}");
        assert_unchanged(&before, &b, &format!("vine {args:?}"));
    }
    // --json anywhere on the line, even before the subcommand.
    let r = run_cmd(vine().args(["--json", "--dir"]).arg(&b.dir).arg("nope"));
    assert_eq!(r.code, 2);
    assert_eq!(one_object(&r)["error"]["kind"], "usage");
}

#[test]
fn json_usage_errors_say_what_is_wrong() {
    let b = TestBoard::new();
    // A missing argument: the message names it.
    let (code, v) = b.json(&["add"]);
    assert_eq!(code, 2);
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("DESCRIPTION"),
        "the JSON message of a missing argument does not say which: {msg:?}"
    );
    // A missing subcommand: the message says so.
    let (code, v) = b.json(&["msg"]);
    assert_eq!(code, 2);
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("subcommand") || msg.contains("COMMAND"),
        "the JSON message of a missing subcommand does not say so: {msg:?}"
    );
}

#[cfg(unix)]
#[test]
fn non_utf8_argument_is_a_usage_error_not_a_crash() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let b = TestBoard::new();
    let before = b.snapshot();
    let bad = OsStr::from_bytes(b"caf\xe9");

    let r = run_cmd(vine().arg("--dir").arg(&b.dir).arg("add").arg(bad));
    assert_eq!(
        r.code, 2,
        "a non-UTF-8 argument is bad usage (exit 2), not a panic: {r:?}"
    );

    // --json after the bad argument still gets one JSON object.
    let r = run_cmd(
        vine()
            .arg("--dir")
            .arg(&b.dir)
            .arg("add")
            .arg(bad)
            .arg("--json"),
    );
    assert_eq!(r.code, 2, "{r:?}");
    assert_eq!(one_object(&r)["error"]["code"], 2);
    assert_unchanged(&before, &b, "a non-UTF-8 argument");
}

// ---------------------------------------------------------------------------------------------
// Exit codes 1-5
// ---------------------------------------------------------------------------------------------

#[test]
fn invalid_input_exits_2_and_leaves_the_board_untouched() {
    let b = TestBoard::new();
    let claimed = b.add("claimed task", &["--instructions", "step 1\nstep 2"]);
    let pending = b.add("pending task", &[]);
    assert_eq!(b.claim("w1")["id"], claimed);
    let msg = b.ok(&["msg", "send", "a plain message"])["message"]["seq"]
        .as_u64()
        .unwrap();
    let question = b.ok(&["ask", "a question?", "--as", "w1"])["message"]["seq"]
        .as_u64()
        .unwrap();
    fs::write(b.tmp.path().join("secret.md"), "outside the board").unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(b.tmp.path().join("secret.md"), b.path("tasks/escape.md")).unwrap();
    fs::write(b.path("tasks/real.md"), "real instructions").unwrap();

    let c = claimed.to_string();
    let p = pending.to_string();
    let m = msg.to_string();
    let q = question.to_string();
    let long_description = "d".repeat(4097);
    let long_name = "w".repeat(65);
    let long_session = "s".repeat(1025);
    let unknown = "12345";
    let cases: Vec<Vec<&str>> = vec![
        // Worker ids.
        vec!["claim", "--worker", "a b"],
        vec!["claim", "--worker", "x/y"],
        vec!["claim", "--worker", ""],
        vec!["claim", "--worker", &long_name],
        vec!["claim", "--worker", "wörker"],
        vec!["register", "--worker", "x/y"],
        vec!["register", "--worker", "w2", "--capability", "bad cap"],
        vec!["register", "--worker", "w2", "--session-id", &long_session],
        vec!["heartbeat", "--worker", "a b"],
        vec!["deregister", "--worker", "x/y"],
        vec!["deregister", "--worker", "never-registered"],
        vec!["should-continue", "--worker", "a b"],
        vec!["complete", &c, "--worker", "a b"],
        vec!["fail", &c, "--worker", "x/y", "--error", "e"],
        vec!["release", &c, "--worker", "a b"],
        vec!["claim"],
        // Paths.
        vec!["add", "x", "--context", "/etc/passwd"],
        vec!["add", "x", "--context", "../outside.md"],
        vec!["add", "x", "--context", "docs/../../outside.md"],
        vec!["add", "x", "--context", ""],
        vec!["add", "x", "--context", "C:\\windows"],
        vec!["add", "x", "--instruction-file", "/etc/passwd"],
        vec!["add", "x", "--instruction-file", "../secret.md"],
        vec!["add", "x", "--instruction-file", "tasks/../../secret.md"],
        vec!["add", "x", "--instruction-file", "tasks/missing.md"],
        vec!["add", "x", "--instructions-from", "/definitely/not/here.md"],
        // Sizes and values.
        vec!["add", &long_description],
        vec!["add", "   "],
        vec!["add", "x", "--lease", "0s"],
        vec!["add", "x", "--lease", "31d"],
        vec!["add", "x", "--max-retries", "1001"],
        vec!["add", "x", "--assign", "a b"],
        vec!["add", "x", "--requires", "bad/cap"],
        vec!["add", "x", "--meta", "novalue"],
        vec!["add", "x", "--meta", "=1"],
        vec!["add", "x", "--metadata", "[1, 2]"],
        vec!["add", "x", "--metadata", "{not json"],
        vec![
            "complete",
            &c,
            "--worker",
            "w1",
            "--result-json",
            "{bad json",
        ],
        vec!["fail", &c, "--worker", "w1", "--error", "   "],
        vec!["msg", "send", "   "],
        vec!["msg", "send", "hi", "--as", "a b"],
        vec!["ask", "   "],
        vec!["answer", &m, "not a question"],
        vec!["answer", "999", "no such message"],
        vec!["answer", &q, "   "],
        vec!["answer", &q, "an answer", "--as", "a/b"],
        vec!["progress", "set", "--meta", "novalue"],
        // Unknown task ids.
        vec!["complete", unknown, "--worker", "w1", "--result", "r"],
        vec!["fail", unknown, "--worker", "w1", "--error", "e"],
        vec!["release", unknown, "--worker", "w1"],
        vec!["cancel", unknown],
        vec!["retry", unknown],
        vec!["priority", unknown, "high"],
        vec!["show", unknown],
        vec!["add", "x", "--after", unknown],
        vec!["add", "x", "--after", &p, "--after", unknown],
        vec!["msg", "send", "hi", "--task", unknown],
        vec!["ask", "q?", "--task", unknown],
    ];
    #[cfg(unix)]
    let cases = {
        let mut cases = cases;
        cases.push(vec!["add", "x", "--instruction-file", "tasks/escape.md"]);
        cases
    };
    let before = b.snapshot();
    for args in &cases {
        let stderr = b.fails(2, args);
        assert!(stderr.len() > "vine: ".len() + 5, "{stderr}");
        let (code, v) = b.json(args);
        assert_eq!(code, 2, "vine {args:?} --json: {v}");
        let kind = v["error"]["kind"].as_str().unwrap();
        assert!(
            kind == "invalid" || kind == "unknown-task",
            "vine {args:?}: kind {kind}"
        );
        assert_unchanged(&before, &b, &format!("rejected vine {args:?}"));
    }
    // The unknown id is named in the message.
    let (_, v) = b.json(&["show", unknown]);
    assert_eq!(v["error"]["kind"], "unknown-task");
    assert!(v["error"]["message"].as_str().unwrap().contains(unknown));

    // The limits are limits, not off by one: 4 KiB descriptions and a real board file are fine.
    b.add(&"d".repeat(4096), &[]);
    b.add(
        "with a board file",
        &["--instruction-file", "tasks/real.md"],
    );
}

#[test]
fn priority_changes_the_order_of_claims_until_a_task_is_finished() {
    let b = TestBoard::new();
    let first = b.add("first", &[]);
    let second = b.add("second", &["--priority", "low"]);
    let (s1, s2) = (first.to_string(), second.to_string());
    // Raised above the older task: claimed first. The text says what it is now.
    let r = b.run(&["priority", &s2, "high"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout.contains(&format!("Task {second}: second")),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("priority: high"), "{}", r.stdout);
    assert_eq!(b.show(second)["priority"], "high");
    assert_eq!(b.claim("w1")["id"], second);
    // A claimed task may change too, and keeps its claim.
    let t = b.ok(&["priority", &s2, "normal"])["task"].clone();
    assert_eq!(
        (&t["priority"], &t["status"], &t["claimed_by"]),
        (&json!("normal"), &json!("in_progress"), &json!("w1"))
    );
    // Finished: refused (exit 4, a conflict), the board unchanged.
    b.ok(&["complete", &s2, "--worker", "w1"]);
    let before = b.snapshot();
    let v = b.expect(4, &["priority", &s2, "low"]);
    assert_eq!(v["error"]["kind"], "conflict");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("completed"),
        "{v}"
    );
    assert_unchanged(&before, &b, "priority of a completed task");
    // Not a level: a usage error (exit 2) naming the levels.
    let v = b.expect(2, &["priority", &s1, "urgent"]);
    assert_eq!(v["error"]["kind"], "usage");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.contains("high, normal, low"), "{message}");
    assert_eq!(b.show(first)["priority"], "normal");
}

#[test]
fn metrics_show_latencies_rates_and_counts() {
    let b = TestBoard::new();
    let a = b.add("first", &[]).to_string();
    b.add("second", &[]);
    b.claim("w1");
    b.ok(&["complete", &a, "--worker", "w1"]);
    let q = b.ok(&["ask", "which?", "--as", "w1"])["message"]["seq"]
        .as_u64()
        .unwrap()
        .to_string();
    b.ok(&["answer", &q, "that one"]);
    b.ok(&["compact"]);
    let v = b.ok(&["metrics", "--window", "2h"]);
    let m = &v["metrics"];
    assert_eq!(m["tasks"]["completed"], 1, "{v}");
    assert_eq!(m["tasks"]["pending"], 1, "{v}");
    assert_eq!(m["open_questions"], 0);
    for f in ["recent", "all_time"] {
        assert_eq!(m[f]["queue_latency"]["count"], 1, "{f}: {v}");
        assert_eq!(m[f]["claim_to_complete"]["count"], 1, "{f}: {v}");
        assert_eq!(m[f]["human_response"]["count"], 1, "{f}: {v}");
        assert_eq!(m[f]["failure_rate"], 0.0, "{f}: {v}");
    }
    // Two hours in 24 buckets of 5 minutes.
    assert_eq!(m["series"]["bucket_secs"], 300);
    assert_eq!(m["series"]["completed"].as_array().unwrap().len(), 24);
    let r = b.run(&["metrics"]);
    assert_eq!(r.code, 0, "{r:?}");
    for text in [
        "1 pending",
        "1 completed",
        "Last 1d:",
        "queue latency (added → claimed): median",
        "human response (asked → answered)",
        "failure rate 0%",
    ] {
        assert!(r.stdout.contains(text), "{text:?} in {}", r.stdout);
    }
    b.expect(2, &["metrics", "--window", "0s"]);
}

#[test]
fn nothing_to_do_exits_3() {
    let b = TestBoard::new();
    // Claim on an empty board: exit 3, one JSON object with a null claim and a reason.
    let reason = b.claim_nothing("w1");
    assert!(reason.contains("no pending tasks"), "{reason}");
    let r = b.run(&["claim", "--worker", "w1"]);
    assert_eq!(r.code, 3);
    assert!(r.stdout.starts_with("Nothing to claim"), "{r:?}");

    // should-continue deciding stop.
    b.ok(&["register", "--worker", "w1"]);
    let v = b.expect(
        3,
        &["should-continue", "--worker", "w1", "--max-idle", "0s"],
    );
    assert_eq!(v["continue"], false, "{v}");

    // ask --wait with nobody answering: exit 3, and the question stays open.
    let start = Instant::now();
    let r = run_cmd(&mut b.cmd(&[
        "ask",
        "anyone there?",
        "--as",
        "w1",
        "--wait",
        "--timeout",
        "1s",
        "--json",
    ]));
    assert_eq!(r.code, 3, "{r:?}");
    assert!(
        start.elapsed() >= Duration::from_millis(900),
        "it waited for the timeout"
    );
    let v = one_object(&r);
    assert_eq!(v["ok"], false);
    assert_eq!(v["error"]["kind"], "nothing-to-do");
    let qs = b.ok(&["questions"]);
    assert_eq!(qs["questions"].as_array().unwrap().len(), 1, "{qs}");
    assert_eq!(qs["questions"][0]["question"]["message"], "anyone there?");
}

#[test]
fn conflicts_exit_4() {
    let b = TestBoard::new();
    let t1 = b.add("one", &[]);
    let t2 = b.add("two", &[]);
    let t3 = b.add("three", &[]);
    let (s1, s2, s3) = (t1.to_string(), t2.to_string(), t3.to_string());
    assert_eq!(b.claim("w1")["id"], t1);

    // Complete, fail or release a task another worker holds.
    let queue_before = b.read(QUEUE);
    for args in [
        vec!["complete", &s1, "--worker", "w2", "--result", "w2's work"],
        vec!["fail", &s1, "--worker", "w2", "--error", "w2's error"],
        vec!["release", &s1, "--worker", "w2"],
    ] {
        let (code, v) = b.json(&args);
        assert_eq!(code, 4, "vine {args:?}: {v}");
        assert_eq!(v["error"]["kind"], "conflict");
        assert!(
            v["error"]["message"].as_str().unwrap().contains("w1"),
            "the message names the holder: {v}"
        );
        b.fails(4, &args);
        assert_eq!(
            b.read(QUEUE),
            queue_before,
            "vine {args:?} changed the queue"
        );
    }
    // The refused result and error are kept in the log, not lost.
    let kept: Vec<Value> = b
        .lines(LOG)
        .into_iter()
        .filter(|m| m["kind"] == "result")
        .collect();
    assert!(
        kept.iter()
            .any(|m| m["message"] == "w2's work" && m["agent"] == "w2" && m["task_id"] == t1),
        "{kept:?}"
    );
    assert!(
        kept.iter().any(|m| m["message"] == "w2's error"),
        "{kept:?}"
    );

    // Complete twice.
    b.ok(&["complete", &s1, "--worker", "w1", "--result", "done"]);
    let queue_before = b.read(QUEUE);
    assert_eq!(
        b.expect(4, &["complete", &s1, "--worker", "w1"])["error"]["kind"],
        "conflict"
    );
    assert_eq!(b.read(QUEUE), queue_before);
    assert_eq!(b.show(t1)["result"], "done");

    // A stale --attempt.
    let t = b.claim("w1");
    assert_eq!(t["id"], t2);
    assert_eq!(t["attempts"], 1);
    let queue_before = b.read(QUEUE);
    b.expect(4, &["complete", &s2, "--worker", "w1", "--attempt", "2"]);
    b.expect(
        4,
        &[
            "fail",
            &s2,
            "--worker",
            "w1",
            "--attempt",
            "0",
            "--error",
            "e",
        ],
    );
    b.expect(4, &["release", &s2, "--worker", "w1", "--attempt", "3"]);
    assert_eq!(b.read(QUEUE), queue_before);
    b.ok(&["complete", &s2, "--worker", "w1", "--attempt", "1"]);

    // Retry anything but a failed task; cancel a completed or cancelled task.
    b.expect(4, &["retry", &s3]); // pending
    b.expect(4, &["retry", &s1]); // completed
    let t = b.claim("w1");
    assert_eq!(t["id"], t3);
    b.expect(4, &["retry", &s3]); // in progress
    b.ok(&["cancel", &s3]);
    b.expect(4, &["retry", &s3]); // cancelled
    b.expect(4, &["cancel", &s3]);
    b.expect(4, &["cancel", &s1]);
    // The former holder of a cancelled task cannot complete it.
    b.expect(4, &["complete", &s3, "--worker", "w1"]);
    // Release of a task nobody holds.
    let t4 = b.add("four", &[]);
    b.expect(4, &["release", &t4.to_string(), "--worker", "w1"]);
    assert_eq!(b.show(t4)["status"], "pending");
}

fn damaged_board_refuses_every_change(damaged: &str) {
    let b = TestBoard::new();
    let id = b.add("a task", &[]).to_string();
    b.claim("w1");
    let q = b.ok(&["ask", "q?"])["message"]["seq"]
        .as_u64()
        .unwrap()
        .to_string();
    let plan = b.outside("plan.json", r#"[{"description": "planned"}]"#);
    let plan = plan.to_str().unwrap();

    let garbage = b"{\"this is\": not json at all\n\x00\xff";
    b.write(damaged, garbage);
    let before = b.snapshot();
    let cases: &[&[&str]] = &[
        &["add", "x"],
        &["add", "x", "--instructions", "would be written to tasks/"],
        &["add", "--plan", plan],
        &["claim", "--worker", "w1"],
        &["claim", "--worker", "w2"],
        &["complete", &id, "--worker", "w1", "--result", "r"],
        &["fail", &id, "--worker", "w1", "--error", "e"],
        &["release", &id, "--worker", "w1"],
        &["cancel", &id],
        &["retry", &id],
        &["priority", &id, "low"],
        &["register", "--worker", "w2"],
        &["heartbeat", "--worker", "w1"],
        &["deregister", "--worker", "w1"],
        &["should-continue", "--worker", "w1"],
        &["progress", "set", "--step", "2"],
        &["msg", "send", "hello"],
        &["ask", "another?"],
        &["ask", "and wait?", "--wait", "--timeout", "1s"],
        &["answer", &q, "an answer"],
        &["requeue-stale"],
        &["compact"],
    ];
    for args in cases {
        let stderr = b.fails(5, args);
        assert!(
            stderr.contains(damaged) && stderr.contains("vine repair"),
            "vine {args:?}: the message names {damaged} and `vine repair`: {stderr}"
        );
        let (code, v) = b.json(args);
        assert_eq!(code, 5, "vine {args:?}: {v}");
        assert_eq!(v["error"]["kind"], "damaged");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains(damaged) && msg.contains("vine repair"),
            "{msg}"
        );
        assert_unchanged(
            &before,
            &b,
            &format!("vine {args:?} on a damaged {damaged}"),
        );
    }
    // Reads show what they can, say which file is damaged, and exit 5 too.
    for args in [&["status"][..], &["tasks"], &["workers"], &["show", &id]] {
        if damaged == QUEUE && args[0] == "show" {
            // Nothing of the queue can be read: the task is not shown, the damage is.
            let (code, v) = b.json(args);
            assert_eq!((code, &v["error"]["kind"]), (5, &json!("damaged")), "{v}");
        } else {
            damaged_read(&b, args, damaged);
        }
        assert_unchanged(
            &before,
            &b,
            &format!("vine {args:?} on a damaged {damaged}"),
        );
    }
    assert_eq!(
        b.read(damaged),
        garbage,
        "{damaged} is byte-for-byte unchanged"
    );
}

/// Runs a read on a board with the damaged file `file` and checks it the way a coordinator
/// needs it: exit 5; in text, what can be read on stdout and, on stderr, which file is damaged
/// and that `vine repair` fixes it; in `--json`, one object with the reply's fields plus
/// `ok: false` and an `error` naming the file. Returns the JSON.
fn damaged_read(b: &TestBoard, args: &[&str], file: &str) -> Value {
    let r = b.run(args);
    assert_eq!(r.code, 5, "vine {args:?}: {r:?}");
    assert!(
        !r.stdout.trim().is_empty(),
        "vine {args:?} shows what it can read: {r:?}"
    );
    assert!(
        r.stderr.contains(file) && r.stderr.contains("damaged") && r.stderr.contains("vine repair"),
        "vine {args:?}: stderr names {file} and `vine repair`: {r:?}"
    );
    let (code, v) = b.json(args);
    assert_eq!(code, 5, "vine {args:?}: {v}");
    assert_eq!(v["error"]["kind"], "damaged", "{v}");
    assert!(
        v["reply"].is_string(),
        "the reply of the read is there: {v}"
    );
    let files: Vec<&str> = v["error"]["damaged"]
        .as_array()
        .unwrap_or_else(|| panic!("error.damaged lists the files: {v}"))
        .iter()
        .map(|d| d["file"].as_str().unwrap())
        .collect();
    assert!(files.contains(&file), "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains(file) && msg.contains("vine repair"), "{msg}");
    v
}

#[test]
fn reads_of_a_damaged_queue_show_what_can_be_read() {
    let b = TestBoard::new();
    let first = b.add("first task", &[]);
    let lost = b.add("second task", &[]);
    let third = b.add("third task", &["--priority", "high"]);
    b.ok(&["register", "--worker", "w1"]);
    assert_eq!(b.claim("w1")["id"], third);
    // The second task's line is damaged; the others can still be read.
    let text = String::from_utf8(b.read(QUEUE)).unwrap();
    let damaged = text.replace("\"second task\"", "\"second task");
    assert_ne!(damaged, text);
    b.write(QUEUE, &damaged);
    let before = b.snapshot();

    let v = damaged_read(&b, &["tasks"], QUEUE);
    assert_eq!(ids_of(&v["tasks"]), vec![first, third], "{v}");
    let r = b.run(&["tasks"]);
    assert!(
        r.stdout.contains("first task") && r.stdout.contains("third task"),
        "{r:?}"
    );
    let v = damaged_read(&b, &["status"], QUEUE);
    assert_eq!(
        (&v["total"], &v["pending"], &v["in_progress"]),
        (&json!(2), &json!(1), &json!(1)),
        "{v}"
    );
    let v = damaged_read(&b, &["workers"], QUEUE);
    assert_eq!(v["workers"][0]["tasks"], json!([third]), "{v}");
    let v = damaged_read(&b, &["show", &first.to_string()], QUEUE);
    assert_eq!(v["task"]["description"], "first task");
    // A task in the part that cannot be read is not "unknown": the board is damaged.
    let (code, v) = b.json(&["show", &lost.to_string()]);
    assert_eq!((code, &v["error"]["kind"]), (5, &json!("damaged")), "{v}");
    // Writes stay refused; nothing changed.
    b.expect(5, &["claim", "--worker", "w2"]);
    assert_unchanged(&before, &b, "reads of a damaged queue");

    b.ok(&["repair"]);
    assert_eq!(ids_of(&b.ok(&["tasks"])["tasks"]), vec![first, third]);
}

#[test]
fn a_queue_holding_one_id_twice_is_damage() {
    for layout in ["one task a line", "indented"] {
        let b = TestBoard::new();
        let a = b.add("a", &[]);
        b.add("b", &[]);
        let mut tasks = b.queue();
        let mut copy = tasks[0].clone();
        copy["description"] = json!("a, second copy");
        tasks.push(copy);
        let bytes = match layout {
            "indented" => serde_json::to_vec_pretty(&tasks).unwrap(),
            _ => {
                let lines: Vec<String> = tasks.iter().map(Value::to_string).collect();
                format!("[\n{}\n]\n", lines.join(",\n")).into_bytes()
            }
        };
        b.write(QUEUE, &bytes);
        let before = b.snapshot();
        for w in ["w1", "w2", "w3"] {
            let (code, v) = b.json(&["claim", "--worker", w]);
            assert_eq!(
                code, 5,
                "{layout}: a queue with id {a} twice hands it out: {v}"
            );
            let msg = v["error"]["message"].as_str().unwrap();
            assert!(
                msg.contains(&format!("task id {a} is on the queue twice")),
                "{msg}"
            );
        }
        assert_unchanged(&before, &b, layout);
        // Reads show each id once (the first copy), and say so.
        let v = damaged_read(&b, &["tasks"], QUEUE);
        assert_eq!(v["tasks"].as_array().unwrap().len(), 2, "{v}");
        assert_eq!(v["tasks"][0]["description"], "a");
        // Repair keeps the first copy.
        let report = b.ok(&["repair"]);
        let f = repaired_file(&report, QUEUE);
        assert_eq!(f["kept"], 2, "{report}");
        assert_eq!(b.claim("w1")["id"], a);
        assert_eq!(b.claim("w2")["description"], "b");
    }
}

#[test]
fn junk_lines_in_the_log_and_the_archive_are_damage() {
    let b = TestBoard::new();
    let done: Vec<u64> = (0..3).map(|i| b.add(&format!("done {i}"), &[])).collect();
    for _ in &done {
        let t = b.claim("w1");
        b.ok(&["complete", &t["id"].to_string(), "--worker", "w1"]);
    }
    b.ok(&["compact"]);
    b.add("open", &[]);
    b.ok(&["msg", "send", "m1"]);
    let q = b.ok(&["ask", "q2?"])["message"]["seq"].to_string();
    b.ok(&["msg", "send", "m3"]);

    // A junk line in the middle of each log: reads that reach it say so, and exit 5.
    let insert_junk = |name: &str, at_line: usize| {
        let text = String::from_utf8(b.read(name)).unwrap();
        let mut lines: Vec<&str> = text.lines().collect();
        lines.insert(at_line, "this is not json");
        b.write(name, format!("{}\n", lines.join("\n")));
    };
    insert_junk(LOG, 1);
    insert_junk(ARCHIVE, 1);
    let before = b.snapshot();
    let v = damaged_read(&b, &["msg", "read"], LOG);
    let texts: Vec<&str> = v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["message"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["m1", "q2?", "m3"]);
    let v = damaged_read(&b, &["questions"], LOG);
    assert_eq!(v["questions"].as_array().unwrap().len(), 1, "{v}");
    damaged_read(&b, &["status"], LOG);
    let v = damaged_read(&b, &["tasks", "--all"], ARCHIVE);
    assert_eq!(v["tasks"].as_array().unwrap().len(), 4, "{v}");
    damaged_read(&b, &["show", &done[0].to_string()], ARCHIVE);
    // A change that reads the damaged part is refused, and nothing changes.
    let (code, v) = b.json(&["answer", &q, "yes"]);
    assert_eq!((code, &v["error"]["kind"]), (5, &json!("damaged")), "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains(LOG), "{v}");
    assert_unchanged(&before, &b, "vine answer on a damaged log");

    // Junk at the end is found by the changes that read only the end.
    let b2 = TestBoard::new();
    b2.ok(&["msg", "send", "m1"]);
    let t = b2.add("t", &[]);
    b2.claim("w1");
    b2.ok(&["complete", &t.to_string(), "--worker", "w1"]);
    b2.ok(&["compact"]);
    for name in [LOG, ARCHIVE] {
        let mut text = b2.read(name);
        text.extend_from_slice(b"{\"half\": \"an entry\"}\n");
        b2.write(name, text);
    }
    let before = b2.snapshot();
    for (args, file) in [
        (&["msg", "send", "m2"][..], LOG),
        (&["ask", "q?"][..], LOG),
        (&["add", "another"][..], ARCHIVE),
    ] {
        let (code, v) = b2.json(args);
        assert_eq!(
            (code, &v["error"]["kind"]),
            (5, &json!("damaged")),
            "vine {args:?}: {v}"
        );
        assert!(
            v["error"]["message"].as_str().unwrap().contains(file),
            "{v}"
        );
    }
    assert_unchanged(&before, &b2, "changes on damaged logs");
    damaged_read(&b2, &["status"], ARCHIVE);

    // Repair keeps a copy of each and drops only the junk.
    for board in [&b, &b2] {
        let report = board.ok(&["repair"]);
        for name in [LOG, ARCHIVE] {
            let f = repaired_file(&report, name);
            assert_eq!(f["dropped"].as_array().unwrap().len(), 1, "{report}");
        }
        board.ok(&["status"]);
        board.ok(&["tasks", "--all"]);
        board.ok(&["msg", "send", "after repair"]);
    }
    b.ok(&["answer", &q, "yes"]);
}

#[test]
fn damaged_queue_refuses_every_change_with_exit_5() {
    damaged_board_refuses_every_change(QUEUE);
}

#[test]
fn damaged_worker_status_refuses_every_change_with_exit_5() {
    damaged_board_refuses_every_change(WORKERS);
}

#[test]
fn empty_queue_file_is_damage_too() {
    let b = TestBoard::new();
    b.write(QUEUE, "");
    let (code, v) = b.json(&["add", "x"]);
    assert_eq!(code, 5, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("empty"),
        "{v}"
    );
    assert!(b.read(QUEUE).is_empty());
}

/// Runs `vine --json ARGS` on `b` with the size of the files it writes limited to `blocks`
/// (`ulimit -f`, SIGXFSZ ignored): a write past it fails with EFBIG, as on a full disk.
fn with_file_limit(b: &TestBoard, blocks: u32, args: &[&str]) -> (i32, Value) {
    let r = run_cmd(
        Command::new("sh")
            .arg("-c")
            .arg("trap '' XFSZ; ulimit -f \"$0\" && exec \"$@\"")
            .arg(blocks.to_string())
            .arg(env!("CARGO_BIN_EXE_vine"))
            .arg("--dir")
            .arg(&b.dir)
            .arg("--json")
            .args(args)
            .env_remove("VINE_DIR")
            .env_remove("VINE_WORKER")
            .env_remove("WORKER_ID"),
    );
    (r.code, one_object(&r))
}

#[test]
fn a_write_that_fails_leaves_no_temp_file_and_no_half_line() {
    let b = TestBoard::new();
    let long = "x".repeat(3000);
    let plan: Vec<Value> = (0..20)
        .map(|i| json!({"description": format!("{i} {long}")}))
        .collect();
    let plan = b.outside("plan.json", &Value::Array(plan).to_string());
    b.ok(&["add", "--plan", plan.to_str().unwrap()]);
    assert!(b.read(QUEUE).len() > 60_000);
    let before = b.snapshot();
    // 16 blocks (8 or 16 KiB): the queue's rewrite cannot be written.
    let (code, v) = with_file_limit(&b, 16, &["add", "one more"]);
    assert_eq!((code, v["error"]["kind"].as_str()), (1, Some("io")), "{v}");
    assert_unchanged(&before, &b, "an add whose queue write failed");
    // A log append cut off by the limit is taken back whole.
    let message = "m".repeat(60_000);
    let (code, v) = with_file_limit(&b, 16, &["msg", "send", &message]);
    assert_eq!((code, v["error"]["kind"].as_str()), (1, Some("io")), "{v}");
    assert_unchanged(&before, &b, "a message whose append failed");
    // Without the limit both go through.
    b.add("one more", &[]);
    b.ok(&["msg", "send", &message]);
}

#[test]
fn io_errors_exit_1() {
    // A queue that cannot be read (it is a folder) is an I/O error, not damage.
    let b = TestBoard::new();
    fs::remove_file(b.path(QUEUE)).unwrap();
    fs::create_dir(b.path(QUEUE)).unwrap();
    let (code, v) = b.json(&["status"]);
    assert_eq!(code, 1, "{v}");
    assert_eq!(v["error"]["kind"], "io");
    b.fails(1, &["add", "x"]);
}

// ---------------------------------------------------------------------------------------------
// JSON output
// ---------------------------------------------------------------------------------------------

#[test]
fn every_command_prints_one_json_object() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("b");
    let r = run_cmd(vine().arg("--json").arg("init").arg(&dir));
    assert_eq!(r.code, 0);
    let v = one_object(&r);
    assert_eq!(v["ok"], true);
    assert!(v["board"].as_str().unwrap().ends_with('b'), "{v}");

    let b = TestBoard { tmp, dir };
    let id = b.add(
        "json task",
        &["--meta", "estimate=30", "--meta", "owner=ann"],
    );
    let s = id.to_string();
    let checks: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["register", "--worker", "w1", "--capability", "rust"],
            "worker",
        ),
        (vec!["heartbeat", "--worker", "w1"], "worker"),
        (vec!["should-continue", "--worker", "w1"], "decision"),
        (vec!["claim", "--worker", "w1"], "claimed"),
        (vec!["status"], "status"),
        (vec!["tasks"], "tasks"),
        (vec!["tasks", "--status", "in-progress"], "tasks"),
        (vec!["show", &s], "task"),
        (vec!["workers"], "workers"),
        (vec!["progress"], "progress"),
        (
            vec![
                "progress",
                "set",
                "--step",
                "2",
                "--total",
                "5",
                "--status",
                "building",
                "--meta",
                "phase=one",
            ],
            "progress",
        ),
        (vec!["progress", "show"], "progress"),
        (vec!["msg", "send", "hello", "--task", &s], "message"),
        (vec!["msg", "read"], "messages"),
        (vec!["ask", "why?"], "message"),
        (vec!["questions"], "questions"),
        (vec!["questions", "--all"], "questions"),
        (vec!["requeue-stale"], "requeued"),
        (
            vec![
                "complete",
                &s,
                "--worker",
                "w1",
                "--result-json",
                r#"{"files": ["a.rs"], "ok": true}"#,
            ],
            "task",
        ),
        (vec!["compact"], "compacted"),
        (vec!["repair"], "repaired"),
        (vec!["deregister", "--worker", "w1"], "worker"),
    ];
    for (args, reply) in checks {
        let v = b.ok(&args);
        assert_eq!(v["ok"], true, "{v}");
        assert_eq!(v["reply"], reply, "vine {args:?}: {v}");
    }
    let t = b.show(id);
    assert_eq!(t["result"], json!({"files": ["a.rs"], "ok": true}));
    assert_eq!(t["metadata"], json!({"estimate": 30, "owner": "ann"}));
    let p = b.ok(&["progress"])["progress"].clone();
    assert_eq!(p["current_step"], 2);
    assert_eq!(p["total_steps"], 5);
    assert_eq!(p["status"], "building");
    assert_eq!(p["metadata"]["phase"], "one");
    let st = b.ok(&["status"]);
    assert_eq!(st["completed"], 1);
    assert_eq!(st["open_questions"], 1);
    assert_eq!(st["workers"]["offline"], 1);

    // Errors are one object too, including when no board is found.
    let r = run_cmd(
        vine()
            .arg("--json")
            .arg("--dir")
            .arg(b.tmp.path().join("nowhere"))
            .arg("status"),
    );
    assert_eq!(r.code, 2);
    assert_eq!(one_object(&r)["error"]["kind"], "no-board");
}

// ---------------------------------------------------------------------------------------------
// Repair
// ---------------------------------------------------------------------------------------------

/// The `files` entry of a repair report for `name`.
fn repaired_file<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["file"] == name)
        .unwrap_or_else(|| panic!("repair did not report {name}: {report}"))
}

/// Checks the backup a repair made of `name` holds exactly the damaged bytes.
fn check_backup(b: &TestBoard, file: &Value, name: &str, damaged: &[u8]) {
    let backup = file["backup"].as_str().unwrap();
    assert!(
        backup.starts_with(&format!("{name}.damaged-")),
        "backup name {backup}"
    );
    assert_eq!(
        b.read(backup),
        damaged,
        "the backup keeps the damaged bytes"
    );
}

#[test]
fn repair_rebuilds_a_cut_off_queue() {
    let b = TestBoard::new();
    let a = b.add("first", &["--meta", "n=1"]);
    let c = b.add("second", &["--instructions", "do the second thing"]);
    let _lost = b.add(
        "third {with} \"braces\" in it",
        &["--metadata", r#"{"deep": {"x": [1, {"y": 2}]}}"#],
    );
    let text = b.read(QUEUE);
    // Cut the file in the middle of the third entry (inside its nested metadata).
    let at = text
        .windows(6)
        .position(|w| w == b"\"deep\"")
        .expect("third entry")
        + 3;
    let damaged = text[..at].to_vec();
    b.write(QUEUE, &damaged);
    b.expect(5, &["claim", "--worker", "w1"]);

    let report = b.ok(&["repair"]);
    let f = repaired_file(&report, QUEUE);
    assert_eq!(f["kept"], 2, "{report}");
    let dropped = f["dropped"].as_array().unwrap();
    assert_eq!(dropped.len(), 1, "{report}");
    check_backup(&b, f, QUEUE, &damaged);
    assert_eq!(b.queue_ids(), vec![a, c], "the readable entries survive");
    assert_eq!(report["files"].as_array().unwrap().len(), 1, "{report}");

    // The board works again.
    let t = b.claim("w1");
    assert_eq!(t["id"], a);
    let v = b.ok(&["claim", "--worker", "w2"]);
    assert_eq!(v["claim"]["instructions"], "do the second thing");
    b.ok(&["complete", &a.to_string(), "--worker", "w1"]);
    b.add("after repair", &[]);
    // A second repair finds nothing.
    assert_eq!(b.ok(&["repair"])["files"], json!([]));
}

#[test]
fn repair_drops_only_the_bad_entry_in_the_middle_of_the_queue() {
    let b = TestBoard::new();
    let ids: Vec<u64> = (1..=3).map(|i| b.add(&format!("task {i}"), &[])).collect();
    let mut tasks = b.queue();
    tasks[1]["status"] = json!("exploded");
    let damaged = serde_json::to_vec_pretty(&tasks).unwrap();
    b.write(QUEUE, &damaged);
    b.expect(5, &["add", "x"]);

    let report = b.ok(&["repair"]);
    let f = repaired_file(&report, QUEUE);
    assert_eq!(f["kept"], 2);
    let dropped = f["dropped"].as_array().unwrap();
    assert_eq!(dropped.len(), 1, "{report}");
    check_backup(&b, f, QUEUE, &damaged);
    assert_eq!(b.queue_ids(), vec![ids[0], ids[2]]);
    // A second repair has nothing left to do.
    let r = b.run(&["repair"]);
    assert_eq!(r.code, 0);
    assert!(r.stdout.contains("Nothing to repair"), "{r:?}");
}

#[test]
fn repair_drops_a_corrupt_line_in_the_middle_of_the_log() {
    let b = TestBoard::new();
    for i in 1..=3 {
        b.ok(&["msg", "send", &format!("m{i}")]);
    }
    let q = b.ok(&["ask", "q4?"])["message"]["seq"].as_u64().unwrap();
    assert_eq!(q, 4);
    let text = String::from_utf8(b.read(LOG)).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines[1] = "{\"timestamp\": \"2026-01-01T00:00:00Z\", \"agent\": oops";
    let damaged = format!("{}\n", lines.join("\n")).into_bytes();
    b.write(LOG, &damaged);

    let report = b.ok(&["repair"]);
    let f = repaired_file(&report, LOG);
    assert_eq!(f["kept"], 3, "{report}");
    assert_eq!(f["dropped"].as_array().unwrap().len(), 1, "{report}");
    check_backup(&b, f, LOG, &damaged);
    let msgs = b.ok(&["msg", "read"])["messages"].clone();
    let texts: Vec<&str> = msgs
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["message"].as_str().unwrap())
        .collect();
    assert_eq!(texts, vec!["m1", "m3", "q4?"]);
    // Numbering continues after the last entry; the question can still be answered.
    let m = b.ok(&["msg", "send", "m5"]);
    assert_eq!(m["message"]["seq"], 5);
    b.ok(&["answer", "4", "yes"]);
    assert_eq!(b.ok(&["questions"])["questions"], json!([]));
    assert_eq!(b.ok(&["repair"])["files"], json!([]));
}

#[test]
fn repair_keeps_the_readable_workers_of_a_cut_off_worker_file() {
    let b = TestBoard::new();
    b.ok(&["register", "--worker", "w1", "--capability", "python"]);
    b.ok(&["register", "--worker", "w2"]);
    let text = b.read(WORKERS);
    let at = text.windows(4).position(|w| w == b"\"w2\"").unwrap() + 12;
    let damaged = text[..at].to_vec();
    b.write(WORKERS, &damaged);
    b.expect(5, &["register", "--worker", "w3"]);

    let report = b.ok(&["repair"]);
    let f = repaired_file(&report, WORKERS);
    assert_eq!(f["kept"], 1, "{report}");
    assert!(!f["dropped"].as_array().unwrap().is_empty(), "{report}");
    check_backup(&b, f, WORKERS, &damaged);
    let workers = b.ok(&["workers"])["workers"].clone();
    assert_eq!(workers.as_array().unwrap().len(), 1);
    assert_eq!(workers[0]["id"], "w1");
    assert_eq!(workers[0]["capabilities"], json!(["python"]));
    b.ok(&["register", "--worker", "w2"]);
}

#[test]
fn repair_of_a_garbage_worker_file_reports_what_it_dropped() {
    let b = TestBoard::new();
    b.ok(&["register", "--worker", "w1"]);
    let garbage = b"this is not JSON at all";
    b.write(WORKERS, garbage);
    b.expect(5, &["claim", "--worker", "w1"]);

    let report = b.ok(&["repair"]);
    let f = repaired_file(&report, WORKERS);
    check_backup(&b, f, WORKERS, garbage);
    assert_eq!(f["kept"], 0);
    assert_eq!(b.ok(&["workers"])["workers"], json!([]));
    b.ok(&["register", "--worker", "w1"]);
    assert!(
        !f["dropped"].as_array().unwrap().is_empty(),
        "repair threw the whole content of {WORKERS} away but reports dropping nothing: {report}"
    );
}

#[test]
fn repair_of_a_garbage_queue_reports_what_it_dropped() {
    let b = TestBoard::new();
    b.add("lost", &[]);
    let garbage = b"\x00\x01 binary garbage";
    b.write(QUEUE, garbage);

    let report = b.ok(&["repair"]);
    let f = repaired_file(&report, QUEUE);
    check_backup(&b, f, QUEUE, garbage);
    assert_eq!(f["kept"], 0);
    assert_eq!(b.queue_ids(), Vec::<u64>::new());
    b.add("works again", &[]);
    assert!(
        !f["dropped"].as_array().unwrap().is_empty(),
        "repair threw the whole content of {QUEUE} away but reports dropping nothing: {report}"
    );
}

#[test]
fn repair_resets_damaged_progress_and_settings() {
    let b = TestBoard::new();
    b.write(PROGRESS, "{");
    b.expect(5, &["progress", "set", "--step", "1"]);
    let report = b.ok(&["repair"]);
    let f = repaired_file(&report, PROGRESS);
    assert!(!f["dropped"].as_array().unwrap().is_empty());
    b.ok(&["progress", "set", "--step", "1"]);

    b.write(BOARD_FILE, "[]");
    b.expect(5, &["add", "x"]);
    let report = b.ok(&["repair"]);
    repaired_file(&report, BOARD_FILE);
    b.add("x", &[]);
}

#[test]
fn repair_on_a_healthy_board_changes_nothing() {
    let b = TestBoard::new();
    let a = b.add("a", &["--instructions", "text"]);
    b.add("b", &[]);
    b.claim("w1");
    b.ok(&["complete", &a.to_string(), "--worker", "w1"]);
    b.ok(&["compact"]);
    b.ok(&["msg", "send", "hello"]);
    b.ok(&["ask", "q?"]);
    b.ok(&["progress", "set", "--step", "1"]);
    let before = b.snapshot();
    assert!(before.contains_key(ARCHIVE));

    let report = b.ok(&["repair"]);
    assert_eq!(report["files"], json!([]), "{report}");
    assert_unchanged(&before, &b, "repair of a healthy board");
    let r = b.run(&["repair"]);
    assert_eq!(r.code, 0);
    assert!(r.stdout.contains("Nothing to repair"), "{r:?}");
    assert_unchanged(&before, &b, "repair of a healthy board");
}

#[test]
fn repair_removes_the_temp_files_a_killed_writer_left_beside_board_and_instruction_files() {
    let b = TestBoard::new();
    let a = b.add("a", &["--instructions", "text"]);
    // What a writer killed between writing a temp file and renaming it leaves behind.
    let left = [
        ".task-queue.json.tmp".to_string(),
        format!("tasks/.task-{a}-instructions.md.tmp"),
    ];
    for name in &left {
        fs::write(b.path(name), "half").unwrap();
    }
    // Files that only look alike are kept: a visible one, one in a folder below `tasks/`.
    fs::create_dir_all(b.path("tasks/notes")).unwrap();
    for name in ["tasks/plan.tmp", "tasks/notes/.draft.md.tmp"] {
        fs::write(b.path(name), "mine").unwrap();
    }
    b.ok(&["repair"]);
    for name in &left {
        assert!(!b.path(name).exists(), "{name} is still there");
    }
    for name in ["tasks/plan.tmp", "tasks/notes/.draft.md.tmp"] {
        assert_eq!(fs::read_to_string(b.path(name)).unwrap(), "mine", "{name}");
    }
    let c = b.ok(&["claim", "--worker", "w1"]);
    assert_eq!(c["claim"]["task"]["id"], json!(a), "{c}");
    assert_eq!(c["claim"]["instructions"], json!("text"), "{c}");
}

// ---------------------------------------------------------------------------------------------
// Board discovery
// ---------------------------------------------------------------------------------------------

/// A temp dir with no `.vine/` in any folder above it, so discovery cannot find a stray board.
fn discovery_root() -> TempDir {
    for base in [
        std::env::temp_dir(),
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")),
    ] {
        if base.ancestors().all(|a| !a.join(".vine").is_dir()) {
            fs::create_dir_all(&base).unwrap();
            return tempfile::tempdir_in(base).unwrap();
        }
    }
    panic!("every candidate temp folder has a .vine/ above it");
}

#[test]
fn board_discovery_init_subdirectories_vine_dir_and_dir() {
    let root = discovery_root();
    let top = root.path();

    // No board anywhere: exit 2 and a hint to run `vine init`.
    let r = run_cmd(vine().current_dir(top).arg("status"));
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("vine init"), "{r:?}");
    let r = run_cmd(vine().current_dir(top).args(["add", "x", "--json"]));
    assert_eq!(r.code, 2);
    let v = one_object(&r);
    assert_eq!(v["error"]["kind"], "no-board");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("vine init")
    );

    // `vine init` creates .vine/ with the board files.
    let r = run_cmd(vine().current_dir(top).arg("init"));
    assert_eq!(r.code, 0, "{r:?}");
    let board = top.join(".vine");
    for f in [QUEUE, WORKERS, PROGRESS, LOG, BOARD_FILE] {
        assert!(board.join(f).is_file(), "vine init made no {f}");
    }
    assert!(board.join("tasks").is_dir());
    assert_eq!(fs::read_to_string(board.join(QUEUE)).unwrap().trim(), "[]");

    // Commands run in a subfolder find it.
    let sub = top.join("a/b/c");
    fs::create_dir_all(&sub).unwrap();
    let r = run_cmd(vine().current_dir(&sub).args(["add", "from below"]));
    assert_eq!(r.code, 0, "{r:?}");
    let q = fs::read_to_string(board.join(QUEUE)).unwrap();
    assert!(q.contains("from below"), "{q}");

    // init again keeps what is there.
    let before = fs::read(board.join(QUEUE)).unwrap();
    let r = run_cmd(
        vine()
            .current_dir(&sub)
            .args(["init", top.join(".vine").to_str().unwrap()]),
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(fs::read(board.join(QUEUE)).unwrap(), before);

    // VINE_DIR names another board, even from inside the first one's tree.
    let other = top.join("other");
    let r = run_cmd(vine().current_dir(top).args([
        "init",
        "other",
        "--lease",
        "90s",
        "--stale-after",
        "1m",
        "--max-retries",
        "5",
        "--archive-after",
        "7",
    ]));
    assert_eq!(r.code, 0, "{r:?}");
    let settings: Value =
        serde_json::from_slice(&fs::read(other.join(BOARD_FILE)).unwrap()).unwrap();
    assert_eq!(settings["settings"]["lease_secs"], 90);
    assert_eq!(settings["settings"]["stale_after_secs"], 60);
    assert_eq!(settings["settings"]["max_retries"], 5);
    assert_eq!(settings["settings"]["archive_after"], 7);
    let r = run_cmd(
        vine()
            .current_dir(&sub)
            .env("VINE_DIR", &other)
            .args(["add", "via env"]),
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        fs::read_to_string(other.join(QUEUE))
            .unwrap()
            .contains("via env")
    );
    assert!(
        !fs::read_to_string(board.join(QUEUE))
            .unwrap()
            .contains("via env")
    );

    // --dir beats VINE_DIR.
    let r = run_cmd(
        vine()
            .current_dir(top)
            .env("VINE_DIR", &other)
            .arg("--dir")
            .arg(&board)
            .args(["add", "via dir"]),
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        fs::read_to_string(board.join(QUEUE))
            .unwrap()
            .contains("via dir")
    );
    assert!(
        !fs::read_to_string(other.join(QUEUE))
            .unwrap()
            .contains("via dir")
    );

    // VINE_DIR to a missing folder, or --dir to a folder that is not a board: exit 2.
    let r = run_cmd(
        vine()
            .current_dir(&sub)
            .env("VINE_DIR", top.join("missing"))
            .arg("status"),
    );
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("vine init"), "{r:?}");
    let r = run_cmd(
        vine()
            .current_dir(top)
            .arg("--dir")
            .arg(top.join("a"))
            .arg("status"),
    );
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("vine init"), "{r:?}");

    // init honours --dir and VINE_DIR when given no folder.
    let r = run_cmd(vine().current_dir(top).args(["--dir", "third", "init"]));
    assert_eq!(r.code, 0, "{r:?}");
    assert!(top.join("third").join(QUEUE).is_file());
    let r = run_cmd(
        vine()
            .current_dir(top)
            .env("VINE_DIR", top.join("fourth"))
            .arg("init"),
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert!(top.join("fourth").join(QUEUE).is_file());
}

#[test]
fn worker_id_comes_from_flag_or_environment() {
    let b = TestBoard::new();
    b.add("one", &[]);
    b.add("two", &[]);
    let r = run_cmd(b.cmd(&["claim", "--json"]).env("VINE_WORKER", "env-w"));
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(one_object(&r)["claim"]["task"]["claimed_by"], "env-w");
    let r = run_cmd(b.cmd(&["claim", "--json"]).env("WORKER_ID", "old-style"));
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(one_object(&r)["claim"]["task"]["claimed_by"], "old-style");
    let stderr = b.fails(2, &["claim"]);
    assert!(stderr.contains("--worker"), "{stderr}");
    // The message sender defaults to the worker too.
    let r = run_cmd(
        b.cmd(&["msg", "send", "hi", "--json"])
            .env("VINE_WORKER", "env-w"),
    );
    assert_eq!(one_object(&r)["message"]["agent"], "env-w");
    let v = b.ok(&["msg", "send", "hi"]);
    assert_eq!(v["message"]["agent"], "coordinator");
}

#[test]
fn the_task_comes_from_vine_task_when_not_given() {
    let b = TestBoard::new();
    let one = b.add("one", &[]);
    let two = b.add("two", &[]);
    assert_eq!(b.claim("w1")["id"], one);
    assert_eq!(b.claim("w1")["id"], two);
    let with_task = |args: &[&str], task: &str| {
        run_cmd(b.cmd(args).env("VINE_WORKER", "w1").env("VINE_TASK", task))
    };
    // ask: the question is about $VINE_TASK.
    let r = with_task(&["ask", "which file?", "--json"], &one.to_string());
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(one_object(&r)["message"]["task_id"], one);
    // An explicit id wins over $VINE_TASK.
    let r = with_task(&["complete", &two.to_string(), "--json"], &one.to_string());
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(b.show(two)["status"], "completed");
    assert_eq!(b.show(one)["status"], "in_progress");
    let r = with_task(
        &["fail", "--error", "no", "--no-retry", "--json"],
        &one.to_string(),
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(b.show(one)["status"], "failed");
    // Without either, or with a $VINE_TASK that is no id: a usage error naming the argument.
    let before = b.snapshot();
    let r = run_cmd(b.cmd(&["complete"]).env("VINE_WORKER", "w1"));
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("<ID>"), "{}", r.stderr);
    let r = with_task(&["release"], "abc");
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("'abc'"), "{}", r.stderr);
    assert_unchanged(&before, &b, "a complete without a task");
    // The help says where the default comes from.
    let r = run_cmd(&mut b.cmd(&["complete", "--help"]));
    assert!(r.stdout.contains("VINE_TASK"), "{}", r.stdout);
}

#[test]
fn claude_sessions_are_recorded_listed_and_charged_to_their_tasks() {
    let b = TestBoard::new();
    let id = b.add("one", &[]);
    let record = |session: &str, cost: f64, key: &str| {
        let req = json!({"op": {"op": "record-run", "session": session, "worker": "w1",
            "task": id, "attempt": 1, "turns": 2, "cost_usd": cost, "outcome": "success",
            "why": "no earlier session", "usage": {"input_tokens": 5, "output_tokens": 7}},
            "key": key});
        b.run(&["op", &req.to_string()])
    };
    for (session, cost, key) in [("s-1", 0.5, "k1"), ("s-1", 0.5, "k1"), ("s-2", 0.25, "k2")] {
        let r = record(session, cost, key);
        assert_eq!(r.code, 0, "{r:?}");
    }
    let v = b.ok(&["sessions"]);
    let ids: Vec<&str> = v["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["s-1", "s-2"]);
    // The retried record (same key) was counted once: 0.5 + 0.25.
    let cost = &b.show(id)["cost"];
    assert_eq!(cost["runs"], 2, "{cost}");
    assert_eq!(cost["turns"], 4, "{cost}");
    assert_eq!(cost["cost_usd"], 0.75, "{cost}");
    assert_eq!(cost["usage"]["output_tokens"], 14, "{cost}");
    let text = b.run(&["show", &id.to_string()]).stdout;
    assert!(text.contains("claude runs: 2 (4 turns, $0.7500"), "{text}");
    // The board's totals, in all and by worker.
    let st = b.ok(&["status"]);
    assert_eq!(st["claude"]["total"]["runs"], 2, "{st}");
    assert_eq!(st["claude"]["by_worker"]["w1"]["cost_usd"], 0.75, "{st}");
    assert_eq!(st["claude"]["live_sessions"], 2, "{st}");
    let text = b.run(&["status"]).stdout;
    assert!(
        text.contains("Claude: 2 runs, 4 turns, $0.7500 (w1 $0.7500)"),
        "{text}"
    );
    // Two sessions, each started one task attempt afresh: no reuse yet.
    assert_eq!(st["claude"]["reuse"]["task_starts"], 2, "{st}");
    assert!(
        text.contains("0 of 2 task starts reused a session (0%)"),
        "{text}"
    );
    let text = b.run(&["sessions"]).stdout;
    assert!(text.contains("In all: 2 runs, 4 turns, $0.7500"), "{text}");
    let end = json!({"op": {"op": "end-session", "session": "s-1", "reason": "idle 31m"}});
    assert_eq!(b.run(&["op", &end.to_string()]).code, 0);
    assert_eq!(b.ok(&["sessions"])["sessions"].as_array().unwrap().len(), 1);
    let text = b.run(&["sessions", "--all"]).stdout;
    assert!(
        text.contains("s-1  w1  ended") && text.contains("ended: idle 31m"),
        "{text}"
    );
    // A damaged sessions file: reads say so (exit 5), changes are refused, repair keeps a copy.
    b.write("sessions.json", "[{\"id\": 1}]");
    let before = b.snapshot();
    assert_eq!(record("s-3", 0.1, "k3").code, 5);
    assert_unchanged(&before, &b, "a run recorded on a damaged sessions file");
    let r = b.run(&["sessions"]);
    assert_eq!(r.code, 5, "{r:?}");
    assert!(
        r.stderr.contains("sessions.json") && r.stderr.contains("vine repair"),
        "{}",
        r.stderr
    );
    let v = b.ok(&["repair"]);
    assert_eq!(v["files"][0]["file"], "sessions.json", "{v}");
    assert_eq!(record("s-3", 0.1, "k3").code, 0);
}

// ---------------------------------------------------------------------------------------------
// Task life
// ---------------------------------------------------------------------------------------------

#[test]
fn instructions_are_stored_and_printed_on_claim() {
    let b = TestBoard::new();
    let text = "# Objective\nWrite hello.txt\n\n## Steps\n1. open\n2. write `Hello`\n";
    let id = b.add(
        "Create hello.txt",
        &[
            "--instructions",
            text,
            "--context",
            "docs/spec.md",
            "--context",
            "./src/app.py",
        ],
    );
    let rel = format!("tasks/task-{id}-instructions.md");
    assert_eq!(fs::read_to_string(b.path(&rel)).unwrap(), text);
    let t = b.show(id);
    assert_eq!(t["instruction_file"], rel);
    assert_eq!(t["context_files"], json!(["docs/spec.md", "./src/app.py"]));

    // Human output of claim prints the instruction text and the context files.
    let r = b.run(&["claim", "--worker", "w1"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout.contains(&format!("Claimed task {id}")),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains(text.trim_end()), "{}", r.stdout);
    assert!(r.stdout.contains("docs/spec.md"), "{}", r.stdout);
    assert!(
        r.stdout
            .contains(&format!("vine complete {id} --worker w1 --attempt 1")),
        "{}",
        r.stdout
    );

    // JSON output of claim carries the text as `instructions`.
    let from = b.outside("local.md", "from a local file\n");
    let id2 = b.add("second", &["--instructions-from", from.to_str().unwrap()]);
    fs::write(b.path("tasks/shared.md"), "shared board file").unwrap();
    let id3 = b.add("third", &["--instruction-file", "tasks/shared.md"]);
    let v = b.ok(&["claim", "--worker", "w2"]);
    assert_eq!(v["claim"]["task"]["id"], id2);
    assert_eq!(v["claim"]["instructions"], "from a local file\n");
    assert_eq!(
        fs::read_to_string(b.path(&format!("tasks/task-{id2}-instructions.md"))).unwrap(),
        "from a local file\n"
    );
    let v = b.ok(&["claim", "--worker", "w3"]);
    assert_eq!(v["claim"]["task"]["id"], id3);
    assert_eq!(v["claim"]["task"]["instruction_file"], "tasks/shared.md");
    assert_eq!(v["claim"]["instructions"], "shared board file");

    // A task without instructions has none in the claim.
    let id4 = b.add("fourth", &[]);
    let v = b.ok(&["claim", "--worker", "w4"]);
    assert_eq!(v["claim"]["task"]["id"], id4);
    assert!(v["claim"].get("instructions").is_none(), "{v}");
}

#[test]
fn higher_priority_is_claimed_first_then_oldest() {
    let b = TestBoard::new();
    let normal_old = b.add("normal old", &[]);
    let low = b.add("low", &["--priority", "low"]);
    let normal_new = b.add("normal new", &["--priority", "normal"]);
    let high = b.add("high", &["--priority", "high"]);
    let order: Vec<u64> = (0..4)
        .map(|i| b.claim(&format!("w{i}"))["id"].as_u64().unwrap())
        .collect();
    assert_eq!(order, vec![high, normal_old, normal_new, low]);
    b.claim_nothing("w9");
}

#[test]
fn dependencies_wait_until_completed() {
    let b = TestBoard::new();
    let a = b.add("a", &[]);
    let c = b.add("c", &["--after", &a.to_string(), "--priority", "high"]);
    assert_eq!(b.show(c)["depends_on"], json!([a]));
    // The high-priority dependent is not claimable before its dependency completes.
    assert_eq!(b.claim("w1")["id"], a);
    let reason = b.claim_nothing("w2");
    assert!(reason.contains("wait for dependencies"), "{reason}");
    assert!(b.show(c).get("blocked").is_none());
    b.ok(&["complete", &a.to_string(), "--worker", "w1"]);
    assert_eq!(b.claim("w2")["id"], c);
}

#[test]
fn dependents_of_failed_or_cancelled_tasks_are_blocked_and_never_claimed() {
    let b = TestBoard::new();
    let a = b.add("a", &[]);
    let dep_a = b.add("after a", &["--after", &a.to_string()]);
    let dep_dep = b.add("after after a", &["--after", &dep_a.to_string()]);
    let d = b.add("d", &["--priority", "low"]);
    let dep_d = b.add(
        "after d",
        &["--after", &d.to_string(), "--priority", "high"],
    );

    assert_eq!(b.claim("w1")["id"], a);
    let failed = b.ok(&[
        "fail",
        &a.to_string(),
        "--worker",
        "w1",
        "--error",
        "broken",
        "--no-retry",
    ]);
    assert_eq!(failed["task"]["status"], "failed");
    b.ok(&["cancel", &d.to_string(), "--reason", "not needed"]);
    assert_eq!(b.show(d)["last_error"], "cancelled: not needed");

    for id in [dep_a, dep_dep, dep_d] {
        let t = b.show(id);
        assert_eq!(t["status"], "pending");
        assert_eq!(t["blocked"], true, "{t}");
    }
    let blocked = b.ok(&["tasks", "--status", "blocked"]);
    assert_eq!(ids_of(&blocked["tasks"]), vec![dep_a, dep_dep, dep_d]);
    let all = b.ok(&["tasks"]);
    for t in all["tasks"].as_array().unwrap() {
        let expect = [dep_a, dep_dep, dep_d].contains(&t["id"].as_u64().unwrap());
        assert_eq!(t.get("blocked").is_some_and(|x| x == true), expect, "{t}");
    }
    let r = b.run(&["show", &dep_dep.to_string()]);
    assert!(r.stdout.contains("status: blocked"), "{}", r.stdout);
    assert_eq!(b.ok(&["status"])["blocked"], 3);

    let reason = b.claim_nothing("w2");
    assert!(reason.contains("blocked"), "{reason}");
    b.ok(&["register", "--worker", "w2"]);
    let v = b.expect(
        3,
        &["should-continue", "--worker", "w2", "--max-idle", "0s"],
    );
    assert_eq!(v["continue"], false);

    // Retrying the failed task unblocks its dependents (they then wait for it again).
    b.ok(&["retry", &a.to_string()]);
    assert!(b.show(dep_a).get("blocked").is_none());
    assert_eq!(b.claim("w3")["id"], a);
    b.claim_nothing("w4");
}

#[test]
fn required_capabilities_decide_who_may_claim() {
    let b = TestBoard::new();
    let id = b.add(
        "needs python and gpu",
        &["--requires", "python", "--requires", "gpu"],
    );
    assert_eq!(b.show(id)["requires"], json!(["python", "gpu"]));
    // An unregistered worker has no capabilities.
    let reason = b.claim_nothing("w0");
    assert!(reason.contains("capabilities"), "{reason}");
    b.ok(&["register", "--worker", "w1", "--capability", "python"]);
    b.claim_nothing("w1");
    let v = b.ok(&[
        "register", "--worker", "w2", "-c", "python", "-c", "gpu", "-c", "docker",
    ]);
    assert_eq!(
        v["worker"]["capabilities"],
        json!(["python", "gpu", "docker"])
    );
    assert_eq!(b.claim("w2")["id"], id);
    // Re-registering replaces the capabilities.
    b.ok(&["register", "--worker", "w1", "-c", "python", "-c", "gpu"]);
    let id2 = b.add("again", &["--requires", "gpu"]);
    assert_eq!(b.claim("w1")["id"], id2);
}

#[test]
fn assigned_tasks_wait_for_their_worker_until_it_is_offline() {
    let b = TestBoard::new();
    let id = b.add("for w1", &["--assign", "w1"]);
    assert_eq!(b.show(id)["assigned_to"], "w1");
    // Not yet registered counts as alive.
    let reason = b.claim_nothing("w2");
    assert!(reason.contains("assigned to other workers"), "{reason}");
    b.ok(&["register", "--worker", "w1"]);
    b.claim_nothing("w2");
    // Once w1 is offline, others may take it.
    let v = b.ok(&["deregister", "--worker", "w1"]);
    assert_eq!(v["worker"]["state"], "offline");
    assert_eq!(b.claim("w2")["id"], id);

    // The assignee itself takes its task, and deregistering returns held tasks to the queue.
    let id2 = b.add("for w3", &["--assign", "w3"]);
    let other = b.add("for anyone", &[]);
    assert_eq!(b.claim("w3")["id"], id2);
    assert_eq!(b.claim("w4")["id"], other);
    let v = b.ok(&["deregister", "--worker", "w3"]);
    assert_eq!(v["released"], json!([id2]));
    let t = b.show(id2);
    assert_eq!(t["status"], "pending");
    assert_eq!(t["attempts"], 0);
    assert!(t["claimed_by"].is_null());
    assert_eq!(b.claim("w5")["id"], id2);
}

#[test]
fn failed_attempts_retry_with_backoff_then_fail_for_good() {
    let b = TestBoard::new();
    let id = b.add("flaky", &["--max-retries", "1"]);
    let s = id.to_string();
    b.claim("w1");
    let t = b.ok(&["fail", &s, "--worker", "w1", "--error", "first try broke"])["task"].clone();
    assert_eq!(t["status"], "pending", "{t}");
    assert_eq!(t["attempts"], 1);
    assert_eq!(t["last_error"], "first try broke");
    assert!(t["claimed_by"].is_null());
    assert!(
        ts(&t["not_before"]) > Utc::now(),
        "backoff lies in the future: {t}"
    );
    let reason = b.claim_nothing("w2");
    assert!(reason.contains("retry delay"), "{reason}");

    // With no backoff the retry is claimable at once; the second failure is final.
    b.set_setting("retry_backoff_secs", json!(0));
    let id = b.add("flaky again", &["--max-retries", "1"]);
    let s = id.to_string();
    b.claim("w1");
    let t = b.ok(&["fail", &s, "--worker", "w1", "--error", "first try broke"])["task"].clone();
    assert_eq!(t["status"], "pending", "{t}");
    let t = b.claim("w2");
    assert_eq!(t["id"], id);
    assert_eq!(t["attempts"], 2);
    let t = b.ok(&["fail", &s, "--worker", "w2", "--error", "second try broke"])["task"].clone();
    assert_eq!(t["status"], "failed", "{t}");
    assert_eq!(t["attempts"], 2);
    assert!(t.get("ended_at").is_some());
    b.claim_nothing("w3");
    let r = b.run(&["show", &s]);
    assert!(r.stdout.contains("vine retry"), "{}", r.stdout);

    // --max-retries 0 fails at the first failure; retry resets the attempts.
    let id0 = b.add("one shot", &["--max-retries", "0"]);
    b.claim("w1");
    let t = b.ok(&["fail", &id0.to_string(), "--worker", "w1", "--error", "no"])["task"].clone();
    assert_eq!(t["status"], "failed");
    assert_eq!(b.ok(&["status"])["failed"], 2);
    let t = b.ok(&["retry", &id0.to_string()])["task"].clone();
    assert_eq!(t["status"], "pending");
    assert_eq!(t["attempts"], 0);
    let t = b.claim("w1");
    assert_eq!(t["id"], id0);
    assert_eq!(t["attempts"], 1);
}

#[test]
fn release_gives_the_task_back_without_counting_an_attempt() {
    let b = TestBoard::new();
    let id = b.add("give back", &[]);
    assert_eq!(b.claim("w1")["attempts"], 1);
    let t = b.ok(&[
        "release",
        &id.to_string(),
        "--worker",
        "w1",
        "--attempt",
        "1",
    ])["task"]
        .clone();
    assert_eq!(t["status"], "pending");
    assert_eq!(t["attempts"], 0);
    assert!(t["claimed_by"].is_null());
    assert!(t.get("not_before").is_none(), "{t}");
    let w = b.ok(&["workers"])["workers"][0].clone();
    assert_eq!(w["state"], "idle");
    assert!(w["current_task"].is_null());
    // Claimable again at once, still on its first attempt.
    let t = b.claim("w2");
    assert_eq!(t["id"], id);
    assert_eq!(t["attempts"], 1);
}

#[test]
fn cancel_takes_a_task_out_of_play() {
    let b = TestBoard::new();
    let pending = b.add("pending", &[]);
    let held = b.add("held", &[]);
    assert_eq!(b.claim("w1")["id"], pending);
    assert_eq!(b.claim("w2")["id"], held);
    let t = b.ok(&["cancel", &held.to_string()])["task"].clone();
    assert_eq!(t["status"], "cancelled");
    assert!(t["claimed_by"].is_null());
    b.expect(4, &["complete", &held.to_string(), "--worker", "w2"]);
    let w2 = b.ok(&["workers"])["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["id"] == "w2")
        .cloned()
        .unwrap();
    assert_eq!(w2["tasks"], json!([]));
    assert_eq!(b.ok(&["status"])["cancelled"], 1);

    let p2 = b.add("never run", &[]);
    b.ok(&["cancel", &p2.to_string()]);
    b.claim_nothing("w3");
}

/// Lease expiry on five boards that share one timeline (to keep the waiting short):
/// - `own`: the claimant's own late write comes first and still counts;
/// - `lazy`: another write (an add) requeues the expired claim on the way;
/// - `b`: `requeue-stale` requeues it, and the old claimant's late result is refused but kept;
/// - `again`: the task is claimed again, so the first claim's `--attempt` is stale;
/// - `last`: a lease that lapses with no retries left fails the task;
/// - `hb`: a heartbeat carries a 2 s lease past its first end.
#[test]
fn expired_leases_are_requeued_unless_a_heartbeat_extends_them() {
    let own = TestBoard::new();
    let lazy = TestBoard::new();
    let b = TestBoard::new();
    let again = TestBoard::new();
    again.set_setting("retry_backoff_secs", json!(0));
    let last = TestBoard::new();
    let hb = TestBoard::new();

    let e = own.add("slow e", &["--lease", "1s"]);
    let c = lazy.add("slow c", &["--lease", "1s"]);
    let a = b.add("slow a", &["--lease", "1s"]);
    let long = b.add("long lease", &["--lease", "1h"]);
    let g = again.add("short", &["--lease", "1s"]);
    let one = last.add("one chance", &["--lease", "1s", "--max-retries", "0"]);
    let dep = last.add("after it", &["--after", &one.to_string()]);
    let h = hb.add("kept alive", &["--lease", "2s"]);

    let first_end = ts(&hb.claim("w1")["lease_expires_at"]);
    assert_eq!(own.claim("w3")["id"], e);
    assert_eq!(lazy.claim("w2")["id"], c);
    assert_eq!(b.claim("w1")["id"], a);
    assert_eq!(b.claim("w4")["id"], long);
    assert_eq!(again.claim("w1")["attempts"], 1);
    assert_eq!(last.claim("w1")["id"], one);
    assert_eq!(b.ok(&["requeue-stale"])["tasks"], json!([]));
    let started = Instant::now();
    sleep(Duration::from_millis(1300));

    // hb: a heartbeat a second or more into a 2 s lease moves its end.
    let v = hb.ok(&["heartbeat", "--worker", "w1"]);
    assert_eq!(v["worker"]["state"], "working");
    assert_eq!(v["worker"]["tasks"], json!([h]));
    let t = hb.show(h);
    assert!(ts(&t["lease_expires_at"]) > first_end, "{t}");

    // own: the claimant's own late write comes before anyone else's and still counts.
    own.ok(&[
        "complete",
        &e.to_string(),
        "--worker",
        "w3",
        "--result",
        "just in time",
    ]);
    assert_eq!(own.show(e)["status"], "completed");

    // lazy: reads show the expired claim taken back, as the next write will see it, but
    // write nothing; any other write takes it back for good on the way (here: an add).
    let queue_before = lazy.read(QUEUE);
    assert_eq!(
        lazy.show(c)["status"],
        "pending",
        "reads show the next write's view"
    );
    assert_eq!(lazy.read(QUEUE), queue_before, "reads change nothing");
    lazy.add("unrelated", &[]);
    let t = lazy.show(c);
    assert_eq!(t["status"], "pending", "{t}");
    assert_eq!(t["attempts"], 1, "a lapsed lease counts as an attempt");
    assert!(
        t["last_error"].as_str().unwrap().contains("lease expired"),
        "{t}"
    );
    assert!(t["claimed_by"].is_null());
    assert!(
        t["not_before"].is_null(),
        "claimable at once after a lapsed lease: {t}"
    );
    lazy.expect(4, &["complete", &c.to_string(), "--worker", "w2"]);

    // b: requeue-stale reports what it took back, and only that.
    let v = b.ok(&["requeue-stale"]);
    assert_eq!(v["tasks"], json!([a]));
    assert_eq!(b.show(a)["status"], "pending");
    assert_eq!(b.show(long)["status"], "in_progress");
    assert_eq!(b.ok(&["requeue-stale"])["tasks"], json!([]));
    let r = b.run(&["requeue-stale"]);
    assert!(r.stdout.contains("No claims to take back"), "{r:?}");

    // b: the old claimant's complete is refused; its result is kept in the log.
    let queue_before = b.read(QUEUE);
    let (code, v) = b.json(&[
        "complete",
        &a.to_string(),
        "--worker",
        "w1",
        "--attempt",
        "1",
        "--result",
        "late work on a",
    ]);
    assert_eq!(code, 4, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("lease expired"),
        "{v}"
    );
    assert_eq!(b.read(QUEUE), queue_before);
    let kept: Vec<Value> = b
        .lines(LOG)
        .into_iter()
        .filter(|m| m["kind"] == "result")
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(kept[0]["message"], "late work on a");
    assert_eq!(kept[0]["agent"], "w1");
    assert_eq!(kept[0]["task_id"], a);
    let raw = String::from_utf8(b.read(LOG)).unwrap();
    assert!(raw.contains("\"kind\":\"result\""), "{raw}");
    let msgs = b.ok(&["msg", "read"])["messages"].clone();
    assert!(
        msgs.as_array()
            .unwrap()
            .iter()
            .any(|m| m["message"] == "late work on a")
    );

    // again: the same worker claims again (the claim requeues the lapsed lease first), so
    // the first claim's attempt number is stale.
    let s = g.to_string();
    let t = again.claim("w1");
    assert_eq!(t["id"], g);
    assert_eq!(t["attempts"], 2);
    let (code, v) = again.json(&[
        "complete",
        &s,
        "--worker",
        "w1",
        "--attempt",
        "1",
        "--result",
        "stale",
    ]);
    assert_eq!(code, 4, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("attempt"),
        "{v}"
    );
    again.ok(&[
        "complete",
        &s,
        "--worker",
        "w1",
        "--attempt",
        "2",
        "--result",
        "fresh",
    ]);
    assert_eq!(again.show(g)["result"], "fresh");

    // last: out of retries, a lapsed lease fails the task and blocks its dependents.
    assert_eq!(last.ok(&["requeue-stale"])["tasks"], json!([one]));
    assert_eq!(last.show(one)["status"], "failed");
    assert_eq!(last.show(dep)["blocked"], true);
    let v = last.expect(4, &["complete", &one.to_string(), "--worker", "w1"]);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("lease expired"),
        "{v}"
    );

    // hb: past the first lease end, but the heartbeat moved it.
    sleep(Duration::from_millis(2300).saturating_sub(started.elapsed()));
    assert!(Utc::now() > first_end);
    assert_eq!(hb.ok(&["requeue-stale"])["tasks"], json!([]));
    assert_eq!(hb.show(h)["status"], "in_progress");
    hb.ok(&["complete", &h.to_string(), "--worker", "w1"]);
}

#[test]
fn heartbeat_extends_even_a_one_second_lease() {
    let b = TestBoard::new();
    let id = b.add("kept alive", &["--lease", "1s"]);
    b.claim("w1");
    sleep(Duration::from_millis(600));
    b.ok(&["heartbeat", "--worker", "w1"]);
    sleep(Duration::from_millis(600));
    // 1.2 s after the claim but only 0.6 s after the heartbeat: the lease still holds.
    assert_eq!(
        b.ok(&["requeue-stale"])["tasks"],
        json!([]),
        "a heartbeat 0.6 s into a 1 s lease did not extend it"
    );
    assert_eq!(b.show(id)["status"], "in_progress");
}

// ---------------------------------------------------------------------------------------------
// Clocks that are wrong
// ---------------------------------------------------------------------------------------------

/// Runs `vine --json ARGS` in a process whose clock is `offset` seconds off (debug builds of
/// `vine` honour `VINE_TEST_CLOCK_OFFSET`); returns the exit code, the JSON and stderr.
fn skewed(b: &TestBoard, offset: i64, args: &[&str]) -> (i32, Value, String) {
    let r = run_cmd(
        b.cmd(args)
            .arg("--json")
            .env("VINE_TEST_CLOCK_OFFSET", offset.to_string()),
    );
    let v = one_object(&r);
    (r.code, v, r.stderr)
}

#[test]
fn a_clock_an_hour_ahead_neither_takes_back_a_live_claim_nor_strands_a_task() {
    let b = TestBoard::with_init(&["--lease", "30m"]);
    let held = b.add("held by w1", &[]);
    b.claim("w1");
    // A process an hour ahead sees w1's 30-minute lease as long expired: it must not act on it.
    let (code, v, stderr) = skewed(&b, 3600, &["claim", "--worker", "w2"]);
    let t = b.show(held);
    assert_eq!(
        (&t["status"], &t["claimed_by"], &t["attempts"]),
        (&json!("in_progress"), &json!("w1"), &json!(1)),
        "the live claim was taken back: {t}"
    );
    assert_eq!(code, 3, "{v}");
    assert!(
        stderr.contains("clock is 1h ahead of the board's file system"),
        "one note says the clock is off: {stderr}"
    );
    let (code, v, _) = skewed(&b, 3600, &["requeue-stale"]);
    assert_eq!((code, &v["tasks"]), (0, &json!([])), "{v}");
    // A claim the fast process makes expires on the board's time, not an hour later.
    let short = b.add("short lease", &["--lease", "2s"]);
    let (code, v, _) = skewed(&b, 3600, &["claim", "--worker", "w3"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["claim"]["task"]["id"], short);
    let until = ts(&v["claim"]["task"]["lease_expires_at"]);
    assert!(
        (until - Utc::now()).num_seconds() < 60,
        "the lease runs on the fast clock: until {until}"
    );
    sleep(Duration::from_millis(2500));
    assert_eq!(b.ok(&["requeue-stale"])["tasks"], json!([short]));
    let t = b.show(short);
    assert_eq!(t["status"], "pending", "{t}");
    if !t["not_before"].is_null() {
        let wait = ts(&t["not_before"]) - Utc::now();
        assert!(wait.num_seconds() < 60, "claimable only in {wait}: {t}");
    }
}

#[test]
fn a_clock_behind_does_not_put_its_tasks_first() {
    let b = TestBoard::new();
    let first = b.add("added with a right clock", &[]);
    let (code, v, stderr) = skewed(&b, -3600, &["add", "added with a clock an hour behind"]);
    assert_eq!(code, 0, "{v}");
    let second = v["tasks"][0]["id"].as_u64().unwrap();
    assert!(second > first);
    assert_eq!(
        b.claim("w1")["id"],
        first,
        "tasks are claimed in the order added"
    );
    let created = |id: u64| ts(&b.show(id)["created_at"]);
    assert!(
        created(second) >= created(first),
        "the slow process stamped its task an hour early"
    );
    assert!(stderr.contains("1h behind"), "{stderr}");
    // Reads keep the reader's clock and change nothing: no note.
    let (code, _, stderr) = skewed(&b, -3600, &["status"]);
    assert_eq!(code, 0);
    assert!(stderr.is_empty(), "{stderr}");
}

// ---------------------------------------------------------------------------------------------
// Ids and plans
// ---------------------------------------------------------------------------------------------

#[test]
fn ids_are_unique_and_increasing_when_many_tasks_are_added_quickly() {
    let b = TestBoard::new();
    let plan: Vec<Value> = (0..50)
        .map(|i| {
            let mut e = json!({"key": format!("k{i}"), "description": format!("step {i}")});
            if i % 5 != 0 {
                e["after"] = json!([format!("k{}", i - 1)]);
            }
            e
        })
        .collect();
    let path = b.outside("plan50.json", &serde_json::to_string(&plan).unwrap());
    let v = b.ok(&["add", "--plan", path.to_str().unwrap()]);
    let plan_ids = ids_of(&v["tasks"]);
    assert_eq!(plan_ids.len(), 50);
    assert!(plan_ids.windows(2).all(|w| w[0] < w[1]), "{plan_ids:?}");
    for (i, t) in v["tasks"].as_array().unwrap().iter().enumerate() {
        assert_eq!(t["description"], format!("step {i}"));
        if i % 5 != 0 {
            assert_eq!(t["depends_on"], json!([plan_ids[i - 1]]), "{t}");
        } else {
            assert!(t.get("depends_on").is_none(), "{t}");
        }
    }

    let mut all = plan_ids.clone();
    for i in 0..5 {
        let id = b.add(&format!("quick {i}"), &[]);
        assert!(id > *all.last().unwrap(), "id {id} after {all:?}");
        all.push(id);
    }

    // Several processes at once still get distinct ids above every earlier one.
    let children: Vec<Child> = (0..8)
        .map(|i| {
            vine_std()
                .arg("--dir")
                .arg(&b.dir)
                .args(["--json", "add", &format!("parallel {i}")])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let last = *all.last().unwrap();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let id = v["tasks"][0]["id"].as_u64().unwrap();
        assert!(id > last);
        all.push(id);
    }
    let mut sorted = all.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), all.len(), "duplicate ids: {all:?}");
    let mut on_queue = b.queue_ids();
    on_queue.sort_unstable();
    assert_eq!(on_queue, sorted);
}

#[test]
fn a_plan_adds_tasks_with_dependencies_by_key() {
    let b = TestBoard::new();
    let existing = b.add("already there", &[]);
    fs::create_dir_all(b.tmp.path().join("notes")).unwrap();
    b.outside("notes/structure.md", "Create the app structure\n");
    fs::write(b.path("tasks/hello.md"), "board instructions").unwrap();
    let plan = json!([
        {"key": "structure", "description": "Create the Flask app structure",
         "instructions_from": "notes/structure.md", "priority": "high",
         "metadata": {"working_directory": "flask-demo"}},
        {"key": "hello", "description": "Add /hello", "after": ["structure", existing],
         "context_files": ["flask-demo/app.py"], "requires": ["python"], "lease": "20m",
         "instruction_file": "tasks/hello.md", "max_retries": 2},
        {"key": "tests", "description": "Test it", "after": ["hello", "structure"],
         "assign": "w7", "lease": 90, "instructions": "run pytest"},
        {"description": "no key", "priority": "low"}
    ]);
    let path = b.outside("plan.json", &plan.to_string());
    let v = b.ok(&["add", "--plan", path.to_str().unwrap()]);
    let t = v["tasks"].as_array().unwrap();
    assert_eq!(t.len(), 4);
    let ids = ids_of(&v["tasks"]);
    assert!(ids[0] > existing);
    assert_eq!(t[0]["priority"], "high");
    assert_eq!(t[0]["metadata"]["working_directory"], "flask-demo");
    assert_eq!(
        fs::read_to_string(b.path(&format!("tasks/task-{}-instructions.md", ids[0]))).unwrap(),
        "Create the app structure\n"
    );
    let mut deps: Vec<u64> = t[1]["depends_on"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap())
        .collect();
    deps.sort_unstable();
    assert_eq!(deps, vec![existing, ids[0]]);
    assert_eq!(t[1]["lease_secs"], 1200);
    assert_eq!(t[1]["max_retries"], 2);
    assert_eq!(t[1]["requires"], json!(["python"]));
    assert_eq!(t[1]["instruction_file"], "tasks/hello.md");
    assert_eq!(t[1]["context_files"], json!(["flask-demo/app.py"]));
    let mut deps: Vec<u64> = t[2]["depends_on"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap())
        .collect();
    deps.sort_unstable();
    assert_eq!(deps, vec![ids[0], ids[1]]);
    assert_eq!(t[2]["assigned_to"], "w7");
    assert_eq!(t[2]["lease_secs"], 90);
    assert_eq!(t[3]["priority"], "low");
    assert_eq!(b.queue().len(), 5);

    // The plan's order of work follows priorities and dependencies.
    assert_eq!(b.claim("w1")["id"], ids[0]);
    assert_eq!(b.claim("w2")["id"], existing);
    assert_eq!(b.claim("w3")["id"], ids[3]);
    b.claim_nothing("w4");
}

#[test]
fn a_bad_plan_adds_nothing() {
    let b = TestBoard::new();
    let existing = b.add("existing", &[]);
    b.outside("good.md", "fine");
    let before = b.snapshot();
    let plans: Vec<(&str, String)> = vec![
        ("cycle", json!([
            {"key": "a", "description": "A", "instructions": "written only if added", "after": ["c"]},
            {"key": "b", "description": "B", "after": ["a"]},
            {"key": "c", "description": "C", "after": ["b"]}
        ]).to_string()),
        ("two-cycle after a good entry", json!([
            {"key": "ok", "description": "fine"},
            {"key": "x", "description": "X", "after": ["y"]},
            {"key": "y", "description": "Y", "after": ["x"]}
        ]).to_string()),
        ("self dependency", json!([{"key": "a", "description": "A", "after": ["a"]}]).to_string()),
        ("unknown key", json!([
            {"key": "a", "description": "A", "instructions": "text"},
            {"key": "b", "description": "B", "after": ["nope"]}
        ]).to_string()),
        ("unknown task id", json!([{"description": "A", "after": [12345]}]).to_string()),
        ("one entry with an absolute context path", json!([
            {"key": "a", "description": "A", "instructions": "text"},
            {"key": "b", "description": "B", "context_files": ["/etc/passwd"]},
            {"description": "C", "after": ["a", existing]}
        ]).to_string()),
        ("one entry with a bad priority", json!([
            {"description": "A"}, {"description": "B", "priority": "urgent"}
        ]).to_string()),
        ("one entry with a bad worker", json!([
            {"description": "A"}, {"description": "B", "assign": "a b"}
        ]).to_string()),
        ("one entry with a bad lease", json!([
            {"description": "A"}, {"description": "B", "lease": "soon"}
        ]).to_string()),
        ("one entry with an empty description", json!([
            {"description": "A", "instructions_from": "good.md"}, {"description": "  "}
        ]).to_string()),
        ("one entry with an oversized description", json!([
            {"description": "A"}, {"description": "d".repeat(4097)}
        ]).to_string()),
        ("one entry with a missing instruction file", json!([
            {"description": "A"}, {"description": "B", "instruction_file": "tasks/none.md"}
        ]).to_string()),
        ("one entry with a missing instructions_from", json!([
            {"description": "A"}, {"description": "B", "instructions_from": "none.md"}
        ]).to_string()),
        ("an unknown field", json!([{"description": "A", "colour": "red"}]).to_string()),
        ("a duplicate key", json!([
            {"key": "a", "description": "A"}, {"key": "a", "description": "B"}
        ]).to_string()),
        ("an empty plan", "[]".to_string()),
        ("not a list", json!({"description": "A"}).to_string()),
        ("not JSON", "[{\"description\": ".to_string()),
    ];
    for (i, (what, text)) in plans.iter().enumerate() {
        let path = b.outside(&format!("bad-{i}.json"), text);
        let (code, v) = b.json(&["add", "--plan", path.to_str().unwrap()]);
        assert_eq!(code, 2, "a plan with {what}: {v}");
        assert_unchanged(&before, &b, &format!("a plan with {what}"));
    }
    let missing = b.tmp.path().join("missing-plan.json");
    b.expect(2, &["add", "--plan", missing.to_str().unwrap()]);
    assert_unchanged(&before, &b, "a missing plan file");
    assert_eq!(b.queue_ids(), vec![existing]);
}

// ---------------------------------------------------------------------------------------------
// Messages and questions
// ---------------------------------------------------------------------------------------------

#[test]
fn messages_are_numbered_and_filtered() {
    let b = TestBoard::new();
    let id = b.add("task", &[]);
    let m1 = b.ok(&["msg", "send", "first"])["message"].clone();
    let m2 = b.ok(&[
        "msg",
        "send",
        "second",
        "--as",
        "w1",
        "--task",
        &id.to_string(),
    ])["message"]
        .clone();
    let m3 = b.ok(&["msg", "send", "third", "--as", "human.ann"])["message"].clone();
    let seqs: Vec<u64> = [&m1, &m2, &m3]
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![1, 2, 3]);
    assert_eq!(m1["agent"], "coordinator");
    assert_eq!(m1["kind"], "message");
    assert_eq!(m2["agent"], "w1");
    assert_eq!(m2["task_id"], id);
    ts(&m1["timestamp"]);

    let read = |args: &[&str]| -> Vec<String> {
        let mut a = vec!["msg", "read"];
        a.extend_from_slice(args);
        b.ok(&a)["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["message"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(read(&[]), vec!["first", "second", "third"]);
    assert_eq!(read(&["--after", "1"]), vec!["second", "third"]);
    assert_eq!(read(&["--after", "3"]), Vec::<String>::new());
    assert_eq!(read(&["--after", "0", "--limit", "1"]), vec!["third"]);
    let since = m1["timestamp"].as_str().unwrap();
    assert_eq!(read(&["--since", since]), vec!["second", "third"]);
    assert_eq!(
        read(&["--since", "2000-01-01T00:00:00"]),
        vec!["first", "second", "third"]
    );
    assert_eq!(
        read(&["--since", "2999-01-01T00:00:00Z"]),
        Vec::<String>::new()
    );

    // The log file holds one JSON object a line, in order.
    let lines = b.lines(LOG);
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[2]["message"], "third");
    // Human output.
    let r = b.run(&["msg", "read", "--after", "2"]);
    assert_eq!(r.code, 0);
    assert_eq!(r.stdout.trim_end().lines().count(), 1, "{}", r.stdout);
    assert!(
        r.stdout.starts_with("#3 ") && r.stdout.contains("human.ann: third"),
        "{}",
        r.stdout
    );
}

#[test]
fn questions_and_answers() {
    let b = TestBoard::new();
    let id = b.add("task", &[]);
    let q1 = b.ok(&[
        "ask",
        "Which port?",
        "--as",
        "w1",
        "--task",
        &id.to_string(),
    ])["message"]
        .clone();
    let q2 = b.ok(&["ask", "Which database?", "--worker", "w2"])["message"].clone();
    assert_eq!(q1["kind"], "question");
    assert_eq!(q2["agent"], "w2");
    let (s1, s2) = (q1["seq"].as_u64().unwrap(), q2["seq"].as_u64().unwrap());

    let open = b.ok(&["questions"])["questions"].clone();
    assert_eq!(open.as_array().unwrap().len(), 2);

    let a = b.ok(&["answer", &s1.to_string(), "8080", "--as", "human.ann"])["message"].clone();
    assert_eq!(a["kind"], "answer");
    assert_eq!(a["reply_to"], s1);
    assert_eq!(a["task_id"], id, "an answer carries the question's task");
    assert_eq!(a["agent"], "human.ann");

    let open = b.ok(&["questions"])["questions"].clone();
    assert_eq!(open.as_array().unwrap().len(), 1);
    assert_eq!(open[0]["question"]["seq"], s2);
    assert_eq!(open[0]["answers"], json!([]));
    let all = b.ok(&["questions", "--all"])["questions"].clone();
    assert_eq!(all.as_array().unwrap().len(), 2);
    assert_eq!(all[0]["question"]["seq"], s1);
    assert_eq!(all[0]["answers"][0]["message"], "8080");
    let replies = b.ok(&["msg", "read", "--reply-to", &s1.to_string()])["messages"].clone();
    assert_eq!(replies.as_array().unwrap().len(), 1);
    assert_eq!(replies[0]["message"], "8080");
    assert_eq!(b.ok(&["status"])["open_questions"], 1);

    // Answering something that is not a question, or nothing.
    b.expect(
        2,
        &["answer", &a["seq"].to_string(), "an answer to an answer"],
    );
    b.expect(2, &["answer", "999", "x"]);
    let r = b.run(&["questions"]);
    assert!(
        r.stdout.contains("Which database?") && !r.stdout.contains("Which port?"),
        "{}",
        r.stdout
    );
}

#[test]
fn ask_wait_returns_the_answer_given_while_it_waits() {
    let b = TestBoard::new();
    let spawn = |args: &[&str]| {
        let child = vine_std()
            .arg("--dir")
            .arg(&b.dir)
            .args(args)
            .args(["--as", "w1", "--wait", "--timeout", "30s", "--poll", "1s"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        ChildGuard(Some(child))
    };
    // One waits with --json, one in text mode.
    let mut json_child = spawn(&["--json", "ask", "Which database?"]);
    let mut text_child = spawn(&["ask", "Ready?"]);

    // Wait for both questions to appear, then answer them from here.
    let deadline = Instant::now() + Duration::from_secs(15);
    let questions = loop {
        let qs = b.ok(&["questions"])["questions"].clone();
        if qs.as_array().unwrap().len() == 2 {
            break qs;
        }
        assert!(
            Instant::now() < deadline,
            "the questions never appeared: {qs}"
        );
        sleep(Duration::from_millis(50));
    };
    let seq_of = |text: &str| {
        questions
            .as_array()
            .unwrap()
            .iter()
            .find(|q| q["question"]["message"] == text)
            .unwrap_or_else(|| panic!("no question {text:?}: {questions}"))["question"]["seq"]
            .as_u64()
            .unwrap()
    };
    let (db, ready) = (seq_of("Which database?"), seq_of("Ready?"));
    b.ok(&["answer", &db.to_string(), "PostgreSQL 16"]);
    b.ok(&["answer", &ready.to_string(), "Go ahead"]);

    let out = json_child.0.take().unwrap().wait_with_output().unwrap();
    let r = Run::from(out);
    assert_eq!(r.code, 0, "{r:?}");
    let v = one_object(&r);
    assert_eq!(v["answer"]["message"], "PostgreSQL 16", "{v}");
    assert_eq!(v["answer"]["reply_to"], db);
    assert_eq!(v["question"]["seq"], db);

    // In text mode the answer text is what it prints.
    let out = text_child.0.take().unwrap().wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim_end(), "Go ahead");
    assert_eq!(b.ok(&["questions"])["questions"], json!([]));
}

// ---------------------------------------------------------------------------------------------
// should-continue
// ---------------------------------------------------------------------------------------------

fn worker_state(b: &TestBoard, id: &str) -> Value {
    b.ok(&["workers"])["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("no worker {id}"))
}

fn one_line_reason(b: &TestBoard, code: i32, args: &[&str]) -> Value {
    let v = b.expect(code, args);
    let reason = v["reason"].as_str().expect("a reason");
    assert!(
        !reason.is_empty() && !reason.contains('\n'),
        "the reason is one line: {reason:?}"
    );
    let r = b.run(args);
    assert_eq!(r.code, code);
    assert_eq!(
        r.stdout.trim_end().lines().count(),
        1,
        "one line of text: {:?}",
        r.stdout
    );
    let word = if code == 0 { "continue: " } else { "stop: " };
    assert!(r.stdout.starts_with(word), "{:?}", r.stdout);
    v
}

#[test]
fn should_continue_while_working_or_work_is_ready_or_not_idle_too_long() {
    let b = TestBoard::new();
    // Idle clocks start now (the waiting below overlaps the first checks).
    b.ok(&["register", "--worker", "w3"]);
    b.ok(&["register", "--worker", "w5"]);
    let registered = Instant::now();
    // Holding a task: continue, whatever the idle limit.
    let held = b.add("held task", &[]);
    b.claim("w1");
    let v = one_line_reason(
        &b,
        0,
        &["should-continue", "--worker", "w1", "--max-idle", "0s"],
    );
    assert_eq!(v["continue"], true);
    assert_eq!(v["task"], held);

    // A claimable task: continue.
    let ready = b.add("ready task", &[]);
    b.ok(&["register", "--worker", "w2"]);
    let v = one_line_reason(
        &b,
        0,
        &["should-continue", "--worker", "w2", "--max-idle", "0s"],
    );
    assert_eq!(v["task"], ready);
    b.claim("w2");

    // Idle, nothing to claim: continue while idle for less than the limit...
    let v = one_line_reason(
        &b,
        0,
        &["should-continue", "--worker", "w3", "--max-idle", "5s"],
    );
    assert_eq!(v["continue"], true);
    assert!(v.get("task").is_none());
    let v = one_line_reason(&b, 0, &["should-continue", "--worker", "w3"]);
    assert_eq!(v["continue"], true);
    assert_ne!(worker_state(&b, "w3")["state"], "offline");
    // ...and stop with exit 3 once past it; the worker is then offline.
    sleep(Duration::from_millis(1100).saturating_sub(registered.elapsed()));
    // Heartbeats are signs of life, not work: they do not reset the idle clock.
    b.ok(&["heartbeat", "--worker", "w5"]);
    let v = b.expect(
        3,
        &["should-continue", "--worker", "w5", "--max-idle", "1s"],
    );
    assert_eq!(v["continue"], false);
    let v = b.expect(
        3,
        &["should-continue", "--worker", "w3", "--max-idle", "1s"],
    );
    assert_eq!(v["continue"], false);
    let reason = v["reason"].as_str().unwrap();
    assert!(!reason.contains('\n'), "{reason:?}");
    let w = worker_state(&b, "w3");
    assert_eq!(w["state"], "offline", "{w}");
    assert_eq!(w["status"], "offline", "{w}");
    assert!(b.read(WORKERS).windows(9).any(|x| x == b"\"offline\""));
    // Registering again resets the idle clock.
    b.ok(&["register", "--worker", "w3"]);
    let v = b.ok(&["should-continue", "--worker", "w3", "--max-idle", "1s"]);
    assert_eq!(v["continue"], true);
    assert_eq!(worker_state(&b, "w3")["state"], "idle");

    // --max-idle 0s stops an idle worker at once; in text mode too.
    b.ok(&["register", "--worker", "w4"]);
    one_line_reason(
        &b,
        3,
        &["should-continue", "--worker", "w4", "--max-idle", "0s"],
    );
    assert_eq!(worker_state(&b, "w4")["state"], "offline");

    // An unregistered worker is told to stop.
    let v = b.expect(3, &["should-continue", "--worker", "ghost"]);
    assert!(v["reason"].as_str().unwrap().contains("register"), "{v}");

    // Work showing up brings an offline worker back.
    let new = b.add("new work", &[]);
    let v = b.ok(&["should-continue", "--worker", "w4", "--max-idle", "0s"]);
    assert_eq!(v["task"], new);
    assert_eq!(worker_state(&b, "w4")["state"], "idle");
}

#[test]
fn should_continue_reason_is_one_line_even_for_a_multi_line_description() {
    // `vine add` refuses a multi-line description, and changes nothing ...
    let b = TestBoard::new();
    let before = b.snapshot();
    let v = b.expect(2, &["add", "Fix the parser\nand then the printer"]);
    assert!(
        v["error"]["message"].as_str().unwrap().contains("one line"),
        "{v}"
    );
    assert_eq!(before, b.snapshot());
    // ... but a queue written by another tool may hold one: the reason still is one line.
    let b = TestBoard::bare();
    b.write(
        "task-queue.json",
        r#"[{"id": 7, "description": "Fix the parser\nand then the printer", "status": "pending"}]"#,
    );
    b.ok(&["register", "--worker", "w1"]);
    // Ready for w1, then held by w1: both reasons quote the description.
    one_line_reason(
        &b,
        0,
        &["should-continue", "--worker", "w1", "--max-idle", "0s"],
    );
    b.claim("w1");
    one_line_reason(
        &b,
        0,
        &["should-continue", "--worker", "w1", "--max-idle", "0s"],
    );
}

// ---------------------------------------------------------------------------------------------
// Compatibility with the original plan's files
// ---------------------------------------------------------------------------------------------

#[test]
fn a_board_of_the_original_plan_works() {
    let b = TestBoard::bare();
    let original = r#"[
  {"id": 1731159000123, "description": "Create user auth",
   "instruction_file": "tasks/task-1731159000123-instructions.md",
   "context_files": ["docs/api-spec.md"], "assigned_to": null, "status": "pending",
   "created_at": "2025-11-09T10:00:00", "claimed_by": null, "claimed_at": null,
   "completed_by": null, "completed_at": null, "result": null,
   "metadata": {"working_directory": "src/api"},
   "error": "old error", "custom": {"nested": [1, 2, {"k": "v"}]}},
  {"id": 1731159000200, "description": "Old finished work", "instruction_file": null,
   "context_files": null, "assigned_to": "worker-1", "status": "completed",
   "created_at": "2025-11-09T09:00:00", "claimed_by": "worker-1",
   "claimed_at": "2025-11-09T09:10:00", "completed_by": "worker-1",
   "completed_at": "2025-11-09T09:30:00.123456", "result": "ok", "metadata": null},
  {"id": 1731159000300, "description": "Abandoned claim", "instruction_file": null,
   "context_files": [], "assigned_to": null, "status": "in_progress",
   "created_at": "2025-11-09T10:01:00", "claimed_by": "worker-9",
   "claimed_at": "2025-11-09T10:05:00", "completed_by": null, "completed_at": null,
   "result": null, "metadata": {}}
]"#;
    b.write(QUEUE, original);
    fs::create_dir_all(b.path("tasks")).unwrap();
    b.write(
        "tasks/task-1731159000123-instructions.md",
        "Build the auth module.\n",
    );

    let tasks = b.ok(&["tasks"]);
    assert_eq!(
        ids_of(&tasks["tasks"]),
        vec![1731159000123, 1731159000200, 1731159000300]
    );

    let v = b.ok(&["claim", "--worker", "worker-2"]);
    assert_eq!(v["claim"]["task"]["id"], 1731159000123u64);
    assert_eq!(v["claim"]["instructions"], "Build the auth module.\n");
    b.ok(&[
        "complete",
        "1731159000123",
        "--worker",
        "worker-2",
        "--result",
        "done",
    ]);

    let raw = String::from_utf8(b.read(QUEUE)).unwrap();
    let q: Vec<Value> = serde_json::from_str(&raw).unwrap();
    let first = &q[0];
    assert_eq!(first["status"], "completed");
    assert_eq!(first["result"], "done");
    assert_eq!(first["error"], "old error", "unknown fields survive");
    assert_eq!(first["custom"], json!({"nested": [1, 2, {"k": "v"}]}));
    assert_eq!(first["metadata"]["working_directory"], "src/api");
    assert_eq!(first["created_at"], "2025-11-09T10:00:00.000Z");
    assert_eq!(q[1]["completed_at"], "2025-11-09T09:30:00.123Z");
    assert_eq!(q[1]["claimed_at"], "2025-11-09T09:10:00.000Z");
    assert_eq!(q[1]["status"], "completed");
    // The original fields are all still written.
    for key in [
        "id",
        "description",
        "instruction_file",
        "context_files",
        "assigned_to",
        "status",
        "created_at",
        "claimed_by",
        "claimed_at",
        "completed_by",
        "completed_at",
        "result",
        "metadata",
    ] {
        for t in &q {
            assert!(t.get(key).is_some(), "{key} missing from {t}");
        }
    }
    // Every timestamp is RFC 3339 in UTC.
    for t in &q {
        for (k, v) in t.as_object().unwrap() {
            if (k.ends_with("_at") || k == "not_before") && !v.is_null() {
                let s = v.as_str().unwrap();
                assert!(s.ends_with('Z'), "{k}: {s}");
                ts(v);
            }
        }
    }
    assert!(!raw.contains("\"2025-11-09T10:00:00\""), "{raw}");

    // The abandoned original claim had no lease field; its lease (claim time + default) has
    // long expired, so it went back to the queue.
    let abandoned = b.show(1731159000300);
    assert_eq!(abandoned["status"], "pending", "{abandoned}");
    assert!(
        abandoned["last_error"]
            .as_str()
            .unwrap()
            .contains("worker-9")
    );
    // New ids do not collide with the old ones.
    let id = b.add("new", &[]);
    assert!(id > 1731159000300);
    assert_eq!(b.ok(&["status"])["total"], 4);
}

#[test]
fn original_plan_worker_and_message_files_are_read_and_kept() {
    let b = TestBoard::bare();
    b.write(QUEUE, "[]");
    b.write(
        WORKERS,
        r#"{"worker-1": {"status": "active", "last_heartbeat": "2025-11-09T10:00:00",
             "current_task": null, "hostname": "vps-1"}}"#,
    );
    b.write(
        LOG,
        "{\"timestamp\": \"2025-11-09T10:00:00\", \"agent\": \"coordinator\", \"message\": \"Starting\"}\n\
         {\"timestamp\": \"2025-11-09T10:01:00\", \"agent\": \"worker-1\", \"message\": \"Ready\", \"mood\": \"good\"}\n",
    );
    let w = worker_state(&b, "worker-1");
    assert_eq!(w["state"], "stale", "an old heartbeat is stale: {w}");
    // A task assigned to a stale worker falls back to another once the worker has not been
    // seen for the fallback time since the task was added (here: longer than 0 s).
    let id = b.add(
        "for worker-1",
        &["--assign", "worker-1", "--fallback-after", "0s"],
    );
    sleep(Duration::from_millis(1100));
    assert_eq!(b.claim("worker-2")["id"], id);
    let msgs = b.ok(&["msg", "read"])["messages"].clone();
    assert_eq!(msgs.as_array().unwrap().len(), 2);
    assert_eq!(msgs[1]["message"], "Ready");
    assert_eq!(msgs[1]["kind"], "message");
    // New entries are numbered after the old lines; old lines are kept as they were.
    let m = b.ok(&["msg", "send", "hello"])["message"].clone();
    assert_eq!(m["seq"], 3);
    let text = String::from_utf8(b.read(LOG)).unwrap();
    assert!(text.contains("\"mood\": \"good\""), "{text}");

    b.ok(&["register", "--worker", "worker-1", "-c", "python"]);
    let raw: Value = serde_json::from_slice(&b.read(WORKERS)).unwrap();
    assert_eq!(
        raw["worker-1"]["hostname"], "vps-1",
        "unknown worker fields survive"
    );
    assert_eq!(raw["worker-1"]["capabilities"], json!(["python"]));
    assert!(
        raw["worker-1"]["last_heartbeat"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
}

// ---------------------------------------------------------------------------------------------
// Archive
// ---------------------------------------------------------------------------------------------

#[test]
fn compact_archives_finished_tasks_that_nothing_waits_for() {
    let b = TestBoard::new();
    let a = b.add("a", &[]);
    let bb = b.add("b", &[]);
    let c = b.add("c", &["--after", &bb.to_string()]);
    let d = b.add("d", &[]);
    for (w, id) in [("w1", a), ("w2", bb)] {
        assert_eq!(b.claim(w)["id"], id);
        b.ok(&[
            "complete",
            &id.to_string(),
            "--worker",
            w,
            "--result",
            &format!("result {id}"),
        ]);
    }
    b.ok(&["cancel", &d.to_string()]);
    let f = b.add("f", &["--max-retries", "0", "--priority", "high"]);
    assert_eq!(b.claim("w3")["id"], f);
    b.ok(&["fail", &f.to_string(), "--worker", "w3", "--error", "dead"]);

    let v = b.ok(&["compact"]);
    assert_eq!(v["archived"], 2, "{v}");
    assert_eq!(v["kept"], 1, "{v}");
    // b stays because c depends on it; the failed task stays as a dead letter.
    assert_eq!(b.queue_ids(), vec![bb, c, f]);
    let archived: Vec<u64> = b
        .lines(ARCHIVE)
        .iter()
        .map(|l| l["task"]["id"].as_u64().unwrap())
        .collect();
    assert_eq!(archived, vec![a, d]);

    assert_eq!(ids_of(&b.ok(&["tasks"])["tasks"]), vec![bb, c, f]);
    let all = b.ok(&["tasks", "--all"])["tasks"].clone();
    assert_eq!(ids_of(&all), vec![a, bb, c, d, f]);
    for t in all.as_array().unwrap() {
        let id = t["id"].as_u64().unwrap();
        assert_eq!(
            t.get("archived").is_some_and(|x| x == true),
            id == a || id == d,
            "{t}"
        );
    }
    assert_eq!(
        ids_of(&b.ok(&["tasks", "--all", "--status", "completed"])["tasks"]),
        vec![a, bb]
    );
    let shown = b.show(a);
    assert_eq!(shown["archived"], true);
    assert_eq!(shown["status"], "completed");
    assert_eq!(shown["result"], format!("result {a}"));
    let r = b.run(&["show", &a.to_string()]);
    assert!(r.stdout.contains("archived"), "{}", r.stdout);

    let st = b.ok(&["status"]);
    assert_eq!(st["completed"], 2, "{st}");
    assert_eq!(st["cancelled"], 1);
    assert_eq!(st["failed"], 1);
    assert_eq!(st["pending"], 1);
    assert_eq!(st["total"], 5);
    assert_eq!(st["archived"], 2);

    // Archived tasks can no longer change; a dependency on an archived completed task is met.
    b.expect(4, &["cancel", &a.to_string()]);
    b.expect(4, &["complete", &a.to_string(), "--worker", "w1"]);
    b.expect(
        2,
        &["add", "after a cancelled task", "--after", &d.to_string()],
    );
    let e = b.add("after archived a", &["--after", &a.to_string()]);
    assert!(e > f);
    assert_eq!(b.claim("w4")["id"], c);
    assert_eq!(b.claim("w5")["id"], e);

    // Once c is done, b can go too.
    b.ok(&["complete", &c.to_string(), "--worker", "w4"]);
    let v = b.ok(&["compact"]);
    assert_eq!(v["archived"], 2, "{v}");
    assert_eq!(b.show(bb)["archived"], true);
    assert_eq!(b.ok(&["status"])["total"], 6);
    let v = b.ok(&["compact"]);
    assert_eq!(v["archived"], 0);
}

#[test]
fn finished_tasks_are_archived_automatically_past_the_threshold() {
    let b = TestBoard::with_init(&["--archive-after", "1"]);
    let ids: Vec<u64> = (0..3).map(|i| b.add(&format!("t{i}"), &[])).collect();
    for id in &ids {
        assert_eq!(b.claim("w1")["id"], *id);
        b.ok(&["complete", &id.to_string(), "--worker", "w1"]);
    }
    let archived = b.lines(ARCHIVE);
    assert!(!archived.is_empty(), "nothing was archived");
    assert!(b.queue().len() <= 1, "{:?}", b.queue_ids());
    assert_eq!(ids_of(&b.ok(&["tasks", "--all"])["tasks"]), ids);
    let st = b.ok(&["status"]);
    assert_eq!(st["completed"], 3);
    assert_eq!(st["total"], 3);
    // Ids stay above the archived ones.
    assert!(b.add("later", &[]) > ids[2]);
}

#[test]
fn init_flags_change_the_settings_of_an_existing_board_and_keep_the_rest() {
    let b = TestBoard::with_init(&["--lease", "5m", "--archive-after", "7"]);
    let id = b.add("keep me", &[]);
    let v = b.ok(&["init", "--max-retries", "1", "--retry-backoff", "2s"]);
    let s = &v["settings"];
    assert_eq!(s["lease_secs"], 300, "{v}");
    assert_eq!(s["archive_after"], 7, "{v}");
    assert_eq!(s["max_retries"], 1, "{v}");
    assert_eq!(s["retry_backoff_secs"], 2, "{v}");
    // Without flags, init changes nothing.
    let before = b.snapshot();
    b.ok(&["init"]);
    assert_eq!(before, b.snapshot());
    assert_eq!(
        b.ok(&["show", &id.to_string()])["task"]["description"],
        "keep me"
    );
    // A bad duration is refused and board.json is untouched.
    let before = b.snapshot();
    b.expect(2, &["init", "--retry-backoff", "soon"]);
    assert_eq!(before, b.snapshot());
}

#[test]
fn worker_facts_recorded_only_in_the_queue_are_never_lost() {
    // Claims and completions may reach worker-status.json late (they are durable in the
    // queue); readers merge them, and an op that erases them from the queue persists them.
    let b = TestBoard::new();
    let id = b.add("one", &[]);
    b.ok(&["register", "--worker", "w1"]);
    let t = b.claim("w1");
    let claimed_at = t["claimed_at"].clone();
    let workers = b.ok(&["workers"]);
    let w = &workers["workers"][0];
    assert_eq!(w["last_task_claimed"], claimed_at, "{workers}");
    assert_eq!(w["current_task"], id, "{workers}");
    assert_eq!(w["state"], "working", "{workers}");
    // Failing erases the claim from the queue (claimed_by/claimed_at are cleared) ...
    b.ok(&["fail", &id.to_string(), "--worker", "w1", "--error", "boom"]);
    let queue: Value = serde_json::from_slice(&fs::read(b.dir.join(QUEUE)).unwrap()).unwrap();
    assert!(queue[0]["claimed_at"].is_null(), "{queue}");
    // ... so the worker file now holds the claim time itself.
    let file: Value = serde_json::from_slice(&fs::read(b.dir.join(WORKERS)).unwrap()).unwrap();
    assert_eq!(file["w1"]["last_task_claimed"], claimed_at, "{file}");
    assert!(file["w1"]["current_task"].is_null(), "{file}");
}

#[test]
fn init_claude_sets_up_a_project_and_its_board_and_is_idempotent() {
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("proj");
    let board = tmp.path().join("board");
    fs::create_dir_all(project.join(".claude")).unwrap();
    fs::write(
        project.join(".claude/settings.json"),
        r#"{"model": "keep-me", "hooks": {"Stop": [{"hooks": [{"type": "command", "command": "mine"}]}]}}"#,
    )
    .unwrap();
    fs::write(project.join("CLAUDE.md"), "# My project\n").unwrap();
    let run = || {
        run_cmd(
            vine()
                .arg("--json")
                .arg("--dir")
                .arg(&board)
                .args(["init", "--claude"])
                .arg(&project),
        )
    };
    let r = run();
    assert_eq!(r.code, 0, "{r:?}");
    assert!(board.join(QUEUE).is_file(), "the board went to --dir");
    assert!(project.join(".claude/skills/agentvine/SKILL.md").is_file());
    let settings: Value =
        serde_json::from_slice(&fs::read(project.join(".claude/settings.json")).unwrap()).unwrap();
    assert_eq!(settings["model"], "keep-me");
    let stop = settings["hooks"]["Stop"].as_array().unwrap();
    assert_eq!(
        stop.len(),
        2,
        "ours added beside the existing one: {settings}"
    );
    assert_eq!(settings["env"]["CLAUDE_CODE_STOP_HOOK_BLOCK_CAP"], "0");
    let md = fs::read_to_string(project.join("CLAUDE.md")).unwrap();
    assert!(
        md.starts_with("# My project") && md.contains("agentvine worker"),
        "{md}"
    );
    // Again: nothing changes.
    let before = (
        fs::read(project.join(".claude/settings.json")).unwrap(),
        fs::read(project.join("CLAUDE.md")).unwrap(),
    );
    let r = run();
    assert_eq!(r.code, 0, "{r:?}");
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["hooks_added"], serde_json::json!([]));
    let after = (
        fs::read(project.join(".claude/settings.json")).unwrap(),
        fs::read(project.join("CLAUDE.md")).unwrap(),
    );
    assert_eq!(before, after);
    // A broken settings.json is refused and left as it is.
    fs::write(project.join(".claude/settings.json"), "{ not json").unwrap();
    let r = run();
    assert_eq!(r.code, 2, "{r:?}");
    assert_eq!(
        fs::read_to_string(project.join(".claude/settings.json")).unwrap(),
        "{ not json"
    );
}

// ---------------------------------------------------------------------------------------------
// Dead, absent and waiting workers
// ---------------------------------------------------------------------------------------------

#[test]
fn a_stale_holder_loses_its_task_long_before_the_lease_ends() {
    // 1 h leases, 2 s stale limit: only staleness can take a task back within this test.
    let b = TestBoard::with_init(&["--lease", "1h", "--stale-after", "2s"]);
    let alive = TestBoard::with_init(&["--lease", "1h", "--stale-after", "2s"]);
    let id = b.add("dies with its worker", &[]);
    let kept = alive.add("kept by heartbeats", &[]);
    b.ok(&["register", "--worker", "w1"]);
    alive.ok(&["register", "--worker", "w1"]);
    assert_eq!(b.claim("w1")["id"], id);
    assert_eq!(alive.claim("w1")["id"], kept);
    assert_eq!(b.ok(&["requeue-stale"])["tasks"], json!([]));
    let started = Instant::now();
    sleep(Duration::from_millis(1500));
    alive.ok(&["heartbeat", "--worker", "w1"]);
    sleep(Duration::from_millis(3200).saturating_sub(started.elapsed()));

    // The heartbeating worker keeps its task.
    assert_eq!(alive.ok(&["requeue-stale"])["tasks"], json!([]));
    assert_eq!(alive.show(kept)["status"], "in_progress");

    // w1 on `b` showed no sign of life for over 2 s: requeue-stale takes the task back.
    let r = b.run(&["requeue-stale"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout.contains(&id.to_string()) && r.stdout.contains("stale"),
        "{r:?}"
    );
    let t = b.show(id);
    assert_eq!(t["status"], "pending", "{t}");
    assert_eq!(t["attempts"], 1, "{t}");
    assert!(
        t["not_before"].is_null(),
        "no retry delay after a dead worker: {t}"
    );
    let err = t["last_error"].as_str().unwrap();
    assert!(err.contains("w1") && err.contains("stale"), "{t}");
    assert_eq!(b.ok(&["requeue-stale"])["tasks"], json!([]));
    let r = b.run(&["requeue-stale"]);
    assert!(r.stdout.contains("No claims to take back"), "{r:?}");

    // The late claimant gets exit 4 saying why; its result is kept in the log.
    let v = b.expect(
        4,
        &[
            "complete",
            &id.to_string(),
            "--worker",
            "w1",
            "--attempt",
            "1",
            "--result",
            "late",
        ],
    );
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("no sign of life"), "{v}");
    assert!(!msg.contains("lease expired"), "{v}");
    let kept_results: Vec<Value> = b
        .lines(LOG)
        .into_iter()
        .filter(|m| m["kind"] == "result")
        .collect();
    assert_eq!(kept_results.len(), 1, "{kept_results:?}");
    assert_eq!(kept_results[0]["message"], "late");

    // Another worker takes it at once: a crash is not the task's failure.
    let t = b.claim("w2");
    assert_eq!(t["id"], id);
    assert_eq!(t["attempts"], 2);

    // Its own late write wins even if it went quiet since (nobody else wrote meanwhile).
    alive.ok(&["complete", &kept.to_string(), "--worker", "w1"]);
}

#[test]
fn tasks_for_an_absent_specialist_fall_back_to_any_worker() {
    let b = TestBoard::with_init(&["--stale-after", "4s"]);
    let started = Instant::now();
    let ghost = b.add("for ghost", &["--assign", "ghost"]);
    let backend = b.add("needs backend", &["--requires", "backend"]);
    let strict = b.add("only ghost", &["--assign", "ghost", "--strict"]);
    let patient = b.add(
        "waits an hour",
        &["--requires", "gpu", "--fallback-after", "1h"],
    );
    assert_eq!(b.show(strict)["strict"], true);
    assert_eq!(b.show(patient)["fallback_after_secs"], 3600);

    let reason = b.claim_nothing("w1");
    assert!(
        reason.contains("assigned to ghost, who has not been seen")
            && reason.contains("any worker may take it in"),
        "{reason}"
    );
    let r = b.run(&["show", &ghost.to_string()]);
    assert!(
        r.stdout.contains("any worker may take it in"),
        "{}",
        r.stdout
    );
    let r = b.run(&["show", &strict.to_string()]);
    assert!(r.stdout.contains("only ghost may take it"), "{}", r.stdout);
    assert!(b.show(ghost)["fallback"]["at"].is_string());
    assert!(b.show(strict)["fallback"]["at"].is_null());

    sleep(Duration::from_millis(5100).saturating_sub(started.elapsed()));
    // Past the board's fallback time (the stale limit): anyone may take them, oldest first.
    assert_eq!(b.claim("w1")["id"], ghost);
    assert_eq!(b.claim("w1")["id"], backend);
    // Strict and long-fallback tasks still wait.
    let reason = b.claim_nothing("w1");
    assert!(reason.contains("2 pending tasks"), "{reason}");

    // A plan sets the same options.
    let plan = b.outside(
        "plan.json",
        r#"[{"description": "p1", "assign": "ghost", "strict": true},
            {"description": "p2", "requires": ["gpu"], "fallback_after": "90s"}]"#,
    );
    let v = b.ok(&["add", "--plan", plan.to_str().unwrap()]);
    assert_eq!(v["tasks"][0]["strict"], true, "{v}");
    assert_eq!(v["tasks"][1]["fallback_after_secs"], 90, "{v}");

    // The board's setting changes the default.
    let v = b.ok(&["init", b.dir.to_str().unwrap(), "--fallback-after", "10m"]);
    assert_eq!(v["settings"]["fallback_after_secs"], 600, "{v}");
    let r = b.run(&["init", b.dir.to_str().unwrap()]);
    assert!(r.stdout.contains("fallback after 10m"), "{r:?}");
    // --strict and --fallback-after contradict each other.
    b.expect(
        2,
        &[
            "add",
            "x",
            "--assign",
            "w9",
            "--strict",
            "--fallback-after",
            "1m",
        ],
    );
}

#[test]
fn a_worker_waiting_for_an_answer_keeps_its_task() {
    // 3 s leases and stale limit: waiting 6 s for an answer outlasts both.
    let b = TestBoard::with_init(&["--lease", "3s", "--stale-after", "3s"]);
    b.ok(&["register", "--worker", "w1"]);
    let id = b.add("needs a human", &[]);
    assert_eq!(b.claim("w1")["id"], id);
    let claimed = Instant::now();
    let child = vine_std()
        .arg("--dir")
        .arg(&b.dir)
        .args(["--json", "ask", "Which port?", "--worker", "w1", "--task"])
        .arg(id.to_string())
        .args(["--wait", "--timeout", "20s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = ChildGuard(Some(child));

    // The question appears and w1 shows as waiting.
    let deadline = Instant::now() + Duration::from_secs(10);
    let seq = loop {
        let qs = b.ok(&["questions"])["questions"].clone();
        if let Some(q) = qs.as_array().unwrap().first() {
            break q["question"]["seq"].as_u64().unwrap();
        }
        assert!(Instant::now() < deadline, "the question never appeared");
        sleep(Duration::from_millis(50));
    };
    let w = worker_state(&b, "w1");
    assert_eq!(w["state"], "waiting", "{w}");
    assert_eq!(w["waiting"]["question"], seq, "{w}");

    // 6 s after the claim: past the lease and the stale limit, the task is still w1's, for
    // reads and for writes.
    sleep(Duration::from_millis(6000).saturating_sub(claimed.elapsed()));
    assert_eq!(worker_state(&b, "w1")["state"], "waiting");
    assert_eq!(b.ok(&["status"])["workers"]["waiting"], 1);
    assert!(b.run(&["status"]).stdout.contains("1 waiting"));
    assert_eq!(b.ok(&["requeue-stale"])["tasks"], json!([]));
    assert_eq!(b.show(id)["status"], "in_progress");
    b.claim_nothing("w2");

    // The answer, from another process, ends the wait without taking the task back.
    b.ok(&["answer", &seq.to_string(), "5000"]);
    let out = child.0.take().unwrap().wait_with_output().unwrap();
    let r = Run::from(out);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(one_object(&r)["answer"]["message"], "5000");
    assert_ne!(worker_state(&b, "w1")["state"], "waiting");
    b.ok(&[
        "complete",
        &id.to_string(),
        "--worker",
        "w1",
        "--attempt",
        "1",
        "--result",
        "port 5000",
    ]);
    let t = b.show(id);
    assert_eq!(t["status"], "completed");
    assert_eq!(t["attempts"], 1, "never taken back: {t}");
    assert!(t["last_error"].is_null(), "never taken back: {t}");
}

#[test]
fn a_wait_that_times_out_ends_and_the_task_follows_the_usual_rules_again() {
    let b = TestBoard::with_init(&["--lease", "3s", "--stale-after", "3s"]);
    b.ok(&["register", "--worker", "w1"]);
    let id = b.add("t", &[]);
    b.claim("w1");
    let v = b.expect(
        3,
        &[
            "ask",
            "Anyone?",
            "--worker",
            "w1",
            "--task",
            &id.to_string(),
            "--wait",
            "--timeout",
            "2s",
        ],
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no answer"),
        "{v}"
    );
    // Right after giving up the worker is alive and holds its task (the wait heartbeated).
    let w = worker_state(&b, "w1");
    assert_eq!(w["state"], "working", "{w}");
    assert_eq!(b.show(id)["status"], "in_progress");
    // Without further signs of life, it is taken back like any other.
    sleep(Duration::from_millis(4100));
    assert_eq!(b.ok(&["requeue-stale"])["tasks"], json!([id]));
}

#[test]
fn reads_show_the_board_as_the_next_write_will_see_it() {
    let b = TestBoard::with_init(&["--stale-after", "1h"]);
    let id = b.add("short lease", &["--lease", "1s"]);
    b.claim("w1");
    sleep(Duration::from_millis(1200));
    let before = b.snapshot();
    let t = b.show(id);
    assert_eq!(t["status"], "pending", "{t}");
    assert!(
        t["last_error"].as_str().unwrap().contains("lease expired"),
        "{t}"
    );
    assert_eq!(
        b.ok(&["tasks", "--status", "in_progress"])["tasks"],
        json!([])
    );
    assert_eq!(
        ids_of(&b.ok(&["tasks", "--status", "pending"])["tasks"]),
        vec![id]
    );
    let s = b.ok(&["status"]);
    assert_eq!(
        (s["pending"].clone(), s["in_progress"].clone()),
        (json!(1), json!(0))
    );
    let w = worker_state(&b, "w1");
    assert_eq!(w["tasks"], json!([]), "{w}");
    assert_eq!(w["state"], "idle", "{w}");
    assert_unchanged(&before, &b, "reading");
    // ...and the next write agrees.
    assert_eq!(b.claim("w2")["id"], id);
}

#[test]
fn show_prints_the_error_of_a_failed_task_in_every_shape() {
    let b = TestBoard::new();
    let id = b.add("doomed", &["--max-retries", "0"]);
    b.claim("w1");
    b.ok(&[
        "fail",
        &id.to_string(),
        "--worker",
        "w1",
        "--error",
        "tests fail",
    ]);
    let r = b.run(&["show", &id.to_string()]);
    assert!(r.stdout.contains("error: tests fail"), "{}", r.stdout);

    // A failed task as a template of the original plan wrote it: `error`, not `last_error`.
    let bare = TestBoard::bare();
    bare.write(
        QUEUE,
        r#"[{"id": 1731159000123, "description": "old", "status": "failed", "error": "disk full"}]"#,
    );
    let r = bare.run(&["show", "1731159000123"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("error: disk full"), "{}", r.stdout);
}

/// `--worker` is a global flag: before or after the command, as `$VINE_WORKER` is for every
/// command, and the default sender of messages and questions (`--as` overrides it).
#[test]
fn worker_is_global_before_or_after_the_command() {
    let b = TestBoard::new();
    let first = b.add("first", &[]);
    let second = b.add("second", &[]);
    let (code, v) = b.json(&["--worker", "w1", "claim"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["claim"]["task"]["id"], first, "{v}");
    let (code, v) = b.json(&["claim", "-w", "w2"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["claim"]["task"]["id"], second, "{v}");
    let (code, v) = b.json(&["-w", "w1", "complete", &first.to_string()]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["task"]["completed_by"], "w1", "{v}");
    let (code, v) = b.json(&["--worker", "w2", "ask", "which port?"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["message"]["agent"], "w2", "{v}");
    let (code, v) = b.json(&["--worker", "w2", "ask", "really?", "--as", "someone"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["message"]["agent"], "someone", "{v}");
    // Without any worker, commands that need one say how to give it.
    let (code, v) = b.json(&["heartbeat"]);
    assert_eq!(code, 2, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("--worker")),
        "{v}"
    );
}

#[test]
fn bad_values_are_usage_errors_naming_the_flag_with_an_example() {
    // Durations, times, addresses, priorities, statuses and roles are parsed with the command
    // line: a bad one is a usage error (exit 2, kind "usage"), before any board is touched,
    // whose message names the flag and shows what a good value looks like.
    let b = TestBoard::new();
    b.add("a task", &[]);
    let before = b.snapshot();
    let duration = "e.g. 90s, 30m";
    let cases: &[(&[&str], &str, &str)] = &[
        (
            &["add", "x", "--priority", "urgent"],
            "--priority",
            "high, normal, low",
        ),
        (&["add", "x", "--lease", "10x"], "--lease", duration),
        (&["add", "x", "--lease", ""], "--lease", duration),
        (
            &["add", "x", "--fallback-after", "later"],
            "--fallback-after",
            duration,
        ),
        (
            &["should-continue", "--worker", "w1", "--max-idle", "forever"],
            "--max-idle",
            duration,
        ),
        (
            &["ask", "q?", "--wait", "--timeout", "soon"],
            "--timeout",
            duration,
        ),
        (
            &["msg", "read", "--since", "yesterday"],
            "--since",
            "2026-11-21T08:00:00Z",
        ),
        (
            &["tasks", "--status", "bogus"],
            "--status",
            "pending, in_progress, completed, failed, cancelled, blocked",
        ),
        (
            &["init", "--stale-after", "3 minutes"],
            "--stale-after",
            duration,
        ),
        (
            &["init", "--claude", "--role", "boss"],
            "--role",
            "worker, coordinator",
        ),
        (
            &["serve", "--root", ".", "--listen", "localhost"],
            "--listen",
            "127.0.0.1:5555",
        ),
        (
            &["serve", "--root", ".", "--exec-timeout", "1y"],
            "--exec-timeout",
            duration,
        ),
        (
            &["worker", "-w", "w1", "--max-idle", "never"],
            "--max-idle",
            duration,
        ),
    ];
    for (args, flag, example) in cases {
        let r = b.run(args);
        assert_eq!(r.code, 2, "vine {args:?}: {r:?}");
        assert!(r.stdout.is_empty(), "vine {args:?}: {r:?}");
        assert!(
            r.stderr.contains(flag) && r.stderr.contains(example),
            "vine {args:?}: the error names {flag} and shows {example:?}: {}",
            r.stderr
        );
        let (code, v) = b.json(args);
        assert_eq!(code, 2, "vine {args:?} --json: {v}");
        assert_eq!(v["error"]["kind"], "usage", "{v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains(flag) && msg.contains(example), "{msg}");
        assert_unchanged(&before, &b, &format!("vine {args:?}"));
    }
    // Good values, including the accepted spellings, still work.
    b.ok(&["register", "--worker", "w9"]);
    for args in [
        &["tasks", "--status", "in-progress"][..],
        &["tasks", "--status", "in_progress"],
        &["tasks", "--status", "blocked"],
        &["msg", "read", "--since", "2000-01-01 00:00:00"],
        &["should-continue", "--worker", "w9", "--max-idle", "1h30m"],
    ] {
        b.ok(args);
    }
    // `--help` lists the possible values with what they mean.
    let r = b.run(&["tasks", "--help"]);
    assert!(
        r.stdout.contains("in_progress") && r.stdout.contains("never claimed"),
        "{}",
        r.stdout
    );
}
