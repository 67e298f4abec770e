//! Who may use the control room, and proof that a form came from it.
//!
//! - **Sessions** live in memory: a random 256-bit id (from the operating system's CSPRNG)
//!   in a cookie `HttpOnly; SameSite=Strict; Path=/` (plus `Secure` under TLS), never in a URL.
//!   The server keeps only a SHA-256 of each id. With an API key, a session is signed in by
//!   posting the key once to the login form (the id is replaced then); the bad-key throttle of
//!   the API (`server/auth.rs`) holds every wrong key. Without a key (loopback only) every
//!   session is signed in.
//! - **Forms**: every session has its own random token; a POST whose `csrf` field is not the
//!   token of its session, or whose `Origin` (or `Sec-Fetch-Site`) is another site, is refused
//!   with 403 before its handler runs, so it changes nothing.
//!
//! [`guard`] does all of this for every control-room route and hands the handler a [`Page`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Form;
use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::events::Version;
use super::layout;
use crate::server::App;

/// The session cookie's name.
pub const COOKIE: &str = "vine_session";
/// The form field that carries the session's token.
pub const CSRF_FIELD: &str = "csrf";
/// Sessions kept at most; past it the least recently used give way (those not signed in
/// first).
const MAX_SESSIONS: usize = 10_000;
/// A signed-in session unused this long is forgotten.
const SIGNED_IN_IDLE: Duration = Duration::from_secs(7 * 86_400);
/// A session that has not signed in (the login form's) is forgotten sooner.
const ANONYMOUS_IDLE: Duration = Duration::from_secs(3600);

/// What a session is known by on the server: the SHA-256 of its id.
type SessionKey = [u8; 32];

/// Whether a flash message reports something done or something that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlashKind {
    /// The action was carried out.
    Done,
    /// The action was refused; the text says why.
    Failed,
}

/// A one-line message shown once, on the page after a form's redirect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flash {
    /// Done or failed.
    pub kind: FlashKind,
    /// What to say.
    pub text: String,
}

impl Flash {
    /// "It was done."
    pub fn done(text: impl Into<String>) -> Self {
        Flash {
            kind: FlashKind::Done,
            text: text.into(),
        }
    }

    /// "It was refused: why."
    pub fn failed(text: impl Into<String>) -> Self {
        Flash {
            kind: FlashKind::Failed,
            text: text.into(),
        }
    }
}

struct Session {
    csrf: String,
    signed_in: bool,
    flash: Option<Flash>,
    last_used: Instant,
}

impl Session {
    fn expired(&self, now: Instant) -> bool {
        let idle = if self.signed_in {
            SIGNED_IN_IDLE
        } else {
            ANONYMOUS_IDLE
        };
        now.duration_since(self.last_used) > idle
    }
}

/// The sessions of one server, in memory.
pub struct Sessions {
    map: Mutex<HashMap<SessionKey, Session>>,
    /// Served over TLS: cookies get `Secure`.
    secure: bool,
}

/// A new session: the id for its cookie, and what the server knows it by.
struct NewSession {
    id: String,
    key: SessionKey,
    csrf: String,
}

/// The operating system gave no random bytes (never expected; the page says so).
#[derive(Debug)]
pub struct NoRandomness(getrandom::Error);

impl Sessions {
    /// No sessions yet; `secure` when the server speaks TLS.
    pub fn new(secure: bool) -> Self {
        Sessions {
            map: Mutex::default(),
            secure,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SessionKey, Session>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The session whose cookie holds `id`: (key, token, signed in). Marks it used.
    fn find(&self, id: &str) -> Option<(SessionKey, String, bool)> {
        let key = digest(id);
        let now = Instant::now();
        let mut map = self.lock();
        let s = map.get_mut(&key)?;
        if s.expired(now) {
            map.remove(&key);
            return None;
        }
        s.last_used = now;
        Some((key, s.csrf.clone(), s.signed_in))
    }

    /// Starts a session.
    fn create(&self, signed_in: bool) -> Result<NewSession, NoRandomness> {
        let id = random_token()?;
        let csrf = random_token()?;
        let key = digest(&id);
        let mut map = self.lock();
        if map.len() >= MAX_SESSIONS {
            make_room(&mut map);
        }
        map.insert(
            key,
            Session {
                csrf: csrf.clone(),
                signed_in,
                flash: None,
                last_used: Instant::now(),
            },
        );
        Ok(NewSession { id, key, csrf })
    }

    /// Ends a session.
    fn remove(&self, key: &SessionKey) {
        self.lock().remove(key);
    }

    /// Keeps `flash` for the session's next page.
    pub fn set_flash(&self, key: &SessionKey, flash: Flash) {
        if let Some(s) = self.lock().get_mut(key) {
            s.flash = Some(flash);
        }
    }

    fn take_flash(&self, key: &SessionKey) -> Option<Flash> {
        self.lock().get_mut(key).and_then(|s| s.flash.take())
    }

    /// The `Set-Cookie` value that gives the browser session `id`.
    fn cookie(&self, id: &str) -> String {
        let secure = if self.secure { "; Secure" } else { "" };
        format!("{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict{secure}")
    }

    /// The `Set-Cookie` value that makes the browser forget its session.
    fn forget_cookie(&self) -> String {
        let secure = if self.secure { "; Secure" } else { "" };
        format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}")
    }
}

/// Drops expired sessions; if none were, the least recently used one (one not signed in when
/// there is such).
fn make_room(map: &mut HashMap<SessionKey, Session>) {
    let now = Instant::now();
    map.retain(|_, s| !s.expired(now));
    if map.len() < MAX_SESSIONS {
        return;
    }
    let victim = map
        .iter()
        .min_by_key(|(_, s)| (s.signed_in, s.last_used))
        .map(|(k, _)| *k);
    if let Some(k) = victim {
        map.remove(&k);
    }
}

fn digest(id: &str) -> SessionKey {
    Sha256::digest(id.as_bytes()).into()
}

/// 256 random bits from the operating system, as 64 hex digits.
fn random_token() -> Result<String, NoRandomness> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(NoRandomness)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Equal byte strings, compared in time that does not depend on where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The session id the request's cookies carry.
fn cookie_id(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))
        .filter(|id| !id.is_empty())
}

/// True unless the browser says the request comes from another site: `Sec-Fetch-Site` other
/// than same-origin (or none: typed by the user), or an `Origin` other than this server's.
fn same_origin(headers: &HeaderMap, uri: &Uri, tls: bool) -> bool {
    if let Some(site) = headers.get("sec-fetch-site")
        && !matches!(site.as_bytes(), b"same-origin" | b"none")
    {
        return false;
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()));
    let scheme = if tls { "https" } else { "http" };
    host.is_some_and(|h| origin.eq_ignore_ascii_case(&format!("{scheme}://{h}")))
}

/// The value of `field` in a form body (`a=1&csrf=…`), undecoded: tokens are hex.
fn form_field<'a>(body: &'a [u8], field: &str) -> Option<&'a [u8]> {
    body.split(|b| *b == b'&').find_map(|pair| {
        pair.strip_prefix(field.as_bytes())?
            .strip_prefix(b"=".as_slice())
    })
}

/// What every control-room handler gets: who is asking and what the page needs to render.
#[derive(Debug, Clone)]
pub struct Page {
    /// The session's form token; every POST form carries it ([`Page::csrf_field`]).
    pub csrf: String,
    /// The request's path (for the navigation).
    pub path: String,
    /// Signed in with the key (the page offers "Log out").
    pub signed_in: bool,
    /// The server has a key, so the control room needs a login.
    pub key_required: bool,
    /// The message the previous form left, shown once.
    pub flash: Option<Flash>,
    /// The board's change counters when the request came in: the page's live updates ask
    /// for what changed after them.
    pub version: Version,
    session: SessionKey,
}

impl Page {
    /// The hidden field that carries the form token; put it in every POST form.
    pub fn csrf_field(&self) -> Markup {
        html! { input type="hidden" name=(CSRF_FIELD) value=(self.csrf); }
    }

    /// Keeps `flash` for this session's next page (after a form's redirect).
    pub fn flash_next(&self, app: &App, flash: Flash) {
        app.web.sessions.set_flash(&self.session, flash);
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Page {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Page>().cloned().ok_or_else(|| {
            layout::refusal(
                StatusCode::INTERNAL_SERVER_ERROR,
                "this route has no session check",
            )
        })
    }
}

fn no_randomness(e: NoRandomness) -> Response {
    layout::refusal(
        StatusCode::INTERNAL_SERVER_ERROR,
        &format!(
            "the server could not get random bytes for a session ({}); try again",
            e.0
        ),
    )
}

fn with_cookie(mut resp: Response, cookie: Option<String>) -> Response {
    if let Some(v) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}

/// Middleware on every control-room route but the assets: checks forms (origin and token),
/// finds or starts the session, sends a visitor who has not signed in to the login form, and
/// hands the handler its [`Page`].
pub async fn guard(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let sessions = &app.web.sessions;
    let key_required = app.key.is_some();
    let found = cookie_id(req.headers()).and_then(|id| sessions.find(id));
    let mut req = req;
    if req.method() == Method::POST {
        if !same_origin(req.headers(), req.uri(), app.web.tls) {
            return layout::refusal(
                StatusCode::FORBIDDEN,
                "a form sent from another site is refused",
            );
        }
        let Some((_, csrf, _)) = &found else {
            return layout::refusal(
                StatusCode::FORBIDDEN,
                "your session has ended (or cookies are off): reload the page and send the form again",
            );
        };
        // The body is in memory already (`server/body.rs` read it within the limits).
        let (parts, body) = req.into_parts();
        let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
            return layout::refusal(StatusCode::BAD_REQUEST, "the form could not be read");
        };
        if !form_field(&bytes, CSRF_FIELD).is_some_and(|t| same(t, csrf.as_bytes())) {
            return layout::refusal(
                StatusCode::FORBIDDEN,
                "the form's security token is missing or out of date: reload the page and send it again",
            );
        }
        req = Request::from_parts(parts, Body::from(bytes));
    }
    let (session, csrf, signed_in, cookie) = match found {
        Some((key, csrf, signed_in)) => (key, csrf, signed_in, None),
        None => match sessions.create(!key_required) {
            Ok(s) => (s.key, s.csrf, !key_required, Some(sessions.cookie(&s.id))),
            Err(e) => return no_randomness(e),
        },
    };
    let path = req.uri().path().to_string();
    if key_required && !signed_in && path != "/login" {
        let resp = if req.method() == Method::GET && path != "/events" {
            Redirect::to("/login").into_response()
        } else {
            layout::refusal(StatusCode::UNAUTHORIZED, "sign in first")
        };
        return with_cookie(resp, cookie);
    }
    // A live update's fetch leaves the flash for the page a person loads.
    let shows_flash = req.method() == Method::GET
        && path != "/events"
        && !req.headers().contains_key("x-vine-live");
    let page = Page {
        csrf,
        path,
        signed_in: key_required && signed_in,
        key_required,
        flash: shows_flash.then(|| sessions.take_flash(&session)).flatten(),
        version: app.web.changes.version(),
        session,
    };
    req.extensions_mut().insert(page);
    with_cookie(next.run(req).await, cookie)
}

/// `GET /login`: the key form (straight to the overview when no key is needed or the session
/// is signed in).
pub async fn login_form(page: Page) -> Response {
    if !page.key_required || page.signed_in {
        return Redirect::to("/").into_response();
    }
    login_page(&page, StatusCode::OK, None)
}

fn login_page(page: &Page, status: StatusCode, error: Option<&str>) -> Response {
    layout::page_with_status(
        page,
        status,
        "Sign in",
        html! {
            section.login {
                h1 { "Sign in" }
                p { "This board's server has an API key: enter it once to use the control room." }
                @if let Some(e) = error {
                    p.error role="alert" { (e) }
                }
                form #login method="post" action="/login" {
                    (page.csrf_field())
                    label for="key" { "API key" }
                    input #key type="password" name="key" autocomplete="current-password" required autofocus;
                    button type="submit" { "Sign in" }
                }
            }
        },
    )
}

/// The login form's fields.
#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    key: String,
}

/// `POST /login`: the right key signs the browser in (with a new session id); a wrong one is
/// held by the API's bad-key throttle and shown the form again.
pub async fn login(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    page: Page,
    Form(form): Form<LoginForm>,
) -> Response {
    let Some(key) = &app.key else {
        return Redirect::to("/").into_response();
    };
    if !key.matches(&form.key) {
        app.throttle.hold(peer.ip()).await;
        return login_page(
            &page,
            StatusCode::UNAUTHORIZED,
            Some("That is not the key."),
        );
    }
    let sessions = &app.web.sessions;
    sessions.remove(&page.session);
    match sessions.create(true) {
        Ok(s) => with_cookie(
            Redirect::to("/").into_response(),
            Some(sessions.cookie(&s.id)),
        ),
        Err(e) => no_randomness(e),
    }
}

/// `POST /logout`: ends the session.
pub async fn logout(State(app): State<Arc<App>>, page: Page) -> Response {
    let sessions = &app.web.sessions;
    sessions.remove(&page.session);
    let to = if page.key_required { "/login" } else { "/" };
    with_cookie(
        Redirect::to(to).into_response(),
        Some(sessions.forget_cookie()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_256_random_bits() {
        let a = random_token().unwrap();
        let b = random_token().unwrap();
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn sessions_are_found_by_their_id_only() {
        let s = Sessions::new(false);
        let n = s.create(false).unwrap();
        let (key, csrf, signed_in) = s.find(&n.id).unwrap();
        assert_eq!(
            (key, csrf.as_str(), signed_in),
            (n.key, n.csrf.as_str(), false)
        );
        assert!(s.find(&n.csrf).is_none());
        assert!(s.find(&n.id[..63]).is_none());
        s.remove(&n.key);
        assert!(s.find(&n.id).is_none());
    }

    #[test]
    fn a_flash_is_shown_once() {
        let s = Sessions::new(false);
        let n = s.create(true).unwrap();
        s.set_flash(&n.key, Flash::done("answered"));
        assert_eq!(s.take_flash(&n.key), Some(Flash::done("answered")));
        assert_eq!(s.take_flash(&n.key), None);
    }

    #[test]
    fn cookies_have_their_flags() {
        let plain = Sessions::new(false).cookie("abc");
        assert_eq!(plain, "vine_session=abc; Path=/; HttpOnly; SameSite=Strict");
        let tls = Sessions::new(true).cookie("abc");
        assert!(tls.ends_with("; Secure"), "{tls}");
        assert!(Sessions::new(true).forget_cookie().contains("Max-Age=0"));
    }

    #[test]
    fn the_session_count_is_bounded_and_signed_in_sessions_stay_longest() {
        let s = Sessions::new(false);
        let keep = s.create(true).unwrap();
        for _ in 0..MAX_SESSIONS + 10 {
            s.create(false).unwrap();
        }
        assert_eq!(s.lock().len(), MAX_SESSIONS);
        assert!(s.find(&keep.id).is_some());
    }

    #[test]
    fn cookie_ids_are_read_from_any_cookie_header() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; vine_sessionx=no"),
        );
        h.append(
            header::COOKIE,
            HeaderValue::from_static("b=2; vine_session=abc"),
        );
        assert_eq!(cookie_id(&h), Some("abc"));
        let mut empty = HeaderMap::new();
        empty.append(header::COOKIE, HeaderValue::from_static("vine_session="));
        assert_eq!(cookie_id(&empty), None);
    }

    #[test]
    fn cross_site_posts_are_recognized() {
        let uri: Uri = "/questions/1/answer".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:5555"));
        assert!(same_origin(&h, &uri, false), "no Origin: the token decides");
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:5555"),
        );
        assert!(same_origin(&h, &uri, false));
        assert!(!same_origin(&h, &uri, true), "https page, http origin");
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://evil.example"),
        );
        assert!(!same_origin(&h, &uri, false));
        h.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(!same_origin(&h, &uri, false));
        let mut site = HeaderMap::new();
        site.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(!same_origin(&site, &uri, false));
        site.insert("sec-fetch-site", HeaderValue::from_static("same-site"));
        assert!(!same_origin(&site, &uri, false));
        site.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
        assert!(same_origin(&site, &uri, false));
    }

    #[test]
    fn the_token_field_is_found_in_a_form_body() {
        assert_eq!(form_field(b"a=1&csrf=ab12&b=2", "csrf"), Some(&b"ab12"[..]));
        assert_eq!(form_field(b"xcsrf=1", "csrf"), None);
        assert_eq!(form_field(b"", "csrf"), None);
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"ab"));
    }
}
