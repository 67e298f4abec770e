//! The Claude sessions (`/sessions`): each session `vine pool` recorded, with its worker,
//! state, the tasks it did in order, its runs, turns and cost, and why it ended; above them
//! what the runs cost in all and by worker. Tasks parked on a question show on the workers
//! page (their worker is `waiting`) and in the questions inbox.

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use maud::html;

use super::layout::{self, ago, badge, task_link};
use super::workers::url_part;
use super::{Page, failure};
use crate::op::{self, Reply};
use crate::reply::ClaudeSpend;
use crate::server::App;
use crate::sessions::{SessionRecord, SessionState};

/// `GET /sessions`.
pub async fn list(State(app): State<Arc<App>>, page: Page) -> Response {
    let now = crate::time::now();
    let read = super::read(
        &app,
        op::Sessions {
            worker: None,
            all: true,
        },
    )
    .await;
    let mut sessions: Vec<SessionRecord> = match read {
        Ok(Reply::Sessions { sessions }) => sessions,
        Ok(r) => return failure(&page, &super::unexpected("sessions", &r)),
        Err(e) => return failure(&page, &e),
    };
    sessions.reverse(); // most recently active first
    let spend = ClaudeSpend::of(&sessions);
    let state = |s: SessionState| match s {
        SessionState::Active => "active",
        SessionState::Idle => "idle",
        SessionState::Ended => "ended",
    };
    layout::page(
        &page,
        "Sessions",
        html! {
            h1 { "Sessions" }
            @match &spend {
                None => p.muted { "No Claude session has been recorded yet: `vine pool` records each run here." },
                Some(s) => {
                    p {
                        (s.total.runs) " runs, " (s.total.turns) " turns, "
                        strong { (format!("${:.4}", s.total.cost_usd)) }
                        " in all; " (s.live_sessions) " live sessions."
                        @if let Some(rate) = s.reuse.rate() {
                            " " (s.reuse.reused) " of " (s.reuse.task_starts)
                            " task starts reused a session (" (format!("{:.0}%", rate * 100.0)) ")."
                        }
                    }
                    div.table-wrap {
                        table.spend {
                            thead { tr { th scope="col" { "worker" } th scope="col" { "runs" } th scope="col" { "turns" } th scope="col" { "cost" } } }
                            tbody {
                                @for (w, t) in &s.by_worker {
                                    tr {
                                        td { a href={ "/workers/" (url_part(w)) } { (w) } }
                                        td { (t.runs) } td { (t.turns) } td { (format!("${:.4}", t.cost_usd)) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @if !sessions.is_empty() {
                div.table-wrap {
                    table.sessions {
                        thead {
                            tr {
                                th scope="col" { "session" } th scope="col" { "worker" }
                                th scope="col" { "state" } th scope="col" { "tasks" }
                                th scope="col" { "runs" } th scope="col" { "turns" }
                                th scope="col" { "cost" } th scope="col" { "last active" }
                            }
                        }
                        tbody {
                            @for s in &sessions {
                                @let t = s.totals();
                                tr {
                                    td { code { (s.id) } }
                                    td { a href={ "/workers/" (url_part(&s.worker)) } { (s.worker) } }
                                    td {
                                        (badge(state(s.state)))
                                        @if let Some(why) = &s.ended_reason { " " span.muted.small { (why) } }
                                    }
                                    td { @for id in s.tasks() { (task_link(id)) " " } }
                                    td { (t.runs) } td { (t.turns) }
                                    td { (format!("${:.4}", t.cost_usd)) }
                                    td { (ago(Some(s.last_active_at), now)) }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}
