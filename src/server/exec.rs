//! `POST /execute {"command", "workdir"}`: runs a shell command in the base directory (or a
//! folder inside it) under a supervisor (see `supervisor.rs`) that kills everything the command
//! started, however it detached, when the command's shell exits or the timeout hits. Output is
//! capped, and at most `--exec-max-concurrent` commands run at once: a slot is held until every
//! process of its command is gone. `--no-exec` turns it off.

use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::oneshot;

use super::reply::{ErrorReply, check_len, parse_body, success};
use super::supervisor::{PROBE_REPLY, SUPERVISOR_ARG};
use super::{App, ExecConfig};
use crate::error::{Error, Result};
use crate::store::paths;

/// Longest command, in bytes: the kernel's limit for one argument (`MAX_ARG_STRLEN`, 128 KiB
/// with the terminating NUL), since the command is handed to `sh -c` as one.
pub const MAX_COMMAND: usize = 128 * 1024 - 1;

/// How long the supervisor may take to kill what is left after it was told to stop (it gives
/// up on unkillable processes after 10 s) before it is killed itself.
const STOP_GRACE: Duration = Duration::from_secs(15);

/// How long output is still read after the supervisor exited (only processes it could not
/// kill can hold the pipes that long); what was read by then is returned.
const DRAIN: Duration = Duration::from_secs(2);

#[derive(Deserialize)]
pub struct ExecBody {
    command: String,
    #[serde(default)]
    workdir: Option<String>,
}

/// The refusal of a command `sh -c` cannot run, if it is one.
fn check_command(command: &str) -> Result<(), ErrorReply> {
    let refuse = |m: String| Err(ErrorReply::bad_request(m));
    if command.contains('\0') {
        return refuse(
            "the command contains a NUL byte, which no shell command can hold; remove it".into(),
        );
    }
    if command.bytes().all(|b| b" \t\n\x0b\x0c\r".contains(&b)) {
        return refuse("the command is empty".into());
    }
    if command.len() > MAX_COMMAND {
        return refuse(format!(
            "the command is {} bytes; /execute takes at most {MAX_COMMAND} (the system's limit for \
             one argument). Deploy a long script with /deploy and run it with `sh FILE`",
            command.len()
        ));
    }
    Ok(())
}

/// Output of one stream, kept up to a cap while the rest is drained, and readable at any time
/// (so what was read is returned even if the pipe never closes).
struct Capture {
    kept: Arc<Mutex<(Vec<u8>, bool)>>,
    reader: Option<tokio::task::JoinHandle<()>>,
}

impl Capture {
    fn start(stream: Option<impl AsyncRead + Unpin + Send + 'static>, cap: usize) -> Self {
        let kept = Arc::new(Mutex::new((Vec::new(), false)));
        let reader = stream.map(|mut r| {
            let kept = kept.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                while let Ok(n @ 1..) = r.read(&mut buf).await {
                    let mut k = kept.lock().unwrap_or_else(|p| p.into_inner());
                    let room = cap.saturating_sub(k.0.len());
                    k.0.extend_from_slice(&buf[..n.min(room)]);
                    k.1 |= n > room;
                }
            })
        });
        Capture { kept, reader }
    }

    /// What was read (and whether some was cut), once the stream ended or after [`DRAIN`].
    async fn finish(self) -> (Vec<u8>, bool) {
        if let Some(mut r) = self.reader
            && tokio::time::timeout(DRAIN, &mut r).await.is_err()
        {
            r.abort();
        }
        let mut k = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        (std::mem::take(&mut k.0), k.1)
    }
}

/// How a command ended.
struct Outcome {
    status: ExitStatus,
    timed_out: bool,
    stdout: (Vec<u8>, bool),
    stderr: (Vec<u8>, bool),
}

/// `POST /execute`.
pub async fn execute(
    State(app): State<Arc<App>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ErrorReply> {
    if !app.exec.enabled {
        return Err(ErrorReply::new(
            StatusCode::FORBIDDEN,
            "command execution is switched off on this server (vine serve --no-exec)",
        ));
    }
    let b: ExecBody = parse_body(body)?;
    check_command(&b.command)?;
    check_len(
        "workdir",
        b.workdir.as_deref().unwrap_or(""),
        0,
        crate::validate::MAX_PATH,
    )?;
    let dir = match paths::resolve(
        &app.root,
        b.workdir
            .as_deref()
            .filter(|w| !w.is_empty())
            .unwrap_or("."),
    ) {
        Ok(d) if d.is_dir() => d,
        Ok(_) => {
            return Err(ErrorReply::bad_request(
                "workdir is not a directory inside the base directory",
            ));
        }
        Err(e) => return Err(ErrorReply::forbidden(&e)),
    };
    let Ok(slot) = app.exec_slots.clone().try_acquire_owned() else {
        return Err(ErrorReply::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "{} commands are already running (the limit); try again shortly",
                app.exec.max_concurrent
            ),
        ));
    };
    let child = supervised(&app.exec, &b.command, &dir)
        .map_err(|e| ErrorReply::internal(format!("cannot start the command: {e}")))?;
    // The command runs to its end in a task of its own, which holds the slot until every
    // process of the command is gone. If this request is dropped (the client went away), the
    // sender is dropped with it and the command is stopped.
    let (_stop, stopped) = oneshot::channel::<()>();
    let exec = app.exec.clone();
    let run = tokio::spawn(async move {
        let outcome = run(child, &exec, stopped).await;
        drop(slot);
        outcome
    });
    let outcome = run
        .await
        .map_err(|e| ErrorReply::internal(format!("the command's task failed: {e}")))?
        .map_err(|e| ErrorReply::internal(format!("waiting for the command: {e}")))?;
    Ok(reply(&app.exec, outcome))
}

/// Starts the supervisor running `sh -c command` in `dir`, without the API key in its
/// environment, in a process group of its own.
fn supervised(
    cfg: &ExecConfig,
    command: &str,
    dir: &std::path::Path,
) -> std::io::Result<tokio::process::Child> {
    tokio::process::Command::new(&cfg.supervisor)
        .arg(SUPERVISOR_ARG)
        .arg(std::process::id().to_string())
        .arg(command)
        .current_dir(dir)
        .env_remove(crate::apikey::ENV_KEY)
        .env_remove(crate::apikey::ENV_KEY_ORIGINAL)
        .env_remove(crate::apikey::ENV_KEY_FILE)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
}

/// Waits for the supervisor to end, stopping it at the timeout or when `stop` is dropped, then
/// collects the output.
async fn run(
    mut child: tokio::process::Child,
    cfg: &ExecConfig,
    mut stop: oneshot::Receiver<()>,
) -> std::io::Result<Outcome> {
    let out = Capture::start(child.stdout.take(), cfg.max_output);
    let err = Capture::start(child.stderr.take(), cfg.max_output);
    let ended = tokio::select! {
        s = child.wait() => Some(s),
        () = tokio::time::sleep(cfg.timeout) => None,
        _ = &mut stop => None,
    };
    let (status, timed_out) = match ended {
        Some(s) => (s?, false),
        None => (stop_supervisor(&mut child).await?, true),
    };
    Ok(Outcome {
        status,
        timed_out,
        stdout: out.finish().await,
        stderr: err.finish().await,
    })
}

/// Tells the supervisor to kill the command and everything it started (SIGTERM) and waits for
/// it; a supervisor that does not end within [`STOP_GRACE`] is killed with its process group.
async fn stop_supervisor(child: &mut tokio::process::Child) -> std::io::Result<ExitStatus> {
    let pid = child
        .id()
        .and_then(|p| i32::try_from(p).ok())
        .map(nix::unistd::Pid::from_raw);
    if let Some(pid) = pid {
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    }
    match tokio::time::timeout(STOP_GRACE, child.wait()).await {
        Ok(s) => s,
        Err(_) => {
            if let Some(pid) = pid {
                let _ = nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGKILL);
            }
            let _ = child.start_kill();
            child.wait().await
        }
    }
}

/// The reply: HTTP 200 with the output and exit code; `status` error when the command failed or
/// timed out.
fn reply(cfg: &ExecConfig, o: Outcome) -> Response {
    let code = if o.timed_out {
        -9
    } else {
        o.status.code().unwrap_or(-1)
    };
    let mut reply = json!({
        "stdout": String::from_utf8_lossy(&o.stdout.0),
        "stderr": String::from_utf8_lossy(&o.stderr.0),
        "returncode": code,
        "truncated": o.stdout.1 || o.stderr.1,
    });
    if o.timed_out {
        reply["status"] = json!("error");
        reply["message"] = json!(format!(
            "the command ran longer than {}s; it and every process it started were killed",
            cfg.timeout.as_secs()
        ));
        return (StatusCode::OK, axum::Json(reply)).into_response();
    }
    if code != 0 {
        reply["status"] = json!("error");
        return (StatusCode::OK, axum::Json(reply)).into_response();
    }
    success(reply)
}

/// Checks at startup that the supervisor program is one (`vine`, or a program that calls
/// [`super::supervise`] for [`SUPERVISOR_ARG`]) and can become a subreaper, so no command ever
/// runs unsupervised.
pub(crate) fn probe(cfg: &ExecConfig) -> Result<()> {
    let shown = format!("{} {SUPERVISOR_ARG} --probe", cfg.supervisor.display());
    let fail = |why: String| {
        Error::Invalid(format!(
            "/execute cannot run commands: the command supervisor ({shown}) {why}. \
             Start vine serve with --no-exec to serve without /execute"
        ))
    };
    let mut child = std::process::Command::new(&cfg.supervisor)
        .arg(SUPERVISOR_ARG)
        .arg("--probe")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("cannot start: {e}")))?;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(None) | Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(fail("did not answer within 10 s".into()));
            }
        }
    }
    let out = child
        .wait_with_output()
        .map_err(|e| fail(format!("failed: {e}")))?;
    if out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == PROBE_REPLY {
        return Ok(());
    }
    Err(fail(format!(
        "answered {:?} {:?}",
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    )))
}
