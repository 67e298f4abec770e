//! `vine`: the command Claude Code skills and hooks call. See `vine --help`.

mod cli;

use clap::Parser;
use serde_json::{Value, json};

fn main() {
    let cli = match cli::args::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let wants_json = std::env::args().any(|a| a == "--json");
            let is_error = e.use_stderr();
            if wants_json && is_error {
                let msg = e.render().to_string();
                let first = msg
                    .lines()
                    .next()
                    .unwrap_or("bad usage")
                    .trim_start_matches("error: ");
                println!(
                    "{}",
                    json!({"ok": false, "error": {"kind": "usage", "code": 2, "message": first}})
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
                println!("{v}");
            } else if !out.text.is_empty() {
                println!("{}", out.text);
            }
            out.exit.code()
        }
        Err(e) => {
            let code = e.exit_code().code();
            if as_json {
                println!(
                    "{}",
                    json!({"ok": false, "error": {"kind": e.kind(), "code": code, "message": e.to_string()}})
                );
            } else {
                eprintln!("vine: {e}");
            }
            code
        }
    };
    std::process::exit(code);
}
