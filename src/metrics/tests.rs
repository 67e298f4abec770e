//! The figures of a constructed history, checked to the exact number.

use chrono::{TimeZone, Utc};

use super::*;
use crate::time::add_secs;

/// The window's start: 2026-03-01T20:00:00Z; the board is read 4 hours later.
fn start() -> Timestamp {
    Utc.with_ymd_and_hms(2026, 3, 1, 20, 0, 0).unwrap()
}

/// `start` plus `min` minutes (negative: before the window).
fn at(min: i64) -> Timestamp {
    start() + chrono::TimeDelta::minutes(min)
}

fn now() -> Timestamp {
    at(240)
}

const FOUR_HOURS: Window = Window {
    secs: 4 * 3600,
    buckets: 4,
};

/// A task with its times in minutes from the window's start.
fn task(
    id: u64,
    status: TaskStatus,
    added: i64,
    first: Option<i64>,
    claimed: Option<i64>,
    finished: Option<i64>,
    attempts: u32,
) -> Task {
    let mut t = Task::new(id, "d", at(added));
    t.status = status;
    t.first_claimed_at = first.map(at);
    t.claimed_at = claimed.map(at);
    match status {
        TaskStatus::Completed => t.completed_at = finished.map(at),
        _ => t.ended_at = finished.map(at),
    }
    t.attempts = attempts;
    t
}

/// The history and queue every figure below is worked out from by hand.
fn board() -> (History, Vec<Task>) {
    use TaskStatus::*;
    let mut h = History::default();
    for t in [
        // Before the window: all-time figures only.
        task(1, Completed, -120, Some(-110), Some(-110), Some(-50), 1),
        task(2, Completed, 0, Some(5), Some(5), Some(35), 1),
        // Claimed at 20, failed, claimed again at 80, completed at 100.
        task(3, Completed, 10, Some(20), Some(80), Some(100), 2),
        // Cancelled before anyone claimed it.
        task(4, Cancelled, 30, None, None, Some(50), 0),
    ] {
        let archived = t.completed_at.or(t.ended_at).unwrap();
        h.add_archived(TaskTimes::of(&t), archived);
    }
    // Questions: one answered before the window, two in it (one answered twice), one open,
    // and an answer to a question the log does not have.
    h.add_question(1, at(-30));
    h.add_answer(1, at(-20));
    h.add_question(3, at(40));
    h.add_answer(3, at(42));
    h.add_answer(3, at(60));
    h.add_question(5, at(150));
    h.add_answer(5, at(190));
    h.add_question(7, at(220));
    h.add_answer(99, at(221));
    let queue = vec![
        // Failed for good after 3 attempts (the last claim's time is cleared).
        task(5, Failed, 60, Some(70), None, Some(130), 3),
        task(6, InProgress, 150, Some(170), Some(170), None, 1),
        task(7, Pending, 200, None, None, None, 0),
        // Completed, not archived yet.
        task(8, Completed, 120, Some(125), Some(125), Some(185), 1),
        // Archived already and still on the queue (a compaction between two reads): once.
        task(2, Completed, 0, Some(5), Some(5), Some(35), 1),
    ];
    (h, queue)
}

fn durations(secs: &[f64], buckets: [u64; 10]) -> Durations {
    let mut v = secs.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = |p: f64| v[((p * v.len() as f64).ceil() as usize).max(1) - 1];
    Durations {
        count: v.len() as u64,
        sum_secs: v.iter().sum(),
        median_secs: Some(rank(0.5)),
        p90_secs: Some(rank(0.9)),
        max_secs: v.last().copied(),
        buckets: buckets.to_vec(),
    }
}

#[test]
fn the_figures_of_a_known_history_are_exact() {
    let (h, queue) = board();
    let workers = BTreeMap::from([("idle".to_string(), 2)]);
    let r = report(&h, &queue, workers.clone(), now(), FOUR_HOURS);
    assert_eq!(r.at, now());
    assert_eq!(
        r.tasks,
        TaskCounts {
            pending: 1,
            in_progress: 1,
            completed: 4,
            failed: 1,
            cancelled: 1
        }
    );
    assert_eq!(r.workers, workers);
    assert_eq!(r.open_questions, 1);

    // The window: 20:00 to 24:00.
    let recent = &r.recent;
    assert_eq!(recent.since, Some(start()));
    // Added → first claimed, of tasks 2, 3, 5, 6, 8: 5, 10, 10, 20 and 5 minutes.
    let latency = Durations {
        count: 5,
        sum_secs: 3000.0,
        median_secs: Some(600.0),
        p90_secs: Some(1200.0),
        max_secs: Some(1200.0),
        buckets: vec![0, 0, 0, 2, 2, 1, 0, 0, 0, 0],
    };
    assert_eq!(recent.queue_latency, latency);
    assert_eq!(
        recent.queue_latency,
        durations(
            &[300.0, 600.0, 600.0, 1200.0, 300.0],
            [0, 0, 0, 2, 2, 1, 0, 0, 0, 0]
        )
    );
    // Claim → complete of tasks 2, 3 (its second claim) and 8: 30, 20 and 60 minutes.
    assert_eq!(
        recent.claim_to_complete,
        Durations {
            count: 3,
            sum_secs: 6600.0,
            median_secs: Some(1800.0),
            p90_secs: Some(3600.0),
            max_secs: Some(3600.0),
            buckets: vec![0, 0, 0, 0, 0, 2, 1, 0, 0, 0],
        }
    );
    // Asked → answered: 2 and 40 minutes (the second answer to #3 does not count).
    assert_eq!(
        recent.human_response,
        Durations {
            count: 2,
            sum_secs: 2520.0,
            median_secs: Some(120.0),
            p90_secs: Some(2400.0),
            max_secs: Some(2400.0),
            buckets: vec![0, 0, 0, 1, 0, 0, 1, 0, 0, 0],
        }
    );
    assert_eq!(
        (
            recent.completed,
            recent.failed,
            recent.cancelled,
            recent.retried
        ),
        (3, 1, 1, 2)
    );
    assert_eq!(recent.failure_rate, Some(0.25));
    assert_eq!(recent.retry_rate, Some(0.5));
    assert_eq!(recent.tasks_per_hour, Some(0.75));

    // All the history adds task 1 and question 1.
    let all = &r.all_time;
    assert_eq!(all.since, None);
    assert_eq!(
        all.queue_latency,
        durations(
            &[600.0, 300.0, 600.0, 600.0, 1200.0, 300.0],
            [0, 0, 0, 2, 3, 1, 0, 0, 0, 0]
        )
    );
    assert_eq!(all.queue_latency.median_secs, Some(600.0));
    assert_eq!(
        all.claim_to_complete,
        durations(
            &[3600.0, 1800.0, 1200.0, 3600.0],
            [0, 0, 0, 0, 0, 2, 2, 0, 0, 0]
        )
    );
    assert_eq!(
        all.human_response,
        durations(&[600.0, 120.0, 2400.0], [0, 0, 0, 1, 1, 0, 1, 0, 0, 0])
    );
    assert_eq!(
        (all.completed, all.failed, all.cancelled, all.retried),
        (4, 1, 1, 2)
    );
    assert_eq!(all.failure_rate, Some(0.2));
    assert_eq!(all.retry_rate, Some(0.4));
    // 4 completed in the 6 hours since task 1 was added.
    assert_eq!(all.tasks_per_hour, Some(4.0 / 6.0));
    assert_eq!(all.claim_to_complete.mean_secs(), Some(2550.0));

    // Hourly buckets from 20:00.
    let s = &r.series;
    assert_eq!((s.start, s.bucket_secs), (start(), 3600));
    assert_eq!(s.added, [3, 1, 2, 1]);
    assert_eq!(s.completed, [1, 1, 0, 1]);
    assert_eq!(s.failed, [0, 0, 1, 0]);
    // At 21:00 task 5 waits (claimed at 21:10), at 22:00 task 8 (claimed 22:05), at 24:00
    // task 7 (never claimed).
    assert_eq!(s.waiting, [1, 1, 0, 1]);
    // At 21:00 task 3 is in work, at 22:00 task 5, at 23:00 tasks 6 and 8, at 24:00 task 6.
    assert_eq!(s.in_progress, [1, 1, 2, 1]);
}

/// The same history as `board`'s, added in the order it was archived (the tail since the
/// window's start is then all a read looks at), sealed in two steps.
fn board_in_order() -> History {
    use TaskStatus::*;
    let mut h = History::default();
    let tasks = [
        (
            task(1, Completed, -120, Some(-110), Some(-110), Some(-50), 1),
            -50,
        ),
        (task(2, Completed, 0, Some(5), Some(5), Some(35), 1), 35),
        (task(4, Cancelled, 30, None, None, Some(50), 0), 50),
        (
            task(3, Completed, 10, Some(20), Some(80), Some(100), 2),
            100,
        ),
    ];
    for (i, (t, archived)) in tasks.iter().enumerate() {
        h.add_archived(TaskTimes::of(t), at(*archived));
        if i == 1 {
            h.seal();
        }
    }
    h.add_question(1, at(-30));
    h.add_answer(1, at(-20));
    h.add_question(3, at(40));
    h.seal();
    h.add_answer(3, at(42));
    h.add_answer(3, at(60));
    h.add_question(5, at(150));
    h.add_answer(5, at(190));
    h.add_question(7, at(220));
    h.add_answer(99, at(221));
    h
}

#[test]
fn sealed_totals_and_the_archives_tail_give_the_same_figures() {
    let (mut h, queue) = board();
    let workers = BTreeMap::new();
    let unsealed = report(&h, &queue, workers.clone(), now(), FOUR_HOURS);
    h.seal();
    assert_eq!(
        report(&h, &queue, workers.clone(), now(), FOUR_HOURS),
        unsealed
    );
    let mut ordered = board_in_order();
    assert_eq!(
        report(&ordered, &queue, workers.clone(), now(), FOUR_HOURS),
        unsealed
    );
    ordered.seal();
    assert_eq!(
        report(&ordered, &queue, workers, now(), FOUR_HOURS),
        unsealed
    );
    assert_eq!(
        ordered.archived_since(at(0).timestamp_millis()),
        1,
        "the tail since 20:00"
    );
    // A task archived again (a second line) is counted once, as its last line says.
    let mut again = board_in_order();
    again.add_archived(
        TaskTimes::of(&task(2, TaskStatus::Cancelled, 0, None, None, Some(35), 0)),
        at(120),
    );
    again.seal();
    let r = report(&again, &queue, BTreeMap::new(), now(), FOUR_HOURS);
    assert_eq!((r.tasks.completed, r.tasks.cancelled), (3, 2));
}

#[test]
fn merged_percentiles_take_both_lists() {
    let mut all = Sorted::default();
    all.extend(vec![5000, 1000, 3000]);
    all.extend(vec![2000]);
    assert_eq!(all.values, [1000, 2000, 3000, 5000]);
    let d = Durations::merged(&all, &mut [4000, 6000]);
    // 1..6 seconds: median rank 3 → 3 s; p90 rank 6 → 6 s.
    assert_eq!(
        (d.count, d.sum_secs, d.median_secs, d.p90_secs, d.max_secs),
        (6, 21.0, Some(3.0), Some(6.0), Some(6.0))
    );
    assert_eq!(d.buckets.iter().sum::<u64>(), 6);
    assert_eq!(kth(&[1, 3], &[2], 1), Some(2));
    assert_eq!(kth(&[], &[], 0), None);
}

#[test]
fn an_empty_board_has_counts_of_zero_and_no_averages() {
    let r = report(
        &History::default(),
        &[],
        BTreeMap::new(),
        now(),
        Window::DAY,
    );
    assert_eq!(r.tasks, TaskCounts::default());
    assert_eq!(r.open_questions, 0);
    for f in [&r.recent, &r.all_time] {
        assert_eq!(f.queue_latency.count, 0);
        assert_eq!(f.queue_latency.median_secs, None);
        assert_eq!(f.queue_latency.mean_secs(), None);
        assert_eq!(f.queue_latency.buckets, vec![0; DURATION_BOUNDS.len() + 1]);
        assert_eq!((f.failure_rate, f.retry_rate), (None, None));
    }
    assert_eq!(r.recent.tasks_per_hour, Some(0.0));
    assert_eq!(r.all_time.tasks_per_hour, None, "no history, no length");
    assert_eq!(r.series.added, vec![0; 24]);
    assert_eq!(r.series.waiting, vec![0; 24]);
    assert_eq!(
        r.series.start,
        add_secs(now(), 0) - chrono::TimeDelta::hours(24)
    );
}

#[test]
fn the_history_keeps_each_archived_task_once_and_can_start_over() {
    let mut h = History::default();
    let t = task(1, TaskStatus::Cancelled, 0, None, None, Some(5), 0);
    h.add_archived(TaskTimes::of(&t), at(6));
    let again = task(1, TaskStatus::Completed, 0, Some(1), Some(1), Some(5), 1);
    h.add_archived(TaskTimes::of(&again), at(7));
    assert_eq!(h.archived(), 1);
    assert!(h.is_archived(1));
    let r = report(&h, &[], BTreeMap::new(), now(), FOUR_HOURS);
    assert_eq!(
        (r.tasks.completed, r.tasks.cancelled),
        (1, 0),
        "the last line wins"
    );
    h.clear_archived();
    assert_eq!(h.archived(), 0);
    h.add_question(1, at(0));
    h.clear_questions();
    let r = report(&h, &[], BTreeMap::new(), now(), FOUR_HOURS);
    assert_eq!(r.open_questions, 0);
}

#[test]
fn times_come_from_the_task_and_old_tasks_use_their_claim() {
    let mut t = task(9, TaskStatus::Completed, 0, None, Some(3), Some(9), 1);
    // Claimed before first claims were recorded: the current claim stands in.
    assert_eq!(
        TaskTimes::of(&t).first_claimed,
        Some(at(3).timestamp_millis())
    );
    t.first_claimed_at = Some(at(1));
    let times = TaskTimes::of(&t);
    assert_eq!(times.first_claimed, Some(at(1).timestamp_millis()));
    assert_eq!(times.finished, Some(at(9).timestamp_millis()));
    // A pending task has no end, even with a stale ended_at.
    let mut p = task(10, TaskStatus::Pending, 0, None, None, None, 0);
    p.ended_at = Some(at(4));
    assert_eq!(TaskTimes::of(&p).finished, None);
}

#[test]
fn percentiles_are_nearest_rank_and_buckets_hold_their_upper_bound() {
    let mut v = vec![4000, 1000, 3000, 2000];
    let d = Durations::of(&mut v);
    assert_eq!(d.median_secs, Some(2.0), "rank ⌈0.5·4⌉ = 2");
    assert_eq!(d.p90_secs, Some(4.0), "rank ⌈0.9·4⌉ = 4");
    let mut one = vec![10_000, 10_001, 99_999_999];
    let d = Durations::of(&mut one);
    assert_eq!(d.buckets, vec![1, 1, 0, 0, 0, 0, 0, 0, 0, 1]);
    assert_eq!(
        Window {
            secs: 100,
            buckets: 3
        }
        .bucket_secs(),
        34
    );
    assert_eq!(
        Window {
            secs: 0,
            buckets: 0
        }
        .bucket_secs(),
        1
    );
}
