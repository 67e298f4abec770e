//! The tasks (`/tasks`): the list with filters (status, priority, worker, capability, the
//! archive too) and the form that adds a task with its instructions; a task's page
//! (`/tasks/{id}`) with its instructions rendered from Markdown, context files, dependencies and
//! dependents, attempts and their errors, result and message thread; and the coordinator's
//! actions on it: cancel, retry, change priority, release.
//!
//! Every action is a form (with the session's token) that runs the same op as the CLI in the
//! server's group commit, then redirects to the task's page with a message saying what
//! happened, or why not. A refused add shows the form again, filled in, with the reason.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use axum::Form;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::Value;

use super::layout::{self, ago, badge, task_link};
use super::{Flash, Page, change, done, failure, markdown};
use crate::error::{Error, Result};
use crate::message::{Message, MessageFilter, MessageKind};
use crate::op::{self, NewTask, Reply, TaskView};
use crate::server::App;
use crate::task::{Priority, StatusFilter, TaskStatus};
use crate::time::Timestamp;

/// Rows the list shows at most (the newest).
const LISTED: usize = 500;
/// Archived dependencies looked up one by one at most.
const LOOKUPS: usize = 20;
/// Entries of a task's message thread shown at most (the newest).
const THREAD: usize = 200;

/// The list's filters, from the query string (empty: any).
#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    status: String,
    #[serde(default)]
    priority: String,
    #[serde(default)]
    worker: String,
    #[serde(default)]
    capability: String,
    /// Present (a checked box): the archive too.
    #[serde(default)]
    all: Option<String>,
}

/// The add form's fields.
#[derive(Debug, Default, Deserialize)]
pub struct AddForm {
    #[serde(default)]
    description: String,
    #[serde(default)]
    instructions: String,
    #[serde(default)]
    priority: String,
    #[serde(default)]
    requires: String,
    #[serde(default)]
    context: String,
    #[serde(default)]
    after: String,
    #[serde(default)]
    assign: String,
}

/// The fields of an action's form (each action reads the ones it needs).
#[derive(Debug, Default, Deserialize)]
pub struct ActionForm {
    #[serde(default)]
    reason: String,
    #[serde(default)]
    priority: String,
    #[serde(default)]
    worker: String,
    #[serde(default)]
    attempt: String,
}

/// `GET /tasks`.
pub async fn list(
    State(app): State<Arc<App>>,
    page: Page,
    query: std::result::Result<Query<ListQuery>, QueryRejection>,
) -> Response {
    let q = match query {
        Ok(Query(q)) => q,
        Err(e) => return failure(&page, &Error::Invalid(format!("bad filters: {e}"))),
    };
    list_page(&app, &page, &q, &AddForm::default(), None).await
}

/// The list with `form` in the add box and, after a refused add, why (`refused`).
async fn list_page(
    app: &App,
    page: &Page,
    q: &ListQuery,
    form: &AddForm,
    refused: Option<&Error>,
) -> Response {
    let now = crate::time::now();
    let status = match q.status.as_str() {
        "" => None,
        s => match StatusFilter::parse(s) {
            Some(f) => Some(f),
            None => return failure(page, &Error::Invalid(format!("no status {s:?}"))),
        },
    };
    let priority = match q.priority.as_str() {
        "" => None,
        p => match Priority::parse(p) {
            Some(p) => Some(p),
            None => return failure(page, &Error::Invalid(format!("no priority {p:?}"))),
        },
    };
    let all = q.all.is_some();
    let tasks = match super::tasks(app, status, all).await {
        Ok(t) => t,
        Err(e) => return failure(page, &e),
    };
    // The choices of the worker and capability filters, from the tasks themselves.
    let mut workers = BTreeSet::new();
    let mut capabilities = BTreeSet::new();
    for v in &tasks {
        let t = &v.task;
        for w in [&t.claimed_by, &t.completed_by, &t.assigned_to]
            .into_iter()
            .flatten()
        {
            workers.insert(w.clone());
        }
        capabilities.extend(t.requires.iter().cloned());
    }
    let worker = q.worker.trim();
    let capability = q.capability.trim();
    let shown: Vec<&TaskView> = tasks
        .iter()
        .rev()
        .filter(|v| priority.is_none_or(|p| v.task.priority == p))
        .filter(|v| worker.is_empty() || works_on(v, worker))
        .filter(|v| capability.is_empty() || v.task.requires.iter().any(|c| c == capability))
        .collect();
    let status_code = refused.map_or(StatusCode::OK, |e| {
        StatusCode::from_u16(crate::wire::http_status(e)).unwrap_or(StatusCode::BAD_REQUEST)
    });
    layout::page_with_status(
        page,
        status_code,
        "Tasks",
        html! {
            h1 { "Tasks" }
            form.filters method="get" action="/tasks" aria-label="Filter the tasks" {
                label { "Status "
                    select name="status" {
                        option value="" selected[status.is_none()] { "any" }
                        @for s in ["pending", "in_progress", "completed", "failed", "cancelled", "blocked"] {
                            option value=(s) selected[q.status == s] { (s.replace('_', " ")) }
                        }
                    }
                }
                label { "Priority "
                    select name="priority" {
                        option value="" selected[priority.is_none()] { "any" }
                        @for p in ["high", "normal", "low"] {
                            option value=(p) selected[q.priority == p] { (p) }
                        }
                    }
                }
                label { "Worker "
                    select name="worker" {
                        option value="" selected[worker.is_empty()] { "any" }
                        @for w in &workers {
                            option value=(w) selected[worker == w.as_str()] { (w) }
                        }
                    }
                }
                label { "Capability "
                    select name="capability" {
                        option value="" selected[capability.is_empty()] { "any" }
                        @for c in &capabilities {
                            option value=(c) selected[capability == c.as_str()] { (c) }
                        }
                    }
                }
                label.check { input type="checkbox" name="all" value="1" checked[all]; " archived too" }
                button type="submit" { "Show" }
            }
            p.muted.small {
                (shown.len()) " of " (tasks.len()) " tasks" @if !all { " on the queue" }
                @if shown.len() > LISTED { "; the newest " (LISTED) " are listed" }
                "."
            }
            div.table-wrap {
                table.tasks {
                    thead {
                        tr {
                            th scope="col" { "task" } th scope="col" { "status" }
                            th scope="col" { "priority" } th scope="col" { "worker" }
                            th scope="col" { "needs" } th scope="col" { "description" }
                            th scope="col" { "added" }
                        }
                    }
                    tbody {
                        @for v in shown.iter().take(LISTED) {
                            (task_row(v, now))
                        }
                    }
                }
            }
            @if shown.is_empty() {
                p.muted.empty { "No task matches." }
            }
            (add_form(page, form, refused))
        },
    )
}

/// True if `worker` claimed, completed or is assigned task `v`.
fn works_on(v: &TaskView, worker: &str) -> bool {
    let t = &v.task;
    [&t.claimed_by, &t.completed_by, &t.assigned_to]
        .into_iter()
        .any(|w| w.as_deref() == Some(worker))
}

/// The status to show: `blocked` for a blocked pending task.
fn shown_status(v: &TaskView) -> &'static str {
    if v.blocked {
        "blocked"
    } else {
        v.task.status.as_str()
    }
}

fn task_row(v: &TaskView, now: Timestamp) -> Markup {
    let t = &v.task;
    let who = t
        .claimed_by
        .as_deref()
        .or(t.completed_by.as_deref())
        .map(str::to_string)
        .or_else(|| t.assigned_to.as_ref().map(|a| format!("→ {a}")));
    html! {
        tr {
            td { (task_link(t.id)) }
            td { (badge(shown_status(v))) @if v.archived { " " span.muted.small { "archived" } } }
            td { (t.priority.as_str()) }
            td { @if let Some(w) = &who { (w) } }
            td { (t.requires.join(", ")) }
            td.desc { (layout::preview(&t.description, 100)) }
            td { (ago(t.created_at, now)) }
        }
    }
}

fn add_form(page: &Page, f: &AddForm, refused: Option<&Error>) -> Markup {
    let priority = if f.priority.is_empty() {
        "normal"
    } else {
        f.priority.as_str()
    };
    html! {
        section.card.add-task aria-labelledby="add-h" {
            h2 #add-h { "Add a task" }
            @if let Some(e) = refused {
                p.error role="alert" { "The task was not added: " (e.to_string()) }
            }
            form.add method="post" action="/tasks" {
                (page.csrf_field())
                label for="add-description" { "Description (one line)" }
                input #add-description type="text" name="description" value=(f.description)
                    required maxlength="4096" autocomplete="off";
                label for="add-instructions" { "Instructions (Markdown): objective, steps, acceptance criteria" }
                textarea #add-instructions name="instructions" rows="8" { (f.instructions) }
                div.row {
                    label { "Priority "
                        select name="priority" {
                            @for p in ["high", "normal", "low"] {
                                option value=(p) selected[priority == p] { (p) }
                            }
                        }
                    }
                    label { "Needs capabilities "
                        input type="text" name="requires" value=(f.requires) placeholder="python, gpu" autocomplete="off";
                    }
                    label { "For worker "
                        input type="text" name="assign" value=(f.assign) placeholder="any" autocomplete="off";
                    }
                }
                label for="add-context" { "Context files (board paths, one per line)" }
                textarea #add-context name="context" rows="2" { (f.context) }
                label for="add-after" { "After tasks (ids)" }
                input #add-after type="text" name="after" value=(f.after) placeholder="1795248529762 1795248529763" autocomplete="off";
                button type="submit" { "Add task" }
            }
        }
    }
}

/// Splits a list typed in a form (commas, spaces or lines) into its items.
fn items(text: &str) -> Vec<String> {
    text.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// The task a form describes, or what is wrong with it.
fn new_task(f: &AddForm) -> Result<NewTask> {
    let priority = match f.priority.trim() {
        "" => Priority::Normal,
        p => Priority::parse(p)
            .ok_or_else(|| Error::Invalid(format!("no priority {p:?}: high, normal or low")))?,
    };
    let after = items(&f.after)
        .iter()
        .map(|a| {
            a.trim_start_matches('#')
                .parse::<u64>()
                .map_err(|_| Error::Invalid(format!("\"after\": {a:?} is not a task id")))
        })
        .collect::<Result<Vec<u64>>>()?;
    // Browsers send line breaks as CRLF; the board keeps plain newlines.
    let instructions = f.instructions.replace("\r\n", "\n");
    Ok(NewTask {
        description: f.description.clone(),
        instructions: (!instructions.trim().is_empty()).then_some(instructions),
        context_files: f
            .context
            .lines()
            .flat_map(|l| l.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        assign: Some(f.assign.trim().to_string()).filter(|a| !a.is_empty()),
        priority,
        requires: items(&f.requires),
        after,
        ..NewTask::default()
    })
}

/// `POST /tasks`: the `add` op; then the new task's page, or the form again with the reason.
pub async fn add(State(app): State<Arc<App>>, page: Page, Form(form): Form<AddForm>) -> Response {
    let added = match new_task(&form) {
        Ok(task) => change(&app, op::Add { task }).await,
        Err(e) => Err(e),
    };
    match added {
        Ok(Reply::Added { tasks }) if !tasks.is_empty() => {
            let id = tasks[0].id;
            done(
                &app,
                &page,
                Flash::done(format!("Task {id} added.")),
                &format!("/tasks/{id}"),
            )
        }
        Ok(other) => failure(
            &page,
            &Error::Protocol(format!("add got an unexpected reply: {other:?}")),
        ),
        Err(e) => list_page(&app, &page, &ListQuery::default(), &form, Some(&e)).await,
    }
}

/// Everything a task's page shows.
struct Shown {
    task: TaskView,
    instructions: Option<std::result::Result<String, String>>,
    deps: Vec<(u64, Option<TaskView>)>,
    dependents: Vec<TaskView>,
    thread: Vec<Message>,
}

async fn load(app: &App, id: u64) -> Result<Shown> {
    let task = super::task(app, id).await?;
    let instructions = match &task.task.instruction_file {
        Some(f) => Some(instruction_text(app, f).await),
        None => None,
    };
    let queue = super::tasks(app, None, false).await?;
    let by_id: HashMap<u64, &TaskView> = queue.iter().map(|v| (v.task.id, v)).collect();
    let mut deps = Vec::new();
    for (n, d) in task.task.depends_on.iter().enumerate() {
        let found = match by_id.get(d) {
            Some(v) => Some((*v).clone()),
            None if n < LOOKUPS => match super::task(app, *d).await {
                Ok(v) => Some(v),
                Err(Error::UnknownTask(_)) => None,
                Err(e) => return Err(e),
            },
            None => None,
        };
        deps.push((*d, found));
    }
    let dependents = queue
        .iter()
        .filter(|v| v.task.depends_on.contains(&id))
        .cloned()
        .collect();
    let thread = super::messages(
        app,
        MessageFilter {
            task: Some(id),
            limit: Some(THREAD),
            ..MessageFilter::default()
        },
    )
    .await?;
    Ok(Shown {
        task,
        instructions,
        deps,
        dependents,
        thread,
    })
}

/// The content of an instruction file, or why it cannot be read.
async fn instruction_text(app: &App, file: &str) -> std::result::Result<String, String> {
    let Some(store) = app.store.clone() else {
        return Err("this server has no board".into());
    };
    let file = file.to_string();
    tokio::task::spawn_blocking(move || store.read_board_file(&file))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}

/// `GET /tasks/{id}`.
pub async fn page(State(app): State<Arc<App>>, page: Page, Path(id): Path<String>) -> Response {
    let Ok(id) = id.trim_start_matches('#').parse::<u64>() else {
        return failure(&page, &Error::Invalid(format!("{id:?} is not a task id")));
    };
    let s = match load(&app, id).await {
        Ok(s) => s,
        Err(e) => return failure(&page, &e),
    };
    let now = crate::time::now();
    let v = &s.task;
    let t = &v.task;
    layout::page(
        &page,
        &format!("Task {id}"),
        html! {
            p.muted.small { a href="/tasks" { "← Tasks" } }
            h1.task-title { "Task " (id) }
            p.text.description { (t.description) }
            p.meta {
                (badge(shown_status(v)))
                " priority " strong { (t.priority.as_str()) }
                @if v.archived { " · archived" }
                @if let Some(f) = &v.fallback { " · " (f.note) }
            }
            (actions(&page, v))
            div.cards {
                section.card aria-labelledby="life-h" {
                    h2 #life-h { "Its life" }
                    dl.facts {
                        dt { "added" } dd { (ago(t.created_at, now)) }
                        @if t.first_claimed_at.is_some() {
                            dt { "first claimed" } dd { (ago(t.first_claimed_at, now)) }
                        }
                        @if let Some(w) = &t.claimed_by {
                            dt { "claimed by" } dd { a href={ "/workers/" (super::workers::url_part(w)) } { (w) } " " (ago(t.claimed_at, now)) }
                        }
                        @if t.lease_expires_at.is_some() {
                            dt { "lease ends" } dd { (ago(t.lease_expires_at, now)) }
                        }
                        @if let Some(w) = &t.completed_by {
                            dt { "completed by" } dd { a href={ "/workers/" (super::workers::url_part(w)) } { (w) } " " (ago(t.completed_at, now)) }
                        }
                        @if t.ended_at.is_some() && t.status != TaskStatus::Completed {
                            dt { "ended" } dd { (ago(t.ended_at, now)) }
                        }
                        @if let Some(a) = &t.assigned_to {
                            dt { "meant for" } dd { a href={ "/workers/" (super::workers::url_part(a)) } { (a) } @if t.strict { " only" } }
                        }
                        @if !t.requires.is_empty() {
                            dt { "needs" } dd { (t.requires.join(", ")) }
                        }
                    }
                }
                section.card aria-labelledby="attempts-h" {
                    h2 #attempts-h { "Attempts" }
                    p {
                        strong { (t.attempts) } " attempt" @if t.attempts != 1 { "s" }
                        @if let Some(m) = t.max_retries { ", " (m) " retries allowed" }
                    }
                    @if let Some(nb) = t.not_before.filter(|nb| *nb > now) {
                        p { "Claimable again " (ago(Some(nb), now)) " (retry delay)." }
                    }
                    @if let Some(e) = &t.last_error {
                        p { "Last error:" }
                        pre.error.text { (e) }
                    } @else {
                        p.muted { "No error recorded." }
                    }
                    @let kept: Vec<&Message> = s.thread.iter().filter(|m| m.kind == MessageKind::Result).collect();
                    @if !kept.is_empty() {
                        p { "Sent for claims that had been taken back:" }
                        ul {
                            @for m in kept {
                                li { strong { (m.agent) } " " (ago(Some(m.timestamp), now)) ": " span.text { (m.message) } }
                            }
                        }
                    }
                }
            }
            section.card aria-labelledby="instructions-h" {
                h2 #instructions-h { "Instructions" }
                @match (&t.instruction_file, &s.instructions) {
                    (Some(f), Some(Ok(text))) => {
                        p.muted.small { "From " code { (f) } }
                        div.markdown { (markdown::render(text)) }
                    }
                    (Some(f), Some(Err(e))) => {
                        p.error { "The instruction file " code { (f) } " cannot be read: " (e) }
                    }
                    _ => { p.muted { "None: the description is all the worker gets." } }
                }
                @if !t.context_files.is_empty() {
                    h3 { "Context files" }
                    ul.files { @for f in &t.context_files { li { code { (f) } } } }
                }
                @if !t.metadata.is_empty() {
                    h3 { "Metadata" }
                    pre.text { (pretty(&Value::Object(t.metadata.clone()))) }
                }
            }
            div.cards {
                section.card aria-labelledby="deps-h" {
                    h2 #deps-h { "Depends on" }
                    @if s.deps.is_empty() { p.muted { "Nothing." } }
                    ul.deps {
                        @for (d, found) in &s.deps {
                            li {
                                (task_link(*d)) " "
                                @match found {
                                    Some(dv) => { (badge(shown_status(dv))) " " (layout::preview(&dv.task.description, 80)) }
                                    None => { span.muted { "not found" } }
                                }
                            }
                        }
                    }
                }
                section.card aria-labelledby="dependents-h" {
                    h2 #dependents-h { "Needed by" }
                    @if s.dependents.is_empty() { p.muted { "No task on the queue waits for it." } }
                    ul.deps {
                        @for dv in &s.dependents {
                            li { (task_link(dv.task.id)) " " (badge(shown_status(dv))) " " (layout::preview(&dv.task.description, 80)) }
                        }
                    }
                }
            }
            section.card aria-labelledby="result-h" {
                h2 #result-h { "Result" }
                @match &t.result {
                    None | Some(Value::Null) => { p.muted { "None yet." } }
                    Some(Value::String(text)) => { div.markdown { (markdown::render(text)) } }
                    Some(other) => { pre.text { (pretty(other)) } }
                }
            }
            section.card aria-labelledby="thread-h" {
                h2 #thread-h { "Messages about it" }
                @if s.thread.is_empty() { p.muted { "None." } }
                ol.events.thread {
                    @for m in &s.thread {
                        li {
                            (ago(Some(m.timestamp), now)) " "
                            strong { (m.agent) } " "
                            @if m.kind != MessageKind::Message { (badge(m.kind.as_str())) " " }
                            @if let Some(q) = m.reply_to { span.muted { "to #" (q) " " } }
                            span.text { (m.message) }
                        }
                    }
                }
                @if t.status == TaskStatus::InProgress || t.status == TaskStatus::Pending {
                    p.muted.small { "Open questions about it are answered on " a href="/questions" { "the questions page" } "." }
                }
            }
        },
    )
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
}

/// The forms of the actions that fit the task's status.
fn actions(page: &Page, v: &TaskView) -> Markup {
    let t = &v.task;
    let id = t.id;
    let open = !t.status.is_terminal() && !v.archived;
    html! {
        div.actions {
            @if open {
                form.action method="post" action={ "/tasks/" (id) "/priority" } {
                    (page.csrf_field())
                    label for="new-priority" { "Priority" }
                    select #new-priority name="priority" {
                        @for p in ["high", "normal", "low"] {
                            option value=(p) selected[t.priority.as_str() == p] { (p) }
                        }
                    }
                    button type="submit" { "Change" }
                }
            }
            @if t.status == TaskStatus::InProgress && !v.archived {
                @if let Some(w) = &t.claimed_by {
                    form.action method="post" action={ "/tasks/" (id) "/release" } {
                        (page.csrf_field())
                        input type="hidden" name="worker" value=(w);
                        input type="hidden" name="attempt" value=(t.attempts);
                        button type="submit" { "Release from " (w) }
                    }
                }
            }
            @if t.status == TaskStatus::Failed && !v.archived {
                form.action method="post" action={ "/tasks/" (id) "/retry" } {
                    (page.csrf_field())
                    button type="submit" { "Retry" }
                }
            }
            @if open || (t.status == TaskStatus::Failed && !v.archived) {
                form.action method="post" action={ "/tasks/" (id) "/cancel" } {
                    (page.csrf_field())
                    label for="cancel-reason" { "Reason" }
                    input #cancel-reason type="text" name="reason" placeholder="optional" autocomplete="off";
                    button.danger type="submit" { "Cancel task" }
                }
            }
        }
    }
}

/// `POST /tasks/{id}/{action}`: cancel, retry, priority or release, then the task's page
/// with what happened.
pub async fn act(
    State(app): State<Arc<App>>,
    page: Page,
    Path((id, action)): Path<(u64, String)>,
    Form(form): Form<ActionForm>,
) -> Response {
    let back = format!("/tasks/{id}");
    let outcome: Result<String> = match action.as_str() {
        "cancel" => {
            let reason = Some(form.reason.trim().to_string()).filter(|r| !r.is_empty());
            change(&app, op::Cancel { task: id, reason })
                .await
                .map(|_| format!("Task {id} cancelled."))
        }
        "retry" => change(&app, op::Retry { task: id })
            .await
            .map(|_| format!("Task {id} is pending again, its attempts reset.")),
        "priority" => match Priority::parse(form.priority.trim()) {
            Some(priority) => change(&app, op::SetPriority { task: id, priority })
                .await
                .map(|_| format!("Task {id} now has {} priority.", priority.as_str())),
            None => Err(Error::Invalid(format!(
                "no priority {:?}: high, normal or low",
                form.priority
            ))),
        },
        "release" => {
            let attempt = form.attempt.trim().parse().ok();
            let worker = form.worker.trim().to_string();
            change(
                &app,
                op::Release {
                    task: id,
                    worker: worker.clone(),
                    attempt,
                },
            )
            .await
            .map(|_| format!("Task {id} released from {worker}: it is pending again."))
        }
        other => {
            return failure(
                &page,
                &Error::Invalid(format!("there is no action {other:?} on a task")),
            );
        }
    };
    let flash = match outcome {
        Ok(text) => Flash::done(text),
        Err(e) => Flash::failed(format!("Not done: {e}")),
    };
    done(&app, &page, flash, &back)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_form_becomes_the_task_it_describes() {
        let f = AddForm {
            description: "Write hello".into(),
            instructions: "# Hello\r\n\r\nSay it.".into(),
            priority: "high".into(),
            requires: "python, gpu".into(),
            context: "docs/a.md\r\ndocs/b.md, docs/c.md\n".into(),
            after: "#12, 13 14".into(),
            assign: " w1 ".into(),
        };
        let t = new_task(&f).unwrap();
        assert_eq!(t.instructions.as_deref(), Some("# Hello\n\nSay it."));
        assert_eq!(t.priority, Priority::High);
        assert_eq!(t.requires, ["python", "gpu"]);
        assert_eq!(t.context_files, ["docs/a.md", "docs/b.md", "docs/c.md"]);
        assert_eq!(t.after, [12, 13, 14]);
        assert_eq!(t.assign.as_deref(), Some("w1"));
        let blank = new_task(&AddForm {
            description: "d".into(),
            instructions: " \r\n".into(),
            ..AddForm::default()
        })
        .unwrap();
        assert_eq!((blank.instructions, blank.assign), (None, None));
        assert_eq!(blank.priority, Priority::Normal);
        for bad in [
            AddForm {
                after: "12 x".into(),
                ..AddForm::default()
            },
            AddForm {
                priority: "urgent".into(),
                ..AddForm::default()
            },
        ] {
            assert!(matches!(new_task(&bad), Err(Error::Invalid(_))), "{bad:?}");
        }
    }
}
