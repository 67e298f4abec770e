//! A worker that uses the library directly: registers, then claims, "does" and completes
//! tasks in a loop (here the work is counting the words of the instruction file), heartbeats
//! between tasks, and stops when `should_continue` says so — the same decision the Claude
//! Code Stop hook makes.
//!
//! ```text
//! cargo run --example worker -- /tmp/demo-board w1 [max-idle-seconds]
//! ```

use std::time::Duration;

use agentvine::Board;
use serde_json::json;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().unwrap_or_else(|| "/tmp/agentvine-demo".into());
    let me = args.next().unwrap_or_else(|| "w1".into());
    let max_idle: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(3);
    let board = Board::open(&dir)?;
    board.register(&me, &["text"])?;
    loop {
        match board.claim(&me)? {
            Some(claim) => {
                let t = &claim.task;
                let words = claim
                    .instructions
                    .as_deref()
                    .unwrap_or("")
                    .split_whitespace()
                    .count();
                std::thread::sleep(Duration::from_millis(150)); // the "work"
                board.heartbeat(&me)?;
                board.complete(t.id, &me, Some(json!({"words": words})))?;
                println!("{me}: completed {} ({})", t.id, t.description);
            }
            None => {
                let d = board.should_continue(&me, max_idle)?;
                if !d.keep_going {
                    println!("{me}: stopping: {}", d.reason);
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}
