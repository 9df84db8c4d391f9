//! The HTTP server: hyper 1 on a tokio `UnixListener`, on its own thread with a current-thread
//! runtime. Each request is parsed here and sent as an [`ApiRequest`] to the VMM thread over a
//! channel, with an `EventFd` write to wake the VMM's event loop; the answer comes back on a
//! oneshot channel, awaited without blocking other connections.

use std::convert::Infallible;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::oneshot;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::action::{ActionError, VmmAction, VmmResponse};
use crate::controller::{Controller, VmmBackend};
use crate::routes::parse_request;
use crate::socket::{bind_api_socket, SocketError};
use crate::types::FaultMessage;

/// Firecracker's default limit on a request body, in bytes.
pub const DEFAULT_MAX_BODY_BYTES: usize = 51_200;

/// How the server is set up.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Path of the Unix socket (`--api-sock`).
    pub socket_path: PathBuf,
    /// Largest accepted request body; larger ones get 413.
    pub max_body_bytes: usize,
    /// Time a client gets to send a request's headers, and then its body.
    pub read_timeout: Duration,
}

impl ServerConfig {
    /// Defaults: 51200-byte bodies, 10 s read timeout.
    pub fn new(socket_path: impl Into<PathBuf>) -> Self {
        Self {
            socket_path: socket_path.into(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            read_timeout: Duration::from_secs(10),
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The socket could not be created.
    #[error(transparent)]
    Socket(#[from] SocketError),
    /// The eventfd, runtime or thread could not be created.
    #[error("starting the API server: {0}")]
    Setup(#[source] std::io::Error),
}

/// One request for the VMM thread. Answer it with [`ApiRequest::reply`].
#[derive(Debug)]
pub struct ApiRequest {
    /// What to do.
    pub action: VmmAction,
    reply: oneshot::Sender<Result<VmmResponse, ActionError>>,
}

impl ApiRequest {
    /// Sends the answer back to the waiting HTTP connection (ignored if it went away).
    pub fn reply(self, result: Result<VmmResponse, ActionError>) {
        let _ = self.reply.send(result);
    }
}

/// The VMM's end: a queue of [`ApiRequest`]s and an `EventFd` that becomes readable when
/// requests are queued. Register [`VmmEndpoint::event_fd`] for `EPOLLIN` in the event loop and
/// call [`VmmEndpoint::process_pending`] when it fires.
#[derive(Debug)]
pub struct VmmEndpoint {
    requests: mpsc::Receiver<ApiRequest>,
    event_fd: Arc<EventFd>,
}

impl VmmEndpoint {
    /// The (non-blocking) eventfd written once per queued request.
    pub fn event_fd(&self) -> &EventFd {
        &self.event_fd
    }

    /// Reads the eventfd and answers every queued request with `controller`. Returns `false`
    /// once the server has stopped and nothing more will come.
    pub fn process_pending<B: VmmBackend>(&self, controller: &mut Controller<B>) -> bool {
        let _ = self.event_fd.read();
        loop {
            match self.requests.try_recv() {
                Ok(ApiRequest { action, reply }) => {
                    let _ = reply.send(controller.handle(action));
                }
                Err(mpsc::TryRecvError::Empty) => return true,
                Err(mpsc::TryRecvError::Disconnected) => return false,
            }
        }
    }

    /// A simple blocking loop for VMMs without an event manager (and tests): waits on the
    /// eventfd and answers requests until the server stops.
    pub fn run<B: VmmBackend>(&self, controller: &mut Controller<B>) {
        self.run_until(controller, |_| None::<()>);
    }

    /// Like [`VmmEndpoint::run`], but also calls `done` after every wake-up (at least every
    /// 50 ms) and returns its first `Some`; `None` when the server stopped first.
    pub fn run_until<B: VmmBackend, T>(
        &self,
        controller: &mut Controller<B>,
        mut done: impl FnMut(&mut Controller<B>) -> Option<T>,
    ) -> Option<T> {
        // SAFETY: the eventfd outlives this borrow; it is owned by `self`.
        let fd = unsafe { BorrowedFd::borrow_raw(self.event_fd.as_raw_fd()) };
        loop {
            let mut fds = [nix::poll::PollFd::new(fd, nix::poll::PollFlags::POLLIN)];
            let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(50u16));
            if !self.process_pending(controller) {
                return None;
            }
            if let Some(t) = done(controller) {
                return Some(t);
            }
        }
    }
}

/// The running server. Dropping it (or [`ApiServer::shutdown`]) stops the thread and removes
/// the socket file.
#[derive(Debug)]
pub struct ApiServer {
    socket_path: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    to_vmm: mpsc::Sender<ApiRequest>,
    wake: Arc<EventFd>,
    max_body: usize,
    read_timeout: Duration,
}

impl ApiServer {
    /// Binds the socket and starts the server thread.
    pub fn start(config: ServerConfig) -> Result<(ApiServer, VmmEndpoint), ServerError> {
        let std_listener = bind_api_socket(&config.socket_path)?;
        std_listener
            .set_nonblocking(true)
            .map_err(ServerError::Setup)?;
        let wake = Arc::new(EventFd::new(EFD_NONBLOCK).map_err(ServerError::Setup)?);
        let (to_vmm, requests) = mpsc::channel();
        let shared = Arc::new(Shared {
            to_vmm,
            wake: wake.clone(),
            max_body: config.max_body_bytes,
            read_timeout: config.read_timeout,
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(ServerError::Setup)?;
        let (stop, stopped) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("vmctl-api".into())
            .spawn(move || runtime.block_on(serve(std_listener, shared, stopped)))
            .map_err(ServerError::Setup)?;
        let server = ApiServer {
            socket_path: config.socket_path,
            stop: Some(stop),
            thread: Some(thread),
        };
        Ok((
            server,
            VmmEndpoint {
                requests,
                event_fd: wake,
            },
        ))
    }

    /// Path of the socket.
    pub fn socket_path(&self) -> &Path {
        &self.socket_path
    }

    /// Stops the server and waits for its thread.
    pub fn shutdown(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
            let _ = std::fs::remove_file(&self.socket_path);
        }
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.stop_now();
    }
}

async fn serve(
    listener: std::os::unix::net::UnixListener,
    shared: Arc<Shared>,
    mut stopped: oneshot::Receiver<()>,
) {
    let listener = match tokio::net::UnixListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("API server: {e}");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        let svc = service_fn(|req| handle(req, shared.clone()));
                        let mut builder = http1::Builder::new();
                        builder.timer(TokioTimer::new()).header_read_timeout(shared.read_timeout);
                        if let Err(e) = builder.serve_connection(TokioIo::new(stream), svc).await {
                            tracing::debug!("API connection ended: {e}");
                        }
                    });
                }
                Err(e) => {
                    // E.g. EMFILE: back off instead of spinning.
                    tracing::warn!("API accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

fn json_response(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

fn fault(status: u16, message: String) -> Response<Full<Bytes>> {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    let body = serde_json::to_string(&FaultMessage {
        fault_message: message,
    })
    .unwrap_or_default();
    tracing::info!("API answer {status}: {body}");
    json_response(status, body)
}

fn too_large(limit: usize) -> Response<Full<Bytes>> {
    fault(
        413,
        format!("Request payload is larger than the limit of {limit} bytes allowed by the server."),
    )
}

async fn handle(
    req: Request<Incoming>,
    shared: Arc<Shared>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let declared = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > shared.max_body as u64) {
        return Ok(too_large(shared.max_body));
    }
    let collect = Limited::new(req.into_body(), shared.max_body).collect();
    let body = match tokio::time::timeout(shared.read_timeout, collect).await {
        Err(_) => return Ok(fault(408, "Timed out reading the request body.".into())),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            return Ok(too_large(shared.max_body))
        }
        Ok(Err(e)) => return Ok(fault(400, format!("Reading the request body failed: {e}."))),
        Ok(Ok(collected)) => collected.to_bytes(),
    };
    tracing::debug!("API request {method} {path}");
    let action = match parse_request(&method, &path, &body) {
        Ok(a) => a,
        Err(e) => return Ok(fault(e.status, e.message)),
    };
    let (reply, answer) = oneshot::channel();
    if shared.to_vmm.send(ApiRequest { action, reply }).is_err() {
        return Ok(fault(503, ActionError::VmmUnavailable.to_string()));
    }
    if let Err(e) = shared.wake.write(1) {
        tracing::error!("API: waking the VMM failed: {e}");
    }
    Ok(match answer.await {
        Ok(Ok(resp)) => match resp.to_json() {
            None => {
                let mut r = Response::new(Full::new(Bytes::new()));
                *r.status_mut() = StatusCode::NO_CONTENT;
                r
            }
            Some(body) => json_response(StatusCode::OK, body),
        },
        Ok(Err(e)) => fault(400, e.to_string()),
        Err(_) => fault(503, ActionError::VmmUnavailable.to_string()),
    })
}
