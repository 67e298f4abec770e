//! Changes made through other servers: one connection per server `LISTEN`s on `vine_board`;
//! every commit notifies it with the new board version (`NOTIFY` is delivered at commit, so
//! only committed changes wake anyone). A version above what this server has seen moves its
//! change count and calls the wakers (the long-polls of waiting workers, the control room's
//! live pages). A lost connection is opened again, and the board's version looked at then, so
//! a change made meanwhile is not missed. The thread ends when the store is dropped.

use std::sync::Weak;
use std::time::Duration;

use postgres::fallible_iterator::FallibleIterator;

use super::conn::Target;
use super::{Inner, saw};

/// How often the thread looks whether the store is still there.
const TICK: Duration = Duration::from_secs(1);

/// Starts the listening thread.
pub(crate) fn start(inner: Weak<Inner>, target: Target) {
    let spawned = std::thread::Builder::new()
        .name("vine-pg-listen".into())
        .spawn(move || run(&inner, &target));
    if let Err(e) = spawned {
        eprintln!(
            "vine serve: cannot start listening for changes made through other servers ({e}); \
             waiting workers still look again every few seconds"
        );
    }
}

fn run(inner: &Weak<Inner>, target: &Target) {
    let mut quiet = false;
    while inner.strong_count() > 0 {
        let mut client = match target.connect().and_then(|mut c| {
            c.batch_execute("LISTEN vine_board")
                .map_err(|e| target.error("listening on", e))?;
            Ok(c)
        }) {
            Ok(c) => c,
            Err(e) => {
                if !quiet {
                    eprintln!("vine serve: {e}; trying again");
                    quiet = true;
                }
                std::thread::sleep(TICK);
                continue;
            }
        };
        quiet = false;
        // Listening from now on: whatever was committed before is read once.
        if let Ok(row) = client.query_one("SELECT version FROM board WHERE id = 1", &[])
            && let Ok(v) = row.try_get::<_, i64>(0)
        {
            tell(inner, v);
        }
        loop {
            if inner.strong_count() == 0 {
                return;
            }
            let mut broke = false;
            {
                let mut notes = client.notifications();
                let mut it = notes.timeout_iter(TICK);
                loop {
                    match it.next() {
                        Ok(Some(n)) => {
                            if let Ok(v) = n.payload().parse::<i64>() {
                                tell(inner, v);
                            }
                        }
                        Ok(None) => break,
                        Err(_) => {
                            broke = true;
                            break;
                        }
                    }
                }
            }
            if broke || client.is_closed() {
                break;
            }
        }
    }
}

/// Moves the change count to `version` (waking the waiters if that is news).
fn tell(inner: &Weak<Inner>, version: i64) {
    if let Some(inner) = inner.upgrade() {
        saw(&inner, version);
    }
}
