//! The questions inbox (`/questions`): every open question with its worker, task and age, the
//! task one click away, and a box to answer it; answered questions below, with who answered
//! and how long it took. An answer is the `answer` op, as `vine answer` sends it, so a worker
//! blocked in `vine ask --wait` gets it at once.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Form;
use axum::extract::{Path, State};
use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;

use super::layout::{self, ago, badge, task_link};
use super::{Flash, Page, change, done, failure};
use crate::error::{Error, Result};
use crate::op::{self, TaskView, WorkerView};
use crate::reply::QuestionView;
use crate::server::App;
use crate::time::{Timestamp, secs_between};

/// Who an answer from the control room is from when the form names nobody.
pub const DEFAULT_AGENT: &str = "human";
/// Answered questions shown below the open ones (the newest).
const ANSWERED_SHOWN: usize = 50;
/// Tasks looked up one by one (archived tasks of open questions) at most per page.
const LOOKUPS: usize = 20;

/// What a question card shows beside the question: the asker and the task.
pub struct Context {
    /// Workers by id.
    pub workers: HashMap<String, WorkerView>,
    /// The tasks questions are about, by id.
    pub tasks: HashMap<u64, TaskView>,
}

impl Context {
    /// Gathers the workers and the tasks of `questions`. `workers` and `live` (the queue) are
    /// used when the caller has read them already; a task not on the queue (archived) is
    /// looked up alone.
    pub async fn load(
        app: &App,
        questions: &[&QuestionView],
        workers: Option<&[WorkerView]>,
        live: Option<&[TaskView]>,
    ) -> Result<Self> {
        let read_workers;
        let workers: &[WorkerView] = match workers {
            Some(w) => w,
            None => {
                read_workers = super::workers(app).await?;
                &read_workers
            }
        };
        let workers = workers.iter().map(|w| (w.id.clone(), w.clone())).collect();
        let wanted: Vec<u64> = questions
            .iter()
            .filter_map(|q| q.question.task_id)
            .collect();
        let read_tasks;
        let queue: &[TaskView] = match live {
            Some(l) => l,
            None if wanted.is_empty() => &[],
            None => {
                read_tasks = super::tasks(app, None, false).await?;
                &read_tasks[..]
            }
        };
        let mut tasks: HashMap<u64, TaskView> = queue
            .iter()
            .filter(|t| wanted.contains(&t.task.id))
            .map(|t| (t.task.id, t.clone()))
            .collect();
        let missing: Vec<u64> = wanted
            .iter()
            .filter(|id| !tasks.contains_key(id))
            .copied()
            .take(LOOKUPS)
            .collect();
        for id in missing {
            match super::task(app, id).await {
                Ok(t) => {
                    tasks.insert(id, t);
                }
                Err(Error::UnknownTask(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Context { workers, tasks })
    }
}

/// `GET /questions`.
pub async fn page(State(app): State<Arc<App>>, page: Page) -> Response {
    let now = crate::time::now();
    let loaded = async {
        let all = super::questions(&app, true).await?;
        let refs: Vec<&QuestionView> = all.iter().filter(|q| q.answers.is_empty()).collect();
        let ctx = Context::load(&app, &refs, None, None).await?;
        Ok::<_, Error>((all, ctx))
    }
    .await;
    let (all, ctx) = match loaded {
        Ok(x) => x,
        Err(e) => return failure(&page, &e),
    };
    let open: Vec<&QuestionView> = all.iter().filter(|q| q.answers.is_empty()).collect();
    let mut answered: Vec<&QuestionView> = all.iter().filter(|q| !q.answers.is_empty()).collect();
    answered.reverse();
    let title = if open.is_empty() {
        "Questions".to_string()
    } else {
        format!("({}) Questions", open.len())
    };
    layout::page(
        &page,
        &title,
        html! {
            h1 { "Questions" }
            section.open-questions aria-labelledby="open-h" {
                h2 #open-h { "Open " span.count { (open.len()) } }
                @if open.is_empty() {
                    p.muted.empty { "No question is waiting for an answer." }
                }
                (open_list(&page, &open, &ctx, now, "/questions"))
            }
            section.answered-questions aria-labelledby="answered-h" {
                h2 #answered-h { "Answered " span.count { (answered.len()) } }
                @if answered.is_empty() {
                    p.muted.empty { "None yet." }
                }
                @for q in answered.iter().take(ANSWERED_SHOWN) {
                    (answered_card(q, now))
                }
                @if answered.len() > ANSWERED_SHOWN {
                    p.muted { "The " (ANSWERED_SHOWN) " most recent are shown; "
                        code { "vine questions --all" } " lists every one." }
                }
            }
        },
    )
}

/// The cards of open questions (oldest first), each with its answer form; after answering,
/// the browser goes back to `back` (`/` or `/questions`).
pub fn open_list(
    page: &Page,
    open: &[&QuestionView],
    ctx: &Context,
    now: Timestamp,
    back: &str,
) -> Markup {
    html! {
        @for q in open {
            (open_card(page, q, ctx, now, back))
        }
    }
}

fn open_card(page: &Page, q: &QuestionView, ctx: &Context, now: Timestamp, back: &str) -> Markup {
    let m = &q.question;
    let seq = m.seq.unwrap_or_default();
    let worker = ctx.workers.get(&m.agent);
    let task = m.task_id.and_then(|id| ctx.tasks.get(&id));
    html! {
        article.question.open id={ "q-" (seq) } {
            header {
                strong.who { (m.agent) }
                @if let Some(w) = worker {
                    " " (badge(w.state.as_str()))
                }
                " asked " (ago(Some(m.timestamp), now))
                @if let Some(id) = m.task_id {
                    " about task " (task_link(id))
                }
                span.seq { " · question " (seq) }
            }
            p.text { (m.message) }
            @if let (Some(id), Some(t)) = (m.task_id, task) {
                details.task-brief {
                    summary { "Task " (id) ": " (layout::preview(&t.task.description, 80)) }
                    p.text { (t.task.description) }
                    p.meta {
                        (badge(t.task.status.as_str()))
                        " priority " (t.task.priority.as_str())
                        @if let Some(f) = &t.task.instruction_file {
                            " · instructions in " code { (f) }
                        }
                    }
                    p { a href={ "/tasks/" (id) } { "The task's instructions, attempts and messages →" } }
                }
            }
            form.answer method="post" action={ "/questions/" (seq) "/answer" } {
                (page.csrf_field())
                input type="hidden" name="back" value=(back);
                label for={ "answer-" (seq) } { "Your answer" }
                textarea id={ "answer-" (seq) } name="answer" rows="3" required {}
                div.row {
                    label for={ "agent-" (seq) } { "as" }
                    input id={ "agent-" (seq) } name="agent" value=(DEFAULT_AGENT) size="12"
                        maxlength="64" autocomplete="off";
                    button type="submit" { "Send answer" }
                }
            }
        }
    }
}

fn answered_card(q: &QuestionView, now: Timestamp) -> Markup {
    let m = &q.question;
    let seq = m.seq.unwrap_or_default();
    html! {
        article.question.answered id={ "q-" (seq) } {
            header {
                strong.who { (m.agent) }
                " asked " (ago(Some(m.timestamp), now))
                @if let Some(id) = m.task_id {
                    " about task " (task_link(id))
                }
                span.seq { " · question " (seq) }
            }
            p.text { (m.message) }
            @for a in &q.answers {
                blockquote.reply {
                    p.text { (a.message) }
                    footer {
                        strong { (a.agent) }
                        " answered after "
                        (layout::duration(secs_between(m.timestamp, a.timestamp)))
                    }
                }
            }
        }
    }
}

/// The answer form's fields.
#[derive(Deserialize)]
pub struct AnswerForm {
    #[serde(default)]
    answer: String,
    #[serde(default)]
    agent: String,
    #[serde(default)]
    back: String,
}

/// `POST /questions/{seq}/answer`: the `answer` op, then back to the page the form was on.
pub async fn answer(
    State(app): State<Arc<App>>,
    page: Page,
    Path(seq): Path<u64>,
    Form(form): Form<AnswerForm>,
) -> Response {
    let back = if form.back == "/" { "/" } else { "/questions" };
    let agent = match form.agent.trim() {
        "" => DEFAULT_AGENT,
        a => a,
    };
    // Browsers send line breaks as CRLF; the board keeps plain newlines.
    let text = form.answer.replace("\r\n", "\n");
    let op = op::Answer {
        agent: agent.to_string(),
        question: seq,
        answer: text,
    };
    let flash = match change(&app, op).await {
        Ok(_) => Flash::done(format!("Answer to question {seq} sent.")),
        Err(e) => Flash::failed(format!("Question {seq} was not answered: {e}")),
    };
    done(&app, &page, flash, back)
}
