//! A scripted stand-in for the Anthropic Messages API: an HTTP/1.1 server on 127.0.0.1 that
//! plays the model for the real Claude Code CLI (`ANTHROPIC_BASE_URL`). It answers a task's
//! hand-over ("Task <id> is claimed for you") with a Bash tool call running `vine complete`, a
//! tool result with a short text and `end_turn`, and so on (see [`decide`]); every answer
//! reports 10 input and 5 output tokens. Shared by the end-to-end tests
//! (`tests/claude_e2e.rs`) and the pool demo (`examples/standin_model.rs`), which includes
//! this file by path.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::sleep;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// The stand-in for the Messages API
// ---------------------------------------------------------------------------------------------

/// What a request to the stand-in was, judged from the last user message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The first prompt.
    Prompt,
    /// Stop-hook feedback handing over a task ("Task <id> is claimed for you").
    Claimed,
    /// Stop-hook feedback reminding of a held task ("You still hold task <id>").
    Holds,
    /// Stop-hook feedback with nothing to do ("No task for ...", or the naive hook's reason).
    Idle,
    /// A tool result came back.
    ToolResult,
    /// A request without tools (a side request of the CLI), answered with plain text.
    Aux,
    /// Not a POST to /v1/messages (the CLI's HEAD / probe, count_tokens...).
    Other,
}

/// One request the stand-in answered.
#[derive(Debug, Clone)]
pub struct Logged {
    /// When it came, since the stand-in started.
    pub at: Duration,
    pub method: String,
    pub path: String,
    pub kind: Kind,
    /// The text of the last user message (shortened).
    pub text: String,
    /// For a tool result: (is_error, its text).
    pub tool_result: Option<(bool, String)>,
    /// The `vine complete` the reply runs: (task id, worker, attempt).
    pub complete: Option<(u64, String, u64)>,
    /// What the stand-in replied, in short.
    pub reply: String,
    /// The size of the request body (grows with the conversation).
    pub bytes: usize,
    /// `worker-status.json` of the board when the request came (if the stand-in watches one).
    pub workers: Option<Value>,
    /// What the request carried of the project's setup: the SessionStart hook's context,
    /// the CLAUDE.md section and the skill's description.
    pub saw_session_context: bool,
    pub saw_claude_md: bool,
    pub saw_skill: bool,
    /// The request carries the question a parked session asked earlier (its history).
    pub saw_question: bool,
    /// The request carries the hand-over of task "Schema first" (a resumed session's history).
    pub saw_schema_task: bool,
    /// The tasks whose hand-over ("Task N is claimed for you") the request carries, in order.
    pub handed_over: Vec<u64>,
}

impl Logged {
    /// A request to /v1/messages: a model turn, the cost being measured.
    pub fn is_model_request(&self) -> bool {
        self.kind != Kind::Other
    }

    /// A turn of the worker's conversation (not a side request of the CLI).
    pub fn is_turn(&self) -> bool {
        self.is_model_request() && self.kind != Kind::Aux
    }
}

pub struct Shared {
    pub worker: String,
    pub board: Option<PathBuf>,
    pub latency: Duration,
    pub started: Instant,
    pub log: Mutex<Vec<Logged>>,
    pub next_id: AtomicU64,
    /// Tasks handed over with `[ignore-once]` in their instructions that the model ignored.
    pub ignored: Mutex<BTreeSet<u64>>,
    /// Print a line for every model request as it is answered (the demo's view).
    pub echo: AtomicBool,
}

/// The scripted model: an HTTP/1.1 server on 127.0.0.1 speaking enough of the Messages API.
pub struct StandIn {
    pub port: u16,
    pub shared: Arc<Shared>,
}

impl StandIn {
    /// Starts a stand-in playing the model of `worker`. With `board`, it records the board's
    /// worker-status.json with every request; `latency` delays every answer (a slow model).
    pub fn start(worker: &str, board: Option<&Path>, latency: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            worker: worker.to_string(),
            board: board.map(Path::to_path_buf),
            latency,
            started: Instant::now(),
            log: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
            ignored: Mutex::new(BTreeSet::new()),
            echo: AtomicBool::new(false),
        });
        let s = shared.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let s = s.clone();
                std::thread::spawn(move || serve_connection(conn, &s));
            }
        });
        StandIn { port, shared }
    }

    /// The URL to give Claude Code as `ANTHROPIC_BASE_URL`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// From now on, print a line on stdout for every model request answered.
    pub fn echo(&self) {
        self.shared.echo.store(true, Ordering::SeqCst);
    }

    pub fn log(&self) -> Vec<Logged> {
        self.shared.log.lock().unwrap().clone()
    }

    /// The turns of the worker's conversation so far.
    pub fn turns(&self) -> Vec<Logged> {
        self.log().into_iter().filter(Logged::is_turn).collect()
    }

    /// Every request to /v1/messages so far (turns and side requests).
    pub fn model_requests(&self) -> Vec<Logged> {
        self.log()
            .into_iter()
            .filter(Logged::is_model_request)
            .collect()
    }

    /// The log, one line a request, for failure messages.
    pub fn report(&self) -> String {
        let mut s = format!("stand-in log ({}):\n", self.shared.worker);
        for l in self.log() {
            s.push_str(&format!(
                "  {:>7.2}s {} {} {:?} bytes={} text={:?} tool_result={:?} -> {}\n",
                l.at.as_secs_f64(),
                l.method,
                l.path,
                l.kind,
                l.bytes,
                l.text,
                l.tool_result,
                l.reply
            ));
        }
        s
    }
}

pub struct Request {
    pub method: String,
    pub path: String,
    pub body: Vec<u8>,
}

pub fn read_request(r: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut length = 0usize;
    let mut chunked = false;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).ok()? == 0 {
            return None;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
            if k == "content-length" {
                length = v.parse().ok()?;
            } else if k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked") {
                chunked = true;
            }
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            let mut size = String::new();
            r.read_line(&mut size).ok()?;
            let n = usize::from_str_radix(size.trim().split(';').next()?, 16).ok()?;
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk).ok()?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    } else {
        body.resize(length, 0);
        r.read_exact(&mut body).ok()?;
    }
    Some(Request { method, path, body })
}

pub fn serve_connection(conn: TcpStream, s: &Shared) {
    let mut w = conn.try_clone().expect("clone stream");
    let mut r = BufReader::new(conn);
    while let Some(req) = read_request(&mut r) {
        let (status, content_type, body) = answer(&req, s);
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nrequest-id: req_standin\r\n\r\n",
            body.len()
        );
        let mut out = head.into_bytes();
        if req.method != "HEAD" {
            out.extend_from_slice(body.as_bytes());
        }
        if w.write_all(&out).and_then(|_| w.flush()).is_err() {
            return;
        }
    }
}

/// The text of a message's content (a string or a list of blocks), and its tool result.
pub fn content_text(content: &Value) -> (String, Option<(bool, String)>) {
    match content {
        Value::String(s) => (s.clone(), None),
        Value::Array(blocks) => {
            let mut text = String::new();
            let mut result = None;
            for b in blocks {
                match b["type"].as_str() {
                    Some("text") => {
                        text.push_str(b["text"].as_str().unwrap_or_default());
                        text.push('\n');
                    }
                    Some("tool_result") => {
                        let t = match &b["content"] {
                            Value::String(s) => s.clone(),
                            other => content_text(other).0,
                        };
                        result = Some((b["is_error"].as_bool().unwrap_or(false), t));
                    }
                    _ => {}
                }
            }
            (text, result)
        }
        _ => (String::new(), None),
    }
}

/// The number after `prefix` in `text`.
pub fn number_after(text: &str, prefix: &str) -> Option<u64> {
    let i = text.find(prefix)? + prefix.len();
    let digits: String = text[i..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// The word after `prefix` in `text`.
pub fn word_after<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let i = text.find(prefix)? + prefix.len();
    text[i..].split_whitespace().next()
}

/// The reply blocks, stop reason and a summary for the log.
pub struct Reply {
    pub kind: Kind,
    pub blocks: Vec<Value>,
    pub stop: &'static str,
    pub summary: String,
    pub complete: Option<(u64, String, u64)>,
}

pub fn text_reply(kind: Kind, text: &str) -> Reply {
    Reply {
        kind,
        blocks: vec![json!({"type": "text", "text": text})],
        stop: "end_turn",
        summary: format!("text {text:?}"),
        complete: None,
    }
}

pub fn bash_reply(kind: Kind, s: &Shared, command: &str, description: &str) -> Reply {
    let id = format!(
        "toolu_standin_{:06}",
        s.next_id.fetch_add(1, Ordering::SeqCst)
    );
    Reply {
        kind,
        blocks: vec![json!({"type": "tool_use", "id": id, "name": "Bash",
                   "input": {"command": command, "description": description}})],
        stop: "tool_use",
        summary: format!("Bash {command:?}"),
        complete: None,
    }
}

/// The scripted policy, decided from the last user message only.
pub fn decide(body: &Value, s: &Shared) -> (Reply, String, Option<(bool, String)>) {
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    let (text, tool_result) = messages
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .map(|m| content_text(&m["content"]))
        .unwrap_or_default();
    let has_tools = body["tools"].as_array().is_some_and(|t| !t.is_empty());
    let reply = if !has_tools {
        text_reply(Kind::Aux, "OK")
    } else if text.contains("Stop hook feedback") {
        let claimed = number_after(&text, "Task ")
            .filter(|id| text.contains(&format!("Task {id} is claimed for you")));
        let held = number_after(&text, "You still hold task ");
        match (claimed, held) {
            // A hand-over whose instructions say `[ignore-once]`: the first time, the model
            // ends its turn without doing anything.
            (Some(id), _)
                if text.contains("[ignore-once]") && s.ignored.lock().unwrap().insert(id) =>
            {
                text_reply(Kind::Claimed, "I will look at this later.")
            }
            (Some(id), _) | (None, Some(id)) => {
                let kind = if claimed.is_some() {
                    Kind::Claimed
                } else {
                    Kind::Holds
                };
                let worker = word_after(&text, "--worker ")
                    .unwrap_or(&s.worker)
                    .to_string();
                let attempt = number_after(&text, "--attempt ").unwrap_or(1);
                let command = format!(
                    "vine complete {id} --worker {worker} --attempt {attempt} --result 'done by the stand-in'"
                );
                let mut r = bash_reply(kind, s, &command, "Report the task as done");
                r.complete = Some((id, worker, attempt));
                r
            }
            (None, None) => text_reply(Kind::Idle, "Nothing to do now; ending my turn."),
        }
    } else if tool_result.is_some() {
        text_reply(Kind::ToolResult, "Done.")
    } else if text.contains("[long-tool]") {
        bash_reply(
            Kind::Prompt,
            s,
            "sleep 12 && echo slept",
            "A long tool call (a test run)",
        )
    } else if text.contains("The answer to your question") {
        // `vine pool` resumed a parked session with the answer (ids come from VINE_TASK).
        bash_reply(
            Kind::Claimed,
            s,
            "vine complete --result 'done with the answer'",
            "Report the task as done",
        )
    } else if text.contains("is claimed for you") && text.contains("[write]") {
        // Work in the session's folder, committed (a pool worktree).
        bash_reply(
            Kind::Claimed,
            s,
            "echo done > out-$VINE_TASK.txt && git add out-$VINE_TASK.txt && \
             git -c user.email=w@vine -c user.name=vine commit -qm \"task $VINE_TASK\" && \
             vine complete --result committed",
            "Write, commit and report",
        )
    } else if text.contains("is claimed for you") && text.contains("[dirty]") {
        // Work left uncommitted.
        bash_reply(
            Kind::Claimed,
            s,
            "echo wip > wip-$VINE_TASK.txt && vine complete --result 'left uncommitted'",
            "Write and report",
        )
    } else if text.contains("is claimed for you") && text.contains("[ask]") {
        // A task handed over by `vine pool` that needs a person's decision.
        bash_reply(
            Kind::Claimed,
            s,
            "vine ask 'Which database?'",
            "Ask the coordinator",
        )
    } else if text.contains("is claimed for you") {
        // A task handed over by `vine pool` in the first prompt (ids come from VINE_TASK).
        bash_reply(
            Kind::Claimed,
            s,
            "vine complete --result 'done by the stand-in'",
            "Report the task as done",
        )
    } else if text.contains("[warm-up]") {
        bash_reply(
            Kind::Prompt,
            s,
            "sleep 1 && echo warmed up",
            "Warm up before the board work",
        )
    } else {
        text_reply(Kind::Prompt, "Ready for work.")
    };
    let short: String = text.chars().take(300).collect();
    (reply, short, tool_result)
}

/// A streamed (SSE) or plain Messages API answer.
pub fn message_body(model: &str, id: &str, r: &Reply, stream: bool) -> String {
    let usage = json!({"input_tokens": 10, "output_tokens": 5,
                       "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0});
    if !stream {
        return json!({"id": id, "type": "message", "role": "assistant", "model": model,
                      "content": r.blocks, "stop_reason": r.stop, "stop_sequence": null,
                      "usage": usage})
        .to_string();
    }
    let mut events = vec![(
        "message_start",
        json!({"type": "message_start", "message": {"id": id, "type": "message",
               "role": "assistant", "model": model, "content": [], "stop_reason": null,
               "stop_sequence": null, "usage": {"input_tokens": 10, "output_tokens": 1,
               "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}}),
    )];
    for (i, b) in r.blocks.iter().enumerate() {
        let (start, delta) = if b["type"] == "tool_use" {
            (
                json!({"type": "tool_use", "id": b["id"], "name": b["name"], "input": {}}),
                json!({"type": "input_json_delta", "partial_json": b["input"].to_string()}),
            )
        } else {
            (
                json!({"type": "text", "text": ""}),
                json!({"type": "text_delta", "text": b["text"]}),
            )
        };
        events.push((
            "content_block_start",
            json!({"type": "content_block_start", "index": i, "content_block": start}),
        ));
        events.push((
            "content_block_delta",
            json!({"type": "content_block_delta", "index": i, "delta": delta}),
        ));
        events.push((
            "content_block_stop",
            json!({"type": "content_block_stop", "index": i}),
        ));
    }
    events.push((
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": r.stop, "stop_sequence": null},
               "usage": {"output_tokens": 5}}),
    ));
    events.push(("message_stop", json!({"type": "message_stop"})));
    events
        .into_iter()
        .map(|(name, data)| format!("event: {name}\ndata: {data}\n\n"))
        .collect()
}

pub fn answer(req: &Request, s: &Shared) -> (&'static str, &'static str, String) {
    let at = s.started.elapsed();
    let workers = s
        .board
        .as_ref()
        .and_then(|b| fs::read(b.join("worker-status.json")).ok())
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
    let mut entry = Logged {
        at,
        method: req.method.clone(),
        path: req.path.clone(),
        kind: Kind::Other,
        text: String::new(),
        tool_result: None,
        complete: None,
        reply: String::new(),
        bytes: req.body.len(),
        workers,
        saw_session_context: false,
        saw_claude_md: false,
        saw_skill: false,
        saw_question: false,
        saw_schema_task: false,
        handed_over: Vec::new(),
    };
    let raw = String::from_utf8_lossy(&req.body);
    entry.saw_session_context = raw.contains(&format!("You are agentvine worker `{}`", s.worker));
    entry.saw_claude_md = raw.contains("You are an agentvine worker");
    entry.saw_skill = raw.contains("through an agentvine board with the `vine` command");
    entry.saw_question = raw.contains("vine ask 'Which database?'");
    entry.saw_schema_task = raw.contains("is claimed for you: Schema first");
    entry.handed_over = raw
        .match_indices("Task ")
        .filter_map(|(i, _)| {
            let rest = &raw[i + 5..];
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            rest[digits.len()..]
                .starts_with(" is claimed for you")
                .then(|| digits.parse().ok())
                .flatten()
        })
        .collect();
    let path = req.path.split('?').next().unwrap_or_default();
    let out = if req.method == "POST" && path == "/v1/messages/count_tokens" {
        entry.reply = "count".into();
        (
            "200 OK",
            "application/json",
            json!({"input_tokens": 10}).to_string(),
        )
    } else if req.method == "POST" && path == "/v1/messages" {
        let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        let (reply, text, tool_result) = decide(&body, s);
        if !s.latency.is_zero() {
            sleep(s.latency);
        }
        let id = format!(
            "msg_standin_{:06}",
            s.next_id.fetch_add(1, Ordering::SeqCst)
        );
        let model = body["model"].as_str().unwrap_or("claude-stand-in");
        let stream = body["stream"].as_bool().unwrap_or(false);
        let out = message_body(model, &id, &reply, stream);
        entry.kind = reply.kind;
        entry.text = text;
        entry.tool_result = tool_result;
        entry.complete = reply.complete.clone();
        entry.reply = reply.summary;
        (
            "200 OK",
            if stream {
                "text/event-stream"
            } else {
                "application/json"
            },
            out,
        )
    } else {
        entry.reply = "404".into();
        (
            "404 Not Found",
            "application/json",
            json!({"type": "error", "error": {"type": "not_found_error", "message": "stand-in"}})
                .to_string(),
        )
    };
    if s.echo.load(Ordering::SeqCst) && entry.is_model_request() {
        let asked = match entry.kind {
            Kind::Claimed if entry.text.contains("The answer to your question") => {
                "the answer to a parked question".to_string()
            }
            // The last hand-over in the conversation (a resumed session carries earlier ones).
            Kind::Claimed => match entry.handed_over.last() {
                Some(id) => format!("the hand-over of task {id}"),
                None => "a hand-over".to_string(),
            },
            Kind::ToolResult => "the tool's result".to_string(),
            other => format!("{other:?}"),
        };
        println!(
            "model {:>7.1}s  {asked} -> {}",
            entry.at.as_secs_f64(),
            entry.reply
        );
    }
    s.log.lock().unwrap().push(entry);
    out
}
