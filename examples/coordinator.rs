//! A coordinator that uses the library directly: creates a board, adds a small plan of tasks
//! with self-contained instructions (one depends on two others), waits for the workers to
//! finish, and prints what they reported.
//!
//! ```text
//! cargo run --example coordinator -- /tmp/demo-board        # then start workers:
//! cargo run --example worker -- /tmp/demo-board w1
//! ```

use std::time::{Duration, Instant};

use agentvine::{Board, NewTask, PlanTask, Priority, TaskStatus};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().unwrap_or_else(|| "/tmp/agentvine-demo".into());
    let wait_secs: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(60);
    let board = Board::init(&dir)?;

    let job = |key: &str, description: &str, text: &str, after: &[&str]| PlanTask {
        key: Some(key.into()),
        task: NewTask {
            description: description.into(),
            instructions: Some(format!(
                "# Task: {description}\n\n## Objective\n{text}\n\n## Acceptance criteria\n- The result names the number of words in this file.\n"
            )),
            priority: if after.is_empty() {
                Priority::Normal
            } else {
                Priority::High
            },
            ..NewTask::default()
        },
        after_keys: after.iter().map(|k| k.to_string()).collect(),
    };
    let plan = vec![
        job(
            "hello",
            "Create hello.txt",
            "Write 'Hello from the board!' to test-output/hello.txt.",
            &[],
        ),
        job(
            "data",
            "Create data.json",
            "Write {\"test\": true} to test-output/data.json.",
            &[],
        ),
        job(
            "readme",
            "Write the README",
            "Describe the project in three sentences.",
            &[],
        ),
        job(
            "api",
            "Sketch the API",
            "List the endpoints /hello and /time with their replies.",
            &[],
        ),
        job(
            "tests",
            "Write the tests",
            "One test per endpoint.",
            &["api"],
        ),
        job(
            "manifest",
            "List created files",
            "List test-output/ into test-output/manifest.txt.",
            &["hello", "data"],
        ),
    ];
    let added = board.add_plan(plan)?;
    println!(
        "coordinator: added {} tasks to {}",
        added.len(),
        board.location()
    );

    let deadline = Instant::now() + Duration::from_secs(wait_secs);
    loop {
        let s = board.status()?;
        if s.pending + s.in_progress == 0 {
            break;
        }
        if Instant::now() > deadline {
            println!(
                "coordinator: still {} pending, {} in progress; giving up waiting",
                s.pending, s.in_progress
            );
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    for t in added {
        let v = board.show(t.id)?;
        let result = v.task.result.map(|r| r.to_string()).unwrap_or_default();
        let by = v.task.completed_by.unwrap_or_default();
        let mark = if v.task.status == TaskStatus::Completed {
            "done"
        } else {
            v.task.status.as_str()
        };
        println!(
            "coordinator: [{mark}] {} by {by}: {result}",
            v.task.description
        );
    }
    Ok(())
}
