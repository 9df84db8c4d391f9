//! The host <-> agent control protocol, version 1 (see guest/PROTOCOL.md).
//!
//! Every message is one line of JSON (an externally tagged enum, so the line is an object
//! with exactly one key). A message that carries bytes (stdout, stderr, stdin) says how many
//! in its `len` field; exactly that many raw bytes follow the newline.

use std::io::{BufRead, Read, Write};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The protocol version this crate speaks.
pub const VERSION: u32 = 1;
/// The vsock port the agent listens on in a microVM.
pub const VSOCK_PORT: u32 = 1024;
/// The name of the virtio-serial port the agent uses under QEMU.
pub const SERIAL_PORT_NAME: &str = "vmctl.agent";
/// Optional features an agent announces in its hello (additions within version 1; a host
/// uses a feature only when the agent announced it).
pub const FEATURES: &[&str] = &[FEATURE_TTY];
/// `tty:true` gives the container a pty (its output is one stream, `stdout`) and the
/// [`Op::Resize`] request exists.
pub const FEATURE_TTY: &str = "tty";
/// Longest JSON line accepted (bytes, newline included).
pub const MAX_LINE: usize = 1 << 20;
/// Most bytes one data frame may carry.
pub const MAX_DATA: usize = 1 << 20;

/// Errors of the wire format.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("i/o on the agent channel: {0}")]
    Io(#[from] std::io::Error),
    #[error("bad protocol message {line:?}: {err}")]
    Json {
        line: String,
        err: serde_json::Error,
    },
    #[error("protocol line longer than {MAX_LINE} bytes")]
    LineTooLong,
    #[error("data frame of {0} bytes is larger than the limit of {MAX_DATA}")]
    DataTooLong(usize),
}

/// A message from the host to the agent.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum ToAgent {
    /// First message on a connection: the protocol version the host speaks.
    Hello { version: u32 },
    /// A request; the agent answers with [`FromAgent::Reply`] carrying the same `seq`.
    Call { seq: u64, op: Box<Op> },
    /// `len` bytes for the container's stdin follow.
    Stdin { id: String, len: usize },
    /// End of the container's stdin.
    StdinClose { id: String },
}

/// Requests.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Does nothing; answers `done`.
    Ping,
    /// Configures the guest's network interface.
    Network(NetConfig),
    /// Creates a container (set up, waiting to start); answers `created`.
    Create(ContainerSpec),
    /// Starts a created container; its output streams from now on.
    Start { id: String },
    /// Sends a signal to the container's process.
    Signal { id: String, signal: i32 },
    /// Resource usage of the container; answers `stats`.
    Stats { id: String },
    /// Kills what is left of the container and removes it.
    Delete { id: String },
    /// Kills every container, syncs, answers `done`, then powers the guest off (or reboots).
    Shutdown { reboot: bool },
    /// Sets the window size of a `tty` container's terminal (feature [`FEATURE_TTY`]).
    Resize { id: String, rows: u16, cols: u16 },
}

/// A message from the agent to the host.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum FromAgent {
    /// Answer to the host's hello: the version the agent speaks and its name.
    Hello {
        version: u32,
        agent: String,
        /// Optional features (see [`FEATURES`]); absent from agents that have none.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        features: Vec<String>,
    },
    /// Answer to a [`ToAgent::Call`].
    Reply(Reply),
    /// `len` bytes of the container's stdout follow.
    Stdout { id: String, len: usize },
    /// `len` bytes of the container's stderr follow.
    Stderr { id: String, len: usize },
    /// The container's process ended; all its output was sent before this.
    Exit { id: String, code: i32 },
    /// A fatal problem outside any request (e.g. an unsupported version); the agent closes.
    Error { message: String },
}

/// The outcome of a request: exactly one of `ok` and `error` is set.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Reply {
    pub seq: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ok: Option<Answer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Successful answers.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    Done,
    /// The container is created; `pid` is its process in the guest.
    Created {
        pid: i32,
    },
    Stats(Stats),
}

/// The guest's network interface configuration.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct NetConfig {
    /// Interface name in the guest (normally "eth0").
    pub interface: String,
    /// IPv4 address, e.g. "10.88.0.5".
    pub address: String,
    /// Prefix length, e.g. 16.
    pub prefix: u8,
    /// Default gateway, if any.
    #[serde(default)]
    pub gateway: Option<String>,
}

/// Resource limits of a container (cgroup v2 in the guest).
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub struct Limits {
    /// memory.max in bytes.
    #[serde(default)]
    pub memory_bytes: Option<u64>,
    /// CPU quota in CPUs (cpu.max).
    #[serde(default)]
    pub cpus: Option<f64>,
    /// pids.max.
    #[serde(default)]
    pub pids: Option<i64>,
}

/// Where the container's network comes from.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum NetworkMode {
    /// Its own empty network namespace (loopback only).
    None,
    /// The guest's network (the VM is the isolation boundary; eth0 is the VM's NIC).
    #[default]
    Guest,
}

/// Everything the agent needs to create a container.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub struct ContainerSpec {
    /// Container id (letters, digits, '-', '_', '.'; at most 64).
    pub id: String,
    /// The image disk's device in the guest, e.g. "/dev/vda".
    pub disk: String,
    /// Layer directories on that disk, bottom first, relative to its root.
    pub layers: Vec<String>,
    /// Command and arguments.
    pub args: Vec<String>,
    /// Environment, "KEY=VALUE".
    #[serde(default)]
    pub env: Vec<String>,
    /// Working directory (absolute); "/" when left out.
    #[serde(default)]
    pub workdir: Option<String>,
    /// "uid[:gid]" (numbers) or a user name from the image's /etc/passwd.
    #[serde(default)]
    pub user: Option<String>,
    /// Allocate a terminal.
    #[serde(default)]
    pub tty: bool,
    /// Keep stdin open (frames with [`ToAgent::Stdin`]).
    #[serde(default)]
    pub stdin: bool,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub network: NetworkMode,
    /// Mount the container's root read-only.
    #[serde(default)]
    pub read_only: bool,
    /// Run a minimal init as the container's PID 1.
    #[serde(default)]
    pub init: bool,
    #[serde(default)]
    pub hostname: Option<String>,
    /// Disks the agent mounts and binds into the container (`-v` of a VM-backed run).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<Volume>,
}

/// A volume: a guest block device with an ext4 filesystem, mounted in the guest and
/// bind-mounted at `target` in the container.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct Volume {
    /// The device in the guest, e.g. "/dev/vdb".
    pub disk: String,
    /// Absolute path in the container.
    pub target: String,
    /// Mount it read-only.
    #[serde(default)]
    pub read_only: bool,
}

/// Resource usage of a container.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub memory_bytes: u64,
    #[serde(default)]
    pub memory_limit: Option<u64>,
    pub pids: u64,
    pub cpu_usage_ns: u64,
    pub oom_kills: u64,
}

/// Messages that may be followed by raw bytes.
pub trait Framed {
    /// How many raw bytes follow this message.
    fn data_len(&self) -> usize;
}

impl Framed for ToAgent {
    fn data_len(&self) -> usize {
        match self {
            ToAgent::Stdin { len, .. } => *len,
            _ => 0,
        }
    }
}

impl Framed for FromAgent {
    fn data_len(&self) -> usize {
        match self {
            FromAgent::Stdout { len, .. } | FromAgent::Stderr { len, .. } => *len,
            _ => 0,
        }
    }
}

/// Writes `msg` as one line, then `data` (whose length `msg` announces). Flushes.
pub fn write_msg<W: Write + ?Sized, T: Serialize + Framed>(
    w: &mut W,
    msg: &T,
    data: &[u8],
) -> Result<(), WireError> {
    debug_assert_eq!(msg.data_len(), data.len());
    let mut line = serde_json::to_vec(msg).map_err(|err| WireError::Json {
        line: String::new(),
        err,
    })?;
    line.push(b'\n');
    line.extend_from_slice(data);
    w.write_all(&line)?;
    w.flush()?;
    Ok(())
}

/// Reads one message and the bytes it announces; `None` at a clean end of stream.
pub fn read_msg<R: BufRead + ?Sized, T: DeserializeOwned + Framed>(
    r: &mut R,
) -> Result<Option<(T, Vec<u8>)>, WireError> {
    let mut line = Vec::new();
    let n = r.take(MAX_LINE as u64).read_until(b'\n', &mut line)?;
    if n == 0 {
        return Ok(None);
    }
    if line.last() != Some(&b'\n') {
        if n >= MAX_LINE {
            return Err(WireError::LineTooLong);
        }
        return Err(WireError::Io(std::io::ErrorKind::UnexpectedEof.into()));
    }
    let msg: T = serde_json::from_slice(&line).map_err(|err| WireError::Json {
        line: String::from_utf8_lossy(&line).trim_end().to_string(),
        err,
    })?;
    let len = msg.data_len();
    if len > MAX_DATA {
        return Err(WireError::DataTooLong(len));
    }
    let mut data = vec![0u8; len];
    r.read_exact(&mut data)?;
    Ok(Some((msg, data)))
}

/// Checks a container id: 1..=64 of `[A-Za-z0-9_.-]`, not starting with '.'.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_is_the_documented_line() {
        let mut out = Vec::new();
        write_msg(&mut out, &ToAgent::Hello { version: 1 }, &[]).unwrap();
        assert_eq!(out, b"{\"hello\":{\"version\":1}}\n");
    }

    #[test]
    fn data_frames_round_trip_with_binary_payload() {
        let payload: Vec<u8> = (0..=255u8).chain([b'\n', 0, b'{']).collect();
        let mut buf = Vec::new();
        let msg = FromAgent::Stdout {
            id: "c1".into(),
            len: payload.len(),
        };
        write_msg(&mut buf, &msg, &payload).unwrap();
        write_msg(
            &mut buf,
            &FromAgent::Exit {
                id: "c1".into(),
                code: 3,
            },
            &[],
        )
        .unwrap();
        let mut r = std::io::Cursor::new(buf);
        let (m, d) = read_msg::<_, FromAgent>(&mut r).unwrap().unwrap();
        assert_eq!(m, msg);
        assert_eq!(d, payload);
        let (m, d) = read_msg::<_, FromAgent>(&mut r).unwrap().unwrap();
        assert_eq!(
            m,
            FromAgent::Exit {
                id: "c1".into(),
                code: 3
            }
        );
        assert!(d.is_empty());
        assert!(read_msg::<_, FromAgent>(&mut r).unwrap().is_none());
    }

    #[test]
    fn calls_and_replies_round_trip() {
        let spec = ContainerSpec {
            id: "x".into(),
            disk: "/dev/vda".into(),
            layers: vec!["layers/0".into()],
            args: vec!["echo".into(), "hi".into()],
            limits: Limits {
                memory_bytes: Some(64 << 20),
                cpus: Some(0.5),
                pids: None,
            },
            ..Default::default()
        };
        let call = ToAgent::Call {
            seq: 7,
            op: Box::new(Op::Create(spec)),
        };
        let mut buf = Vec::new();
        write_msg(&mut buf, &call, &[]).unwrap();
        let (back, _) = read_msg::<_, ToAgent>(&mut std::io::Cursor::new(buf))
            .unwrap()
            .unwrap();
        assert_eq!(back, call);
        let reply: FromAgent =
            serde_json::from_str(r#"{"reply":{"seq":7,"ok":{"created":{"pid":42}}}}"#).unwrap();
        assert_eq!(
            reply,
            FromAgent::Reply(Reply {
                seq: 7,
                ok: Some(Answer::Created { pid: 42 }),
                error: None
            })
        );
        let done: FromAgent = serde_json::from_str(r#"{"reply":{"seq":1,"ok":"done"}}"#).unwrap();
        assert!(matches!(
            done,
            FromAgent::Reply(Reply {
                ok: Some(Answer::Done),
                ..
            })
        ));
    }

    #[test]
    fn garbage_truncation_and_oversize_are_errors() {
        let mut r = std::io::Cursor::new(b"not json\n".to_vec());
        assert!(matches!(
            read_msg::<_, ToAgent>(&mut r),
            Err(WireError::Json { .. })
        ));
        let mut r = std::io::Cursor::new(b"{\"stdin\":{\"id\":\"a\",\"len\":10}}\nabc".to_vec());
        assert!(matches!(
            read_msg::<_, ToAgent>(&mut r),
            Err(WireError::Io(_))
        ));
        let line = format!("{{\"stdin\":{{\"id\":\"a\",\"len\":{}}}}}\n", MAX_DATA + 1);
        let mut r = std::io::Cursor::new(line.into_bytes());
        assert!(matches!(
            read_msg::<_, ToAgent>(&mut r),
            Err(WireError::DataTooLong(_))
        ));
        let mut r = std::io::Cursor::new(vec![b'x'; MAX_LINE + 10]);
        assert!(matches!(
            read_msg::<_, ToAgent>(&mut r),
            Err(WireError::LineTooLong)
        ));
    }

    #[test]
    fn features_and_resize_stay_compatible() {
        // An agent without features (older build) still says a valid hello, and a hello
        // with features is read by this host; a host without tty support ignores the field.
        let old: FromAgent =
            serde_json::from_str(r#"{"hello":{"version":1,"agent":"vmctl-agent 0.1.0"}}"#).unwrap();
        assert!(matches!(old, FromAgent::Hello { ref features, .. } if features.is_empty()));
        let new = FromAgent::Hello {
            version: 1,
            agent: "a".into(),
            features: vec![FEATURE_TTY.into()],
        };
        let line = serde_json::to_string(&new).unwrap();
        assert_eq!(
            line,
            r#"{"hello":{"version":1,"agent":"a","features":["tty"]}}"#
        );
        #[derive(Deserialize)]
        #[serde(rename_all = "snake_case")]
        #[allow(dead_code)]
        enum OldFromAgent {
            Hello { version: u32, agent: String },
        }
        assert!(serde_json::from_str::<OldFromAgent>(&line).is_ok());
        let resize: ToAgent = serde_json::from_str(
            r#"{"call":{"seq":0,"op":{"resize":{"id":"c","rows":40,"cols":120}}}}"#,
        )
        .unwrap();
        assert!(matches!(resize, ToAgent::Call { op, .. }
            if *op == Op::Resize { id: "c".into(), rows: 40, cols: 120 }));
    }

    #[test]
    fn ids_are_checked() {
        assert!(valid_id("vmctl-1a2b.c_d"));
        for bad in ["", ".hidden", "a/b", "a b", &"x".repeat(65)] {
            assert!(!valid_id(bad), "{bad:?}");
        }
    }
}
