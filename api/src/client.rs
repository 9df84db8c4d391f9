//! A small blocking client for the API: HTTP/1.1 over `std::os::unix::net::UnixStream`, one
//! connection per request, responses parsed with `httparse`. Used by the vmctl CLI and tests.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::config::VmResources;
use crate::types::{
    ActionType, FaultMessage, InstanceActionInfo, InstanceInfo, VmStateRequest, VmStateUpdate,
};

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket could not be reached.
    #[error("cannot connect to the VMM API at {path}: {source}; is the VMM running?")]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Reading or writing the connection failed.
    #[error("VMM API connection: {0}")]
    Io(#[from] std::io::Error),
    /// The answer is not valid HTTP.
    #[error("VMM API sent a malformed response: {0}")]
    BadResponse(String),
    /// The API answered with an error status.
    #[error("VMM API error {status}: {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// The `fault_message` (or the raw body).
        message: String,
    },
    /// A JSON body could not be encoded or decoded.
    #[error("VMM API JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// An HTTP answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiResponse {
    /// Status code.
    pub status: u16,
    /// Body bytes (empty for 204).
    pub body: Vec<u8>,
}

impl ApiResponse {
    /// The `fault_message` of an error body, if it has one.
    pub fn fault_message(&self) -> Option<String> {
        serde_json::from_slice::<FaultMessage>(&self.body)
            .ok()
            .map(|f| f.fault_message)
    }

    /// `Ok(self)` for 2xx, else [`ClientError::Api`] with the fault message.
    pub fn ok(self) -> Result<Self, ClientError> {
        if (200..300).contains(&self.status) {
            return Ok(self);
        }
        let message = self
            .fault_message()
            .unwrap_or_else(|| String::from_utf8_lossy(&self.body).into_owned());
        Err(ClientError::Api {
            status: self.status,
            message,
        })
    }
}

/// A client for one VMM's API socket.
#[derive(Clone, Debug)]
pub struct ApiClient {
    socket_path: PathBuf,
    timeout: Duration,
}

const MAX_RESPONSE: usize = 16 << 20;

impl ApiClient {
    /// A client for the socket at `socket_path`, with a 30 s timeout per request.
    pub fn new(socket_path: impl Into<PathBuf>) -> Self {
        Self {
            socket_path: socket_path.into(),
            timeout: Duration::from_secs(30),
        }
    }

    /// Changes the per-request read/write timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The socket path.
    pub fn socket_path(&self) -> &Path {
        &self.socket_path
    }

    /// Sends one request and returns the answer, whatever its status.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<ApiResponse, ClientError> {
        let mut stream =
            UnixStream::connect(&self.socket_path).map_err(|source| ClientError::Connect {
                path: self.socket_path.clone(),
                source,
            })?;
        stream.set_read_timeout(Some(self.timeout))?;
        stream.set_write_timeout(Some(self.timeout))?;
        let body = body.unwrap_or(&[]);
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n\
             Connection: close\r\n"
        );
        if !body.is_empty() || method != "GET" {
            head.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        head.push_str("\r\n");
        let written = stream
            .write_all(head.as_bytes())
            .and_then(|()| stream.write_all(body));
        match written {
            Ok(()) => read_response(&mut stream),
            // The server may answer (e.g. 413) and close before reading a large body: its
            // answer is still in the socket.
            Err(e) => read_response(&mut stream).map_err(|_| ClientError::Io(e)),
        }
    }

    /// `GET path`, decoding a 2xx JSON body.
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let resp = self.request("GET", path, None)?.ok()?;
        Ok(serde_json::from_slice(&resp.body)?)
    }

    /// `PUT path` with `body` as JSON; any 2xx is success.
    pub fn put<T: Serialize + ?Sized>(&self, path: &str, body: &T) -> Result<(), ClientError> {
        let json = serde_json::to_vec(body)?;
        self.request("PUT", path, Some(&json))?.ok().map(drop)
    }

    /// `PATCH path` with `body` as JSON; any 2xx is success.
    pub fn patch<T: Serialize + ?Sized>(&self, path: &str, body: &T) -> Result<(), ClientError> {
        let json = serde_json::to_vec(body)?;
        self.request("PATCH", path, Some(&json))?.ok().map(drop)
    }

    /// `GET /`
    pub fn instance_info(&self) -> Result<InstanceInfo, ClientError> {
        self.get("/")
    }

    /// `GET /vm/config`
    pub fn vm_config(&self) -> Result<VmResources, ClientError> {
        self.get("/vm/config")
    }

    /// Sends every part of `config` with the matching `PUT` (pre-boot).
    pub fn configure(&self, config: &VmResources) -> Result<(), ClientError> {
        if let Some(l) = &config.logger {
            self.put("/logger", l)?;
        }
        if let Some(m) = &config.metrics {
            self.put("/metrics", m)?;
        }
        self.put("/machine-config", &config.machine_config)?;
        if let Some(b) = &config.boot_source {
            self.put("/boot-source", b)?;
        }
        for d in &config.drives {
            self.put(&format!("/drives/{}", d.drive_id), d)?;
        }
        for n in &config.network_interfaces {
            self.put(&format!("/network-interfaces/{}", n.iface_id), n)?;
        }
        if let Some(v) = &config.vsock {
            self.put("/vsock", v)?;
        }
        Ok(())
    }

    /// `PUT /actions` with `action`.
    pub fn action(&self, action: ActionType) -> Result<(), ClientError> {
        self.put(
            "/actions",
            &InstanceActionInfo {
                action_type: action,
            },
        )
    }

    /// `PATCH /vm` with `Paused` or `Resumed`.
    pub fn set_vm_state(&self, state: VmStateRequest) -> Result<(), ClientError> {
        self.patch("/vm", &VmStateUpdate { state })
    }
}

fn read_response(stream: &mut UnixStream) -> Result<ApiResponse, ClientError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(&buf) {
            Ok(httparse::Status::Complete(head_len)) => {
                let status = resp.code.unwrap_or(0);
                let length = resp
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .map(|h| {
                        std::str::from_utf8(h.value)
                            .ok()
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .ok_or_else(|| ClientError::BadResponse("bad Content-Length".into()))
                    })
                    .transpose()?;
                let mut body = buf.split_off(head_len);
                match length {
                    Some(n) if n > MAX_RESPONSE => {
                        return Err(ClientError::BadResponse(format!("body of {n} bytes")))
                    }
                    Some(n) => {
                        while body.len() < n {
                            let got = stream.read(&mut chunk)?;
                            if got == 0 {
                                return Err(ClientError::BadResponse("body cut short".into()));
                            }
                            body.extend_from_slice(&chunk[..got]);
                        }
                        body.truncate(n);
                    }
                    None if status == 204 || status == 304 => body.clear(),
                    None => {
                        stream.take(MAX_RESPONSE as u64).read_to_end(&mut body)?;
                    }
                }
                return Ok(ApiResponse { status, body });
            }
            Ok(httparse::Status::Partial) => {}
            Err(e) => return Err(ClientError::BadResponse(e.to_string())),
        }
        if buf.len() > 64 * 1024 {
            return Err(ClientError::BadResponse("headers too long".into()));
        }
        let got = stream.read(&mut chunk)?;
        if got == 0 {
            return Err(ClientError::BadResponse(
                "connection closed before the headers".into(),
            ));
        }
        buf.extend_from_slice(&chunk[..got]);
    }
}
