//! The board's figures on a page: the `metrics` read (as `vine metrics` and `GET /metrics`
//! read them) as a table of the last 24 hours beside all the history, and the charts of
//! `plot.rs`: throughput and queue depth over the last 24 hours, claim → complete durations.

use maud::{Markup, html};

use super::layout;
use super::plot;
use crate::error::{Error, Result};
use crate::metrics::{Durations, Figures, Report};
use crate::op::{self, Reply};
use crate::server::App;

/// The board's figures over the last 24 hours (hourly series) and all the history.
pub async fn report(app: &App) -> Result<Report> {
    match super::read(app, op::Metrics::default()).await? {
        Reply::Metrics { metrics } => Ok(*metrics),
        r => Err(Error::Protocol(format!("metrics got {r:?}"))),
    }
}

/// The figures card of the overview: read, then drawn.
pub async fn section(app: &App) -> Result<Markup> {
    Ok(card(&report(app).await?))
}

/// The figures and the charts of `r`.
pub fn card(r: &Report) -> Markup {
    html! {
        section.card.figures aria-labelledby="figures-h" {
            h2 #figures-h { "Figures" }
            div.table-wrap {
                table.figures {
                    caption { "Durations as median / 90th percentile" }
                    thead {
                        tr { th { } th scope="col" { "last 24 h" } th scope="col" { "all the history" } }
                    }
                    tbody {
                        (row("queue latency (added → claimed)", &r.recent.queue_latency, &r.all_time.queue_latency))
                        (row("claim → complete", &r.recent.claim_to_complete, &r.all_time.claim_to_complete))
                        (row("human response (asked → answered)", &r.recent.human_response, &r.all_time.human_response))
                        (count_row("completed", &r.recent, &r.all_time, |f| f.completed))
                        (count_row("failed", &r.recent, &r.all_time, |f| f.failed))
                        (count_row("cancelled", &r.recent, &r.all_time, |f| f.cancelled))
                        (rate_row("failure rate", &r.recent, &r.all_time, |f| f.failure_rate.map(percent)))
                        (rate_row("retry rate", &r.recent, &r.all_time, |f| f.retry_rate.map(percent)))
                        (rate_row("tasks per hour", &r.recent, &r.all_time, |f| f.tasks_per_hour.map(per_hour)))
                    }
                }
            }
            div.plots {
                figure.plot-figure { (plot::throughput(&r.series)) }
                figure.plot-figure { (plot::queue_depth(&r.series)) }
                figure.plot-figure { (plot::durations(&r.all_time.claim_to_complete)) }
            }
        }
    }
}

/// A rate with two decimals below 10 (one task a day is 0.04 per hour), one above.
fn per_hour(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.1}")
    }
}

fn percent(v: f64) -> String {
    format!("{:.0}%", v * 100.0)
}

/// Median / p90 of a set of durations, or a dash.
fn spread(d: &Durations) -> Markup {
    match (d.median_secs, d.p90_secs) {
        (Some(m), Some(p)) => html! {
            (layout::duration(m.round() as u64)) " / " (layout::duration(p.round() as u64))
            span.muted.small { " (" (d.count) ")" }
        },
        _ => html! { span.muted { "–" } },
    }
}

fn row(label: &str, recent: &Durations, all: &Durations) -> Markup {
    html! {
        tr { th scope="row" { (label) } td { (spread(recent)) } td { (spread(all)) } }
    }
}

fn count_row(label: &str, recent: &Figures, all: &Figures, f: fn(&Figures) -> u64) -> Markup {
    html! {
        tr { th scope="row" { (label) } td { (f(recent)) } td { (f(all)) } }
    }
}

fn rate_row(
    label: &str,
    recent: &Figures,
    all: &Figures,
    f: fn(&Figures) -> Option<String>,
) -> Markup {
    let cell = |v: Option<String>| match v {
        Some(v) => html! { (v) },
        None => html! { span.muted { "–" } },
    };
    html! {
        tr { th scope="row" { (label) } td { (cell(f(recent))) } td { (cell(f(all))) } }
    }
}
