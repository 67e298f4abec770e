//! The overview (`/`): open questions first (answerable right there), then tasks by status and
//! the queue's depth by priority, workers by state with their current task and last sign of
//! life, the figures of the board ([`metrics_slot`]), and recent events.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use maud::{Markup, html};

use super::layout::{self, ago, badge, task_link};
use super::questions::{Context, open_list};
use super::{Page, failure};
use crate::error::Error;
use crate::message::{Message, MessageFilter, MessageKind};
use crate::op::{TaskView, WorkerView};
use crate::reply::{QuestionView, StatusReport};
use crate::server::App;
use crate::task::{Priority, TaskStatus};
use crate::time::{Timestamp, secs_between};
use crate::worker::WorkerState;

/// Log entries read for the recent events.
const RECENT_MESSAGES: usize = 15;
/// Events shown.
const RECENT_EVENTS: usize = 15;
/// Workers listed by name (offline ones are only counted past this).
const WORKERS_LISTED: usize = 50;

/// Everything the overview shows, read from the board.
struct Board {
    status: StatusReport,
    tasks: Vec<TaskView>,
    workers: Vec<WorkerView>,
    open: Vec<QuestionView>,
    messages: Vec<Message>,
}

/// Reads what the overview shows, the reads side by side (each on a blocking thread).
async fn load(app: &App) -> Result<Board, Error> {
    let recent = MessageFilter {
        limit: Some(RECENT_MESSAGES),
        ..MessageFilter::default()
    };
    let (status, tasks, workers, open, messages) = tokio::try_join!(
        super::status(app),
        super::tasks(app, None, false),
        super::workers(app),
        super::questions(app, false),
        super::messages(app, recent),
    )?;
    Ok(Board {
        status,
        tasks,
        workers,
        open,
        messages,
    })
}

/// `GET /`.
pub async fn page(State(app): State<Arc<App>>, page: Page) -> Response {
    let now = crate::time::now();
    let board = match load(&app).await {
        Ok(b) => b,
        Err(e) => return failure(&page, &e),
    };
    let open: Vec<&QuestionView> = board.open.iter().collect();
    let ctx = match Context::load(&app, &open, Some(&board.workers), Some(&board.tasks)).await {
        Ok(c) => c,
        Err(e) => return failure(&page, &e),
    };
    let figures = metrics_slot(&app, &board.tasks, now).await;
    let title = if open.is_empty() {
        "Overview".to_string()
    } else {
        format!("({}) Overview", open.len())
    };
    layout::page(
        &page,
        &title,
        html! {
            h1 { "Overview" }
            @if let Some(s) = &board.status.progress.status {
                p.progress { "Progress: " (s) }
            }
            @if !open.is_empty() {
                section.open-questions aria-labelledby="questions-h" {
                    h2 #questions-h {
                        a href="/questions" { "Open questions " span.count { (open.len()) } }
                    }
                    (open_list(&page, &open, &ctx, now, "/"))
                }
            }
            div.cards {
                (tasks_card(&board.status, &board.tasks, now))
                (workers_card(&board.workers, now))
            }
            (figures)
            (events_card(&board.tasks, &board.messages, now))
        },
    )
}

fn tile(href: &str, count: usize, label: &str, class: &str) -> Markup {
    html! {
        a class={ "tile " (class) } href=(href) {
            span.n { (count) }
            span.label { (label) }
        }
    }
}

fn tasks_card(s: &StatusReport, tasks: &[TaskView], now: Timestamp) -> Markup {
    // Queue depth by priority: claimable now, waiting (a retry's delay, dependencies not done,
    // blocked for good), claimed.
    let mut depth: BTreeMap<u8, [usize; 3]> = BTreeMap::new();
    for v in tasks {
        let t = &v.task;
        let col = match t.status {
            TaskStatus::Pending if !v.blocked && t.not_before.is_none_or(|nb| nb <= now) => 0,
            TaskStatus::Pending => 1,
            TaskStatus::InProgress => 2,
            _ => continue,
        };
        depth.entry(t.priority.rank()).or_default()[col] += 1;
    }
    let priorities = [Priority::High, Priority::Normal, Priority::Low];
    html! {
        section.card.tasks aria-labelledby="tasks-h" {
            h2 #tasks-h { a href="/tasks" { "Tasks" } }
            div.tiles {
                (tile("/tasks?status=pending", s.pending, "pending", "s-pending"))
                (tile("/tasks?status=in_progress", s.in_progress, "in progress", "s-in_progress"))
                (tile("/tasks?status=completed", s.completed, "completed", "s-completed"))
                (tile("/tasks?status=failed", s.failed, "failed", "s-failed"))
                (tile("/tasks?status=cancelled", s.cancelled, "cancelled", "s-cancelled"))
                (tile("/tasks?status=blocked", s.blocked, "blocked", "s-blocked"))
            }
            div.table-wrap {
                table.depth {
                    caption { "Queue depth by priority" }
                    thead { tr { th scope="col" { "priority" } th scope="col" { "ready" } th scope="col" { "waiting" } th scope="col" { "claimed" } } }
                    tbody {
                        @for p in priorities {
                            @let row = depth.get(&p.rank()).copied().unwrap_or_default();
                            tr {
                                th scope="row" { (p.as_str()) }
                                td { (row[0]) }
                                td { (row[1]) }
                                td { (row[2]) }
                            }
                        }
                    }
                }
            }
            p.muted.small { (s.total) " tasks in all, " (s.archived) " of them archived." }
        }
    }
}

/// The order workers are listed in: those needing attention or busy first.
fn state_rank(s: WorkerState) -> u8 {
    match s {
        WorkerState::Waiting => 0,
        WorkerState::Working => 1,
        WorkerState::Stale => 2,
        WorkerState::Idle => 3,
        WorkerState::Offline => 4,
    }
}

fn workers_card(workers: &[WorkerView], now: Timestamp) -> Markup {
    let states = [
        WorkerState::Working,
        WorkerState::Idle,
        WorkerState::Waiting,
        WorkerState::Stale,
        WorkerState::Offline,
    ];
    let count = |s: WorkerState| workers.iter().filter(|w| w.state == s).count();
    let mut listed: Vec<&WorkerView> = workers.iter().collect();
    listed.sort_by(|a, b| (state_rank(a.state), &a.id).cmp(&(state_rank(b.state), &b.id)));
    let hidden = listed.len().saturating_sub(WORKERS_LISTED);
    listed.truncate(WORKERS_LISTED);
    html! {
        section.card.workers aria-labelledby="workers-h" {
            h2 #workers-h { a href="/workers" { "Workers" } }
            div.tiles {
                @for s in states {
                    (tile("/workers", count(s), s.as_str(), &format!("s-{}", s.as_str())))
                }
            }
            @if workers.is_empty() {
                p.muted.empty { "No worker has registered yet." }
            } @else {
                div.table-wrap {
                    table.workers {
                        caption { "Workers" }
                        thead { tr { th scope="col" { "worker" } th scope="col" { "state" } th scope="col" { "task" } th scope="col" { "last sign of life" } } }
                        tbody {
                            @for w in &listed {
                                tr {
                                    th scope="row" { a href={ "/workers/" (w.id) } { (w.id) } }
                                    td { (badge(w.state.as_str())) }
                                    td {
                                        @for (i, t) in w.tasks.iter().enumerate() {
                                            @if i > 0 { ", " }
                                            (task_link(*t))
                                        }
                                        @if w.tasks.is_empty() { span.muted { "—" } }
                                    }
                                    td { (ago(w.worker.last_seen(), now)) }
                                }
                            }
                        }
                    }
                }
                @if hidden > 0 {
                    p.muted.small { (hidden) " more on " a href="/workers" { "the workers page" } "." }
                }
            }
        }
    }
}

/// The place of the board's figures and charts (throughput and queue depth over time,
/// claim → complete durations, human response time): `plot.rs` and `metrics.rs` fill it.
/// Until they do, a table of what the live tasks alone tell.
async fn metrics_slot(_app: &App, live: &[TaskView], now: Timestamp) -> Markup {
    super::figures::section(_app)
        .await
        .unwrap_or_else(|_| figures_table(live, now))
}

/// Figures from the tasks on the queue: completed in the last hour, the median claim →
/// complete time, the oldest ready task's wait.
fn figures_table(live: &[TaskView], now: Timestamp) -> Markup {
    let completed_last_hour = live
        .iter()
        .filter(|v| {
            v.task
                .completed_at
                .is_some_and(|t| secs_between(t, now) <= 3600)
        })
        .count();
    let mut durations: Vec<u64> = live
        .iter()
        .filter(|v| v.task.status == TaskStatus::Completed)
        .filter_map(|v| Some(secs_between(v.task.claimed_at?, v.task.completed_at?)))
        .collect();
    durations.sort_unstable();
    let median = durations.get(durations.len() / 2).copied();
    let oldest_ready = live
        .iter()
        .filter(|v| v.task.status == TaskStatus::Pending && !v.blocked)
        .filter_map(|v| v.task.created_at)
        .min();
    html! {
        section.card.figures aria-labelledby="figures-h" {
            h2 #figures-h { "Figures" }
            div.table-wrap {
                table.figures {
                    caption { "From the tasks on the queue" }
                    tbody {
                        tr { th scope="row" { "completed in the last hour" } td { (completed_last_hour) } }
                        tr {
                            th scope="row" { "claim → complete (median)" }
                            td {
                                @match median {
                                    Some(s) => { (layout::duration(s)) " over " (durations.len()) " tasks" }
                                    None => { span.muted { "no completed task yet" } }
                                }
                            }
                        }
                        tr {
                            th scope="row" { "oldest ready task added" }
                            td {
                                @match oldest_ready {
                                    Some(t) => { (ago(Some(t), now)) }
                                    None => { span.muted { "none waiting" } }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// One line of the recent events: when, and what it says.
struct Line {
    at: Timestamp,
    what: Markup,
}

fn task_lines(tasks: &[TaskView]) -> Vec<Line> {
    let mut lines = Vec::new();
    for v in tasks {
        let t = &v.task;
        if let Some(at) = t.created_at {
            lines.push(Line {
                at,
                what: html! { "task " (task_link(t.id)) " added: " (layout::preview(&t.description, 80)) },
            });
        }
        if let (Some(at), Some(w)) = (t.claimed_at, &t.claimed_by) {
            lines.push(Line {
                at,
                what: html! { "task " (task_link(t.id)) " claimed by " strong { (w) } },
            });
        }
        if let Some(at) = t.completed_at {
            let by = t.completed_by.as_deref().unwrap_or("?");
            lines.push(Line {
                at,
                what: html! { "task " (task_link(t.id)) " completed by " strong { (by) } },
            });
        } else if let (Some(at), TaskStatus::Failed | TaskStatus::Cancelled) =
            (t.ended_at, t.status)
        {
            lines.push(Line {
                at,
                what: html! { "task " (task_link(t.id)) " " (badge(t.status.as_str())) },
            });
        }
    }
    lines
}

fn message_line(m: &Message) -> Line {
    let what = html! {
        strong { (m.agent) }
        @match m.kind {
            MessageKind::Question => { " asked" }
            MessageKind::Answer => { " answered" }
            MessageKind::Result => { " sent a result" }
            MessageKind::Message => {}
        }
        @if let Some(id) = m.task_id {
            " (task " (task_link(id)) ")"
        }
        ": " span.text { (layout::preview(&m.message, 200)) }
    };
    Line {
        at: m.timestamp,
        what,
    }
}

fn events_card(tasks: &[TaskView], messages: &[Message], now: Timestamp) -> Markup {
    let mut lines = task_lines(tasks);
    lines.extend(messages.iter().map(message_line));
    lines.sort_by_key(|l| std::cmp::Reverse(l.at));
    lines.truncate(RECENT_EVENTS);
    html! {
        section.card.events aria-labelledby="events-h" {
            h2 #events-h { a href="/messages" { "Recent events" } }
            @if lines.is_empty() {
                p.muted.empty { "Nothing has happened yet." }
            } @else {
                ol.events {
                    @for l in &lines {
                        li { (ago(Some(l.at), now)) " " (l.what) }
                    }
                }
            }
        }
    }
}
