//! The control room: a web dashboard of the board, served by `vine serve` at `/` (and by
//! `vine dashboard` for a local board). Server-rendered HTML (maud templates), our own small
//! script for live updates (`/events`, Server-Sent Events, with polling when they fail), and
//! forms that work without script: POST, then a redirect to a page (GET).
//!
//! Every page reads the board through the same read ops as the CLI ([`read`]) and changes it
//! through the same ops, in the server's group commit ([`change`]), so any store answers the
//! control room as it answers `vine`.
//!
//! Routes: `/` overview, `/questions` (and `POST /questions/{seq}/answer`), `/login`,
//! `/logout`, `/events`, `/assets/{name}`; the tasks, workers, messages and sessions pages. Security:
//! see `session.rs` (login, cookies, form tokens) and `layout.rs` (headers, the CSP).

pub mod assets;
pub mod events;
mod figures;
pub mod layout;
pub mod markdown;
mod messages;
mod overview;
pub mod plot;
mod questions;
pub mod session;
mod sessions;
mod tasks;
mod workers;

use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::html;
use tokio::sync::watch;

pub use session::{Flash, Page};

use crate::error::{Error, Result};
use crate::message::{Message, MessageFilter};
use crate::op::{self, Op, Reply, TaskView, WorkerView};
use crate::reply::{QuestionView, StatusReport};
use crate::server::App;
use crate::task::StatusFilter;

/// What the control room keeps beside the server's state: sessions and the change signals.
pub struct ControlRoom {
    /// The signed-in (and anonymous) browsers.
    pub sessions: session::Sessions,
    /// The board's change signals, for `/events`.
    pub changes: events::Changes,
    /// Served over TLS (cookies are `Secure`; a form's `Origin` is `https://`).
    pub tls: bool,
}

impl ControlRoom {
    /// The control room of the board in `dir` (none with `--original-only`), told of the
    /// writer thread's changes by `writer`.
    pub fn new(dir: Option<&Path>, writer: Option<watch::Receiver<u64>>, tls: bool) -> Self {
        ControlRoom {
            sessions: session::Sessions::new(tls),
            changes: events::Changes::start(dir, writer),
            tls,
        }
    }
}

/// The first path segments that belong to the control room. The API's key check lets them
/// through to the control room's own session check (`session::guard`).
const SECTIONS: &[&str] = &[
    "login",
    "logout",
    "events",
    "assets",
    "questions",
    "tasks",
    "workers",
    "messages",
    "sessions",
];

/// True for paths the control room answers: `/` and everything under its sections.
pub fn is_control_room(path: &str) -> bool {
    let Some(rest) = path.strip_prefix('/') else {
        return false;
    };
    rest.is_empty() || SECTIONS.contains(&rest.split('/').next().unwrap_or_default())
}

/// The control room's routes, to merge into the server's router. Every route but the assets
/// goes through the session check.
pub fn router(app: Arc<App>) -> Router<Arc<App>> {
    Router::new()
        .route("/", get(overview::page))
        .route("/questions", get(questions::page))
        .route("/questions/{seq}/answer", post(questions::answer))
        .route("/events", get(events::stream))
        .route("/login", get(session::login_form).post(session::login))
        .route("/logout", post(session::logout))
        // The tasks, workers and messages pages go here, above the session check.
        .route("/tasks", get(tasks::list).post(tasks::add))
        .route("/tasks/{id}", get(tasks::page))
        .route("/tasks/{id}/{action}", post(tasks::act))
        .route("/workers", get(workers::list))
        .route("/workers/{id}", get(workers::page))
        .route("/messages", get(messages::page))
        .route("/sessions", get(sessions::list))
        .route_layer(axum::middleware::from_fn_with_state(app, session::guard))
        .route("/assets/{name}", get(assets::serve))
        .layer(axum::middleware::from_fn(layout::security_headers))
}

/// Runs a read op on the board (off the async threads: the store reads files).
pub async fn read(app: &App, op: impl Into<Op>) -> Result<Reply> {
    let Some(store) = app.store.clone() else {
        return Err(Error::NoBoard("this server has no board".into()));
    };
    let op = op.into();
    tokio::task::spawn_blocking(move || store.execute(op))
        .await
        .unwrap_or_else(|e| Err(Error::Protocol(format!("the read failed: {e}"))))
}

/// Applies a changing op in the server's next group commit, as `POST /v1/op` does.
pub async fn change(app: &App, op: impl Into<Op>) -> Result<Reply> {
    let Some(batcher) = app.batcher.as_ref() else {
        return Err(Error::NoBoard("this server has no board".into()));
    };
    batcher.apply(op.into(), None).await
}

/// The error for a reply of the wrong kind (a store bug).
fn unexpected(what: &str, r: &Reply) -> Error {
    Error::Protocol(format!("{what} got an unexpected reply: {r:?}"))
}

/// The board's counts (`vine status`).
pub async fn status(app: &App) -> Result<StatusReport> {
    match read(app, op::Status).await? {
        Reply::Status { report } => Ok(report),
        r => Err(unexpected("status", &r)),
    }
}

/// The tasks on the queue (with `all`, the archive's too), optionally of one status.
pub async fn tasks(app: &App, status: Option<StatusFilter>, all: bool) -> Result<Vec<TaskView>> {
    match read(app, op::Tasks { status, all }).await? {
        Reply::Tasks { tasks } => Ok(tasks),
        r => Err(unexpected("tasks", &r)),
    }
}

/// One task, from the queue or the archive.
pub async fn task(app: &App, id: u64) -> Result<TaskView> {
    match read(app, op::Show { task: id }).await? {
        Reply::Task { task } => Ok(task),
        r => Err(unexpected("show", &r)),
    }
}

/// Every worker with its derived state.
pub async fn workers(app: &App) -> Result<Vec<WorkerView>> {
    match read(app, op::Workers).await? {
        Reply::Workers { workers } => Ok(workers),
        r => Err(unexpected("workers", &r)),
    }
}

/// Questions with their answers (open ones only unless `all`), oldest first.
pub async fn questions(app: &App, all: bool) -> Result<Vec<QuestionView>> {
    match read(app, op::Questions { all }).await? {
        Reply::Questions { questions } => Ok(questions),
        r => Err(unexpected("questions", &r)),
    }
}

/// Log entries, oldest first.
pub async fn messages(app: &App, filter: MessageFilter) -> Result<Vec<Message>> {
    match read(app, op::ReadMessages { filter }).await? {
        Reply::Messages { messages } => Ok(messages),
        r => Err(unexpected("read-messages", &r)),
    }
}

/// A page saying what went wrong, with the HTTP status that fits the error.
pub fn failure(page: &Page, e: &Error) -> Response {
    let status = StatusCode::from_u16(crate::wire::http_status(e))
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    layout::page_with_status(
        page,
        status,
        "Error",
        html! {
            h1 { "Something went wrong" }
            p.error role="alert" { (e.to_string()) }
            @if matches!(e, Error::Damaged { .. } | Error::DamagedRead { .. }) {
                p { "Run " code { "vine repair" } " on the board to rebuild the damaged files." }
            }
        },
    )
}

/// After a form: keeps `flash` for the next page and sends the browser to `to` (303).
pub fn done(app: &App, page: &Page, flash: Flash, to: &str) -> Response {
    page.flash_next(app, flash);
    Redirect::to(to).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_room_paths_are_told_from_the_api() {
        for p in [
            "/",
            "/login",
            "/questions",
            "/questions/3/answer",
            "/tasks/12",
            "/assets/app-1.css",
        ] {
            assert!(is_control_room(p), "{p}");
        }
        for p in [
            "/test",
            "/list",
            "/v1/op",
            "/loginx",
            "/tasksx/1",
            "",
            "//list",
            "/openapi.json",
        ] {
            assert!(!is_control_room(p), "{p}");
        }
    }
}
