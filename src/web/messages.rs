//! The message log (`/messages`): its last entries, newest first, filtered by kind, agent and
//! task; the page follows the log live (every entry appended makes open pages fetch
//! themselves again, see `events.rs`), so it is a tail of the log.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::Response;
use maud::html;
use serde::Deserialize;

use super::layout::{self, ago, badge, task_link};
use super::workers::url_part;
use super::{Page, failure};
use crate::error::Error;
use crate::message::{MessageFilter, MessageKind};
use crate::server::App;

/// Entries shown when the filter names no number.
const DEFAULT_LIMIT: usize = 100;
/// The choices of how many entries to show.
const LIMITS: [usize; 4] = [50, 100, 500, 2000];
/// The kinds of entries, as the filter names them.
const KINDS: [MessageKind; 4] = [
    MessageKind::Message,
    MessageKind::Question,
    MessageKind::Answer,
    MessageKind::Result,
];

/// The filters, from the query string (empty: any).
#[derive(Debug, Default, Deserialize)]
pub struct LogQuery {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    agent: String,
    #[serde(default)]
    task: String,
    #[serde(default)]
    limit: String,
}

/// `GET /messages`.
pub async fn page(
    State(app): State<Arc<App>>,
    page: Page,
    query: std::result::Result<Query<LogQuery>, QueryRejection>,
) -> Response {
    let q = match query {
        Ok(Query(q)) => q,
        Err(e) => return failure(&page, &Error::Invalid(format!("bad filters: {e}"))),
    };
    let kind = match q.kind.as_str() {
        "" => None,
        k => match KINDS.into_iter().find(|x| x.as_str() == k) {
            Some(x) => Some(x),
            None => return failure(&page, &Error::Invalid(format!("no kind of entry {k:?}"))),
        },
    };
    let task = match q.task.trim().trim_start_matches('#') {
        "" => None,
        t => match t.parse::<u64>() {
            Ok(id) => Some(id),
            Err(_) => return failure(&page, &Error::Invalid(format!("{t:?} is not a task id"))),
        },
    };
    let limit = match q.limit.trim() {
        "" => DEFAULT_LIMIT,
        l => match l.parse::<usize>() {
            Ok(n) if (1..=*LIMITS.last().unwrap_or(&DEFAULT_LIMIT)).contains(&n) => n,
            _ => {
                return failure(
                    &page,
                    &Error::Invalid(format!("{l:?} is not a number of entries")),
                );
            }
        },
    };
    let agent = q.agent.trim();
    let filter = MessageFilter {
        kind,
        task,
        agent: Some(agent.to_string()).filter(|a| !a.is_empty()),
        limit: Some(limit),
        ..MessageFilter::default()
    };
    let entries = match super::messages(&app, filter).await {
        Ok(m) => m,
        Err(e) => return failure(&page, &e),
    };
    let now = crate::time::now();
    layout::page(
        &page,
        "Messages",
        html! {
            h1 { "Messages" }
            form.filters method="get" action="/messages" aria-label="Filter the log" {
                label { "Kind "
                    select name="kind" {
                        option value="" selected[kind.is_none()] { "any" }
                        @for k in KINDS {
                            option value=(k.as_str()) selected[kind == Some(k)] { (k.as_str()) }
                        }
                    }
                }
                label { "From " input type="text" name="agent" value=(agent) size="12" placeholder="anyone" autocomplete="off"; }
                label { "Task " input type="text" name="task" value=(q.task.trim()) size="15" placeholder="any" inputmode="numeric" autocomplete="off"; }
                label { "Show "
                    select name="limit" {
                        @for n in LIMITS {
                            option value=(n) selected[n == limit] { "last " (n) }
                        }
                    }
                }
                button type="submit" { "Show" }
            }
            p.muted.small {
                (entries.len()) " entr" @if entries.len() == 1 { "y" } @else { "ies" }
                ", newest first; the page follows the log as it grows."
            }
            @if entries.is_empty() { p.muted.empty { "No entry matches." } }
            ol.events.log reversed {
                @for m in entries.iter().rev() {
                    li id=[m.seq.map(|s| format!("m-{s}"))] {
                        (ago(Some(m.timestamp), now)) " "
                        @if let Some(s) = m.seq { span.muted.small { "#" (s) " " } }
                        a.who href={ "/messages?agent=" (url_part(&m.agent)) } { strong { (m.agent) } } " "
                        @if m.kind != MessageKind::Message { (badge(m.kind.as_str())) " " }
                        @if let Some(t) = m.task_id { "on " (task_link(t)) " " }
                        @if let Some(r) = m.reply_to {
                            span.muted { "answering " a href={ "/questions#q-" (r) } { "#" (r) } " " }
                        }
                        span.text { (layout::preview(&m.message, 2000)) }
                    }
                }
            }
        },
    )
}
