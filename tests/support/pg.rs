//! A throwaway PostgreSQL cluster for a test: `initdb` in a temporary directory, `pg_ctl
//! start` on a unix socket in it (no TCP), superuser `vine` with trust authentication;
//! stopped and removed on drop. As root, PostgreSQL's programs run as `nobody` (PostgreSQL
//! refuses to run as root). Without PostgreSQL installed, the test fails saying how to
//! install it — never a silent pass.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A running cluster.
pub struct Cluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    as_nobody: bool,
}

impl Cluster {
    /// Creates and starts a cluster (a few seconds).
    pub fn start() -> Cluster {
        let bin = bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("vine-pg")
            .tempdir()
            .expect("a temporary directory");
        let as_nobody = is_root();
        if as_nobody {
            chown_nobody(dir.path());
        }
        let c = Cluster {
            dir,
            bin,
            as_nobody,
        };
        let data = c.data();
        c.run(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "vine",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--no-instructions",
            ],
        );
        c.pg_ctl_start("");
        c
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    /// The directory of the cluster's unix socket.
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The connection URL of database `db` (the socket directory %2F-encoded as the host).
    pub fn url(&self, db: &str) -> String {
        let host = self.dir.path().display().to_string().replace('/', "%2F");
        format!("postgres://vine@{host}/{db}")
    }

    /// Creates database `name` and gives its URL.
    pub fn create_db(&self, name: &str) -> String {
        let mut c = postgres::Client::connect(&self.url("postgres"), postgres::NoTls)
            .unwrap_or_else(|e| panic!("connecting to the test cluster: {e}"));
        c.batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .unwrap_or_else(|e| panic!("creating database {name}: {e}"));
        self.url(name)
    }

    /// Stops the cluster (fast shutdown); [`Cluster::restart`] starts it again.
    pub fn stop(&self) {
        let data = self.data();
        self.run("pg_ctl", &["-D", &data, "-m", "fast", "-w", "stop"]);
    }

    /// Starts a stopped cluster again.
    pub fn restart(&self) {
        self.pg_ctl_start("");
    }

    /// Starts a stopped cluster again with more server options (`-c name=value ...`, after
    /// and so over the defaults), e.g. to listen on a TCP port with TLS.
    pub fn restart_with(&self, options: &str) {
        self.pg_ctl_start(options);
    }

    /// Gives a file in the cluster's directory to the user the server runs as, readable by
    /// it alone (a TLS key must be).
    pub fn give_to_server(&self, path: &Path) {
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        if self.as_nobody {
            chown_nobody(path);
        }
    }

    fn pg_ctl_start(&self, extra: &str) {
        let data = self.data();
        let log = self.dir.path().join("postgres.log").display().to_string();
        let opts = format!(
            "-k {} -c listen_addresses='' {extra}",
            self.dir.path().display()
        );
        self.run(
            "pg_ctl",
            &[
                "-D", &data, "-l", &log, "-o", &opts, "-w", "-t", "60", "start",
            ],
        );
    }

    /// Runs one of PostgreSQL's programs (as `nobody` when root); panics with its output if
    /// it fails.
    fn run(&self, program: &str, args: &[&str]) {
        let exe = self.bin.join(program);
        let mut cmd = if self.as_nobody {
            let mut c = Command::new("runuser");
            c.args(["-u", "nobody", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let out = cmd
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", exe.display()));
        assert!(
            out.status.success(),
            "{program} {args:?} failed: {}\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.data();
        let exe = self.bin.join("pg_ctl");
        let mut cmd = if self.as_nobody {
            let mut c = Command::new("runuser");
            c.args(["-u", "nobody", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let _ = cmd
            .args(["-D", &data, "-m", "immediate", "-w", "stop"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The directory of `initdb` and `pg_ctl`: Debian's versioned directory (newest first), else
/// `PATH`. Panics with the install command when PostgreSQL is missing.
fn bin_dir() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("initdb").is_file() && b.join("pg_ctl").is_file())
        .collect();
    versions.sort();
    if let Some(b) = versions.pop() {
        return b;
    }
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        if dir.join("initdb").is_file() && dir.join("pg_ctl").is_file() {
            return dir;
        }
    }
    panic!(
        "PostgreSQL is not installed (no initdb and pg_ctl in /usr/lib/postgresql/*/bin or on PATH); \
         these tests need a real PostgreSQL: install it with `apt-get install -y postgresql` (Debian/Ubuntu)"
    )
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn chown_nobody(dir: &Path) {
    let ok = Command::new("chown")
        .args(["nobody:", &dir.display().to_string()])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "cannot chown {} to nobody", dir.display());
}
