//! The board over HTTP: `/test` (which says whether this server has the native op endpoint),
//! `/openapi.json`, and `POST /v1/op`, which runs one board op per request. Changing ops go to
//! one writer thread that applies everything waiting as one group commit. A worker's turn-end
//! that asks for a wait is held open until there is work for it (a long-poll), woken by the
//! writer after each batch that changed the board.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::App;
use super::forward::Forwarder;
use super::reply::{ErrorReply, board_status, parse_body, success};
use crate::error::{Error, Result};
use crate::op::turn::{RECHECK, wait_more};
use crate::op::{Op, Reply, TurnEnded};
use crate::rules::MAX_KEY;
use crate::store::BatchStore;
use crate::wire::{self, OpRequest};

/// Most ops applied in one group commit.
const MAX_BATCH: usize = 256;

/// Largest `/v1/op` reply, in bytes (a read of a huge archive is refused, not sent).
pub(crate) const MAX_REPLY: usize = 32 * 1024 * 1024;

struct Job {
    op: Op,
    key: Option<String>,
    done: tokio::sync::oneshot::Sender<Result<Reply>>,
    /// Committed by this server, never handed to a leader (it came in a batch, maybe from a
    /// server that took this one for the leader).
    here: bool,
}

/// The writer thread's mailbox, and the signal it gives after each batch that changed the
/// queue or the workers.
pub struct Batcher {
    tx: Mutex<mpsc::Sender<Job>>,
    changed: tokio::sync::watch::Sender<u64>,
    /// The store, for what a request does before its op is queued (`BatchStore::stage`).
    store: Arc<dyn BatchStore>,
}

impl Batcher {
    /// Starts the writer thread for `store`. Changes the store reports from elsewhere (another
    /// server on the same database) give the same signal as the writer's own batches. With
    /// `forwarders`, a batch is handed to the server that leads when another does
    /// (`forward.rs`), by one thread per forwarder, so that several batches can be on their
    /// way at once while the writer gathers the next.
    pub fn start(store: Arc<dyn BatchStore>, forwarders: Vec<Forwarder>) -> Self {
        let (tx, rx) = mpsc::channel::<Job>();
        let changed = tokio::sync::watch::Sender::new(store.changes());
        let outside = changed.clone();
        store.on_outside_change(Box::new(move |now| {
            outside.send_if_modified(|seen| moved(seen, now));
        }));
        let signal = changed.clone();
        let hands = Hands::start(forwarders, &store, &signal);
        let writer = Arc::clone(&store);
        std::thread::spawn(move || {
            let store = writer;
            // The store runs a repair only alone, so a repair is never batched with other ops.
            let alone = |j: &Job| matches!(j.op, Op::Repair(_));
            let mut held: Option<Job> = None;
            while let Some(first) = held.take().or_else(|| rx.recv().ok()) {
                // Handed over when another server leads: once a hand is free (meanwhile more
                // jobs gather), and without the jobs that must be committed here.
                let lead = match &hands {
                    Some(h) if !first.here && !alone(&first) => {
                        store.leader().map(|url| (url, h.free()))
                    }
                    _ => None,
                };
                let fits = |j: &Job| !alone(j) && (lead.is_none() || !j.here);
                let mut jobs = vec![first];
                while jobs.len() < MAX_BATCH && !alone(&jobs[0]) {
                    match rx.try_recv() {
                        Ok(j) if !fits(&j) => {
                            held = Some(j);
                            break;
                        }
                        Ok(j) => jobs.push(j),
                        Err(_) => break,
                    }
                }
                let (ops, dones): (Vec<_>, Vec<_>) =
                    jobs.into_iter().map(|j| ((j.op, j.key), j.done)).unzip();
                match (lead, &hands) {
                    (Some((url, hand)), Some(h)) => h.give(hand, Handoff { url, ops, dones }),
                    _ => {
                        let replies = store.execute_batch(ops);
                        finish(store.as_ref(), &signal, replies, dones);
                    }
                }
            }
        });
        Batcher {
            tx: Mutex::new(tx),
            changed,
            store,
        }
    }

    /// Applies a turn-ended op that asks for a wait: while its answer is "wait" it is held (the
    /// request stays open, a long-poll) and applied again after every batch that changed the
    /// queue or the workers, and at least every `RECHECK` (for what time alone changes, and
    /// changes made beside this server), until it has another answer or the wait is over.
    /// Each look is an op of the next group commit with the request's key, so a retry of a
    /// request whose reply was lost is answered with the task handed over, not given another.
    pub async fn apply_waiting(&self, op: TurnEnded, key: Option<String>) -> Result<Reply> {
        let deadline = tokio::time::Instant::now() + op.wait();
        // Subscribed before the first look: no change after it is missed.
        let mut changed = self.changed.subscribe();
        changed.mark_unchanged();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let outcome = self
                .apply(Op::TurnEnded(op.with_wait_left(left)), key.clone())
                .await;
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Some(more) = wait_more(&outcome, left) else {
                return outcome;
            };
            let pause = more.min(RECHECK);
            if let Ok(Err(_)) = tokio::time::timeout(pause, changed.changed()).await {
                // The writer is gone: the next look says so.
                tokio::time::sleep(pause).await;
            }
        }
    }

    /// A receiver of the signal given after each batch that changed the queue or the
    /// workers (the control room's live updates listen to it).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Applies a changing op in the next group commit. An add's instruction texts are first
    /// written ahead on a blocking thread (`BatchStore::stage`), so that the writer thread
    /// only renames them.
    pub async fn apply(&self, op: Op, key: Option<String>) -> Result<Reply> {
        let op = self.staged(op).await?;
        let (done, wait) = tokio::sync::oneshot::channel();
        self.send(vec![Job {
            op,
            key,
            done,
            here: false,
        }])?;
        wait.await
            .map_err(|_| Error::Protocol("the board writer dropped the op".into()))?
    }

    /// Applies changing ops in this server's next group commit, never handing them to another
    /// server (`/v1/batch`): each op's outcome, in order.
    pub async fn apply_here(&self, ops: Vec<(Op, Option<String>)>) -> Vec<Result<Reply>> {
        let mut jobs = Vec::with_capacity(ops.len());
        let mut outcomes = Vec::with_capacity(ops.len());
        for (op, key) in ops {
            outcomes.push(match self.staged(op).await {
                Ok(op) => {
                    let (done, wait) = tokio::sync::oneshot::channel();
                    jobs.push(Job {
                        op,
                        key,
                        done,
                        here: true,
                    });
                    Outcome::Waiting(wait)
                }
                Err(e) => Outcome::Failed(e),
            });
        }
        // A job that could not be queued is dropped, and its wait below says so.
        let _ = self.send(jobs);
        let mut out = Vec::with_capacity(outcomes.len());
        for outcome in outcomes {
            out.push(match outcome {
                Outcome::Failed(e) => Err(e),
                Outcome::Waiting(wait) => wait.await.unwrap_or_else(|_| {
                    Err(Error::Protocol("the board writer dropped the op".into()))
                }),
            });
        }
        out
    }

    /// Queues jobs for the writer thread, together.
    fn send(&self, jobs: Vec<Job>) -> Result<()> {
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        for job in jobs {
            if tx.send(job).is_err() {
                return Err(Error::Protocol("the board writer has stopped".into()));
            }
        }
        Ok(())
    }

    /// `op`, with its instruction texts first written ahead on a blocking thread
    /// (`BatchStore::stage`) when it has any.
    async fn staged(&self, op: Op) -> Result<Op> {
        Ok(if !op.instruction_texts().is_empty() {
            let store = Arc::clone(&self.store);
            tokio::task::spawn_blocking(move || {
                store.stage(&op);
                op
            })
            .await
            .map_err(|e| Error::Protocol(format!("staging the op failed: {e}")))?
        } else {
            op
        })
    }
}

/// Sends each op of a committed batch its reply, once the change signal was given: waiters
/// look again once the batch is committed, before its replies go out.
fn finish(
    store: &dyn BatchStore,
    signal: &tokio::sync::watch::Sender<u64>,
    replies: Vec<Result<Reply>>,
    dones: Vec<Done>,
) {
    signal.send_if_modified(|seen| moved(seen, store.changes()));
    for (reply, done) in replies.into_iter().zip(dones) {
        let _ = done.send(reply);
    }
}

/// Where an op's reply goes.
type Done = tokio::sync::oneshot::Sender<Result<Reply>>;

/// An op of a `/v1/batch`: failed before its group commit (staging its texts), or waiting
/// for it.
enum Outcome {
    Failed(Error),
    Waiting(tokio::sync::oneshot::Receiver<Result<Reply>>),
}

/// A batch for a hand to give the server that leads.
struct Handoff {
    url: String,
    ops: Vec<(Op, Option<String>)>,
    dones: Vec<Done>,
}

/// The threads that hand batches to the server that leads, one per forwarder: the writer
/// takes a free one ([`Hands::free`], waiting while all are busy) and gives it a batch.
struct Hands {
    give: Vec<mpsc::Sender<Handoff>>,
    free: mpsc::Receiver<usize>,
}

impl Hands {
    /// Starts one thread per forwarder (none without forwarders). A batch the leader does
    /// not take is committed here, by the thread that tried.
    fn start(
        forwarders: Vec<Forwarder>,
        store: &Arc<dyn BatchStore>,
        signal: &tokio::sync::watch::Sender<u64>,
    ) -> Option<Hands> {
        if forwarders.is_empty() {
            return None;
        }
        let (free_tx, free) = mpsc::channel();
        let mut give = Vec::new();
        for (i, mut f) in forwarders.into_iter().enumerate() {
            let (tx, rx) = mpsc::channel::<Handoff>();
            give.push(tx);
            let _ = free_tx.send(i);
            let (store, signal, free_tx) = (Arc::clone(store), signal.clone(), free_tx.clone());
            std::thread::spawn(move || {
                while let Ok(Handoff {
                    url,
                    mut ops,
                    dones,
                }) = rx.recv()
                {
                    let replies = match f.send(&url, &mut ops) {
                        Some((replies, changes)) => {
                            store.saw_change(changes);
                            replies
                        }
                        None => store.execute_batch(ops),
                    };
                    finish(store.as_ref(), &signal, replies, dones);
                    if free_tx.send(i).is_err() {
                        return;
                    }
                }
            });
        }
        Some(Hands { give, free })
    }

    /// A free hand, once there is one.
    fn free(&self) -> usize {
        self.free.recv().unwrap_or(0)
    }

    /// Gives hand `i` a batch. Should its thread be gone, the ops are dropped unanswered
    /// (their requests fail as "dropped"), as when the writer itself stops.
    fn give(&self, i: usize, h: Handoff) {
        if let Some(tx) = self.give.get(i) {
            let _ = tx.send(h);
        }
    }
}

/// Refuses a request key that is empty, too long, or not visible ASCII.
pub(crate) fn check_key(key: Option<&str>) -> std::result::Result<(), ErrorReply> {
    match key {
        Some(key)
            if !(1..=MAX_KEY).contains(&key.len())
                || !key.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            Err(ErrorReply::bad_request(format!(
                "the request key must be 1 to {MAX_KEY} visible ASCII characters (no spaces)"
            )))
        }
        _ => Ok(()),
    }
}

/// Moves the change signal's value `seen` up to `now`; true if it moved (the count never goes
/// down, and two threads may report the same change).
fn moved(seen: &mut u64, now: u64) -> bool {
    let up = now > *seen;
    if up {
        *seen = now;
    }
    up
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
        if let Some(store) = &app.store {
            fields["agentvine"]["leading"] = json!(store.leading());
            fields["agentvine"]["leader"] = json!(store.leader());
        }
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
) -> Result<Response, ErrorReply> {
    let (Some(store), Some(batcher)) = (app.store.clone(), app.batcher.as_ref()) else {
        // Only with --original-only, which does not route /v1/op.
        return Err(super::reply::not_found().await);
    };
    let req: OpRequest = parse_body(body)?;
    check_key(req.key.as_deref())?;
    let result = match req.op {
        op if op.is_read_only() => tokio::task::spawn_blocking(move || store.execute(op))
            .await
            .unwrap_or_else(|e| Err(Error::Protocol(format!("the read failed: {e}")))),
        Op::TurnEnded(t) if t.wait_secs > 0 => batcher.apply_waiting(t, req.key).await,
        op => batcher.apply(op, req.key).await,
    };
    // Serialized once, straight to the bytes that are sent (and whose size is checked).
    let status = match &result {
        Ok(_) => StatusCode::OK,
        Err(e) => board_status(e),
    };
    let bytes = wire::to_bytes(&result).map_err(ErrorReply::internal)?;
    if bytes.len() > MAX_REPLY {
        return Err(ErrorReply::board(&Error::Invalid(format!(
            "the reply would be {} bytes, over this server's limit of {MAX_REPLY}; \
             ask for less (e.g. `vine tasks --status pending` instead of `--all`, or `vine msg read --limit 100`)",
            bytes.len()
        ))));
    }
    Ok((status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response())
}
