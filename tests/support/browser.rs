//! A real browser for integration tests: headless Chromium driven through WebDriver
//! (`chromedriver`, via the `fantoccini` crate), behind a small blocking API.
//!
//! ```ignore
//! #[path = "support/browser.rs"]
//! mod browser;
//! let mut b = browser::Browser::start("login_page");
//! b.open(&format!("{base}/login"));
//! b.type_into("#key", "secret");
//! b.submit("form");
//! b.wait_for_text("h1", "Overview");
//! b.screenshots("overview"); // target/screenshots/login_page/overview-{desktop,phone}.png
//! ```
//!
//! Each [`Browser`] starts its own `chromedriver` on a free port (`--port=0`, the port it
//! reports) in its own process group, with a fresh Chromium profile; dropping it — also while a
//! test panics — ends the session and kills the whole group, so no Chromium outlives its test.
//! A missing `chromium` or `chromedriver` fails the test with the command that installs them.
#![allow(dead_code)]

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use fantoccini::cookies::Cookie;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

/// What a person runs to get the browser these tests need.
pub const INSTALL_HINT: &str =
    "sudo apt-get install chromium chromium-driver   (or: scripts/install-browser.sh)";

/// How long `chromedriver` may take to say which port it listens on.
const DRIVER_START: Duration = Duration::from_secs(15);
/// How long one WebDriver command (including starting Chromium) may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// Tries of a click or a submit whose element a live update replaced under it.
const STALE_TRIES: usize = 5;
/// How long reading the page for a failure message may take.
const REPORT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long closing the session may take when the browser is dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often [`Browser::wait_until`] checks its condition.
const POLL: Duration = Duration::from_millis(50);
/// The default timeout of the `wait_for_*` helpers.
pub const WAIT: Duration = Duration::from_secs(5);
/// At most this much of the page's text goes into a failure message.
const PAGE_TEXT_LIMIT: usize = 4000;

/// Flags this machine needs: no sandbox (root, containers), no GPU, and no background
/// networking — on a closed network Chromium's own connections are refused and slow it down.
const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--mute-audio",
];

/// The size of the page area the browser shows: what a screenshot captures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Viewport {
    /// A laptop screen: 1280×800.
    Desktop,
    /// A phone held upright: 390×844.
    Phone,
}

impl Viewport {
    /// Width and height in CSS pixels.
    pub fn size(self) -> (u32, u32) {
        match self {
            Viewport::Desktop => (1280, 800),
            Viewport::Phone => (390, 844),
        }
    }

    /// The name used in screenshot file names.
    pub fn name(self) -> &'static str {
        match self {
            Viewport::Desktop => "desktop",
            Viewport::Phone => "phone",
        }
    }
}

/// The two programs the browser tests run, found on PATH.
#[derive(Clone, Debug)]
pub struct Tools {
    /// The Chromium binary (Debian: `/usr/bin/chromium`).
    pub chromium: PathBuf,
    /// The WebDriver server (Debian's `chromium-driver`: `/usr/bin/chromedriver`).
    pub chromedriver: PathBuf,
}

/// `chromium` or `chromedriver` is not installed; its `Display` says how to install them.
#[derive(Clone, Debug)]
pub struct MissingBrowser {
    /// The programs not found.
    pub missing: Vec<&'static str>,
}

impl fmt::Display for MissingBrowser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "this test needs a real browser, but {} not found on PATH. Install them with:\n    \
             {INSTALL_HINT}",
            self.missing
                .iter()
                .map(|m| format!("`{m}`"))
                .collect::<Vec<_>>()
                .join(" and ")
                + if self.missing.len() > 1 {
                    " were"
                } else {
                    " was"
                }
        )
    }
}

/// Finds `chromium` and `chromedriver` in the directories of `path` (a PATH value).
pub fn locate_tools(path: &OsStr) -> Result<Tools, MissingBrowser> {
    let find = |name: &str| {
        std::env::split_paths(path)
            .map(|dir| dir.join(name))
            .find(|candidate| is_executable(candidate))
    };
    let chromium = find("chromium");
    let chromedriver = find("chromedriver");
    match (chromium, chromedriver) {
        (Some(chromium), Some(chromedriver)) => Ok(Tools {
            chromium,
            chromedriver,
        }),
        (chromium, chromedriver) => {
            let mut missing = Vec::new();
            if chromium.is_none() {
                missing.push("chromium");
            }
            if chromedriver.is_none() {
                missing.push("chromedriver");
            }
            Err(MissingBrowser { missing })
        }
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A headless Chromium session for one test. Every method waits for its WebDriver command
/// and panics — failing the test — with what went wrong and the page's text.
pub struct Browser {
    test: String,
    runtime: tokio::runtime::Runtime,
    client: Option<Client>,
    driver: Child,
    viewport: Viewport,
    /// How much larger than its page area the window is, once measured.
    window_extra: Option<(u32, u32)>,
    profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a fresh headless Chromium at the desktop size. `test` names the
    /// folder its screenshots go to (`target/screenshots/<test>/`). Panics with the install
    /// command when `chromium` or `chromedriver` is missing.
    pub fn start(test: &str) -> Browser {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let tools = locate_tools(&path).unwrap_or_else(|missing| panic!("{missing}"));
        Browser::start_with(test, &tools)
    }

    /// [`Browser::start`] with given programs.
    pub fn start_with(test: &str, tools: &Tools) -> Browser {
        let profile = tempfile::Builder::new()
            .prefix("vine-browser-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a Chromium profile directory: {e}"));
        let (driver, port) = start_driver(&tools.chromedriver, profile.path());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("cannot start a tokio runtime for the browser: {e}"));
        let mut browser = Browser {
            test: test.to_string(),
            runtime,
            client: None,
            driver,
            viewport: Viewport::Desktop,
            window_extra: None,
            profile,
        };
        let capabilities = capabilities(&tools.chromium, &browser.profile.path().join("profile"));
        let url = format!("http://127.0.0.1:{port}");
        let connect = async {
            ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                .capabilities(capabilities)
                .connect(&url)
                .await
        };
        let client = match browser
            .runtime
            .block_on(async { tokio::time::timeout(COMMAND_TIMEOUT, connect).await })
        {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => panic!(
                "chromedriver ({}) could not start Chromium ({}): {e}\n{}",
                tools.chromedriver.display(),
                tools.chromium.display(),
                browser.driver_log()
            ),
            Err(_) => panic!(
                "Chromium did not start within {COMMAND_TIMEOUT:?}\n{}",
                browser.driver_log()
            ),
        };
        browser.client = Some(client);
        browser.set_viewport(Viewport::Desktop);
        browser
    }

    fn client(&self) -> &Client {
        self.client
            .as_ref()
            .unwrap_or_else(|| panic!("the browser session is closed"))
    }

    /// Runs one WebDriver call to completion, failing the test (with the page's text) if it
    /// errs or takes longer than 30 s.
    fn run<T, E: fmt::Display>(&self, what: &str, call: impl Future<Output = Result<T, E>>) -> T {
        match self.try_run(call) {
            Ok(value) => value,
            Err(e) => panic!("browser: {what} failed: {e}\n{}", self.page_report()),
        }
    }

    fn try_run<T, E: fmt::Display>(
        &self,
        call: impl Future<Output = Result<T, E>>,
    ) -> Result<T, String> {
        self.try_run_within(COMMAND_TIMEOUT, call)
    }

    fn try_run_within<T, E: fmt::Display>(
        &self,
        limit: Duration,
        call: impl Future<Output = Result<T, E>>,
    ) -> Result<T, String> {
        match self
            .runtime
            .block_on(async { tokio::time::timeout(limit, call).await })
        {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer from the browser within {limit:?}")),
        }
    }

    /// Opens `url` and waits until the page has loaded.
    pub fn open(&self, url: &str) {
        self.run(&format!("opening {url}"), self.client().goto(url));
    }

    /// The address of the page shown now.
    pub fn url(&self) -> String {
        self.run("reading the URL", self.client().current_url())
            .to_string()
    }

    /// Whether an element matches the CSS selector now.
    pub fn exists(&self, css: &str) -> bool {
        self.try_run(self.client().find(Locator::Css(css))).is_ok()
    }

    /// How many elements match the CSS selector now.
    pub fn count(&self, css: &str) -> usize {
        self.run(
            &format!("finding all {css:?}"),
            self.client().find_all(Locator::Css(css)),
        )
        .len()
    }

    fn find(&self, css: &str) -> fantoccini::elements::Element {
        self.run(
            &format!("finding {css:?}"),
            self.client().find(Locator::Css(css)),
        )
    }

    /// The visible text of the first element matching `css` (as a person sees it).
    pub fn text_of(&self, css: &str) -> String {
        // A live update may replace the element between finding and reading it (a stale
        // element): it is found again, a few times, before a failure is reported.
        for _ in 0..5 {
            if let Some(text) = self.try_text_of(css) {
                return text;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let element = self.find(css);
        self.run(&format!("reading the text of {css:?}"), element.text())
    }

    /// [`Browser::text_of`], or `None` when nothing matches (or the page is changing): for
    /// conditions of [`Browser::wait_until`], which must not fail while a page loads.
    pub fn try_text_of(&self, css: &str) -> Option<String> {
        self.try_run(async {
            let element = self.client().find(Locator::Css(css)).await?;
            element.text().await
        })
        .ok()
    }

    /// The `textContent` of the first element matching `css`: its text with markup stripped,
    /// hidden parts included. `None` when nothing matches.
    pub fn text_content(&self, css: &str) -> Option<String> {
        let value = self.eval_with(
            "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;",
            vec![json!(css)],
        );
        value.as_str().map(str::to_string)
    }

    /// The `innerHTML` of the first element matching `css`.
    pub fn inner_html(&self, css: &str) -> String {
        let element = self.find(css);
        self.run(&format!("reading the HTML of {css:?}"), element.html(true))
    }

    /// The value of attribute `name` of the first element matching `css`.
    pub fn attr(&self, css: &str, name: &str) -> Option<String> {
        let element = self.find(css);
        self.run(
            &format!("reading attribute {name} of {css:?}"),
            element.attr(name),
        )
    }

    /// Clicks the first element matching `css`. A live update may replace the page's main
    /// part between finding the element and clicking it (the element goes stale); the click
    /// is then made on the element now there, as a person's click lands on what is shown.
    pub fn click(&self, css: &str) {
        self.on_fresh(&format!("clicking {css:?}"), || async {
            self.client().find(Locator::Css(css)).await?.click().await
        });
    }

    /// Runs `act` (which finds its element itself), again while it fails only because a live
    /// update replaced the element it found; fails the test on any other error, or after
    /// [`STALE_TRIES`] stale ones.
    fn on_fresh<T, F: Future<Output = Result<T, fantoccini::error::CmdError>>>(
        &self,
        what: &str,
        act: impl Fn() -> F,
    ) -> T {
        let mut tries = 0;
        loop {
            match self.try_run(act()) {
                Ok(value) => return value,
                Err(e) if e.contains("stale element") && tries + 1 < STALE_TRIES => tries += 1,
                Err(e) => panic!("browser: {what} failed: {e}\n{}", self.page_report()),
            }
        }
    }

    /// Types `text` into the field matching `css` (after what it already holds), key by key.
    pub fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css);
        self.run(&format!("typing into {css:?}"), element.send_keys(text));
    }

    /// Empties the field matching `css`.
    pub fn clear(&self, css: &str) {
        let element = self.find(css);
        self.run(&format!("clearing {css:?}"), element.clear());
    }

    /// Submits the form matching `css` by clicking its submit button, as a person would (on
    /// the form now shown, if a live update replaced it meanwhile: see [`Browser::click`]).
    pub fn submit(&self, css: &str) {
        self.on_fresh(&format!("submitting {css:?}"), || async {
            self.client().form(Locator::Css(css)).await?.submit().await
        });
    }

    /// Runs JavaScript in the page and returns what it `return`s (as JSON).
    pub fn eval(&self, js: &str) -> Value {
        self.eval_with(js, Vec::new())
    }

    /// [`Browser::eval`] with `arguments[0..]` set to `args`.
    pub fn eval_with(&self, js: &str, args: Vec<Value>) -> Value {
        self.run("running JavaScript", self.client().execute(js, args))
    }

    /// The whole page's visible text (`document.body.innerText`).
    pub fn page_text(&self) -> String {
        self.try_page_text(COMMAND_TIMEOUT).unwrap_or_default()
    }

    fn try_page_text(&self, limit: Duration) -> Result<String, String> {
        let js = "return document.body ? document.body.innerText \
                  : document.documentElement.outerHTML;";
        self.try_run_within(limit, self.client().execute(js, Vec::new()))
            .map(|v| v.as_str().unwrap_or_default().to_string())
    }

    /// Where the browser is and what its page says, for failure messages (quickly: the
    /// browser may be what failed).
    fn page_report(&self) -> String {
        let url = self
            .try_run_within(REPORT_TIMEOUT, self.client().current_url())
            .map(|u| u.to_string())
            .unwrap_or_else(|e| format!("(unknown: {e})"));
        let text = match self.try_page_text(REPORT_TIMEOUT) {
            Ok(text) => truncate(&text, PAGE_TEXT_LIMIT),
            Err(e) => format!("(cannot read it: {e})"),
        };
        format!("page {url} says:\n---\n{text}\n---")
    }

    /// Waits until `ready` returns true, checking every 50 ms; after `timeout` the test fails
    /// with `what` it waited for and the page's text. `ready` should use the methods that do
    /// not fail while a page changes: [`Browser::exists`], [`Browser::try_text_of`],
    /// [`Browser::page_text`].
    pub fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        mut ready: impl FnMut(&Browser) -> bool,
    ) {
        let start = Instant::now();
        loop {
            if ready(self) {
                return;
            }
            if start.elapsed() >= timeout {
                panic!(
                    "browser: timed out after {timeout:?} waiting until {what}\n{}",
                    self.page_report()
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// Waits (up to 5 s) until an element matches `css`.
    pub fn wait_for(&self, css: &str) {
        self.wait_until(&format!("{css:?} is on the page"), WAIT, |b| b.exists(css));
    }

    /// Waits (up to 5 s) until the element matching `css` shows text containing `needle`;
    /// returns its whole text.
    pub fn wait_for_text(&self, css: &str, needle: &str) -> String {
        let mut seen = String::new();
        self.wait_until(&format!("{css:?} shows {needle:?}"), WAIT, |b| {
            seen = b.try_text_of(css).unwrap_or_default();
            seen.contains(needle)
        });
        seen
    }

    /// The viewport in use.
    pub fn viewport(&self) -> Viewport {
        self.viewport
    }

    /// Resizes the browser so that the page area is exactly `viewport`'s size.
    pub fn set_viewport(&mut self, viewport: Viewport) {
        let (width, height) = viewport.size();
        // Even headless, the window is larger than its page area (by a toolbar's height):
        // size it with the difference measured the first time.
        let (extra_w, extra_h) = self.window_extra.unwrap_or((0, 0));
        self.run(
            "resizing the window",
            self.client()
                .set_window_size(width + extra_w, height + extra_h),
        );
        let inner = self.inner_size();
        if inner != (width, height) {
            let extra = (
                (width + extra_w).saturating_sub(inner.0),
                (height + extra_h).saturating_sub(inner.1),
            );
            self.run(
                "resizing the window",
                self.client()
                    .set_window_size(width + extra.0, height + extra.1),
            );
            let inner = self.inner_size();
            assert_eq!(
                inner,
                (width, height),
                "browser: cannot make the page area {width}×{height}"
            );
            self.window_extra = Some(extra);
        }
        self.viewport = viewport;
    }

    fn inner_size(&self) -> (u32, u32) {
        let size = self.eval("return [window.innerWidth, window.innerHeight];");
        let get = |i: usize| {
            size.get(i)
                .and_then(Value::as_u64)
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(0)
        };
        (get(0), get(1))
    }

    /// A PNG of the page area as it is now, saved as
    /// `target/screenshots/<test>/<name>-<desktop|phone>.png`; returns its path.
    pub fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.run("taking a screenshot", self.client().screenshot());
        let dir = screenshot_dir().join(&self.test);
        let path = dir.join(format!("{name}-{}.png", self.viewport.name()));
        std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(&path, &png))
            .unwrap_or_else(|e| panic!("cannot save the screenshot {}: {e}", path.display()));
        path
    }

    /// Screenshots at the desktop and at the phone size (the page is laid out again for each);
    /// leaves the browser at the viewport it had. Returns `[desktop, phone]`.
    pub fn screenshots(&mut self, name: &str) -> [PathBuf; 2] {
        let before = self.viewport;
        self.set_viewport(Viewport::Desktop);
        let desktop = self.screenshot(name);
        self.set_viewport(Viewport::Phone);
        let phone = self.screenshot(name);
        self.set_viewport(before);
        [desktop, phone]
    }

    /// The cookies the browser holds for the page shown now.
    pub fn cookies(&self) -> Vec<Cookie<'static>> {
        self.run("reading cookies", self.client().get_all_cookies())
    }

    /// The cookie called `name` for the page shown now, if there is one.
    pub fn cookie(&self, name: &str) -> Option<Cookie<'static>> {
        self.cookies().into_iter().find(|c| c.name() == name)
    }

    /// Forgets every cookie of the page shown now (log out, in effect).
    pub fn delete_cookies(&self) {
        self.run("deleting cookies", self.client().delete_all_cookies());
    }

    /// The process id of chromedriver, which is also the id of the process group that holds it
    /// and the Chromium it started.
    pub fn driver_pid(&self) -> u32 {
        self.driver.id()
    }

    /// Ends the session and the browser now (dropping the `Browser` does the same).
    pub fn quit(self) {}

    fn driver_log(&self) -> String {
        let log = self.profile.path().join("chromedriver.log");
        match std::fs::read_to_string(&log) {
            Ok(text) => format!(
                "chromedriver's log ends with:\n{}",
                tail(&text, PAGE_TEXT_LIMIT)
            ),
            Err(_) => String::new(),
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            // Closing the session makes chromedriver quit Chromium cleanly.
            let _ = self
                .runtime
                .block_on(async { tokio::time::timeout(CLOSE_TIMEOUT, client.close()).await });
        }
        // Whatever is left — chromedriver, and Chromium if closing failed — is in the
        // driver's process group.
        if let Ok(pid) = i32::try_from(self.driver.id()) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.driver.wait();
    }
}

/// Starts chromedriver on a port of its choosing in a process group of its own; returns it and
/// the port it reported.
fn start_driver(chromedriver: &Path, scratch: &Path) -> (Child, u16) {
    let mut log_path = OsString::from("--log-path=");
    log_path.push(scratch.join("chromedriver.log"));
    let mut driver = Command::new(chromedriver)
        .arg("--port=0")
        .arg(log_path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {}: {e}. Install it with:\n    {INSTALL_HINT}",
                chromedriver.display()
            )
        });
    let Some(stdout) = driver.stdout.take() else {
        panic!("chromedriver's output is not readable")
    };
    let (tx, rx) = mpsc::channel();
    // Reads chromedriver's output to the end, so that it never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(port) = reported_port(&line) {
                let _ = tx.send(port);
            }
        }
    });
    match rx.recv_timeout(DRIVER_START) {
        Ok(port) => (driver, port),
        Err(_) => {
            let status = driver.try_wait().ok().flatten();
            let _ = driver.kill();
            let _ = driver.wait();
            panic!(
                "chromedriver ({}) did not report a port within {DRIVER_START:?} (exit: {status:?})",
                chromedriver.display()
            )
        }
    }
}

/// The port in chromedriver's "ChromeDriver was started successfully on port 12345." line.
fn reported_port(line: &str) -> Option<u16> {
    let rest = line.split("started successfully on port ").nth(1)?;
    rest.trim().trim_end_matches('.').parse().ok()
}

/// What chromedriver is asked for: headless Chromium with this machine's flags and a fresh
/// profile.
fn capabilities(chromium: &Path, profile: &Path) -> serde_json::Map<String, Value> {
    let (width, height) = Viewport::Desktop.size();
    let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|f| f.to_string()).collect();
    args.push(format!("--user-data-dir={}", profile.display()));
    args.push(format!("--window-size={width},{height}"));
    let caps = json!({
        "browserName": "chrome",
        "pageLoadStrategy": "normal",
        "goog:chromeOptions": {
            "binary": chromium.to_string_lossy(),
            "args": args,
        },
    });
    match caps {
        Value::Object(map) => map,
        _ => unreachable!("a JSON object literal"),
    }
}

/// `target/screenshots` of this crate (or of `CARGO_TARGET_DIR`).
pub fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("screenshots")
}

/// Width and height of a PNG, from its header; `None` if `bytes` is not a PNG.
pub fn png_size(bytes: &[u8]) -> Option<(u32, u32)> {
    const SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
    if bytes.len() < 24 || !bytes.starts_with(SIGNATURE) || &bytes[12..16] != b"IHDR" {
        return None;
    }
    let word =
        |at: usize| u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    Some((word(16), word(20)))
}

fn truncate(text: &str, limit: usize) -> String {
    match text.char_indices().nth(limit) {
        Some((cut, _)) => format!("{}… ({} more bytes)", &text[..cut], text.len() - cut),
        None => text.to_string(),
    }
}

fn tail(text: &str, limit: usize) -> String {
    let count = text.chars().count();
    text.chars().skip(count.saturating_sub(limit)).collect()
}
