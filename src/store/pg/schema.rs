//! The board's schema: migrations compiled into the binary, applied in order at start under
//! an advisory lock (so servers starting together apply each once), with the version reached
//! in `vine_schema`. A database whose schema is newer than this binary knows is refused
//! untouched.

use postgres::Client;
use postgres::types::Json;

use super::conn::Target;
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::settings::Settings;

/// Every migration, in order: (the version it brings the schema to, its SQL).
const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("migrations/0001_board.sql")),
    (2, include_str!("migrations/0002_leader.sql")),
];

/// The schema version this binary writes.
pub(crate) const LATEST: i32 = 2;

/// The advisory lock key that serializes migrations (any servers, one database).
const MIGRATION_LOCK: i64 = 0x7669_6e65_5f73_6368; // "vine_sch"

/// Brings the schema up to date and makes the board row if there is none (default settings).
/// Refuses a schema newer than [`LATEST`], changing nothing.
pub(crate) fn migrate(client: &mut Client, target: &Target) -> Result<()> {
    let err = |e| target.error("preparing the board's tables in", e);
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .map_err(err)?;
    let result = apply(client, target);
    // Released with the session anyway; an error here changes nothing that was done.
    let _ = client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]);
    result
}

/// The schema version the database is at (0: none yet).
pub(crate) fn version(client: &mut Client, target: &Target) -> Result<i32> {
    let err = |e| target.error("reading the schema version of", e);
    let row = client
        .query_one(
            "SELECT CASE WHEN to_regclass('vine_schema') IS NULL THEN 0 \
             ELSE (SELECT coalesce(max(version), 0) FROM vine_schema) END",
            &[],
        )
        .map_err(err)?;
    row.try_get(0).map_err(err)
}

fn apply(client: &mut Client, target: &Target) -> Result<()> {
    let err = |e| target.error("preparing the board's tables in", e);
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS vine_schema (\
                 version integer PRIMARY KEY, \
                 applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .map_err(err)?;
    let current = version(client, target)?;
    if current > LATEST {
        return Err(Error::Incompatible(format!(
            "the board's database {} has schema version {current}, newer than this vine knows ({LATEST}): \
             a newer vine made it. Nothing was changed; run that version of vine (or a later one)",
            target.location()
        )));
    }
    for (v, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        let mut tx = client.transaction().map_err(err)?;
        tx.batch_execute(sql).map_err(err)?;
        tx.execute("INSERT INTO vine_schema (version) VALUES ($1)", &[v])
            .map_err(err)?;
        tx.commit().map_err(err)?;
    }
    client
        .execute(
            "INSERT INTO board (id, settings, progress) VALUES (1, $1, $2) ON CONFLICT (id) DO NOTHING",
            &[&Json(Settings::default()), &Json(Progress::default())],
        )
        .map_err(err)?;
    Ok(())
}
