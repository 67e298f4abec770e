//! Changes handed to the server that leads. Several servers on one PostgreSQL board each keep a
//! copy of the board and commit a batch only if no other server committed since its copy: two
//! servers committing side by side keep finding each other's commits and deciding again. So
//! one of them leads (`store/pg/lead.rs`), and the others hand it their batches of changes
//! (`POST /v1/batch`, behind the same API key as every request), which it commits in its own
//! group commits. Reads stay where they arrived.
//!
//! Handing over is only a shortcut: when the leader cannot be reached or does not answer a
//! batch whole, the server commits the batch itself, as it would without a leader, and hands
//! nothing to that leader for a few seconds. Every op handed over carries a request key (one
//! is given to an op that came without), so an op the leader committed before its answer was
//! lost is answered, not applied again, when the server commits it itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::App;
use super::reply::{ErrorReply, parse_body};
use crate::apikey::ApiKey;
use crate::error::Result;
use crate::op::{Op, Reply};
use crate::remote::{Http, HttpOptions};
use crate::wire::{self, BatchOut, BatchRequest, OpRef};

/// After a batch could not be handed to a leader, none is handed to it for this long.
const PAUSE: Duration = Duration::from_secs(5);

/// Longest wait for a leader's answer (a batch may hold a large plan).
const TIMEOUT: Duration = Duration::from_secs(30);

/// Batches a server may have on their way to the leader at once.
pub(crate) const HANDS: usize = 2;

/// Most ops one `/v1/batch` request may carry.
pub(crate) const MAX_OPS: usize = 1024;

/// How many ops this server handed to a leader, and how many it committed itself after a
/// leader did not take them (shown by `/metrics`).
#[derive(Debug, Default)]
pub(crate) struct Handed {
    /// Ops a leader committed for this server.
    pub(crate) ops: AtomicU64,
    /// Ops this server committed itself after handing them over failed.
    pub(crate) failed: AtomicU64,
}

/// A hand's way to a leader (`board.rs`): an HTTP client for the leader's URL (its connection
/// kept alive), and the leader it does not try for now.
pub(crate) struct Forwarder {
    key: Option<ApiKey>,
    client: Option<(String, Http)>,
    paused: Option<(String, Instant)>,
    handed: Arc<Handed>,
    /// Said once per leader URL: why batches are not handed to it.
    warned: Option<String>,
}

impl Forwarder {
    /// A forwarder presenting `key` (this server's own API key: servers of one board share it).
    pub(crate) fn new(key: Option<ApiKey>, handed: Arc<Handed>) -> Self {
        Forwarder {
            key,
            client: None,
            paused: None,
            handed,
            warned: None,
        }
    }

    /// Hands `ops` to the leader at `url`: its replies, and its change count once they were
    /// committed; `None` when the batch must be committed here (the leader could not be
    /// reached, refused the batch, or is paused). Ops without a request key are given one.
    pub(crate) fn send(
        &mut self,
        url: &str,
        ops: &mut [(Op, Option<String>)],
    ) -> Option<(Vec<Result<Reply>>, u64)> {
        if let Some((paused, until)) = &self.paused {
            if paused == url && Instant::now() < *until {
                return None;
            }
            self.paused = None;
        }
        for (_, key) in ops.iter_mut() {
            if key.is_none() {
                *key = Some(crate::remote::new_request_key());
            }
        }
        let body = BatchOut {
            ops: ops
                .iter()
                .map(|(op, key)| OpRef {
                    op,
                    key: key.as_deref(),
                })
                .collect(),
        };
        let outcome = match serde_json::to_string(&body) {
            Ok(json) => self.post(url, &json, ops.len()),
            Err(e) => Err(format!("the batch does not encode: {e}")),
        };
        match outcome {
            Ok(answer) => {
                self.handed
                    .ops
                    .fetch_add(ops.len() as u64, Ordering::Relaxed);
                self.warned = None;
                Some(answer)
            }
            Err(why) => {
                self.handed
                    .failed
                    .fetch_add(ops.len() as u64, Ordering::Relaxed);
                if self.warned.as_deref() != Some(url) {
                    eprintln!(
                        "vine serve: could not hand changes to the leading server {url} ({why}); \
                         committing them here, and trying it again in {} s",
                        PAUSE.as_secs()
                    );
                    self.warned = Some(url.to_string());
                }
                self.paused = Some((url.to_string(), Instant::now() + PAUSE));
                None
            }
        }
    }

    /// Posts one batch: the answer, or why there is none to use.
    fn post(
        &mut self,
        url: &str,
        json: &str,
        count: usize,
    ) -> std::result::Result<(Vec<Result<Reply>>, u64), String> {
        let http = self.client_for(url).map_err(|e| e.to_string())?;
        match http.post_encoded("/v1/batch", json, wire::read_batch) {
            Ok(Ok((replies, changes))) if replies.len() == count => Ok((replies, changes)),
            Ok(Ok((replies, _))) => Err(format!(
                "it answered {} replies for {count} ops",
                replies.len()
            )),
            Ok(Err(reply)) => Err(format!("it answered {}: {}", reply.status, reply.body)),
            Err(e) => Err(e.to_string()),
        }
    }

    /// The client for `url`, made at first use (trusting what a client of this server would,
    /// `$VINE_CA_CERT` included; one try per batch: a failure is committed here instead).
    fn client_for(&mut self, url: &str) -> Result<&Http> {
        let kept = self.client.take().filter(|(u, _)| u == url);
        let (_, http) = match kept {
            Some(c) => self.client.insert(c),
            None => {
                let opts = HttpOptions {
                    timeout: TIMEOUT,
                    retry_for: Duration::ZERO,
                    ..HttpOptions::from_env()?
                };
                let http = Http::new(url, self.key.clone(), opts)?;
                self.client.insert((url.to_string(), http))
            }
        };
        Ok(http)
    }
}

/// `POST /v1/batch`: `{"ops": [{"op": {...}, "key": "..."}, ...]}` ->
/// `{"status":"success","changes":N,"replies":[...]}`, each changing op applied in this
/// server's next group commit as if it had come alone to `/v1/op` (a turn-end that asks for a
/// wait is looked at once, not held), and never handed on to another server. Reads are
/// refused: they are answered apart from the changes, so they would not see them.
pub(crate) async fn batch(
    State(app): State<Arc<App>>,
    body: Result<Bytes, BytesRejection>,
) -> std::result::Result<Response, ErrorReply> {
    let (Some(store), Some(batcher)) = (app.store.clone(), app.batcher.as_ref()) else {
        return Err(super::reply::not_found().await);
    };
    let req: BatchRequest = parse_body(body)?;
    if req.ops.len() > MAX_OPS {
        return Err(ErrorReply::bad_request(format!(
            "a batch holds at most {MAX_OPS} ops; this one has {}",
            req.ops.len()
        )));
    }
    for r in &req.ops {
        super::board::check_key(r.key.as_deref())?;
        if r.op.is_read_only() {
            return Err(ErrorReply::bad_request(
                "a batch carries changing ops only (its reads would not see its changes); send reads to /v1/op",
            ));
        }
    }
    let ops = req.ops.into_iter().map(|r| (r.op, r.key)).collect();
    let outcomes = batcher.apply_here(ops).await;
    let bytes = wire::batch_to_bytes(store.changes(), &outcomes).map_err(ErrorReply::internal)?;
    if bytes.len() > super::board::MAX_REPLY {
        return Err(ErrorReply::bad_request(format!(
            "the ops were applied, but their replies would be {} bytes, over this server's limit of {}; \
             send fewer ops at once (sent again with the same keys, they are answered, not applied twice)",
            bytes.len(),
            super::board::MAX_REPLY
        )));
    }
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        bytes,
    )
        .into_response())
}
