//! `vine`: the command Claude Code skills and hooks call. See `vine --help`.

mod cli;

use std::io::Write;

use clap::Parser;
use serde_json::{Value, json};

fn main() {
    // `vine serve` runs each /execute command under this same program as its supervisor.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args
        .get(1)
        .is_some_and(|a| a == agentvine::server::SUPERVISOR_ARG)
    {
        std::process::exit(agentvine::server::supervise(&args[2..]));
    }
    let cli = match cli::args::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let wants_json = std::env::args_os().any(|a| a == "--json");
            if wants_json && e.use_stderr() {
                println!(
                    "{}",
                    json!({"ok": false, "error": {"kind": "usage", "code": 2, "message": usage_message(&e)}})
                );
                std::process::exit(2);
            }
            e.exit();
        }
    };
    let as_json = cli.json;
    let code = match cli::run(cli) {
        Ok(out) => {
            if as_json {
                let mut v = out.json;
                if let Value::Object(m) = &mut v {
                    m.insert("ok".into(), Value::Bool(true));
                }
                say(&v.to_string());
            } else if !out.text.is_empty() {
                say(&out.text);
            }
            out.exit.code()
        }
        Err(e) => {
            let code = e.exit_code().code();
            let mut error = json!({"kind": e.kind(), "code": code, "message": e.to_string()});
            // A read of a damaged board still shows what could be read, with the damage.
            let partial = match &e {
                agentvine::Error::DamagedRead { reply, damage } => {
                    error["damaged"] = json!(damage);
                    Some(reply)
                }
                _ => None,
            };
            if as_json {
                let mut v = partial
                    .and_then(|r| serde_json::to_value(r).ok())
                    .filter(Value::is_object)
                    .unwrap_or_else(|| json!({}));
                v["ok"] = Value::Bool(false);
                v["error"] = error;
                say(&v.to_string());
            } else {
                if let Some(r) = partial {
                    say(&cli::render_reply(r));
                }
                eprintln!("vine: {e}");
            }
            code
        }
    };
    std::process::exit(code);
}

/// A clap error as one line for `--json` output: the whole error, without the help hints.
fn usage_message(e: &clap::Error) -> String {
    use clap::error::ErrorKind;
    if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        return "a subcommand is required here; see --help for the list".into();
    }
    let text = e.render().to_string();
    let parts: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("For more information"))
        .map(|l| l.trim_start_matches("error: "))
        .collect();
    parts.join(" ")
}

/// Prints a line on stdout; a closed pipe (`vine tasks | head`) is not an error.
fn say(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
    let _ = out.flush();
}
