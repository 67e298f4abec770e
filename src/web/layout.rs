//! The frame of every control-room page (head, navigation, flash message, `<main>`), small
//! pieces pages share (times, task links, state badges), and the security headers every
//! control-room reply carries, the strict Content-Security-Policy among them.
//!
//! Pages are maud templates: every value is escaped unless wrapped in `PreEscaped`, which is
//! never used on text from the board (only on the sanitized Markdown of `markdown.rs`).

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};

use super::assets::{CSS, JS};
use super::session::{FlashKind, Page};
use crate::time::{Timestamp, format_duration, format_timestamp, secs_between};

/// The Content-Security-Policy of every control-room reply: scripts and styles only from this
/// server's own files (no inline script, no `style=` attribute, no `on*=` handler), images
/// from it or `data:` (the charts are inline SVG), connections (the live updates) to it only,
/// forms posting only to it, and no page may frame the control room.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
     base-uri 'none'";

/// The sections of the navigation: (path, label).
pub const NAV: &[(&str, &str)] = &[
    ("/", "Overview"),
    ("/questions", "Questions"),
    ("/tasks", "Tasks"),
    ("/workers", "Workers"),
    ("/messages", "Messages"),
    ("/sessions", "Sessions"),
];

/// A whole page: the frame around `content`, which becomes the page's `<main>` (what the live
/// updates swap). `title` names the page in the tab.
pub fn page(page: &Page, title: &str, content: Markup) -> Response {
    page_with_status(page, StatusCode::OK, title, content)
}

/// [`page`] with another HTTP status (an error page, a refused form).
pub fn page_with_status(page: &Page, status: StatusCode, title: &str, content: Markup) -> Response {
    let body = html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                header.top {
                    a.brand href="/" { "vine" span.sub { " control room" } }
                    @if !page.key_required || page.signed_in {
                        nav aria-label="Sections" {
                            @for (path, label) in NAV {
                                @let here = is_current(&page.path, path);
                                a href=(path) aria-current=[here.then_some("page")] { (label) }
                            }
                        }
                    }
                    span #live .live title="Live updates" { "" }
                    @if page.signed_in {
                        form.logout method="post" action="/logout" {
                            (page.csrf_field())
                            button type="submit" { "Log out" }
                        }
                    }
                }
                @if let Some(f) = &page.flash {
                    p.flash.ok[f.kind == FlashKind::Done].error[f.kind == FlashKind::Failed]
                        role="status" { (f.text) }
                }
                // Signed out, there is nothing to follow (the stream would refuse).
                @let live = !page.key_required || page.signed_in;
                main #main data-version=(page.version.to_string())
                    data-live=[(!live).then_some("off")] { (content) }
            }
        }
    };
    (status, Html(body.into_string())).into_response()
}

/// A page for a refusal before any session exists (a cross-origin form, a stale token): the
/// frame without navigation or forms.
pub fn refusal(status: StatusCode, message: &str) -> Response {
    let body = html! {
        (DOCTYPE)
        html lang="en" {
            (head("Refused"))
            body {
                header.top { a.brand href="/" { "vine" span.sub { " control room" } } }
                main #main data-live="off" {
                    h1 { "Refused" }
                    p.error { (message) }
                    p { a href="/" { "Back to the overview" } }
                }
            }
        }
    };
    (status, Html(body.into_string())).into_response()
}

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            meta name="referrer" content="same-origin";
            title { (title) " · vine control room" }
            link rel="icon" href="data:,";
            link rel="stylesheet" href=(CSS.url());
            script src=(JS.url()) defer {}
        }
    }
}

/// True when `current` (a request path) is within the section at `section`.
fn is_current(current: &str, section: &str) -> bool {
    if section == "/" {
        return current == "/";
    }
    current == section
        || current
            .strip_prefix(section)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Middleware on every control-room route: the security headers. Pages are not cached (they
/// hold the form token); the assets set their own long cache.
pub async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

/// A moment as people read it: "3m ago" (or "in 2m"), with the exact time on hover.
pub fn ago(t: Option<Timestamp>, now: Timestamp) -> Markup {
    match t {
        None => html! { span.muted { "never" } },
        Some(t) => {
            let exact = format_timestamp(&t);
            let text = if t <= now {
                match secs_between(t, now) {
                    0..=1 => "just now".to_string(),
                    s => format!("{} ago", format_duration(round_secs(s))),
                }
            } else {
                format!("in {}", format_duration(round_secs(secs_between(now, t))))
            };
            html! { time datetime=(exact) title=(exact) { (text) } }
        }
    }
}

/// A duration as people read it, rounded to its two largest units ("1h5m", not "1h5m12s").
pub fn duration(secs: u64) -> String {
    format_duration(round_secs(secs))
}

/// Drops the units below the two largest: 3725 s (1h2m5s) becomes 3720 s.
fn round_secs(secs: u64) -> u64 {
    match secs {
        0..3600 => secs,
        3600..86_400 => secs - secs % 60,
        _ => secs - secs % 3600,
    }
}

/// A link to a task's page: `#ID`.
pub fn task_link(id: u64) -> Markup {
    html! { a.task href={ "/tasks/" (id) } { "#" (id) } }
}

/// A badge naming a state or status, coloured by it (`badge s-working`, `badge s-failed`).
pub fn badge(name: &str) -> Markup {
    html! { span class={ "badge s-" (name) } { (name.replace('_', " ")) } }
}

/// At most `max` characters of `text`, with "…" when cut (for one-line previews).
pub fn preview(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_current_section_is_found_by_path_prefix() {
        assert!(is_current("/", "/"));
        assert!(!is_current("/tasks", "/"));
        assert!(is_current("/tasks", "/tasks"));
        assert!(is_current("/tasks/12", "/tasks"));
        assert!(!is_current("/tasksx", "/tasks"));
    }

    #[test]
    fn durations_keep_their_two_largest_units() {
        assert_eq!(duration(59), "59s");
        assert_eq!(duration(3725), "1h2m");
        assert_eq!(duration(90_061), "1d1h");
    }

    #[test]
    fn previews_cut_on_characters() {
        assert_eq!(preview("héllo", 2), "hé…");
        assert_eq!(preview("hi", 2), "hi");
    }

    #[test]
    fn board_text_is_escaped() {
        let m = badge("<script>");
        assert!(!m.into_string().contains("<script>"));
    }
}
