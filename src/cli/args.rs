//! The command line of `vine`, as clap types. `vine --help` and `vine <command> --help` are
//! generated from the doc comments here. Values are parsed here too (durations, times,
//! addresses, priorities, statuses, roles), so a bad one is a usage error naming its flag.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use agentvine::claude::Role;
use agentvine::time::{Timestamp, parse_duration, parse_timestamp};
use agentvine::{Priority, StatusFilter};
use clap::{Args, Parser, Subcommand};

const EXIT_CODES: &str = "\
Exit codes:
  0  done
  1  anything else (I/O error, unexpected failure)
  2  bad usage or invalid input (unknown task id, bad worker id, bad path...)
  3  nothing to do: no claimable task, the worker should stop, a wait timed out
  4  conflict: not your task, wrong state, claim taken back
  5  a board file is damaged: nothing was changed (reads show what they can); run `vine repair`
  6  the server cannot be reached (after retries)
  7  the server refused the API key
  8  the server refused a path (outside its base directory)
  9  the board's database was made by a newer vine (its schema is newer): upgrade vine

Board location: --url URL or $VINE_URL for a board on a server (vine serve; several servers
of one board, comma-separated, are tried in turn when one cannot be reached), else --dir DIR,
else $VINE_DIR, else the nearest .vine/ at or above the current directory (`vine init`
creates .vine/). Every command takes --json and then prints exactly one
JSON object on stdout (\"ok\": true or false).";

/// vine: share work between Claude Code sessions through a board of JSON files.
///
/// A coordinator adds tasks with self-contained instructions; workers register, claim a task
/// atomically, heartbeat while they work, and complete or fail it; anyone can send messages,
/// ask questions and answer them.
#[derive(Debug, Parser)]
#[command(name = "vine", version, after_long_help = EXIT_CODES, after_help = EXIT_CODES)]
pub struct Cli {
    /// The board directory (default: $VINE_DIR, else the nearest .vine/ upward).
    #[arg(long, global = true, value_name = "DIR")]
    pub dir: Option<PathBuf>,

    /// Print exactly one JSON object on stdout instead of text.
    #[arg(long, global = true)]
    pub json: bool,

    /// A board on a server (`vine serve`), e.g. `https://vps.example.com:5555` (default: $VINE_URL).
    /// Several servers of one board, comma-separated (https://a:5555,https://b:5555): a request
    /// one cannot answer (no connection, a timeout, 502/503/504) goes to the next with the same
    /// request key, so it is still applied once; the server that answered last is tried first.
    /// The API key comes from $VINE_API_KEY, $VPS_API_KEY or --key-file, never the command line.
    #[arg(long, global = true, env = "VINE_URL", value_name = "URL[,URL...]")]
    pub url: Option<String>,

    /// Say on stderr when a request moved to another server of the --url list (default:
    /// $VINE_VERBOSE). Replies stay the same.
    #[arg(
        long,
        short = 'v',
        global = true,
        env = "VINE_VERBOSE",
        action = clap::ArgAction::SetTrue,
        value_parser = clap::builder::FalseyValueParser::new()
    )]
    pub verbose: bool,

    /// The worker a command acts for: claim, complete, fail, release, heartbeat, register,
    /// deregister, should-continue, worker; and who sends or asks. Worker ids are
    /// [A-Za-z0-9._-], at most 64. Default: $VINE_WORKER, else $WORKER_ID.
    #[arg(
        long,
        short = 'w',
        global = true,
        env = "VINE_WORKER",
        value_name = "WORKER"
    )]
    pub worker: Option<String>,

    /// A file holding the server's API key (default: $VINE_API_KEY_FILE).
    #[arg(long, global = true, value_name = "FILE")]
    pub key_file: Option<PathBuf>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// A claimant's write: which worker, and optionally which attempt the claim was for.
#[derive(Debug, Args, Clone)]
pub struct ClaimantArgs {
    /// The task id (default: $VINE_TASK, which `vine pool` gives each Claude process).
    #[arg(env = "VINE_TASK")]
    pub id: u64,
    /// The attempt number `vine claim` printed; if the claim was taken back since, exit 4.
    #[arg(long)]
    pub attempt: Option<u32>,
}

/// The board settings `vine init` sets (on a new board, or changing an existing one's).
#[derive(Debug, Args, Clone, Default)]
pub struct SettingsFlags {
    /// Default lease of a claim, e.g. 30m.
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub lease: Option<Duration>,
    /// A worker without a sign of life for this long is stale, e.g. 3m; the tasks it holds
    /// are taken back. Workers heartbeat at least this often (the hooks and `vine worker`
    /// do; scripts run `vine heartbeat`).
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub stale_after: Option<Duration>,
    /// A task meant for a specialist (--assign, --requires) falls back to any worker when
    /// no live specialist has been seen for this long, e.g. 10m (default: the stale limit).
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub fallback_after: Option<Duration>,
    /// Default retries after a task's first attempt.
    #[arg(long)]
    pub max_retries: Option<u32>,
    /// Finished tasks kept on the queue before they are archived automatically.
    #[arg(long, value_name = "N")]
    pub archive_after: Option<usize>,
    /// First retry delay after a failed attempt (doubles each attempt), e.g. 10s.
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub retry_backoff: Option<Duration>,
    /// Longest retry delay, e.g. 15m.
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub retry_backoff_max: Option<Duration>,
}

/// All `vine` commands: the board's own, and those that set things up around it.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a board (default ./.vine), or with --claude set up a Claude Code project.
    /// Existing board files are kept.
    ///
    /// With --url (or $VINE_URL), the board is the server's base directory: `vine serve` made
    /// it when it started; on a server with only the original API, `vine init` runs there
    /// through /execute (vine must be installed there). Flags change the board's settings.
    Init {
        /// Where to create it (default: --dir, $VINE_DIR, or ./.vine); with --claude, the project.
        #[arg(value_name = "DIR")]
        path: Option<PathBuf>,
        #[command(flatten)]
        settings: SettingsFlags,
        /// Set up the Claude Code project in DIR (default: here): the agentvine skill, the
        /// hooks in .claude/settings.json (merged, idempotent) and CLAUDE.md for --role. The
        /// board is --url ($VINE_URL), else --dir ($VINE_DIR), else the one the settings
        /// already record, else DIR/.vine (created); any other than DIR/.vine is recorded in
        /// the settings' env as VINE_URL or VINE_DIR (never the key), so the hooks find it.
        /// Prints start commands that work as pasted.
        #[arg(long)]
        claude: bool,
        /// With --claude: whose instructions the project's CLAUDE.md gets.
        #[arg(long, value_enum, default_value = "worker", requires = "claude")]
        role: Role,
        /// With --claude: the command hooks run (default `vine`, found on PATH).
        #[arg(long, default_value = "vine", value_name = "CMD", requires = "claude")]
        hook_command: String,
    },
    // The board's commands, listed here as `vine add`, `vine claim` ... (no nesting).
    #[command(flatten)]
    Board(BoardCommand),
    /// Serve the board in BASE_DIR and the VPS API over HTTP(S): the server workers and the
    /// coordinator reach with --url.
    ///
    /// The API key comes from --key-file, $VINE_API_KEY or $VPS_API_KEY (never an argument).
    /// Without a key the server only listens on loopback.
    #[command(after_help = "Example:
  VINE_API_KEY=$(cat /etc/vine/key) vine serve --root /srv/board --listen 0.0.0.0:5555 \\
      --tls-cert /etc/vine/cert.pem --tls-key /etc/vine/key.pem")]
    Serve(ServeArgs),
    /// Open the control room of a local board: a web page of its tasks, workers, questions
    /// and messages, live, where questions are answered.
    ///
    /// Serves the board (--dir, $VINE_DIR or the nearest .vine/) on 127.0.0.1 at a free port
    /// with no key (and no /execute), and prints the URL. A board on a server has its control
    /// room at the server's own address: open that instead.
    #[command(after_help = "Example:
  vine dashboard --open")]
    Dashboard(DashboardArgs),
    /// The VPS helpers: test, ls, read, deploy, exec, find, grep (needs --url).
    Vps {
        #[command(subcommand)]
        action: VpsCmd,
    },
    /// Claude Code hooks (called from .claude/settings.json): stop, session-start, post-tool-use.
    ///
    /// The worker id comes from $VINE_WORKER (or $WORKER_ID); the Stop hook also reads
    /// $VINE_MAX_IDLE (default 10m) and $VINE_HOOK_WAIT (how long it waits for work inside the
    /// hook before handing a turn back; default: the Stop hook's timeout in the project's
    /// settings less 1m, 9m for the 600 s `vine init --claude` writes). Work added meanwhile
    /// is handed over at once (the board is watched; a server holds the one request open).
    /// A hook never keeps a session from ending: on any error it explains on stderr, exits 0,
    /// and the stop goes through (SessionStart tells the session in its context instead).
    /// The hooks keep per-session state (tool calls, reminders) and the keepalive's lock in
    /// $VINE_RUNTIME_DIR (default $XDG_RUNTIME_DIR/agentvine, else /tmp/agentvine-UID).
    Hook {
        #[command(subcommand)]
        event: HookCmd,
    },
    /// Start a Claude Code worker (`claude -p --allowedTools Bash`) in this folder, set up for
    /// the board: VINE_WORKER, VINE_CAPABILITIES, VINE_MAX_IDLE, the board's location,
    /// CLAUDE_CODE_STOP_HOOK_BLOCK_CAP=0 (without it Claude Code ends the session after 8
    /// Stop-hook blocks, cutting an idle worker off) and VINE_KEEPALIVE=0 (this command
    /// heartbeats the worker while claude runs, also through long tool calls).
    ///
    /// The folder needs `vine init --claude`. Before starting claude (which hides hook
    /// errors) it checks that the folder's Claude Code settings have the agentvine hooks and
    /// the `vine` they run exists, that the board the hooks will see (the settings' env wins
    /// over the environment) opens and is the one given here, and that the worker id is
    /// valid; otherwise it explains and exits 2.
    #[command(after_help = "Example:
  vine --url https://vps:5555 worker --worker w1 --capability python -- --model sonnet")]
    Worker(WorkerStartArgs),
    /// Run headless Claude Code workers for the board: N slots, each at most one `claude -p`
    /// at a time, in this folder (set up with `vine init --claude`).
    ///
    /// A slot with nothing to do runs no Claude process and spends no model turn: it waits
    /// for work with the board's change wait. Each task runs `claude -p` with the task's
    /// instructions, `--output-format json`, and VINE_WORKER, VINE_TASK, VINE_POOL=1 and the
    /// board's location in its environment; the run's turns, tokens and cost are recorded on
    /// the board (`vine sessions`, `vine show ID`). A related next task (same capability,
    /// depending on the last one, or the same `--meta group=G`) resumes the session while it
    /// is younger than --session-max-age and idle less than --session-max-idle. A session that
    /// asks (`vine ask`) and ends its turn is parked: its task is kept, no process runs, and
    /// the same session is resumed with the answer. A session that ends holding its task
    /// without `vine complete` or `vine fail` (after the Stop hook's one reminder) has its
    /// attempt failed.
    ///
    /// SIGTERM or Ctrl-C: stop claiming, let running tasks finish for --grace, then kill them
    /// and give their tasks back. SIGKILL loses nothing: tasks come back when their leases end.
    #[command(after_help = "Examples:
  vine pool --workers 2
  vine --url https://vps:5555 pool --workers 4 --capability python --max-cost-usd 5 -- --model sonnet")]
    Pool(PoolArgs),
    /// Run one board op given as JSON and print the reply as JSON (used through /execute).
    #[command(hide = true)]
    Op {
        /// `{"op": {...}, "key": "..."}`.
        request: String,
    },
    /// Move a board between files and PostgreSQL: `export` writes a PostgreSQL board out as
    /// the original files, `import` loads a file board into an empty PostgreSQL board.
    #[cfg(feature = "postgres")]
    #[command(name = "board")]
    Store {
        #[command(subcommand)]
        action: StoreCmd,
    },
}

/// `vine board ...`: moving a board between files and PostgreSQL.
#[cfg(feature = "postgres")]
#[derive(Debug, Subcommand)]
pub enum StoreCmd {
    /// Write the PostgreSQL board out as a file board in DIR (a new directory): board.json,
    /// task-queue.json, worker-status.json, progress.json, sessions.json, agent-comms.jsonl,
    /// task-archive.jsonl and the instruction files. Servers may keep running: the board is
    /// read in one snapshot.
    #[command(after_help = "Example:
  vine board export --store postgres://vine@%2Frun%2Fpostgresql/vineboard ./board-copy")]
    Export {
        /// The board's database (default: $VINE_STORE).
        #[arg(long, env = "VINE_STORE", value_name = "URL", hide_env_values = true)]
        store: String,
        /// Where to write the file board (a directory without a board).
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// Load a file board into the PostgreSQL board, which must be empty (a new database, or
    /// one `vine serve --store` made and nothing changed yet). The file board is read under
    /// its lock and left as it is; a damaged file refuses the import (run `vine repair`).
    #[command(after_help = "Example:
  vine board import --store postgres://vine@%2Frun%2Fpostgresql/vineboard /srv/board")]
    Import {
        /// The board's database (default: $VINE_STORE).
        #[arg(long, env = "VINE_STORE", value_name = "URL", hide_env_values = true)]
        store: String,
        /// The file board (default: --dir, $VINE_DIR, or the nearest .vine/).
        #[arg(value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

/// The board's commands: each becomes one op on the board.
#[derive(Debug, Subcommand)]
pub enum BoardCommand {
    /// Add a task (or a batch with --plan FILE).
    ///
    /// A worker has no context but what the task gives it: put everything it needs in the
    /// instructions (objective, steps, acceptance criteria) and list the files to read first
    /// with --context.
    ///
    /// Plan files are JSON lists of objects with the keys key, description, instructions |
    /// instructions_from | instruction_file, context_files, assign, priority, requires, after
    /// (keys of the same plan or existing task ids), max_retries, lease, strict,
    /// fallback_after, metadata. A plan is added all or nothing.
    #[command(after_help = "Examples:
  vine add \"Create hello.txt\" --instructions \"Write 'Hello from VPS!' to test-output/hello.txt\"
  vine add \"Add /hello endpoint\" --instructions-from hello.md --context flask-demo/app.py --after 1731159000123
  vine add --plan plan.json")]
    Add(Box<AddArgs>),
    /// Claim the best task this worker may take; prints it with its instructions (exit 3 if none).
    Claim,
    /// Mark a task you claimed as completed.
    Complete {
        #[command(flatten)]
        claimant: ClaimantArgs,
        /// The result, as text.
        #[arg(long, conflicts_with = "result_json")]
        result: Option<String>,
        /// The result, as JSON.
        #[arg(long, value_name = "JSON")]
        result_json: Option<String>,
    },
    /// Report that an attempt failed; the task is retried with backoff unless out of retries.
    Fail {
        #[command(flatten)]
        claimant: ClaimantArgs,
        /// What went wrong.
        #[arg(long)]
        error: String,
        /// Fail for good now instead of retrying.
        #[arg(long)]
        no_retry: bool,
    },
    /// Give a claimed task back to the queue without counting an attempt.
    Release {
        #[command(flatten)]
        claimant: ClaimantArgs,
    },
    /// Cancel a task that has not completed (coordinator).
    Cancel {
        /// The task id.
        id: u64,
        /// Why.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Put a failed task back to pending with its attempts reset (coordinator).
    Retry {
        /// The task id.
        id: u64,
    },
    /// Change the priority of a task that is not finished (coordinator): high, normal or low.
    #[command(after_help = "Example:
  vine priority 1731159000123 high")]
    Priority {
        /// The task id.
        id: u64,
        /// Its new priority.
        #[arg(value_enum, value_name = "LEVEL")]
        level: Priority,
    },
    /// Register a worker (again) with its capabilities; resets its idle clock.
    Register {
        /// A capability (repeatable), e.g. --capability python --capability gpu.
        #[arg(long = "capability", short = 'c', value_name = "CAP")]
        capabilities: Vec<String>,
        /// The Claude Code session id this worker runs in.
        #[arg(long)]
        session_id: Option<String>,
    },
    /// Record a sign of life; extends the leases of this worker's tasks.
    ///
    /// A worker must show a sign of life at least once per stale limit (3m by default, see
    /// `vine init --stale-after`), or the tasks it holds are taken back. The Claude Code hooks
    /// and `vine worker` do it; a scripted worker runs this.
    Heartbeat,
    /// Take a worker offline; its claimed tasks go back to the queue.
    Deregister,
    /// Should this worker keep its session alive? Exit 0 yes, 3 no (and it is marked offline).
    ShouldContinue {
        /// Stop after this much idle time with nothing to claim.
        #[arg(long, default_value = "10m", value_name = "DURATION", value_parser = duration)]
        max_idle: Duration,
    },
    /// Counts of tasks and workers, open questions and progress.
    Status,
    /// List tasks (oldest first).
    Tasks {
        /// Only tasks with this status, or the blocked ones.
        #[arg(long, value_enum)]
        status: Option<StatusFilter>,
        /// Include archived tasks.
        #[arg(long)]
        all: bool,
    },
    /// Show one task, from the queue or the archive.
    Show {
        /// The task id.
        id: u64,
    },
    /// List workers with their state: working, idle, waiting (for an answer), stale, offline.
    Workers,
    /// List the Claude sessions that worked on the board (`vine pool` records them): worker,
    /// state, tasks in order, runs, turns and cost; ended ones with --all.
    Sessions {
        /// Include ended sessions.
        #[arg(long)]
        all: bool,
    },
    /// The board's figures: queue latency (added → claimed), claim → complete time, human
    /// response time (asked → answered), failure and retry rates, tasks per hour; over the
    /// last --window and over all the history.
    Metrics {
        /// How far back the recent figures look.
        #[arg(long, default_value = "24h", value_name = "DURATION", value_parser = duration)]
        window: Duration,
    },
    /// Show or set the progress record.
    Progress {
        #[command(subcommand)]
        action: Option<ProgressCmd>,
    },
    /// Send or read messages.
    Msg {
        #[command(subcommand)]
        action: MsgCmd,
    },
    /// Ask a question (about a task); with --wait, wait for the answer (exit 3 on timeout).
    ///
    /// A worker waiting with --wait keeps its tasks until the answer or the timeout, however
    /// long that outlasts their leases; it shows as `waiting` and heartbeats meanwhile.
    Ask {
        /// The question.
        question: String,
        /// Who asks (default: the worker, --worker or $VINE_WORKER, else "coordinator").
        #[arg(long = "as", value_name = "AGENT")]
        agent: Option<String>,
        /// The task it is about (default: $VINE_TASK).
        #[arg(long, env = "VINE_TASK")]
        task: Option<u64>,
        /// Wait for the answer and print it.
        #[arg(long)]
        wait: bool,
        /// How long --wait waits.
        #[arg(long, default_value = "10m", value_name = "DURATION", value_parser = duration)]
        timeout: Duration,
        /// How often --wait looks for the answer.
        #[arg(
            long,
            default_value = "1s",
            value_name = "DURATION",
            value_parser = duration,
            hide = true
        )]
        poll: Duration,
    },
    /// Answer a question by its number (see `vine questions`).
    Answer {
        /// The question's number.
        question: u64,
        /// The answer.
        answer: String,
        /// Who answers (default "coordinator").
        #[arg(long = "as", value_name = "AGENT")]
        agent: Option<String>,
    },
    /// List open questions (all questions with --all).
    Questions {
        /// Include answered questions with their answers.
        #[arg(long)]
        all: bool,
    },
    /// Take back every claim whose lease has expired or whose holder is stale (also done on
    /// every write, and shown by every read); the tasks are claimable again at once.
    RequeueStale,
    /// Keep a copy of each damaged board file and rebuild it from what can be read.
    Repair,
    /// Move finished tasks to the archive (also done automatically past a threshold).
    Compact,
}

/// Arguments of `vine serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The base directory: the board's files live at its top; every path is confined to it.
    #[arg(long, value_name = "BASE_DIR")]
    pub root: PathBuf,
    /// Address to listen on, IP:PORT (0.0.0.0:5555 for every interface).
    #[arg(long, default_value = "127.0.0.1:5555", value_name = "ADDR", value_parser = address)]
    pub listen: SocketAddr,
    /// PEM certificate chain for HTTPS (with --tls-key).
    #[arg(long, requires = "tls_key", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for HTTPS (with --tls-cert).
    #[arg(long, requires = "tls_cert", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Switch /execute off.
    #[arg(long)]
    pub no_exec: bool,
    /// Kill a command, and every process it started, after this long.
    #[arg(long, default_value = "60s", value_name = "DURATION", value_parser = duration)]
    pub exec_timeout: Duration,
    /// Bytes of stdout and of stderr kept per command.
    #[arg(long, default_value_t = 1024 * 1024, value_name = "BYTES")]
    pub exec_max_output: usize,
    /// Commands running at once (one counts until every process it started is gone); more
    /// are refused with 429.
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub exec_max_concurrent: usize,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = 16 * 1024 * 1024, value_name = "BYTES")]
    pub max_body: usize,
    /// A client must send its whole request body within this long, else 408.
    #[arg(long, default_value = "30s", value_name = "DURATION", value_parser = duration)]
    pub body_timeout: Duration,
    /// Serve only the original plan's /test, /list, /deploy, /execute (for testing old clients).
    #[arg(long, hide = true)]
    pub original_only: bool,
    /// Try to open the control room in a web browser once the server listens.
    #[arg(long)]
    pub open: bool,
    /// Keep the board in PostgreSQL instead of files in BASE_DIR: a connection string, as a
    /// URL (postgres://USER@HOST/DB, a unix socket directory as %2F-encoded host) or
    /// key=value (host=/run/postgresql user=vine dbname=board); ?sslmode=require for TLS (the
    /// database's certificate is verified; $VINE_STORE_CA names a PEM file of extra CAs). Any
    /// number of servers may share one database. The schema is created or brought up to date
    /// at start. `vine board import` and `vine board export` move a board in and out.
    #[arg(long, env = "VINE_STORE", value_name = "URL", hide_env_values = true)]
    pub store: Option<String>,
    /// With --store: the URL the other servers of the same database reach this server at, so
    /// that it can lead them (one server leads; the others hand it their changes, which spares
    /// the servers from colliding on the database). Default: the --listen address when it is
    /// one address (not 0.0.0.0); `none`: this server never leads (it still hands its changes
    /// to one that does). The servers must share the API key.
    #[arg(long, env = "VINE_ADVERTISE", value_name = "URL", value_parser = advertise)]
    pub advertise: Option<agentvine::server::Advertise>,
}

/// Arguments of `vine dashboard`.
#[derive(Debug, Args)]
pub struct DashboardArgs {
    /// Address to listen on, IP:PORT (default: 127.0.0.1 on a free port). Another address
    /// than loopback needs --key-file: the control room can change the board.
    #[arg(long, default_value = "127.0.0.1:0", value_name = "ADDR", value_parser = address)]
    pub listen: SocketAddr,
    /// Try to open the control room in a web browser (carries on if there is none).
    #[arg(long)]
    pub open: bool,
}

/// `vine vps` actions.
#[derive(Debug, Subcommand)]
pub enum VpsCmd {
    /// Check that the server answers (and whether it has the board endpoint).
    Test,
    /// List a folder on the server.
    Ls {
        /// The folder (default: the base directory).
        #[arg(default_value = ".")]
        path: String,
    },
    /// Print a file from the server.
    Read {
        /// The file.
        file: String,
    },
    /// Copy local files to the server: `deploy LOCAL REMOTE`, or `deploy LOCAL... --to DIR`.
    Deploy {
        /// LOCAL REMOTE, or several LOCAL files with --to.
        #[arg(required = true, num_args = 1..)]
        paths: Vec<PathBuf>,
        /// The server folder to put several files in (each keeps its file name).
        #[arg(long, value_name = "DIR")]
        to: Option<String>,
    },
    /// Run a shell command on the server (exit 0 if it succeeded, else 1; its status is in --json).
    Exec {
        /// The command.
        command: String,
        /// The folder to run it in (inside the base directory).
        #[arg(long, value_name = "DIR")]
        workdir: Option<String>,
    },
    /// Find files by name pattern (`*`, `?`).
    Find {
        /// The name pattern, e.g. '*.py'.
        pattern: String,
        /// Where to look.
        #[arg(default_value = ".", value_name = "DIR")]
        directory: String,
    },
    /// Find lines containing a text.
    Grep {
        /// The text.
        pattern: String,
        /// Where to look.
        #[arg(default_value = ".", value_name = "DIR")]
        directory: String,
    },
}

/// Arguments of `vine add`.
#[derive(Debug, Args)]
pub struct AddArgs {
    /// One line saying what the task is.
    #[arg(required_unless_present = "plan", conflicts_with = "plan")]
    pub description: Option<String>,
    /// Add every task of a plan file, all or nothing.
    #[arg(long, value_name = "FILE")]
    pub plan: Option<PathBuf>,
    /// Instruction text (stored as `tasks/task-<id>-instructions.md`).
    #[arg(long, group = "instr")]
    pub instructions: Option<String>,
    /// Read the instruction text from a local file.
    #[arg(long, value_name = "LOCAL_FILE", group = "instr")]
    pub instructions_from: Option<PathBuf>,
    /// An instruction file already on the board (board-relative path).
    #[arg(long, value_name = "BOARD_PATH", group = "instr")]
    pub instruction_file: Option<String>,
    /// A file the worker must read first (board-relative, repeatable).
    #[arg(long = "context", value_name = "BOARD_PATH")]
    pub context: Vec<String>,
    /// Meant for this worker. Another may take it when this one is offline, or has shown no
    /// sign of life for the fallback time (the board's, or --fallback-after), unless --strict.
    #[arg(long, value_name = "WORKER")]
    pub assign: Option<String>,
    /// How urgent the task is: claims take higher priorities first.
    #[arg(long, value_enum, default_value = "normal")]
    pub priority: Priority,
    /// A capability the worker must have (repeatable). Any worker may take the task when no
    /// live worker with every one of them has been seen for the fallback time, unless --strict.
    #[arg(long, value_name = "CAP")]
    pub requires: Vec<String>,
    /// A task that must complete first (repeatable).
    #[arg(long, value_name = "ID")]
    pub after: Vec<u64>,
    /// Retries after the first attempt (default: the board's, 3).
    #[arg(long)]
    pub max_retries: Option<u32>,
    /// Lease of a claim on this task, e.g. 90s, 30m (default: the board's, 30m).
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub lease: Option<Duration>,
    /// Only the --assign worker / a worker with every --requires capability may ever claim it:
    /// no fallback to other workers.
    #[arg(long, conflicts_with = "fallback_after")]
    pub strict: bool,
    /// Any worker may claim it once no live specialist (the --assign worker, or one with the
    /// --requires capabilities) has been seen for this long, e.g. 10m (default: the board's
    /// fallback time, see `vine init --fallback-after`).
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub fallback_after: Option<Duration>,
    /// A metadata entry (repeatable); VALUE is JSON if it parses, else text.
    #[arg(long, value_name = "KEY=VALUE")]
    pub meta: Vec<String>,
    /// Metadata as a JSON object.
    #[arg(long, value_name = "JSON")]
    pub metadata: Option<String>,
}

/// `vine progress` actions.
#[derive(Debug, Subcommand)]
pub enum ProgressCmd {
    /// Show the progress record (the default).
    Show,
    /// Change the progress record; fields not given stay as they are.
    Set {
        /// The current step.
        #[arg(long)]
        step: Option<String>,
        /// The number of steps.
        #[arg(long)]
        total: Option<String>,
        /// A status word or sentence.
        #[arg(long)]
        status: Option<String>,
        /// A metadata entry to merge (repeatable); VALUE is JSON if it parses, else text.
        #[arg(long, value_name = "KEY=VALUE")]
        meta: Vec<String>,
    },
}

/// `vine msg` actions.
#[derive(Debug, Subcommand)]
pub enum MsgCmd {
    /// Append a message to the log.
    Send {
        /// The text.
        message: String,
        /// Who sends it (default: the worker, --worker or $VINE_WORKER, else "coordinator").
        #[arg(long = "as", value_name = "AGENT")]
        agent: Option<String>,
        /// The task it is about.
        #[arg(long)]
        task: Option<u64>,
    },
    /// Read the log (oldest first).
    Read {
        /// Only messages after this time (RFC 3339, or ISO read as UTC), e.g.
        /// 2026-11-21T08:00:00Z.
        #[arg(long, value_name = "TIME", value_parser = timestamp)]
        since: Option<Timestamp>,
        /// Only messages numbered above N.
        #[arg(long, value_name = "N")]
        after: Option<u64>,
        /// Only answers to question N.
        #[arg(long, value_name = "N")]
        reply_to: Option<u64>,
        /// Only the last N messages.
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
        /// Only messages about this task (its questions, answers and kept results too).
        #[arg(long, value_name = "ID")]
        task: Option<u64>,
    },
}

/// `vine hook` events.
#[derive(Debug, Subcommand, Clone, Copy)]
pub enum HookCmd {
    /// Stop: hands the worker its next task, waits for work, or lets the session end after
    /// the idle limit (marking the worker offline). A worker that ends its turn holding a task
    /// is reminded of it; a second turn-end in a row with no tool call fails that attempt.
    Stop,
    /// SessionStart: registers the worker (capabilities from $VINE_CAPABILITIES) with its
    /// session id, starts its keepalive (unless $VINE_KEEPALIVE=0) and prints who it is and how
    /// to work, or, when the board cannot be reached, says so.
    SessionStart,
    /// PostToolUse: counts the tool call (progress, for the Stop hook) and heartbeats, which
    /// keeps the worker's leases alive.
    PostToolUse,
    /// The background heartbeat the SessionStart hook starts: heartbeats the worker every third
    /// of the board's stale limit while the `claude` process (pid and start time) lives.
    #[command(hide = true)]
    Keepalive {
        /// The `claude` process's pid.
        #[arg(long)]
        pid: u32,
        /// Its start time (clock ticks after boot, from /proc/PID/stat), so that a reused pid
        /// is not taken for it.
        #[arg(long)]
        start: u64,
    },
}

/// Arguments of `vine worker` (the worker id is the global --worker, which it requires).
#[derive(Debug, Args)]
pub struct WorkerStartArgs {
    /// A capability (repeatable).
    #[arg(long = "capability", short = 'c', value_name = "CAP")]
    pub capabilities: Vec<String>,
    /// Stop after this much idle time with nothing to claim.
    #[arg(long, default_value = "10m", value_name = "DURATION", value_parser = duration)]
    pub max_idle: Duration,
    /// The Claude Code command.
    #[arg(long, default_value = "claude", value_name = "CMD")]
    pub claude: String,
    /// The first prompt.
    #[arg(
        long,
        default_value = "You are an agentvine worker. Claim your next task with `vine claim`, do it, complete it, then end your turn."
    )]
    pub prompt: String,
    /// More arguments for claude (after --).
    #[arg(last = true)]
    pub claude_args: Vec<String>,
}

/// Arguments of `vine pool`.
#[derive(Debug, Args, Clone)]
pub struct PoolArgs {
    /// Slots: Claude processes at most at once.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub workers: u16,
    /// A capability every pool worker registers with (repeatable).
    #[arg(long = "capability", short = 'c', value_name = "CAP")]
    pub capabilities: Vec<String>,
    /// The pool's worker ids are NAME-1, NAME-2, ...
    #[arg(long, default_value = "pool", value_name = "NAME")]
    pub name: String,
    /// A slot that finds no work for this long stops.
    #[arg(long, default_value = "10m", value_name = "DURATION", value_parser = duration)]
    pub max_idle: Duration,
    /// Stop claiming once the pool's runs have cost this many US dollars.
    #[arg(long, value_name = "USD", allow_negative_numbers = true, value_parser = dollars)]
    pub max_cost_usd: Option<f64>,
    /// `--max-turns` of each Claude run.
    #[arg(long, value_name = "N")]
    pub max_turns: Option<u32>,
    /// A session older than this is not resumed.
    #[arg(long, default_value = "1h", value_name = "DURATION", value_parser = duration)]
    pub session_max_age: Duration,
    /// A session idle longer than this is not resumed.
    #[arg(long, default_value = "30m", value_name = "DURATION", value_parser = duration)]
    pub session_max_idle: Duration,
    /// After SIGTERM or Ctrl-C, how long running tasks may finish before they are killed and
    /// given back.
    #[arg(long, default_value = "2m", value_name = "DURATION", value_parser = duration)]
    pub grace: Duration,
    /// Each pool worker works in its own git worktree of this project, beside it in
    /// `<project>.vine-worktrees/<worker>` on the branch `vine/<worker>`; when the pool ends a
    /// worktree is removed unless it holds uncommitted work (then it is kept and reported).
    #[arg(long)]
    pub worktree: bool,
    /// The Claude Code command.
    #[arg(long, default_value = "claude", value_name = "CMD")]
    pub claude: String,
    /// More arguments for claude (after --).
    #[arg(last = true)]
    pub claude_args: Vec<String>,
}

/// An amount of US dollars above 0.
fn dollars(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err("not an amount of dollars above 0; use e.g. 5 or 0.50".into()),
    }
}

/// A duration flag: `90s`, `30m`, `2h`, `1d`, `1h30m` or a number of seconds.
fn duration(s: &str) -> Result<Duration, String> {
    parse_duration(s)
        .map(Duration::from_secs)
        .map_err(|_| "not a duration; use a number with a unit, e.g. 90s, 30m, 2h, 1d".into())
}

/// A time flag: RFC 3339, or ISO 8601 without an offset (read as UTC).
fn timestamp(s: &str) -> Result<Timestamp, String> {
    parse_timestamp(s).ok_or_else(|| "not a time; use e.g. 2026-11-21T08:00:00Z".into())
}

/// `--advertise`: `none`, or an http(s) URL.
fn advertise(s: &str) -> Result<agentvine::server::Advertise, String> {
    use agentvine::server::Advertise;
    if s.trim().eq_ignore_ascii_case("none") {
        return Ok(Advertise::Never);
    }
    match agentvine::remote::parse_servers(s) {
        Ok(urls) if urls.len() == 1 => Ok(Advertise::At(urls[0].clone())),
        Ok(_) => Err("one URL only: where the other servers reach this one".into()),
        Err(e) => Err(format!("{e}; or `none`")),
    }
}

/// An address to listen on: IP:PORT.
fn address(s: &str) -> Result<SocketAddr, String> {
    s.parse()
        .map_err(|_| "not an address; use IP:PORT, e.g. 127.0.0.1:5555 or 0.0.0.0:5555".into())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn clap_accepts_the_definition() {
        Cli::command().debug_assert();
    }

    #[test]
    fn board_and_setup_commands_are_typed_at_one_level() {
        let parse = |args: &[&str]| Cli::try_parse_from([&["vine"], args].concat());
        let cli = parse(&["claim", "-w", "w1"]).unwrap();
        assert!(matches!(cli.command, Command::Board(BoardCommand::Claim)));
        let cli = parse(&["init", "--claude", "--role", "coordinator"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Init {
                role: Role::Coordinator,
                ..
            }
        ));
        assert!(parse(&["board", "claim"]).is_err(), "no nesting");
        let cli = parse(&["tasks", "--status", "in-progress"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Board(BoardCommand::Tasks {
                status: Some(StatusFilter::InProgress),
                ..
            })
        ));
    }

    #[test]
    fn values_are_typed_with_their_defaults() {
        let cli = Cli::try_parse_from(["vine", "should-continue", "--max-idle", "1h30m"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Board(BoardCommand::ShouldContinue { max_idle }) if max_idle.as_secs() == 5400
        ));
        let cli = Cli::try_parse_from(["vine", "serve", "--root", "/srv"]).unwrap();
        let Command::Serve(s) = cli.command else {
            panic!("serve")
        };
        assert_eq!(s.listen, "127.0.0.1:5555".parse::<SocketAddr>().unwrap());
        assert_eq!(
            (s.exec_timeout.as_secs(), s.body_timeout.as_secs()),
            (60, 30)
        );
        assert!(!s.open);
        let cli = Cli::try_parse_from(["vine", "dashboard"]).unwrap();
        let Command::Dashboard(d) = cli.command else {
            panic!("dashboard")
        };
        assert_eq!(d.listen, "127.0.0.1:0".parse::<SocketAddr>().unwrap());
        assert!(!d.open);
        let cli = Cli::try_parse_from(["vine", "--dir", "b", "dashboard", "--open"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Dashboard(DashboardArgs { open: true, .. })
        ));
        let cli = Cli::try_parse_from(["vine", "add", "x"]).unwrap();
        let Command::Board(BoardCommand::Add(a)) = cli.command else {
            panic!("add")
        };
        assert_eq!(a.priority, Priority::Normal);
        let cli =
            Cli::try_parse_from(["vine", "msg", "read", "--since", "2026-11-21T08:00:00"]).unwrap();
        let Command::Board(BoardCommand::Msg {
            action: MsgCmd::Read { since, .. },
        }) = cli.command
        else {
            panic!("msg read")
        };
        assert_eq!(since, parse_timestamp("2026-11-21T08:00:00Z"));
    }

    #[test]
    fn a_duration_given_on_reads_back_the_same() {
        // `vine worker` hands --max-idle to the hooks as text again.
        for secs in [0, 1, 59, 90, 600, 3600, 5400, 86_400, 90_061] {
            let text = agentvine::time::format_duration(secs);
            assert_eq!(duration(&text).map(|d| d.as_secs()), Ok(secs), "{text}");
        }
    }
}
