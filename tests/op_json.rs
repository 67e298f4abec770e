//! The wire format of every op and every reply, pinned byte for byte: each value serializes
//! to exactly the JSON written here, and that JSON parses back to the same value. Requests
//! from older clients (fields left out, defaults) are pinned too. A change here is a change of
//! the protocol `vine serve` and remote boards speak.

use std::collections::BTreeMap;

use agentvine::message::{Message, MessageKind};
use agentvine::metrics::{Durations, Figures, Report, Series, TaskCounts};
use agentvine::op::{
    self, ClaimedTask, Fallback, MessageFilter, NewTask, Next, Op, PlanTask, QuestionView,
    RepairedFile, Reply, StatusReport, TaskView, Turn, WorkerView,
};
use agentvine::progress::Progress;
use agentvine::sessions::{Reuse, SessionRecord, SessionRun, SessionState, Totals, Usage};
use agentvine::settings::Settings;
use agentvine::task::{Priority, Task, TaskStatus};
use agentvine::time::{Timestamp, add_secs, parse_timestamp};
use agentvine::worker::{Waiting, Worker, WorkerState};
use serde_json::{Map, json};

fn t0() -> Timestamp {
    parse_timestamp("2026-03-01T12:00:00Z").expect("a timestamp")
}

fn at(secs: u64) -> Timestamp {
    add_secs(t0(), secs)
}

fn w() -> String {
    "w1".to_string()
}

fn full_new_task() -> NewTask {
    NewTask {
        description: "Write hello.txt".into(),
        instructions: Some("Say hello.".into()),
        instruction_file: Some("docs/i.md".into()),
        context_files: vec!["docs/a.md".into()],
        assign: Some("w2".into()),
        priority: Priority::High,
        requires: vec!["rust".into()],
        after: vec![1, 2],
        max_retries: Some(3),
        lease_secs: Some(600),
        strict: true,
        fallback_after_secs: Some(60),
        metadata: Map::from_iter([("dir".to_string(), json!("src"))]),
    }
}

/// Every op, with every field set (first) and with only what is required.
fn ops() -> Vec<Op> {
    vec![
        Op::Add(op::Add {
            task: full_new_task(),
        }),
        Op::Add(op::Add {
            task: NewTask {
                description: "d".into(),
                ..NewTask::default()
            },
        }),
        Op::AddPlan(op::AddPlan {
            tasks: vec![
                PlanTask {
                    key: Some("a".into()),
                    task: full_new_task(),
                    after_keys: vec!["b".into()],
                },
                PlanTask {
                    key: None,
                    task: NewTask {
                        description: "b".into(),
                        priority: Priority::Low,
                        ..NewTask::default()
                    },
                    after_keys: vec![],
                },
            ],
        }),
        Op::Claim(op::Claim { worker: w() }),
        Op::Complete(op::Complete {
            task: 1,
            worker: w(),
            attempt: Some(1),
            result: Some(json!({"ok": true})),
        }),
        Op::Complete(op::Complete {
            task: 1,
            worker: w(),
            attempt: None,
            result: None,
        }),
        Op::Fail(op::Fail {
            task: 1,
            worker: w(),
            attempt: Some(2),
            error: "e".into(),
            no_retry: true,
        }),
        Op::Fail(op::Fail {
            task: 1,
            worker: w(),
            attempt: None,
            error: "e".into(),
            no_retry: false,
        }),
        Op::Release(op::Release {
            task: 1,
            worker: w(),
            attempt: Some(2),
        }),
        Op::Release(op::Release {
            task: 1,
            worker: w(),
            attempt: None,
        }),
        Op::Cancel(op::Cancel {
            task: 1,
            reason: Some("r".into()),
        }),
        Op::Cancel(op::Cancel {
            task: 1,
            reason: None,
        }),
        Op::Retry(op::Retry { task: 1 }),
        Op::SetPriority(op::SetPriority {
            task: 1,
            priority: Priority::Low,
        }),
        Op::Register(op::Register {
            worker: w(),
            capabilities: vec!["rust".into(), "docs".into()],
            session_id: Some("s".into()),
        }),
        Op::Register(op::Register {
            worker: w(),
            capabilities: vec![],
            session_id: None,
        }),
        Op::Heartbeat(op::Heartbeat { worker: w() }),
        Op::Deregister(op::Deregister { worker: w() }),
        Op::ShouldContinue(op::ShouldContinue {
            worker: w(),
            max_idle_secs: 60,
        }),
        Op::TurnEnded(op::TurnEnded {
            worker: w(),
            max_idle_secs: 600,
            tool_calls: 3,
            reminded: Some(op::Reminder {
                task: 1,
                attempt: 2,
                tool_calls: 2,
            }),
            wait_secs: 540,
            pooled: true,
        }),
        Op::TurnEnded(op::TurnEnded {
            worker: w(),
            max_idle_secs: 600,
            tool_calls: 0,
            reminded: None,
            wait_secs: 0,
            pooled: false,
        }),
        Op::SetProgress(op::SetProgress {
            current_step: Some(json!(2)),
            total_steps: Some(json!("five")),
            status: Some("going".into()),
            metadata: Map::from_iter([("phase".to_string(), json!("x"))]),
        }),
        Op::SetProgress(op::SetProgress {
            current_step: None,
            total_steps: None,
            status: None,
            metadata: Map::new(),
        }),
        Op::Send(op::Send {
            agent: "a".into(),
            message: "m".into(),
            task: Some(1),
        }),
        Op::Send(op::Send {
            agent: "a".into(),
            message: "m".into(),
            task: None,
        }),
        Op::Ask(op::Ask {
            agent: "a".into(),
            question: "q".into(),
            task: Some(1),
            wait_secs: Some(600),
        }),
        Op::Ask(op::Ask {
            agent: "a".into(),
            question: "q".into(),
            task: None,
            wait_secs: None,
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
        Op::Tasks(op::Tasks {
            status: None,
            all: false,
        }),
        Op::Show(op::Show { task: 1 }),
        Op::Workers(op::Workers),
        Op::Progress(op::Progress),
        Op::Settings(op::Settings),
        Op::ReadMessages(op::ReadMessages {
            filter: MessageFilter {
                since: Some(t0()),
                after_seq: Some(1),
                reply_to: Some(2),
                limit: Some(5),
                task: Some(1),
                agent: Some("w1".into()),
                kind: Some(MessageKind::Question),
            },
        }),
        Op::ReadMessages(op::ReadMessages {
            filter: MessageFilter::default(),
        }),
        Op::Questions(op::Questions { all: true }),
        Op::Questions(op::Questions { all: false }),
        Op::RecordRun(op::RecordRun {
            session: "s-1".into(),
            worker: w(),
            task: 1,
            attempt: 2,
            resumed: true,
            why: "task 1 depends on task 0".into(),
            outcome: "success".into(),
            turns: 3,
            cost_usd: 0.25,
            usage: full_usage(),
            duration_ms: 1500,
        }),
        Op::EndSession(op::EndSession {
            session: "s-1".into(),
            reason: "idle 31m".into(),
        }),
        Op::Sessions(op::Sessions {
            worker: Some(w()),
            all: true,
        }),
        Op::Sessions(op::Sessions {
            worker: None,
            all: false,
        }),
        Op::Metrics(op::Metrics {
            window_secs: Some(3600),
            buckets: Some(12),
        }),
        Op::Metrics(op::Metrics::default()),
    ]
}

fn full_usage() -> Usage {
    Usage {
        input_tokens: 10,
        output_tokens: 20,
        cache_creation_input_tokens: 30,
        cache_read_input_tokens: 40,
    }
}

/// A session with every field set.
fn full_session() -> SessionRecord {
    SessionRecord {
        id: "s-1".into(),
        worker: w(),
        state: SessionState::Ended,
        created_at: t0(),
        last_active_at: at(60),
        ended_reason: Some("idle 31m".into()),
        runs: vec![SessionRun {
            task: 1,
            attempt: 2,
            at: at(30),
            resumed: true,
            why: "task 1 depends on task 0".into(),
            outcome: "success".into(),
            turns: 3,
            cost_usd: 0.25,
            usage: full_usage(),
            duration_ms: 1500,
            request_key: Some("k-3".into()),
        }],
        extra: Map::from_iter([("future".to_string(), json!(1))]),
    }
}

/// A task with every field set.
fn full_task() -> Task {
    let mut t = Task::new(1772366400000, "Write hello.txt", t0());
    t.instruction_file = Some("tasks/task-1772366400000-instructions.md".into());
    t.context_files = vec!["docs/a.md".into()];
    t.assigned_to = Some("w2".into());
    t.status = TaskStatus::InProgress;
    t.claimed_by = Some("w1".into());
    t.claimed_at = Some(at(1));
    t.completed_by = Some("w0".into());
    t.completed_at = Some(at(2));
    t.result = Some(json!({"ok": true}));
    t.metadata = Map::from_iter([("dir".to_string(), json!("src"))]);
    t.priority = Priority::High;
    t.requires = vec!["rust".into()];
    t.depends_on = vec![1, 2];
    t.attempts = 2;
    t.max_retries = Some(3);
    t.lease_secs = Some(600);
    t.strict = true;
    t.fallback_after_secs = Some(60);
    t.lease_expires_at = Some(at(601));
    t.last_error = Some("e".into());
    t.not_before = Some(at(3));
    t.ended_at = Some(at(4));
    t.first_claimed_at = Some(at(1));
    t.request_key = Some("k-1".into());
    t.extra = Map::from_iter([("custom".to_string(), json!({"a": 1}))]);
    t
}

fn small_task() -> Task {
    Task::new(7, "d", t0())
}

fn message(kind: MessageKind, seq: u64) -> Message {
    let mut m = Message::new(kind, "w1", "text", t0());
    m.seq = Some(seq);
    m
}

fn full_message() -> Message {
    let mut m = message(MessageKind::Answer, 4);
    m.task_id = Some(1);
    m.reply_to = Some(3);
    m.key = Some("k-2".into());
    m.extra = Map::from_iter([("note".to_string(), json!("n"))]);
    m
}

fn full_worker() -> Worker {
    let mut w = Worker::new(vec!["rust".into()], t0());
    w.last_heartbeat = Some(at(1));
    w.last_task_claimed = Some(at(2));
    w.last_task_completed = Some(at(3));
    w.current_task = Some(1);
    w.session_id = Some("s".into());
    w.offline_reason = Some("idle".into());
    w.waiting = Some(Waiting {
        question: 3,
        until: at(600),
    });
    w.extra = Map::from_iter([("host".to_string(), json!("h"))]);
    w
}

fn full_progress() -> Progress {
    Progress {
        current_step: json!(2),
        total_steps: json!(5),
        status: Some("going".into()),
        last_updated: Some(t0()),
        metadata: Map::from_iter([("phase".to_string(), json!("x"))]),
        extra: Map::from_iter([("old".to_string(), json!(true))]),
    }
}

/// A metrics report with a figure of each kind set.
fn metrics_report() -> Report {
    Report {
        at: t0(),
        tasks: TaskCounts {
            pending: 1,
            in_progress: 2,
            completed: 3,
            failed: 4,
            cancelled: 5,
        },
        workers: BTreeMap::from([("idle".to_string(), 1)]),
        open_questions: 2,
        recent: Figures {
            since: Some(t0()),
            queue_latency: Durations {
                count: 2,
                sum_secs: 30.0,
                median_secs: Some(10.0),
                p90_secs: Some(20.0),
                max_secs: Some(20.0),
                buckets: vec![1, 1, 0, 0, 0, 0, 0, 0, 0, 0],
            },
            completed: 1,
            failed: 1,
            retried: 1,
            failure_rate: Some(0.5),
            retry_rate: Some(0.5),
            tasks_per_hour: Some(1.5),
            ..Figures::default()
        },
        all_time: Figures::default(),
        series: Series {
            start: t0(),
            bucket_secs: 3600,
            added: vec![1, 2],
            completed: vec![0, 1],
            failed: vec![0, 0],
            waiting: vec![1, 0],
            in_progress: vec![0, 1],
        },
        claude: Some(agentvine::reply::ClaudeSpend {
            live_sessions: 1,
            total: Totals {
                runs: 2,
                turns: 3,
                cost_usd: 0.5,
                usage: Usage::default(),
                duration_ms: 40,
            },
            by_worker: BTreeMap::new(),
            reuse: Reuse {
                task_starts: 2,
                reused: 1,
            },
        }),
    }
}

/// Every reply, with its optional parts set (first) and left out.
fn replies() -> Vec<Reply> {
    vec![
        Reply::Added {
            tasks: vec![full_task(), small_task()],
        },
        Reply::Claimed {
            claim: Some(ClaimedTask {
                task: small_task(),
                instructions: Some("Say hello.".into()),
                instructions_error: Some("gone".into()),
            }),
            reason: None,
        },
        Reply::Claimed {
            claim: Some(ClaimedTask {
                task: small_task(),
                instructions: None,
                instructions_error: None,
            }),
            reason: None,
        },
        Reply::Claimed {
            claim: None,
            reason: Some("no pending tasks".into()),
        },
        Reply::Task {
            task: TaskView {
                task: small_task(),
                blocked: true,
                archived: true,
                fallback: Some(Fallback {
                    note: "assigned to w2, who has not been seen; any worker may take it now"
                        .into(),
                    at: Some(at(61)),
                }),
                cost: Some(full_session().totals()),
            },
        },
        Reply::Task {
            task: TaskView {
                task: small_task(),
                blocked: false,
                archived: false,
                fallback: Some(Fallback {
                    note: "only w2 may take it (strict)".into(),
                    at: None,
                }),
                cost: None,
            },
        },
        Reply::Tasks {
            tasks: vec![TaskView::of(full_task()), TaskView::archived(small_task())],
        },
        Reply::Worker {
            worker: WorkerView {
                id: "w1".into(),
                state: WorkerState::Working,
                tasks: vec![1],
                worker: full_worker(),
            },
            released: vec![1, 2],
        },
        Reply::Worker {
            worker: WorkerView {
                id: "w1".into(),
                state: WorkerState::Idle,
                tasks: vec![],
                worker: Worker::new(vec![], t0()),
            },
            released: vec![],
        },
        Reply::Workers {
            workers: vec![
                WorkerView {
                    id: "w1".into(),
                    state: WorkerState::Waiting,
                    tasks: vec![],
                    worker: Worker::new(vec![], t0()),
                },
                WorkerView {
                    id: "w2".into(),
                    state: WorkerState::Stale,
                    tasks: vec![],
                    worker: Worker::new(vec![], t0()),
                },
                WorkerView {
                    id: "w3".into(),
                    state: WorkerState::Offline,
                    tasks: vec![],
                    worker: Worker::new(vec![], t0()),
                },
            ],
        },
        Reply::Turn(Turn {
            next: Next::HandOver {
                claim: ClaimedTask {
                    task: small_task(),
                    instructions: Some("Say hello.".into()),
                    instructions_error: None,
                },
            },
            failed: Some(3),
        }),
        Reply::Turn(Turn {
            next: Next::Remind { task: small_task() },
            failed: None,
        }),
        Reply::Turn(Turn {
            next: Next::Wait {
                reason: "idle for 3s of 10m; waiting for work (no pending tasks)".into(),
                idle_left_secs: 597,
            },
            failed: None,
        }),
        Reply::Turn(Turn {
            next: Next::LetGo {
                reason: "w1 was deregistered; the session may end".into(),
            },
            failed: None,
        }),
        Reply::Decision {
            keep_going: true,
            reason: "w1 holds task 1: d".into(),
            task: Some(1),
        },
        Reply::Decision {
            keep_going: false,
            reason: "idle".into(),
            task: None,
        },
        Reply::Progress {
            progress: full_progress(),
        },
        Reply::Progress {
            progress: Progress::default(),
        },
        Reply::Message {
            message: full_message(),
        },
        Reply::Messages {
            messages: vec![
                message(MessageKind::Message, 1),
                Message::new(MessageKind::Result, "w1", "r", t0()),
            ],
        },
        Reply::Questions {
            questions: vec![QuestionView {
                question: message(MessageKind::Question, 3),
                answers: vec![full_message()],
            }],
        },
        Reply::Requeued { tasks: vec![1, 2] },
        Reply::Compacted {
            archived: 3,
            kept: 1,
        },
        Reply::Repaired {
            files: vec![RepairedFile {
                file: "task-queue.json".into(),
                backup: "task-queue.json.damaged-x".into(),
                kept: 2,
                dropped: vec!["line at byte 9: cut off".into()],
            }],
        },
        Reply::Settings {
            settings: Settings {
                fallback_after_secs: Some(60),
                extra: Map::from_iter([("future".to_string(), json!(1))]),
                ..Settings::default()
            },
        },
        Reply::Settings {
            settings: Settings::default(),
        },
        Reply::Session {
            session: full_session(),
        },
        Reply::SessionEnded {
            session: SessionRecord {
                runs: Vec::new(),
                extra: Map::new(),
                ..full_session()
            },
        },
        Reply::Sessions {
            sessions: vec![full_session()],
        },
        Reply::Metrics {
            metrics: Box::new(metrics_report()),
        },
        Reply::Status {
            report: StatusReport {
                pending: 1,
                in_progress: 2,
                completed: 3,
                failed: 4,
                cancelled: 5,
                total: 15,
                blocked: 1,
                archived: 6,
                workers: BTreeMap::from([("idle".to_string(), 1), ("working".to_string(), 2)]),
                open_questions: 1,
                progress: full_progress(),
                claude: None,
            },
        },
    ]
}

/// What each of [`ops`] is on the wire, in order.
const OPS_JSON: &[&str] = &[
    r#"{"op":"add","task":{"description":"Write hello.txt","instructions":"Say hello.","instruction_file":"docs/i.md","context_files":["docs/a.md"],"assign":"w2","priority":"high","requires":["rust"],"after":[1,2],"max_retries":3,"lease_secs":600,"strict":true,"fallback_after_secs":60,"metadata":{"dir":"src"}}}"#,
    r#"{"op":"add","task":{"description":"d","priority":"normal"}}"#,
    r#"{"op":"add-plan","tasks":[{"key":"a","task":{"description":"Write hello.txt","instructions":"Say hello.","instruction_file":"docs/i.md","context_files":["docs/a.md"],"assign":"w2","priority":"high","requires":["rust"],"after":[1,2],"max_retries":3,"lease_secs":600,"strict":true,"fallback_after_secs":60,"metadata":{"dir":"src"}},"after_keys":["b"]},{"task":{"description":"b","priority":"low"}}]}"#,
    r#"{"op":"claim","worker":"w1"}"#,
    r#"{"op":"complete","task":1,"worker":"w1","attempt":1,"result":{"ok":true}}"#,
    r#"{"op":"complete","task":1,"worker":"w1"}"#,
    r#"{"op":"fail","task":1,"worker":"w1","attempt":2,"error":"e","no_retry":true}"#,
    r#"{"op":"fail","task":1,"worker":"w1","error":"e","no_retry":false}"#,
    r#"{"op":"release","task":1,"worker":"w1","attempt":2}"#,
    r#"{"op":"release","task":1,"worker":"w1"}"#,
    r#"{"op":"cancel","task":1,"reason":"r"}"#,
    r#"{"op":"cancel","task":1}"#,
    r#"{"op":"retry","task":1}"#,
    r#"{"op":"set-priority","task":1,"priority":"low"}"#,
    r#"{"op":"register","worker":"w1","capabilities":["rust","docs"],"session_id":"s"}"#,
    r#"{"op":"register","worker":"w1","capabilities":[]}"#,
    r#"{"op":"heartbeat","worker":"w1"}"#,
    r#"{"op":"deregister","worker":"w1"}"#,
    r#"{"op":"should-continue","worker":"w1","max_idle_secs":60}"#,
    r#"{"op":"turn-ended","worker":"w1","max_idle_secs":600,"tool_calls":3,"reminded":{"task":1,"attempt":2,"tool_calls":2},"wait_secs":540,"pooled":true}"#,
    r#"{"op":"turn-ended","worker":"w1","max_idle_secs":600,"tool_calls":0,"wait_secs":0}"#,
    r#"{"op":"set-progress","current_step":2,"total_steps":"five","status":"going","metadata":{"phase":"x"}}"#,
    r#"{"op":"set-progress"}"#,
    r#"{"op":"send","agent":"a","message":"m","task":1}"#,
    r#"{"op":"send","agent":"a","message":"m"}"#,
    r#"{"op":"ask","agent":"a","question":"q","task":1,"wait_secs":600}"#,
    r#"{"op":"ask","agent":"a","question":"q"}"#,
    r#"{"op":"answer","agent":"a","question":3,"answer":"x"}"#,
    r#"{"op":"requeue-stale"}"#,
    r#"{"op":"compact"}"#,
    r#"{"op":"repair"}"#,
    r#"{"op":"status"}"#,
    r#"{"op":"tasks","status":"pending","all":true}"#,
    r#"{"op":"tasks","all":false}"#,
    r#"{"op":"show","task":1}"#,
    r#"{"op":"workers"}"#,
    r#"{"op":"progress"}"#,
    r#"{"op":"settings"}"#,
    r#"{"op":"read-messages","filter":{"since":"2026-03-01T12:00:00.000Z","after_seq":1,"reply_to":2,"limit":5,"task":1,"agent":"w1","kind":"question"}}"#,
    r#"{"op":"read-messages","filter":{}}"#,
    r#"{"op":"questions","all":true}"#,
    r#"{"op":"questions","all":false}"#,
    r#"{"op":"record-run","session":"s-1","worker":"w1","task":1,"attempt":2,"resumed":true,"why":"task 1 depends on task 0","outcome":"success","turns":3,"cost_usd":0.25,"usage":{"input_tokens":10,"output_tokens":20,"cache_creation_input_tokens":30,"cache_read_input_tokens":40},"duration_ms":1500}"#,
    r#"{"op":"end-session","session":"s-1","reason":"idle 31m"}"#,
    r#"{"op":"sessions","worker":"w1","all":true}"#,
    r#"{"op":"sessions","all":false}"#,
    r#"{"op":"metrics","window_secs":3600,"buckets":12}"#,
    r#"{"op":"metrics"}"#,
];

/// What each of [`replies`] is on the wire, in order.
const REPLIES_JSON: &[&str] = &[
    r#"{"reply":"added","tasks":[{"id":1772366400000,"description":"Write hello.txt","instruction_file":"tasks/task-1772366400000-instructions.md","context_files":["docs/a.md"],"assigned_to":"w2","status":"in_progress","created_at":"2026-03-01T12:00:00.000Z","claimed_by":"w1","claimed_at":"2026-03-01T12:00:01.000Z","completed_by":"w0","completed_at":"2026-03-01T12:00:02.000Z","result":{"ok":true},"metadata":{"dir":"src"},"priority":"high","requires":["rust"],"depends_on":[1,2],"attempts":2,"max_retries":3,"lease_secs":600,"strict":true,"fallback_after_secs":60,"lease_expires_at":"2026-03-01T12:10:01.000Z","last_error":"e","not_before":"2026-03-01T12:00:03.000Z","ended_at":"2026-03-01T12:00:04.000Z","first_claimed_at":"2026-03-01T12:00:01.000Z","request_key":"k-1","custom":{"a":1}},{"id":7,"description":"d","instruction_file":null,"context_files":[],"assigned_to":null,"status":"pending","created_at":"2026-03-01T12:00:00.000Z","claimed_by":null,"claimed_at":null,"completed_by":null,"completed_at":null,"result":null,"metadata":{},"priority":"normal","attempts":0}]}"#,
    r#"{"reply":"claimed","claim":{"task":{"id":7,"description":"d","instruction_file":null,"context_files":[],"assigned_to":null,"status":"pending","created_at":"2026-03-01T12:00:00.000Z","claimed_by":null,"claimed_at":null,"completed_by":null,"completed_at":null,"result":null,"metadata":{},"priority":"normal","attempts":0},"instructions":"Say hello.","instructions_error":"gone"}}"#,
    r#"{"reply":"claimed","claim":{"task":{"id":7,"description":"d","instruction_file":null,"context_files":[],"assigned_to":null,"status":"pending","created_at":"2026-03-01T12:00:00.000Z","claimed_by":null,"claimed_at":null,"completed_by":null,"completed_at":null,"result":null,"metadata":{},"priority":"normal","attempts":0}}}"#,
    r#"{"reply":"claimed","claim":null,"reason":"no pending tasks"}"#,
    r#"{"reply":"task","task":{"id":7,"description":"d","instruction_file":null,"context_files":[],"assigned_to":null,"status":"pending","created_at":"2026-03-01T12:00:00.000Z","claimed_by":null,"claimed_at":null,"completed_by":null,"completed_at":null,"result":null,"metadata":{},"priority":"normal","attempts":0,"blocked":true,"archived":true,"fallback":{"note":"assigned to w2, who has not been seen; any worker may take it now","at":"2026-03-01T12:01:01.000Z"},"cost":{"runs":1,"turns":3,"cost_usd":0.25,"usage":{"input_tokens":10,"output_tokens":20,"cache_creation_input_tokens":30,"cache_read_input_tokens":40},"duration_ms":1500}}}"#,
    r#"{"reply":"task","task":{"id":7,"description":"d","instruction_file":null,"context_files":[],"assigned_to":null,"status":"pending","created_at":"2026-03-01T12:00:00.000Z","claimed_by":null,"claimed_at":null,"completed_by":null,"completed_at":null,"result":null,"metadata":{},"priority":"normal","attempts":0,"fallback":{"note":"only w2 may take it (strict)"}}}"#,
    r#"{"reply":"tasks","tasks":[{"id":1772366400000,"description":"Write hello.txt","instruction_file":"tasks/task-1772366400000-instructions.md","context_files":["docs/a.md"],"assigned_to":"w2","status":"in_progress","created_at":"2026-03-01T12:00:00.000Z","claimed_by":"w1","claimed_at":"2026-03-01T12:00:01.000Z","completed_by":"w0","completed_at":"2026-03-01T12:00:02.000Z","result":{"ok":true},"metadata":{"dir":"src"},"priority":"high","requires":["rust"],"depends_on":[1,2],"attempts":2,"max_retries":3,"lease_secs":600,"strict":true,"fallback_after_secs":60,"lease_expires_at":"2026-03-01T12:10:01.000Z","last_error":"e","not_before":"2026-03-01T12:00:03.000Z","ended_at":"2026-03-01T12:00:04.000Z","first_claimed_at":"2026-03-01T12:00:01.000Z","request_key":"k-1","custom":{"a":1}},{"id":7,"description":"d","instruction_file":null,"context_files":[],"assigned_to":null,"status":"pending","created_at":"2026-03-01T12:00:00.000Z","claimed_by":null,"claimed_at":null,"completed_by":null,"completed_at":null,"result":null,"metadata":{},"priority":"normal","attempts":0,"archived":true}]}"#,
    r#"{"reply":"worker","worker":{"id":"w1","state":"working","tasks":[1],"status":"active","capabilities":["rust"],"registered_at":"2026-03-01T12:00:00.000Z","last_heartbeat":"2026-03-01T12:00:01.000Z","last_task_claimed":"2026-03-01T12:00:02.000Z","last_task_completed":"2026-03-01T12:00:03.000Z","current_task":1,"session_id":"s","offline_reason":"idle","waiting":{"question":3,"until":"2026-03-01T12:10:00.000Z"},"host":"h"},"released":[1,2]}"#,
    r#"{"reply":"worker","worker":{"id":"w1","state":"idle","tasks":[],"status":"active","capabilities":[],"registered_at":"2026-03-01T12:00:00.000Z","last_heartbeat":"2026-03-01T12:00:00.000Z","last_task_claimed":null,"last_task_completed":null,"current_task":null}}"#,
    r#"{"reply":"workers","workers":[{"id":"w1","state":"waiting","tasks":[],"status":"active","capabilities":[],"registered_at":"2026-03-01T12:00:00.000Z","last_heartbeat":"2026-03-01T12:00:00.000Z","last_task_claimed":null,"last_task_completed":null,"current_task":null},{"id":"w2","state":"stale","tasks":[],"status":"active","capabilities":[],"registered_at":"2026-03-01T12:00:00.000Z","last_heartbeat":"2026-03-01T12:00:00.000Z","last_task_claimed":null,"last_task_completed":null,"current_task":null},{"id":"w3","state":"offline","tasks":[],"status":"active","capabilities":[],"registered_at":"2026-03-01T12:00:00.000Z","last_heartbeat":"2026-03-01T12:00:00.000Z","last_task_claimed":null,"last_task_completed":null,"current_task":null}]}"#,
    r#"{"reply":"turn","next":{"action":"hand-over","claim":{"task":{"id":7,"description":"d","instruction_file":null,"context_files":[],"assigned_to":null,"status":"pending","created_at":"2026-03-01T12:00:00.000Z","claimed_by":null,"claimed_at":null,"completed_by":null,"completed_at":null,"result":null,"metadata":{},"priority":"normal","attempts":0},"instructions":"Say hello."}},"failed":3}"#,
    r#"{"reply":"turn","next":{"action":"remind","task":{"id":7,"description":"d","instruction_file":null,"context_files":[],"assigned_to":null,"status":"pending","created_at":"2026-03-01T12:00:00.000Z","claimed_by":null,"claimed_at":null,"completed_by":null,"completed_at":null,"result":null,"metadata":{},"priority":"normal","attempts":0}}}"#,
    r#"{"reply":"turn","next":{"action":"wait","reason":"idle for 3s of 10m; waiting for work (no pending tasks)","idle_left_secs":597}}"#,
    r#"{"reply":"turn","next":{"action":"let-go","reason":"w1 was deregistered; the session may end"}}"#,
    r#"{"reply":"decision","continue":true,"reason":"w1 holds task 1: d","task":1}"#,
    r#"{"reply":"decision","continue":false,"reason":"idle"}"#,
    r#"{"reply":"progress","progress":{"current_step":2,"total_steps":5,"status":"going","last_updated":"2026-03-01T12:00:00.000Z","metadata":{"phase":"x"},"old":true}}"#,
    r#"{"reply":"progress","progress":{"current_step":null,"total_steps":null,"status":null,"last_updated":null,"metadata":{}}}"#,
    r#"{"reply":"message","message":{"timestamp":"2026-03-01T12:00:00.000Z","agent":"w1","message":"text","seq":4,"kind":"answer","task_id":1,"reply_to":3,"key":"k-2","note":"n"}}"#,
    r#"{"reply":"messages","messages":[{"timestamp":"2026-03-01T12:00:00.000Z","agent":"w1","message":"text","seq":1,"kind":"message"},{"timestamp":"2026-03-01T12:00:00.000Z","agent":"w1","message":"r","kind":"result"}]}"#,
    r#"{"reply":"questions","questions":[{"question":{"timestamp":"2026-03-01T12:00:00.000Z","agent":"w1","message":"text","seq":3,"kind":"question"},"answers":[{"timestamp":"2026-03-01T12:00:00.000Z","agent":"w1","message":"text","seq":4,"kind":"answer","task_id":1,"reply_to":3,"key":"k-2","note":"n"}]}]}"#,
    r#"{"reply":"requeued","tasks":[1,2]}"#,
    r#"{"reply":"compacted","archived":3,"kept":1}"#,
    r#"{"reply":"repaired","files":[{"file":"task-queue.json","backup":"task-queue.json.damaged-x","kept":2,"dropped":["line at byte 9: cut off"]}]}"#,
    r#"{"reply":"settings","settings":{"lease_secs":1800,"stale_after_secs":180,"fallback_after_secs":60,"max_retries":3,"retry_backoff_secs":10,"retry_backoff_max_secs":900,"archive_after":200,"future":1}}"#,
    r#"{"reply":"settings","settings":{"lease_secs":1800,"stale_after_secs":180,"max_retries":3,"retry_backoff_secs":10,"retry_backoff_max_secs":900,"archive_after":200}}"#,
    r#"{"reply":"session","session":{"id":"s-1","worker":"w1","state":"ended","created_at":"2026-03-01T12:00:00.000Z","last_active_at":"2026-03-01T12:01:00.000Z","ended_reason":"idle 31m","runs":[{"task":1,"attempt":2,"at":"2026-03-01T12:00:30.000Z","resumed":true,"why":"task 1 depends on task 0","outcome":"success","turns":3,"cost_usd":0.25,"usage":{"input_tokens":10,"output_tokens":20,"cache_creation_input_tokens":30,"cache_read_input_tokens":40},"duration_ms":1500,"request_key":"k-3"}],"future":1}}"#,
    r#"{"reply":"session-ended","session":{"id":"s-1","worker":"w1","state":"ended","created_at":"2026-03-01T12:00:00.000Z","last_active_at":"2026-03-01T12:01:00.000Z","ended_reason":"idle 31m","runs":[]}}"#,
    r#"{"reply":"sessions","sessions":[{"id":"s-1","worker":"w1","state":"ended","created_at":"2026-03-01T12:00:00.000Z","last_active_at":"2026-03-01T12:01:00.000Z","ended_reason":"idle 31m","runs":[{"task":1,"attempt":2,"at":"2026-03-01T12:00:30.000Z","resumed":true,"why":"task 1 depends on task 0","outcome":"success","turns":3,"cost_usd":0.25,"usage":{"input_tokens":10,"output_tokens":20,"cache_creation_input_tokens":30,"cache_read_input_tokens":40},"duration_ms":1500,"request_key":"k-3"}],"future":1}]}"#,
    r#"{"reply":"metrics","metrics":{"at":"2026-03-01T12:00:00.000Z","tasks":{"pending":1,"in_progress":2,"completed":3,"failed":4,"cancelled":5},"workers":{"idle":1},"open_questions":2,"recent":{"since":"2026-03-01T12:00:00.000Z","queue_latency":{"count":2,"sum_secs":30.0,"median_secs":10.0,"p90_secs":20.0,"max_secs":20.0,"buckets":[1,1,0,0,0,0,0,0,0,0]},"claim_to_complete":{"count":0,"sum_secs":0.0,"buckets":[]},"human_response":{"count":0,"sum_secs":0.0,"buckets":[]},"completed":1,"failed":1,"cancelled":0,"retried":1,"failure_rate":0.5,"retry_rate":0.5,"tasks_per_hour":1.5},"all_time":{"queue_latency":{"count":0,"sum_secs":0.0,"buckets":[]},"claim_to_complete":{"count":0,"sum_secs":0.0,"buckets":[]},"human_response":{"count":0,"sum_secs":0.0,"buckets":[]},"completed":0,"failed":0,"cancelled":0,"retried":0},"series":{"start":"2026-03-01T12:00:00.000Z","bucket_secs":3600,"added":[1,2],"completed":[0,1],"failed":[0,0],"waiting":[1,0],"in_progress":[0,1]},"claude":{"live_sessions":1,"total":{"runs":2,"turns":3,"cost_usd":0.5,"usage":{"input_tokens":0,"output_tokens":0,"cache_creation_input_tokens":0,"cache_read_input_tokens":0},"duration_ms":40},"by_worker":{},"reuse":{"task_starts":2,"reused":1}}}}"#,
    r#"{"reply":"status","pending":1,"in_progress":2,"completed":3,"failed":4,"cancelled":5,"total":15,"blocked":1,"archived":6,"workers":{"idle":1,"working":2},"open_questions":1,"progress":{"current_step":2,"total_steps":5,"status":"going","last_updated":"2026-03-01T12:00:00.000Z","metadata":{"phase":"x"},"old":true}}"#,
];

/// Requests an older or hand-written client may send (fields left out, unknown fields, any
/// field order), and what each reads as, written back.
const OLDER_CLIENTS: &[(&str, &str)] = &[
    (
        r#"{"op":"fail","task":1,"worker":"w1","error":"e"}"#,
        r#"{"op":"fail","task":1,"worker":"w1","error":"e","no_retry":false}"#,
    ),
    (
        r#"{"op":"register","worker":"w1"}"#,
        r#"{"op":"register","worker":"w1","capabilities":[]}"#,
    ),
    (r#"{"op":"tasks"}"#, r#"{"op":"tasks","all":false}"#),
    (
        r#"{"op":"read-messages"}"#,
        r#"{"op":"read-messages","filter":{}}"#,
    ),
    (r#"{"op":"questions"}"#, r#"{"op":"questions","all":false}"#),
    (
        r#"{"op":"add","task":{"description":"d"}}"#,
        r#"{"op":"add","task":{"description":"d","priority":"normal"}}"#,
    ),
    (
        r#"{"op":"add","task":{}}"#,
        r#"{"op":"add","task":{"description":"","priority":"normal"}}"#,
    ),
    (
        r#"{"op":"set-progress","metadata":{}}"#,
        r#"{"op":"set-progress"}"#,
    ),
    (
        r#"{"worker":"w1","op":"claim","unknown":true}"#,
        r#"{"op":"claim","worker":"w1"}"#,
    ),
    (r#"{"op":"status","extra":1}"#, r#"{"op":"status"}"#),
    (r#"{"op":"status","worker":"w"}"#, r#"{"op":"status"}"#),
    (
        r#"{"op":"requeue-stale","x":null}"#,
        r#"{"op":"requeue-stale"}"#,
    ),
];

/// Requests that do not parse, with serde's message (which the server passes on).
const REFUSED: &[(&str, &str)] = &[
    (r#"{"op":"claim"}"#, "missing field `worker`"),
    (
        r#"{"op":"complete","task":"1","worker":"w"}"#,
        "invalid type: string \"1\", expected u64",
    ),
    (r#"{"op":"status","op":"status"}"#, "duplicate field `op`"),
    (
        r#"{"op":"Claim","worker":"w"}"#,
        "unknown variant `Claim`, expected one of `add`, `add-plan`, `claim`, `complete`, \
         `fail`, `release`, `cancel`, `retry`, `set-priority`, `register`, `heartbeat`, `deregister`, \
         `should-continue`, `turn-ended`, `set-progress`, `send`, `ask`, `answer`, `requeue-stale`, \
         `compact`, `repair`, `record-run`, `end-session`, `status`, `tasks`, `show`, `workers`, \
         `progress`, `settings`, `read-messages`, `questions`, `sessions`, `metrics`",
    ),
];

#[test]
fn every_op_is_pinned_both_ways() {
    let ops = ops();
    assert_eq!(ops.len(), OPS_JSON.len());
    for (op, json) in ops.iter().zip(OPS_JSON) {
        assert_eq!(&serde_json::to_string(op).unwrap(), json, "{op:?}");
        let back: Op = serde_json::from_str(json).unwrap_or_else(|e| panic!("{json}: {e}"));
        assert_eq!(&back, op, "{json}");
        let name = serde_json::from_str::<serde_json::Value>(json).unwrap()["op"].clone();
        assert_eq!(name, op.name(), "the op's name is its tag");
    }
    // Every op name appears (each op at least once).
    let names: std::collections::BTreeSet<&str> = ops.iter().map(|o| o.name()).collect();
    assert_eq!(names.len(), 33, "{names:?}");
}

#[test]
fn every_reply_is_pinned_both_ways() {
    let replies = replies();
    assert_eq!(replies.len(), REPLIES_JSON.len());
    for (reply, json) in replies.iter().zip(REPLIES_JSON) {
        assert_eq!(&serde_json::to_string(reply).unwrap(), json, "{reply:?}");
        let back: Reply = serde_json::from_str(json).unwrap_or_else(|e| panic!("{json}: {e}"));
        assert_eq!(&back, reply, "{json}");
    }
}

#[test]
fn older_clients_requests_read_as_before() {
    for (sent, read) in OLDER_CLIENTS {
        let op: Op = serde_json::from_str(sent).unwrap_or_else(|e| panic!("{sent}: {e}"));
        assert_eq!(&serde_json::to_string(&op).unwrap(), read, "{sent}");
    }
    for (sent, why) in REFUSED {
        let e = serde_json::from_str::<Op>(sent).expect_err(sent);
        assert!(e.to_string().starts_with(why), "{sent}: {e}");
    }
}
