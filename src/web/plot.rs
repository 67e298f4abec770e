//! Small SVG charts of the board's figures, as maud markup: throughput (tasks completed and
//! failed per bucket), queue depth over time (tasks waiting for a first claim, tasks in work),
//! and a histogram of claim → complete durations.
//!
//! Each chart is one inline `<svg>` that scales to its container (`viewBox`, `width="100%"`),
//! styled with presentation attributes only (`fill`, `stroke`, `font-size`...; the control
//! room's CSP forbids inline `style`), with a `<title>` naming it and a `<desc>` giving its
//! figures in words, and a `<title>` on each bar or point for a pointer or screen reader.
//! Every SVG element is written with an explicit end tag, as HTML's parser needs inside `<svg>`.

use maud::{Markup, html};

use crate::metrics::{DURATION_BOUNDS, Durations, Series};
use crate::time::{Timestamp, add_secs, format_duration};

/// The drawing's size in user units (it scales to its container).
const WIDTH: f64 = 600.0;
const HEIGHT: f64 = 200.0;
/// Room for the axes' labels.
const LEFT: f64 = 44.0;
const RIGHT: f64 = 10.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 34.0;

/// Colours (they read on light and dark backgrounds).
const COMPLETED: &str = "#2f9e44";
const FAILED: &str = "#e03131";
const WAITING: &str = "#f08c00";
const IN_WORK: &str = "#1c7ed6";
const DURATION: &str = "#7048e8";
const AXIS: &str = "#868e96";

/// Tasks completed (and failed, on top) per bucket of the window.
pub fn throughput(s: &Series) -> Markup {
    let done: u64 = s.completed.iter().sum();
    let failed: u64 = s.failed.iter().sum();
    let per = format_duration(s.bucket_secs);
    let title = format!("Throughput: tasks completed per {per}");
    let desc = format!(
        "{done} completed and {failed} failed over the last {}, in buckets of {per}; at most {} completed in one bucket.",
        format_duration(s.bucket_secs.saturating_mul(s.completed.len() as u64)),
        s.completed.iter().max().copied().unwrap_or(0)
    );
    let totals: Vec<u64> = s
        .completed
        .iter()
        .zip(s.failed.iter().chain(std::iter::repeat(&0)))
        .map(|(c, f)| c + f)
        .collect();
    let top = nice_max(totals.iter().copied().max().unwrap_or(0));
    let n = s.completed.len().max(1);
    let slot = (WIDTH - LEFT - RIGHT) / n as f64;
    let bar = (slot * 0.8).max(1.0);
    let y = |v: u64| y_of(v as f64, top as f64);
    html! {
        svg xmlns="http://www.w3.org/2000/svg" class="plot plot-throughput" role="img"
            viewBox=(view_box()) width="100%" preserveAspectRatio="xMidYMid meet" {
            title { (title) }
            desc { (desc) }
            (y_axis(top, "tasks"))
            @for (i, (c, f)) in s.completed.iter().zip(s.failed.iter().chain(std::iter::repeat(&0))).enumerate() {
                @let x = LEFT + slot * i as f64 + (slot - bar) / 2.0;
                @let when = bucket_label(s, i);
                @if *c > 0 {
                    rect class="bar bar-completed" x=(num(x)) y=(num(y(*c))) width=(num(bar))
                        height=(num(y(0) - y(*c))) fill=(COMPLETED) {
                        title { (when) ": " (c) " completed" }
                    }
                }
                @if *f > 0 {
                    rect class="bar bar-failed" x=(num(x)) y=(num(y(c + f))) width=(num(bar))
                        height=(num(y(*c) - y(c + f))) fill=(FAILED) {
                        title { (when) ": " (f) " failed" }
                    }
                }
            }
            (time_axis(s))
            (legend(&[(COMPLETED, "completed"), (FAILED, "failed")]))
        }
    }
}

/// Queue depth at each bucket's end: tasks waiting for a first claim, and tasks in work.
pub fn queue_depth(s: &Series) -> Markup {
    let peak = s
        .waiting
        .iter()
        .chain(s.in_progress.iter())
        .copied()
        .max()
        .unwrap_or(0);
    let top = nice_max(peak);
    let title = "Queue depth: tasks waiting and in work over time".to_string();
    let desc = format!(
        "Now {} waiting and {} in work; at most {} waiting over the last {}.",
        s.waiting.last().copied().unwrap_or(0),
        s.in_progress.last().copied().unwrap_or(0),
        s.waiting.iter().max().copied().unwrap_or(0),
        format_duration(s.bucket_secs.saturating_mul(s.waiting.len() as u64))
    );
    let n = s.waiting.len().max(1);
    let slot = (WIDTH - LEFT - RIGHT) / n as f64;
    // A point at each bucket's end.
    let x = |i: usize| LEFT + slot * (i as f64 + 1.0);
    let points = |v: &[u64]| -> String {
        v.iter()
            .enumerate()
            .map(|(i, d)| format!("{},{}", num(x(i)), num(y_of(*d as f64, top as f64))))
            .collect::<Vec<_>>()
            .join(" ")
    };
    html! {
        svg xmlns="http://www.w3.org/2000/svg" class="plot plot-depth" role="img"
            viewBox=(view_box()) width="100%" preserveAspectRatio="xMidYMid meet" {
            title { (title) }
            desc { (desc) }
            (y_axis(top, "tasks"))
            @for (v, colour, what) in [(&s.waiting, WAITING, "waiting"), (&s.in_progress, IN_WORK, "in work")] {
                polyline class={"line line-" (what.replace(' ', "-"))} points=(points(v)) fill="none"
                    stroke=(colour) stroke-width="2" stroke-linejoin="round" {}
                @for (i, d) in v.iter().enumerate() {
                    circle cx=(num(x(i))) cy=(num(y_of(*d as f64, top as f64))) r="3" fill=(colour) {
                        title { (end_label(s, i)) ": " (d) " " (what) }
                    }
                }
            }
            (time_axis(s))
            (legend(&[(WAITING, "waiting"), (IN_WORK, "in work")]))
        }
    }
}

/// How long completed tasks took from their claim, as counts per duration bucket.
pub fn durations(d: &Durations) -> Markup {
    let labels = duration_labels();
    let counts: Vec<u64> = (0..labels.len())
        .map(|i| d.buckets.get(i).copied().unwrap_or(0))
        .collect();
    let top = nice_max(counts.iter().copied().max().unwrap_or(0));
    let title = "Claim → complete: how long tasks took".to_string();
    let desc = match (d.median_secs, d.p90_secs) {
        (Some(m), Some(p)) => format!(
            "{} tasks; median {}, 90% within {}.",
            d.count,
            format_duration(m.round() as u64),
            format_duration(p.round() as u64)
        ),
        _ => "No task completed yet.".to_string(),
    };
    let slot = (WIDTH - LEFT - RIGHT) / labels.len() as f64;
    let bar = slot * 0.8;
    let y = |v: u64| y_of(v as f64, top as f64);
    html! {
        svg xmlns="http://www.w3.org/2000/svg" class="plot plot-durations" role="img"
            viewBox=(view_box()) width="100%" preserveAspectRatio="xMidYMid meet" {
            title { (title) }
            desc { (desc) }
            (y_axis(top, "tasks"))
            @for (i, (c, label)) in counts.iter().zip(labels.iter()).enumerate() {
                @let x = LEFT + slot * i as f64 + (slot - bar) / 2.0;
                @if *c > 0 {
                    rect class="bar bar-duration" x=(num(x)) y=(num(y(*c))) width=(num(bar))
                        height=(num(y(0) - y(*c))) fill=(DURATION) {
                        title { (label) ": " (c) " tasks" }
                    }
                }
                text x=(num(x + bar / 2.0)) y=(num(HEIGHT - BOTTOM + 14.0)) font-size="10"
                    text-anchor="middle" fill=(AXIS) { (label) }
            }
            line x1=(num(LEFT)) y1=(num(y(0))) x2=(num(WIDTH - RIGHT)) y2=(num(y(0)))
                stroke=(AXIS) stroke-width="1" {}
            text x=(num((LEFT + WIDTH - RIGHT) / 2.0)) y=(num(HEIGHT - 4.0)) font-size="11"
                text-anchor="middle" fill=(AXIS) { "time from claim to completion" }
        }
    }
}

/// The duration buckets' labels: `≤10s` ... and `>4h`.
fn duration_labels() -> Vec<String> {
    let mut out: Vec<String> = DURATION_BOUNDS
        .iter()
        .map(|b| format!("≤{}", format_duration(*b as u64)))
        .collect();
    let last = DURATION_BOUNDS.last().copied().unwrap_or(0.0) as u64;
    out.push(format!(">{}", format_duration(last)));
    out
}

fn view_box() -> String {
    format!("0 0 {WIDTH} {HEIGHT}")
}

/// A coordinate with one decimal.
fn num(v: f64) -> String {
    format!("{v:.1}")
}

/// The y coordinate of value `v` on a scale from 0 to `top`.
fn y_of(v: f64, top: f64) -> f64 {
    let plot = HEIGHT - TOP - BOTTOM;
    HEIGHT - BOTTOM - plot * (v / top.max(1.0)).clamp(0.0, 1.0)
}

/// The smallest of 1, 2, 5, 10, 20, 50 ... at or above `v` (at least 1).
fn nice_max(v: u64) -> u64 {
    let mut step = 1u64;
    loop {
        for m in [1, 2, 5] {
            let n = step.saturating_mul(m);
            if n >= v || n == u64::MAX {
                return n.max(1);
            }
        }
        step = step.saturating_mul(10);
    }
}

/// The y axis: its line, 0 and the top value, and what it counts.
fn y_axis(top: u64, unit: &str) -> Markup {
    let mid = top / 2;
    let ticks: Vec<u64> = if mid > 0 {
        vec![0, mid, top]
    } else {
        vec![0, top]
    };
    html! {
        line x1=(num(LEFT)) y1=(num(TOP)) x2=(num(LEFT)) y2=(num(HEIGHT - BOTTOM))
            stroke=(AXIS) stroke-width="1" {}
        @for v in ticks {
            text x=(num(LEFT - 6.0)) y=(num(y_of(v as f64, top as f64) + 4.0)) font-size="11"
                text-anchor="end" fill=(AXIS) { (v) }
        }
        text x="10" y=(num((TOP + HEIGHT - BOTTOM) / 2.0)) font-size="11" text-anchor="middle"
            fill=(AXIS) transform={"rotate(-90 10 " (num((TOP + HEIGHT - BOTTOM) / 2.0)) ")"} { (unit) }
    }
}

/// The time axis of a series: its line and the times of its start, middle and end (UTC).
fn time_axis(s: &Series) -> Markup {
    let n = s.completed.len().max(s.waiting.len()).max(1);
    let slot = (WIDTH - LEFT - RIGHT) / n as f64;
    let ticks = [0, n / 2, n];
    html! {
        line x1=(num(LEFT)) y1=(num(HEIGHT - BOTTOM)) x2=(num(WIDTH - RIGHT)) y2=(num(HEIGHT - BOTTOM))
            stroke=(AXIS) stroke-width="1" {}
        @for (k, i) in ticks.iter().enumerate() {
            @let x = LEFT + slot * *i as f64;
            @let anchor = match k { 0 => "start", 1 => "middle", _ => "end" };
            text x=(num(x)) y=(num(HEIGHT - BOTTOM + 14.0)) font-size="11" text-anchor=(anchor)
                fill=(AXIS) { (clock(bucket_start(s, *i))) }
        }
        text x=(num((LEFT + WIDTH - RIGHT) / 2.0)) y=(num(HEIGHT - 4.0)) font-size="11"
            text-anchor="middle" fill=(AXIS) { "time (UTC)" }
    }
}

/// A legend at the top right: a swatch and a name per series.
fn legend(items: &[(&str, &str)]) -> Markup {
    html! {
        @for (k, (colour, name)) in items.iter().enumerate() {
            @let x = WIDTH - RIGHT - 90.0 * (items.len() - k) as f64;
            rect x=(num(x)) y="2" width="10" height="10" fill=(colour) {}
            text x=(num(x + 14.0)) y="11" font-size="11" fill=(AXIS) { (name) }
        }
    }
}

fn bucket_start(s: &Series, i: usize) -> Timestamp {
    add_secs(s.start, s.bucket_secs.saturating_mul(i as u64))
}

/// `HH:MM–HH:MM` of bucket `i`.
fn bucket_label(s: &Series, i: usize) -> String {
    format!(
        "{}–{}",
        clock(bucket_start(s, i)),
        clock(bucket_start(s, i + 1))
    )
}

/// The time at the end of bucket `i`.
fn end_label(s: &Series, i: usize) -> String {
    clock(bucket_start(s, i + 1))
}

fn clock(t: Timestamp) -> String {
    t.format("%H:%M").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series() -> Series {
        Series {
            start: crate::time::parse_timestamp("2026-03-01T20:00:00Z").unwrap(),
            bucket_secs: 3600,
            added: vec![3, 1, 2, 1],
            completed: vec![1, 1, 0, 4],
            failed: vec![0, 0, 1, 0],
            waiting: vec![1, 1, 0, 3],
            in_progress: vec![1, 1, 2, 1],
        }
    }

    /// What every chart must be: one svg with a title first, no inline style or script, no
    /// event handlers, and every element closed.
    fn well_formed(svg: &str) {
        assert!(svg.starts_with("<svg "), "{svg}");
        assert!(svg.ends_with("</svg>"), "{svg}");
        assert!(svg.contains(r#"role="img""#));
        let after_open = &svg[svg.find('>').unwrap() + 1..];
        assert!(
            after_open.starts_with("<title>"),
            "the title comes first: {svg}"
        );
        for banned in ["style=", "<script", "javascript:", "/>"] {
            assert!(!svg.contains(banned), "{banned:?} in {svg}");
        }
        // No event handler attributes (` onclick=` ...).
        for (i, _) in svg.match_indices(" on") {
            let name: String = svg[i + 1..]
                .chars()
                .take_while(|c| c.is_ascii_alphabetic())
                .collect();
            assert!(
                !svg[i + 1 + name.len()..].starts_with('='),
                "an event handler {name} in {svg}"
            );
        }
        // Every element is closed with its end tag (inside <svg> HTML does not know void
        // elements).
        for tag in [
            "svg", "title", "desc", "rect", "line", "text", "polyline", "circle",
        ] {
            let open =
                svg.matches(&format!("<{tag} ")).count() + svg.matches(&format!("<{tag}>")).count();
            let close = svg.matches(&format!("</{tag}>")).count();
            assert_eq!(
                open, close,
                "<{tag}> opened {open} times, closed {close}: {svg}"
            );
        }
    }

    /// The (y, height) of each rect with `class`.
    fn bars(svg: &str, class: &str) -> Vec<(f64, f64)> {
        svg.split("<rect ")
            .skip(1)
            .filter(|r| r.contains(&format!("class=\"bar {class}\"")))
            .map(|r| {
                let attr = |name: &str| -> f64 {
                    let at = r.find(&format!(" {name}=\"")).unwrap() + name.len() + 3;
                    r[at..].split('"').next().unwrap().parse().unwrap()
                };
                (attr("y"), attr("height"))
            })
            .collect()
    }

    #[test]
    fn throughput_has_a_bar_per_bucket_with_counts_to_scale() {
        let svg = throughput(&series()).into_string();
        well_formed(&svg);
        assert!(
            svg.contains("<title>Throughput: tasks completed per 1h</title>"),
            "{svg}"
        );
        assert!(
            svg.contains("6 completed and 1 failed over the last 4h"),
            "{svg}"
        );
        // Bars for the buckets with completions (1, 1, 4) and one failed on bucket 3's.
        let done = bars(&svg, "bar-completed");
        assert_eq!(done.len(), 3);
        let plot = HEIGHT - TOP - BOTTOM;
        // The scale tops at 5 (the next of 1, 2, 5 ... above 4): one task is a fifth.
        assert_eq!(done[0].1, (plot / 5.0 * 10.0).round() / 10.0);
        assert_eq!(done[2].1, (plot * 4.0 / 5.0 * 10.0).round() / 10.0);
        assert_eq!(bars(&svg, "bar-failed").len(), 1);
        assert!(
            svg.contains("<title>20:00–21:00: 1 completed</title>"),
            "{svg}"
        );
        assert!(
            svg.contains("<title>22:00–23:00: 1 failed</title>"),
            "{svg}"
        );
        // Axes: 0 and 5 on y, 20:00 / 22:00 / 00:00 on x, the units named.
        for label in [
            ">0<",
            ">5<",
            ">20:00<",
            ">22:00<",
            ">00:00<",
            ">tasks<",
            ">time (UTC)<",
        ] {
            assert!(svg.contains(label), "{label} in {svg}");
        }
    }

    #[test]
    fn queue_depth_draws_both_lines_through_each_bucket_end() {
        let svg = queue_depth(&series()).into_string();
        well_formed(&svg);
        assert_eq!(svg.matches("<polyline ").count(), 2);
        assert_eq!(svg.matches("<circle ").count(), 8);
        assert!(svg.contains("Now 3 waiting and 1 in work"), "{svg}");
        assert!(svg.contains("<title>00:00: 3 waiting</title>"), "{svg}");
        assert!(svg.contains("<title>23:00: 2 in work</title>"), "{svg}");
        // The last point of the waiting line is at 3 on a scale to 5, at the right edge.
        let y3 = num(y_of(3.0, 5.0));
        assert!(
            svg.contains(&format!("{},{y3}\"", num(WIDTH - RIGHT))),
            "{svg}"
        );
    }

    #[test]
    fn the_duration_histogram_labels_every_bucket() {
        let d = Durations {
            count: 5,
            sum_secs: 1000.0,
            median_secs: Some(120.0),
            p90_secs: Some(600.0),
            max_secs: Some(600.0),
            buckets: vec![0, 1, 0, 3, 1, 0, 0, 0, 0, 0],
        };
        let svg = durations(&d).into_string();
        well_formed(&svg);
        assert_eq!(bars(&svg, "bar-duration").len(), 3);
        assert!(svg.contains("5 tasks; median 2m, 90% within 10m."), "{svg}");
        for label in [
            ">≤10s<",
            ">≤1m<",
            ">≤1h<",
            ">≤4h<",
            "&gt;4h<",
            ">time from claim to completion<",
        ] {
            assert!(svg.contains(label), "{label} in {svg}");
        }
        assert!(svg.contains("<title>≤5m: 3 tasks</title>"), "{svg}");
    }

    #[test]
    fn empty_charts_still_draw_their_frame() {
        let empty = Series {
            start: crate::time::parse_timestamp("2026-03-01T20:00:00Z").unwrap(),
            bucket_secs: 3600,
            added: vec![0; 24],
            completed: vec![0; 24],
            failed: vec![0; 24],
            waiting: vec![0; 24],
            in_progress: vec![0; 24],
        };
        for svg in [
            throughput(&empty),
            queue_depth(&empty),
            durations(&Durations::default()),
        ] {
            let svg = svg.into_string();
            well_formed(&svg);
            assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
        }
        assert!(
            durations(&Durations::default())
                .into_string()
                .contains("No task completed yet.")
        );
    }

    #[test]
    fn scales_are_round() {
        let got: Vec<u64> = [0, 1, 2, 3, 5, 6, 11, 20, 21, 99, 100, 101]
            .into_iter()
            .map(nice_max)
            .collect();
        assert_eq!(got, [1, 1, 2, 5, 5, 10, 20, 20, 50, 100, 100, 200]);
    }
}
