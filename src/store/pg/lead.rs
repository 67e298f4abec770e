//! Which server of a database leads: the one the others hand their changes to, so that one
//! server's copy of the board decides every change and the copies do not collide (see
//! `server/forward.rs`). A server stands for the lead once it knows the URL the others reach it
//! at ([`super::PgStore::stand_for_lead`]); one thread per server then tries, every second, to
//! take a session advisory lock on a connection of its own, and the server that holds it writes
//! its URL and its session's process id in the `leader` row. The others read who leads from
//! that row joined with `pg_locks`, so a row whose session is gone (the server stopped, or lost
//! its connection, and with it the lock) names no one.
//!
//! Leading is only a hint: every commit is still checked against the board's version, so a
//! server that believes it leads after losing the lock, or two servers that disagree for a
//! second, cost only retries, never a wrong board. The lead connection asks the database to
//! notice a vanished server within about 25 s (TCP keepalives), after which another takes over.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, Weak};
use std::time::Duration;

use postgres::Client;

use super::conn::Target;
use super::{Inner, locked};

/// How often a server tries to take the lead and looks who leads.
const TICK: Duration = Duration::from_secs(1);

/// The advisory lock the leading server holds ("vinelead"; both 32-bit halves below 2^31,
/// so `pg_locks` shows them as the same positive numbers).
const LEAD_LOCK: i64 = 0x7669_6e65_6c65_6164;

/// Who leads, as this server knows it.
#[derive(Debug, Default)]
pub(crate) struct Lead {
    /// The URL this server stands for the lead with; none: it never leads.
    own: Mutex<Option<String>>,
    /// Whether this server holds the lead lock.
    leading: AtomicBool,
    /// The URL of the server that leads, when it is another one.
    other: Mutex<Option<String>>,
}

impl Lead {
    /// Stands for the lead with `url` (from the next look on).
    pub(crate) fn stand(&self, url: &str) {
        *locked(&self.own) = Some(url.to_string());
    }

    /// The URL of another server that leads, if one does (as of the last look, at most a
    /// second old).
    pub(crate) fn other(&self) -> Option<String> {
        if self.leading.load(Ordering::Acquire) {
            return None;
        }
        locked(&self.other).clone()
    }

    /// Whether this server holds the lead.
    pub(crate) fn leading(&self) -> bool {
        self.leading.load(Ordering::Acquire)
    }

    /// After the lead connection was lost: this server leads no more (the database released
    /// the lock with the session), and who leads is not known.
    fn lost(&self) {
        self.leading.store(false, Ordering::Release);
        *locked(&self.other) = None;
    }
}

/// Starts the thread that takes the lead when it can and looks who leads; it ends when the
/// store is dropped.
pub(crate) fn start(inner: Weak<Inner>, target: Target) {
    let spawned = std::thread::Builder::new()
        .name("vine-pg-lead".into())
        .spawn(move || run(&inner, &target));
    if let Err(e) = spawned {
        eprintln!(
            "vine serve: cannot start looking which server leads ({e}); this server commits its own changes"
        );
    }
}

fn run(inner: &Weak<Inner>, target: &Target) {
    let mut conn: Option<Client> = None;
    loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let lead = &strong.lead;
        if conn.as_ref().is_none_or(Client::is_closed) {
            lead.lost();
            conn = connect(target);
        }
        if let Some(c) = conn.as_mut()
            && look(c, lead).is_err()
        {
            // The session (and with it the lock) is gone or going: from now on this server
            // does not lead; the next tick connects again.
            lead.lost();
            conn = None;
        }
        drop(strong);
        std::thread::sleep(TICK);
    }
}

/// A connection for the lead lock, which asks the database to drop it (and so release the
/// lock) within about 25 s of this server vanishing without closing it.
fn connect(target: &Target) -> Option<Client> {
    let mut c = target.connect().ok()?;
    c.batch_execute(
        "SET tcp_keepalives_idle = 10; SET tcp_keepalives_interval = 5; \
         SET tcp_keepalives_count = 3; SET application_name = 'vine serve (lead)'",
    )
    .ok()?;
    Some(c)
}

/// One look: takes the lead if this server stands for it and no one holds it (a leader makes
/// sure the row still names it, should it have been changed by hand), else reads who leads.
fn look(c: &mut Client, lead: &Lead) -> Result<(), postgres::Error> {
    let own = locked(&lead.own).clone();
    if let Some(url) = &own {
        // The lock is this session's for as long as the session lasts: taken once.
        let held = lead.leading()
            || c.query_one("SELECT pg_try_advisory_lock($1)", &[&LEAD_LOCK])?
                .get::<_, bool>(0);
        if held {
            c.execute(
                "INSERT INTO leader (id, url, pid) VALUES (1, $1, pg_backend_pid()) \
                 ON CONFLICT (id) DO UPDATE SET url = EXCLUDED.url, pid = EXCLUDED.pid, since = now() \
                 WHERE leader.url <> EXCLUDED.url OR leader.pid <> EXCLUDED.pid",
                &[url],
            )?;
            lead.leading.store(true, Ordering::Release);
            *locked(&lead.other) = None;
            return Ok(());
        }
    }
    let row = c.query_opt(
        "SELECT l.url FROM leader l \
         JOIN pg_locks k ON k.pid = l.pid AND k.locktype = 'advisory' AND k.granted \
           AND k.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
           AND k.classid::bigint = $1 AND k.objid::bigint = $2 AND k.objsubid = 1 \
         WHERE l.id = 1",
        &[&(LEAD_LOCK >> 32), &(LEAD_LOCK & 0xffff_ffff)],
    )?;
    *locked(&lead.other) = row.map(|r| r.get(0));
    Ok(())
}
