//! The workers (`/workers`): each worker with its state, capabilities, the task it holds and
//! its signs of life; a worker's page (`/workers/{id}`) with its history: the tasks it holds,
//! claimed and completed (on the queue and in the archive) and what it wrote in the log.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::Response;
use maud::{Markup, html};

use super::layout::{self, ago, badge, task_link};
use super::{Page, failure};
use crate::error::Error;
use crate::message::{MessageFilter, MessageKind};
use crate::op::{TaskView, WorkerView};
use crate::server::App;
use crate::time::{Timestamp, secs_between};
use crate::worker::WorkerState;

/// Tasks of a worker's history shown at most (the newest).
const HISTORY: usize = 100;
/// Log entries of a worker shown at most (the newest).
const WRITTEN: usize = 50;

/// `GET /workers`.
pub async fn list(State(app): State<Arc<App>>, page: Page) -> Response {
    let now = crate::time::now();
    let mut workers = match super::workers(&app).await {
        Ok(w) => w,
        Err(e) => return failure(&page, &e),
    };
    // Busiest first: working, waiting, idle, stale, offline; then by id.
    let rank = |s: WorkerState| match s {
        WorkerState::Working => 0,
        WorkerState::Waiting => 1,
        WorkerState::Idle => 2,
        WorkerState::Stale => 3,
        WorkerState::Offline => 4,
    };
    workers.sort_by(|a, b| rank(a.state).cmp(&rank(b.state)).then(a.id.cmp(&b.id)));
    layout::page(
        &page,
        "Workers",
        html! {
            h1 { "Workers" }
            p.muted.small {
                @for s in WorkerState::ALL {
                    @let n = workers.iter().filter(|w| w.state == s).count();
                    @if n > 0 { (badge(s.as_str())) " " (n) " " }
                }
                @if workers.is_empty() { "No worker has registered yet." }
            }
            div.table-wrap {
                table.workers {
                    thead {
                        tr {
                            th scope="col" { "worker" } th scope="col" { "state" }
                            th scope="col" { "holds" } th scope="col" { "capabilities" }
                            th scope="col" { "last sign of life" } th scope="col" { "last claim" }
                            th scope="col" { "last completion" }
                        }
                    }
                    tbody {
                        @for w in &workers {
                            tr {
                                td { a href={ "/workers/" (url_part(&w.id)) } { (w.id) } }
                                td { (badge(w.state.as_str())) (waiting_note(w, now)) }
                                td { @for t in &w.tasks { (task_link(*t)) " " } }
                                td { (w.worker.capabilities.join(", ")) }
                                td { (ago(w.worker.last_heartbeat, now)) }
                                td { (ago(w.worker.last_task_claimed, now)) }
                                td { (ago(w.worker.last_task_completed, now)) }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// `s` as one part of a URL: everything but letters, digits and `-._~` percent-encoded.
pub fn url_part(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// " on question N" for a worker waiting for an answer.
fn waiting_note(w: &WorkerView, now: Timestamp) -> Markup {
    html! {
        @if let Some(wait) = w.worker.waiting.filter(|x| x.until > now) {
            span.small { " on " a href={ "/questions#q-" (wait.question) } { "question " (wait.question) } }
        }
    }
}

/// `GET /workers/{id}`.
pub async fn page(State(app): State<Arc<App>>, page: Page, Path(id): Path<String>) -> Response {
    let now = crate::time::now();
    let workers = match super::workers(&app).await {
        Ok(w) => w,
        Err(e) => return failure(&page, &e),
    };
    let Some(w) = workers.into_iter().find(|w| w.id == id) else {
        return failure(
            &page,
            &Error::Invalid(format!("no worker {id:?} on this board")),
        );
    };
    // Its history: every task it claimed or completed, the archive's too.
    let tasks = match super::tasks(&app, None, true).await {
        Ok(t) => t,
        Err(e) => return failure(&page, &e),
    };
    let mut history: Vec<&TaskView> = tasks
        .iter()
        .filter(|v| {
            v.task.claimed_by.as_deref() == Some(id.as_str())
                || v.task.completed_by.as_deref() == Some(id.as_str())
        })
        .collect();
    history.sort_by_key(|v| {
        std::cmp::Reverse(
            v.task
                .completed_at
                .or(v.task.ended_at)
                .or(v.task.claimed_at)
                .or(v.task.created_at),
        )
    });
    let completed = history
        .iter()
        .filter(|v| v.task.completed_by.as_deref() == Some(id.as_str()))
        .count();
    let written = match super::messages(
        &app,
        MessageFilter {
            agent: Some(id.clone()),
            limit: Some(WRITTEN),
            ..MessageFilter::default()
        },
    )
    .await
    {
        Ok(m) => m,
        Err(e) => return failure(&page, &e),
    };
    let wk = &w.worker;
    layout::page(
        &page,
        &format!("Worker {id}"),
        html! {
            p.muted.small { a href="/workers" { "← Workers" } }
            h1 { "Worker " (id) " " (badge(w.state.as_str())) }
            div.cards {
                section.card aria-labelledby="now-h" {
                    h2 #now-h { "Now" }
                    dl.facts {
                        dt { "holds" }
                        dd {
                            @if w.tasks.is_empty() { span.muted { "nothing" } }
                            @for t in &w.tasks { (task_link(*t)) " " }
                        }
                        @if let Some(wait) = wk.waiting.filter(|x| x.until > now) {
                            dt { "waits for" }
                            dd { "an answer to " a href={ "/questions#q-" (wait.question) } { "question " (wait.question) }
                                " (until " (ago(Some(wait.until), now)) ")" }
                        }
                        dt { "capabilities" }
                        dd { @if wk.capabilities.is_empty() { span.muted { "none" } } (wk.capabilities.join(", ")) }
                        dt { "last sign of life" } dd { (ago(wk.last_heartbeat, now)) }
                        dt { "registered" } dd { (ago(wk.registered_at, now)) }
                        @if let Some(s) = &wk.session_id { dt { "session" } dd { code { (s) } } }
                        @if let Some(r) = &wk.offline_reason { dt { "offline because" } dd { (r) } }
                    }
                }
                section.card aria-labelledby="totals-h" {
                    h2 #totals-h { "Its work" }
                    dl.facts {
                        dt { "tasks completed" } dd { (completed) }
                        dt { "tasks seen" } dd { (history.len()) }
                        dt { "last claim" } dd { (ago(wk.last_task_claimed, now)) }
                        dt { "last completion" } dd { (ago(wk.last_task_completed, now)) }
                    }
                }
            }
            section.card aria-labelledby="history-h" {
                h2 #history-h { "History" }
                @if history.is_empty() { p.muted { "It has not claimed a task yet." } }
                div.table-wrap {
                    table.tasks {
                        thead {
                            tr {
                                th scope="col" { "task" } th scope="col" { "status" }
                                th scope="col" { "description" } th scope="col" { "claimed" }
                                th scope="col" { "took" } th scope="col" { "attempts" }
                            }
                        }
                        tbody {
                            @for v in history.iter().take(HISTORY) {
                                @let t = &v.task;
                                tr {
                                    td { (task_link(t.id)) }
                                    td { (badge(if v.blocked { "blocked" } else { t.status.as_str() })) }
                                    td.desc { (layout::preview(&t.description, 90)) }
                                    td { (ago(t.claimed_at, now)) }
                                    td {
                                        @if let (Some(c), Some(d)) = (t.claimed_at, t.completed_at) {
                                            (layout::duration(secs_between(c, d)))
                                        }
                                    }
                                    td { (t.attempts) }
                                }
                            }
                        }
                    }
                }
                @if history.len() > HISTORY {
                    p.muted.small { "The newest " (HISTORY) " of " (history.len()) " are listed." }
                }
            }
            section.card aria-labelledby="written-h" {
                h2 #written-h { "What it wrote" }
                @if written.is_empty() { p.muted { "Nothing in the log." } }
                ol.events {
                    @for m in written.iter().rev() {
                        li {
                            (ago(Some(m.timestamp), now)) " "
                            @if m.kind != MessageKind::Message { (badge(m.kind.as_str())) " " }
                            @if let Some(t) = m.task_id { (task_link(t)) " " }
                            span.text { (m.message) }
                        }
                    }
                }
                p.small { a href={ "/messages?agent=" (url_part(&id)) } { "All its messages →" } }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_parts_are_encoded() {
        assert_eq!(url_part("w-1.a_b~"), "w-1.a_b~");
        assert_eq!(url_part("a b/?#&\"é"), "a%20b%2F%3F%23%26%22%C3%A9");
    }
}
