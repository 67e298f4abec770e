//! API key checks (`X-API-Key` or `Authorization: Bearer`), with the guessing of keys bounded
//! per client address.
//!
//! A request with a wrong (or no) key is answered only after a delay that doubles with each
//! bad key from its address (100 ms up to 5 s), and the bad-key replies to one address are
//! given one at a time, in turn: parallel guesses wait behind each other, so an address learns
//! at most one wrong key per delay however many connections it opens. Requests with the right
//! key are never held. An address's count is forgotten 10 minutes after its last bad key. The
//! addresses remembered are bounded: past [`MAX_ADDRESSES`], idle ones are dropped, and when
//! every one is busy, new addresses share one queue at the longest delay.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::App;
use super::reply::ErrorReply;

/// Routes anyone may call.
const OPEN: &[&str] = &["/test", "/openapi.json"];

/// The delay of the first bad key from an address; it doubles with each one.
const FIRST_DELAY: Duration = Duration::from_millis(100);
/// The longest delay of a bad-key reply.
const MAX_DELAY: Duration = Duration::from_secs(5);
/// An address's bad keys are forgotten this long after the last one.
const FORGET: Duration = Duration::from_secs(600);
/// Most client addresses remembered at once.
pub const MAX_ADDRESSES: usize = 10_000;

/// The bad keys of one client address.
struct Guesses {
    /// Bad keys in a row (none further apart than [`FORGET`]).
    count: u32,
    /// When the last one came.
    last: Instant,
    /// Held while one bad-key reply to this address is delayed; the others wait for it.
    turn: Arc<tokio::sync::Mutex<()>>,
}

/// Bad keys per client address.
#[derive(Default)]
pub struct Throttle {
    seen: Mutex<HashMap<IpAddr, Guesses>>,
    /// The one queue of addresses that find no room (every remembered address busy).
    overflow: Arc<tokio::sync::Mutex<()>>,
}

/// The delay of the `count`th bad key in a row.
fn delay(count: u32) -> Duration {
    (FIRST_DELAY * (1u32 << count.saturating_sub(1).min(6))).min(MAX_DELAY)
}

/// The address bad keys are counted for: the IPv4 address, or the /64 an IPv6 address is in
/// (one host usually holds a whole /64).
fn bucket(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
    }
}

impl Throttle {
    /// Holds a bad-key reply to `ip` until its turn has come and its delay has passed.
    pub(crate) async fn hold(&self, ip: IpAddr) {
        let (turn, wait) = self.note(bucket(ip));
        let _turn = turn.lock().await;
        tokio::time::sleep(wait).await;
    }

    /// Counts a bad key from `addr`: the queue its reply waits in, and its delay.
    fn note(&self, addr: IpAddr) -> (Arc<tokio::sync::Mutex<()>>, Duration) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if !seen.contains_key(&addr) && seen.len() >= MAX_ADDRESSES {
            make_room(&mut seen, now);
            if seen.len() >= MAX_ADDRESSES {
                return (self.overflow.clone(), MAX_DELAY);
            }
        }
        let g = seen.entry(addr).or_insert_with(|| Guesses {
            count: 0,
            last: now,
            turn: Arc::default(),
        });
        if now.duration_since(g.last) > FORGET {
            g.count = 0;
        }
        g.count = g.count.saturating_add(1);
        g.last = now;
        (g.turn.clone(), delay(g.count))
    }
}

/// Drops forgotten addresses, or else the idle one whose last bad key is oldest. Addresses
/// with a reply being held are kept.
fn make_room(seen: &mut HashMap<IpAddr, Guesses>, now: Instant) {
    let idle = |g: &Guesses| Arc::strong_count(&g.turn) == 1;
    seen.retain(|_, g| !idle(g) || now.duration_since(g.last) <= FORGET);
    if seen.len() < MAX_ADDRESSES {
        return;
    }
    let oldest = seen
        .iter()
        .filter(|(_, g)| idle(g))
        .min_by_key(|(_, g)| g.last)
        .map(|(a, _)| *a);
    if let Some(a) = oldest {
        seen.remove(&a);
    }
}

/// The key a request presents, from `X-API-Key` or `Authorization: Bearer`.
fn presented(req: &Request) -> Option<&str> {
    let h = req.headers();
    if let Some(v) = h.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(v);
    }
    h.get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
}

/// Middleware: lets open routes and requests with the right key through.
pub async fn check(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    let Some(key) = &app.key else {
        return next.run(req).await;
    };
    if OPEN.contains(&req.uri().path()) {
        return next.run(req).await;
    }
    // The control room checks its own sessions (a login form takes the key once).
    if !app.original_only && crate::web::is_control_room(req.uri().path()) {
        return next.run(req).await;
    }
    match presented(&req) {
        Some(k) if key.matches(k) => next.run(req).await,
        given => {
            app.throttle.hold(peer.ip()).await;
            let why = if given.is_some() {
                "wrong API key"
            } else {
                "missing API key: send it in the X-API-Key header"
            };
            ErrorReply::new(StatusCode::UNAUTHORIZED, why).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap() {
        let ms: Vec<u128> = (1..=9).map(|n| delay(n).as_millis()).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
        assert_eq!(delay(u32::MAX), MAX_DELAY);
    }

    #[test]
    fn ipv6_addresses_count_per_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(bucket(a), bucket(b));
        assert_ne!(bucket(a), bucket(c));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(bucket(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn the_addresses_remembered_are_bounded() {
        let t = Throttle::default();
        let addr = |i: u32| IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
        // Every remembered address busy: a new one shares the overflow queue.
        let held: Vec<_> = (0..MAX_ADDRESSES as u32)
            .map(|i| t.note(addr(i)).0)
            .collect();
        let (q, d) = t.note(addr(MAX_ADDRESSES as u32));
        assert!(Arc::ptr_eq(&q, &t.overflow));
        assert_eq!(d, MAX_DELAY);
        // Idle again: the oldest gives way.
        drop(held);
        let (q, _) = t.note(addr(MAX_ADDRESSES as u32 + 1));
        assert!(!Arc::ptr_eq(&q, &t.overflow));
        assert_eq!(t.seen.lock().unwrap().len(), MAX_ADDRESSES);
    }
}
