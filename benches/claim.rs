//! Claim latency against the floor, on criterion.
//!
//! Boards with 100, 10,000 and 100,000 tasks of history (`AGENTVINE_BENCH_HISTORIES=100,1000`
//! for others) keep 50 pending tasks. Every iteration is one round: one cycle on each board in
//! turn, all through the board's one long-lived `Board` handle: `claim` (timed), the floor on
//! the queue file the claim just wrote (timed: one durable replace of the same bytes in the
//! same directory, see `common::floor`), `complete`, and an `add` that keeps the pool at 50.
//! Criterion reports the claim on each board (`claim/<history>`), the floor (`floor/...`, on the
//! 10,000 board) and a claim through a freshly opened handle (`floor/cold claim`). Every claim
//! and the floor right after it are also kept, from every round, and the bench prints the
//! targets from them: claim p50 against floor p50 over the same cycles, and claim at the largest
//! history against the smallest over the same rounds.
//!
//! Then a breakdown: 201 more rounds with a `tracing` subscriber that records the store's own
//! spans (`write` > `lock`, `load`, `apply`, `commit`, `unlock`, `instructions`, and below
//! them), so the time of each step comes from the code that runs.
//!
//! Run with `cargo bench --bench claim` (about two minutes, plus building the boards). Without
//! `--bench` (as under `cargo test --benches`) every benchmark runs once on the smallest board,
//! as a check. docs/benchmark-method.md says more.

mod common;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use agentvine::{Board, ClaimedTask, Settings};
use common::{
    Built, ME, R, build_board, floor, histories, loadavg, machine, mean, met, new_task, pct,
    result_of, us,
};
use criterion::{BenchmarkId, Criterion, SamplingMode};
use tracing::Subscriber;
use tracing::span::{Attributes, Id};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::{LookupSpan, Registry};

/// Histories measured by default.
const HISTORIES: [usize; 3] = [100, 10_000, 100_000];
/// The board the floor and the cold claim are measured on.
const FLOOR_HISTORY: usize = 10_000;
/// Breakdown cycles per board (one sawtooth period of the queue with default settings).
const BREAKDOWN_CYCLES: usize = 201;

/// A board being measured, with the one handle all its ops go through.
struct LatencyBoard {
    history: usize,
    dir: PathBuf,
    built: Built,
    board: Board,
    /// Number of the next task added to keep the pool.
    next_task: u64,
    /// Every timed claim (µs) and the floor right after it, in the same cycle.
    claims: Vec<f64>,
    floors: Vec<f64>,
}

impl LatencyBoard {
    fn new(root: &std::path::Path, history: usize) -> R<Self> {
        let dir = root.join(format!("board-{history}"));
        let built = build_board(&dir, history, &Settings::default())?;
        eprintln!(
            "board {history}: built in {:.1}s (queue: {} finished + {} pending, archive: {})",
            built.secs, built.queue_finished, built.pending, built.archived
        );
        Ok(LatencyBoard {
            history,
            board: Board::open(&dir)?,
            dir,
            built,
            next_task: 10_000_000,
            claims: Vec::new(),
            floors: Vec::new(),
        })
    }

    /// One cycle: claim (timed), the floor on the bytes the claim wrote (timed), complete and
    /// add through the long-lived handle. Returns (claim, floor).
    fn cycle(&mut self) -> R<(Duration, Duration)> {
        let t = Instant::now();
        let c = self.board.claim(ME)?.ok_or("the pool ran dry")?;
        let claim = t.elapsed();
        let floor = floor(
            &self.dir,
            &std::fs::read(self.dir.join(agentvine::store::paths::QUEUE))?,
        )?;
        self.finish(&c)?;
        self.claims.push(us(claim));
        self.floors.push(us(floor));
        Ok((claim, floor))
    }

    /// A claim through a freshly opened handle (what each `vine` process pays inside the
    /// library: opening the board and a full parse of the queue), then complete and add.
    fn cold_cycle(&mut self) -> R<Duration> {
        let t = Instant::now();
        let c = Board::open(&self.dir)?
            .claim(ME)?
            .ok_or("the pool ran dry")?;
        let cold = t.elapsed();
        self.finish(&c)?;
        Ok(cold)
    }

    /// Completes the claimed task and adds a new one, so the pool stays at 50.
    fn finish(&mut self, c: &ClaimedTask) -> R<()> {
        if c.instructions.is_none() {
            return Err(format!("claimed task {} came without instructions", c.task.id).into());
        }
        self.board
            .complete(c.task.id, ME, Some(result_of(c.task.id)))?;
        self.next_task += 1;
        self.board.add(new_task(self.next_task))?;
        Ok(())
    }
}

/// One round: one cycle on every board in turn, so that slow and fast periods of the shared
/// disk hit every history alike. Returns each board's (claim, floor).
fn round(boards: &mut [LatencyBoard]) -> Vec<(Duration, Duration)> {
    boards
        .iter_mut()
        .map(|b| {
            b.cycle()
                .unwrap_or_else(|e| panic!("board {}: {e}", b.history))
        })
        .collect()
}

/// Runs `iters` rounds and sums what `pick` takes from each (criterion's `iter_custom`).
fn timed(
    boards: &RefCell<Vec<LatencyBoard>>,
    iters: u64,
    pick: impl Fn(&[(Duration, Duration)]) -> Duration,
) -> Duration {
    let mut boards = boards.borrow_mut();
    (0..iters).map(|_| pick(&round(&mut boards))).sum()
}

fn main() -> R<()> {
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let root = tempfile::Builder::new()
        .prefix("agentvine-bench-")
        .tempdir_in("/tmp")?;
    let machine = machine(root.path());
    let histories = histories(if benchmarking { &HISTORIES } else { &[100] })?;
    let boards: Vec<LatencyBoard> = histories
        .iter()
        .map(|&h| LatencyBoard::new(root.path(), h))
        .collect::<R<_>>()?;
    let floor_board = boards
        .iter()
        .position(|b| b.history == FLOOR_HISTORY)
        .unwrap_or(0);
    let boards = RefCell::new(boards);

    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(3))
        .measurement_time(Duration::from_secs(10))
        .sample_size(50)
        .configure_from_args();
    {
        let mut g = c.benchmark_group("claim");
        // Iterations of milliseconds, with a sawtooth queue: every sample has the same count.
        g.sampling_mode(SamplingMode::Flat);
        for (i, &h) in histories.iter().enumerate() {
            g.bench_function(BenchmarkId::from_parameter(h), |bench| {
                bench.iter_custom(|iters| timed(&boards, iters, |r| r[i].0))
            });
        }
        g.finish();
    }
    {
        let mut g = c.benchmark_group("floor");
        g.sampling_mode(SamplingMode::Flat);
        g.bench_function("queue-sized durable replace", |bench| {
            bench.iter_custom(|iters| timed(&boards, iters, |r| r[floor_board].1))
        });
        g.bench_function("cold claim (open + claim)", |bench| {
            bench.iter_custom(|iters| {
                let b = &mut boards.borrow_mut()[floor_board];
                (0..iters)
                    .map(|_| b.cold_cycle().unwrap_or_else(|e| panic!("cold claim: {e}")))
                    .sum()
            })
        });
        g.finish();
    }
    c.final_summary();

    let mut boards = boards.into_inner();
    let breakdown = breakdown(&mut boards, if benchmarking { BREAKDOWN_CYCLES } else { 3 })?;
    println!();
    println!("agentvine claim benchmark");
    for m in &machine {
        println!("  {m}");
    }
    println!("  load average at end: {}", loadavg());
    report_targets(&boards);
    breakdown.report(&boards);
    Ok(())
}

/// The targets, from every round criterion ran (its warm-up included): the claim and the floor
/// of the same cycles, every board measured in every round.
fn report_targets(boards: &[LatencyBoard]) {
    println!();
    println!(
        "Board::claim through one long-lived handle vs the floor right after it, same cycles, us"
    );
    println!(
        "{:>9} {:>28} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>11}",
        "history",
        "built: queue + archive",
        "cycles",
        "floor50",
        "claim50",
        "claim90",
        "claim99",
        "c/f p50",
        "c-f p50"
    );
    for b in boards {
        let paired: Vec<f64> = b.claims.iter().zip(&b.floors).map(|(c, f)| c - f).collect();
        println!(
            "{:>9} {:>28} {:>8} {:>8.0} {:>8.0} {:>8.0} {:>8.0} {:>8.3}x {:>11.0}",
            b.history,
            format!(
                "{} + {} pending, {}",
                b.built.queue_finished, b.built.pending, b.built.archived
            ),
            b.claims.len(),
            pct(&b.floors, 0.5),
            pct(&b.claims, 0.5),
            pct(&b.claims, 0.9),
            pct(&b.claims, 0.99),
            pct(&b.claims, 0.5) / pct(&b.floors, 0.5),
            pct(&paired, 0.5),
        );
    }
    println!("   c-f p50: the median over the cycles of (claim - floor)");
    println!("   targets:");
    for b in boards {
        let ratio = pct(&b.claims, 0.5) / pct(&b.floors, 0.5);
        println!(
            "     history {:>6}: claim p50 / floor p50 = {ratio:.3}x (target <= 1.2x): {}",
            b.history,
            met(ratio <= 1.2)
        );
    }
    if let (Some(first), Some(last)) = (boards.first(), boards.last())
        && boards.len() > 1
    {
        let ratio = pct(&last.claims, 0.5) / pct(&first.claims, 0.5);
        println!(
            "     claim p50 at history {} / at history {} = {ratio:.3}x (target <= 1.5x): {}",
            last.history,
            first.history,
            met(ratio <= 1.5)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The breakdown, from the store's tracing spans

/// A span's names from the root span down to it.
type SpanPath = Vec<&'static str>;

/// Records, for every span that closes, its path and the time spent inside it (between enter
/// and exit), in µs.
#[derive(Clone, Default)]
struct SpanTimes(Arc<Mutex<Vec<(SpanPath, f64)>>>);

/// Time inside one span so far.
struct Busy {
    entered: Option<Instant>,
    total: Duration,
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for SpanTimes {
    fn on_new_span(&self, _: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(Busy {
                entered: None,
                total: Duration::ZERO,
            });
        }
    }

    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id)
            && let Some(busy) = span.extensions_mut().get_mut::<Busy>()
        {
            busy.entered = Some(Instant::now());
        }
    }

    fn on_exit(&self, id: &Id, ctx: Context<'_, S>) {
        let now = Instant::now();
        if let Some(span) = ctx.span(id)
            && let Some(busy) = span.extensions_mut().get_mut::<Busy>()
            && let Some(at) = busy.entered.take()
        {
            busy.total += now - at;
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let total = span
            .extensions()
            .get::<Busy>()
            .map_or(Duration::ZERO, |b| b.total);
        let path = span.scope().from_root().map(|s| s.name()).collect();
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((path, us(total)));
    }
}

/// The spans of the breakdown claims: per board, per span path, one value per claim.
struct Breakdown {
    /// Span paths in tree order (a parent before its children, siblings as first seen).
    order: Vec<SpanPath>,
    /// Per board: span path -> µs per claim (0 where a claim had no such span).
    spans: Vec<BTreeMap<SpanPath, Vec<f64>>>,
    /// Per board: the whole traced `Board::claim`, and the floor right after it.
    claims: Vec<Vec<f64>>,
    floors: Vec<Vec<f64>>,
}

impl Breakdown {
    /// Puts `path` into the tree order: after its parent's last descendant so far.
    fn place(&mut self, path: &[&'static str]) {
        if self.order.iter().any(|p| p == path) {
            return;
        }
        let parent = &path[..path.len() - 1];
        let mut at = match self.order.iter().position(|p| p == parent) {
            Some(i) => i + 1,
            None => self.order.len(),
        };
        while at < self.order.len() && self.order[at].starts_with(parent) && !parent.is_empty() {
            at += 1;
        }
        self.order.insert(at, path.to_vec());
    }

    fn report(&self, boards: &[LatencyBoard]) {
        println!();
        println!(
            "Breakdown of a claim from the store's tracing spans ({} claims per board, each span's own time including its children), p50 / mean us",
            self.claims.first().map_or(0, Vec::len)
        );
        print!("{:<44}", "span");
        for b in boards {
            print!(" {:>15}", format!("h={}", b.history));
        }
        println!();
        let row = |name: &str, per_board: &dyn Fn(usize) -> Vec<f64>| {
            print!("{name:<44}");
            for i in 0..boards.len() {
                let v = per_board(i);
                print!(" {:>15}", format!("{:.0} / {:.0}", pct(&v, 0.5), mean(&v)));
            }
            println!();
        };
        row("Board::claim (traced, whole)", &|i| self.claims[i].clone());
        for path in &self.order {
            let name = format!(
                "{}{}",
                "  ".repeat(path.len()),
                path.last().copied().unwrap_or("")
            );
            row(&name, &|i| {
                self.spans[i].get(path).cloned().unwrap_or_default()
            });
        }
        row("the floor (right after each claim)", &|i| {
            self.floors[i].clone()
        });
        // The floor's own work inside the claim: the queue's replace and the directory fsync.
        let floor_work = |i: usize| -> Vec<f64> {
            let get = |p: &[&str]| {
                self.spans[i]
                    .iter()
                    .find(|(k, _)| k.as_slice() == p)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            };
            let replace = get(&["write", "commit", "queue", "replace"]);
            let sync = get(&["write", "commit", "sync dir"]);
            replace.iter().zip(&sync).map(|(a, b)| a + b).collect()
        };
        row("claim: queue replace + sync dir", &floor_work);
        row("claim beyond those (whole - them)", &|i| {
            self.claims[i]
                .iter()
                .zip(floor_work(i))
                .map(|(c, f)| c - f)
                .collect()
        });
    }
}

/// `cycles` cycles per board, the boards taking turns, each claim traced with [`SpanTimes`].
fn breakdown(boards: &mut [LatencyBoard], cycles: usize) -> R<Breakdown> {
    let times = SpanTimes::default();
    let dispatch = tracing::Dispatch::new(Registry::default().with(times.clone()));
    let mut out = Breakdown {
        order: Vec::new(),
        spans: vec![BTreeMap::new(); boards.len()],
        claims: vec![Vec::new(); boards.len()],
        floors: vec![Vec::new(); boards.len()],
    };
    for n in 0..cycles {
        for (i, b) in boards.iter_mut().enumerate() {
            let t = Instant::now();
            let c = tracing::dispatcher::with_default(&dispatch, || b.board.claim(ME))?
                .ok_or("the pool ran dry")?;
            let claim = us(t.elapsed());
            let bytes = std::fs::read(b.dir.join(agentvine::store::paths::QUEUE))?;
            let floor = us(floor(&b.dir, &bytes)?);
            b.finish(&c)?;
            let closed =
                std::mem::take(&mut *times.0.lock().unwrap_or_else(PoisonError::into_inner));
            // Tree order from creation order: a parent closes after its children, so place
            // the shorter paths first.
            let mut paths: Vec<&SpanPath> = closed.iter().map(|(p, _)| p).collect();
            paths.sort_by_key(|p| p.len());
            for p in paths {
                out.place(p);
            }
            let mut this: BTreeMap<SpanPath, f64> = BTreeMap::new();
            for (p, v) in closed {
                *this.entry(p).or_default() += v;
            }
            for p in &out.order {
                let v = out.spans[i]
                    .entry(p.clone())
                    .or_insert_with(|| vec![0.0; n]);
                v.push(this.get(p).copied().unwrap_or(0.0));
            }
            out.claims[i].push(claim);
            out.floors[i].push(floor);
        }
    }
    Ok(out)
}
