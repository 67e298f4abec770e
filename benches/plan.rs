//! A large plan on a local board: how long one `add-plan` of tasks that each bring their
//! instructions takes, on a fresh board (each task's instruction file is written and fsynced
//! before the plan's journal record: written to temp files and fsynced together before the
//! board lock, then renamed into place under it). Meanwhile a worker (its own handle on the
//! board, on another thread) claims and completes tasks added before the plan, and the
//! longest of those ops is reported: how long the plan kept the board from a worker.
//!
//! `cargo bench --bench plan` (sizes from `AGENTVINE_BENCH_PLAN_SIZES`, default 2000,9000;
//! 5 rounds each, each on a fresh board).

#[path = "common/mod.rs"]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use agentvine::op::NewTask;
use agentvine::{Board, PlanTask};
use common::{R, machine, new_task, pct, sizes_from_env};

const ROUNDS: usize = 5;
/// Tasks (without instruction files) the worker has to claim while the plan is added, in
/// plans of 10,000 (more than it can claim in that time).
const WORK: u64 = 20_000;

fn main() -> R<()> {
    // `cargo test --benches` lists the benches first: nothing to list here.
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    // Without `--bench` (`cargo test --benches`): one small plan, as a check.
    let quick = !std::env::args().any(|a| a == "--bench");
    let (sizes, rounds) = if quick {
        (vec![50], 1)
    } else {
        (
            sizes_from_env("AGENTVINE_BENCH_PLAN_SIZES", &[2000, 9000])?,
            ROUNDS,
        )
    };
    let tmp = tempfile::tempdir()?;
    println!(
        "agentvine plan benchmark: one add-plan of tasks with their instructions (~700 bytes each)"
    );
    for line in machine(tmp.path()) {
        println!("  {line}");
    }
    println!(
        "{:>8} {:>12} {:>12} {:>14} {:>22}",
        "tasks", "median s", "max s", "ms per task", "worker's longest op"
    );
    for &n in &sizes {
        let mut secs = Vec::with_capacity(rounds);
        let mut longest = Vec::with_capacity(rounds);
        for round in 0..rounds {
            let dir = tmp.path().join(format!("board-{n}-{round}"));
            let board = Board::init(&dir)?;
            let work = if quick { 1_000 } else { WORK };
            for part in 0..work.div_ceil(10_000) {
                board.add_plan(
                    (0..work.min(10_000))
                        .map(|i| PlanTask {
                            task: NewTask {
                                description: format!("work {part}-{i}"),
                                ..NewTask::default()
                            },
                            ..PlanTask::default()
                        })
                        .collect(),
                )?;
            }
            let plan: Vec<PlanTask> = (0..n as u64)
                .map(|i| PlanTask {
                    task: new_task(i),
                    ..PlanTask::default()
                })
                .collect();
            let done = Arc::new(AtomicBool::new(false));
            let worker = std::thread::spawn({
                let (dir, done) = (dir.clone(), Arc::clone(&done));
                move || work_until(&dir, &done).map_err(|e| e.to_string())
            });
            let t = Instant::now();
            board.add_plan(plan)?;
            secs.push(t.elapsed().as_secs_f64());
            done.store(true, Ordering::Relaxed);
            let claim = worker.join().map_err(|_| "the worker thread panicked")??;
            longest.push(claim.as_secs_f64());
            eprintln!(
                "  {n} tasks, round {round}: plan {:.3} s, the worker's longest op {:.3} s",
                secs[round],
                claim.as_secs_f64()
            );
            drop(board);
            std::fs::remove_dir_all(&dir)?;
        }
        let median = pct(&secs, 0.5);
        let max = secs.iter().copied().fold(0.0, f64::max);
        println!(
            "{n:>8} {median:>12.3} {max:>12.3} {:>14.3} {:>20.3} s",
            median * 1000.0 / n as f64,
            pct(&longest, 0.5)
        );
    }
    println!("  worker's longest op: the median over the rounds of the longest claim or complete");
    println!("  a worker (its own handle, another thread) made while the plan was added");
    Ok(())
}

/// Claims and completes tasks on the board in `dir` until `done`; the longest of those ops.
fn work_until(dir: &std::path::Path, done: &AtomicBool) -> R<Duration> {
    let board = Board::open(dir)?;
    let mut longest = Duration::ZERO;
    while !done.load(Ordering::Relaxed) {
        let t = Instant::now();
        let claimed = board.claim("worker-1")?;
        longest = longest.max(t.elapsed());
        match claimed {
            Some(c) => {
                let t = Instant::now();
                board.complete(c.task.id, "worker-1", None)?;
                longest = longest.max(t.elapsed());
            }
            None => std::thread::sleep(Duration::from_millis(1)),
        }
    }
    Ok(longest)
}
