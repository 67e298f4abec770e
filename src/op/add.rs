//! Adding tasks: one ([`Add`]) or a plan of several with local dependencies ([`AddPlan`]), all
//! or nothing: limits and board paths checked, dependency cycles refused, ids given in order.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::reply::Reply;
use crate::rules::{Needs, Rule, State, replay, requeue_expired};
use crate::task::{Priority, Task, TaskStatus};
use crate::time::{Timestamp, epoch_ms};
use crate::validate;

/// Longest lease a task may ask for (30 days).
const MAX_LEASE_SECS: u64 = 30 * 86_400;
/// Most retries a task may ask for.
const MAX_RETRIES: u32 = 1000;

/// Add one task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Add {
    /// The task.
    pub task: NewTask,
}

/// Add several tasks at once, all or nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AddPlan {
    /// The entries, in order.
    pub tasks: Vec<PlanTask>,
}

/// A task to add, as the coordinator describes it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct NewTask {
    /// One line saying what the task is (required, at most 4 KiB).
    pub description: String,
    /// Instruction text, written to `tasks/task-<id>-instructions.md`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instructions: Option<String>,
    /// An instruction file already on the board (a board-relative path).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instruction_file: Option<String>,
    /// Board paths the worker must read first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub context_files: Vec<String>,
    /// The worker the task is meant for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assign: Option<String>,
    /// Claim order.
    pub priority: Priority,
    /// Capabilities a worker needs to claim it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub requires: Vec<String>,
    /// Ids of tasks that must complete first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<u64>,
    /// Retries after the first attempt (board default when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
    /// Lease length in seconds (board default when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_secs: Option<u64>,
    /// Only the assignee / a worker with every required capability may claim it, ever.
    #[serde(skip_serializing_if = "is_false")]
    pub strict: bool,
    /// Seconds without a live specialist after which any worker may claim it (board default
    /// when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback_after_secs: Option<u64>,
    /// Free-form data kept with the task.
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub metadata: Map<String, Value>,
}

/// One entry of a batch add: a task plus a local key other entries can depend on.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PlanTask {
    /// A name other entries of the same plan use in `after_keys`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The task itself (its `after` holds ids of tasks already on the board).
    pub task: NewTask,
    /// Keys of entries of the same plan that must complete first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub after_keys: Vec<String>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Rule for Add {
    fn needs(&self) -> Needs {
        needs([&self.task])
    }

    fn apply(self, st: &mut State, now: Timestamp) -> Result<Reply> {
        let plan = vec![PlanTask {
            key: None,
            task: self.task,
            after_keys: vec![],
        }];
        let reply = add(st, plan, now)?;
        requeue_expired(st, now);
        Ok(reply)
    }

    fn replay(&self, st: &State, key: &str) -> Option<Reply> {
        replay::added(st, key)
    }
}

impl super::Op {
    /// The instruction texts this op writes as files when it is applied (an add's and a
    /// plan's), which a store may write ahead of the op's change (`BatchStore::stage`).
    pub fn instruction_texts(&self) -> Vec<&str> {
        match self {
            super::Op::Add(a) => a.task.instructions.iter().map(String::as_str).collect(),
            super::Op::AddPlan(p) => p
                .tasks
                .iter()
                .filter_map(|t| t.task.instructions.as_deref())
                .collect(),
            _ => Vec::new(),
        }
    }
}

impl Rule for AddPlan {
    fn needs(&self) -> Needs {
        needs(self.tasks.iter().map(|p| &p.task))
    }

    fn apply(self, st: &mut State, now: Timestamp) -> Result<Reply> {
        let reply = add(st, self.tasks, now)?;
        requeue_expired(st, now);
        Ok(reply)
    }

    fn replay(&self, st: &State, key: &str) -> Option<Reply> {
        replay::added(st, key)
    }
}

/// What adding `tasks` needs: the next id, the archived status of dependencies that left the
/// queue, and the board files they name checked.
fn needs<'a>(tasks: impl IntoIterator<Item = &'a NewTask>) -> Needs {
    let mut n = Needs {
        next_id: true,
        ..Needs::default()
    };
    for t in tasks {
        n.task_ids.extend(&t.after);
        n.instruction_files
            .extend(t.instruction_file.iter().cloned());
        n.context_files.extend(t.context_files.iter().cloned());
    }
    n
}

/// Adds the tasks of a plan, all or nothing.
fn add(state: &mut State, plan: Vec<PlanTask>, now: Timestamp) -> Result<Reply> {
    if plan.is_empty() {
        return Err(Error::Invalid("the plan has no tasks".into()));
    }
    if plan.len() > validate::MAX_PLAN {
        return Err(Error::Invalid(format!(
            "the plan has {} tasks; the limit is {}",
            plan.len(),
            validate::MAX_PLAN
        )));
    }
    let mut keys: HashMap<&str, usize> = HashMap::new();
    for (i, entry) in plan.iter().enumerate() {
        if let Some(k) = entry.key.as_deref() {
            if k.is_empty() {
                return Err(Error::Invalid(format!(
                    "plan entry {} has an empty key",
                    i + 1
                )));
            }
            if keys.insert(k, i).is_some() {
                return Err(Error::Invalid(format!("plan key {k:?} is used twice")));
            }
        }
    }
    let label = |i: usize| -> String {
        match plan[i].key.as_deref() {
            Some(k) => format!("plan entry {k:?}"),
            None if plan.len() == 1 => "the task".into(),
            None => format!("plan entry {}", i + 1),
        }
    };
    // Validate everything before changing anything.
    let mut local_deps: Vec<Vec<usize>> = Vec::with_capacity(plan.len());
    for (i, entry) in plan.iter().enumerate() {
        check_new_task(state, &entry.task).map_err(|e| match e {
            Error::Invalid(m) if plan.len() > 1 => Error::Invalid(format!("{}: {m}", label(i))),
            other => other,
        })?;
        let mut deps = Vec::new();
        for k in &entry.after_keys {
            match keys.get(k.as_str()) {
                Some(&j) if j == i => {
                    return Err(Error::Invalid(format!("{} depends on itself", label(i))));
                }
                Some(&j) => deps.push(j),
                None => {
                    return Err(Error::Invalid(format!(
                        "{} depends on key {k:?}, which is not in the plan",
                        label(i)
                    )));
                }
            }
        }
        local_deps.push(deps);
    }
    if let Some(i) = find_cycle(&local_deps) {
        return Err(Error::Invalid(format!(
            "{} is part of a dependency cycle; no task was added",
            label(i)
        )));
    }

    let first = state.min_next_id.max(epoch_ms(&now));
    let ids: Vec<u64> = (0..plan.len() as u64).map(|n| first + n).collect();
    let mut added = Vec::with_capacity(plan.len());
    for (i, entry) in plan.into_iter().enumerate() {
        let nt = entry.task;
        let id = ids[i];
        let mut t = Task::new(id, nt.description.trim(), now);
        if let Some(text) = nt.instructions {
            let path = Task::instruction_path(id);
            state.files.push((path.clone(), text));
            t.instruction_file = Some(path);
        } else {
            t.instruction_file = nt.instruction_file;
        }
        t.context_files = nt.context_files;
        t.assigned_to = nt.assign;
        t.priority = nt.priority;
        t.requires = nt.requires;
        t.depends_on = nt.after;
        t.depends_on.extend(local_deps[i].iter().map(|&j| ids[j]));
        t.max_retries = nt.max_retries;
        t.lease_secs = nt.lease_secs;
        t.strict = nt.strict;
        t.fallback_after_secs = nt.fallback_after_secs;
        t.metadata = nt.metadata;
        added.push(t);
    }
    state.min_next_id = ids[ids.len() - 1] + 1;
    for t in &added {
        state.push_task(t.clone());
    }
    Ok(Reply::Added { tasks: added })
}

/// Checks one new task against the limits and the board.
fn check_new_task(state: &State, nt: &NewTask) -> Result<()> {
    if nt.description.trim().is_empty() {
        return Err(Error::Invalid(
            "a task needs a description: one line saying what to do".into(),
        ));
    }
    validate::size(
        "the description",
        &nt.description,
        validate::MAX_DESCRIPTION,
    )?;
    if nt.description.trim().chars().any(char::is_control) {
        return Err(Error::Invalid(
            "the description must be one line (no newlines or control characters); \
             put details in the instructions"
                .into(),
        ));
    }
    if nt.instructions.is_some() && nt.instruction_file.is_some() {
        return Err(Error::Invalid(
            "give instruction text or an instruction file, not both".into(),
        ));
    }
    if let Some(text) = &nt.instructions {
        validate::size("the instructions", text, validate::MAX_INSTRUCTIONS)?;
    }
    if let Some(p) = &nt.instruction_file {
        validate::board_path("instruction file", p)?;
    }
    validate::list_len("context files", &nt.context_files)?;
    for p in &nt.context_files {
        validate::board_path("context file", p)?;
    }
    if let Some(w) = &nt.assign {
        validate::name("assigned worker", w)?;
    }
    validate::list_len("required capabilities", &nt.requires)?;
    for c in &nt.requires {
        validate::name("capability", c)?;
    }
    validate::list_len("dependencies", &nt.after)?;
    for &dep in &nt.after {
        if state.position(dep).is_none() {
            match state.archived.get(&dep) {
                Some(TaskStatus::Completed) => {}
                Some(st) => {
                    return Err(Error::Invalid(format!(
                        "dependency {dep} is {st} and archived, so this task could never run"
                    )));
                }
                None => return Err(Error::UnknownTask(dep)),
            }
        }
    }
    if let Some(n) = nt.max_retries
        && n > MAX_RETRIES
    {
        return Err(Error::Invalid(format!(
            "max retries {n} is too many; the limit is {MAX_RETRIES}"
        )));
    }
    if let Some(l) = nt.lease_secs
        && (l == 0 || l > MAX_LEASE_SECS)
    {
        return Err(Error::Invalid(format!(
            "lease {l}s is out of range; use 1s to 30d"
        )));
    }
    let specialist = nt.assign.as_deref().is_some_and(|a| !a.is_empty()) || !nt.requires.is_empty();
    if (nt.strict || nt.fallback_after_secs.is_some()) && !specialist {
        return Err(Error::Invalid(
            "strict and fallback-after concern a task meant for a specialist; give --assign \
             or --requires too"
                .into(),
        ));
    }
    if nt.strict && nt.fallback_after_secs.is_some() {
        return Err(Error::Invalid(
            "a strict task never falls back to other workers; give strict or fallback-after, \
             not both"
                .into(),
        ));
    }
    if let Some(f) = nt.fallback_after_secs
        && f > MAX_LEASE_SECS
    {
        return Err(Error::Invalid(format!(
            "fallback-after {f}s is out of range; use 0s to 30d"
        )));
    }
    validate::json_size(
        "the metadata",
        &Value::Object(nt.metadata.clone()),
        validate::MAX_RESULT,
    )?;
    Ok(())
}

/// Returns an entry on a cycle of the local dependency graph, if there is one.
fn find_cycle(deps: &[Vec<usize>]) -> Option<usize> {
    // Kahn's algorithm: whatever cannot be ordered is on (or behind) a cycle.
    let n = deps.len();
    let mut indegree = vec![0usize; n];
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, ds) in deps.iter().enumerate() {
        for &d in ds {
            indegree[i] += 1;
            dependents[d].push(i);
        }
    }
    let mut ready: Vec<usize> = (0..n).filter(|&i| indegree[i] == 0).collect();
    let mut done = 0;
    while let Some(i) = ready.pop() {
        done += 1;
        for &j in &dependents[i] {
            indegree[j] -= 1;
            if indegree[j] == 0 {
                ready.push(j);
            }
        }
    }
    if done == n {
        None
    } else {
        (0..n).find(|&i| indegree[i] > 0)
    }
}
