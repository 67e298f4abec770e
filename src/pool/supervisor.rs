//! The pool itself: N slots, each at most one `claude -p` process at a time, sharing a set of
//! worker identities on the board.
//!
//! A slot with nothing to do runs no Claude process: it waits for work with the board's change
//! wait (the `turn-ended` op, held by the store until a task is claimable). Given a task, it
//! chooses the session (resume the identity's last one or start fresh, see [`super::reuse`]),
//! runs Claude with the worker's environment, heartbeats the worker meanwhile, records the run
//! on the board (`record-run`) and looks at the task afterwards: done (completed or failed by
//! the session), parked (the session asked a question and ended its turn: the identity keeps
//! the task and waits, the slot moves on), or left held (the attempt fails; the Stop hook has
//! already reminded the session once). A parked identity whose question is answered is resumed
//! in the same session with the answer.
//!
//! A parked task is held by its own identity (a worker waiting on a question), so a slot takes
//! further work under another identity: `NAME-1`, `NAME-2`, ... are created as needed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use super::claude_run::{self, RunSpec, Start};
use super::prompt;
use super::reuse::{self, Choice, LastSession, Limits, TaskTraits};
use crate::board::Board;
use crate::error::{Error, Result};
use crate::message::{Message, MessageFilter};
use crate::op::{self, Op, TurnEnded};
use crate::reply::{ClaimedTask, Next};
use crate::task::{Task, TaskStatus};
use crate::time::Timestamp;

/// How `vine pool` runs.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Slots: Claude processes at most at once.
    pub slots: usize,
    /// The worker ids' prefix (`NAME-1`, `NAME-2`, ...).
    pub name: String,
    /// Capabilities every identity registers with.
    pub capabilities: Vec<String>,
    /// A slot that finds no work for this long ends (its identity goes offline).
    pub max_idle: Duration,
    /// The pool stops claiming once its runs have cost this much (US dollars).
    pub max_cost_usd: Option<f64>,
    /// `--max-turns` of each run.
    pub max_turns: Option<u32>,
    /// The `claude` program.
    pub claude: std::path::PathBuf,
    /// More `claude` arguments.
    pub claude_args: Vec<String>,
    /// The project folder the runs work in.
    pub project: std::path::PathBuf,
    /// When a session is resumed.
    pub limits: Limits,
    /// The board's location for the runs (`VINE_DIR` or `VINE_URL`, and the key file).
    pub board_env: Vec<(String, String)>,
    /// How long a waiting slot's look at the board lasts before it checks parked questions.
    pub look: Duration,
    /// The command supervisor each run goes under (see [`RunSpec::supervisor`]).
    pub supervisor: Option<std::path::PathBuf>,
    /// Each worker works in its own git worktree of this project (`--worktree`).
    pub worktrees: Option<super::worktree::Project>,
}

/// What the pool reports as it goes (one line each for people, or JSON).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    /// A run started.
    Started {
        /// The slot (1-based).
        slot: usize,
        /// The worker identity.
        worker: String,
        /// The task.
        task: u64,
        /// The session it resumes, if it does.
        resumes: Option<String>,
        /// Why fresh or resumed.
        why: String,
    },
    /// A run ended.
    Ended {
        /// The slot.
        slot: usize,
        /// The worker identity.
        worker: String,
        /// The task.
        task: u64,
        /// The Claude session, when the run printed its result.
        session: Option<String>,
        /// What became of the task: completed, failed, pending (retried), parked, released...
        task_status: String,
        /// Model turns.
        turns: u32,
        /// Cost in US dollars.
        cost_usd: f64,
        /// Wall time in milliseconds.
        duration_ms: u64,
        /// A problem worth saying (no result printed, the attempt failed by the pool, ...).
        note: Option<String>,
    },
    /// A worker's worktree when the pool ended: removed, or kept with uncommitted work.
    Worktree {
        /// The worker.
        worker: String,
        /// What happened to it.
        cleanup: super::worktree::Cleanup,
    },
    /// A slot stopped.
    SlotDone {
        /// The slot.
        slot: usize,
        /// Why.
        why: String,
    },
}

/// A task parked on a question, held by its identity.
#[derive(Debug, Clone)]
struct Parked {
    task: u64,
    attempt: u32,
    question: u64,
}

/// The last session an identity ran, for the reuse choice.
#[derive(Debug, Clone)]
struct LastRun {
    session: String,
    /// Why the session was ended while the identity waited (too old or idle too long).
    ended: Option<String>,
    started_at: Timestamp,
    last_active_at: Timestamp,
    task: u64,
    requires: Vec<String>,
    depends_on: Vec<u64>,
    group: Option<String>,
}

/// A worker identity of the pool.
#[derive(Debug, Clone)]
struct Identity {
    worker: String,
    busy: bool,
    parked: Option<Parked>,
    last: Option<LastRun>,
}

/// What the slots share.
struct Shared<'a> {
    cfg: &'a PoolConfig,
    identities: Mutex<Vec<Identity>>,
    spent: Mutex<f64>,
    /// Stop claiming (SIGTERM, or the cost limit).
    stop: &'a AtomicBool,
    /// Kill running Claude processes (the grace after a stop is over).
    kill: &'a AtomicBool,
    report: &'a (dyn Fn(Event) + Sync),
}

/// Runs the pool until every slot has stopped: `stop` set (stop claiming; running tasks go on
/// until `kill` is set), the cost limit reached, or no work for `max_idle`. `open` opens the
/// board (one handle per slot).
pub fn run(
    open: &(dyn Fn() -> Result<Board> + Sync),
    cfg: &PoolConfig,
    stop: &AtomicBool,
    kill: &AtomicBool,
    report: &(dyn Fn(Event) + Sync),
) -> Result<()> {
    let shared = Shared {
        cfg,
        identities: Mutex::new(Vec::new()),
        spent: Mutex::new(0.0),
        stop,
        kill,
        report,
    };
    let errors: Vec<Error> = std::thread::scope(|s| {
        let handles: Vec<_> = (1..=cfg.slots.max(1))
            .map(|slot| {
                let shared = &shared;
                s.spawn(move || {
                    let board = open()?;
                    slot_loop(&board, shared, slot)
                })
            })
            .collect();
        handles
            .into_iter()
            .filter_map(|h| match h.join() {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e),
                Err(_) => Some(Error::Protocol("a pool slot panicked".into())),
            })
            .collect()
    });
    // Sessions the pool will not resume any more end with it, and their workers go offline
    // (parked ones stay, waiting: their questions may still be answered, and a next pool can
    // take their tasks).
    let leaving: Vec<(String, Option<String>)> = shared
        .ids()
        .iter()
        .filter(|i| i.parked.is_none())
        .map(|i| {
            let live = i.last.as_ref().filter(|l| l.ended.is_none());
            (i.worker.clone(), live.map(|l| l.session.clone()))
        })
        .collect();
    if !leaving.is_empty()
        && let Ok(board) = open()
    {
        for (worker, session) in leaving {
            if let Some(s) = session {
                end_session(&board, &s, "the pool stopped");
            }
            let _ = board.deregister(&worker);
        }
    }
    if let Some(project) = &cfg.worktrees {
        // A parked worker's worktree stays with its session; the others are removed unless
        // they hold uncommitted work.
        let done: Vec<String> = shared
            .ids()
            .iter()
            .filter(|i| i.parked.is_none())
            .map(|i| i.worker.clone())
            .collect();
        for worker in done {
            if let Ok(Some(cleanup)) = project.clean_up(&worker) {
                report(Event::Worktree { worker, cleanup });
            }
        }
    }
    match errors.into_iter().next() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

impl Shared<'_> {
    fn ids(&self) -> MutexGuard<'_, Vec<Identity>> {
        self.identities.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn spent(&self) -> f64 {
        *self.spent.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn over_budget(&self) -> bool {
        self.cfg.max_cost_usd.is_some_and(|max| self.spent() >= max)
    }

    /// A free identity (not busy, not parked), marked busy; a new one if none is free.
    fn take_free(&self) -> Identity {
        let mut ids = self.ids();
        if let Some(i) = ids.iter_mut().find(|i| !i.busy && i.parked.is_none()) {
            i.busy = true;
            return i.clone();
        }
        let worker = format!("{}-{}", self.cfg.name, ids.len() + 1);
        let id = Identity {
            worker,
            busy: true,
            parked: None,
            last: None,
        };
        ids.push(id.clone());
        id
    }

    /// A parked identity, not busy, marked busy.
    fn take_parked(&self, worker: &str) -> Option<Identity> {
        let mut ids = self.ids();
        let i = ids
            .iter_mut()
            .find(|i| i.worker == worker && !i.busy && i.parked.is_some())?;
        i.busy = true;
        Some(i.clone())
    }

    /// Puts `id` back (not busy), as it is now.
    fn give_back(&self, mut id: Identity) {
        id.busy = false;
        let mut ids = self.ids();
        if let Some(slot) = ids.iter_mut().find(|i| i.worker == id.worker) {
            *slot = id;
        }
    }

    fn parked(&self) -> Vec<(String, Parked)> {
        self.ids()
            .iter()
            .filter(|i| !i.busy)
            .filter_map(|i| i.parked.clone().map(|p| (i.worker.clone(), p)))
            .collect()
    }
}

fn slot_loop(board: &Board, sh: &Shared<'_>, slot: usize) -> Result<()> {
    let caps: Vec<&str> = sh.cfg.capabilities.iter().map(String::as_str).collect();
    loop {
        if sh.stop.load(Ordering::Relaxed) {
            return done(sh, slot, "the pool is stopping");
        }
        end_expired(board, sh);
        // An answered question first: its session goes on where it stopped.
        if let Some((id, question, answer)) = answered(board, sh)? {
            resume_answered(board, sh, slot, id, &question, &answer)?;
            continue;
        }
        if sh.over_budget() {
            if sh.parked().is_empty() {
                let why = format!(
                    "the pool's runs have cost ${:.4}, the --max-cost-usd limit",
                    sh.spent()
                );
                return done(sh, slot, &why);
            }
            std::thread::sleep(look(sh));
            continue;
        }
        let mut id = sh.take_free();
        if id.last.is_none() {
            board.register(&id.worker, &caps)?;
        }
        let op = TurnEnded {
            worker: id.worker.clone(),
            max_idle_secs: sh.cfg.max_idle.as_secs(),
            tool_calls: 0,
            reminded: None,
            wait_secs: look(sh).as_secs().max(1),
            pooled: false,
        };
        let turn = match board.turn_ended(op) {
            Ok(t) => t,
            Err(e) => {
                sh.give_back(id);
                return Err(e);
            }
        };
        match turn.next {
            Next::HandOver { claim } => {
                id = work(board, sh, slot, id, &claim)?;
                sh.give_back(id);
            }
            Next::Remind { task } => {
                // Held from an earlier pool that was killed: give it back to the queue.
                let _ = board.release(task.id, &id.worker);
                sh.give_back(id);
            }
            Next::Wait { .. } => sh.give_back(id),
            Next::LetGo { reason } => {
                sh.give_back(id);
                if sh.parked().is_empty() {
                    return done(sh, slot, &reason);
                }
                std::thread::sleep(look(sh));
            }
        }
    }
}

/// Ends the sessions of waiting identities that are too old or idle too long to be resumed
/// (`--session-max-age`, `--session-max-idle`), with the reason, as soon as a slot sees it.
fn end_expired(board: &Board, sh: &Shared<'_>) {
    let now = crate::time::now();
    let expired: Vec<(String, String)> = sh
        .ids()
        .iter_mut()
        .filter(|i| !i.busy && i.parked.is_none())
        .filter_map(|i| {
            let l = i.last.as_mut().filter(|l| l.ended.is_none())?;
            let why = reuse::expired(
                &l.session,
                l.started_at,
                l.last_active_at,
                sh.cfg.limits,
                now,
            )?;
            l.ended = Some(why.clone());
            Some((l.session.clone(), why))
        })
        .collect();
    for (session, why) in expired {
        end_session(board, &session, &why);
    }
}

/// How long a slot waits for work before it looks again: the configured look, but at most
/// a second while a session is parked, so an answer resumes it within about a second (an
/// answer changes no task, so it does not end the wait by itself).
fn look(sh: &Shared<'_>) -> Duration {
    if sh.parked().is_empty() {
        sh.cfg.look
    } else {
        sh.cfg.look.min(PARKED_LOOK)
    }
}

/// The longest wait between looks for an answer while a session is parked.
const PARKED_LOOK: Duration = Duration::from_secs(1);

fn done(sh: &Shared<'_>, slot: usize, why: &str) -> Result<()> {
    (sh.report)(Event::SlotDone {
        slot,
        why: why.to_string(),
    });
    Ok(())
}

/// A parked identity whose question has an answer: the identity (marked busy), the question
/// and its first answer.
fn answered(board: &Board, sh: &Shared<'_>) -> Result<Option<(Identity, Message, Message)>> {
    for (worker, p) in sh.parked() {
        let answers = board.messages(MessageFilter {
            reply_to: Some(p.question),
            ..MessageFilter::default()
        })?;
        let Some(answer) = answers.into_iter().next() else {
            continue;
        };
        let question = board
            .questions(true)?
            .into_iter()
            .map(|q| q.question)
            .find(|m| m.seq == Some(p.question));
        let (Some(question), Some(id)) = (question, sh.take_parked(&worker)) else {
            continue;
        };
        return Ok(Some((id, question, answer)));
    }
    Ok(None)
}

/// The traits of `t` that decide whether it is related to a session's last task.
fn traits(t: &Task) -> TaskTraits<'_> {
    TaskTraits {
        id: t.id,
        requires: &t.requires,
        depends_on: &t.depends_on,
        group: t.metadata.get("group").and_then(|g| g.as_str()),
    }
}

/// Works on a task just claimed for `id`: chooses the session, runs Claude, records the run.
fn work(
    board: &Board,
    sh: &Shared<'_>,
    slot: usize,
    id: Identity,
    claim: &ClaimedTask,
) -> Result<Identity> {
    let t = &claim.task;
    let now = crate::time::now();
    let last = id.last.as_ref().map(|l| LastSession {
        id: &l.session,
        worker: &id.worker,
        started_at: l.started_at,
        last_active_at: l.last_active_at,
        ended: l.ended.as_deref(),
        task: TaskTraits {
            id: l.task,
            requires: &l.requires,
            depends_on: &l.depends_on,
            group: l.group.as_deref(),
        },
    });
    let choice = reuse::choose(last.as_ref(), &id.worker, &traits(t), sh.cfg.limits, now);
    let (start, why) = match choice {
        Choice::Resume { session, why } => (Start::Resume(session), why),
        Choice::Fresh { why } => {
            // The identity's old session will not be resumed any more.
            if let Some(l) = id.last.as_ref().filter(|l| l.ended.is_none()) {
                end_session(board, &l.session, &why);
            }
            (Start::Fresh, why)
        }
    };
    let prompt = prompt::hand_over(claim);
    one_run(board, sh, slot, id, t, t.attempts, start, why, prompt)
}

/// Resumes a parked session with the answer to its question.
fn resume_answered(
    board: &Board,
    sh: &Shared<'_>,
    slot: usize,
    id: Identity,
    question: &Message,
    answer: &Message,
) -> Result<()> {
    let (Some(p), Some(last)) = (id.parked.clone(), id.last.clone()) else {
        sh.give_back(id);
        return Ok(());
    };
    let task = match board.show(p.task) {
        Ok(v) => v.task,
        Err(e) => {
            sh.give_back(id);
            return Err(e);
        }
    };
    let why = format!("the answer to question #{} came", p.question);
    let prompt = prompt::answered(question, answer);
    let mut id = id;
    id.parked = None;
    let id = one_run(
        board,
        sh,
        slot,
        id,
        &task,
        p.attempt,
        Start::Resume(last.session),
        why,
        prompt,
    )?;
    sh.give_back(id);
    Ok(())
}

/// One Claude run on `task` for `id`, and what follows from it.
#[allow(clippy::too_many_arguments)]
fn one_run(
    board: &Board,
    sh: &Shared<'_>,
    slot: usize,
    mut id: Identity,
    task: &Task,
    attempt: u32,
    start: Start,
    why: String,
    prompt: String,
) -> Result<Identity> {
    let resumes = match &start {
        Start::Resume(s) => Some(s.clone()),
        Start::Fresh => None,
    };
    (sh.report)(Event::Started {
        slot,
        worker: id.worker.clone(),
        task: task.id,
        resumes: resumes.clone(),
        why: why.clone(),
    });
    let mut env = sh.cfg.board_env.clone();
    env.extend([
        ("VINE_WORKER".to_string(), id.worker.clone()),
        ("VINE_TASK".to_string(), task.id.to_string()),
        ("VINE_POOL".to_string(), "1".to_string()),
        ("VINE_KEEPALIVE".to_string(), "0".to_string()),
    ]);
    let folder = match &sh.cfg.worktrees {
        Some(project) => project.worktree(&id.worker)?,
        None => sh.cfg.project.clone(),
    };
    let spec = RunSpec {
        claude: sh.cfg.claude.clone(),
        project: folder,
        prompt,
        start,
        max_turns: sh.cfg.max_turns,
        extra_args: sh.cfg.claude_args.clone(),
        env,
        supervisor: sh.cfg.supervisor.clone(),
    };
    let every = beat_every(board);
    let worker = id.worker.clone();
    let beat = || {
        let _ = board.heartbeat(&worker);
    };
    let started_at = crate::time::now();
    let finished = claude_run::run(&spec, every, &beat, sh.kill)?;
    let mut note = None;
    let (mut turns, mut cost, mut ms, mut session) = (0, 0.0, 0, None);
    match &finished.outcome {
        Ok(o) => {
            (turns, cost, ms) = (o.num_turns, o.total_cost_usd, o.duration_ms);
            session = Some(o.session_id.clone());
            *sh.spent.lock().unwrap_or_else(|p| p.into_inner()) += o.total_cost_usd;
            let record = op::RecordRun {
                session: o.session_id.clone(),
                worker: id.worker.clone(),
                task: task.id,
                attempt,
                resumed: resumes.is_some(),
                why: why.clone(),
                outcome: o.subtype.clone(),
                turns: o.num_turns,
                cost_usd: o.total_cost_usd,
                usage: o.usage,
                duration_ms: o.duration_ms,
            };
            if let Err(e) = board.execute(Op::RecordRun(record)) {
                note = Some(format!("the run could not be recorded: {e}"));
            }
            let now = crate::time::now();
            id.last = Some(LastRun {
                session: o.session_id.clone(),
                ended: None,
                started_at: match (&resumes, &id.last) {
                    (Some(_), Some(l)) => l.started_at,
                    _ => started_at,
                },
                last_active_at: now,
                task: task.id,
                requires: task.requires.clone(),
                depends_on: task.depends_on.clone(),
                group: traits(task).group.map(str::to_string),
            });
        }
        Err(e) => {
            note = Some(format!(
                "claude printed no result ({e}); exit {:?}; stderr: {}",
                finished.exit,
                one_line_tail(&finished.stderr_tail)
            ));
            id.last = None;
        }
    }
    let status = settle(board, &mut id, task.id, attempt, &finished, &mut note)?;
    (sh.report)(Event::Ended {
        slot,
        worker: id.worker.clone(),
        task: task.id,
        session,
        task_status: status,
        turns,
        cost_usd: cost,
        duration_ms: ms,
        note,
    });
    Ok(id)
}

/// What becomes of the task after a run: finished by the session, parked on a question, given
/// back (the run was killed), or its attempt failed (the session ended holding it).
fn settle(
    board: &Board,
    id: &mut Identity,
    task: u64,
    attempt: u32,
    finished: &claude_run::Finished,
    note: &mut Option<String>,
) -> Result<String> {
    let t = board.show(task)?.task;
    let held = t.status == TaskStatus::InProgress
        && t.claimed_by.as_deref() == Some(id.worker.as_str())
        && t.attempts == attempt;
    if !held {
        return Ok(t.status.to_string());
    }
    let waiting = board
        .workers()?
        .into_iter()
        .find(|w| w.id == id.worker)
        .and_then(|w| w.worker.waits_on(crate::time::now()));
    if let Some(question) = waiting
        && id.last.is_some()
    {
        id.parked = Some(Parked {
            task,
            attempt,
            question,
        });
        return Ok(format!("parked on question #{question}"));
    }
    if finished.killed {
        board.release(task, &id.worker)?;
        return Ok("released (the pool stopped)".into());
    }
    let how = match &finished.outcome {
        Ok(o) => format!("ended ({})", o.subtype),
        Err(_) => format!("exited ({:?}) without a result", finished.exit),
    };
    let error = format!("the claude session {how} without `vine complete` or `vine fail`");
    board.execute(Op::Fail(op::Fail {
        task,
        worker: id.worker.clone(),
        attempt: Some(attempt),
        error: error.clone(),
        no_retry: false,
    }))?;
    *note = Some(
        note.take()
            .map_or(error.clone(), |n| format!("{n}; {error}")),
    );
    let after = board.show(task)?.task;
    Ok(after.status.to_string())
}

/// Ends a session on the board (best effort: a session never recorded is not there).
fn end_session(board: &Board, session: &str, why: &str) {
    let op = op::EndSession {
        session: session.to_string(),
        reason: why.to_string(),
    };
    if let Err(e) = board.execute(Op::EndSession(op)) {
        tracing::debug!("ending session {session}: {e}");
    }
}

/// Heartbeats at a third of the board's stale limit (a second at least).
fn beat_every(board: &Board) -> Duration {
    let stale = board.settings().map_or(180, |s| s.stale_after_secs);
    Duration::from_secs((stale / 3).max(1))
}

fn one_line_tail(s: &str) -> String {
    let line = s.lines().last().unwrap_or_default();
    line.chars().take(300).collect()
}
