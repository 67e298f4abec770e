//! A `vine serve` process on 127.0.0.1: started on a free port (or restarted on the same one),
//! its URL read from the line it prints, SIGKILLed and reaped when dropped.

use std::fs;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use super::command::{ISOLATED, vine_without};

/// How long a starting server may take to print its address.
const START_LIMIT: Duration = Duration::from_secs(60);

/// A `vine serve` process with none of the caller's [`ISOLATED`] variables.
pub struct Server {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT` (`https://` with TLS), as the server printed it.
    pub url: String,
    pub addr: SocketAddr,
    pub port: u16,
    /// The served directory (canonical).
    pub root: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    /// The server's stderr, across restarts.
    log: PathBuf,
}

impl Server {
    /// Serves `root` (made if missing) on a free port of 127.0.0.1, with extra `serve` flags
    /// and environment. Its stderr goes to `<root>-serve.log` beside `root`.
    pub fn start(root: &Path, args: &[&str], env: &[(&str, &str)]) -> Server {
        fs::create_dir_all(root).unwrap();
        let root = root.canonicalize().unwrap();
        let log = root.parent().unwrap().join(format!(
            "{}-serve.log",
            root.file_name().unwrap().to_string_lossy()
        ));
        let mut s = Server {
            child: None,
            url: String::new(),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            port: 0,
            root,
            args: args.iter().map(|a| a.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            log,
        };
        s.spawn("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        s
    }

    /// Starts the process listening on `listen`; waits for its `listening on URL` line.
    fn spawn(&mut self, listen: &str) -> Result<(), String> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut c = vine_without(ISOLATED);
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c.arg("serve")
            .arg("--root")
            .arg(&self.root)
            .arg("--listen")
            .arg(listen)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        let mut child = c
            .spawn()
            .map_err(|e| format!("cannot start vine serve: {e}"))?;
        // The first line is the address; the rest is read to the end, so the server never
        // writes to a full or closed pipe.
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut lines = BufReader::new(out).lines();
            if let Some(Ok(first)) = lines.next() {
                let _ = tx.send(first);
            }
            for _ in lines {}
        });
        let first = rx.recv_timeout(START_LIMIT).unwrap_or_default();
        let Some(url) = first.trim().strip_prefix("listening on ") else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "vine serve --listen {listen} printed {first:?}; its log:\n{}",
                self.stderr()
            ));
        };
        let hostport = url
            .split_once("://")
            .map(|(_, h)| h)
            .unwrap_or_else(|| panic!("no scheme in {first:?}"));
        let addr: SocketAddr = hostport.parse().unwrap();
        assert!(addr.ip().is_loopback());
        assert_ne!(addr.port(), 0);
        self.url = url.to_string();
        self.addr = addr;
        self.port = addr.port();
        self.child = Some(child);
        Ok(())
    }

    /// What the server wrote to stderr so far (across restarts).
    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    /// SIGKILLs the server and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            // Child::kill sends SIGKILL.
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same port and root.
    pub fn restart(&mut self) {
        let listen = format!("127.0.0.1:{}", self.port);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.spawn(&listen) {
                Ok(()) => return,
                Err(e) if Instant::now() >= deadline => panic!("restart failed: {e}"),
                Err(_) => thread::sleep(Duration::from_millis(100)),
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}
