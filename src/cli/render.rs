//! Short human-readable renderings of replies.

use std::fmt::Write;

use agentvine::op::{Next, QuestionView, RepairedFile, StatusReport, TaskView, WorkerView};
use agentvine::sessions::{SessionRecord, SessionState};
use agentvine::time::format_timestamp;
use agentvine::{Message, Progress, Reply, Task, TaskStatus};
use serde_json::Value;

/// Renders a reply for people.
pub fn reply(r: &Reply) -> String {
    match r {
        Reply::Added { tasks } => added(tasks),
        Reply::Claimed {
            claim: None,
            reason,
        } => {
            format!(
                "Nothing to claim: {}",
                reason.as_deref().unwrap_or("no task")
            )
        }
        Reply::Claimed { claim: Some(c), .. } => {
            let t = &c.task;
            let worker = t.claimed_by.as_deref().unwrap_or("?");
            let mut s = format!(
                "Claimed task {} (attempt {}, lease until {}): {}\n",
                t.id,
                t.attempts,
                t.lease_expires_at
                    .as_ref()
                    .map(format_timestamp)
                    .unwrap_or_default(),
                t.description
            );
            if let Some(f) = &t.instruction_file {
                match (&c.instructions, &c.instructions_error) {
                    (Some(text), _) => {
                        let _ = write!(
                            s,
                            "\n--- instructions ({f}) ---\n{}\n--- end of instructions ---\n",
                            text.trim_end()
                        );
                    }
                    (None, Some(e)) => {
                        let _ = writeln!(s, "\nInstruction file {f} could not be read: {e}");
                    }
                    (None, None) => {}
                }
            }
            if !t.context_files.is_empty() {
                let _ = writeln!(
                    s,
                    "\nRead these context files first: {}",
                    t.context_files.join(", ")
                );
            }
            if !t.metadata.is_empty() {
                let _ = writeln!(s, "Metadata: {}", Value::Object(t.metadata.clone()));
            }
            let _ = write!(
                s,
                "\nWhen done:   vine complete {id} --worker {worker} --attempt {a} --result \"<what you did>\"\n\
                 If it fails: vine fail {id} --worker {worker} --attempt {a} --error \"<what went wrong>\"\n\
                 To ask:      vine ask \"<question>\" --worker {worker} --task {id} --wait",
                id = t.id,
                a = t.attempts
            );
            s
        }
        Reply::Task { task } => task_detail(task),
        Reply::Session { session } => session_detail(session),
        Reply::SessionEnded { session } => format!(
            "Session {} ended: {}",
            session.id,
            session.ended_reason.as_deref().unwrap_or("no reason given")
        ),
        Reply::Sessions { sessions } => session_table(sessions),
        Reply::Tasks { tasks } => task_table(tasks),
        Reply::Worker { worker, released } => {
            let mut s = worker_line(worker);
            if !released.is_empty() {
                let ids: Vec<String> = released.iter().map(u64::to_string).collect();
                let _ = write!(s, "\nReturned to the queue: {}", ids.join(", "));
            }
            s
        }
        Reply::Workers { workers } => {
            if workers.is_empty() {
                return "No workers registered.".into();
            }
            workers
                .iter()
                .map(worker_line)
                .collect::<Vec<_>>()
                .join("\n")
        }
        Reply::Turn(t) => {
            let failed = t
                .failed
                .map(|id| format!("Attempt at task {id} failed (no progress). "))
                .unwrap_or_default();
            let next = match &t.next {
                Next::HandOver { claim } => reply(&Reply::Claimed {
                    claim: Some(claim.clone()),
                    reason: None,
                }),
                Next::Remind { task } => format!(
                    "Still holds task {} (attempt {}): {}",
                    task.id, task.attempts, task.description
                ),
                Next::Wait { reason, .. } => format!("wait: {reason}"),
                Next::LetGo { reason } => format!("stop: {reason}"),
            };
            format!("{failed}{next}")
        }
        Reply::Decision {
            keep_going, reason, ..
        } => format!(
            "{}: {reason}",
            if *keep_going { "continue" } else { "stop" }
        ),
        Reply::Progress { progress } => progress_line(progress),
        Reply::Message { message } => format!(
            "Wrote {} #{}{}",
            message.kind.as_str(),
            message.seq.unwrap_or(0),
            message
                .reply_to
                .map(|q| format!(" (answer to #{q})"))
                .unwrap_or_default()
        ),
        Reply::Messages { messages } => {
            if messages.is_empty() {
                return "No messages.".into();
            }
            messages
                .iter()
                .map(message_line)
                .collect::<Vec<_>>()
                .join("\n")
        }
        Reply::Questions { questions } => questions_text(questions),
        Reply::Requeued { tasks } => {
            if tasks.is_empty() {
                "No claims to take back: no lease has expired and no holder is stale.".into()
            } else {
                let ids: Vec<String> = tasks.iter().map(u64::to_string).collect();
                format!(
                    "Took back {} task(s) whose lease expired or whose holder went stale \
                     (`vine show ID` says which): {}",
                    tasks.len(),
                    ids.join(", ")
                )
            }
        }
        Reply::Compacted { archived, kept } => {
            let mut s = format!("Archived {archived} finished task(s).");
            if *kept > 0 {
                let _ = write!(
                    s,
                    " {kept} stay on the queue because unfinished tasks depend on them."
                );
            }
            s
        }
        Reply::Repaired { files } => repaired(files),
        Reply::Status { report } => status(report),
        Reply::Settings { settings } => settings_line(settings),
        Reply::Metrics { metrics } => metrics_text(metrics),
    }
}

/// The board's figures: counts now, then the window's figures and all the history's.
fn metrics_text(r: &agentvine::metrics::Report) -> String {
    let t = &r.tasks;
    let mut s = format!(
        "Tasks: {} pending, {} in progress, {} completed, {} failed, {} cancelled; {} open question(s)",
        t.pending, t.in_progress, t.completed, t.failed, t.cancelled, r.open_questions
    );
    let window = r
        .series
        .bucket_secs
        .saturating_mul(r.series.completed.len() as u64);
    let titled = [
        (
            format!("Last {}", agentvine::time::format_duration(window)),
            &r.recent,
        ),
        ("All the history".to_string(), &r.all_time),
    ];
    for (title, f) in titled {
        let _ = write!(s, "\n{title}: {}", figures_line(f));
        for (what, d) in [
            ("queue latency (added → claimed)", &f.queue_latency),
            ("claim → complete", &f.claim_to_complete),
            ("human response (asked → answered)", &f.human_response),
        ] {
            let _ = write!(s, "\n  {what}: {}", durations_line(d));
        }
    }
    s
}

/// Completed, failed and cancelled counts with the rates.
fn figures_line(f: &agentvine::metrics::Figures) -> String {
    let pct = |r: Option<f64>| r.map_or("-".to_string(), |r| format!("{:.0}%", r * 100.0));
    format!(
        "{} completed ({} per hour), {} failed, {} cancelled; failure rate {}, retry rate {}",
        f.completed,
        f.tasks_per_hour
            .map_or("-".to_string(), |r| format!("{r:.1}")),
        f.failed,
        f.cancelled,
        pct(f.failure_rate),
        pct(f.retry_rate)
    )
}

/// Median, 90th percentile and longest of a set of durations.
fn durations_line(d: &agentvine::metrics::Durations) -> String {
    let secs = |v: Option<f64>| {
        v.map_or("-".to_string(), |v| {
            agentvine::time::format_duration(v.round() as u64)
        })
    };
    if d.count == 0 {
        return "none yet".into();
    }
    format!(
        "median {}, 90% within {}, longest {} ({} measured)",
        secs(d.median_secs),
        secs(d.p90_secs),
        secs(d.max_secs),
        d.count
    )
}

/// One line describing board settings.
pub fn settings_line(s: &agentvine::Settings) -> String {
    use agentvine::time::format_duration as d;
    format!(
        "Settings: lease {}, stale after {}, fallback after {}, max retries {}, retry backoff {} doubling up to {}, archive after {} finished tasks",
        d(s.lease_secs),
        d(s.stale_after_secs),
        d(s.fallback_after()),
        s.max_retries,
        d(s.retry_backoff_secs),
        d(s.retry_backoff_max_secs),
        s.archive_after
    )
}

fn added(tasks: &[Task]) -> String {
    let mut s = String::new();
    for t in tasks {
        let _ = write!(s, "Added task {}: {}", t.id, t.description);
        if let Some(f) = &t.instruction_file {
            let _ = write!(s, " (instructions: {f})");
        }
        s.push('\n');
    }
    s.trim_end().to_string()
}

fn status_of(v: &TaskView) -> String {
    let mut st = v.task.status.as_str().to_string();
    if v.blocked {
        st = "blocked".into();
    }
    st
}

fn task_table(tasks: &[TaskView]) -> String {
    if tasks.is_empty() {
        return "No tasks.".into();
    }
    let mut s = format!(
        "{:<15} {:<11} {:<6} {:<14} DESCRIPTION\n",
        "ID", "STATUS", "PRIO", "WORKER"
    );
    for v in tasks {
        let t = &v.task;
        let who = t
            .claimed_by
            .as_deref()
            .or(t.completed_by.as_deref())
            .or(t.assigned_to.as_deref().map(|_| ""))
            .unwrap_or("");
        let who = if who.is_empty() {
            t.assigned_to
                .as_deref()
                .map(|a| format!("→{a}"))
                .unwrap_or_default()
        } else {
            who.to_string()
        };
        let _ = writeln!(
            s,
            "{:<15} {:<11} {:<6} {:<14} {}{}",
            t.id,
            status_of(v),
            t.priority.as_str(),
            who,
            t.description,
            if v.archived { "  [archived]" } else { "" }
        );
    }
    s.trim_end().to_string()
}

fn task_detail(v: &TaskView) -> String {
    let t = &v.task;
    let mut s = format!(
        "Task {}: {}\n  status: {}",
        t.id,
        t.description,
        status_of(v)
    );
    if v.archived {
        s.push_str(" (archived)");
    }
    let opt = |label: &str, val: Option<String>, s: &mut String| {
        if let Some(v) = val {
            let _ = write!(s, "\n  {label}: {v}");
        }
    };
    opt("priority", Some(t.priority.as_str().into()), &mut s);
    opt("instructions", t.instruction_file.clone(), &mut s);
    if !t.context_files.is_empty() {
        opt("context", Some(t.context_files.join(", ")), &mut s);
    }
    opt("assigned to", t.assigned_to.clone(), &mut s);
    if !t.requires.is_empty() {
        opt("requires", Some(t.requires.join(", ")), &mut s);
    }
    if t.strict {
        opt(
            "strict",
            Some("no fallback to other workers".into()),
            &mut s,
        );
    }
    opt(
        "fallback after",
        t.fallback_after_secs.map(agentvine::time::format_duration),
        &mut s,
    );
    opt(
        "specialist",
        v.fallback.as_ref().map(|f| f.note.clone()),
        &mut s,
    );
    if !t.depends_on.is_empty() {
        let ids: Vec<String> = t.depends_on.iter().map(u64::to_string).collect();
        opt("after", Some(ids.join(", ")), &mut s);
    }
    opt("attempts", Some(t.attempts.to_string()), &mut s);
    opt("claimed by", t.claimed_by.clone(), &mut s);
    opt(
        "lease until",
        t.lease_expires_at.as_ref().map(format_timestamp),
        &mut s,
    );
    opt(
        "not before",
        t.not_before.as_ref().map(format_timestamp),
        &mut s,
    );
    opt("completed by", t.completed_by.clone(), &mut s);
    opt(
        "completed at",
        t.completed_at.as_ref().map(format_timestamp),
        &mut s,
    );
    opt("last error", t.last_error.clone(), &mut s);
    opt(
        "claude runs",
        v.cost.map(|c| {
            format!(
                "{} ({} turns, ${:.4}, {} tokens in, {} out, {} ms)",
                c.runs,
                c.turns,
                c.cost_usd,
                c.usage.input_total(),
                c.usage.output_tokens,
                c.duration_ms
            )
        }),
        &mut s,
    );
    // The original plan's templates recorded a failure as `error`.
    opt(
        "error",
        t.extra.get("error").map(|e| match e {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }),
        &mut s,
    );
    opt(
        "result",
        t.result.as_ref().map(|r| match r {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }),
        &mut s,
    );
    if !t.metadata.is_empty() {
        opt(
            "metadata",
            Some(Value::Object(t.metadata.clone()).to_string()),
            &mut s,
        );
    }
    if t.status == TaskStatus::Failed {
        let _ = write!(
            s,
            "\n  (failed for good: `vine retry {}` puts it back)",
            t.id
        );
    }
    s
}

fn worker_line(w: &WorkerView) -> String {
    let mut s = format!("{:<16} {:<8}", w.id, w.state.as_str());
    if !w.tasks.is_empty() {
        let ids: Vec<String> = w.tasks.iter().map(u64::to_string).collect();
        let _ = write!(s, " tasks: {}", ids.join(","));
    }
    if !w.worker.capabilities.is_empty() {
        let _ = write!(s, " caps: {}", w.worker.capabilities.join(","));
    }
    if let Some(q) = &w.worker.waiting
        && w.state == agentvine::worker::WorkerState::Waiting
    {
        let _ = write!(
            s,
            " waits for the answer to #{} (until {})",
            q.question,
            format_timestamp(&q.until)
        );
    }
    if let Some(t) = &w.worker.last_heartbeat {
        let _ = write!(s, " last seen {}", format_timestamp(t));
    }
    if let Some(r) = &w.worker.offline_reason {
        let _ = write!(s, " ({r})");
    }
    s
}

fn progress_line(p: &Progress) -> String {
    let show = |v: &Value| match v {
        Value::Null => "?".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut s = format!(
        "Progress: step {} of {}",
        show(&p.current_step),
        show(&p.total_steps)
    );
    if let Some(st) = &p.status {
        let _ = write!(s, " — {st}");
    }
    if let Some(t) = &p.last_updated {
        let _ = write!(s, " (updated {})", format_timestamp(t));
    }
    if !p.metadata.is_empty() {
        let _ = write!(s, "\n  {}", Value::Object(p.metadata.clone()));
    }
    s
}

fn message_line(m: &Message) -> String {
    let mut s = format!(
        "#{} {} {}",
        m.seq.map(|q| q.to_string()).unwrap_or_else(|| "-".into()),
        format_timestamp(&m.timestamp),
        m.agent
    );
    if m.kind != agentvine::MessageKind::Message {
        let _ = write!(s, " [{}", m.kind.as_str());
        if let Some(q) = m.reply_to {
            let _ = write!(s, " to #{q}");
        }
        s.push(']');
    }
    if let Some(t) = m.task_id {
        let _ = write!(s, " (task {t})");
    }
    let _ = write!(s, ": {}", m.message);
    s
}

fn questions_text(qs: &[QuestionView]) -> String {
    if qs.is_empty() {
        return "No open questions.".into();
    }
    let mut s = String::new();
    for q in qs {
        let _ = writeln!(s, "{}", message_line(&q.question));
        for a in &q.answers {
            let _ = writeln!(s, "    ↳ {}", message_line(a));
        }
        if q.answers.is_empty() {
            let _ = writeln!(
                s,
                "    answer with: vine answer {} \"<answer>\"",
                q.question.seq.unwrap_or(0)
            );
        }
    }
    s.trim_end().to_string()
}

fn repaired(files: &[RepairedFile]) -> String {
    if files.is_empty() {
        return "Nothing to repair: every board file parses.".into();
    }
    let mut s = String::new();
    for f in files {
        let _ = writeln!(
            s,
            "Repaired {}: kept {} entr{}, dropped {}; the damaged original is in {}",
            f.file,
            f.kept,
            if f.kept == 1 { "y" } else { "ies" },
            f.dropped.len(),
            f.backup
        );
        for d in &f.dropped {
            let _ = writeln!(s, "  dropped {d}");
        }
    }
    s.trim_end().to_string()
}

fn status(r: &StatusReport) -> String {
    let mut s = format!(
        "Tasks: {} total — {} pending, {} in progress, {} completed, {} failed, {} cancelled",
        r.total, r.pending, r.in_progress, r.completed, r.failed, r.cancelled
    );
    if r.blocked > 0 {
        let _ = write!(s, " ({} blocked)", r.blocked);
    }
    if r.archived > 0 {
        let _ = write!(s, "; {} archived", r.archived);
    }
    let workers: Vec<String> = r.workers.iter().map(|(k, v)| format!("{v} {k}")).collect();
    let _ = write!(
        s,
        "\nWorkers: {}",
        if workers.is_empty() {
            "none".into()
        } else {
            workers.join(", ")
        }
    );
    if r.open_questions > 0 {
        let _ = write!(
            s,
            "\nOpen questions: {} (see `vine questions`)",
            r.open_questions
        );
    }
    if r.progress.last_updated.is_some() {
        let _ = write!(s, "\n{}", progress_line(&r.progress));
    }
    if let Some(c) = &r.claude {
        let by: Vec<String> = c
            .by_worker
            .iter()
            .map(|(w, t)| format!("{w} ${:.4}", t.cost_usd))
            .collect();
        let _ = write!(
            s,
            "\nClaude: {} runs, {} turns, ${:.4} ({}); {} live sessions{} (see `vine sessions`)",
            c.total.runs,
            c.total.turns,
            c.total.cost_usd,
            by.join(", "),
            c.live_sessions,
            reuse_note(&c.reuse)
        );
    }
    s
}

/// "; 3 of 8 task starts reused a session (38%)", or nothing before the first start.
fn reuse_note(r: &agentvine::sessions::Reuse) -> String {
    match r.rate() {
        Some(rate) => format!(
            "; {} of {} task starts reused a session ({:.0}%)",
            r.reused,
            r.task_starts,
            rate * 100.0
        ),
        None => String::new(),
    }
}

/// One line per session: id, worker, state, tasks, runs, turns, cost, last activity; then the
/// totals by worker and in all.
fn session_table(sessions: &[SessionRecord]) -> String {
    let mut s = session_lines(sessions);
    if let Some(spend) = agentvine::reply::ClaudeSpend::of(sessions)
        && sessions.len() > 1
    {
        for (w, t) in &spend.by_worker {
            let _ = write!(
                s,
                "\n{w}: {} runs, {} turns, ${:.4}",
                t.runs, t.turns, t.cost_usd
            );
        }
        let t = spend.total;
        let _ = write!(
            s,
            "\nIn all: {} runs, {} turns, ${:.4}, {} tokens in, {} out{}",
            t.runs,
            t.turns,
            t.cost_usd,
            t.usage.input_total(),
            t.usage.output_tokens,
            reuse_note(&spend.reuse)
        );
    }
    s
}

/// One line per session.
fn session_lines(sessions: &[SessionRecord]) -> String {
    if sessions.is_empty() {
        return "No sessions.".into();
    }
    let mut s = String::new();
    for r in sessions {
        let t = r.totals();
        let tasks: Vec<String> = r.tasks().iter().map(u64::to_string).collect();
        let _ = writeln!(
            s,
            "{}  {}  {}  tasks {}  runs {}  turns {}  ${:.4}  last active {}{}",
            r.id,
            r.worker,
            session_state(r.state),
            if tasks.is_empty() {
                "-".into()
            } else {
                tasks.join(",")
            },
            t.runs,
            t.turns,
            t.cost_usd,
            format_timestamp(&r.last_active_at),
            r.ended_reason
                .as_deref()
                .map(|e| format!("  ended: {e}"))
                .unwrap_or_default()
        );
    }
    s.trim_end().to_string()
}

/// A session and its runs, each with why it was started or resumed.
fn session_detail(r: &SessionRecord) -> String {
    let mut s = session_lines(std::slice::from_ref(r));
    for run in &r.runs {
        let _ = write!(
            s,
            "\n  task {} attempt {}: {} ({}), {} turns, ${:.4}, {} ms — {}",
            run.task,
            run.attempt,
            if run.resumed { "resumed" } else { "fresh" },
            run.outcome,
            run.turns,
            run.cost_usd,
            run.duration_ms,
            run.why
        );
    }
    s
}

fn session_state(s: SessionState) -> &'static str {
    match s {
        SessionState::Active => "active",
        SessionState::Idle => "idle",
        SessionState::Ended => "ended",
    }
}
