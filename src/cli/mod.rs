//! Runs one `vine` command: resolves the board, builds the op, carries it out, and renders
//! the reply as text or as one JSON object.

pub mod args;
mod hook;
mod remote;
mod render;
mod worker;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use agentvine::op;
use agentvine::store::paths::DEFAULT_DIR;
use agentvine::time::{parse_duration, parse_timestamp};
use agentvine::{
    Board, Error, ExitCode, MessageFilter, NewTask, Op, Priority, Reply, Result, Settings,
};
use serde_json::{Map, Value, json};

use args::{AddArgs, Cli, Command, MsgCmd, ProgressCmd, SettingsFlags};

/// What a command produced: a JSON object, its text rendering, and the exit code.
pub struct Output {
    /// The `--json` form (without the `ok` field, which the caller adds).
    pub json: Value,
    /// The human form.
    pub text: String,
    /// The exit code.
    pub exit: ExitCode,
}

/// A reply rendered for people (also what a read of a damaged board could read).
pub fn render_reply(r: &Reply) -> String {
    render::reply(r)
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> Result<Output> {
    match cli.command {
        Command::Init {
            claude: true,
            path,
            role,
            hook_command,
            ..
        } => init_claude(path, cli.dir, cli.url, &role, &hook_command),
        Command::Init { path, settings, .. } if cli.url.is_some() => remote::init(
            cli.url.as_deref().unwrap_or_default(),
            cli.key_file.as_deref(),
            path.as_deref(),
            &settings,
        ),
        Command::Init { path, settings, .. } => {
            let dir = path
                .or(cli.dir)
                .or_else(|| std::env::var_os("VINE_DIR").map(PathBuf::from))
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DIR));
            // Flags change the existing settings (or the defaults for a new board).
            let changed = settings.apply(|| {
                if dir.join(agentvine::store::paths::BOARD).exists() {
                    Board::open(&dir)?.settings()
                } else {
                    Ok(Settings::default())
                }
            })?;
            let board = match changed {
                Some(s) => Board::init_with(&dir, s)?,
                None => Board::init(&dir)?,
            };
            let shown = board.location();
            let settings = board.settings()?;
            Ok(Output {
                text: format!(
                    "Board ready at {shown}\n{}\nNext: vine add \"<task>\" --instructions \"...\"  |  VINE_WORKER=w1 vine claim",
                    render::settings_line(&settings)
                ),
                json: json!({"board": shown, "settings": settings}),
                exit: ExitCode::Done,
            })
        }
        Command::Serve(a) => serve(a, cli.key_file.as_deref()),
        Command::Vps { action } => remote::vps(action, cli.url.as_deref(), cli.key_file.as_deref()),
        Command::Op { request } => remote::op(&request, cli.dir.as_deref()),
        Command::Worker(mut a) => {
            a.worker = worker_id(cli.worker.as_deref())?;
            worker_start(
                a,
                cli.url.as_deref(),
                cli.dir.as_deref(),
                cli.key_file.as_deref(),
            )
        }
        Command::Hook { event } => {
            let (url, dir, key_file) = (cli.url.clone(), cli.dir.clone(), cli.key_file.clone());
            let global = hook::Global {
                dir: cli.dir,
                url: cli.url,
                key_file: cli.key_file,
            };
            Ok(hook::run(event, &global, move |quick| match &url {
                Some(u) if quick => remote::quick_board(u, key_file.as_deref()),
                Some(u) => remote::board(u, key_file.as_deref()),
                None => open_board(dir.as_deref()),
            }))
        }
        command => {
            let board = match &cli.url {
                Some(url) => remote::board(url, cli.key_file.as_deref())?,
                None => open_board(cli.dir.as_deref())?,
            };
            run_on(&board, command, cli.worker.as_deref())
        }
    }
}

/// `vine init --claude`: the Claude Code side of a project, and its board unless it is remote.
///
/// The board is `--url` (or `$VINE_URL`), else `--dir` (or `$VINE_DIR`), else the one the
/// project's settings already record, else `PROJECT/.vine`; any board but that default is
/// recorded in the settings' `env`, so the start commands printed work as they are.
fn init_claude(
    project: Option<PathBuf>,
    board_dir: Option<PathBuf>,
    url: Option<String>,
    role: &str,
    hook_command: &str,
) -> Result<Output> {
    use agentvine::claude::{BoardEnv, Role};
    let role = Role::parse(role)
        .ok_or_else(|| Error::Invalid(format!("--role {role:?}: use worker or coordinator")))?;
    let project = match project {
        Some(p) => p,
        None => std::env::current_dir().map_err(|e| Error::io("reading", ".", e))?,
    };
    if !project.is_dir() {
        return Err(Error::Invalid(format!(
            "{} is not a folder; give the Claude Code project's folder",
            project.display()
        )));
    }
    let project = project
        .canonicalize()
        .map_err(|e| Error::io("opening", &project, e))?;
    let env_dir = std::env::var_os("VINE_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from);
    let board = match (url, board_dir.or(env_dir)) {
        (Some(u), _) => BoardEnv::Url(u),
        (None, Some(d)) => BoardEnv::Dir(d),
        (None, None) => agentvine::claude::recorded_board(&project)?
            .unwrap_or_else(|| BoardEnv::Dir(project.join(DEFAULT_DIR))),
    };
    // A local board is created (or kept) first, so its path can be recorded absolute.
    let (board, shown) = match board {
        BoardEnv::Dir(d) => {
            Board::init(&d)?;
            let d = d.canonicalize().map_err(|e| Error::io("opening", &d, e))?;
            let shown = d.display().to_string();
            if d == project.join(DEFAULT_DIR) {
                (BoardEnv::Discovered, shown)
            } else {
                (BoardEnv::Dir(d), shown)
            }
        }
        other => {
            let shown = match &other {
                BoardEnv::Url(u) => u.clone(),
                _ => String::new(),
            };
            (other, shown)
        }
    };
    let installed = agentvine::claude::install(&project, role, hook_command, Some(&board))?;
    let mut text = String::new();
    for f in &installed.written {
        text.push_str(&format!("Wrote {}\n", f.display()));
    }
    if installed.written.is_empty() {
        text.push_str("Already set up: nothing to change.\n");
    }
    text.push_str(&match &board {
        BoardEnv::Discovered => format!("Board: {shown} (found from the project folder)\n"),
        BoardEnv::Dir(_) => format!(
            "Board: {shown} (recorded as VINE_DIR in .claude/settings.json, so the hooks and `vine` in sessions started here use it)\n"
        ),
        BoardEnv::Url(_) => format!(
            "Board: {shown} (recorded as VINE_URL in .claude/settings.json; the API key is not: export VINE_API_KEY or VINE_API_KEY_FILE before starting claude)\n"
        ),
    });
    text.push_str(&start_commands(&project, role));
    Ok(Output {
        json: json!({
            "written": installed.written,
            "hooks_added": installed.hooks_added,
            "board": shown,
            "project": project,
        }),
        text,
        exit: ExitCode::Done,
    })
}

/// The commands that start sessions in `project`, ready to paste.
fn start_commands(project: &Path, role: agentvine::claude::Role) -> String {
    let cd = format!("cd {} && ", shell_quote(&project.display().to_string()));
    let trust = "Claude Code ignores permissions.allow (the Bash(vine:*) rule in .claude/settings.json) in a folder \
                 you have not trusted, so these commands pass --allowedTools. To rely on the rule instead, start \
                 `claude` in this folder once and accept the trust dialog.";
    match role {
        agentvine::claude::Role::Worker => format!(
            "Start a worker (each needs its own id):\n  {cd}vine worker --worker w1\n\
             the same by hand:\n  {cd}VINE_WORKER=w1 CLAUDE_CODE_STOP_HOOK_BLOCK_CAP=0 claude -p \"Work on the agentvine board.\" --allowedTools Bash\n\
             an interactive worker session:\n  {cd}VINE_WORKER=w1 claude --allowedTools \"Bash(vine *)\"\n{trust}"
        ),
        agentvine::claude::Role::Coordinator => format!(
            "Start the coordinator, then describe the goal (it adds tasks with `vine add`):\n  \
             {cd}claude --allowedTools \"Bash(vine *)\"\n{trust}"
        ),
    }
}

/// Quotes a word for a POSIX shell when it needs it.
fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:@%,=".contains(c));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// `vine worker`: checks the project's hooks will work, then runs `claude -p` with the
/// environment a worker needs and heartbeats the worker while it runs.
fn worker_start(
    a: args::WorkerStartArgs,
    url: Option<&str>,
    dir: Option<&Path>,
    key_file: Option<&Path>,
) -> Result<Output> {
    worker::start(a, url, dir, key_file)
}

/// `vine serve`.
fn serve(a: args::ServeArgs, key_file: Option<&Path>) -> Result<Output> {
    let listen: std::net::SocketAddr = a.listen.parse().map_err(|_| {
        Error::Invalid(format!(
            "--listen {:?} is not an address; use IP:PORT, e.g. 127.0.0.1:5555 or 0.0.0.0:5555",
            a.listen
        ))
    })?;
    let mut cfg = agentvine::server::ServeConfig::new(a.root, listen);
    cfg.key = agentvine::apikey::ApiKey::from_env_or_file(key_file)?;
    cfg.tls = a.tls_cert.zip(a.tls_key);
    cfg.exec.enabled = !a.no_exec;
    cfg.exec.timeout = Duration::from_secs(duration(&a.exec_timeout, "--exec-timeout")?.max(1));
    cfg.exec.max_output = a.exec_max_output;
    cfg.exec.max_concurrent = a.exec_max_concurrent.max(1);
    cfg.max_body = a.max_body;
    cfg.body_timeout = Duration::from_secs(duration(&a.body_timeout, "--body-timeout")?.max(1));
    cfg.original_only = a.original_only;
    agentvine::server::serve(cfg)?;
    Ok(Output {
        json: json!({}),
        text: String::new(),
        exit: ExitCode::Done,
    })
}

/// Opens the board named by `--dir`, `$VINE_DIR`, or the nearest `.vine/` upward.
fn open_board(dir: Option<&Path>) -> Result<Board> {
    if let Some(d) = dir {
        return Board::open(d);
    }
    if let Some(d) = std::env::var_os("VINE_DIR").filter(|d| !d.is_empty()) {
        return Board::open(PathBuf::from(d));
    }
    let cwd = std::env::current_dir().map_err(|e| Error::io("reading", ".", e))?;
    match Board::find_dir(&cwd) {
        Some(d) => Board::open(d),
        None => Err(Error::NoBoard(
            "no board found: no .vine/ here or in any parent directory. Create one with `vine init`, \
             or point at one with --dir DIR or VINE_DIR"
                .into(),
        )),
    }
}

/// The worker a command acts for: the global `--worker` (clap also reads `$VINE_WORKER`),
/// else the original plan's `$WORKER_ID`.
fn worker_of(global: Option<&str>) -> Option<String> {
    global
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .or_else(|| std::env::var("WORKER_ID").ok().filter(|v| !v.is_empty()))
}

/// [`worker_of`], required.
fn worker_id(global: Option<&str>) -> Result<String> {
    worker_of(global).ok_or_else(|| {
        Error::Invalid(
            "which worker? give --worker ID (before or after the command) or set VINE_WORKER"
                .into(),
        )
    })
}

/// Who sends or asks: `--as`, else the worker, else `default`.
fn agent_name(explicit: Option<String>, global: Option<&str>, default: &str) -> String {
    explicit
        .or_else(|| worker_of(global))
        .unwrap_or_else(|| default.to_string())
}

fn duration(s: &str, flag: &str) -> Result<u64> {
    parse_duration(s).map_err(|m| Error::Invalid(format!("{flag}: {m}")))
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
    let priority = Priority::parse(&a.priority).ok_or_else(|| {
        Error::Invalid(format!(
            "--priority {:?}: use high, normal or low",
            a.priority
        ))
    })?;
    let mut metadata = match a.metadata {
        Some(m) => match json_arg("--metadata", &m)? {
            Value::Object(o) => o,
            _ => return Err(Error::Invalid("--metadata must be a JSON object".into())),
        },
        None => Map::new(),
    };
    meta_pairs(&a.meta, &mut metadata)?;
    let lease_secs = a
        .lease
        .as_deref()
        .map(|l| duration(l, "--lease"))
        .transpose()?;
    let fallback_after_secs = a
        .fallback_after
        .as_deref()
        .map(|l| duration(l, "--fallback-after"))
        .transpose()?;
    Ok(Op::Add(op::Add {
        task: NewTask {
            description,
            instructions,
            instruction_file: a.instruction_file,
            context_files: a.context,
            assign: a.assign,
            priority,
            requires: a.requires,
            after: a.after,
            max_retries: a.max_retries,
            lease_secs,
            strict: a.strict,
            fallback_after_secs,
            metadata,
        },
    }))
}

/// Runs a board command.
fn run_on(board: &Board, command: Command, worker: Option<&str>) -> Result<Output> {
    let op = match command {
        Command::Init { .. }
        | Command::Serve(_)
        | Command::Vps { .. }
        | Command::Op { .. }
        | Command::Worker(_)
        | Command::Hook { .. } => {
            return Err(Error::Protocol("handled earlier".into()));
        }
        Command::Add(a) => add_op(a)?,
        Command::Claim => Op::Claim(op::Claim {
            worker: worker_id(worker)?,
        }),
        Command::Complete {
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
        Command::Fail {
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
        Command::Release { claimant } => Op::Release(op::Release {
            task: claimant.id,
            worker: worker_id(worker)?,
            attempt: claimant.attempt,
        }),
        Command::Cancel { id, reason } => Op::Cancel(op::Cancel { task: id, reason }),
        Command::Retry { id } => Op::Retry(op::Retry { task: id }),
        Command::Register {
            capabilities,
            session_id,
        } => Op::Register(op::Register {
            worker: worker_id(worker)?,
            capabilities,
            session_id,
        }),
        Command::Heartbeat => Op::Heartbeat(op::Heartbeat {
            worker: worker_id(worker)?,
        }),
        Command::Deregister => Op::Deregister(op::Deregister {
            worker: worker_id(worker)?,
        }),
        Command::ShouldContinue { max_idle } => Op::ShouldContinue(op::ShouldContinue {
            worker: worker_id(worker)?,
            max_idle_secs: duration(&max_idle, "--max-idle")?,
        }),
        Command::Status => Op::Status(op::Status),
        Command::Tasks { status, all } => Op::Tasks(op::Tasks { status, all }),
        Command::Show { id } => Op::Show(op::Show { task: id }),
        Command::Workers => Op::Workers(op::Workers),
        Command::Progress { action } => match action {
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
        Command::Msg { action } => match action {
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
            } => {
                let since = since
                    .map(|s| {
                        parse_timestamp(&s).ok_or_else(|| {
                            Error::Invalid(format!(
                                "--since {s:?} is not a time; use e.g. 2026-11-21T08:00:00Z"
                            ))
                        })
                    })
                    .transpose()?;
                Op::ReadMessages(op::ReadMessages {
                    filter: MessageFilter {
                        since,
                        after_seq: after,
                        reply_to,
                        limit,
                    },
                })
            }
        },
        Command::Ask {
            question,
            agent,
            task,
            wait,
            timeout,
            poll,
        } => {
            let agent = agent_name(agent, worker, "coordinator");
            if wait {
                let timeout = duration(&timeout, "--timeout")?;
                let poll = duration(&poll, "--poll")?.max(1);
                let op = Op::Ask(op::Ask {
                    agent,
                    question,
                    task,
                    wait_secs: Some(timeout),
                });
                return ask_and_wait(board, op, timeout, poll);
            }
            Op::Ask(op::Ask {
                agent,
                question,
                task,
                wait_secs: None,
            })
        }
        Command::Answer {
            question,
            answer,
            agent,
        } => Op::Answer(op::Answer {
            agent: agent.unwrap_or_else(|| "coordinator".into()),
            question,
            answer,
        }),
        Command::Questions { all } => Op::Questions(op::Questions { all }),
        Command::RequeueStale => Op::RequeueStale(op::RequeueStale),
        Command::Repair => Op::Repair(op::Repair),
        Command::Compact => Op::Compact(op::Compact),
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

impl SettingsFlags {
    /// The settings `base` gives with the flags applied, or `None` when no flag was given
    /// (then `base` is not called). Local and remote `vine init` share this.
    pub fn apply(&self, base: impl FnOnce() -> Result<Settings>) -> Result<Option<Settings>> {
        let SettingsFlags {
            lease,
            stale_after,
            fallback_after,
            max_retries,
            archive_after,
            retry_backoff,
            retry_backoff_max,
        } = self;
        let given = lease.is_some()
            || stale_after.is_some()
            || fallback_after.is_some()
            || max_retries.is_some()
            || archive_after.is_some()
            || retry_backoff.is_some()
            || retry_backoff_max.is_some();
        if !given {
            return Ok(None);
        }
        let mut s = base()?;
        if let Some(l) = lease {
            s.lease_secs = duration(l, "--lease")?;
        }
        if let Some(l) = stale_after {
            s.stale_after_secs = duration(l, "--stale-after")?;
        }
        if let Some(l) = fallback_after {
            s.fallback_after_secs = Some(duration(l, "--fallback-after")?);
        }
        if let Some(n) = max_retries {
            s.max_retries = *n;
        }
        if let Some(n) = archive_after {
            s.archive_after = *n;
        }
        if let Some(d) = retry_backoff {
            s.retry_backoff_secs = duration(d, "--retry-backoff")?;
        }
        if let Some(d) = retry_backoff_max {
            s.retry_backoff_max_secs = duration(d, "--retry-backoff-max")?;
        }
        Ok(Some(s))
    }
}
