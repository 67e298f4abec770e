//! A large plan on a local board: how long one `add-plan` of tasks that each bring their
//! instructions takes, on a fresh board (each task's instruction file is written and fsynced
//! before the plan's journal record; the files are written first, then fsynced together).
//!
//! `cargo bench --bench plan` (sizes from `AGENTVINE_BENCH_PLAN_SIZES`, default 2000,9000;
//! 5 rounds each, each on a fresh board).

#[path = "common/mod.rs"]
mod common;

use std::time::Instant;

use agentvine::{Board, PlanTask};
use common::{R, machine, new_task, pct, sizes_from_env};

const ROUNDS: usize = 5;

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
        "{:>8} {:>12} {:>12} {:>14}",
        "tasks", "median s", "max s", "ms per task"
    );
    for &n in &sizes {
        let mut secs = Vec::with_capacity(rounds);
        for round in 0..rounds {
            let dir = tmp.path().join(format!("board-{n}-{round}"));
            let board = Board::init(&dir)?;
            let plan: Vec<PlanTask> = (0..n as u64)
                .map(|i| PlanTask {
                    task: new_task(i),
                    ..PlanTask::default()
                })
                .collect();
            let t = Instant::now();
            board.add_plan(plan)?;
            secs.push(t.elapsed().as_secs_f64());
            drop(board);
            std::fs::remove_dir_all(&dir)?;
        }
        let median = pct(&secs, 0.5);
        let max = secs.iter().copied().fold(0.0, f64::max);
        println!(
            "{n:>8} {median:>12.3} {max:>12.3} {:>14.3}",
            median * 1000.0 / n as f64
        );
    }
    Ok(())
}
