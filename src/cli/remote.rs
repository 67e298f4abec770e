//! The remote side of the CLI: boards on a server (`--url`), `vine vps ...`, and `vine op`
//! (one op as JSON, which remote clients run through `/execute` on servers without `/v1/op`).

use std::path::{Path, PathBuf};

use agentvine::apikey::ApiKey;
use agentvine::remote::{Http, HttpOptions, RemoteStore, Vps};
use agentvine::store::Transport;
use agentvine::wire::{self, OpRequest};
use agentvine::{Board, Error, ExitCode, Op, Reply, Result, Settings, op};
use serde_json::{Value, json};

use super::Output;
use super::args::{SettingsFlags, VpsCmd};

/// The board on the server at `url`.
pub fn board(url: &str, key_file: Option<&Path>) -> Result<Board> {
    Board::connect(url, ApiKey::from_env_or_file(key_file)?)
}

/// `vine --url URL init [settings flags]`: creates the board on the server (on `vine serve` it
/// is there already; on a server with only the original API, `vine init` runs there through
/// `/execute`), keeping every board file already there; flags change the board's settings.
pub fn init(
    url: &str,
    key_file: Option<&Path>,
    dir: Option<&Path>,
    flags: &SettingsFlags,
) -> Result<Output> {
    if let Some(d) = dir {
        return Err(Error::Invalid(format!(
            "with --url, `vine init` takes no DIR ({}): the board is the server's base directory",
            d.display()
        )));
    }
    let store = RemoteStore::connect(url, ApiKey::from_env_or_file(key_file)?)?;
    // Flags change the board's current settings, or the defaults of a board not made yet.
    let settings = flags.apply(|| match store.execute(Op::Settings(op::Settings)) {
        Ok(Reply::Settings { settings }) => Ok(settings),
        Ok(other) => Err(Error::Protocol(format!(
            "the server answered a settings request with {other:?}"
        ))),
        Err(Error::NoBoard(_)) => Ok(Settings::default()),
        Err(e) => Err(e),
    })?;
    let settings = store.init(settings.as_ref())?;
    Ok(super::init::ready(store.location(), settings))
}

/// The board on a server, for hooks that must not hold Claude up: 2 s timeout, no retries.
pub fn quick_board(url: &str, key_file: Option<&Path>) -> Result<Board> {
    let key = ApiKey::from_env_or_file(key_file)?;
    let opts = HttpOptions {
        timeout: std::time::Duration::from_secs(2),
        retry_for: std::time::Duration::ZERO,
        ..HttpOptions::from_env()?
    };
    Ok(Board::with_transport(
        agentvine::remote::RemoteStore::connect_with(url, key, opts)?,
    ))
}

fn vps_client(url: Option<&str>, key_file: Option<&Path>) -> Result<Vps> {
    let Some(url) = url else {
        return Err(Error::Invalid(
            "which server? give --url URL or set VINE_URL (and the key in VINE_API_KEY)".into(),
        ));
    };
    let key = ApiKey::from_env_or_file(key_file)?;
    Ok(Vps::new(Http::new(url, key, HttpOptions::from_env()?)?))
}

fn done(json: Value, text: String) -> Result<Output> {
    Ok(Output {
        json,
        text,
        exit: ExitCode::Done,
    })
}

/// `vine vps ACTION`.
pub fn vps(action: VpsCmd, url: Option<&str>, key_file: Option<&Path>) -> Result<Output> {
    let vps = vps_client(url, key_file)?;
    match action {
        VpsCmd::Test => {
            let v = vps.test()?;
            let board = v.pointer("/agentvine/version").and_then(Value::as_str);
            let text = match board {
                Some(ver) => {
                    format!("The server answers: vine serve {ver}, with the board endpoint")
                }
                None => {
                    "The server answers (the original API: the board is reached through /execute)"
                        .into()
                }
            };
            done(v, text)
        }
        VpsCmd::Ls { path } => {
            let v = vps.list(&path)?;
            let mut text = String::new();
            for f in v["files"].as_array().into_iter().flatten() {
                let dir = f["is_directory"].as_bool().unwrap_or(false);
                text.push_str(&format!(
                    "{}{}\t{}\n",
                    f["name"].as_str().unwrap_or(""),
                    if dir { "/" } else { "" },
                    f["size"]
                ));
            }
            done(v, text.trim_end().to_string())
        }
        VpsCmd::Read { file } => {
            let content = vps.read(&file)?;
            // The file's own last newline ends the output; no second one.
            let text = content.strip_suffix('\n').unwrap_or(&content).to_string();
            done(json!({"content": content}), text)
        }
        VpsCmd::Deploy { paths, to } => {
            let pairs: Vec<(PathBuf, String)> = match to {
                Some(dir) => paths
                    .iter()
                    .map(|p| {
                        let name = p
                            .file_name()
                            .map(|n| n.to_string_lossy().to_string())
                            .unwrap_or_default();
                        (p.clone(), format!("{}/{name}", dir.trim_end_matches('/')))
                    })
                    .collect(),
                None if paths.len() == 2 => {
                    vec![(paths[0].clone(), paths[1].to_string_lossy().to_string())]
                }
                None => {
                    return Err(Error::Invalid(
                        "give LOCAL REMOTE, or several LOCAL files with --to DIR".into(),
                    ));
                }
            };
            let mut files = Vec::new();
            for (local, remote) in &pairs {
                let content = std::fs::read_to_string(local)
                    .map_err(|e| Error::Invalid(format!("cannot read {}: {e}", local.display())))?;
                files.push((remote.clone(), content));
            }
            let replies = vps.deploy_many(&files)?;
            let text = pairs
                .iter()
                .map(|(l, r)| format!("Deployed {} -> {r}", l.display()))
                .collect::<Vec<_>>()
                .join("\n");
            done(json!({"deployed": replies}), text)
        }
        VpsCmd::Exec { command, workdir } => {
            let out = vps.exec(&command, workdir.as_deref())?;
            let mut text = out.stdout.clone();
            if !out.stderr.is_empty() {
                eprint!("{}", out.stderr);
            }
            if let Some(m) = &out.message {
                eprintln!("vine: {m}");
            }
            if text.ends_with('\n') {
                text.pop();
            }
            let code = i32::try_from(out.returncode).unwrap_or(1);
            Ok(Output {
                json: json!({"stdout": out.stdout, "stderr": out.stderr, "returncode": out.returncode, "message": out.message}),
                text,
                exit: if code == 0 {
                    ExitCode::Done
                } else {
                    ExitCode::Other
                },
            })
        }
        VpsCmd::Find { pattern, directory } => {
            let files = vps.find(&pattern, &directory)?;
            let text = files.join("\n");
            done(json!({"files": files}), text)
        }
        VpsCmd::Grep { pattern, directory } => {
            let matches = vps.grep(&pattern, &directory)?;
            let text = matches
                .iter()
                .map(|(f, n, t)| format!("{f}:{n}:{t}"))
                .collect::<Vec<_>>()
                .join("\n");
            let json_matches: Vec<Value> = matches
                .iter()
                .map(|(f, n, t)| json!({"file": f, "line": n, "text": t}))
                .collect();
            done(json!({"matches": json_matches}), text)
        }
    }
}

/// `vine op JSON`: runs one op on the local board and prints the same JSON body as `/v1/op`.
pub fn op(request: &str, dir: Option<&Path>) -> Result<Output> {
    let req: OpRequest = serde_json::from_str(request)
        .map_err(|e| Error::Invalid(format!("the op request is not valid JSON: {e}")))?;
    let dir = match dir {
        Some(d) => d.to_path_buf(),
        None => std::env::current_dir().map_err(|e| Error::io("reading", ".", e))?,
    };
    // Every outcome, a missing board included, is one JSON body the client can read.
    let result =
        super::open_store(dir).and_then(|store| store.execute_keyed(req.op, req.key.as_deref()));
    let exit = match &result {
        Ok(_) => ExitCode::Done,
        Err(e) => e.exit_code(),
    };
    let body = wire::to_value(&result).map_err(|e| Error::Protocol(e.to_string()))?;
    Ok(Output {
        text: body.to_string(),
        json: body,
        exit,
    })
}
