//! Claim latency against the floor, by backlog, on criterion.
//!
//! Boards with 10, 1,000 and 10,000 pending tasks (`AGENTVINE_BENCH_PENDING=10,1000` for
//! others), each with 1,000 tasks of history before the measurement. Every cycle on a board
//! goes through the board's one long-lived `Board` handle: `claim` (timed; the bytes it wrote
//! are counted from `wchar` in /proc/self/io before and after it), the floor (timed: one
//! append + fdatasync of that many bytes to a file opened once with `O_APPEND` in the same
//! board directory, see `common::AppendFloor`), then `complete` and an `add` of one new task,
//! so the backlog stays the same; finished tasks pile up on the queue and are archived as the
//! store always does.
//!
//! Criterion reports, per board, `claim/<pending>`, `floor/<pending>` (appends of the size of
//! that board's median claim) and `cold claim/<pending>` (a claim through a freshly opened
//! handle: `Board::open` + `claim`). Then the targets, from rounds of one cycle on each board
//! in turn (so slow periods of the shared disk hit every backlog alike): claim p50 against
//! floor p50 over the same cycles, claim p50 at the largest backlog against the smallest, and
//! the bytes a claim writes (over every claim of the run, occasional checkpoints included).
//! Then 4,000 cycles back to back on each board: every byte the process wrote over them
//! (records, log lines, instruction files, and the checkpoints the changes made due) per
//! change, which is what a board under steady work writes per change.
//!
//! Then a breakdown: more rounds with a `tracing` subscriber that records whatever spans the
//! store opens (today `write` > `lock`, `load`, `apply`, `commit`, `unlock`, `instructions`,
//! and below them; the bench knows no span name), so the time of each step comes from the
//! code that runs.
//!
//! Run with `cargo bench --bench claim` (about two minutes with building the boards). Without
//! `--bench` (as under `cargo test --benches`) every benchmark runs once on small boards, as a
//! check. docs/benchmark-method.md says more.

mod common;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use agentvine::{Board, ClaimedTask, Settings};
use common::{
    AppendFloor, Built, ME, R, build_board_with, loadavg, machine, mean, met, new_task, pct,
    result_of, sizes_from_env, us, written,
};
use criterion::{BenchmarkId, Criterion, SamplingMode};
use tracing::Subscriber;
use tracing::span::{Attributes, Id};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::{LookupSpan, Registry};

/// Backlogs (pending tasks) measured by default.
const PENDING: [usize; 3] = [10, 1_000, 10_000];
/// Backlogs of the quick check (without `--bench`).
const QUICK_PENDING: [usize; 2] = [10, 100];
/// The environment variable that chooses other backlogs.
const PENDING_ENV: &str = "AGENTVINE_BENCH_PENDING";
/// Tasks added, claimed and completed on each board before the measurement.
const HISTORY: usize = 1_000;
/// Rounds the targets are read from.
const ROUNDS: usize = 201;
/// Breakdown rounds.
const BREAKDOWN_ROUNDS: usize = 101;
/// The targets.
const CLAIM_OVER_FLOOR: f64 = 1.2;
const LARGEST_OVER_SMALLEST: f64 = 1.3;
const BYTES_PER_CLAIM: f64 = 4096.0;

/// Cycles run back to back on one board: what the process wrote over them.
struct Sustained {
    pending: usize,
    cycles: usize,
    secs: f64,
    bytes: u64,
}

impl Sustained {
    /// Bytes per change (each cycle makes three: claim, complete, add).
    fn per_change(&self) -> f64 {
        self.bytes as f64 / (3 * self.cycles.max(1)) as f64
    }
}

/// Cycles back to back per board for the sustained bytes: at 10,000 pending the journal
/// reaches the files' size (the checkpoint's trigger) about every 1,500 cycles.
const SUSTAINED_CYCLES: usize = 4_000;

/// One cycle's figures.
struct Cycle {
    claim: Duration,
    floor: Duration,
}

/// A board being measured, with the one handle all its ops go through.
struct LatencyBoard {
    pending: usize,
    dir: PathBuf,
    built: Built,
    board: Board,
    floor: AppendFloor,
    /// Number of the next task added to keep the backlog.
    next_task: u64,
    /// Bytes written by every claim on this board (warm, cold, traced; all phases).
    claim_bytes: Vec<f64>,
    /// Bytes written by the complete + add of every cycle.
    rest_bytes: Vec<f64>,
    /// The rounds' claims (µs) and the floor right after each, in the same cycle.
    claims: Vec<f64>,
    floors: Vec<f64>,
    /// Claims through a freshly opened handle (µs), criterion's included.
    cold: Vec<f64>,
}

impl LatencyBoard {
    fn new(root: &Path, pending: usize, history: usize) -> R<Self> {
        let dir = root.join(format!("board-{pending}"));
        let built = build_board_with(&dir, history, pending, &Settings::default())?;
        eprintln!(
            "board {pending}: built in {:.1}s (queue: {} finished + {} pending, archive: {})",
            built.secs, built.queue_finished, built.pending, built.archived
        );
        Ok(LatencyBoard {
            pending,
            board: Board::open(&dir)?,
            floor: AppendFloor::open(&dir)?,
            dir,
            built,
            next_task: 10_000_000,
            claim_bytes: Vec::new(),
            rest_bytes: Vec::new(),
            claims: Vec::new(),
            floors: Vec::new(),
            cold: Vec::new(),
        })
    }

    /// One cycle through the long-lived handle: claim (timed, its bytes counted; inside
    /// `trace`'s subscriber when given), the floor on that many bytes (timed), complete and
    /// add.
    fn cycle(&mut self, trace: Option<&tracing::Dispatch>) -> R<Cycle> {
        let before = written()?;
        let t = Instant::now();
        let c = match trace {
            Some(d) => tracing::dispatcher::with_default(d, || self.board.claim(ME)),
            None => self.board.claim(ME),
        }?
        .ok_or("the backlog ran dry")?;
        let claim = t.elapsed();
        let bytes = written()?.saturating_sub(before);
        let floor = self.floor.append(bytes)?;
        self.claim_bytes.push(bytes as f64);
        self.finish(&c)?;
        Ok(Cycle { claim, floor })
    }

    /// A claim through a freshly opened handle (what each `vine` process pays inside the
    /// library: opening the board and reading it), then complete and add.
    fn cold_cycle(&mut self) -> R<Duration> {
        let before = written()?;
        let t = Instant::now();
        let c = Board::open(&self.dir)?
            .claim(ME)?
            .ok_or("the backlog ran dry")?;
        let cold = t.elapsed();
        self.claim_bytes
            .push(written()?.saturating_sub(before) as f64);
        self.cold.push(us(cold));
        self.finish(&c)?;
        Ok(cold)
    }

    /// Completes the claimed task and adds a new one, so the backlog stays the same; counts
    /// the bytes both wrote.
    fn finish(&mut self, c: &ClaimedTask) -> R<()> {
        if c.instructions.is_none() {
            return Err(format!("claimed task {} came without instructions", c.task.id).into());
        }
        let before = written()?;
        self.board
            .complete(c.task.id, ME, Some(result_of(c.task.id)))?;
        self.next_task += 1;
        self.board.add(new_task(self.next_task))?;
        self.rest_bytes
            .push(written()?.saturating_sub(before) as f64);
        Ok(())
    }

    /// `n` cycles back to back (claim, complete, add) with nothing else between them: every
    /// byte the process wrote meanwhile (records, log lines, instruction files and the
    /// checkpoints the changes made due) and the time taken.
    fn sustained(&mut self, n: usize) -> R<Sustained> {
        let before = written()?;
        let t = Instant::now();
        for _ in 0..n {
            let c = self.board.claim(ME)?.ok_or("the backlog ran dry")?;
            self.board
                .complete(c.task.id, ME, Some(result_of(c.task.id)))?;
            self.next_task += 1;
            self.board.add(new_task(self.next_task))?;
        }
        Ok(Sustained {
            pending: self.pending,
            cycles: n,
            secs: t.elapsed().as_secs_f64(),
            bytes: written()?.saturating_sub(before),
        })
    }

    /// The median bytes of this board's claims so far (what the criterion floor appends).
    fn claim_size(&self) -> u64 {
        let p = pct(&self.claim_bytes, 0.5);
        if p.is_finite() { p as u64 } else { 1 }
    }
}

fn main() -> R<()> {
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let root = tempfile::Builder::new()
        .prefix("agentvine-bench-")
        .tempdir_in("/tmp")?;
    let machine = machine(root.path());
    let backlogs = sizes_from_env(
        PENDING_ENV,
        if benchmarking {
            &PENDING
        } else {
            &QUICK_PENDING
        },
    )?;
    let history = if benchmarking { HISTORY } else { 100 };
    let boards: Vec<LatencyBoard> = backlogs
        .iter()
        .map(|&p| LatencyBoard::new(root.path(), p, history))
        .collect::<R<_>>()?;
    let boards: Vec<RefCell<LatencyBoard>> = boards.into_iter().map(RefCell::new).collect();

    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20)
        .configure_from_args();
    // Iterations of a millisecond or more: every sample has the same count (flat sampling).
    // Each benchmark runs whole cycles on one board and counts one part of them.
    let cycles = |b: &RefCell<LatencyBoard>, iters: u64, pick: fn(&Cycle) -> Duration| {
        let mut b = b.borrow_mut();
        let pending = b.pending;
        (0..iters)
            .map(|_| {
                b.cycle(None)
                    .map(|c| pick(&c))
                    .unwrap_or_else(|e| panic!("board {pending}: {e}"))
            })
            .sum::<Duration>()
    };
    {
        let mut g = c.benchmark_group("claim");
        g.sampling_mode(SamplingMode::Flat);
        for b in &boards {
            let p = b.borrow().pending;
            g.bench_function(BenchmarkId::from_parameter(p), |bench| {
                bench.iter_custom(|iters| cycles(b, iters, |c| c.claim))
            });
        }
        g.finish();
    }
    {
        // Appends alone, of the size of the board's median claim so far.
        let mut g = c.benchmark_group("floor");
        g.sampling_mode(SamplingMode::Flat);
        for b in &boards {
            let (p, size) = {
                let b = b.borrow();
                (b.pending, b.claim_size())
            };
            eprintln!("floor/{p}: appends of {size} bytes + fdatasync");
            g.bench_function(BenchmarkId::from_parameter(p), |bench| {
                bench.iter_custom(|iters| {
                    let mut b = b.borrow_mut();
                    (0..iters)
                        .map(|_| {
                            b.floor
                                .append(size)
                                .unwrap_or_else(|e| panic!("floor {p}: {e}"))
                        })
                        .sum::<Duration>()
                })
            });
        }
        g.finish();
    }
    {
        let mut g = c.benchmark_group("cold claim");
        g.sampling_mode(SamplingMode::Flat);
        for b in &boards {
            let p = b.borrow().pending;
            g.bench_function(BenchmarkId::from_parameter(p), |bench| {
                bench.iter_custom(|iters| {
                    let mut b = b.borrow_mut();
                    (0..iters)
                        .map(|_| {
                            b.cold_cycle()
                                .unwrap_or_else(|e| panic!("cold claim {p}: {e}"))
                        })
                        .sum::<Duration>()
                })
            });
        }
        g.finish();
    }
    c.final_summary();

    let mut boards: Vec<LatencyBoard> = boards.into_iter().map(RefCell::into_inner).collect();
    let rounds = if benchmarking { ROUNDS } else { 3 };
    eprintln!("{rounds} rounds, one cycle on each board in turn");
    for _ in 0..rounds {
        for b in boards.iter_mut() {
            let c = b.cycle(None)?;
            b.claims.push(us(c.claim));
            b.floors.push(us(c.floor));
        }
    }
    let breakdown_rounds = if benchmarking { BREAKDOWN_ROUNDS } else { 3 };
    eprintln!("{breakdown_rounds} rounds with the store's spans traced");
    let breakdown = breakdown(&mut boards, breakdown_rounds)?;
    let n = if benchmarking { SUSTAINED_CYCLES } else { 20 };
    eprintln!("{n} cycles back to back on each board");
    let sustained: Vec<Sustained> = boards
        .iter_mut()
        .map(|b| b.sustained(n))
        .collect::<R<_>>()?;
    println!();
    println!("agentvine claim benchmark (each board with history {history})");
    for m in &machine {
        println!("  {m}");
    }
    println!("  load average at end: {}", loadavg());
    report_targets(&boards, rounds);
    report_sustained(&sustained);
    breakdown.report(&boards);
    Ok(())
}

/// The targets, from the rounds (every board measured in every round): the claim and the
/// floor of the same cycles; the bytes from every claim of the run.
fn report_targets(boards: &[LatencyBoard], rounds: usize) {
    println!();
    println!(
        "Board::claim through one long-lived handle vs the floor right after it (append + fdatasync of the bytes the claim wrote), {rounds} rounds, us"
    );
    println!(
        "{:>8} {:>28} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9} {:>9}",
        "pending",
        "built: queue + archive",
        "floor50",
        "claim50",
        "claim90",
        "claim99",
        "c/f p50",
        "c-f p50",
        "cold50"
    );
    for b in boards {
        let paired: Vec<f64> = b.claims.iter().zip(&b.floors).map(|(c, f)| c - f).collect();
        println!(
            "{:>8} {:>28} {:>8.0} {:>8.0} {:>8.0} {:>8.0} {:>8.3}x {:>9.0} {:>9.0}",
            b.pending,
            format!(
                "{} + {} pending, {}",
                b.built.queue_finished, b.built.pending, b.built.archived
            ),
            pct(&b.floors, 0.5),
            pct(&b.claims, 0.5),
            pct(&b.claims, 0.9),
            pct(&b.claims, 0.99),
            pct(&b.claims, 0.5) / pct(&b.floors, 0.5),
            pct(&paired, 0.5),
            pct(&b.cold, 0.5),
        );
    }
    println!("   c-f p50: the median over the rounds of (claim - floor) in the same cycle");
    println!("   cold50: Board::open + claim (criterion's cold claims)");
    println!();
    println!(
        "Bytes written per claim (wchar of /proc/self/io around the claim), every claim of the run"
    );
    println!(
        "{:>8} {:>8} {:>10} {:>10} {:>10} {:>12} {:>18}",
        "pending", "claims", "p50", "mean", "max", "> 4 KiB", "complete+add mean"
    );
    for b in boards {
        let over = b
            .claim_bytes
            .iter()
            .filter(|&&x| x > BYTES_PER_CLAIM)
            .count();
        println!(
            "{:>8} {:>8} {:>10.0} {:>10.0} {:>10.0} {:>12} {:>18.0}",
            b.pending,
            b.claim_bytes.len(),
            pct(&b.claim_bytes, 0.5),
            mean(&b.claim_bytes),
            pct(&b.claim_bytes, 1.0),
            over,
            mean(&b.rest_bytes),
        );
    }
    println!(
        "   every byte the process handed to write() during the claim, on any thread (a checkpoint written by another thread of the process at that moment counts)"
    );
    println!("   targets:");
    for b in boards {
        let ratio = pct(&b.claims, 0.5) / pct(&b.floors, 0.5);
        println!(
            "     pending {:>6}: claim p50 / floor p50 = {ratio:.3}x (target <= {CLAIM_OVER_FLOOR}x): {}",
            b.pending,
            met(ratio <= CLAIM_OVER_FLOOR)
        );
    }
    if let (Some(small), Some(large)) = (
        boards.iter().min_by_key(|b| b.pending),
        boards.iter().max_by_key(|b| b.pending),
    ) && boards.len() > 1
    {
        let ratio = pct(&large.claims, 0.5) / pct(&small.claims, 0.5);
        println!(
            "     claim p50 at {} pending / at {} pending = {ratio:.3}x (target <= {LARGEST_OVER_SMALLEST}x): {}",
            large.pending,
            small.pending,
            met(ratio <= LARGEST_OVER_SMALLEST)
        );
    }
    for b in boards {
        let (p50, avg) = (pct(&b.claim_bytes, 0.5), mean(&b.claim_bytes));
        println!(
            "     pending {:>6}: bytes per claim p50 {p50:.0}, mean {avg:.0} (target <= {BYTES_PER_CLAIM:.0}, both): {}",
            b.pending,
            met(p50 <= BYTES_PER_CLAIM && avg <= BYTES_PER_CLAIM)
        );
    }
}

/// Bytes per change over cycles run back to back, checkpoints included.
fn report_sustained(runs: &[Sustained]) {
    println!();
    println!(
        "Bytes written per change, sustained: cycles back to back (claim, complete, add: three changes each), every byte the process wrote over them, checkpoints included"
    );
    println!(
        "{:>8} {:>8} {:>8} {:>10} {:>14} {:>14}",
        "pending", "cycles", "s", "cycles/s", "bytes/cycle", "bytes/change"
    );
    for r in runs {
        println!(
            "{:>8} {:>8} {:>8.1} {:>10.0} {:>14.0} {:>14.0}",
            r.pending,
            r.cycles,
            r.secs,
            r.cycles as f64 / r.secs.max(1e-9),
            r.bytes as f64 / r.cycles.max(1) as f64,
            r.per_change()
        );
    }
    println!("   targets:");
    for r in runs {
        println!(
            "     pending {:>6}: bytes per change, sustained, {:.0} (target <= {BYTES_PER_CLAIM:.0}): {}",
            r.pending,
            r.per_change(),
            met(r.per_change() <= BYTES_PER_CLAIM)
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
            print!(" {:>15}", format!("p={}", b.pending));
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
        row("the floor (append + fdatasync of its bytes)", &|i| {
            self.floors[i].clone()
        });
        row("claim beyond the floor (whole - floor)", &|i| {
            self.claims[i]
                .iter()
                .zip(&self.floors[i])
                .map(|(c, f)| c - f)
                .collect()
        });
    }
}

/// `rounds` rounds, one cycle on each board in turn, each claim traced with [`SpanTimes`].
fn breakdown(boards: &mut [LatencyBoard], rounds: usize) -> R<Breakdown> {
    let times = SpanTimes::default();
    let dispatch = tracing::Dispatch::new(Registry::default().with(times.clone()));
    let mut out = Breakdown {
        order: Vec::new(),
        spans: vec![BTreeMap::new(); boards.len()],
        claims: vec![Vec::new(); boards.len()],
        floors: vec![Vec::new(); boards.len()],
    };
    for n in 0..rounds {
        for (i, b) in boards.iter_mut().enumerate() {
            let cycle = b.cycle(Some(&dispatch))?;
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
            out.claims[i].push(us(cycle.claim));
            out.floors[i].push(us(cycle.floor));
        }
    }
    Ok(out)
}
