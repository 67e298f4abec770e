//! The real-browser test harness (`tests/support/browser.rs`) proved against a small page this
//! test serves itself on 127.0.0.1: a form round trip with hostile text, screenshots at desktop
//! and phone size, cookies, Server-Sent Events, the missing-browser message, and that no
//! Chromium outlives a test that panics.
//!
//! Needs `chromium` and `chromedriver` (`scripts/install-browser.sh`); without them these tests
//! fail with the install command.

#[path = "support/browser.rs"]
mod browser;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Form, State};
use axum::http::header;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use browser::{Browser, Viewport, png_size};
use tokio::sync::broadcast;

/// A string that would run as script if a page inserted it as HTML.
const HOSTILE: &str = "<script>window.pwned = 1</script><b>bold?</b>";

// ---------------------------------------------------------------- the test's own web server

/// A tiny web site on 127.0.0.1: `/` a form, `POST /greet` its answer (which sets a cookie),
/// `/live` a page listening to `/events` (Server-Sent Events the test pushes with
/// [`TestSite::push`]). It stops when dropped.
struct TestSite {
    addr: SocketAddr,
    events: broadcast::Sender<String>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(serde::Deserialize)]
struct Greeting {
    name: String,
}

impl TestSite {
    fn start() -> TestSite {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let addr = listener.local_addr().expect("local address");
        let (events, _) = broadcast::channel::<String>(16);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let app = Router::new()
            .route("/", get(form_page))
            .route("/greet", axum::routing::post(greet))
            .route("/live", get(live_page))
            .route("/events", get(event_stream))
            .with_state(events.clone());
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                // Dropping the server (not a graceful shutdown) also ends open event streams.
                tokio::select! {
                    result = axum::serve(listener, app) => result.expect("test site"),
                    _ = stopped => {}
                }
            });
        });
        TestSite {
            addr,
            events,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// How many pages are listening to `/events`.
    fn listeners(&self) -> usize {
        self.events.receiver_count()
    }

    /// Sends one event to every page listening to `/events`.
    fn push(&self, data: &str) {
        self.events.send(data.to_string()).expect("a page listens");
    }
}

impl Drop for TestSite {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Escapes text for HTML, as the control room's templates will.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn page(title: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title>\
         <style>body{{font-family:sans-serif;margin:1em;background:#f4f6f8}}\
         input,button{{font-size:1.2em}} #greeting{{padding:1em;background:#dfd}}</style>\
         </head><body>{body}</body></html>"
    ))
}

async fn form_page() -> Html<String> {
    page(
        "Form",
        "<h1>Say hello</h1>\
         <form id=\"hello\" method=\"post\" action=\"/greet\">\
         <label>Name <input id=\"name\" name=\"name\" autocomplete=\"off\"></label>\
         <button type=\"submit\">Greet</button></form>",
    )
}

async fn greet(Form(greeting): Form<Greeting>) -> impl IntoResponse {
    let body = format!(
        "<h1>Greeted</h1><p id=\"greeting\">Hello, {}!</p><a href=\"/\">again</a>",
        escape(&greeting.name)
    );
    (
        [(
            header::SET_COOKIE,
            "greeted=yes; Path=/; HttpOnly; SameSite=Strict",
        )],
        page("Greeted", &body),
    )
}

async fn live_page() -> Html<String> {
    page(
        "Live",
        "<h1>Live</h1><p id=\"state\">connecting</p><ul id=\"log\"></ul>\
         <script>\
         const source = new EventSource('/events');\
         source.onopen = () => { document.getElementById('state').textContent = 'open'; };\
         source.onmessage = (e) => {\
           const item = document.createElement('li');\
           item.textContent = e.data;\
           document.getElementById('log').append(item);\
         };\
         </script>",
    )
}

async fn event_stream(
    State(events): State<broadcast::Sender<String>>,
) -> Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>> {
    let receiver = events.subscribe();
    let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
        let data = receiver.recv().await.ok()?;
        Some((Ok(Event::default().data(data)), receiver))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

// ---------------------------------------------------------------- the tests

#[test]
fn form_round_trip_renders_hostile_text_as_text_and_takes_screenshots() {
    let site = TestSite::start();
    let mut b = Browser::start("form_round_trip");
    b.open(&site.url("/"));
    assert_eq!(b.text_of("h1"), "Say hello");

    b.type_into("#name", HOSTILE);
    b.submit("#hello");
    let greeting = b.wait_for_text("#greeting", "Hello,");

    // The markup arrived as text: textContent gives it back verbatim, no element was made
    // from it, and the script never ran.
    assert_eq!(greeting, format!("Hello, {HOSTILE}!"));
    assert_eq!(
        b.text_content("#greeting").as_deref(),
        Some(format!("Hello, {HOSTILE}!").as_str())
    );
    assert_eq!(b.count("#greeting script, #greeting b"), 0);
    assert_eq!(b.eval("return typeof window.pwned;"), "undefined");
    assert!(b.url().ends_with("/greet"), "{}", b.url());

    // The cookie the answer set, with its flags.
    let cookie = b.cookie("greeted").expect("the greeted cookie");
    assert_eq!(cookie.value(), "yes");
    assert_eq!(cookie.http_only(), Some(true));
    assert_eq!(
        cookie.same_site().map(|s| s.to_string()).as_deref(),
        Some("Strict")
    );
    assert_eq!(
        b.eval("return document.cookie;"),
        "",
        "HttpOnly hides it from JS"
    );

    let [desktop, phone] = b.screenshots("greeted");
    for (path, viewport) in [(&desktop, Viewport::Desktop), (&phone, Viewport::Phone)] {
        let bytes = std::fs::read(path).expect("screenshot file");
        assert!(
            bytes.len() > 1000,
            "{} is {} bytes",
            path.display(),
            bytes.len()
        );
        assert_eq!(
            png_size(&bytes),
            Some(viewport.size()),
            "{}",
            path.display()
        );
        let name = format!("greeted-{}.png", viewport.name());
        assert!(
            path.ends_with(format!("form_round_trip/{name}")),
            "{}",
            path.display()
        );
    }
    assert_eq!(b.viewport(), Viewport::Desktop);

    // Layout follows the viewport: at phone size nothing is wider than the phone.
    b.set_viewport(Viewport::Phone);
    assert_eq!(b.eval("return window.innerWidth;"), 390);
    assert_eq!(b.eval("return document.documentElement.scrollWidth;"), 390);
    b.click("a");
    b.wait_for("#hello");
    b.quit();
}

#[test]
fn server_sent_event_reaches_the_page_within_two_seconds() {
    let site = TestSite::start();
    let b = Browser::start("server_sent_events");
    b.open(&site.url("/live"));
    b.wait_until("the page listens to /events", Duration::from_secs(5), |b| {
        site.listeners() > 0 && b.try_text_of("#state").as_deref() == Some("open")
    });

    for n in 1..=3 {
        let sent = Instant::now();
        let text = format!("event {n} <i>not italic</i>");
        site.push(&text);
        b.wait_until(
            &format!("the page shows {text:?}"),
            Duration::from_secs(2),
            |b| b.page_text().contains(&text),
        );
        eprintln!("event {n} shown {:?} after it was sent", sent.elapsed());
    }
    assert_eq!(b.count("#log li"), 3);
    assert_eq!(b.count("#log i"), 0, "event data is inserted as text");
}

#[test]
fn a_failed_wait_names_what_it_waited_for_and_shows_the_page() {
    let site = TestSite::start();
    let b = Browser::start("failed_wait");
    b.open(&site.url("/"));
    let failure = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        b.wait_until("the sky is green", Duration::from_millis(200), |_| false)
    }))
    .expect_err("the wait must fail");
    let message = failure
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(
        message.contains("timed out after 200ms waiting until the sky is green"),
        "{message}"
    );
    assert!(message.contains("Say hello"), "the page's text: {message}");
    assert!(
        message.contains(&site.url("/")),
        "the page's address: {message}"
    );
}

#[test]
fn a_missing_browser_fails_with_the_install_command() {
    let empty = tempfile::tempdir().expect("tempdir");
    let missing = browser::locate_tools(empty.path().as_os_str()).expect_err("nothing on PATH");
    assert_eq!(missing.missing, ["chromium", "chromedriver"]);
    let message = missing.to_string();
    assert!(
        message.contains("sudo apt-get install chromium chromium-driver"),
        "{message}"
    );
    assert!(message.contains("scripts/install-browser.sh"), "{message}");
    assert!(
        message.contains("`chromium` and `chromedriver` were not found"),
        "{message}"
    );

    // Only the driver missing: named alone.
    let bin = tempfile::tempdir().expect("tempdir");
    let chromium = bin.path().join("chromium");
    std::fs::write(&chromium, "#!/bin/sh\n").expect("write");
    let executable = std::os::unix::fs::PermissionsExt::from_mode(0o755);
    std::fs::set_permissions(&chromium, executable).expect("chmod");
    let missing = browser::locate_tools(bin.path().as_os_str()).expect_err("no driver");
    assert_eq!(missing.missing, ["chromedriver"]);
    assert!(missing.to_string().contains("`chromedriver` was not found"));
}

#[test]
#[should_panic(expected = "sudo apt-get install chromium chromium-driver")]
fn starting_with_a_driver_that_is_not_there_fails_with_the_install_command() {
    let tools = browser::Tools {
        chromium: "/nonexistent/chromium".into(),
        chromedriver: "/nonexistent/chromedriver".into(),
    };
    Browser::start_with("missing_driver", &tools);
}

/// The live processes of process group `group` (zombies count as ended).
fn processes_in_group(group: u32) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid pgrp ...; comm may hold spaces and parentheses.
        let Some((head, rest)) = stat.rsplit_once(") ") else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let comm = head.split_once(" (").map(|(_, c)| c).unwrap_or_default();
        if fields.first() != Some(&"Z") && fields.get(2) == Some(&group.to_string().as_str()) {
            found.push((pid, comm.to_string()));
        }
    }
    found
}

#[test]
fn a_panicking_test_leaves_no_browser_running() {
    let site = TestSite::start();
    let b = Browser::start("panicking_test");
    b.open(&site.url("/"));
    let group = b.driver_pid();
    let running = processes_in_group(group);
    assert!(
        running
            .iter()
            .any(|(pid, name)| *pid != group && name.starts_with("chromium")),
        "Chromium runs in chromedriver's process group: {running:?}"
    );

    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let _b = b;
        panic!("a test fails while the browser is open");
    }));
    assert!(outcome.is_err());

    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = processes_in_group(group);
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still running after the panic: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
