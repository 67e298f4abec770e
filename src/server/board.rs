//! The board over HTTP: `/test` (which says whether this server has the native op endpoint),
//! `/openapi.json`, and `POST /v1/op`, which runs one board op per request. Changing ops go to
//! one writer thread that applies everything waiting as one group commit.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::App;
use super::reply::{ErrorBody, board_error, board_status, error, parse_body, success};
use crate::error::{Error, Result};
use crate::op::{Op, Reply};
use crate::rules::MAX_KEY;
use crate::store::Transport;
use crate::store::local::LocalStore;

/// Most ops applied in one group commit.
const MAX_BATCH: usize = 256;

/// Largest `/v1/op` reply, in bytes (a read of a huge archive is refused, not sent).
const MAX_REPLY: usize = 32 * 1024 * 1024;

/// The body of `POST /v1/op`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OpRequest {
    /// The op.
    pub op: Op,
    /// A request key: a retry with the same key is answered, not applied twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

struct Job {
    op: Op,
    key: Option<String>,
    done: tokio::sync::oneshot::Sender<Result<Reply>>,
}

/// The writer thread's mailbox.
pub struct Batcher {
    tx: Mutex<mpsc::Sender<Job>>,
}

use std::sync::Mutex;

impl Batcher {
    /// Starts the writer thread for `store`.
    pub fn start(store: LocalStore) -> Self {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::spawn(move || {
            // The store runs a repair only alone, so a repair is never batched with other ops.
            let alone = |j: &Job| matches!(j.op, Op::Repair(_));
            let mut held: Option<Job> = None;
            while let Some(first) = held.take().or_else(|| rx.recv().ok()) {
                let mut jobs = vec![first];
                while jobs.len() < MAX_BATCH && !alone(&jobs[0]) {
                    match rx.try_recv() {
                        Ok(j) if alone(&j) => {
                            held = Some(j);
                            break;
                        }
                        Ok(j) => jobs.push(j),
                        Err(_) => break,
                    }
                }
                let (ops, dones): (Vec<_>, Vec<_>) =
                    jobs.into_iter().map(|j| ((j.op, j.key), j.done)).unzip();
                for (reply, done) in store.execute_batch(ops).into_iter().zip(dones) {
                    let _ = done.send(reply);
                }
            }
        });
        Batcher { tx: Mutex::new(tx) }
    }

    /// Applies a changing op in the next group commit.
    pub async fn apply(&self, op: Op, key: Option<String>) -> Result<Reply> {
        let (done, wait) = tokio::sync::oneshot::channel();
        let sent = self
            .tx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(Job { op, key, done });
        if sent.is_err() {
            return Err(Error::Protocol("the board writer has stopped".into()));
        }
        wait.await
            .map_err(|_| Error::Protocol("the board writer dropped the op".into()))?
    }
}

/// `GET /test`: the original reply, plus what this server offers.
pub(crate) async fn test(State(app): State<Arc<App>>) -> Response {
    let mut fields = json!({"message": "VPS API is running"});
    if !app.original_only {
        fields["agentvine"] = json!({
            "version": env!("CARGO_PKG_VERSION"),
            "op": "/v1/op",
            "exec": app.exec.enabled,
            "openapi": "/openapi.json",
        });
    }
    success(fields)
}

/// `GET /openapi.json`.
pub(crate) async fn openapi() -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        super::OPENAPI,
    )
        .into_response()
}

/// `POST /v1/op`: `{"op": {...}, "key": "..."}` -> `{"status":"success","reply":{...}}`.
pub(crate) async fn op(
    State(app): State<Arc<App>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (Some(store), Some(batcher)) = (app.store.clone(), app.batcher.as_ref()) else {
        // Only with --original-only, which does not route /v1/op.
        return super::reply::not_found().await;
    };
    let req: OpRequest = match parse_body(body) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    if let Some(key) = &req.key
        && (!(1..=MAX_KEY).contains(&key.len()) || !key.bytes().all(|b| b.is_ascii_graphic()))
    {
        return error(
            StatusCode::BAD_REQUEST,
            format!("the request key must be 1 to {MAX_KEY} visible ASCII characters (no spaces)"),
        );
    }
    let result = if req.op.is_read_only() {
        tokio::task::spawn_blocking(move || store.execute(req.op))
            .await
            .unwrap_or_else(|e| Err(Error::Protocol(format!("the read failed: {e}"))))
    } else {
        batcher.apply(req.op, req.key).await
    };
    let n = app.op_count.fetch_add(1, Ordering::Relaxed) + 1;
    if app.drop_every.is_some_and(|every| n % every == 0) {
        // Test hook: the op is applied, but the reply is lost on the way.
        let broken = futures_util::stream::iter([Err::<Bytes, std::io::Error>(
            std::io::Error::other("reply dropped by VINE_TEST_DROP_REPLIES"),
        )]);
        return Response::new(Body::from_stream(broken));
    }
    // Serialized once, straight to the bytes that are sent (and whose size is checked): a
    // reply, or an error (which carries a reply too when a read found damaged files).
    let (status, body) = match &result {
        Ok(reply) => (
            StatusCode::OK,
            serde_json::to_vec(&Success {
                status: "success",
                reply,
            }),
        ),
        Err(e) => (board_status(e), serde_json::to_vec(&ErrorBody::of(e))),
    };
    match body {
        Ok(bytes) if bytes.len() > MAX_REPLY => board_error(&Error::Invalid(format!(
            "the reply would be {} bytes, over this server's limit of {MAX_REPLY}; \
             ask for less (e.g. `vine tasks --status pending` instead of `--all`, or `vine msg read --limit 100`)",
            bytes.len()
        ))),
        Ok(bytes) => (status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// The success body of `/v1/op`.
#[derive(Serialize)]
struct Success<'a> {
    status: &'static str,
    reply: &'a Reply,
}

/// Parses the body of a `/v1/op` (or `vine op`) reply back into the op's result.
pub fn parse_reply(v: Value) -> Result<Reply> {
    match v.get("status").and_then(Value::as_str) {
        Some("success") => {
            let reply = v.get("reply").cloned().unwrap_or(Value::Null);
            serde_json::from_value(reply)
                .map_err(|e| Error::Protocol(format!("the server's reply does not parse: {e}")))
        }
        Some("error") => Err(remote_error(&v)),
        _ => Err(Error::Protocol(format!("the server answered {v}"))),
    }
}

/// The error a server reported, with its kind and exit code; a read of a damaged board comes
/// back as [`Error::DamagedRead`] with what the server could read.
pub fn remote_error(v: &Value) -> Error {
    if let (Some(reply), Some(damage)) = (v.get("reply"), v.get("damaged"))
        && let Ok(reply) = serde_json::from_value::<Reply>(reply.clone())
        && let Ok(damage) = serde_json::from_value(damage.clone())
    {
        return Error::DamagedRead {
            reply: Box::new(reply),
            damage,
        };
    }
    let message = v
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("the server reported an error")
        .to_string();
    let kind = v
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("remote")
        .to_string();
    let exit = v
        .get("code")
        .and_then(Value::as_i64)
        .and_then(crate::error::ExitCode::from_code)
        .unwrap_or(crate::error::ExitCode::Other);
    Error::Remote {
        kind,
        exit,
        message,
    }
}
