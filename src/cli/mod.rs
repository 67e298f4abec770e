//! Runs one `vine` command. The board's commands (`board`) run on the board `--url` or
//! `--dir` names (else `$VINE_DIR`, else the nearest `.vine/`); the commands that set things up
//! are `init`, `serve`, `vps` and `op` (`remote`), `worker` and `hook`. Every command's
//! output is one `Output`: a JSON object, its text, the exit code.

pub mod args;
mod board;
mod hook;
mod init;
mod pool;
mod progress;
mod remote;
mod render;
#[cfg(feature = "postgres")]
mod store;
mod worker;

use std::path::{Path, PathBuf};
use std::time::Duration;

use agentvine::{Board, Error, ExitCode, Reply, Result};
use serde_json::{Value, json};

use args::{Cli, Command};

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
    if cli.verbose {
        agentvine::remote::on_failover(|f| {
            eprintln!("vine: {} did not answer ({}); {} did", f.from, f.why, f.to);
        });
    }
    match cli.command {
        Command::Init {
            claude: true,
            path,
            role,
            hook_command,
            ..
        } => init::claude(path, cli.dir, cli.url, role, &hook_command),
        Command::Init { path, settings, .. } => match &cli.url {
            Some(url) => remote::init(url, cli.key_file.as_deref(), path.as_deref(), &settings),
            None => init::local(path.or(cli.dir), &settings),
        },
        Command::Board(command) => {
            let board = match &cli.url {
                Some(url) => remote::board(url, cli.key_file.as_deref())?,
                None => open_board(cli.dir.as_deref())?,
            };
            board::run(&board, command, cli.worker.as_deref())
        }
        Command::Serve(a) => serve(a, cli.key_file.as_deref()),
        Command::Dashboard(a) => dashboard(
            a,
            cli.dir.as_deref(),
            cli.url.as_deref(),
            cli.key_file.as_deref(),
        ),
        Command::Vps { action } => remote::vps(action, cli.url.as_deref(), cli.key_file.as_deref()),
        Command::Op { request } => remote::op(&request, cli.dir.as_deref()),
        #[cfg(feature = "postgres")]
        Command::Store { action } => store::run(action, cli.dir.as_deref()),
        Command::Worker(a) => worker::start(
            a,
            worker_id(cli.worker.as_deref())?,
            cli.url.as_deref(),
            cli.dir.as_deref(),
            cli.key_file.as_deref(),
        ),
        Command::Pool(a) => pool::start(
            a,
            cli.url.as_deref(),
            cli.dir.as_deref(),
            cli.key_file.as_deref(),
            cli.json,
        ),
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
    }
}

/// `vine serve`.
fn serve(a: args::ServeArgs, key_file: Option<&Path>) -> Result<Output> {
    // A limit below a second would cut every command or request off.
    let at_least_1s = |d: Duration| Duration::from_secs(d.as_secs().max(1));
    let mut cfg = agentvine::server::ServeConfig::new(a.root, a.listen);
    cfg.key = agentvine::apikey::ApiKey::from_env_or_file(key_file)?;
    cfg.tls = a.tls_cert.zip(a.tls_key);
    cfg.exec.enabled = !a.no_exec;
    cfg.exec.timeout = at_least_1s(a.exec_timeout);
    cfg.exec.max_output = a.exec_max_output;
    cfg.exec.max_concurrent = a.exec_max_concurrent.max(1);
    cfg.max_body = a.max_body;
    cfg.body_timeout = at_least_1s(a.body_timeout);
    cfg.original_only = a.original_only;
    cfg.open_browser = a.open;
    cfg.store = a.store.filter(|s| !s.trim().is_empty());
    if let Some(advertise) = a.advertise {
        if cfg.store.is_none() {
            return Err(Error::Invalid(
                "--advertise is for servers sharing a board in PostgreSQL (--store); a board in files has one server".into(),
            ));
        }
        cfg.advertise = advertise;
    }
    agentvine::server::serve(cfg)?;
    Ok(Output {
        json: json!({}),
        text: String::new(),
        exit: ExitCode::Done,
    })
}

/// `vine dashboard`: the control room of a local board, served on loopback without a key
/// (with `--key-file`, behind that key on any address) and without `/execute`.
fn dashboard(
    a: args::DashboardArgs,
    dir: Option<&Path>,
    url: Option<&str>,
    key_file: Option<&Path>,
) -> Result<Output> {
    if let (Some(url), None) = (url, dir) {
        return Err(Error::Invalid(format!(
            "the board at {url} is on a server, whose control room is at its own address: open {}/ in a browser \
             (or give --dir DIR for a local board)",
            url.split(',')
                .next()
                .unwrap_or(url)
                .trim()
                .trim_end_matches('/')
        )));
    }
    let key = match key_file {
        Some(f) => agentvine::apikey::ApiKey::from_env_or_file(Some(f))?,
        None => None,
    };
    if key.is_none() && !a.listen.ip().is_loopback() {
        return Err(Error::Invalid(format!(
            "vine dashboard listens on {} only with --key-file FILE: without a key only a loopback address (127.0.0.1) is allowed",
            a.listen
        )));
    }
    let board = board_dir(dir)?;
    // Opened first, so a missing board is reported, not created.
    agentvine::store::local::LocalStore::open(board.clone())?;
    let mut cfg = agentvine::server::ServeConfig::new(board, a.listen);
    cfg.key = key;
    cfg.exec.enabled = false;
    cfg.open_browser = a.open;
    agentvine::server::serve(cfg)?;
    Ok(Output {
        json: json!({}),
        text: String::new(),
        exit: ExitCode::Done,
    })
}

/// The local board's directory: `--dir`, `$VINE_DIR`, or the nearest `.vine/` upward.
pub(crate) fn board_dir(dir: Option<&Path>) -> Result<PathBuf> {
    if let Some(d) = dir {
        return Ok(d.to_path_buf());
    }
    if let Some(d) = std::env::var_os("VINE_DIR").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d));
    }
    let cwd = std::env::current_dir().map_err(|e| Error::io("reading", ".", e))?;
    Board::find_dir(&cwd).ok_or_else(|| {
        Error::NoBoard(
            "no board found: no .vine/ here or in any parent directory. Create one with `vine init`, \
             or point at one with --dir DIR or VINE_DIR"
                .into(),
        )
    })
}

/// Opens the board named by `--dir`, `$VINE_DIR`, or the nearest `.vine/` upward, for one
/// command (see [`open_store`]).
fn open_board(dir: Option<&Path>) -> Result<Board> {
    Ok(Board::with_transport(open_store(board_dir(dir)?)?))
}

/// Opens the local board in `dir` for one command: its change goes straight to the JSON files
/// when the journal holds nothing, or to the journal with `VINE_COMMIT=journal` (then the
/// files are written when it exits).
pub(crate) fn open_store(dir: PathBuf) -> Result<agentvine::store::local::LocalStore> {
    use agentvine::store::local::{Commit, LocalStore};
    let commit = match std::env::var("VINE_COMMIT").ok().as_deref() {
        None | Some("" | "files") => Commit::Files,
        Some("journal") => Commit::Journal,
        Some(other) => {
            return Err(Error::Invalid(format!(
                "VINE_COMMIT={other:?}: it is `files` (the default: a command writes the JSON files) or `journal`"
            )));
        }
    };
    Ok(LocalStore::open(dir)?.committing(commit))
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
