//! `vine serve`: the VPS. One process serves the board in its base directory and the original
//! plan's file and command API over HTTP (optionally HTTPS), behind an API key.
//!
//! Routes (see `openapi.json`, served at `/openapi.json`):
//! `GET /test`, `GET /list`, `GET /read`, `POST /deploy`, `POST /execute` (the original API),
//! `GET /search/files`, `GET /search/content`, `POST /v1/op` (one board op per request,
//! atomic on the server, batched into group commits), `POST /v1/batch` (several, as the
//! servers of one PostgreSQL board hand their changes to the one that leads), and
//! `GET /metrics` (the board's figures for Prometheus). The control room (`crate::web`: `/`,
//! `/questions`, `/login`, `/events`, `/assets/...`) is merged in beside them, behind its own
//! login.

mod auth;
mod board;
mod body;
mod exec;
mod files;
mod forward;
pub mod metrics;
mod reply;
mod supervisor;

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};

use crate::apikey::ApiKey;
use crate::error::{Error, Result};
use crate::store::BatchStore;
use crate::store::local::{LocalStore, LockGuard};

pub use supervisor::{SUPERVISOR_ARG, supervise};

/// The OpenAPI document of the whole API.
pub const OPENAPI: &str = include_str!("openapi.json");

/// Every route the server answers: (method, path). Kept equal to `openapi.json` by a test.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/test"),
    ("GET", "/openapi.json"),
    ("GET", "/list"),
    ("GET", "/read"),
    ("POST", "/deploy"),
    ("POST", "/execute"),
    ("GET", "/search/files"),
    ("GET", "/search/content"),
    ("POST", "/v1/op"),
    ("POST", "/v1/batch"),
    ("GET", "/metrics"),
];

/// Board files at the top of the base directory: a `/deploy` over one of them is written
/// under the board lock and must parse (the lock file itself cannot be deployed over).
const BOARD_FILES: &[&str] = &[
    crate::store::paths::QUEUE,
    crate::store::paths::WORKERS,
    crate::store::paths::PROGRESS,
    crate::store::paths::SESSIONS,
    crate::store::paths::BOARD,
    crate::store::paths::LOG,
    crate::store::paths::ARCHIVE,
];

/// Limits and switches of `/execute`.
#[derive(Debug, Clone)]
pub struct ExecConfig {
    /// Whether `/execute` runs commands at all (`--no-exec` turns it off).
    pub enabled: bool,
    /// A command, and every process it started, is killed after this long.
    pub timeout: Duration,
    /// Bytes of stdout and of stderr kept per command; the rest is dropped.
    pub max_output: usize,
    /// Commands running at once; more are refused with 429.
    pub max_concurrent: usize,
    /// The program each command runs under: started with [`SUPERVISOR_ARG`], it must call
    /// [`supervise`] (`vine` does). Default: this very program (`/proc/self/exe`). `serve`
    /// checks it at startup and refuses to start with `/execute` on if it does not answer.
    pub supervisor: PathBuf,
}

impl Default for ExecConfig {
    fn default() -> Self {
        ExecConfig {
            enabled: true,
            timeout: Duration::from_secs(60),
            max_output: 1024 * 1024,
            max_concurrent: 4,
            supervisor: this_program(),
        }
    }
}

/// The running program, as the supervisor of `/execute` commands.
fn this_program() -> PathBuf {
    if cfg!(target_os = "linux") {
        // Still the right program if its file was replaced or deleted since it started.
        PathBuf::from("/proc/self/exe")
    } else {
        std::env::current_exe().unwrap_or_else(|_| PathBuf::from("vine"))
    }
}

/// How `vine serve` runs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The base directory: the board's files live at its top level; every path is confined to it.
    pub root: PathBuf,
    /// Where to listen.
    pub listen: SocketAddr,
    /// The API key; required unless listening on loopback.
    pub key: Option<ApiKey>,
    /// PEM certificate chain and private key, for HTTPS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// `/execute` settings.
    pub exec: ExecConfig,
    /// Largest request body, in bytes.
    pub max_body: usize,
    /// A request body must have arrived whole within this long (else 408).
    pub body_timeout: Duration,
    /// Largest file `/read` returns, in bytes.
    pub max_read: usize,
    /// Serve only the original plan's four endpoints (a stand-in for the original server).
    pub original_only: bool,
    /// Try to open the control room in a web browser once listening (`--open`).
    pub open_browser: bool,
    /// Where the board is kept when not in files at the top of `root`: a PostgreSQL
    /// connection string (`--store`, `$VINE_STORE`).
    pub store: Option<String>,
    /// Where the other servers of a board in PostgreSQL reach this one, so it can lead them
    /// (`--advertise`).
    pub advertise: Advertise,
}

/// Where the other servers of the same board (in PostgreSQL) reach this one: the server that
/// leads commits the changes the others hand it (`forward.rs`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Advertise {
    /// At the address it listens on, when that is one address (not 0.0.0.0 or ::).
    #[default]
    Listen,
    /// At this URL (`--advertise URL`).
    At(String),
    /// Nowhere: it never leads (it still hands its changes to a server that does).
    Never,
}

impl Advertise {
    /// The URL to stand for the lead with, for a server listening at `local`.
    fn url(&self, scheme: &str, local: SocketAddr) -> Option<String> {
        match self {
            Advertise::Listen if local.ip().is_unspecified() => None,
            Advertise::Listen => Some(format!("{scheme}://{local}")),
            Advertise::At(url) => Some(url.clone()),
            Advertise::Never => None,
        }
    }
}

impl ServeConfig {
    /// A configuration with default limits.
    pub fn new(root: PathBuf, listen: SocketAddr) -> Self {
        ServeConfig {
            root,
            listen,
            key: None,
            tls: None,
            exec: ExecConfig::default(),
            max_body: 16 * 1024 * 1024,
            body_timeout: Duration::from_secs(30),
            max_read: 16 * 1024 * 1024,
            original_only: false,
            open_browser: false,
            store: None,
            advertise: Advertise::Listen,
        }
    }
}

/// What every handler shares.
pub(crate) struct App {
    pub(crate) root: PathBuf,
    /// The board, in files or in PostgreSQL (absent with `--original-only`: the original
    /// server creates no board; one is made with `vine --url URL init`).
    pub(crate) store: Option<Arc<dyn BatchStore>>,
    pub(crate) key: Option<ApiKey>,
    pub(crate) exec: ExecConfig,
    pub(crate) exec_slots: Arc<tokio::sync::Semaphore>,
    pub(crate) throttle: auth::Throttle,
    pub(crate) batcher: Option<board::Batcher>,
    pub(crate) max_read: usize,
    pub(crate) max_body: usize,
    pub(crate) body_timeout: Duration,
    pub(crate) original_only: bool,
    /// The control room's sessions and change signals.
    pub(crate) web: crate::web::ControlRoom,
    /// Ops handed to the server that leads (a board in PostgreSQL).
    pub(crate) handed: Arc<forward::Handed>,
}

impl App {
    /// Takes the board lock for a write beside the board's own ops (a deploy over a board
    /// file). Without a board of its own (`--original-only`) the server locks the board made
    /// in its base directory since it started, if there is one; with no board there is no
    /// other writer to exclude. A board not kept in files has no lock file (the caller
    /// refuses such writes first, see `files::deploy`).
    pub(crate) fn board_lock(&self) -> Result<Option<LockGuard<'_>>> {
        match &self.store {
            Some(s) => s.files().map(LocalStore::lock).transpose(),
            None => match LocalStore::open(&self.root) {
                Ok(s) => crate::store::lock::lock(s.dir()).map(Some),
                Err(Error::NoBoard(_)) => Ok(None),
                Err(e) => Err(e),
            },
        }
    }
}

/// Runs the server until the process is stopped. Prints `listening on URL` once ready, then
/// (with a board) `control room: URL/`.
pub fn serve(cfg: ServeConfig) -> Result<()> {
    if cfg.key.is_none() && !cfg.listen.ip().is_loopback() {
        return Err(Error::Invalid(format!(
            "refusing to listen on {} without an API key: set VINE_API_KEY (or VPS_API_KEY), or --key-file FILE; \
             without a key only a loopback address (127.0.0.1) is allowed",
            cfg.listen
        )));
    }
    if !cfg.root.is_dir() {
        return Err(Error::Invalid(format!(
            "--root {} is not a directory",
            cfg.root.display()
        )));
    }
    let root = cfg
        .root
        .canonicalize()
        .map_err(|e| Error::io("opening", &cfg.root, e))?;
    if cfg.exec.enabled {
        exec::probe(&cfg.exec)?;
    }
    let store = open_store(&cfg, &root)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("starting the server runtime", &root, e))?;
    let listener = std::net::TcpListener::bind(cfg.listen)
        .map_err(|e| Error::io("listening on", cfg.listen.to_string(), e))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| Error::io("listening on", cfg.listen.to_string(), e))?;
    let local = listener
        .local_addr()
        .map_err(|e| Error::io("listening on", cfg.listen.to_string(), e))?;
    let scheme = if cfg.tls.is_some() { "https" } else { "http" };
    let handed = Arc::new(forward::Handed::default());
    if let Some(s) = &store
        && let Some(url) = cfg.advertise.url(scheme, local)
    {
        s.stand_for_lead(&url);
    }
    let batcher = store.clone().map(|s| {
        // Only a board in a database has other servers to hand changes to.
        let hands = match &cfg.store {
            Some(_) => (0..forward::HANDS)
                .map(|_| forward::Forwarder::new(cfg.key.clone(), handed.clone()))
                .collect(),
            None => Vec::new(),
        };
        board::Batcher::start(s, hands)
    });
    let web = crate::web::ControlRoom::new(
        store.as_ref().and_then(|s| s.files()).map(LocalStore::dir),
        batcher.as_ref().map(board::Batcher::subscribe),
        cfg.tls.is_some(),
    );
    let app = Arc::new(App {
        root,
        batcher,
        store,
        key: cfg.key.clone(),
        exec_slots: Arc::new(tokio::sync::Semaphore::new(cfg.exec.max_concurrent.max(1))),
        exec: cfg.exec.clone(),
        throttle: auth::Throttle::default(),
        max_read: cfg.max_read,
        max_body: cfg.max_body,
        body_timeout: cfg.body_timeout,
        original_only: cfg.original_only,
        web,
        handed,
    });
    let router = router(app.clone(), cfg.max_body);
    runtime.block_on(async move {
        let make = router.into_make_service_with_connect_info::<SocketAddr>();
        let mut ready = format!("listening on {scheme}://{local}\n");
        let room = format!("{scheme}://{local}/");
        if !cfg.original_only {
            ready.push_str(&format!("control room: {room}\n"));
        }
        // One write: a caller that reads the first line and closes the pipe may miss the
        // second, and a stdout that is gone stops nothing (println! would panic).
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(ready.as_bytes()).and_then(|()| out.flush());
        drop(out);
        if cfg.open_browser && !cfg.original_only {
            open_browser(&room);
        }
        if cfg.key.is_none() {
            eprintln!("vine serve: no API key set; anyone who can reach {local} can use the board");
        }
        match &cfg.tls {
            Some((cert, key)) => {
                let _ = rustls::crypto::ring::default_provider().install_default();
                let tls = axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
                    .await
                    .map_err(|e| Error::io("loading the TLS certificate and key", cert, e))?;
                let mut server = axum_server::from_tcp_rustls(listener, tls)
                    .map_err(|e| Error::io("listening on", local.to_string(), e))?;
                slow_clients_time_out(server.http_builder());
                server
                    .serve(make)
                    .await
                    .map_err(|e| Error::io("serving on", local.to_string(), e))
            }
            None => {
                let mut server = axum_server::from_tcp(listener)
                    .map_err(|e| Error::io("listening on", local.to_string(), e))?;
                slow_clients_time_out(server.http_builder());
                server
                    .serve(make)
                    .await
                    .map_err(|e| Error::io("serving on", local.to_string(), e))
            }
        }
    })
}

/// The board the server holds: none with `--original-only` (the original server creates
/// nothing in its base directory), the PostgreSQL board `--store` names (its schema brought
/// up to date), else the board in files at the top of `root` (made if absent).
fn open_store(cfg: &ServeConfig, root: &std::path::Path) -> Result<Option<Arc<dyn BatchStore>>> {
    match (&cfg.store, cfg.original_only) {
        (Some(_), true) => Err(Error::Invalid(
            "--original-only serves no board, so it takes no --store".into(),
        )),
        (None, true) => Ok(None),
        (None, false) => Ok(Some(Arc::new(LocalStore::init(root, None)?))),
        #[cfg(feature = "postgres")]
        (Some(url), false) => Ok(Some(Arc::new(crate::store::pg::PgStore::open(url)?))),
        #[cfg(not(feature = "postgres"))]
        (Some(_), false) => Err(Error::Invalid(
            "this vine was built without PostgreSQL (the `postgres` feature); --store needs it"
                .into(),
        )),
    }
}

/// Asks the desktop to open `url` in a browser (`xdg-open`, or `open` on macOS); says so on
/// stderr when it cannot, and carries on either way.
fn open_browser(url: &str) {
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    let started = std::process::Command::new(opener)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    match started {
        // Reaped in the background, so no zombie is left.
        Ok(mut child) => {
            std::thread::spawn(move || child.wait());
        }
        Err(e) => eprintln!("vine: could not start a browser ({opener}: {e}); open {url} yourself"),
    }
}

/// A client that does not finish sending its request headers within 30 s is dropped, so slow
/// or stuck connections cannot pile up (its body gets `--body-timeout`, see `body.rs`).
fn slow_clients_time_out(
    b: &mut hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>,
) {
    b.http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30));
}

fn router(app: Arc<App>, max_body: usize) -> Router {
    let mut r = Router::new()
        .route("/test", get(board::test))
        .route("/list", get(files::list))
        .route("/deploy", post(files::deploy))
        .route("/execute", post(exec::execute));
    if !app.original_only {
        r = r
            .route("/openapi.json", get(board::openapi))
            .route("/read", get(files::read))
            .route("/search/files", get(files::search_files))
            .route("/search/content", get(files::search_content))
            .route("/v1/op", post(board::op))
            .route("/v1/batch", post(forward::batch))
            .route("/metrics", get(metrics::metrics))
            .merge(crate::web::router(app.clone()));
    }
    r.fallback(reply::not_found)
        .method_not_allowed_fallback(reply::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            body::read_in_time,
        ))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            auth::check,
        ))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(app)
}
