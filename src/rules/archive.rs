//! Which finished tasks may move to the archive.

use std::collections::HashSet;

use crate::task::{Task, TaskStatus};

/// Splits the queue's finished tasks into those that may move to the archive and those that stay.
///
/// Completed and cancelled tasks move unless an unfinished task depends on them; failed tasks
/// stay on the queue (the dead-letter list) until they are retried or cancelled.
pub(crate) fn archivable(tasks: &[Task]) -> (Vec<usize>, usize) {
    let needed: HashSet<u64> = tasks
        .iter()
        .filter(|t| !t.status.is_terminal())
        .flat_map(|t| t.depends_on.iter().copied())
        .collect();
    let mut take = Vec::new();
    let mut kept = 0;
    for (i, t) in tasks.iter().enumerate() {
        if matches!(t.status, TaskStatus::Completed | TaskStatus::Cancelled) {
            if needed.contains(&t.id) {
                kept += 1;
            } else {
                take.push(i);
            }
        }
    }
    (take, kept)
}
