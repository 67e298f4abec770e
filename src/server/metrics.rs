//! `GET /metrics`: the board's figures as Prometheus scrapes them (the OpenMetrics text
//! format, written by the `prometheus-client` crate's encoder), computed on each scrape by the
//! store's `metrics` read, like every other read of the board. Guarded by the API key like the
//! API (Prometheus sends it as a bearer token).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::registry::Registry;

use super::App;
use super::reply::ErrorReply;
use crate::error::Error;
use crate::metrics::{DURATION_BOUNDS, Durations, Report};
use crate::op::{self, Op, Reply};
use crate::reply::ClaudeSpend;
use crate::sessions::Totals;
use crate::task::TaskStatus;
use crate::worker::WorkerState;

/// The content type of the OpenMetrics text format, which Prometheus reads.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `GET /metrics`.
pub(crate) async fn metrics(State(app): State<Arc<App>>) -> Result<Response, ErrorReply> {
    let Some(store) = app.store.clone() else {
        return Err(super::reply::not_found().await);
    };
    let read =
        tokio::task::spawn_blocking(move || store.execute(Op::Metrics(op::Metrics::default())))
            .await
            .unwrap_or_else(|e| Err(Error::Protocol(format!("the read failed: {e}"))));
    let report = match read {
        Ok(Reply::Metrics { metrics }) => metrics,
        // Damaged files: the figures of what could be read (the API's reads say the same).
        Err(Error::DamagedRead { reply, .. }) => match *reply {
            Reply::Metrics { metrics } => metrics,
            other => return Err(ErrorReply::internal(format!("metrics got {other:?}"))),
        },
        Ok(other) => return Err(ErrorReply::internal(format!("metrics got {other:?}"))),
        Err(e) => return Err(ErrorReply::board(&e)),
    };
    let lead = Lead {
        leading: app.store.as_ref().is_some_and(|s| s.leading()),
        handed: app.handed.ops.load(Ordering::Relaxed),
        failed: app.handed.failed.load(Ordering::Relaxed),
    };
    let text = exposition(*report, Some(lead)).map_err(ErrorReply::internal)?;
    Ok((StatusCode::OK, [(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response())
}

/// The figures in the OpenMetrics text format (with this server's part among the servers of
/// one board, when given).
pub fn exposition(report: Report, lead: Option<Lead>) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Figures(report)));
    if let Some(lead) = lead {
        registry.register_collector(Box::new(lead));
    }
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)?;
    Ok(out)
}

/// This server's part among the servers of one board (in PostgreSQL): whether it leads, the
/// ops it handed to the server that leads, and those it committed itself when that failed.
#[derive(Debug)]
pub struct Lead {
    /// Whether this server leads.
    pub leading: bool,
    /// Ops the leading server committed for this one.
    pub handed: u64,
    /// Ops this server committed itself after handing them over failed.
    pub failed: u64,
}

impl Collector for Lead {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        gauge(
            &mut enc,
            "vine_leading",
            "1 if this server leads the servers of its board (they hand it their changes), else 0.",
            if self.leading { 1.0 } else { 0.0 },
        )?;
        for (name, help, n) in [
            (
                "vine_ops_handed_to_leader",
                "Changing ops this server handed to the server that leads, which committed them.",
                self.handed,
            ),
            (
                "vine_ops_committed_when_leader_failed",
                "Changing ops this server committed itself because handing them to the leader failed.",
                self.failed,
            ),
        ] {
            let c = ConstCounter::new(n);
            c.encode(enc.encode_descriptor(name, help, None, c.metric_type())?)?;
        }
        Ok(())
    }
}

/// The board's figures as collected metrics (computed before the scrape is encoded).
#[derive(Debug)]
struct Figures(Report);

impl Collector for Figures {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let r = &self.0;
        let mut m = enc.encode_descriptor(
            "vine_tasks",
            "Tasks on the board by status (the archive included).",
            None,
            MetricType::Gauge,
        )?;
        for s in TaskStatus::ALL {
            let labels = [("status", s.as_str())];
            m.encode_family(&labels)?.encode_gauge(&r.tasks.get(s))?;
        }
        let mut m = enc.encode_descriptor(
            "vine_workers",
            "Workers by state: working, idle, waiting (for an answer), stale, offline.",
            None,
            MetricType::Gauge,
        )?;
        for s in WorkerState::ALL {
            let n = r.workers.get(s.as_str()).copied().unwrap_or(0) as u64;
            let labels = [("state", s.as_str())];
            m.encode_family(&labels)?.encode_gauge(&n)?;
        }
        gauge(
            &mut enc,
            "vine_open_questions",
            "Questions without an answer.",
            r.open_questions as f64,
        )?;
        let all = &r.all_time;
        for (name, help, n) in [
            (
                "vine_tasks_completed",
                "Tasks completed, all the history.",
                all.completed,
            ),
            (
                "vine_tasks_failed",
                "Tasks that failed for good, all the history.",
                all.failed,
            ),
            (
                "vine_tasks_cancelled",
                "Tasks cancelled, all the history.",
                all.cancelled,
            ),
            (
                "vine_tasks_retried",
                "Tasks completed or failed that took more than one attempt, all the history.",
                all.retried,
            ),
        ] {
            let c = ConstCounter::new(n);
            c.encode(enc.encode_descriptor(name, help, None, c.metric_type())?)?;
        }
        for (name, help, d) in [
            (
                "vine_queue_latency_seconds",
                "Time from a task's adding to its first claim.",
                &all.queue_latency,
            ),
            (
                "vine_claim_to_complete_seconds",
                "Time from the completing attempt's claim to the task's completion.",
                &all.claim_to_complete,
            ),
            (
                "vine_human_response_seconds",
                "Time from a question to its first answer.",
                &all.human_response,
            ),
        ] {
            histogram(&mut enc, name, help, d)?;
        }
        let recent = &r.recent;
        for (name, help, v) in [
            (
                "vine_failure_rate",
                "Of the tasks completed or failed in the last 24 hours, the share that failed.",
                recent.failure_rate,
            ),
            (
                "vine_retry_rate",
                "Of the tasks completed or failed in the last 24 hours, the share that took more than one attempt.",
                recent.retry_rate,
            ),
            (
                "vine_tasks_per_hour",
                "Tasks completed per hour over the last 24 hours.",
                recent.tasks_per_hour,
            ),
        ] {
            if let Some(v) = v {
                gauge(&mut enc, name, help, v)?;
            }
        }
        if let Some(c) = &r.claude {
            claude(&mut enc, c)?;
        }
        Ok(())
    }
}

/// The Claude sessions' spend by worker (counters over every recorded run), the live
/// sessions, and the session reuse rate.
fn claude(enc: &mut DescriptorEncoder, c: &ClaudeSpend) -> Result<(), std::fmt::Error> {
    type Pick = fn(&Totals) -> f64;
    let per_worker: [(&str, &str, Pick); 4] = [
        (
            "vine_claude_cost_usd",
            "US dollars the Claude runs recorded by `vine pool` cost, by worker.",
            |t| t.cost_usd,
        ),
        (
            "vine_claude_runs",
            "`claude -p` runs recorded, by worker.",
            |t| t.runs as f64,
        ),
        (
            "vine_claude_turns",
            "Model turns of the recorded runs, by worker.",
            |t| t.turns as f64,
        ),
        (
            "vine_claude_output_tokens",
            "Output tokens of the recorded runs, by worker.",
            |t| t.usage.output_tokens as f64,
        ),
    ];
    for (name, help, pick) in per_worker {
        let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
        for (worker, t) in &c.by_worker {
            let labels = [("worker", worker.as_str())];
            ConstCounter::new(pick(t)).encode(m.encode_family(&labels)?)?;
        }
    }
    let mut m = enc.encode_descriptor(
        "vine_claude_input_tokens",
        "Input tokens of the recorded runs, by worker and kind (uncached, cache_creation, cache_read).",
        None,
        MetricType::Counter,
    )?;
    for (worker, t) in &c.by_worker {
        let u = t.usage;
        for (kind, n) in [
            ("uncached", u.input_tokens),
            ("cache_creation", u.cache_creation_input_tokens),
            ("cache_read", u.cache_read_input_tokens),
        ] {
            let labels = [("worker", worker.as_str()), ("kind", kind)];
            ConstCounter::new(n).encode(m.encode_family(&labels)?)?;
        }
    }
    gauge(
        enc,
        "vine_claude_live_sessions",
        "Claude sessions not ended (active or idle, may be resumed).",
        c.live_sessions as f64,
    )?;
    for (name, help, n) in [
        (
            "vine_claude_task_starts",
            "Task attempts the Claude sessions started.",
            c.reuse.task_starts,
        ),
        (
            "vine_claude_task_starts_reused",
            "Task attempts started by resuming a session that had done an earlier one.",
            c.reuse.reused,
        ),
    ] {
        let k = ConstCounter::new(n);
        k.encode(enc.encode_descriptor(name, help, None, k.metric_type())?)?;
    }
    if let Some(rate) = c.reuse.rate() {
        gauge(
            enc,
            "vine_claude_session_reuse_rate",
            "Of the task attempts started, the share that reused a session.",
            rate,
        )?;
    }
    Ok(())
}

fn gauge(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: f64,
) -> Result<(), std::fmt::Error> {
    enc.encode_descriptor(name, help, None, MetricType::Gauge)?
        .encode_gauge(&v)
}

fn histogram(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    d: &Durations,
) -> Result<(), std::fmt::Error> {
    // Per-bucket counts with their upper bounds; the encoder sums them and writes the last
    // bound (f64::MAX) as +Inf.
    let buckets: Vec<(f64, u64)> = DURATION_BOUNDS
        .iter()
        .copied()
        .chain([f64::MAX])
        .zip(d.buckets.iter().copied().chain(std::iter::repeat(0)))
        .collect();
    enc.encode_descriptor(name, help, None, MetricType::Histogram)?
        .encode_histogram::<NoLabelSet>(d.sum_secs, d.count, &buckets, None)
}
