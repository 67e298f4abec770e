//! `vine pool`: checks the project as `vine worker` does, then runs the pool's slots
//! (`agentvine::pool::supervisor`), printing one line per run started or ended (JSON lines
//! with `--json`). SIGTERM and SIGINT stop claiming; after `--grace` running Claude processes
//! are killed and their tasks given back.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use agentvine::pool::reuse::Limits;
use agentvine::pool::supervisor::{self, Event, PoolConfig};
use agentvine::{Error, ExitCode, Result};
use serde_json::json;

use super::Output;
use super::args::PoolArgs;
use super::progress::Progress;
use super::worker::preflight;

pub fn start(
    a: PoolArgs,
    url: Option<&str>,
    dir: Option<&Path>,
    key_file: Option<&Path>,
    json_lines: bool,
) -> Result<Output> {
    agentvine::validate::name("pool name", &a.name)?;
    for c in &a.capabilities {
        agentvine::validate::name("capability", c)?;
    }
    let pre = preflight("vine pool", url, dir, key_file)?;
    let worktrees = if a.worktree {
        Some(agentvine::pool::worktree::Project::at(&pre.project)?)
    } else {
        None
    };
    let mut board_env = pre.board_env();
    if worktrees.is_some() {
        // Sessions in a worktree beside the project find the board only by name.
        let (k, v) = pre.location_env();
        board_env.retain(|(name, _)| *name != k);
        board_env.push((k, v));
    }
    let cfg = PoolConfig {
        slots: usize::from(a.workers),
        name: a.name,
        capabilities: a.capabilities,
        max_idle: a.max_idle,
        max_cost_usd: a.max_cost_usd,
        max_turns: a.max_turns,
        claude: PathBuf::from(&a.claude),
        claude_args: a.claude_args,
        project: pre.project.clone(),
        limits: Limits {
            max_age: a.session_max_age,
            max_idle: a.session_max_idle,
        },
        board_env,
        look: Duration::from_secs(5),
        // This very program: it dispatches the supervisor argument before parsing.
        supervisor: Some(this_program()),
        worktrees,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let kill = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, stop.clone())
            .map_err(|e| Error::io("handling signals", "vine pool", e))?;
    }
    let finished = Arc::new(AtomicBool::new(false));
    let grace = a.grace;
    let tty = !json_lines && std::io::stdout().is_terminal();
    let progress = Arc::new(Progress::new(cfg.slots, tty));
    let watcher = {
        let (stop, kill, finished) = (stop.clone(), kill.clone(), finished.clone());
        let progress = progress.clone();
        std::thread::spawn(move || {
            let mut since: Option<Instant> = None;
            let mut ticked = Instant::now();
            while !finished.load(Ordering::Relaxed) {
                if stop.load(Ordering::Relaxed) {
                    let t = *since.get_or_insert_with(Instant::now);
                    if t.elapsed() >= grace {
                        kill.store(true, Ordering::Relaxed);
                    }
                }
                if ticked.elapsed() >= Duration::from_secs(1) {
                    progress.tick();
                    ticked = Instant::now();
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    let report = |e: Event| {
        if json_lines {
            if let Ok(line) = serde_json::to_string(&e) {
                println!("{line}");
            }
        } else {
            progress.event(&e, &line(&e));
        }
    };
    let result = supervisor::run(&|| pre.open(), &cfg, &stop, &kill, &report);
    finished.store(true, Ordering::Relaxed);
    let _ = watcher.join();
    progress.finish();
    result?;
    Ok(Output {
        json: json!({"reply": "pool-stopped"}),
        text: "vine pool: every slot has stopped".into(),
        exit: ExitCode::Done,
    })
}

/// One line for people.
fn line(e: &Event) -> String {
    match e {
        Event::Started {
            slot,
            worker,
            task,
            resumes,
            why,
        } => {
            let how = match resumes {
                Some(s) => format!("resumes session {s}"),
                None => "fresh session".into(),
            };
            format!("slot {slot}  {worker}  task {task}  started: {how} ({why})")
        }
        Event::Ended {
            slot,
            worker,
            task,
            session,
            task_status,
            turns,
            cost_usd,
            duration_ms,
            note,
        } => {
            let mut s = format!(
                "slot {slot}  {worker}  task {task}  {task_status}  {turns} turns  ${cost_usd:.4}  {:.1}s",
                *duration_ms as f64 / 1000.0
            );
            if let Some(id) = session {
                s.push_str(&format!("  session {id}"));
            }
            if let Some(n) = note {
                s.push_str(&format!("  ({n})"));
            }
            s
        }
        Event::SlotDone { slot, why } => format!("slot {slot}  stopped: {why}"),
        Event::Worktree { worker, cleanup } => match &cleanup.kept_because {
            None => format!("{worker}  worktree {} removed", cleanup.path.display()),
            Some(why) => format!(
                "{worker}  worktree {} KEPT, it holds uncommitted work ({why})",
                cleanup.path.display()
            ),
        },
    }
}

/// The running `vine`, as the supervisor of the pool's runs.
fn this_program() -> PathBuf {
    if cfg!(target_os = "linux") {
        // Still the right program if its file was replaced or deleted since it started.
        PathBuf::from("/proc/self/exe")
    } else {
        std::env::current_exe().unwrap_or_else(|_| PathBuf::from("vine"))
    }
}
