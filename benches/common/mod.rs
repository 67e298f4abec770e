//! What the benchmarks share: realistic tasks, boards built with a history and a backlog
//! through the library's own group commit, the floor (one append + fdatasync of a claim-sized
//! record), the bytes a process has written, the `vine` binary and numbers; and the tests'
//! throwaway PostgreSQL cluster ([`pg`], the same file as `tests/support/pg.rs`).
//!
//! Each bench compiles this module on its own and uses only part of it.
#![allow(dead_code)]

/// A throwaway PostgreSQL cluster (`initdb`, `pg_ctl` in a temporary directory).
#[path = "../../tests/support/pg.rs"]
pub mod pg;

use std::collections::VecDeque;
use std::error::Error;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use agentvine::op::{self, NewTask, Op, PlanTask, Reply};
use agentvine::store::local::LocalStore;
use agentvine::{Board, Settings};
use serde_json::{Map, Value};

/// Errors of a bench: anything, with its message.
pub type R<T> = Result<T, Box<dyn Error>>;

/// Pending tasks kept on a board while it is measured.
pub const POOL: usize = 50;
/// Workers the history is spread over (they stay in `worker-status.json`).
pub const HISTORY_WORKERS: usize = 4;
/// The worker whose claims are measured (one of the history workers).
pub const ME: &str = "worker-1";
/// The instruction file that history tasks and throughput tasks share (board-relative).
pub const SHARED_INSTRUCTIONS: &str = "tasks/bench-shared-instructions.md";
/// Claim+complete pairs per group commit while a history is built.
const HISTORY_BATCH: usize = 50;

/// A realistic task as a coordinator adds it: description, about 700 bytes of instructions
/// (written to `tasks/task-<id>-instructions.md` by the add), two context files and two
/// metadata fields. On the queue it is one line of 530 to 640 bytes.
pub fn new_task(n: u64) -> NewTask {
    let mut metadata = Map::new();
    metadata.insert(
        "working_directory".into(),
        Value::String(format!("src/module_{n}")),
    );
    metadata.insert(
        "acceptance".into(),
        Value::String("cargo test passes; no new warnings".into()),
    );
    NewTask {
        description: format!("Implement module {n}: the endpoint, its tests and its docs"),
        instructions: Some(instructions_text(n)),
        context_files: vec!["docs/api-spec.md".into(), format!("src/module_{n}/mod.rs")],
        metadata,
        ..NewTask::default()
    }
}

/// The same task pointing at the shared instruction file instead of writing its own (an add
/// then writes no file, so a history of 100,000 tasks builds in seconds).
pub fn shared_task(n: u64) -> PlanTask {
    let mut t = new_task(n);
    t.instructions = None;
    t.instruction_file = Some(SHARED_INSTRUCTIONS.into());
    PlanTask {
        task: t,
        ..PlanTask::default()
    }
}

/// About 700 bytes of instructions.
pub fn instructions_text(n: u64) -> String {
    format!(
        "# Module {n}\n\n\
         Implement the endpoint described in docs/api-spec.md, section {n}.\n\n\
         1. Read docs/api-spec.md and the existing handlers in src/.\n\
         2. Add the handler in src/module_{n}/mod.rs; validate every input field.\n\
         3. Write unit tests for the happy path and for each validation error.\n\
         4. Document the endpoint in docs/endpoints.md (request, response, errors).\n\
         5. Run `cargo test` and `cargo clippy -- -D warnings`; both must pass.\n\n\
         When done, complete the task with a one-line summary of what changed and the number\n\
         of tests added. If the spec is unclear, ask the coordinator with `vine ask` instead of\n\
         guessing, and keep working on the parts that are clear while you wait.\n"
    )
}

/// The result a worker sends when it completes task `id`.
pub fn result_of(id: u64) -> Value {
    Value::String(format!(
        "Done: task {id} implemented, 12 tests added, docs updated"
    ))
}

/// What a built board holds.
#[derive(Debug, Default, Clone, Copy)]
pub struct Built {
    /// Finished tasks still on the queue.
    pub queue_finished: usize,
    /// Pending tasks (the pool).
    pub pending: usize,
    /// Tasks in the archive.
    pub archived: usize,
    /// Seconds the build took.
    pub secs: f64,
}

/// Builds a board in `dir` that has seen `history` tasks added, claimed and completed, with
/// `POOL` tasks pending: [`build_board_with`] with a backlog of `POOL`.
pub fn build_board(dir: &Path, history: usize, settings: &Settings) -> R<Built> {
    build_board_with(dir, history, POOL, settings)
}

/// Pending tasks per add-plan when a backlog is built.
const BACKLOG_PLAN: usize = 1_000;

/// Builds a board in `dir` that has seen `history` tasks added, claimed and completed, with
/// `pending` tasks pending, through the library itself: `LocalStore::execute_batch` applies
/// up to `HISTORY_BATCH` claim + complete pairs (by `worker-1` to `worker-4` in turn, from a
/// pool of at most `POOL` pending tasks) and one add-plan of as many new tasks per group
/// commit, and the store archives finished tasks as it always does (a history longer than
/// `archive_after` is archived at every commit); then add-plans of up to 1,000 tasks bring the
/// pool up to `pending`. History and backlog tasks share one instruction file; only the tasks
/// added while measuring write their own.
pub fn build_board_with(
    dir: &Path,
    history: usize,
    pending: usize,
    settings: &Settings,
) -> R<Built> {
    let t = Instant::now();
    let pool = pending.min(POOL);
    // A longer history is built with every commit archiving what it finished (a queue of 50
    // to 100 tasks takes half the CPU time of one of up to 300, and the store clones it for
    // every op of a batch); the board gets its own settings back at the end.
    let archive_every_commit = history > settings.archive_after;
    Board::init_with(
        dir,
        Settings {
            archive_after: if archive_every_commit {
                0
            } else {
                settings.archive_after
            },
            ..settings.clone()
        },
    )?;
    fs::write(dir.join(SHARED_INSTRUCTIONS), instructions_text(0))?;
    let store = LocalStore::open(dir)?;
    let mut n = 0u64;
    let mut plan = |count: usize| -> Op {
        let tasks = (0..count)
            .map(|_| {
                n += 1;
                shared_task(n)
            })
            .collect();
        Op::AddPlan(op::AddPlan { tasks })
    };
    let mut queued: VecDeque<u64> = if pool > 0 {
        added(one(store.execute_batch(vec![(plan(pool), None)]))?)?
    } else {
        VecDeque::new()
    };
    let mut done = 0;
    while done < history {
        let k = HISTORY_BATCH.min(pool).min(history - done);
        if k == 0 {
            return Err("a history needs at least one pending task".into());
        }
        let mut ops = Vec::with_capacity(2 * k + 1);
        let mut expected = Vec::with_capacity(k);
        for j in 0..k {
            let worker = format!("worker-{}", (done + j) % HISTORY_WORKERS + 1);
            // A claim takes the oldest pending task (all have the same priority).
            let id = queued.pop_front().ok_or("the pool ran dry")?;
            expected.push(id);
            ops.push((
                Op::Claim(op::Claim {
                    worker: worker.clone(),
                }),
                None,
            ));
            ops.push((
                Op::Complete(op::Complete {
                    task: id,
                    worker,
                    attempt: None,
                    result: Some(result_of(id)),
                }),
                None,
            ));
        }
        ops.push((plan(k), None));
        let mut replies = store.execute_batch(ops).into_iter();
        for id in expected {
            match replies.next().ok_or("missing reply")?? {
                Reply::Claimed { claim: Some(c), .. } if c.task.id == id => {}
                other => return Err(format!("history claim of {id} got {other:?}").into()),
            }
            replies.next().ok_or("missing reply")??;
        }
        queued.extend(added(replies.next().ok_or("missing reply")??)?);
        done += k;
    }
    let mut left = pending - pool;
    while left > 0 {
        let k = BACKLOG_PLAN.min(left);
        added(one(store.execute_batch(vec![(plan(k), None)]))?)?;
        left -= k;
    }
    if archive_every_commit {
        Board::init_with(dir, settings.clone())?;
    }
    let status = Board::open(dir)?.status()?;
    if status.completed != history || status.pending != pending || status.in_progress != 0 {
        return Err(format!("built board is off: {status:?}").into());
    }
    Ok(Built {
        queue_finished: status.completed - status.archived,
        pending: status.pending,
        archived: status.archived,
        secs: t.elapsed().as_secs_f64(),
    })
}

fn one(mut replies: Vec<agentvine::Result<Reply>>) -> R<Reply> {
    Ok(replies.pop().ok_or("no reply")??)
}

fn added(reply: Reply) -> R<VecDeque<u64>> {
    match reply {
        Reply::Added { tasks } => Ok(tasks.iter().map(|t| t.id).collect()),
        other => Err(format!("add-plan got {other:?}").into()),
    }
}

/// The floor's file: in the board directory, next to the board's own files (the store never
/// reads it), so that the floor and the claim write to the same file system and directory.
pub const FLOOR_FILE: &str = "bench-floor.log";

/// The floor file is emptied (untimed) once it holds this much, so that a long run on a board
/// whose claims write megabytes does not fill the disk.
const FLOOR_LIMIT: u64 = 64 << 20;

/// The floor: the least a durable change can cost when it is one record appended to a log.
/// A file opened once with `O_APPEND` in the board directory; each [`AppendFloor::append`] is
/// one `write` of N bytes and one `fdatasync` (`File::sync_data`), nothing else.
pub struct AppendFloor {
    file: File,
    /// Bytes appended since the file was last emptied.
    len: u64,
    /// The record: N bytes of text ending in a newline, reused.
    record: Vec<u8>,
}

impl AppendFloor {
    /// Opens (creates, empties) `FLOOR_FILE` in `dir` for appending.
    pub fn open(dir: &Path) -> R<AppendFloor> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(FLOOR_FILE))?;
        file.set_len(0)?;
        file.sync_all()?;
        Ok(AppendFloor {
            file,
            len: 0,
            record: Vec::new(),
        })
    }

    /// Appends a record of `n` bytes (at least 1) and waits for `fdatasync`; returns the time
    /// of the write and the sync. When the file has grown past its limit it is emptied first,
    /// outside the timed part.
    pub fn append(&mut self, n: u64) -> R<Duration> {
        let n = n.max(1) as usize;
        if self.len >= FLOOR_LIMIT {
            self.file.set_len(0)?;
            self.file.sync_all()?;
            self.len = 0;
        }
        if self.record.len() != n {
            self.record = vec![b'x'; n];
            self.record[n - 1] = b'\n';
        }
        let t = Instant::now();
        self.file.write_all(&self.record)?;
        self.file.sync_data()?;
        let took = t.elapsed();
        self.len += n as u64;
        Ok(took)
    }
}

/// Bytes this process has passed to `write` and similar calls so far (`wchar` in
/// `/proc/self/io`), to every file, pipe and socket, from every thread.
pub fn written() -> R<u64> {
    let io = fs::read_to_string("/proc/self/io")?;
    io.lines()
        .find_map(|l| l.strip_prefix("wchar:"))
        .ok_or("/proc/self/io has no wchar line")?
        .trim()
        .parse()
        .map_err(Into::into)
}

/// The `vine` binary Cargo built for the bench (`cargo bench` builds the package's binaries
/// and sets `CARGO_BIN_EXE_vine`); falls back to target/release/vine, building it if missing.
pub fn vine_binary() -> R<PathBuf> {
    if let Some(p) = option_env!("CARGO_BIN_EXE_vine") {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(p);
        }
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let p = manifest.join("target/release/vine");
    if !p.is_file() {
        let ok = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "--release", "--bin", "vine"])
            .current_dir(manifest)
            .status()?
            .success();
        if !ok {
            return Err("cargo build --release --bin vine failed".into());
        }
    }
    Ok(p)
}

/// Microseconds.
pub fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// The `q` quantile by nearest rank (NaN for no samples).
pub fn pct(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len());
    s[rank - 1]
}

/// The mean (NaN for no samples).
pub fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// The 1-, 5- and 15-minute load averages.
pub fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// "MET" or "NOT MET".
pub fn met(ok: bool) -> &'static str {
    if ok { "MET" } else { "NOT MET" }
}

/// Sizes to measure from the environment variable `var` (`10,1000`), else `default`.
pub fn sizes_from_env(var: &str, default: &[usize]) -> R<Vec<usize>> {
    match std::env::var(var) {
        Ok(v) => {
            let sizes: Vec<usize> = v
                .split(',')
                .map(|h| h.trim().parse())
                .collect::<Result<_, _>>()
                .map_err(|e| format!("{var}={v:?}: {e}"))?;
            if sizes.is_empty() {
                return Err(format!("{var} is empty").into());
            }
            Ok(sizes)
        }
        Err(_) => Ok(default.to_vec()),
    }
}

/// CPUs, kernel and the file system the boards are on, one line each.
pub fn machine(dir: &Path) -> Vec<String> {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into());
    let df = Command::new("df")
        .arg("-T")
        .arg(dir)
        .output()
        .ok()
        .and_then(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            text.lines().nth(1).map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                format!("{} {}", f.first().unwrap_or(&"?"), f.get(1).unwrap_or(&"?"))
            })
        })
        .unwrap_or_else(|| "?".into());
    vec![
        format!("cpus: {cpus}; kernel {kernel}"),
        format!("boards on: {df} ({})", dir.display()),
        format!("load average at start: {}", loadavg()),
    ]
}
