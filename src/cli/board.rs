//! The board's commands (`vine add`, `vine claim`, ...): each becomes one op, carried out on
//! the board, its reply rendered with the exit code it means. `ask --wait` also waits for the
//! answer.

use std::path::Path;
use std::time::{Duration, Instant};

use agentvine::op;
use agentvine::{Board, Error, ExitCode, MessageFilter, NewTask, Op, Reply, Result};
use serde_json::{Map, Value, json};

use super::args::{AddArgs, BoardCommand, MsgCmd, ProgressCmd};
use super::{Output, render, worker_id, worker_of};

/// Runs a board command for `worker` (the global `--worker`, if given).
pub fn run(board: &Board, command: BoardCommand, worker: Option<&str>) -> Result<Output> {
    let op = match command {
        BoardCommand::Add(a) => add_op(*a)?,
        BoardCommand::Claim => Op::Claim(op::Claim {
            worker: worker_id(worker)?,
        }),
        BoardCommand::Complete {
            claimant,
            result,
            result_json,
        } => {
            let result = match (result, result_json) {
                (_, Some(j)) => Some(json_arg("--result-json", &j)?),
                (Some(t), None) => Some(Value::String(t)),
                (None, None) => None,
            };
            Op::Complete(op::Complete {
                task: claimant.id,
                worker: worker_id(worker)?,
                attempt: claimant.attempt,
                result,
            })
        }
        BoardCommand::Fail {
            claimant,
            error,
            no_retry,
        } => Op::Fail(op::Fail {
            task: claimant.id,
            worker: worker_id(worker)?,
            attempt: claimant.attempt,
            error,
            no_retry,
        }),
        BoardCommand::Release { claimant } => Op::Release(op::Release {
            task: claimant.id,
            worker: worker_id(worker)?,
            attempt: claimant.attempt,
        }),
        BoardCommand::Cancel { id, reason } => Op::Cancel(op::Cancel { task: id, reason }),
        BoardCommand::Retry { id } => Op::Retry(op::Retry { task: id }),
        BoardCommand::Priority { id, level } => Op::SetPriority(op::SetPriority {
            task: id,
            priority: level,
        }),
        BoardCommand::Register {
            capabilities,
            session_id,
        } => Op::Register(op::Register {
            worker: worker_id(worker)?,
            capabilities,
            session_id,
        }),
        BoardCommand::Heartbeat => Op::Heartbeat(op::Heartbeat {
            worker: worker_id(worker)?,
        }),
        BoardCommand::Deregister => Op::Deregister(op::Deregister {
            worker: worker_id(worker)?,
        }),
        BoardCommand::ShouldContinue { max_idle } => Op::ShouldContinue(op::ShouldContinue {
            worker: worker_id(worker)?,
            max_idle_secs: max_idle.as_secs(),
        }),
        BoardCommand::Status => Op::Status(op::Status),
        BoardCommand::Tasks { status, all } => Op::Tasks(op::Tasks { status, all }),
        BoardCommand::Show { id } => Op::Show(op::Show { task: id }),
        BoardCommand::Workers => Op::Workers(op::Workers),
        BoardCommand::Sessions { all } => Op::Sessions(op::Sessions { worker: None, all }),
        BoardCommand::Metrics { window } => Op::Metrics(op::Metrics {
            window_secs: Some(window.as_secs()),
            buckets: None,
        }),
        BoardCommand::Progress { action } => match action {
            None | Some(ProgressCmd::Show) => Op::Progress(op::Progress),
            Some(ProgressCmd::Set {
                step,
                total,
                status,
                meta,
            }) => {
                let mut metadata = Map::new();
                meta_pairs(&meta, &mut metadata)?;
                let num = |s: String| serde_json::from_str(&s).unwrap_or(Value::String(s));
                Op::SetProgress(op::SetProgress {
                    current_step: step.map(num),
                    total_steps: total.map(num),
                    status,
                    metadata,
                })
            }
        },
        BoardCommand::Msg { action } => match action {
            MsgCmd::Send {
                message,
                agent,
                task,
            } => Op::Send(op::Send {
                agent: agent_name(agent, worker, "coordinator"),
                message,
                task,
            }),
            MsgCmd::Read {
                since,
                after,
                reply_to,
                limit,
                task,
            } => Op::ReadMessages(op::ReadMessages {
                filter: MessageFilter {
                    since,
                    after_seq: after,
                    reply_to,
                    limit,
                    task,
                    ..MessageFilter::default()
                },
            }),
        },
        BoardCommand::Ask {
            question,
            agent,
            task,
            wait,
            timeout,
            poll,
        } => {
            let agent = agent_name(agent, worker, "coordinator");
            if wait {
                let timeout = timeout.as_secs();
                let poll = poll.as_secs().max(1);
                let op = Op::Ask(op::Ask {
                    agent,
                    question,
                    task,
                    wait_secs: Some(timeout),
                });
                return ask_and_wait(board, op, timeout, poll);
            }
            if pooled() {
                return ask_and_park(board, agent, question, task);
            }
            Op::Ask(op::Ask {
                agent,
                question,
                task,
                wait_secs: None,
            })
        }
        BoardCommand::Answer {
            question,
            answer,
            agent,
        } => Op::Answer(op::Answer {
            agent: agent.unwrap_or_else(|| "coordinator".into()),
            question,
            answer,
        }),
        BoardCommand::Questions { all } => Op::Questions(op::Questions { all }),
        BoardCommand::RequeueStale => Op::RequeueStale(op::RequeueStale),
        BoardCommand::Repair => Op::Repair(op::Repair),
        BoardCommand::Compact => Op::Compact(op::Compact),
    };
    let reply = board.execute(op)?;
    let exit = match &reply {
        Reply::Claimed { claim: None, .. } => ExitCode::NothingToDo,
        Reply::Decision {
            keep_going: false, ..
        } => ExitCode::NothingToDo,
        _ => ExitCode::Done,
    };
    let json = serde_json::to_value(&reply).map_err(|e| Error::Protocol(e.to_string()))?;
    Ok(Output {
        text: render::reply(&reply),
        json,
        exit,
    })
}

/// Who sends or asks: `--as`, else the worker, else `default`.
fn agent_name(explicit: Option<String>, global: Option<&str>, default: &str) -> String {
    explicit
        .or_else(|| worker_of(global))
        .unwrap_or_else(|| default.to_string())
}

/// Parses `KEY=VALUE` pairs into a map; VALUE is JSON when it parses, text otherwise.
fn meta_pairs(pairs: &[String], into: &mut Map<String, Value>) -> Result<()> {
    for p in pairs {
        let Some((k, v)) = p.split_once('=') else {
            return Err(Error::Invalid(format!(
                "--meta {p:?} is not KEY=VALUE, e.g. --meta estimated_minutes=30"
            )));
        };
        if k.is_empty() {
            return Err(Error::Invalid(format!("--meta {p:?} has an empty key")));
        }
        let value = serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_string()));
        into.insert(k.to_string(), value);
    }
    Ok(())
}

fn json_arg(flag: &str, text: &str) -> Result<Value> {
    serde_json::from_str(text).map_err(|e| Error::Invalid(format!("{flag} is not valid JSON: {e}")))
}

/// `vine add`: one task, or a plan file's tasks.
fn add_op(a: AddArgs) -> Result<Op> {
    if let Some(plan) = a.plan {
        let text = std::fs::read_to_string(&plan).map_err(|e| {
            Error::Invalid(format!("cannot read plan file {}: {e}", plan.display()))
        })?;
        let base = plan.parent().map(Path::to_path_buf).unwrap_or_default();
        let tasks = agentvine::plan::parse(&text, &base)?;
        return Ok(Op::AddPlan(op::AddPlan { tasks }));
    }
    let description = a.description.unwrap_or_default();
    let instructions = match (a.instructions, a.instructions_from) {
        (Some(t), _) => Some(t),
        (None, Some(f)) => Some(std::fs::read_to_string(&f).map_err(|e| {
            Error::Invalid(format!(
                "cannot read --instructions-from {}: {e}",
                f.display()
            ))
        })?),
        (None, None) => None,
    };
    let mut metadata = match a.metadata {
        Some(m) => match json_arg("--metadata", &m)? {
            Value::Object(o) => o,
            _ => return Err(Error::Invalid("--metadata must be a JSON object".into())),
        },
        None => Map::new(),
    };
    meta_pairs(&a.meta, &mut metadata)?;
    Ok(Op::Add(op::Add {
        task: NewTask {
            description,
            instructions,
            instruction_file: a.instruction_file,
            context_files: a.context,
            assign: a.assign,
            priority: a.priority,
            requires: a.requires,
            after: a.after,
            max_retries: a.max_retries,
            lease_secs: a.lease.map(|d| d.as_secs()),
            strict: a.strict,
            fallback_after_secs: a.fallback_after.map(|d| d.as_secs()),
            metadata,
        },
    }))
}

/// How often a waiting `agent` heartbeats: a third of the shorter of the board's lease and
/// stale limit, between 1 and 30 s; `None` if `agent` is not a registered worker (a
/// coordinator asking, say), which must not become one by heartbeating.
fn heartbeat_while_waiting(board: &Board, agent: &str) -> Result<Option<Duration>> {
    if !board.workers()?.iter().any(|w| w.id == agent) {
        return Ok(None);
    }
    let s = board.settings()?;
    let every = (s.lease_secs.min(s.stale_after_secs) / 3).clamp(1, 30);
    Ok(Some(Duration::from_secs(every)))
}

/// Asks (saying the asker waits `timeout` seconds), then polls for an answer until
/// `timeout` seconds pass.
///
/// A registered worker that asks this way keeps its tasks while it waits (the board records
/// the wait and ends it at the answer or at the timeout, on its own clock); it also heartbeats
/// meanwhile, and once more when it gives up, so it looks alive and its leases are fresh when
/// the wait ends.
/// How long a worker under `vine pool` keeps its task while parked on a question (24 h);
/// past it, the task follows the usual rules again.
pub const PARK_SECS: u64 = 86_400;

/// True when this process runs under `vine pool` (`$VINE_POOL`).
fn pooled() -> bool {
    std::env::var_os("VINE_POOL").is_some_and(|v| !v.is_empty() && v != "0")
}

/// `vine ask` under `vine pool`: the question is asked with a wait (the worker keeps its task
/// and shows `waiting`), and the command returns at once, telling the model to end its turn:
/// the pool parks the task and resumes the session with the answer.
fn ask_and_park(
    board: &Board,
    agent: String,
    question: String,
    task: Option<u64>,
) -> Result<Output> {
    let reply = board.execute(Op::Ask(op::Ask {
        agent,
        question,
        task,
        wait_secs: Some(PARK_SECS),
    }))?;
    let Reply::Message { message } = &reply else {
        return Err(Error::Protocol(format!("ask got {reply:?}")));
    };
    let seq = message.seq.unwrap_or(0);
    Ok(Output {
        text: format!(
            "Question #{seq} is on the board. End your turn now (no more tool calls): vine pool \
             keeps your task and resumes this session with the answer."
        ),
        json: json!({"reply": "parked", "question": message}),
        exit: ExitCode::Done,
    })
}

fn ask_and_wait(board: &Board, op: Op, timeout: u64, poll: u64) -> Result<Output> {
    let Op::Ask(op::Ask { agent, .. }) = &op else {
        return Err(Error::Protocol("ask_and_wait needs an ask".into()));
    };
    let agent = agent.clone();
    let question = match board.execute(op)? {
        Reply::Message { message } => message,
        other => return Err(Error::Protocol(format!("ask got {other:?}"))),
    };
    // Measured from after the ask: the board's wait (from when it applied the ask) ends first.
    let deadline = Instant::now() + Duration::from_secs(timeout);
    let seq = question.seq.unwrap_or(0);
    let heartbeat = heartbeat_while_waiting(board, &agent)?;
    let mut last_beat = Instant::now();
    loop {
        let answers = board.messages(MessageFilter {
            reply_to: Some(seq),
            ..MessageFilter::default()
        })?;
        if let Some(a) = answers.into_iter().next() {
            return Ok(Output {
                text: a.message.clone(),
                json: json!({"reply": "answered", "question": question, "answer": a}),
                exit: ExitCode::Done,
            });
        }
        if let Some(every) = heartbeat
            && last_beat.elapsed() >= every
        {
            board.heartbeat(&agent)?;
            last_beat = Instant::now();
        }
        if Instant::now() >= deadline {
            if heartbeat.is_some() {
                board.heartbeat(&agent)?;
            }
            return Err(Error::NothingToDo(format!(
                "no answer to question {seq} within {}; it stays open. Read the answer later with `vine msg read --reply-to {seq}`",
                agentvine::time::format_duration(timeout)
            )));
        }
        std::thread::sleep(
            Duration::from_secs(poll).min(deadline.saturating_duration_since(Instant::now())),
        );
    }
}
