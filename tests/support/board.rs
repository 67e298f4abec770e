//! A board in a temporary directory, driven through the `vine` command line, and snapshots of
//! its files to prove a command left it untouched.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use serde_json::Value;
use tempfile::TempDir;

use super::command::{Run, assert_error, one_object, run_cmd, vine};
use super::files::parse_lines;

/// The queue file of a board.
pub const QUEUE: &str = "task-queue.json";
/// The worker status file.
pub const WORKERS: &str = "worker-status.json";
/// The message log.
pub const LOG: &str = "agent-comms.jsonl";
/// The archive of finished tasks.
pub const ARCHIVE: &str = "task-archive.jsonl";
/// The board's settings file.
pub const BOARD_FILE: &str = "board.json";
/// The progress file.
pub const PROGRESS: &str = "progress.json";

/// A board in a temporary directory (`<tmp>/board`); the rest of `<tmp>` holds test inputs.
pub struct TestBoard {
    pub tmp: TempDir,
    pub dir: PathBuf,
}

impl TestBoard {
    /// A board made by `vine init`.
    pub fn new() -> Self {
        Self::with_init(&[])
    }

    /// A board made by `vine init <dir> ARGS`.
    pub fn with_init(args: &[&str]) -> Self {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().join("board");
        let r = run_cmd(vine().arg("init").arg(&dir).args(args));
        assert_eq!(r.code, 0, "vine init failed: {r:?}");
        TestBoard { tmp, dir }
    }

    /// An empty board directory (for boards the original plan wrote by hand).
    pub fn bare() -> Self {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().join("board");
        fs::create_dir_all(&dir).unwrap();
        TestBoard { tmp, dir }
    }

    /// `vine --dir <board> ARGS`.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = vine();
        c.arg("--dir").arg(&self.dir).args(args);
        c
    }

    pub fn run(&self, args: &[&str]) -> Run {
        run_cmd(&mut self.cmd(args))
    }

    /// Runs with `--json`; returns the exit code and the one JSON object.
    pub fn json(&self, args: &[&str]) -> (i32, Value) {
        let r = run_cmd(self.cmd(args).arg("--json"));
        let v = one_object(&r);
        (r.code, v)
    }

    /// Runs with `--json` and checks the exit code.
    pub fn expect(&self, code: i32, args: &[&str]) -> Value {
        let (c, v) = self.json(args);
        assert_eq!(c, code, "vine {args:?} exited {c}, expected {code}: {v}");
        v
    }

    pub fn ok(&self, args: &[&str]) -> Value {
        self.expect(0, args)
    }

    /// Runs in text mode expecting failure with `code`: nothing on stdout, `vine: ...` on
    /// stderr. Returns stderr.
    pub fn fails(&self, code: i32, args: &[&str]) -> String {
        let r = self.run(args);
        assert_error(&r, code, &format!("vine {args:?}"));
        r.stderr
    }

    /// Adds a task; returns its id.
    pub fn add(&self, description: &str, extra: &[&str]) -> u64 {
        let mut args = vec!["add", description];
        args.extend_from_slice(extra);
        let v = self.ok(&args);
        let tasks = v["tasks"].as_array().expect("added tasks");
        assert_eq!(tasks.len(), 1, "{v}");
        assert_eq!(tasks[0]["description"], description);
        tasks[0]["id"].as_u64().expect("task id")
    }

    /// Claims for `worker`, expecting a claim; returns the claimed task.
    pub fn claim(&self, worker: &str) -> Value {
        let v = self.ok(&["claim", "--worker", worker]);
        let t = v["claim"]["task"].clone();
        assert_eq!(t["status"], "in_progress", "{v}");
        assert_eq!(t["claimed_by"], worker, "{v}");
        t
    }

    /// Claims for `worker`, expecting nothing claimable (exit 3); returns the reason.
    pub fn claim_nothing(&self, worker: &str) -> String {
        let v = self.expect(3, &["claim", "--worker", worker]);
        assert!(v["claim"].is_null(), "{v}");
        v["reason"].as_str().expect("a reason").to_string()
    }

    pub fn show(&self, id: u64) -> Value {
        self.ok(&["show", &id.to_string()])["task"].clone()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn read(&self, name: &str) -> Vec<u8> {
        fs::read(self.path(name)).unwrap_or_else(|e| panic!("reading {name}: {e}"))
    }

    pub fn write(&self, name: &str, bytes: impl AsRef<[u8]>) {
        fs::write(self.path(name), bytes).unwrap();
    }

    /// The queue file, parsed.
    pub fn queue(&self) -> Vec<Value> {
        serde_json::from_slice::<Vec<Value>>(&self.read(QUEUE)).expect("the queue parses")
    }

    pub fn queue_ids(&self) -> Vec<u64> {
        self.queue()
            .iter()
            .map(|t| t["id"].as_u64().unwrap())
            .collect()
    }

    /// Every non-blank line of a JSON-lines file, parsed (none if it cannot be read).
    pub fn lines(&self, name: &str) -> Vec<Value> {
        let text = fs::read_to_string(self.path(name)).unwrap_or_default();
        parse_lines(&text, name)
    }

    /// Every file and folder under the board with its bytes.
    pub fn snapshot(&self) -> BTreeMap<String, Vec<u8>> {
        fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
            for e in fs::read_dir(dir).unwrap() {
                let e = e.unwrap();
                let p = e.path();
                let rel = p.strip_prefix(root).unwrap().display().to_string();
                if e.file_type().unwrap().is_dir() {
                    out.insert(format!("{rel}/"), Vec::new());
                    walk(root, &p, out);
                } else {
                    out.insert(rel, fs::read(&p).unwrap_or_default());
                }
            }
        }
        let mut out = BTreeMap::new();
        walk(&self.dir, &self.dir, &mut out);
        out
    }

    /// Changes one setting in `board.json`.
    pub fn set_setting(&self, key: &str, value: Value) {
        let mut b: Value = serde_json::from_slice(&self.read(BOARD_FILE)).unwrap();
        b["settings"][key] = value;
        self.write(BOARD_FILE, serde_json::to_vec_pretty(&b).unwrap());
    }

    /// Writes a file next to the board (not on it) and returns its path.
    pub fn outside(&self, name: &str, text: &str) -> PathBuf {
        let p = self.tmp.path().join(name);
        fs::write(&p, text).unwrap();
        p
    }
}

/// The names whose bytes differ between two snapshots (or that only one has).
pub fn diff_keys(a: &BTreeMap<String, Vec<u8>>, b: &BTreeMap<String, Vec<u8>>) -> Vec<String> {
    let mut keys: Vec<String> = a.keys().chain(b.keys()).cloned().collect();
    keys.sort();
    keys.dedup();
    keys.into_iter().filter(|k| a.get(k) != b.get(k)).collect()
}

/// Asserts that `board` is still byte for byte what `before` (its [`TestBoard::snapshot`]) was.
pub fn assert_unchanged(before: &BTreeMap<String, Vec<u8>>, board: &TestBoard, what: &str) {
    let after = board.snapshot();
    assert!(
        before == &after,
        "{what} changed the board: {:?}",
        diff_keys(before, &after)
    );
}

/// The ids of a JSON list of tasks.
pub fn ids_of(tasks: &Value) -> Vec<u64> {
    tasks
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {tasks}"))
        .iter()
        .map(|t| t["id"].as_u64().unwrap())
        .collect()
}
