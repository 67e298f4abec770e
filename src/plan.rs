//! Plan files for `vine add --plan`: a JSON list of tasks that may depend on each other by key.
//!
//! ```json
//! [
//!   {"key": "structure", "description": "Create the Flask app structure",
//!    "instructions_from": "tasks/flask-app-structure.md", "priority": "high"},
//!   {"key": "hello", "description": "Add /hello", "after": ["structure"],
//!    "context_files": ["flask-demo/app.py"], "requires": ["python"], "lease": "20m",
//!    "fallback_after": "10m"},
//!   {"description": "Deploy", "assign": "ops", "strict": true}
//! ]
//! ```
//! `after` holds keys of entries in the same plan or ids of tasks already on the board.
//! `instructions_from` is read from the local disk, relative to the plan file.

use std::path::Path;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::op::{NewTask, PlanTask};
use crate::task::Priority;
use crate::time::parse_duration;

/// A dependency in a plan: a key of the same plan or an existing task id.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum DepRef {
    Id(u64),
    Key(String),
}

/// A duration (lease, fallback time) written as seconds or as a duration string.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum Duration {
    Secs(u64),
    Text(String),
}

impl Duration {
    /// The duration in seconds; `name` says which plan entry, for the error.
    fn secs(self, name: &str) -> Result<u64> {
        match self {
            Duration::Secs(s) => Ok(s),
            Duration::Text(t) => {
                parse_duration(&t).map_err(|m| Error::Invalid(format!("plan {name}: {m}")))
            }
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    key: Option<String>,
    description: String,
    instructions: Option<String>,
    instructions_from: Option<String>,
    instruction_file: Option<String>,
    #[serde(default)]
    context_files: Vec<String>,
    #[serde(alias = "assigned_to")]
    assign: Option<String>,
    priority: Option<String>,
    #[serde(default)]
    requires: Vec<String>,
    #[serde(default, alias = "depends_on")]
    after: Vec<DepRef>,
    max_retries: Option<u32>,
    lease: Option<Duration>,
    #[serde(default)]
    strict: bool,
    #[serde(alias = "fallback_after_secs")]
    fallback_after: Option<Duration>,
    #[serde(default)]
    metadata: Map<String, Value>,
}

/// Parses a plan file's text; `base` is the folder `instructions_from` paths are relative to.
pub fn parse(text: &str, base: &Path) -> Result<Vec<PlanTask>> {
    let entries: Vec<Entry> = serde_json::from_str(text).map_err(|e| {
        Error::Invalid(format!(
            "the plan is not a JSON list of tasks ({e}); see `vine add --help` for the format"
        ))
    })?;
    let mut out = Vec::with_capacity(entries.len());
    for (i, e) in entries.into_iter().enumerate() {
        let name = e
            .key
            .clone()
            .map_or_else(|| format!("entry {}", i + 1), |k| format!("entry {k:?}"));
        let instructions = match (e.instructions, e.instructions_from) {
            (Some(_), Some(_)) => {
                return Err(Error::Invalid(format!(
                    "plan {name}: give instructions or instructions_from, not both"
                )));
            }
            (Some(t), None) => Some(t),
            (None, Some(f)) => {
                let p = base.join(&f);
                Some(std::fs::read_to_string(&p).map_err(|err| {
                    Error::Invalid(format!(
                        "plan {name}: cannot read instructions_from {}: {err}",
                        p.display()
                    ))
                })?)
            }
            (None, None) => None,
        };
        let priority = match e.priority.as_deref() {
            None => Priority::Normal,
            Some(p) => Priority::parse(p).ok_or_else(|| {
                Error::Invalid(format!(
                    "plan {name}: priority {p:?} is not high, normal or low"
                ))
            })?,
        };
        let lease_secs = e.lease.map(|d| d.secs(&name)).transpose()?;
        let fallback_after_secs = e.fallback_after.map(|d| d.secs(&name)).transpose()?;
        let mut after = Vec::new();
        let mut after_keys = Vec::new();
        for d in e.after {
            match d {
                DepRef::Id(id) => after.push(id),
                DepRef::Key(k) => after_keys.push(k),
            }
        }
        out.push(PlanTask {
            key: e.key,
            task: NewTask {
                description: e.description,
                instructions,
                instruction_file: e.instruction_file,
                context_files: e.context_files,
                assign: e.assign,
                priority,
                requires: e.requires,
                after,
                max_retries: e.max_retries,
                lease_secs,
                strict: e.strict,
                fallback_after_secs,
                metadata: e.metadata,
            },
            after_keys,
        });
    }
    Ok(out)
}
