//! A throwaway PostgreSQL cluster for tests (and benches, through `#[path]`): `initdb` and
//! `pg_ctl` in a temporary directory under /tmp, listening on a free port of 127.0.0.1 and on a
//! unix socket in that directory, with trust authentication for the user `vine`, fsync on and
//! small shared buffers. Dropping it stops it (`pg_ctl -m immediate`) and removes the
//! directory.
//!
//! PostgreSQL refuses to run as root: run as root (CI is), the cluster's processes run as
//! `nobody` (`runuser`, else `setpriv`) over a directory given to that user; the test process
//! (root) can still use the socket directory.
//!
//! The binaries: `initdb` on PATH (and `pg_ctl`, `psql` beside the file it links to), else
//! the newest `/usr/lib/postgresql/*/bin`. A machine without them fails the test with the
//! command that installs them ([`INSTALL`]) — never a silent pass.
//!
//! Self-contained (std and `tempfile` only), so a bench can include it with `#[path]`.

#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// What to run when PostgreSQL is missing.
pub const INSTALL: &str =
    "scripts/install-postgres.sh (as root), or: sudo apt-get install -y postgresql";

/// The user the cluster's processes run as when the test runs as root.
const UNPRIVILEGED: &str = "nobody";
/// The database role every connection uses (the cluster's superuser).
pub const ROLE: &str = "vine";
/// How long `pg_ctl` may wait for a start or stop.
const PG_CTL_WAIT: Duration = Duration::from_secs(60);

/// A PostgreSQL cluster of one test; stopped and removed when dropped.
pub struct Cluster {
    /// The temporary directory: `data/`, `sock/` and `postgres.log`.
    root: tempfile::TempDir,
    /// The directory of `initdb`, `pg_ctl`, `postgres` (and usually `psql`).
    bin: PathBuf,
    /// `psql`: beside `initdb`, else on PATH.
    psql: PathBuf,
    /// The TCP port on 127.0.0.1 (also the socket's number).
    port: u16,
    /// The user the server runs as, when it is not this process's user.
    run_as: Option<String>,
    /// True while the server runs (as far as this handle knows).
    running: AtomicBool,
}

impl Cluster {
    /// Creates and starts a cluster. Panics, with what to do, when PostgreSQL is not installed
    /// or does not start (the server's log is in the message).
    pub fn start() -> Cluster {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let bin = locate(&path, Path::new(VERSIONS_DIR)).unwrap_or_else(|e| panic!("{e}"));
        let psql = [bin.join("psql")]
            .into_iter()
            .find(|p| p.is_file())
            .or_else(|| on_path("psql"))
            .unwrap_or_else(|| {
                panic!(
                    "PostgreSQL's `psql` is missing (looked beside {} and on PATH); install it with {INSTALL}",
                    bin.display()
                )
            });
        let root = tempfile::Builder::new()
            .prefix("agentvine-pg-")
            .tempdir_in("/tmp")
            .unwrap_or_else(|e| panic!("cannot make a temporary directory in /tmp: {e}"));
        let run_as = is_root().then(|| UNPRIVILEGED.to_string());
        let mut c = Cluster {
            root,
            bin,
            psql,
            port: 0,
            run_as,
            running: AtomicBool::new(false),
        };
        fs::create_dir(c.sock_dir()).unwrap_or_else(|e| panic!("cannot make the socket dir: {e}"));
        if let Some(user) = &c.run_as {
            give_to(c.root.path(), user);
        }
        c.initdb();
        // A free port can be taken between the probe and the start: try a few.
        let mut last = String::new();
        for _ in 0..5 {
            c.port = free_port();
            c.configure();
            match c.pg_ctl(&["start", "-l", &c.log().display().to_string()]) {
                Ok(_) => {
                    c.running.store(true, Ordering::SeqCst);
                    return c;
                }
                Err(e) => last = e,
            }
        }
        panic!(
            "PostgreSQL did not start: {last}\nits log ({}):\n{}",
            c.log().display(),
            fs::read_to_string(c.log()).unwrap_or_default()
        );
    }

    /// Creates the database `name` (letters, digits, `_`) and returns its connection URL.
    pub fn create_db(&self, name: &str) -> String {
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
            "database names here are [a-z0-9_]+: {name:?}"
        );
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        self.url(name)
    }

    /// The URL of database `db`: `postgres://vine@127.0.0.1:PORT/DB` (what libpq, the
    /// `postgres` crate, sqlx and `vine serve --store` accept).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://{ROLE}@127.0.0.1:{}/{db}", self.port)
    }

    /// The same database through the unix socket, as a libpq keyword string:
    /// `host=SOCKDIR port=PORT user=vine dbname=DB`.
    pub fn socket_conninfo(&self, db: &str) -> String {
        format!(
            "host={} port={} user={ROLE} dbname={db}",
            self.sock_dir().display(),
            self.port
        )
    }

    /// The `psql` program this cluster uses (beside `initdb`, else on PATH).
    pub fn psql_program(&self) -> &Path {
        &self.psql
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory of the server's unix socket.
    pub fn sock_dir(&self) -> PathBuf {
        self.root.path().join("sock")
    }

    /// The server's log so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(self.log()).unwrap_or_default()
    }

    /// Runs `sql` in database `db` with `psql` (stops at the first error); returns what it
    /// printed (unaligned, tuples only).
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = Command::new(&self.psql)
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .arg("-d")
            .arg(self.socket_conninfo(db))
            .arg("-c")
            .arg(sql)
            .env_remove("PGPASSWORD")
            .env_remove("PGSERVICE")
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.psql.display()));
        assert!(
            out.status.success(),
            "psql -c {sql:?} on {db} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `pg_ctl restart -m fast`: clients are disconnected, every committed transaction kept;
    /// returns when the server accepts connections again (same port and socket).
    pub fn restart_fast(&self) {
        self.pg_ctl(&[
            "restart",
            "-m",
            "fast",
            "-l",
            &self.log().display().to_string(),
        ])
        .unwrap_or_else(|e| {
            panic!(
                "PostgreSQL did not restart: {e}\nits log:\n{}",
                self.log_text()
            )
        });
        self.running.store(true, Ordering::SeqCst);
    }

    /// `pg_ctl stop -m fast`. Starting again is [`Cluster::start_again`].
    pub fn stop(&self) {
        self.pg_ctl(&["stop", "-m", "fast"]).unwrap_or_else(|e| {
            panic!(
                "PostgreSQL did not stop: {e}\nits log:\n{}",
                self.log_text()
            )
        });
        self.running.store(false, Ordering::SeqCst);
    }

    /// Starts a stopped cluster again (same port and data).
    pub fn start_again(&self) {
        self.pg_ctl(&["start", "-l", &self.log().display().to_string()])
            .unwrap_or_else(|e| {
                panic!(
                    "PostgreSQL did not start: {e}\nits log:\n{}",
                    self.log_text()
                )
            });
        self.running.store(true, Ordering::SeqCst);
    }

    /// Starts a stopped cluster again with more server options (`-c name=value ...`, over
    /// the configured ones), e.g. TLS.
    pub fn start_again_with(&self, options: &str) {
        self.pg_ctl(&[
            "start",
            "-l",
            &self.log().display().to_string(),
            "-o",
            options,
        ])
        .unwrap_or_else(|e| {
            panic!(
                "PostgreSQL did not start: {e}\nits log:\n{}",
                self.log_text()
            )
        });
        self.running.store(true, Ordering::SeqCst);
    }

    /// Gives a file to the user the server runs as, readable by it alone (as a TLS key must
    /// be).
    pub fn give_to_server(&self, path: &Path) {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(0o600))
            .unwrap_or_else(|e| panic!("cannot chmod {}: {e}", path.display()));
        if let Some(user) = &self.run_as {
            give_to(path, user);
        }
    }

    /// The user id the server process runs as (from `/proc` and `postmaster.pid`).
    pub fn server_uid(&self) -> u32 {
        let pid = postmaster_pid(&self.data_dir()).expect("the server runs: postmaster.pid");
        let status = fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_else(|e| panic!("cannot read /proc/{pid}/status: {e}"));
        status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no Uid line in /proc/{pid}/status"))
    }

    fn data_dir(&self) -> PathBuf {
        self.root.path().join("data")
    }

    fn log(&self) -> PathBuf {
        self.root.path().join("postgres.log")
    }

    /// `initdb`: the superuser `vine`, trust authentication, UTF-8 and the C locale (the
    /// same on every machine). Its own final sync is skipped (a test cluster lives minutes);
    /// the server itself runs with fsync on.
    fn initdb(&self) {
        let data = self.data_dir().display().to_string();
        let out = self.run(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                ROLE,
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
        );
        if let Err(e) = out {
            panic!("initdb failed: {e}");
        }
    }

    /// Appends this cluster's settings to `postgresql.conf` (the last line of a setting
    /// wins), so `pg_ctl restart` keeps them.
    fn configure(&self) {
        let conf = format!(
            "\n# agentvine test cluster\n\
             listen_addresses = '127.0.0.1'\n\
             port = {}\n\
             unix_socket_directories = '{}'\n\
             shared_buffers = 16MB\n\
             max_connections = 200\n\
             fsync = on\n\
             synchronous_commit = on\n\
             dynamic_shared_memory_type = mmap\n\
             logging_collector = off\n\
             log_min_messages = warning\n",
            self.port,
            self.sock_dir().display()
        );
        let path = self.data_dir().join("postgresql.conf");
        let mut text = fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        text.push_str(&conf);
        fs::write(&path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    }

    /// `pg_ctl -D DATA -w -t 60 ARGS`.
    fn pg_ctl(&self, args: &[&str]) -> Result<Output, String> {
        let data = self.data_dir().display().to_string();
        let wait = PG_CTL_WAIT.as_secs().to_string();
        let mut all = vec!["-D", &data, "-w", "-t", &wait];
        all.extend_from_slice(args);
        self.run("pg_ctl", &all)
    }

    /// Runs one of PostgreSQL's programs, as the unprivileged user when this process is root.
    fn run(&self, program: &str, args: &[&str]) -> Result<Output, String> {
        let exe = self.bin.join(program);
        let mut cmd = match &self.run_as {
            Some(user) => as_user(user, &exe),
            None => Command::new(&exe),
        };
        cmd.args(args)
            .current_dir(self.root.path())
            .env_remove("PGDATA")
            .env_remove("PGPORT")
            .env_remove("PGHOST");
        let out = cmd
            .output()
            .map_err(|e| format!("cannot run {}: {e}", exe.display()))?;
        if out.status.success() {
            Ok(out)
        } else {
            Err(format!(
                "{program} {} exited with {}: {}{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.running.load(Ordering::SeqCst) {
            // Immediate: the test is over, nothing needs to reach the disk.
            if self.pg_ctl(&["stop", "-m", "immediate"]).is_err() {
                kill_postmaster(&self.data_dir());
            }
        }
        // The TempDir removes the directory (root may remove the unprivileged user's files).
    }
}

/// Where Debian keeps each PostgreSQL version's programs (`N/bin`).
pub const VERSIONS_DIR: &str = "/usr/lib/postgresql";

/// The directory of PostgreSQL's server programs (`initdb`, `pg_ctl`, `postgres`): the one
/// `initdb` on `path` (a PATH value) links to or lives in, else the newest `N/bin` under
/// `versions` (Debian's /usr/lib/postgresql). When there is none, the message saying how to
/// install them.
pub fn locate(path: &std::ffi::OsStr, versions: &Path) -> Result<PathBuf, String> {
    let complete = |dir: &Path| {
        ["initdb", "pg_ctl", "postgres"]
            .iter()
            .all(|p| dir.join(p).is_file())
    };
    if let Some(initdb) = std::env::split_paths(path)
        .map(|d| d.join("initdb"))
        .find(|p| p.is_file())
    {
        // Follow links (Debian's programs live in /usr/lib/postgresql/N/bin).
        let real = fs::canonicalize(&initdb).unwrap_or(initdb.clone());
        for dir in [real.parent(), initdb.parent()].into_iter().flatten() {
            if complete(dir) {
                return Ok(dir.to_path_buf());
            }
        }
    }
    let mut found: Vec<(u32, PathBuf)> = fs::read_dir(versions)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| {
                    let v: u32 = e.file_name().to_str()?.parse().ok()?;
                    Some((v, e.path().join("bin")))
                })
                .filter(|(_, dir)| complete(dir))
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found.pop().map(|(_, dir)| dir).ok_or_else(|| {
        format!(
            "PostgreSQL is not installed: no `initdb` (with `pg_ctl` and `postgres`) on PATH or in {}/*/bin. \
             The PostgreSQL tests need it; install it with {INSTALL}",
            versions.display()
        )
    })
}

/// `name` on PATH.
fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(name))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default()
        .into_iter()
        .find(|p| p.is_file())
}

/// True when this process runs as root.
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .ok()
        .is_some_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// `exe` run as `user`: `runuser -u USER --`, else `setpriv` with the user's ids.
fn as_user(user: &str, exe: &Path) -> Command {
    if on_path("runuser").is_some() || Path::new("/usr/sbin/runuser").is_file() {
        let runuser = on_path("runuser").unwrap_or_else(|| "/usr/sbin/runuser".into());
        let mut c = Command::new(runuser);
        c.args(["-u", user, "--"]).arg(exe);
        c
    } else {
        let (uid, gid) = ids(user);
        let mut c = Command::new("setpriv");
        c.arg(format!("--reuid={uid}"))
            .arg(format!("--regid={gid}"))
            .arg("--clear-groups")
            .arg(exe);
        c
    }
}

/// The user and group ids of `user`.
fn ids(user: &str) -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        let out = Command::new("id")
            .args([flag, user])
            .output()
            .unwrap_or_else(|e| panic!("cannot run `id {flag} {user}`: {e}"));
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("no user {user:?} here (`id {flag} {user}` failed)"))
    };
    (id("-u"), id("-g"))
}

/// Gives `dir` (empty but for subdirectories) to `user`.
fn give_to(dir: &Path, user: &str) {
    let (uid, gid) = ids(user);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        std::os::unix::fs::chown(&d, Some(uid), Some(gid))
            .unwrap_or_else(|e| panic!("cannot give {} to {user}: {e}", d.display()));
        if let Ok(entries) = fs::read_dir(&d) {
            stack.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
        }
    }
}

/// A port of 127.0.0.1 that is free at this moment.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port on 127.0.0.1: {e}"))
}

/// Stops a postmaster `pg_ctl` could not: SIGQUIT (PostgreSQL's immediate shutdown) to the
/// pid in `postmaster.pid`.
fn kill_postmaster(data: &Path) {
    if let Some(pid) = postmaster_pid(data) {
        let _ = Command::new("kill")
            .args(["-QUIT", &pid.to_string()])
            .status();
    }
}

/// The server's process id, from the first line of `postmaster.pid`.
fn postmaster_pid(data: &Path) -> Option<u32> {
    fs::read_to_string(data.join("postmaster.pid"))
        .ok()
        .and_then(|t| t.lines().next().and_then(|l| l.trim().parse::<u32>().ok()))
}
