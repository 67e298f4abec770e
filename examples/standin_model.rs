//! A scripted stand-in for Claude's model, so `vine pool` can be shown offline: an HTTP server
//! on 127.0.0.1 speaking enough of the Anthropic Messages API for the real Claude Code CLI.
//! Given a task's hand-over it runs `vine complete` through the Bash tool, then ends its turn;
//! every answer reports 10 input and 5 output tokens. It is the stand-in the end-to-end tests
//! use (`tests/standin/mod.rs`, included here by path).
//!
//! ```sh
//! cargo run --example standin_model     # prints ANTHROPIC_BASE_URL=http://127.0.0.1:PORT,
//!                                        # then a line for every model request it answers
//! ANTHROPIC_BASE_URL=... ANTHROPIC_API_KEY=dummy vine pool --workers 2
//! ```
//!
//! `scripts/demo-pool.sh` runs a whole pool against it. It runs until it is killed.

#[path = "../tests/standin/mod.rs"]
mod standin;

use std::io::Write;
use std::time::Duration;

fn main() {
    let model = standin::StandIn::start("pool", None, Duration::ZERO);
    println!("ANTHROPIC_BASE_URL={}", model.url());
    let _ = std::io::stdout().flush();
    model.echo();
    loop {
        std::thread::park();
    }
}
