//! API key checks (`X-API-Key` or `Authorization: Bearer`), with repeated bad keys slowed down
//! per client address.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;

use super::App;
use super::reply::error;

/// Routes anyone may call.
const OPEN: &[&str] = &["/test", "/openapi.json"];

/// Recent failures per client address.
#[derive(Default)]
pub struct Throttle {
    fails: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl Throttle {
    /// Records a failure; returns how long to hold the reply (doubling from 100 ms to 5 s).
    fn fail(&self, ip: IpAddr) -> Duration {
        let mut m = self.fails.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        m.retain(|_, (_, at)| now.duration_since(*at) < Duration::from_secs(600));
        let e = m.entry(ip).or_insert((0, now));
        e.0 = e.0.saturating_add(1);
        e.1 = now;
        let shift = e.0.saturating_sub(1).min(6);
        Duration::from_millis(100u64 << shift).min(Duration::from_secs(5))
    }

    fn succeed(&self, ip: IpAddr) {
        let mut m = self.fails.lock().unwrap_or_else(|p| p.into_inner());
        m.remove(&ip);
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
    match presented(&req) {
        Some(k) if key.matches(k) => {
            app.throttle.succeed(peer.ip());
            next.run(req).await
        }
        given => {
            let delay = app.throttle.fail(peer.ip());
            tokio::time::sleep(delay).await;
            let why = if given.is_some() {
                "wrong API key"
            } else {
                "missing API key: send it in the X-API-Key header"
            };
            error(StatusCode::UNAUTHORIZED, why)
        }
    }
}
