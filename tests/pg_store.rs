//! The board in PostgreSQL: `vine serve --store postgres://...` against a throwaway cluster
//! (`support::pg`). The same scripted CLI session gives the same replies on a file board and a
//! PostgreSQL board; a retried request is applied once; two servers on one database wake each
//! other's waiters (LISTEN/NOTIFY); a newer schema and an unreachable database refuse to start
//! with their own exit codes; a database lost while serving fails ops as unreachable and the
//! server carries on once it is back.

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::pg::Cluster;
use support::{ISOLATED, Server, isolated, run, send, vine_without};

/// `vine --json ARGS` against the server at `url`; (exit code, the JSON it printed).
fn vine_at(url: &str, args: &[&str]) -> (i32, Value) {
    let r = run(isolated(&[("VINE_URL", url), ("VINE_RETRY_FOR", "3")])
        .arg("--json")
        .args(args));
    (r.code, r.json())
}

/// `POST /v1/op` with `op` and request key `key`; (HTTP status, body).
fn post_op(addr: SocketAddr, op: &Value, key: Option<&str>) -> (u16, Value) {
    let mut body = json!({ "op": op });
    if let Some(k) = key {
        body["key"] = json!(k);
    }
    let body = body.to_string();
    let r = send(
        addr,
        &format!(
            "POST /v1/op HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    );
    let v: Value = serde_json::from_str(&r.body)
        .unwrap_or_else(|e| panic!("HTTP {}: not JSON ({e}): {}", r.status, r.body));
    (r.status, v)
}

/// `POST /deploy` of `content` at `path`.
fn deploy(addr: SocketAddr, path: &str, content: &str) -> support::Resp {
    let body = json!({"filepath": path, "content": content}).to_string();
    send(
        addr,
        &format!(
            "POST /deploy HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    )
}

/// A `vine serve` on a fresh base directory, on files or (with `store`) on PostgreSQL.
fn serve(tmp: &Path, name: &str, store: Option<&str>) -> Server {
    let mut args = vec!["--no-exec"];
    if let Some(s) = store {
        args.extend(["--store", s]);
    }
    Server::start(&tmp.join(name), &args, &[])
}

// ---------------------------------------------------------------------------------------------
// The same script on files and on PostgreSQL
// ---------------------------------------------------------------------------------------------

/// Masks what legitimately differs between two boards given the same ops: times, task ids
/// (each board's own epoch-ms ids, mapped to their order of appearance), request keys.
struct Mask {
    ids: HashMap<u64, String>,
}

impl Mask {
    fn learn(&mut self, id: u64) {
        let n = self.ids.len();
        self.ids.entry(id).or_insert_with(|| format!("T{n}"));
    }

    /// Learns the ids of the tasks a reply added.
    fn learn_added(&mut self, v: &Value) {
        if let Some(tasks) = v["tasks"].as_array() {
            for t in tasks {
                if let Some(id) = t["id"].as_u64() {
                    self.learn(id);
                }
            }
        }
        if let Some(id) = v["task"]["id"].as_u64() {
            self.learn(id);
        }
    }

    fn apply(&self, v: &Value) -> Value {
        match v {
            Value::Object(m) => Value::Object(
                m.iter()
                    .map(|(k, v)| {
                        let masked = match k.as_str() {
                            "request_key" | "added_key" | "key" if v.is_string() => json!("<key>"),
                            _ => self.apply(v),
                        };
                        (self.text(k), masked)
                    })
                    .collect(),
            ),
            Value::Array(a) => Value::Array(a.iter().map(|v| self.apply(v)).collect()),
            Value::Number(n) => match n.as_u64().and_then(|i| self.ids.get(&i)) {
                Some(name) => json!(name),
                None => v.clone(),
            },
            Value::String(s) if is_time(s) => json!("<time>"),
            Value::String(s) => json!(self.text(s)),
            other => other.clone(),
        }
    }

    /// Ids inside text (`task 1731...`, `tasks/task-1731...-instructions.md`).
    fn text(&self, s: &str) -> String {
        let mut out = s.to_string();
        for (id, name) in &self.ids {
            out = out.replace(&id.to_string(), name);
        }
        out
    }
}

fn is_time(s: &str) -> bool {
    s.len() >= 20
        && s.as_bytes()[4] == b'-'
        && s.as_bytes()[10] == b'T'
        && s.ends_with('Z')
        && chrono::DateTime::parse_from_rfc3339(s).is_ok()
}

/// One board under the script: its server and what it learned.
struct Side {
    server: Server,
    mask: Mask,
    /// Task ids by the script's names.
    named: HashMap<String, u64>,
}

impl Side {
    /// Runs one step: `{name}` in an argument is the id of the task the script named so.
    fn step(&mut self, args: &[&str], name: Option<&str>) -> Value {
        let args: Vec<String> = args
            .iter()
            .map(|a| {
                let mut a = a.to_string();
                for (n, id) in &self.named {
                    a = a.replace(&format!("{{{n}}}"), &id.to_string());
                }
                a
            })
            .collect();
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, v) = vine_at(&self.server.url, &refs);
        self.mask.learn_added(&v);
        if let Some(n) = name {
            let id = v["tasks"][0]["id"]
                .as_u64()
                .or(v["task"]["id"].as_u64())
                .unwrap_or_else(|| panic!("{args:?} named no task: {v}"));
            self.named.insert(n.to_string(), id);
        }
        json!({"code": code, "reply": self.mask.apply(&v)})
    }
}

#[test]
fn the_same_script_gives_the_same_replies_on_files_and_on_postgresql() {
    let pg = Cluster::start();
    let db = pg.create_db("script");
    let tmp = tempfile::tempdir().unwrap();
    let plan = tmp.path().join("plan.json");
    std::fs::write(
        &plan,
        r#"[{"key": "p1", "description": "plan one", "instructions": "step one"},
            {"key": "p2", "description": "plan two", "after": ["p1"], "requires": ["rust"]}]"#,
    )
    .unwrap();
    let plan = plan.display().to_string();
    let mut sides = [
        Side {
            server: serve(tmp.path(), "files", None),
            mask: Mask {
                ids: HashMap::new(),
            },
            named: HashMap::new(),
        },
        Side {
            server: serve(tmp.path(), "pg", Some(&db)),
            mask: Mask {
                ids: HashMap::new(),
            },
            named: HashMap::new(),
        },
    ];
    // (arguments, the name its task gets), run on both boards step by step.
    let script: Vec<(Vec<&str>, Option<&str>)> = vec![
        (vec!["register", "-w", "w1", "-c", "rust"], None),
        (vec!["register", "-w", "w2"], None),
        (vec!["add", "alpha", "--priority", "high"], Some("alpha")),
        (
            vec!["add", "beta", "--instructions", "do beta\n"],
            Some("beta"),
        ),
        (vec!["add", "--plan", &plan], Some("p1")),
        (vec!["tasks"], None),
        (vec!["claim", "-w", "w1"], None),
        (vec!["heartbeat", "-w", "w1"], None),
        (
            vec!["complete", "{alpha}", "-w", "w1", "--result", "done"],
            None,
        ),
        (
            vec!["complete", "{alpha}", "-w", "w1", "--result", "again"],
            None,
        ),
        (vec!["claim", "-w", "w1"], None),
        (vec!["fail", "{beta}", "-w", "w1", "--error", "boom"], None),
        (vec!["show", "{beta}"], None),
        (vec!["claim", "-w", "w2"], None),
        (vec!["release", "{p1}", "-w", "w2"], None),
        (vec!["claim", "-w", "w2"], None),
        (
            vec!["fail", "{p1}", "-w", "w2", "--error", "fatal", "--no-retry"],
            None,
        ),
        (vec!["tasks", "--status", "blocked"], None),
        (vec!["retry", "{p1}"], None),
        (vec!["retry", "{p1}"], None),
        (
            vec!["ask", "which database?", "--task", "{p1}", "-w", "w1"],
            None,
        ),
        (vec!["questions"], None),
        (vec!["answer", "2", "postgres", "--as", "lead"], None),
        (vec!["questions", "--all"], None),
        (
            vec!["msg", "send", "hello", "-w", "w2", "--task", "{p1}"],
            None,
        ),
        (vec!["msg", "read"], None),
        (vec!["msg", "read", "--task", "{p1}", "--limit", "1"], None),
        (
            vec![
                "progress", "set", "--step", "2", "--total", "5", "--status", "going",
            ],
            None,
        ),
        (vec!["progress"], None),
        (
            vec![
                "add",
                "leased",
                "--lease",
                "1s",
                "--priority",
                "high",
                "--assign",
                "w3",
            ],
            Some("leased"),
        ),
        (vec!["claim", "-w", "w3"], None),
        (vec!["workers"], None),
        (vec!["sleep"], None),
        (vec!["requeue-stale"], None),
        (vec!["show", "{leased}"], None),
        (vec!["cancel", "{leased}"], None),
        (vec!["priority", "{p1}", "low"], None),
        (vec!["status"], None),
        (vec!["compact"], None),
        (vec!["show", "{alpha}"], None),
        (vec!["tasks", "--all"], None),
        (vec!["complete", "{alpha}", "-w", "w1"], None),
        (vec!["show", "999"], None),
        (vec!["status"], None),
        (vec!["workers"], None),
        (vec!["deregister", "-w", "w2"], None),
    ];
    for (args, name) in &script {
        if args == &["sleep"] {
            // Past the 1 s lease of the task w3 holds.
            std::thread::sleep(Duration::from_millis(1500));
            continue;
        }
        let on_files = sides[0].step(args, *name);
        let on_pg = sides[1].step(args, *name);
        assert_eq!(
            on_files, on_pg,
            "{args:?} answered differently on files (left) and on PostgreSQL (right)"
        );
        assert_ne!(on_files["code"], json!(1), "{args:?}: {on_files}");
        if std::env::var_os("VINE_TEST_SHOW").is_some() {
            eprintln!("{args:?} -> {on_files}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Request keys
// ---------------------------------------------------------------------------------------------

#[test]
fn a_retried_request_is_applied_once() {
    let pg = Cluster::start();
    let db = pg.create_db("keys");
    let tmp = tempfile::tempdir().unwrap();
    let s = serve(tmp.path(), "root", Some(&db));
    let add = json!({"op": "add", "task": {"description": "once"}});
    let (st1, first) = post_op(s.addr, &add, Some("add-key-1"));
    let (st2, again) = post_op(s.addr, &add, Some("add-key-1"));
    assert_eq!((st1, st2), (200, 200), "{first} {again}");
    assert_eq!(first, again, "a retried add answers as the first");
    let id = first["reply"]["tasks"][0]["id"].as_u64().unwrap();
    let claim = json!({"op": "claim", "worker": "w1"});
    let (_, c1) = post_op(s.addr, &claim, Some("claim-key-1"));
    let (_, c2) = post_op(s.addr, &claim, Some("claim-key-1"));
    assert_eq!(c1["reply"]["claim"]["task"]["id"], json!(id), "{c1}");
    assert_eq!(c1, c2, "a retried claim gets the same task");
    let msg = json!({"op": "send", "agent": "w1", "message": "hi"});
    let (_, m1) = post_op(s.addr, &msg, Some("send-key-1"));
    let (_, m2) = post_op(s.addr, &msg, Some("send-key-1"));
    assert_eq!(m1, m2);
    let done = json!({"op": "complete", "task": id, "worker": "w1", "result": "r"});
    let (_, d1) = post_op(s.addr, &done, Some("done-key-1"));
    let (_, d2) = post_op(s.addr, &done, Some("done-key-1"));
    assert_eq!(d1["status"], "success", "{d1}");
    assert_eq!(d1, d2, "a retried completion answers as the first");
    // One task, claimed once, completed once; one message.
    let (_, tasks) = vine_at(&s.url, &["tasks", "--all"]);
    assert_eq!(tasks["tasks"].as_array().unwrap().len(), 1, "{tasks}");
    assert_eq!(tasks["tasks"][0]["attempts"], json!(1), "{tasks}");
    let (_, log) = vine_at(&s.url, &["msg", "read"]);
    assert_eq!(log["messages"].as_array().unwrap().len(), 1, "{log}");
}

// ---------------------------------------------------------------------------------------------
// Two servers, one database
// ---------------------------------------------------------------------------------------------

/// Changes the database behind the server's back (no notification): task `id`'s
/// description, at a new board version.
fn change_elsewhere(pg: &Cluster, db: &str, id: u64, description: &str) {
    pg.psql(
        db,
        &format!(
            "BEGIN; UPDATE board SET version = version + 1 WHERE id = 1; \
             UPDATE tasks SET version = (SELECT version FROM board WHERE id = 1), \
               body = jsonb_set(body::jsonb, '{{description}}', to_jsonb('{description}'::text))::json \
             WHERE id = {id}; COMMIT;"
        ),
    );
}

#[test]
fn a_batch_that_finds_another_servers_commit_first_is_tried_again_on_the_board_as_it_is() {
    let pg = Cluster::start();
    let db = pg.create_db("first");
    let tmp = tempfile::tempdir().unwrap();
    let s = serve(tmp.path(), "root", Some(&db));
    let add = |d: &str| {
        let (status, v) = post_op(
            s.addr,
            &json!({"op": "add", "task": {"description": d}}),
            None,
        );
        assert_eq!(status, 200, "{v}");
        v["reply"]["tasks"][0]["id"].as_u64().unwrap()
    };
    let (a, b) = (add("a"), add("b"));
    // Another writer commits first, unannounced: the server's copy of the board is behind,
    // and its write (conditional on the version it knows) finds that.
    change_elsewhere(&pg, "first", b, "b, changed elsewhere");
    let (status, c1) = post_op(s.addr, &json!({"op": "claim", "worker": "w1"}), None);
    assert_eq!(status, 200, "{c1}");
    assert_eq!(c1["reply"]["claim"]["task"]["id"], json!(a), "{c1}");
    // The claim taken back and made again: the board holds it, once.
    let (_, tasks) = vine_at(&s.url, &["tasks", "--all"]);
    let t = tasks["tasks"].as_array().unwrap();
    assert_eq!(t.len(), 2, "{tasks}");
    assert_eq!(t[0]["status"], json!("in_progress"), "{tasks}");
    assert_eq!(t[0]["claimed_by"], json!("w1"), "{tasks}");
    assert_eq!(t[0]["attempts"], json!(1), "{tasks}");
    assert_eq!(t[1]["status"], json!("pending"), "{tasks}");
    // What the other writer changed is what the server now works on.
    let (_, c2) = post_op(s.addr, &json!({"op": "claim", "worker": "w2"}), None);
    assert_eq!(
        c2["reply"]["claim"]["task"]["description"],
        json!("b, changed elsewhere"),
        "{c2}"
    );
    // A task added on a copy that is behind is added once, with the next id.
    change_elsewhere(&pg, "first", a, "a, changed elsewhere");
    let c = add("c");
    assert!(c > b, "{c} after {b}");
    // A completion on a copy that is behind is made on the board as it is.
    change_elsewhere(&pg, "first", c, "c, changed elsewhere");
    let (status, v) = post_op(
        s.addr,
        &json!({"op": "complete", "task": a, "worker": "w1", "result": "r"}),
        None,
    );
    assert_eq!(status, 200, "{v}");
    let (_, tasks) = vine_at(&s.url, &["tasks", "--all"]);
    let t = tasks["tasks"].as_array().unwrap();
    let summary: Vec<(u64, String, String)> = t
        .iter()
        .map(|t| {
            (
                t["id"].as_u64().unwrap(),
                t["status"].as_str().unwrap().to_string(),
                t["description"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (a, "completed".into(), "a, changed elsewhere".into()),
            (b, "in_progress".into(), "b, changed elsewhere".into()),
            (c, "pending".into(), "c, changed elsewhere".into()),
        ],
        "{tasks}"
    );
}

/// An open `/events` stream of the control room at `addr`; each "change" event is sent on the
/// channel.
fn events(addr: SocketAddr) -> mpsc::Receiver<Instant> {
    let login = send(
        addr,
        &format!("GET /login HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    );
    let id = login.session_id().expect("a session cookie");
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET /events HTTP/1.1\r\nHost: {addr}\r\nCookie: vine_session={id}\r\n\r\n"
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
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
            if line.contains("event: change") && tx.send(Instant::now()).is_err() {
                return;
            }
            line.clear();
        }
    });
    rx
}

#[test]
fn two_servers_on_one_database_wake_each_others_waiters() {
    let pg = Cluster::start();
    let db = pg.create_db("two");
    let tmp = tempfile::tempdir().unwrap();
    let a = serve(tmp.path(), "a", Some(&db));
    let b = serve(tmp.path(), "b", Some(&db));
    // The control room on B hears of a change made through A: B's page has no other source
    // of changes than the notification (no files to watch, no polling).
    let seen = events(b.addr);
    std::thread::sleep(Duration::from_millis(300));
    while seen.try_recv().is_ok() {}
    let (code, v) = vine_at(&a.url, &["msg", "send", "from a", "--as", "lead"]);
    assert_eq!(code, 0, "{v}");
    seen.recv_timeout(Duration::from_secs(10))
        .expect("the control room on B shows a change made through A");
    // A worker's turn-end held on B is handed the task added through A.
    let (code, v) = vine_at(&b.url, &["register", "-w", "w1"]);
    assert_eq!(code, 0, "{v}");
    let held = std::thread::spawn({
        let addr = b.addr;
        move || {
            let op =
                json!({"op": "turn-ended", "worker": "w1", "max_idle_secs": 600, "wait_secs": 60});
            let started = Instant::now();
            let r = post_op(addr, &op, Some("turn-key-1"));
            (r, started.elapsed())
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    let (code, added) = vine_at(&a.url, &["add", "for the waiting worker"]);
    assert_eq!(code, 0, "{added}");
    let ((status, turn), waited) = held.join().unwrap();
    assert_eq!(status, 200, "{turn}");
    assert_eq!(
        turn["reply"]["next"]["claim"]["task"]["id"], added["tasks"][0]["id"],
        "the held turn-end hands over the task added through the other server: {turn}"
    );
    assert!(
        waited < Duration::from_secs(60),
        "it did not wait out its wait"
    );
    // The claim is one: through A the task is in progress, held by w1.
    let id = added["tasks"][0]["id"].as_u64().unwrap().to_string();
    let (_, shown) = vine_at(&a.url, &["show", &id]);
    assert_eq!(shown["task"]["status"], json!("in_progress"), "{shown}");
    assert_eq!(shown["task"]["claimed_by"], json!("w1"), "{shown}");
}

#[test]
fn a_waiting_worker_commits_nothing_while_it_waits() {
    let pg = Cluster::start();
    let db = pg.create_db("idle");
    let tmp = tempfile::tempdir().unwrap();
    let s = serve(tmp.path(), "root", Some(&db));
    let (code, v) = vine_at(&s.url, &["register", "-w", "w1"]);
    assert_eq!(code, 0, "{v}");
    let mut c = postgres::Client::connect(&db, postgres::NoTls).unwrap();
    let version = |c: &mut postgres::Client| -> i64 {
        c.query_one("SELECT version FROM board", &[])
            .unwrap()
            .get(0)
    };
    let before = version(&mut c);
    // Held for 3 s and looked at again after each change and every 2 s: a look that changes
    // nothing must not commit (a commit would wake it again, and again).
    let op = json!({"op": "turn-ended", "worker": "w1", "max_idle_secs": 600, "wait_secs": 3});
    let (status, v) = post_op(s.addr, &op, None);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["reply"]["next"]["action"], json!("wait"), "{v}");
    assert!(
        version(&mut c) <= before + 1,
        "the board moved from version {before} to {} while a worker waited",
        version(&mut c)
    );
}

#[test]
fn workers_on_two_servers_claim_every_task_exactly_once() {
    let pg = Cluster::start();
    let db = pg.create_db("race");
    let tmp = tempfile::tempdir().unwrap();
    let servers = [
        serve(tmp.path(), "a", Some(&db)),
        serve(tmp.path(), "b", Some(&db)),
    ];
    // B hands its changes to A once it knows A leads.
    wait_for(&servers[1], |t| t["leader"] == json!(servers[0].url));
    race_over_two_servers(&servers);
    assert!(handed(&servers[1]) > 0, "B handed changes to A");
}

#[test]
fn workers_on_two_servers_that_both_commit_claim_every_task_exactly_once() {
    let pg = Cluster::start();
    let db = pg.create_db("race");
    let tmp = tempfile::tempdir().unwrap();
    // Neither leads: both commit, and their commits collide.
    let never = |name| {
        Server::start(
            &tmp.path().join(name),
            &["--no-exec", "--store", &db, "--advertise", "none"],
            &[],
        )
    };
    let servers = [never("a"), never("b")];
    race_over_two_servers(&servers);
    for s in &servers {
        assert_eq!(handed(s), 0, "nothing was handed over");
        assert_eq!(lead_of(s)["leading"], json!(false));
    }
}

/// What `GET /test` says of a server's lead: `{"leading": bool, "leader": URL or null}`.
fn lead_of(s: &Server) -> Value {
    let r = send(
        s.addr,
        &format!(
            "GET /test HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            s.addr
        ),
    );
    let v: Value = serde_json::from_str(&r.body).unwrap();
    json!({"leading": v["agentvine"]["leading"], "leader": v["agentvine"]["leader"]})
}

/// Waits (up to 15 s) until what `GET /test` says of `s`'s lead passes `ok`.
fn wait_for(s: &Server, ok: impl Fn(&Value) -> bool) {
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        let lead = lead_of(s);
        if ok(&lead) {
            return;
        }
        assert!(Instant::now() < until, "{} says {lead}", s.url);
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A figure of `s`'s `/metrics` (a count, or a gauge of whole numbers).
fn counter(s: &Server, name: &str) -> u64 {
    let r = send(
        s.addr,
        &format!(
            "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            s.addr
        ),
    );
    r.body
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in {}", r.body))
        .trim()
        .parse::<f64>()
        .unwrap() as u64
}

/// The ops `s` handed to the server that leads.
fn handed(s: &Server) -> u64 {
    counter(s, "vine_ops_handed_to_leader_total")
}

#[test]
fn a_server_hands_its_changes_to_the_one_that_leads_and_commits_them_itself_when_it_is_gone() {
    let pg = Cluster::start();
    let db = pg.create_db("lead");
    let tmp = tempfile::tempdir().unwrap();
    let mut a = serve(tmp.path(), "a", Some(&db));
    wait_for(&a, |t| t["leading"] == json!(true));
    let b = serve(tmp.path(), "b", Some(&db));
    wait_for(&b, |t| t == &json!({"leading": false, "leader": a.url}));
    // Changes through B are committed by A; reads through B see them at once.
    let (status, added) = post_op(
        b.addr,
        &json!({"op": "add", "task": {"description": "through b"}}),
        None,
    );
    assert_eq!(status, 200, "{added}");
    let id = added["reply"]["tasks"][0]["id"].as_u64().unwrap();
    let claim = json!({"op": "claim", "worker": "w1"});
    let (status, c) = post_op(b.addr, &claim, Some("claim-1"));
    assert_eq!(status, 200, "{c}");
    assert_eq!(c["reply"]["claim"]["task"]["id"], json!(id), "{c}");
    // Sent again with its key, through either server: the same claim, not another.
    for s in [&b, &a] {
        let (_, again) = post_op(s.addr, &claim, Some("claim-1"));
        assert_eq!(again["reply"], c["reply"], "{again}");
    }
    assert_eq!(
        handed(&b),
        3,
        "B handed over the add and both claims it was sent"
    );
    assert_eq!(
        counter(&b, "vine_ops_committed_when_leader_failed_total"),
        0
    );
    assert_eq!(counter(&a, "vine_leading"), 1);
    assert_eq!(counter(&b, "vine_leading"), 0);
    let (_, shown) = vine_at(&b.url, &["show", &id.to_string()]);
    assert_eq!(shown["task"]["claimed_by"], json!("w1"), "{shown}");
    // A is killed: B commits its changes itself, at once, and then leads.
    a.kill();
    let (status, d) = post_op(
        b.addr,
        &json!({"op": "complete", "task": id, "worker": "w1", "result": "r"}),
        Some("done-1"),
    );
    assert_eq!(status, 200, "{d}");
    assert!(
        counter(&b, "vine_ops_committed_when_leader_failed_total") >= 1,
        "{}",
        b.stderr()
    );
    assert!(
        b.stderr().contains(&format!(
            "could not hand changes to the leading server {}",
            a.url
        )),
        "{}",
        b.stderr()
    );
    wait_for(&b, |t| t == &json!({"leading": true, "leader": null}));
    // A server started again follows B.
    let c2 = serve(tmp.path(), "c", Some(&db));
    wait_for(&c2, |t| t == &json!({"leading": false, "leader": b.url}));
    let (status, v) = post_op(
        c2.addr,
        &json!({"op": "add", "task": {"description": "through c"}}),
        Some("add-c"),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(handed(&c2), 1);
    let (_, tasks) = vine_at(&c2.url, &["tasks", "--all"]);
    let summary: Vec<(String, String)> = tasks["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["description"].as_str().unwrap().to_string(),
                t["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("through b".to_string(), "completed".to_string()),
            ("through c".to_string(), "pending".to_string()),
        ],
        "{tasks}"
    );
}

#[test]
fn advertise_is_refused_without_a_database_and_checked() {
    let tmp = tempfile::tempdir().unwrap();
    for (args, says) in [
        (vec!["--advertise", "http://10.0.0.1:5555"], "--store"),
        (
            vec![
                "--store",
                "postgres://x@127.0.0.1:1/x",
                "--advertise",
                "10.0.0.1:5555",
            ],
            "http://",
        ),
    ] {
        let out = vine_without(ISOLATED)
            .args(["serve", "--no-exec", "--listen", "127.0.0.1:0", "--root"])
            .arg(tmp.path())
            .args(&args)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}

/// Eight workers, four on each server, claim and complete 120 tasks: each once.
fn race_over_two_servers(servers: &[Server; 2]) {
    const TASKS: usize = 120;
    let plan: Vec<Value> = (0..TASKS)
        .map(|i| json!({"task": {"description": format!("task {i}")}}))
        .collect();
    let (status, added) = post_op(
        servers[0].addr,
        &json!({"op": "add-plan", "tasks": plan}),
        None,
    );
    assert_eq!(status, 200, "{added}");
    let workers: Vec<_> = (0..8)
        .map(|w| {
            let addr = servers[w % 2].addr;
            std::thread::spawn(move || {
                let worker = format!("w{w}");
                let mut done = Vec::new();
                for n in 0.. {
                    let claim = json!({"op": "claim", "worker": worker});
                    let (status, c) = post_op(addr, &claim, Some(&format!("{worker}-claim-{n}")));
                    assert_eq!(status, 200, "{c}");
                    let Some(id) = c["reply"]["claim"]["task"]["id"].as_u64() else {
                        break;
                    };
                    let complete = json!({"op": "complete", "task": id, "worker": worker});
                    let (status, d) = post_op(addr, &complete, Some(&format!("{worker}-done-{n}")));
                    assert_eq!(status, 200, "{worker} completing {id}: {d}");
                    done.push(id);
                }
                done
            })
        })
        .collect();
    let mut done: Vec<u64> = workers
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    done.sort_unstable();
    let before = done.len();
    done.dedup();
    assert_eq!(before, done.len(), "no task was completed twice");
    assert_eq!(done.len(), TASKS, "every task was completed");
    let (_, tasks) = vine_at(&servers[1].url, &["tasks", "--all"]);
    let tasks = tasks["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), TASKS);
    for t in tasks {
        assert_eq!(t["status"], json!("completed"), "{t}");
        assert_eq!(t["attempts"], json!(1), "claimed once: {t}");
    }
}

// ---------------------------------------------------------------------------------------------
// Starting and losing the database
// ---------------------------------------------------------------------------------------------

/// `vine serve --store STORE` that must not start: (exit code, stderr).
fn refused_start(root: &Path, store: &str) -> (i32, String) {
    std::fs::create_dir_all(root).unwrap();
    let out = vine_without(ISOLATED)
        .env_remove("VINE_STORE_CA")
        .args(["serve", "--no-exec", "--listen", "127.0.0.1:0", "--root"])
        .arg(root)
        .args(["--store", store])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_newer_schema_is_refused_untouched() {
    let pg = Cluster::start();
    let db = pg.create_db("newer");
    let tmp = tempfile::tempdir().unwrap();
    drop(serve(tmp.path(), "first", Some(&db)));
    let mut c = postgres::Client::connect(&db, postgres::NoTls).unwrap();
    c.batch_execute("INSERT INTO vine_schema (version) VALUES (999)")
        .unwrap();
    let count = |c: &mut postgres::Client| -> i64 {
        c.query_one("SELECT count(*) FROM vine_schema", &[])
            .unwrap()
            .get(0)
    };
    let before = count(&mut c);
    assert_eq!(
        before,
        i64::from(agentvine::store::pg::SCHEMA_VERSION) + 1,
        "each migration, and the newer one"
    );
    let (code, stderr) = refused_start(&tmp.path().join("second"), &db);
    assert_eq!(code, 9, "{stderr}");
    assert!(
        stderr.contains("schema version 999") && stderr.contains("newer"),
        "{stderr}"
    );
    assert_eq!(count(&mut c), before, "nothing was changed");
}

#[test]
fn an_unreachable_database_at_start_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let nowhere = tmp.path().join("no-postgres-here");
    std::fs::create_dir_all(&nowhere).unwrap();
    let store = format!(
        "postgres://vine@{}/board",
        nowhere.display().to_string().replace('/', "%2F")
    );
    let (code, stderr) = refused_start(&tmp.path().join("root"), &store);
    assert_eq!(code, 6, "{stderr}");
    assert!(
        stderr.contains("cannot be reached") && stderr.contains("postgres://vine@"),
        "{stderr}"
    );
    let (code, stderr) = refused_start(
        &tmp.path().join("root"),
        "postgres://vine:pw@host/db?bogus=1",
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(!stderr.contains("pw"), "no password in messages: {stderr}");
}

#[test]
fn a_database_lost_while_serving_fails_ops_as_unreachable_until_it_is_back() {
    let pg = Cluster::start();
    let db = pg.create_db("lost");
    let tmp = tempfile::tempdir().unwrap();
    let s = serve(tmp.path(), "root", Some(&db));
    let (code, v) = vine_at(&s.url, &["add", "before"]);
    assert_eq!(code, 0, "{v}");
    pg.stop();
    let add = json!({"op": "add", "task": {"description": "while down"}});
    let (status, v) = post_op(s.addr, &add, Some("down-key-1"));
    assert_eq!(status, 503, "{v}");
    assert_eq!(v["kind"], json!("unreachable"), "{v}");
    let (status, v) = post_op(s.addr, &json!({"op": "status"}), None);
    assert_eq!(status, 503, "{v}");
    pg.start_again();
    // The same request again is applied (once), on a new connection.
    let (status, v) = post_op(s.addr, &add, Some("down-key-1"));
    assert_eq!(status, 200, "{v}");
    let (status, again) = post_op(s.addr, &add, Some("down-key-1"));
    assert_eq!(status, 200, "{again}");
    assert_eq!(v, again);
    let (_, tasks) = vine_at(&s.url, &["tasks"]);
    assert_eq!(tasks["tasks"].as_array().unwrap().len(), 2, "{tasks}");
    // A restart between two ops is not seen at all: the stale connections are replaced.
    pg.stop();
    pg.start_again();
    let (status, v) = post_op(s.addr, &json!({"op": "status"}), None);
    assert_eq!(status, 200, "{v}");
    let claim = json!({"op": "claim", "worker": "w1"});
    let (status, v) = post_op(s.addr, &claim, None);
    assert_eq!(status, 200, "{v}");
}

#[test]
fn a_database_over_tls_has_its_certificate_verified() {
    let pg = Cluster::start();
    pg.create_db("tls");
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    let cert = pg.sock_dir().join("server.crt");
    let key = pg.sock_dir().join("server.key");
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    pg.give_to_server(&cert);
    pg.give_to_server(&key);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    pg.stop();
    pg.start_again_with(&format!(
        "-c listen_addresses=127.0.0.1 -c port={port} -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
        cert.display(),
        key.display()
    ));
    let store = format!("postgres://vine@127.0.0.1:{port}/tls?sslmode=require");
    // A certificate no root vouches for is refused.
    let tmp = tempfile::tempdir().unwrap();
    let (code, stderr) = refused_start(&tmp.path().join("untrusted"), &store);
    assert_eq!(code, 6, "{stderr}");
    assert!(stderr.to_lowercase().contains("certificate"), "{stderr}");
    // Trusted through VINE_STORE_CA, the board works, encrypted.
    let ca = tmp.path().join("ca.pem");
    std::fs::write(&ca, ck.cert.pem()).unwrap();
    let s = Server::start(
        &tmp.path().join("root"),
        &["--no-exec", "--store", &store],
        &[("VINE_STORE_CA", ca.to_str().unwrap())],
    );
    let (code, v) = vine_at(&s.url, &["add", "over tls"]);
    assert_eq!(code, 0, "{v}");
    let mut c = postgres::Client::connect(
        &format!("host=127.0.0.1 port={port} user=vine dbname=tls"),
        postgres::NoTls,
    )
    .unwrap();
    let encrypted: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) \
             WHERE application_name = 'vine serve' AND ssl",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(encrypted >= 1, "the server's connections are encrypted");
}

// ---------------------------------------------------------------------------------------------
// What only makes sense on files
// ---------------------------------------------------------------------------------------------

#[test]
fn board_files_in_the_base_directory_are_not_the_board_but_settings_deploy() {
    let pg = Cluster::start();
    let db = pg.create_db("deploy");
    let tmp = tempfile::tempdir().unwrap();
    let s = serve(tmp.path(), "root", Some(&db));
    // `vine --url URL init` with settings deploys board.json: the settings land in the board.
    let r = run(isolated(&[("VINE_URL", &s.url)]).args(["--json", "init", "--lease", "7m"]));
    assert_eq!(r.code, 0, "{r:?}");
    let (_, v) = post_op(s.addr, &json!({"op": "settings"}), None);
    assert_eq!(v["reply"]["settings"]["lease_secs"], json!(420), "{v}");
    // A queue file is refused: it would not be the board.
    let r = deploy(s.addr, "task-queue.json", "[]\n");
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(
        r.body.contains("PostgreSQL") || r.body.contains("postgres://"),
        "{}",
        r.body
    );
    assert!(!s.root.join("task-queue.json").exists());
    // An instruction file deployed under tasks/ is on the board: a task can name it, and its
    // claim carries the text.
    let r = deploy(s.addr, "tasks/setup.md", "# Set up\nRun it.\n");
    assert_eq!(r.status, 200, "{}", r.body);
    let (code, v) = vine_at(
        &s.url,
        &["add", "named", "--instruction-file", "./tasks//setup.md"],
    );
    assert_eq!(code, 0, "{v}");
    let (code, v) = vine_at(
        &s.url,
        &["add", "missing", "--instruction-file", "tasks/no.md"],
    );
    assert_eq!(code, 2, "{v}");
    let (code, v) = vine_at(&s.url, &["claim", "-w", "w1"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(
        v["claim"]["instructions"],
        json!("# Set up\nRun it.\n"),
        "{v}"
    );
    // `vine repair` has nothing to repair there, and says so.
    let (code, v) = vine_at(&s.url, &["repair"]);
    assert_eq!(code, 2, "{v}");
}

// ---------------------------------------------------------------------------------------------
// Moving a board between files and PostgreSQL
// ---------------------------------------------------------------------------------------------

/// `vine --json --dir DIR ARGS` on a local board.
fn vine_dir(dir: &Path, args: &[&str]) -> (i32, Value) {
    let r = run(isolated(&[]).arg("--json").arg("--dir").arg(dir).args(args));
    (r.code, r.json())
}

/// `vine --json ARGS` with no board in the environment.
fn vine_plain(args: &[&str]) -> (i32, Value) {
    let r = run(isolated(&[]).arg("--json").args(args));
    (r.code, r.json())
}

/// The board files of `dir` (all but the lock), by board-relative path.
fn board_files(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().display().to_string();
                if rel != "board.lock" {
                    out.insert(rel, std::fs::read(&p).unwrap());
                }
            }
        }
    }
    out
}

/// A board file's content as JSON values: one for a JSON file, one per line for JSON lines.
fn as_json(name: &str, bytes: &[u8]) -> Value {
    let text = String::from_utf8_lossy(bytes);
    if name.ends_with(".jsonl") {
        Value::Array(
            text.lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect(),
        )
    } else if name.ends_with(".json") {
        serde_json::from_str(&text).unwrap()
    } else {
        json!(text)
    }
}

/// The time `board.lock` records as the last change's (epoch ms).
fn lock_stamp(dir: &Path) -> i64 {
    let text = std::fs::read_to_string(dir.join("board.lock")).unwrap();
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("board.lock holds {text:?}"))
}

fn epoch_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[test]
fn the_board_clock_goes_on_across_a_move_never_back() {
    let pg = Cluster::start();
    let db = pg.create_db("clock");
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let (code, v) = vine_dir(&src, &["init"]);
    assert_eq!(code, 0, "{v}");
    let (code, v) = vine_dir(&src, &["add", "one"]);
    assert_eq!(code, 0, "{v}");
    // The file board's last change is stamped 1.8 s ahead of this clock (within the 2 s
    // the board allows between clocks): the board in the database goes on from there.
    let ahead = epoch_ms() + 1800;
    std::fs::write(src.join("board.lock"), format!("{ahead:>20}\n")).unwrap();
    let (code, v) = vine_plain(&[
        "board",
        "import",
        "--store",
        &db,
        &src.display().to_string(),
    ]);
    assert_eq!(code, 0, "{v}");
    let mut c = postgres::Client::connect(&db, postgres::NoTls).unwrap();
    let clock: i64 = c
        .query_one("SELECT clock_ms FROM board WHERE id = 1", &[])
        .unwrap()
        .get(0);
    assert!(
        clock >= ahead,
        "the database's board clock {clock} is before the file board's last change {ahead}"
    );
    // And back: the database's last change, ahead of this clock, is where the exported file
    // board's clock goes on from.
    let ahead = epoch_ms() + 1800;
    c.execute("UPDATE board SET clock_ms = $1 WHERE id = 1", &[&ahead])
        .unwrap();
    let out = tmp.path().join("out");
    let (code, v) = vine_plain(&[
        "board",
        "export",
        "--store",
        &db,
        &out.display().to_string(),
    ]);
    assert_eq!(code, 0, "{v}");
    let stamp = lock_stamp(&out);
    assert!(
        stamp >= ahead,
        "the exported board's clock {stamp} is before the database's last change {ahead}"
    );
}

#[test]
fn a_file_board_moves_to_postgresql_and_back_without_loss() {
    let pg = Cluster::start();
    let db1 = pg.create_db("moved1");
    let db2 = pg.create_db("moved2");
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let ok = |args: &[&str]| {
        let (code, v) = vine_dir(&src, args);
        assert!(code == 0 || code == 3, "{args:?}: {v}");
        v
    };
    ok(&["init", "--lease", "7m", "--max-retries", "2"]);
    // A line of the original plan's log: no number, a naive time.
    std::fs::write(
        src.join("agent-comms.jsonl"),
        "{\"timestamp\":\"2025-11-09T10:00:00\",\"agent\":\"human\",\"message\":\"from before\"}\n",
    )
    .unwrap();
    let plan = tmp.path().join("plan.json");
    std::fs::write(
        &plan,
        r#"[{"key": "p1", "description": "plan one", "instructions": "step one\n"},
            {"key": "p2", "description": "plan two", "after": ["p1"]}]"#,
    )
    .unwrap();
    ok(&["register", "-w", "w1", "-c", "rust"]);
    let a = ok(&["add", "alpha", "--instructions", "# Alpha\nDo it.\n"])["tasks"][0]["id"].clone();
    ok(&["add", "beta", "--priority", "high", "--requires", "rust"]);
    ok(&["add", "--plan", &plan.display().to_string()]);
    let claimed = ok(&["claim", "-w", "w1"]);
    let id = claimed["claim"]["task"]["id"].as_u64().unwrap().to_string();
    ok(&[
        "complete",
        &id,
        "-w",
        "w1",
        "--result-json",
        "{\"files\": 2}",
    ]);
    let claimed = ok(&["claim", "-w", "w1"]);
    let id2 = claimed["claim"]["task"]["id"].as_u64().unwrap().to_string();
    ok(&["fail", &id2, "-w", "w1", "--error", "flaky"]);
    let q = ok(&["ask", "which port?", "-w", "w1", "--task", &id2]);
    let seq = q["message"]["seq"].as_u64().unwrap().to_string();
    ok(&["answer", &seq, "5555"]);
    ok(&["msg", "send", "hello", "--as", "lead"]);
    ok(&[
        "progress",
        "set",
        "--step",
        "1",
        "--total",
        "3",
        "--meta",
        "phase=\"one\"",
    ]);
    let run_op = json!({"op": {"op": "record-run", "session": "s-1", "worker": "w1",
        "task": id.parse::<u64>().unwrap(), "attempt": 1, "turns": 4, "cost_usd": 0.25}});
    ok(&["op", &run_op.to_string()]);
    ok(&["compact"]);
    ok(&["add", "after the archive", "--after", &a.to_string()]);
    // A field this version does not know, on a queued task, is kept.
    let queue_path = src.join("task-queue.json");
    let mut queue: Value = serde_json::from_slice(&std::fs::read(&queue_path).unwrap()).unwrap();
    queue[0]["custom"] = json!({"kept": [1, 2]});
    std::fs::write(&queue_path, serde_json::to_vec_pretty(&queue).unwrap()).unwrap();
    let before = board_files(&src);
    assert!(before.contains_key("task-archive.jsonl") && before.contains_key("sessions.json"));

    let (code, v) = vine_plain(&[
        "board",
        "import",
        "--store",
        &db1,
        &src.display().to_string(),
    ]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["moved"]["archived"], json!(1), "{v}");
    assert_eq!(
        board_files(&src),
        before,
        "an import leaves the file board as it was"
    );
    let out1 = tmp.path().join("out1");
    let (code, v) = vine_plain(&[
        "board",
        "export",
        "--store",
        &db1,
        &out1.display().to_string(),
    ]);
    assert_eq!(code, 0, "{v}");
    let after = board_files(&out1);
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>(),
        "the same files"
    );
    for (name, bytes) in &before {
        assert_eq!(
            as_json(name, bytes),
            as_json(name, &after[name]),
            "{name} holds the same after an import and an export"
        );
    }
    assert_eq!(
        before["agent-comms.jsonl"], after["agent-comms.jsonl"],
        "log lines as written"
    );
    // Again, from the export: the files come back byte for byte.
    let (code, v) = vine_plain(&[
        "board",
        "import",
        "--store",
        &db2,
        &out1.display().to_string(),
    ]);
    assert_eq!(code, 0, "{v}");
    let out2 = tmp.path().join("out2");
    let (code, v) = vine_plain(&[
        "board",
        "export",
        "--store",
        &db2,
        &out2.display().to_string(),
    ]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(
        board_files(&out2),
        after,
        "import → export is stable to the byte"
    );
    // A board that is not empty is not imported into; an export does not overwrite a board.
    let (code, v) = vine_plain(&[
        "board",
        "import",
        "--store",
        &db1,
        &src.display().to_string(),
    ]);
    assert_eq!(code, 4, "{v}");
    let (code, v) = vine_plain(&[
        "board",
        "export",
        "--store",
        &db1,
        &src.display().to_string(),
    ]);
    assert_eq!(code, 2, "{v}");
    // Served, the moved board answers as the file board does.
    let on_pg = serve(tmp.path(), "served-pg", Some(&db1));
    for args in [
        &["tasks", "--all"][..],
        &["status"],
        &["questions", "--all"],
        &["msg", "read"],
        &["progress"],
        &["sessions", "--all"],
        &["show", &id],
    ] {
        let (c1, local) = vine_dir(&src, args);
        let (c2, remote) = vine_at(&on_pg.url, args);
        assert_eq!((c1, &local), (c2, &remote), "{args:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Random batches: the store seam on files and on PostgreSQL, side by side
// ---------------------------------------------------------------------------------------------

mod random_batches {
    use super::*;
    use agentvine::op::Op;
    use agentvine::store::BatchStore;
    use agentvine::store::local::LocalStore;
    use agentvine::store::pg::PgStore;
    use proptest::prelude::*;

    /// One generated op, with task, worker and question references resolved per store.
    #[derive(Debug, Clone)]
    enum Step {
        Add {
            high: bool,
            after: Option<usize>,
            rust: bool,
            text: bool,
        },
        Claim(usize),
        Complete(usize, usize),
        Fail(usize, usize, bool),
        Release(usize, usize),
        Cancel(usize),
        Retry(usize),
        Priority(usize),
        Heartbeat(usize),
        Register(usize, bool),
        Send(usize, Option<usize>),
        Ask(usize, Option<usize>),
        Answer(usize),
        Progress(u8),
        Compact,
        Requeue,
        Read(u8, usize),
    }

    fn step() -> impl Strategy<Value = Step> {
        let w = 0..3usize;
        let t = 0..8usize;
        prop_oneof![
            3 => (any::<bool>(), proptest::option::of(0..8usize), any::<bool>(), any::<bool>())
                .prop_map(|(high, after, rust, text)| Step::Add { high, after, rust, text }),
            3 => w.clone().prop_map(Step::Claim),
            2 => (t.clone(), w.clone()).prop_map(|(t, w)| Step::Complete(t, w)),
            1 => (t.clone(), w.clone(), any::<bool>()).prop_map(|(t, w, n)| Step::Fail(t, w, n)),
            1 => (t.clone(), w.clone()).prop_map(|(t, w)| Step::Release(t, w)),
            1 => t.clone().prop_map(Step::Cancel),
            1 => t.clone().prop_map(Step::Retry),
            1 => t.clone().prop_map(Step::Priority),
            1 => w.clone().prop_map(Step::Heartbeat),
            1 => (w.clone(), any::<bool>()).prop_map(|(w, r)| Step::Register(w, r)),
            1 => (w.clone(), proptest::option::of(t.clone())).prop_map(|(w, t)| Step::Send(w, t)),
            1 => (w.clone(), proptest::option::of(t.clone())).prop_map(|(w, t)| Step::Ask(w, t)),
            1 => (0..4usize).prop_map(Step::Answer),
            1 => any::<u8>().prop_map(Step::Progress),
            1 => Just(Step::Compact),
            1 => Just(Step::Requeue),
            2 => (0..6u8, t).prop_map(|(k, t)| Step::Read(k, t)),
        ]
    }

    /// A batch: steps, each with an optional request key from a small set (so keys repeat).
    fn batches() -> impl Strategy<Value = Vec<Vec<(Step, Option<u8>)>>> {
        proptest::collection::vec(
            proptest::collection::vec((step(), proptest::option::of(0..6u8)), 1..5),
            10..30,
        )
    }

    /// One store under test and what its replies taught: task ids in order of addition,
    /// question numbers in order of asking.
    struct Under {
        store: Box<dyn BatchStore>,
        mask: Mask,
        tasks: Vec<u64>,
        questions: Vec<u64>,
    }

    impl Under {
        fn task(&self, i: usize) -> u64 {
            if self.tasks.is_empty() {
                999
            } else {
                self.tasks[i % self.tasks.len()]
            }
        }

        fn op(&self, s: &Step) -> Op {
            let w = |i: &usize| format!("w{i}");
            let v = match s {
                Step::Add {
                    high,
                    after,
                    rust,
                    text,
                } => json!({"op": "add", "task": {
                    "description": "generated",
                    "priority": if *high { "high" } else { "normal" },
                    "after": after.map(|a| vec![self.task(a)]).unwrap_or_default(),
                    "requires": if *rust { vec!["rust"] } else { vec![] },
                    "instructions": text.then_some("do it\n"),
                    "max_retries": 1,
                }}),
                Step::Claim(x) => json!({"op": "claim", "worker": w(x)}),
                Step::Complete(t, x) => {
                    json!({"op": "complete", "task": self.task(*t), "worker": w(x), "result": "r"})
                }
                Step::Fail(t, x, n) => json!({"op": "fail", "task": self.task(*t),
                    "worker": w(x), "error": "e", "no_retry": n}),
                Step::Release(t, x) => {
                    json!({"op": "release", "task": self.task(*t), "worker": w(x)})
                }
                Step::Cancel(t) => json!({"op": "cancel", "task": self.task(*t)}),
                Step::Retry(t) => json!({"op": "retry", "task": self.task(*t)}),
                Step::Priority(t) => {
                    json!({"op": "set-priority", "task": self.task(*t), "priority": "low"})
                }
                Step::Heartbeat(x) => json!({"op": "heartbeat", "worker": w(x)}),
                Step::Register(x, r) => json!({"op": "register", "worker": w(x),
                    "capabilities": if *r { vec!["rust"] } else { vec![] }}),
                Step::Send(x, t) => json!({"op": "send", "agent": w(x), "message": "m",
                    "task": t.map(|t| self.task(t))}),
                Step::Ask(x, t) => json!({"op": "ask", "agent": w(x), "question": "q?",
                    "task": t.map(|t| self.task(t))}),
                Step::Answer(q) => json!({"op": "answer", "agent": "lead", "answer": "a",
                    "question": self.questions.get(*q).copied().unwrap_or(1)}),
                Step::Progress(n) => json!({"op": "set-progress", "current_step": n}),
                Step::Compact => json!({"op": "compact"}),
                Step::Requeue => json!({"op": "requeue-stale"}),
                Step::Read(k, t) => match k {
                    0 => json!({"op": "status"}),
                    1 => json!({"op": "tasks", "all": true}),
                    2 => json!({"op": "show", "task": self.task(*t)}),
                    3 => json!({"op": "workers"}),
                    4 => json!({"op": "questions", "all": true}),
                    _ => json!({"op": "read-messages", "filter": {"limit": 5}}),
                },
            };
            serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{v}: {e}"))
        }

        /// Runs a batch; the replies as the wire carries them, masked.
        fn run(&mut self, batch: &[(Step, Option<u8>)]) -> Vec<Value> {
            let ops = batch
                .iter()
                .map(|(s, k)| (self.op(s), k.map(|k| format!("key-{k}"))))
                .collect();
            let replies = self.store.execute_batch(ops);
            replies
                .iter()
                .map(|r| {
                    let v = agentvine::wire::to_value(r).unwrap();
                    if let Some(ts) = v["reply"]["tasks"].as_array()
                        && v["reply"]["reply"] == json!("added")
                    {
                        for t in ts {
                            let id = t["id"].as_u64().unwrap();
                            if !self.tasks.contains(&id) {
                                self.tasks.push(id);
                                self.mask.learn(id);
                            }
                        }
                    }
                    if v["reply"]["message"]["kind"] == json!("question") {
                        let seq = v["reply"]["message"]["seq"].as_u64().unwrap();
                        if !self.questions.contains(&seq) {
                            self.questions.push(seq);
                        }
                    }
                    self.mask.apply(&v)
                })
                .collect()
        }
    }

    #[test]
    fn a_completion_stays_on_its_worker_when_the_task_moves_to_the_archive() {
        // Found by the random batches: on PostgreSQL the worker's last completion, recorded
        // only by the queue within a second of a worker write, left with the archived task.
        let pg = Cluster::start();
        let db = pg.create_db("facts");
        let tmp = tempfile::tempdir().unwrap();
        let stores: Vec<Box<dyn BatchStore>> = vec![
            Box::new(LocalStore::init(tmp.path(), None).unwrap()),
            Box::new(PgStore::open(&db).unwrap()),
        ];
        for store in stores {
            let one = |op: Value| {
                let op: Op = serde_json::from_value(op).unwrap();
                let mut r = store.execute_batch(vec![(op, None)]);
                serde_json::to_value(r.pop().unwrap().unwrap()).unwrap()
            };
            one(json!({"op": "register", "worker": "w1"}));
            let added = one(json!({"op": "add", "task": {"description": "t"}}));
            let id = added["tasks"][0]["id"].clone();
            one(json!({"op": "claim", "worker": "w1"}));
            one(json!({"op": "complete", "task": id, "worker": "w1"}));
            let c = one(json!({"op": "compact"}));
            assert_eq!(c["archived"], json!(1), "{c}");
            let w = one(json!({"op": "workers"}));
            assert!(
                w["workers"][0]["last_task_completed"].is_string(),
                "{}: {w}",
                store.location()
            );
        }
    }

    #[test]
    fn random_batches_answer_the_same_on_files_and_on_postgresql() {
        let pg = Cluster::start();
        let case = std::sync::atomic::AtomicUsize::new(0);
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
            cases: 6,
            failure_persistence: None,
            ..ProptestConfig::default()
        });
        let outcome = runner.run(&batches(), |batches| {
            let n = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let db = pg.create_db(&format!("case{n}"));
            let tmp = tempfile::tempdir().unwrap();
            let mut sides = [
                Under {
                    store: Box::new(LocalStore::init(tmp.path(), None).unwrap()),
                    mask: Mask {
                        ids: HashMap::new(),
                    },
                    tasks: Vec::new(),
                    questions: Vec::new(),
                },
                Under {
                    store: Box::new(PgStore::open(&db).unwrap()),
                    mask: Mask {
                        ids: HashMap::new(),
                    },
                    tasks: Vec::new(),
                    questions: Vec::new(),
                },
            ];
            for (i, batch) in batches.iter().enumerate() {
                let files = sides[0].run(batch);
                let on_pg = sides[1].run(batch);
                prop_assert_eq!(files, on_pg, "batch {} {:?}", i, batch);
            }
            let last = [
                (Step::Read(1, 0), None),
                (Step::Read(0, 0), None),
                (Step::Read(4, 0), None),
            ];
            let files = sides[0].run(&last);
            let on_pg = sides[1].run(&last);
            prop_assert_eq!(files, on_pg);
            Ok(())
        });
        if let Err(e) = outcome {
            panic!("{e}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Exactly once through server kills and a database restart
// ---------------------------------------------------------------------------------------------

/// What one worker process loop saw.
#[derive(Default)]
struct Worked {
    completed: Vec<u64>,
    errors: Vec<String>,
}

/// A worker as a user runs one: `vine claim` then `vine complete`, each a `vine` process with
/// `VINE_URL` listing both servers (the client fails over and retries with its request key),
/// until every task is done.
fn pg_worker(urls: &str, worker: &str, total: usize, done: &AtomicUsize) -> Worked {
    let env = [
        ("VINE_URL", urls),
        ("VINE_WORKER", worker),
        ("VINE_RETRY_FOR", "60s"),
    ];
    let mut w = Worked::default();
    while done.load(Ordering::SeqCst) < total {
        let r = run(isolated(&env).args(["--json", "claim"]));
        match r.code {
            0 => {}
            // Nothing claimable now (the rest are claimed): look again shortly.
            3 => {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            _ => {
                w.errors.push(format!("claim: {r:?}"));
                return w;
            }
        }
        let v = r.json();
        let t = &v["claim"]["task"];
        let (Some(id), Some(attempt)) = (t["id"].as_u64(), t["attempts"].as_u64()) else {
            w.errors.push(format!("odd claim reply: {v}"));
            return w;
        };
        let r = run(isolated(&env).args([
            "--json",
            "complete",
            &id.to_string(),
            "--attempt",
            &attempt.to_string(),
            "--result",
            "done",
        ]));
        if r.code != 0 {
            w.errors.push(format!("complete {id}: {r:?}"));
            return w;
        }
        w.completed.push(id);
        done.fetch_add(1, Ordering::SeqCst);
    }
    w
}

/// 16 workers over two `vine serve --store` instances race over 2,000 tasks while one
/// instance is SIGKILLed and restarted twice and PostgreSQL itself is restarted once (fast
/// shutdown): every task is completed exactly once, on its first attempt, and no worker sees
/// an error (the client fails over to the other server and retries with the same request key).
#[test]
fn exactly_once_through_server_kills_and_a_database_restart() {
    const TASKS: usize = 2000;
    const WORKERS: usize = 16;
    let pg = Cluster::start();
    let db = pg.create_db("faults");
    let tmp = tempfile::tempdir().unwrap();
    let mut a = serve(tmp.path(), "a", Some(&db));
    let mut b = serve(tmp.path(), "b", Some(&db));
    for chunk in 0..TASKS / 500 {
        let plan: Vec<Value> = (0..500)
            .map(|i| json!({"task": {"description": format!("task {}", chunk * 500 + i)}}))
            .collect();
        let (status, added) = post_op(a.addr, &json!({"op": "add-plan", "tasks": plan}), None);
        assert_eq!(status, 200, "{added}");
    }
    // Half the workers list a first, half b first.
    let ab = format!("{},{}", a.url, b.url);
    let ba = format!("{},{}", b.url, a.url);
    let done = AtomicUsize::new(0);
    let wait_for = |n: usize| {
        let deadline = Instant::now() + Duration::from_secs(300);
        while done.load(Ordering::SeqCst) < n {
            assert!(Instant::now() < deadline, "no progress to {n} completions");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let (results, faults) = std::thread::scope(|s| {
        let handles: Vec<_> = (0..WORKERS)
            .map(|i| {
                let urls = if i % 2 == 0 { &ab } else { &ba };
                let done = &done;
                s.spawn(move || pg_worker(urls, &format!("w{i}"), TASKS, done))
            })
            .collect();
        let mut faults = Vec::new();
        wait_for(TASKS / 5);
        a.kill();
        std::thread::sleep(Duration::from_millis(300));
        a.restart();
        faults.push(("server a killed and restarted", done.load(Ordering::SeqCst)));
        wait_for(TASKS * 2 / 5);
        pg.restart_fast();
        faults.push(("PostgreSQL restarted (fast)", done.load(Ordering::SeqCst)));
        wait_for(TASKS * 3 / 5);
        b.kill();
        std::thread::sleep(Duration::from_millis(300));
        b.restart();
        faults.push(("server b killed and restarted", done.load(Ordering::SeqCst)));
        let results: Vec<Worked> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        (results, faults)
    });
    eprintln!("faults at (what, completions): {faults:?}");
    let errors: Vec<&String> = results.iter().flat_map(|w| &w.errors).collect();
    assert!(
        errors.is_empty(),
        "client errors after retries: {errors:#?}"
    );
    let mut completed: Vec<u64> = results.iter().flat_map(|w| w.completed.clone()).collect();
    completed.sort_unstable();
    let acknowledged = completed.len();
    completed.dedup();
    assert_eq!(acknowledged, completed.len(), "a task was completed twice");
    assert_eq!(completed.len(), TASKS, "every task was completed");
    let (code, tasks) = vine_at(&b.url, &["tasks", "--all"]);
    assert_eq!(code, 0, "{tasks}");
    let tasks = tasks["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), TASKS, "no task lost or added");
    for t in tasks {
        assert_eq!(t["status"], json!("completed"), "{t}");
        assert_eq!(t["attempts"], json!(1), "claimed once: {t}");
    }
}
