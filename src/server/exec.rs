//! `POST /execute {"command", "workdir"}`: runs a shell command in the base directory (or a
//! folder inside it), in its own process group, with a timeout that kills the whole group,
//! capped output, and a cap on commands running at once. `--no-exec` turns it off.

use std::process::Stdio;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::App;
use super::reply::{error, forbidden, or_reply, parse_body, success};
use crate::store::paths;

#[derive(Deserialize)]
pub struct ExecBody {
    command: String,
    #[serde(default)]
    workdir: Option<String>,
}

/// Reads at most `cap` bytes and drains the rest, so the command never blocks on a full pipe.
async fn capped(mut r: impl AsyncRead + Unpin, cap: usize) -> (Vec<u8>, bool) {
    let mut kept = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let mut cut = false;
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return (kept, cut),
            Ok(n) => {
                let room = cap.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
                cut |= n > room;
            }
        }
    }
}

/// `POST /execute`.
pub async fn execute(State(app): State<Arc<App>>, body: Result<Bytes, BytesRejection>) -> Response {
    if !app.exec.enabled {
        return error(
            StatusCode::FORBIDDEN,
            "command execution is switched off on this server (vine serve --no-exec)",
        );
    }
    let b: ExecBody = or_reply!(parse_body(body));
    if b.command.trim().is_empty() {
        return error(StatusCode::BAD_REQUEST, "the command is empty");
    }
    let dir = match paths::resolve(
        &app.root,
        b.workdir
            .as_deref()
            .filter(|w| !w.is_empty())
            .unwrap_or("."),
    ) {
        Ok(d) if d.is_dir() => d,
        Ok(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "workdir is not a directory inside the base directory",
            );
        }
        Err(e) => return forbidden(&e),
    };
    let Ok(_slot) = app.exec_slots.try_acquire() else {
        return error(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "{} commands are already running (the limit); try again shortly",
                app.exec.max_concurrent
            ),
        );
    };
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c")
        .arg(&b.command)
        .current_dir(&dir)
        .env_remove(crate::apikey::ENV_KEY)
        .env_remove(crate::apikey::ENV_KEY_ORIGINAL)
        .env_remove(crate::apikey::ENV_KEY_FILE)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot start sh: {e}"),
            );
        }
    };
    let pgid = child.id();
    let cap = app.exec.max_output;
    let out = child.stdout.take().map(|s| tokio::spawn(capped(s, cap)));
    let err = child.stderr.take().map(|s| tokio::spawn(capped(s, cap)));
    let waited = tokio::time::timeout(app.exec.timeout, child.wait()).await;
    let (code, timed_out) = match waited {
        Ok(Ok(status)) => (status.code().unwrap_or(-1), false),
        Ok(Err(e)) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("waiting for the command: {e}"),
            );
        }
        Err(_) => {
            kill_group(pgid);
            let _ = child.wait().await;
            (-9, true)
        }
    };
    // The shell may be gone while its children still hold the pipes: end the group.
    kill_group(pgid);
    let collect = |h: Option<tokio::task::JoinHandle<(Vec<u8>, bool)>>| async move {
        match h {
            Some(h) => match tokio::time::timeout(std::time::Duration::from_secs(5), h).await {
                Ok(Ok(v)) => v,
                _ => (Vec::new(), true),
            },
            None => (Vec::new(), false),
        }
    };
    let (stdout, out_cut) = collect(out).await;
    let (stderr, err_cut) = collect(err).await;
    let mut reply = json!({
        "stdout": String::from_utf8_lossy(&stdout),
        "stderr": String::from_utf8_lossy(&stderr),
        "returncode": code,
        "truncated": out_cut || err_cut,
    });
    if timed_out {
        reply["status"] = json!("error");
        reply["message"] = json!(format!(
            "the command ran longer than {}s; its process group was killed",
            app.exec.timeout.as_secs()
        ));
        return (StatusCode::OK, axum::Json(reply)).into_response_ext();
    }
    if code != 0 {
        reply["status"] = json!("error");
        return (StatusCode::OK, axum::Json(reply)).into_response_ext();
    }
    success(reply)
}

/// Kills a process group (ignores errors: it may be gone already).
fn kill_group(pgid: Option<u32>) {
    if let Some(id) = pgid.and_then(|p| i32::try_from(p).ok()) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(id),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

trait IntoResponseExt {
    fn into_response_ext(self) -> Response;
}

impl<T: axum::response::IntoResponse> IntoResponseExt for T {
    fn into_response_ext(self) -> Response {
        self.into_response()
    }
}
