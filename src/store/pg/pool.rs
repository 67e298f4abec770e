//! The reads' connections: at most [`MAX_READERS`] open at once (a burst of reads waits for one
//! instead of opening a connection each, which several servers on one database would soon run
//! out of), kept open between reads.

use std::sync::{Condvar, Mutex};

use super::conn::Target;
use super::locked;
use super::sql::Conn;
use crate::error::Result;

/// Most read connections one server keeps open.
pub(crate) const MAX_READERS: usize = 4;

/// Open read connections: the idle ones, and how many there are in all.
#[derive(Default)]
pub(crate) struct Pool {
    state: Mutex<Slots>,
    freed: Condvar,
}

#[derive(Default)]
struct Slots {
    idle: Vec<Conn>,
    open: usize,
}

impl Pool {
    /// An idle connection, a new one while fewer than [`MAX_READERS`] are open, else the next
    /// one given back.
    pub(crate) fn take(&self, target: &Target) -> Result<Conn> {
        let mut s = locked(&self.state);
        loop {
            while let Some(c) = s.idle.pop() {
                if !c.client.is_closed() {
                    return Ok(c);
                }
                s.open -= 1;
            }
            if s.open < MAX_READERS {
                s.open += 1;
                drop(s);
                let opened = Conn::open(target);
                if opened.is_err() {
                    locked(&self.state).open -= 1;
                    self.freed.notify_one();
                }
                return opened;
            }
            s = self.freed.wait(s).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Gives a connection back (a broken one is closed).
    pub(crate) fn give(&self, conn: Conn) {
        let mut s = locked(&self.state);
        if conn.client.is_closed() {
            s.open -= 1;
        } else {
            s.idle.push(conn);
        }
        drop(s);
        self.freed.notify_one();
    }
}
