//! A task on the queue, as stored in `task-queue.json` (original fields plus ours).

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use crate::time::{Timestamp, opt_ts};

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    /// Waiting to be claimed.
    Pending,
    /// Claimed by a worker that holds a lease on it.
    InProgress,
    /// Finished successfully.
    Completed,
    /// Out of retries (the dead-letter state); `vine retry` puts it back.
    Failed,
    /// Cancelled by the coordinator.
    Cancelled,
}

impl TaskStatus {
    /// All statuses, in lifecycle order.
    pub const ALL: [TaskStatus; 5] = [
        TaskStatus::Pending,
        TaskStatus::InProgress,
        TaskStatus::Completed,
        TaskStatus::Failed,
        TaskStatus::Cancelled,
    ];

    /// The name used in files and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Pending => "pending",
            TaskStatus::InProgress => "in_progress",
            TaskStatus::Completed => "completed",
            TaskStatus::Failed => "failed",
            TaskStatus::Cancelled => "cancelled",
        }
    }

    /// Parses a status name (`in-progress` is accepted too).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|st| st.as_str() == s || st.as_str().replace('_', "-") == s)
    }

    /// True for completed, failed and cancelled.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskStatus::Completed | TaskStatus::Failed | TaskStatus::Cancelled
        )
    }
}

impl TaskStatus {
    /// Counts `tasks` by status.
    pub fn count<'a>(tasks: impl IntoIterator<Item = &'a Task>) -> BTreeMap<TaskStatus, usize> {
        let mut m = BTreeMap::new();
        for t in tasks {
            *m.entry(t.status).or_insert(0) += 1;
        }
        m
    }
}

impl std::fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which tasks a listing shows (`vine tasks --status`): one status, or the blocked ones.
///
/// On the wire and the command line the names are the statuses' (`in_progress`; `in-progress`
/// is accepted too) and `blocked`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum StatusFilter {
    /// Waiting to be claimed (blocked ones included).
    Pending,
    /// Claimed by a worker.
    #[serde(alias = "in-progress")]
    #[value(alias = "in-progress")]
    InProgress,
    /// Finished successfully.
    Completed,
    /// Out of retries.
    Failed,
    /// Cancelled by the coordinator.
    Cancelled,
    /// Pending, but waiting on a task that failed or was cancelled: never claimed.
    Blocked,
}

impl StatusFilter {
    /// Parses a filter name (a status, `in-progress` too, or `blocked`).
    pub fn parse(s: &str) -> Option<Self> {
        <Self as clap::ValueEnum>::from_str(s, false).ok()
    }

    /// True if a task with `status` (and `blocked`: it waits on a failed or cancelled task)
    /// is shown.
    pub fn matches(self, status: TaskStatus, blocked: bool) -> bool {
        let wanted = match self {
            StatusFilter::Blocked => return blocked,
            StatusFilter::Pending => TaskStatus::Pending,
            StatusFilter::InProgress => TaskStatus::InProgress,
            StatusFilter::Completed => TaskStatus::Completed,
            StatusFilter::Failed => TaskStatus::Failed,
            StatusFilter::Cancelled => TaskStatus::Cancelled,
        };
        status == wanted
    }
}

/// How urgent a task is; claims take higher priorities first.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Claimed before everything else.
    High,
    /// The default.
    #[default]
    Normal,
    /// Claimed when nothing else is eligible.
    Low,
}

impl Priority {
    /// Sort rank: lower is claimed first.
    pub fn rank(self) -> u8 {
        match self {
            Priority::High => 0,
            Priority::Normal => 1,
            Priority::Low => 2,
        }
    }

    /// Parses `high`, `normal` or `low`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "high" => Some(Priority::High),
            "normal" => Some(Priority::Normal),
            "low" => Some(Priority::Low),
            _ => None,
        }
    }

    /// The name used in files and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }
}

/// One task of `task-queue.json`. Unknown fields are kept in `extra` and written back.
///
/// Deserialization is hand-written (see `TaskVisitor`) rather than derived with
/// `#[serde(flatten)]`: the queue is parsed on every claim, and flatten's buffering made
/// parsing about three times slower.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Task {
    /// Unique id: epoch milliseconds at creation, bumped to stay increasing.
    pub id: u64,
    /// One line saying what the task is.
    pub description: String,
    /// Board path of the instruction file (`tasks/task-<id>-instructions.md`).
    pub instruction_file: Option<String>,
    /// Board paths a worker must read before starting.
    pub context_files: Vec<String>,
    /// The worker this task is meant for, if any.
    pub assigned_to: Option<String>,
    /// Where the task is in its life.
    pub status: TaskStatus,
    /// When the task was added.
    #[serde(with = "opt_ts")]
    pub created_at: Option<Timestamp>,
    /// The worker holding the current claim.
    pub claimed_by: Option<String>,
    /// When the current claim was made.
    #[serde(with = "opt_ts")]
    pub claimed_at: Option<Timestamp>,
    /// The worker that completed it.
    pub completed_by: Option<String>,
    /// When it was completed.
    #[serde(with = "opt_ts")]
    pub completed_at: Option<Timestamp>,
    /// What the worker reported (text or JSON).
    pub result: Option<Value>,
    /// Free-form data from the coordinator (working directory, acceptance criteria...).
    pub metadata: Map<String, Value>,
    /// Claim order: high before normal before low.
    pub priority: Priority,
    /// Capabilities a worker must have to claim it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub requires: Vec<String>,
    /// Tasks that must be completed before this one can be claimed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<u64>,
    /// Claims made so far that were not released.
    pub attempts: u32,
    /// Retries allowed after the first attempt (board default when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
    /// Lease length in seconds for this task (board default when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_secs: Option<u64>,
    /// Only the assignee, or only a worker with every required capability, may claim it: it
    /// never falls back to any worker.
    #[serde(skip_serializing_if = "is_false")]
    pub strict: bool,
    /// Seconds without a live specialist after which any worker may claim it (the board's
    /// `fallback_after_secs` when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback_after_secs: Option<u64>,
    /// When the current claim lapses unless the claimant heartbeats.
    #[serde(with = "opt_ts", skip_serializing_if = "Option::is_none")]
    pub lease_expires_at: Option<Timestamp>,
    /// The error of the last failed attempt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Not claimable before this time (retry backoff).
    #[serde(with = "opt_ts", skip_serializing_if = "Option::is_none")]
    pub not_before: Option<Timestamp>,
    /// When it failed for good or was cancelled.
    #[serde(with = "opt_ts", skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<Timestamp>,
    /// When it was first claimed (`claimed_at` is the current claim's; this one stays when a
    /// claim ends and the task is claimed again), for the time a task waited in the queue.
    #[serde(with = "opt_ts", skip_serializing_if = "Option::is_none")]
    pub first_claimed_at: Option<Timestamp>,
    /// The request key of the last op that changed this task, so a retried request is
    /// answered instead of applied twice (see `rules::apply_keyed`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_key: Option<String>,
    /// The request key of the add that made this task, kept when later ops change it, so a
    /// retried add is answered with this task even after a worker claimed it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub added_key: Option<String>,
    /// Fields this version does not know; kept as they were.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Task {
    /// A new pending task with only the required fields set.
    pub fn new(id: u64, description: impl Into<String>, now: Timestamp) -> Self {
        Task {
            id,
            description: description.into(),
            instruction_file: None,
            context_files: Vec::new(),
            assigned_to: None,
            status: TaskStatus::Pending,
            created_at: Some(now),
            claimed_by: None,
            claimed_at: None,
            completed_by: None,
            completed_at: None,
            result: None,
            metadata: Map::new(),
            priority: Priority::Normal,
            requires: Vec::new(),
            depends_on: Vec::new(),
            attempts: 0,
            max_retries: None,
            lease_secs: None,
            strict: false,
            fallback_after_secs: None,
            lease_expires_at: None,
            last_error: None,
            not_before: None,
            ended_at: None,
            first_claimed_at: None,
            request_key: None,
            added_key: None,
            extra: Map::new(),
        }
    }

    /// The default instruction file path of task `id`.
    pub fn instruction_path(id: u64) -> String {
        format!("tasks/task-{id}-instructions.md")
    }
}

/// Reads a [`Task`] field by field, keeping unknown fields in `extra`.
struct TaskVisitor;

/// An optional timestamp read with the board's lenient parser.
struct OptTs(Option<Timestamp>);

impl<'de> Deserialize<'de> for OptTs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        opt_ts::deserialize(d).map(OptTs)
    }
}

impl<'de> serde::de::Visitor<'de> for TaskVisitor {
    type Value = Task;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a task object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Task, A::Error> {
        use serde::de::Error as _;
        let mut id: Option<u64> = None;
        let mut description: Option<String> = None;
        let mut status: Option<TaskStatus> = None;
        let mut t = Task::new(0, String::new(), Timestamp::UNIX_EPOCH);
        t.created_at = None;
        fn list<T>(v: Option<Vec<T>>) -> Vec<T> {
            v.unwrap_or_default()
        }
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match key.as_ref() {
                "id" => id = Some(map.next_value()?),
                "description" => description = Some(map.next_value()?),
                "status" => status = Some(map.next_value()?),
                "instruction_file" => t.instruction_file = map.next_value()?,
                "context_files" => t.context_files = list(map.next_value()?),
                "assigned_to" => t.assigned_to = map.next_value()?,
                "created_at" => t.created_at = map.next_value::<OptTs>()?.0,
                "claimed_by" => t.claimed_by = map.next_value()?,
                "claimed_at" => t.claimed_at = map.next_value::<OptTs>()?.0,
                "completed_by" => t.completed_by = map.next_value()?,
                "completed_at" => t.completed_at = map.next_value::<OptTs>()?.0,
                "result" => t.result = map.next_value()?,
                "metadata" => {
                    t.metadata = map
                        .next_value::<Option<Map<String, Value>>>()?
                        .unwrap_or_default()
                }
                "priority" => {
                    t.priority = map.next_value::<Option<Priority>>()?.unwrap_or_default()
                }
                "requires" => t.requires = list(map.next_value()?),
                "depends_on" => t.depends_on = list(map.next_value()?),
                "attempts" => t.attempts = map.next_value::<Option<u32>>()?.unwrap_or_default(),
                "max_retries" => t.max_retries = map.next_value()?,
                "lease_secs" => t.lease_secs = map.next_value()?,
                "strict" => t.strict = map.next_value::<Option<bool>>()?.unwrap_or_default(),
                "fallback_after_secs" => t.fallback_after_secs = map.next_value()?,
                "lease_expires_at" => t.lease_expires_at = map.next_value::<OptTs>()?.0,
                "last_error" => t.last_error = map.next_value()?,
                "not_before" => t.not_before = map.next_value::<OptTs>()?.0,
                "ended_at" => t.ended_at = map.next_value::<OptTs>()?.0,
                "first_claimed_at" => t.first_claimed_at = map.next_value::<OptTs>()?.0,
                "request_key" => t.request_key = map.next_value()?,
                "added_key" => t.added_key = map.next_value()?,
                _ => {
                    let v: Value = map.next_value()?;
                    t.extra.insert(key.into_owned(), v);
                }
            }
        }
        t.id = id.ok_or_else(|| A::Error::missing_field("id"))?;
        t.description = description.ok_or_else(|| A::Error::missing_field("description"))?;
        t.status = status.ok_or_else(|| A::Error::missing_field("status"))?;
        Ok(t)
    }
}

impl<'de> Deserialize<'de> for Task {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(TaskVisitor)
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Reads `null` as the type's default (the original files sometimes hold null lists).
pub(crate) fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_original_shape_and_keeps_unknown_fields() {
        let original = r#"{"id":1731159000123,"description":"Create user auth","instruction_file":"tasks/task-1731159000123-instructions.md","context_files":["docs/api-spec.md"],"assigned_to":null,"status":"pending","created_at":"2025-11-09T10:00:00","claimed_by":null,"claimed_at":null,"completed_by":null,"completed_at":null,"result":null,"metadata":{"working_directory":"src/api"},"error":"old","custom":{"a":1}}"#;
        let t: Task = serde_json::from_str(original).unwrap();
        assert_eq!(t.id, 1731159000123);
        assert_eq!(t.status, TaskStatus::Pending);
        assert_eq!(t.priority, Priority::Normal);
        assert_eq!(t.extra.get("custom"), Some(&serde_json::json!({"a":1})));
        let back = serde_json::to_value(&t).unwrap();
        assert_eq!(back["created_at"], "2025-11-09T10:00:00.000Z");
        assert_eq!(back["error"], "old");
        assert_eq!(back["custom"]["a"], 1);
        assert!(
            back["claimed_by"].is_null(),
            "original fields are always written"
        );
        assert!(back.get("lease_expires_at").is_none());
    }

    #[test]
    fn null_lists_read_as_empty_and_missing_required_fields_are_errors() {
        let t: Task = serde_json::from_str(
            r#"{"id":1,"description":"d","status":"completed","context_files":null,"metadata":null,"priority":null}"#,
        )
        .unwrap();
        assert!(t.context_files.is_empty() && t.metadata.is_empty());
        assert!(serde_json::from_str::<Task>(r#"{"id":1,"status":"pending"}"#).is_err());
        assert!(
            serde_json::from_str::<Task>(r#"{"id":"x","description":"d","status":"pending"}"#)
                .is_err()
        );
        assert!(
            serde_json::from_str::<Task>(r#"{"id":1,"description":"d","status":"done"}"#).is_err()
        );
        assert!(serde_json::from_str::<Task>(r#"[1,2]"#).is_err());
    }

    /// The hand-written deserializer must know every field of [`Task`]: a task with every
    /// field set (a struct literal, so a new field does not compile until it is set here)
    /// parses back equal, and no field of the struct lands in `extra`.
    #[test]
    fn the_deserializer_reads_every_field_of_the_struct() {
        let at = |s: &str| crate::time::parse_timestamp(s).unwrap();
        let full = Task {
            id: 7,
            description: "d".into(),
            instruction_file: Some("tasks/i.md".into()),
            context_files: vec!["docs/a.md".into()],
            assigned_to: Some("w2".into()),
            status: TaskStatus::InProgress,
            created_at: Some(at("2026-03-01T12:00:00Z")),
            claimed_by: Some("w1".into()),
            claimed_at: Some(at("2026-03-01T12:00:01Z")),
            completed_by: Some("w0".into()),
            completed_at: Some(at("2026-03-01T12:00:02Z")),
            result: Some(serde_json::json!({"ok": true})),
            metadata: Map::from_iter([("dir".to_string(), serde_json::json!("src"))]),
            priority: Priority::High,
            requires: vec!["rust".into()],
            depends_on: vec![1],
            attempts: 2,
            max_retries: Some(3),
            lease_secs: Some(600),
            strict: true,
            fallback_after_secs: Some(60),
            lease_expires_at: Some(at("2026-03-01T12:10:01Z")),
            last_error: Some("e".into()),
            not_before: Some(at("2026-03-01T12:00:03Z")),
            ended_at: Some(at("2026-03-01T12:00:04Z")),
            first_claimed_at: Some(at("2026-03-01T11:59:00Z")),
            request_key: Some("k".into()),
            added_key: Some("a".into()),
            extra: Map::from_iter([("custom".to_string(), serde_json::json!(1))]),
        };
        let json = serde_json::to_value(&full).unwrap();
        let fields = json.as_object().unwrap();
        for (k, v) in fields {
            assert!(
                !v.is_null() && v != &serde_json::json!([]) && v != &serde_json::json!({}),
                "set {k} to a value that is not its default"
            );
        }
        let back: Task = serde_json::from_value(json.clone()).unwrap();
        let unread: Vec<&String> = back.extra.keys().filter(|k| *k != "custom").collect();
        assert!(
            unread.is_empty(),
            "fields the deserializer does not read (TaskVisitor::visit_map): {unread:?}"
        );
        assert_eq!(back, full);
    }

    #[test]
    fn statuses_parse() {
        assert_eq!(
            TaskStatus::parse("in-progress"),
            Some(TaskStatus::InProgress)
        );
        assert_eq!(
            TaskStatus::parse("in_progress"),
            Some(TaskStatus::InProgress)
        );
        assert_eq!(TaskStatus::parse("done"), None);
    }

    #[test]
    fn status_filters_parse_and_match() {
        for (name, f) in [
            ("pending", StatusFilter::Pending),
            ("in_progress", StatusFilter::InProgress),
            ("in-progress", StatusFilter::InProgress),
            ("completed", StatusFilter::Completed),
            ("failed", StatusFilter::Failed),
            ("cancelled", StatusFilter::Cancelled),
            ("blocked", StatusFilter::Blocked),
        ] {
            assert_eq!(StatusFilter::parse(name), Some(f), "{name}");
            let json = format!("{name:?}");
            assert_eq!(serde_json::from_str::<StatusFilter>(&json).unwrap(), f);
        }
        assert_eq!(StatusFilter::parse("done"), None);
        assert_eq!(
            serde_json::to_string(&StatusFilter::InProgress).unwrap(),
            "\"in_progress\""
        );
        // Every status is a filter of the same name, which matches it alone.
        for st in TaskStatus::ALL {
            let f = StatusFilter::parse(st.as_str()).unwrap();
            for other in TaskStatus::ALL {
                assert_eq!(f.matches(other, false), other == st);
            }
        }
        // A blocked task is pending: both filters show it.
        assert!(StatusFilter::Blocked.matches(TaskStatus::Pending, true));
        assert!(StatusFilter::Pending.matches(TaskStatus::Pending, true));
        assert!(!StatusFilter::Blocked.matches(TaskStatus::Pending, false));
    }
}
