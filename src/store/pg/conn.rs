//! Connections to the board's database: the connection string (URL or key=value, as libpq
//! takes them), where it points (without the password, for messages), connecting, and what a
//! database error means for the op (unreachable and worth a retry, or a plain failure).

use std::str::FromStr;
use std::time::Duration;

use postgres::config::{Host, SslMode};
use postgres::error::SqlState;
use postgres::{Client, NoTls};

use crate::error::{Error, Result};

/// How long a connection attempt may take when the connection string sets no
/// `connect_timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A parsed connection string and a description of where it points.
#[derive(Clone)]
pub(crate) struct Target {
    config: postgres::Config,
    location: String,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The config may hold a password: only the location is shown.
        f.debug_struct("Target")
            .field("location", &self.location)
            .finish()
    }
}

impl Target {
    /// Parses a connection string: `postgres://USER[:PASSWORD]@HOST[:PORT]/DB[?...]` (a unix
    /// socket directory as a %2F-encoded host) or `host=... user=... dbname=...`.
    pub(crate) fn parse(s: &str) -> Result<Target> {
        let mut config = postgres::Config::from_str(s.trim()).map_err(|e| {
            // The message never repeats the string, which may hold a password.
            Error::Invalid(format!(
                "--store is not a PostgreSQL connection string ({e}); give postgres://USER@HOST/DB \
                 (a unix socket directory as %2F-encoded host: postgres://USER@%2Frun%2Fpostgresql/DB) \
                 or host=HOST user=USER dbname=DB"
            ))
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("vine serve");
        }
        let location = describe(&config);
        Ok(Target { config, location })
    }

    /// Where the board is, for messages: `postgres://USER@HOST:PORT/DB`, never the password.
    pub(crate) fn location(&self) -> &str {
        &self.location
    }

    /// Opens a connection, set up for the board's statements.
    pub(crate) fn connect(&self) -> Result<Client> {
        let connected = match self.config.get_ssl_mode() {
            SslMode::Require => self.config.connect(super::tls::connector()?),
            _ => self.config.connect(NoTls),
        };
        let mut client = connected.map_err(|e| self.error("connecting to", e))?;
        // Statements with a board version as parameter are planned for that value (a generic
        // plan could scan every archived task to find the few rows that changed).
        client
            .batch_execute("SET plan_cache_mode = force_custom_plan")
            .map_err(|e| self.error("setting up", e))?;
        Ok(client)
    }

    /// The board's error for a database error met while `action` (e.g. "writing to").
    pub(crate) fn error(&self, action: &'static str, e: postgres::Error) -> Error {
        let detail = detail(&e);
        if unreachable(&e) {
            Error::Unreachable(format!(
                "the board's database {} cannot be reached ({action} it: {detail}); the op was not applied, \
                 or it may have been: sent again with the same request key it is applied once",
                self.location
            ))
        } else {
            Error::io(action, self.location.clone(), std::io::Error::other(detail))
        }
    }
}

/// `postgres://USER@HOST:PORT/DB` from a connection's settings (unix socket directories
/// %2F-encoded, as a URL would have them).
fn describe(c: &postgres::Config) -> String {
    let hosts: Vec<String> = c
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let name = match h {
                Host::Tcp(name) => name.clone(),
                Host::Unix(path) => path.display().to_string().replace('/', "%2F"),
            };
            // The default port is left out, as a connection string would.
            match c.get_ports().get(i).or(c.get_ports().first()) {
                Some(port) if *port != 5432 => format!("{name}:{port}"),
                _ => name,
            }
        })
        .collect();
    let host = if hosts.is_empty() {
        "localhost".to_string()
    } else {
        hosts.join(",")
    };
    let user = c.get_user().map(|u| format!("{u}@")).unwrap_or_default();
    let db = c.get_dbname().or(c.get_user()).unwrap_or_default();
    format!("postgres://{user}{host}/{db}")
}

/// The database's own message where there is one (the generic `db error` says nothing).
fn detail(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!("{} ({})", db.message(), db.code().code());
            if let Some(d) = db.detail() {
                s.push_str(": ");
                s.push_str(d);
            }
            s
        }
        None => {
            let mut s = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(cause) = source {
                s.push_str(": ");
                s.push_str(&cause.to_string());
                source = cause.source();
            }
            s
        }
    }
}

/// True when the database could not be reached or went away, or refused for a reason that
/// passes (shutting down, starting, too many connections, a serialization failure): the op
/// was not applied (or its commit's outcome is unknown), and a retry is the way out.
pub(crate) fn unreachable(e: &postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    if let Some(code) = e.code() {
        let c = code.code();
        return c.starts_with("08")
            || c.starts_with("57P")
            || *code == SqlState::TOO_MANY_CONNECTIONS
            || *code == SqlState::T_R_SERIALIZATION_FAILURE
            || *code == SqlState::T_R_DEADLOCK_DETECTED
            || *code == SqlState::READ_ONLY_SQL_TRANSACTION;
    }
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        if cause.is::<std::io::Error>() {
            return true;
        }
        source = cause.source();
    }
    e.to_string().starts_with("timeout") || e.to_string().starts_with("error connecting")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_forms_parse_and_the_location_hides_the_password() {
        let t = Target::parse("postgres://vine:secret@db.example.com:6543/board").unwrap();
        assert_eq!(t.location(), "postgres://vine@db.example.com:6543/board");
        assert!(!format!("{t:?}").contains("secret"));
        let t = Target::parse("postgres://vine@%2Ftmp%2Fpg/board").unwrap();
        assert_eq!(t.location(), "postgres://vine@%2Ftmp%2Fpg/board");
        let t = Target::parse("host=/run/postgresql user=vine dbname=b password=x").unwrap();
        assert_eq!(t.location(), "postgres://vine@%2Frun%2Fpostgresql/b");
        let e = Target::parse("postgres://vine:secret@db/b?nonsense=1").unwrap_err();
        assert!(matches!(e, Error::Invalid(_)));
        assert!(!e.to_string().contains("secret"), "{e}");
    }
}
