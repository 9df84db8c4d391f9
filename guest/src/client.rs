//! Host side of the agent protocol: connect (virtio-serial socket or Firecracker-style vsock
//! socket), handshake, requests, and the stream of output and exit events.

use std::io::{BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::protocol::{
    self, Answer, ContainerSpec, FromAgent, NetConfig, Op, Reply, Stats, ToAgent, WireError,
};

/// Errors talking to the agent.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("connect to the agent socket {path}: {err}")]
    Connect { path: String, err: std::io::Error },
    #[error("the VMM refused vsock port {port}: {answer:?} (is the agent listening on it?)")]
    VsockRefused { port: u32, answer: String },
    #[error(
        "the guest agent speaks protocol version {agent}, this vmctl speaks {host}: rebuild the guest image \
         (scripts/build-guest-image.sh) from this vmctl's sources"
    )]
    VersionMismatch { agent: u32, host: u32 },
    #[error("the guest agent did not answer {what} within {secs} s")]
    Timeout { what: String, secs: u64 },
    #[error("the guest agent refused {what}: {message}")]
    Agent { what: String, message: String },
    #[error("unexpected message from the guest agent: {0}")]
    Unexpected(String),
    #[error("the connection to the guest agent closed")]
    Closed,
}

pub type Result<T> = std::result::Result<T, ClientError>;

/// What the agent reports outside replies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Stdout {
        id: String,
        data: Vec<u8>,
    },
    Stderr {
        id: String,
        data: Vec<u8>,
    },
    Exit {
        id: String,
        code: i32,
    },
    /// The connection ended; `Some` with the reason when it was not a clean close.
    Closed(Option<String>),
}

/// A connected, handshaken agent.
pub struct Client {
    writer: Arc<Mutex<UnixStream>>,
    seq: AtomicU64,
    replies: Mutex<Receiver<Reply>>,
    events: Mutex<Option<Receiver<Event>>>,
    agent: String,
    features: Vec<String>,
}

/// Opens the host end of a virtio-serial port (QEMU `-chardev socket,server=on`).
pub fn connect_unix(path: &Path) -> Result<UnixStream> {
    UnixStream::connect(path).map_err(|err| ClientError::Connect {
        path: path.display().to_string(),
        err,
    })
}

/// Opens a vsock connection to guest `port` through a Firecracker-style Unix socket:
/// `CONNECT <port>\n`, answered by `OK <host port>\n`.
pub fn connect_vsock(uds: &Path, port: u32, timeout: Duration) -> Result<UnixStream> {
    let mut s = connect_unix(uds)?;
    s.set_read_timeout(Some(timeout)).map_err(WireError::Io)?;
    s.write_all(format!("CONNECT {port}\n").as_bytes())
        .map_err(WireError::Io)?;
    let mut answer = Vec::new();
    let mut b = [0u8; 1];
    while answer.len() < 64 {
        match std::io::Read::read(&mut s, &mut b) {
            Ok(0) => break,
            Ok(_) if b[0] == b'\n' => break,
            Ok(_) => answer.push(b[0]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return Err(ClientError::Timeout {
                    what: format!("vsock CONNECT {port}"),
                    secs: timeout.as_secs(),
                })
            }
            Err(e) => return Err(WireError::Io(e).into()),
        }
    }
    let answer = String::from_utf8_lossy(&answer).into_owned();
    if !answer.starts_with("OK ") {
        return Err(ClientError::VsockRefused { port, answer });
    }
    s.set_read_timeout(None).map_err(WireError::Io)?;
    Ok(s)
}

impl Client {
    /// Says hello on `stream` and waits up to `timeout` for the agent's answer; then starts the
    /// reader thread.
    pub fn handshake(stream: UnixStream, timeout: Duration) -> Result<Client> {
        Self::handshake_version(stream, timeout, protocol::VERSION)
    }

    /// [`Client::handshake`] claiming protocol `version` (tests use it to check refusal).
    pub fn handshake_version(
        stream: UnixStream,
        timeout: Duration,
        version: u32,
    ) -> Result<Client> {
        let mut w = stream.try_clone().map_err(WireError::Io)?;
        protocol::write_msg(&mut w, &ToAgent::Hello { version }, &[])?;
        let deadline = Instant::now() + timeout;
        let mut reader = BufReader::new(stream);
        let timeout_err = || ClientError::Timeout {
            what: "the hello".into(),
            secs: timeout.as_secs(),
        };
        let left = deadline
            .checked_duration_since(Instant::now())
            .ok_or_else(timeout_err)?;
        reader
            .get_ref()
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .map_err(WireError::Io)?;
        let hello = match protocol::read_msg::<_, FromAgent>(&mut reader) {
            Ok(Some((m, _))) => m,
            Ok(None) => return Err(ClientError::Closed),
            Err(WireError::Io(e)) if is_timeout(&e) => return Err(timeout_err()),
            Err(e) => return Err(e.into()),
        };
        let (agent, features) = match hello {
            FromAgent::Hello {
                version: v,
                agent,
                features,
            } if v == version => (agent, features),
            FromAgent::Hello { version: v, .. } => {
                return Err(ClientError::VersionMismatch {
                    agent: v,
                    host: version,
                })
            }
            FromAgent::Error { message } => {
                return Err(
                    parse_version_error(&message, version).unwrap_or(ClientError::Agent {
                        what: "the hello".into(),
                        message,
                    }),
                )
            }
            other => return Err(ClientError::Unexpected(format!("{other:?}"))),
        };
        reader
            .get_ref()
            .set_read_timeout(None)
            .map_err(WireError::Io)?;
        let (reply_tx, reply_rx) = std::sync::mpsc::channel();
        let (event_tx, event_rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("agent-reader".into())
            .spawn(move || read_loop(reader, reply_tx, event_tx))
            .map_err(WireError::Io)?;
        Ok(Client {
            writer: Arc::new(Mutex::new(w)),
            seq: AtomicU64::new(1),
            replies: Mutex::new(reply_rx),
            events: Mutex::new(Some(event_rx)),
            agent,
            features,
        })
    }

    /// The agent's name and version, from its hello.
    pub fn agent(&self) -> &str {
        &self.agent
    }

    /// Whether the agent announced `feature` (see [`protocol::FEATURES`]).
    pub fn supports(&self, feature: &str) -> bool {
        self.features.iter().any(|f| f == feature)
    }

    /// The event stream (output, exits, end of connection); can be taken once.
    pub fn take_events(&self) -> Option<Receiver<Event>> {
        self.events.lock().ok()?.take()
    }

    /// A handle that can send stdin and signals from other threads.
    pub fn sender(&self) -> Handle {
        Handle {
            writer: self.writer.clone(),
        }
    }

    /// Sends `op` and waits up to `timeout` for its answer.
    pub fn call(&self, op: Op, timeout: Duration) -> Result<Answer> {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let what = op_name(&op);
        self.sender().send(
            &ToAgent::Call {
                seq,
                op: Box::new(op),
            },
            &[],
        )?;
        let replies = self.replies.lock().map_err(|_| ClientError::Closed)?;
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match replies.recv_timeout(left) {
                Ok(r) if r.seq != seq => continue,
                Ok(Reply {
                    error: Some(message),
                    ..
                }) => return Err(ClientError::Agent { what, message }),
                Ok(Reply { ok: Some(a), .. }) => return Ok(a),
                Ok(r) => return Err(ClientError::Unexpected(format!("{r:?}"))),
                Err(RecvTimeoutError::Timeout) => {
                    return Err(ClientError::Timeout {
                        what,
                        secs: timeout.as_secs(),
                    })
                }
                Err(RecvTimeoutError::Disconnected) => return Err(ClientError::Closed),
            }
        }
    }

    pub fn ping(&self, timeout: Duration) -> Result<()> {
        self.call(Op::Ping, timeout).map(|_| ())
    }

    pub fn network(&self, cfg: NetConfig, timeout: Duration) -> Result<()> {
        self.call(Op::Network(cfg), timeout).map(|_| ())
    }

    /// Creates a container; returns its pid in the guest.
    pub fn create(&self, spec: ContainerSpec, timeout: Duration) -> Result<i32> {
        match self.call(Op::Create(spec), timeout)? {
            Answer::Created { pid } => Ok(pid),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    pub fn start(&self, id: &str, timeout: Duration) -> Result<()> {
        self.call(Op::Start { id: id.into() }, timeout).map(|_| ())
    }

    pub fn stats(&self, id: &str, timeout: Duration) -> Result<Stats> {
        match self.call(Op::Stats { id: id.into() }, timeout)? {
            Answer::Stats(s) => Ok(s),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Asks the guest to power off (or reboot). The guest may go away before answering, so a
    /// closed connection counts as success.
    pub fn shutdown(&self, reboot: bool, timeout: Duration) -> Result<()> {
        match self.call(Op::Shutdown { reboot }, timeout) {
            Ok(_) | Err(ClientError::Closed) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// Sends stdin and signals; cheap to clone, usable from any thread.
#[derive(Clone)]
pub struct Handle {
    writer: Arc<Mutex<UnixStream>>,
}

impl Handle {
    fn send(&self, msg: &ToAgent, data: &[u8]) -> Result<()> {
        let mut w = self.writer.lock().map_err(|_| ClientError::Closed)?;
        protocol::write_msg(&mut *w, msg, data)?;
        Ok(())
    }

    /// Sends stdin bytes (split into frames of at most [`protocol::MAX_DATA`]).
    pub fn stdin(&self, id: &str, data: &[u8]) -> Result<()> {
        for chunk in data.chunks(protocol::MAX_DATA) {
            self.send(
                &ToAgent::Stdin {
                    id: id.into(),
                    len: chunk.len(),
                },
                chunk,
            )?;
        }
        Ok(())
    }

    pub fn close_stdin(&self, id: &str) -> Result<()> {
        self.send(&ToAgent::StdinClose { id: id.into() }, &[])
    }

    /// Sends a signal without waiting for the answer (safe from a signal-handling thread).
    pub fn signal(&self, id: &str, signal: i32) -> Result<()> {
        let op = Box::new(Op::Signal {
            id: id.into(),
            signal,
        });
        self.send(&ToAgent::Call { seq: 0, op }, &[])
    }

    /// Sets a `tty` container's window size, without waiting for the answer (only for agents
    /// that announced [`protocol::FEATURE_TTY`]: an older one closes on the unknown request).
    pub fn resize(&self, id: &str, rows: u16, cols: u16) -> Result<()> {
        let op = Box::new(Op::Resize {
            id: id.into(),
            rows,
            cols,
        });
        self.send(&ToAgent::Call { seq: 0, op }, &[])
    }
}

fn op_name(op: &Op) -> String {
    match op {
        Op::Ping => "ping".into(),
        Op::Network(n) => format!(
            "network set-up of {} ({}/{})",
            n.interface, n.address, n.prefix
        ),
        Op::Create(s) => format!("creating container {}", s.id),
        Op::Start { id } => format!("starting container {id}"),
        Op::Signal { id, signal } => format!("signal {signal} to container {id}"),
        Op::Stats { id } => format!("stats of container {id}"),
        Op::Delete { id } => format!("deleting container {id}"),
        Op::Shutdown { .. } => "shutdown".into(),
        Op::Resize { id, .. } => format!("resizing the terminal of container {id}"),
    }
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// The agent's refusal of our version names its own: turn it into the typed error.
fn parse_version_error(message: &str, host: u32) -> Option<ClientError> {
    let rest = message.split("speaks protocol version ").nth(1)?;
    let agent: u32 = rest
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()?;
    Some(ClientError::VersionMismatch { agent, host })
}

fn read_loop(mut reader: BufReader<UnixStream>, replies: Sender<Reply>, events: Sender<Event>) {
    let end = loop {
        match protocol::read_msg::<_, FromAgent>(&mut reader) {
            Ok(Some((FromAgent::Reply(r), _))) => {
                if r.seq != 0 {
                    let _ = replies.send(r);
                }
            }
            Ok(Some((FromAgent::Stdout { id, .. }, data))) => {
                let _ = events.send(Event::Stdout { id, data });
            }
            Ok(Some((FromAgent::Stderr { id, .. }, data))) => {
                let _ = events.send(Event::Stderr { id, data });
            }
            Ok(Some((FromAgent::Exit { id, code }, _))) => {
                let _ = events.send(Event::Exit { id, code });
            }
            Ok(Some((FromAgent::Error { message }, _))) => break Some(message),
            Ok(Some((other, _))) => break Some(format!("unexpected message {other:?}")),
            Ok(None) => break None,
            Err(WireError::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => break None,
            Err(e) => break Some(e.to_string()),
        }
    };
    let _ = events.send(Event::Closed(end));
}

/// Waits until a Unix socket exists at `path` and accepts connections.
pub fn wait_for_socket(path: &Path, timeout: Duration) -> Result<UnixStream> {
    let deadline = Instant::now() + timeout;
    loop {
        match UnixStream::connect(path) {
            Ok(s) => return Ok(s),
            Err(err) if Instant::now() >= deadline => {
                return Err(ClientError::Connect {
                    path: path.display().to_string(),
                    err,
                })
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}
