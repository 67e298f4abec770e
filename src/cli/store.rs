//! `vine board export` and `vine board import`: a board moved between files and PostgreSQL.

use std::path::Path;

use agentvine::error::{ExitCode, Result};
use agentvine::store::Transport;
use agentvine::store::pg::{Moved, PgStore};
use serde_json::json;

use super::Output;
use super::args::StoreCmd;

/// Runs `vine board export|import`; `dir` is the global `--dir`.
pub fn run(action: StoreCmd, dir: Option<&Path>) -> Result<Output> {
    let (moved, store, dir, done) = match action {
        StoreCmd::Export { store, dir } => {
            let pg = PgStore::open(&store)?;
            (pg.export(&dir)?, pg.location(), dir, "Exported")
        }
        StoreCmd::Import { store, dir: given } => {
            let dir = match given {
                Some(d) => d,
                None => super::board_dir(dir)?,
            };
            let pg = PgStore::open(&store)?;
            (pg.import(&dir)?, pg.location(), dir, "Imported")
        }
    };
    let (from, to) = match done {
        "Exported" => (store.clone(), dir.display().to_string()),
        _ => (dir.display().to_string(), store.clone()),
    };
    Ok(Output {
        json: json!({ "moved": moved, "store": store, "dir": dir.display().to_string() }),
        text: format!(
            "{done} the board from {from} to {to}: {}\n",
            summary(&moved)
        ),
        exit: ExitCode::Done,
    })
}

fn summary(m: &Moved) -> String {
    format!(
        "{} tasks on the queue, {} archived, {} workers, {} log entries, {} sessions, {} board files",
        m.tasks, m.archived, m.workers, m.messages, m.sessions, m.files
    )
}
