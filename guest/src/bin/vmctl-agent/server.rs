//! Serves one host connection: the version handshake, then requests and stdin frames.

use std::io::{BufReader, Write};
use std::sync::{Arc, Mutex};

use guest::protocol::{self, Answer, FromAgent, Op, Reply, ToAgent, WireError};

use crate::containers::Containers;

/// The shared writing half: replies and the containers' output go through it.
pub type Out = Arc<Mutex<Box<dyn Write + Send>>>;

/// Sends one message (and its data) on `out`; errors mean the host is gone, which the reading
/// side notices too, so they are only logged.
pub fn send(out: &Out, msg: &FromAgent, data: &[u8]) {
    let mut w = out.lock().unwrap_or_else(|e| e.into_inner());
    if let Err(e) = protocol::write_msg(&mut *w, msg, data) {
        tracing::debug!("send to host: {e}");
    }
}

/// What ended a session.
pub enum End {
    /// The host closed the connection.
    Closed,
    /// The host asked for a shutdown.
    Shutdown { reboot: bool },
}

/// Runs a session until the host closes it or asks for a shutdown.
pub fn serve(
    reader: Box<dyn std::io::Read + Send>,
    out: Out,
    containers: &Containers,
) -> anyhow::Result<End> {
    let mut r = BufReader::new(reader);
    match protocol::read_msg::<_, ToAgent>(&mut r)? {
        Some((ToAgent::Hello { version }, _)) if version == protocol::VERSION => {
            let agent = format!("vmctl-agent {}", env!("CARGO_PKG_VERSION"));
            send(
                &out,
                &FromAgent::Hello {
                    version: protocol::VERSION,
                    agent,
                    features: protocol::FEATURES.iter().map(|f| f.to_string()).collect(),
                },
                &[],
            );
        }
        Some((ToAgent::Hello { version }, _)) => {
            let message = format!(
                "this agent speaks protocol version {} only; the host asked for version {version}",
                protocol::VERSION
            );
            send(&out, &FromAgent::Error { message }, &[]);
            return Ok(End::Closed);
        }
        Some((other, _)) => {
            let message = format!("expected a hello first, got {other:?}");
            send(&out, &FromAgent::Error { message }, &[]);
            return Ok(End::Closed);
        }
        None => return Ok(End::Closed),
    }
    containers.set_output(out.clone());
    loop {
        let (msg, data) = match protocol::read_msg::<_, ToAgent>(&mut r) {
            Ok(Some(m)) => m,
            Ok(None) => return Ok(End::Closed),
            Err(WireError::Json { line, err }) => {
                send(
                    &out,
                    &FromAgent::Error {
                        message: format!("bad message {line:?}: {err}"),
                    },
                    &[],
                );
                return Ok(End::Closed);
            }
            Err(e) => return Err(e.into()),
        };
        match msg {
            ToAgent::Hello { .. } => {
                send(
                    &out,
                    &FromAgent::Error {
                        message: "hello sent twice".into(),
                    },
                    &[],
                );
                return Ok(End::Closed);
            }
            ToAgent::Stdin { id, .. } => containers.stdin(&id, data),
            ToAgent::StdinClose { id } => containers.close_stdin(&id),
            ToAgent::Call { seq, op } if matches!(*op, Op::Shutdown { .. }) => {
                let reboot = matches!(*op, Op::Shutdown { reboot: true });
                containers.kill_all();
                nix::unistd::sync();
                send(
                    &out,
                    &FromAgent::Reply(Reply {
                        seq,
                        ok: Some(Answer::Done),
                        error: None,
                    }),
                    &[],
                );
                return Ok(End::Shutdown { reboot });
            }
            ToAgent::Call { seq, op } => {
                let result = handle(*op, containers);
                if seq != 0 {
                    let reply = match result {
                        Ok(a) => Reply {
                            seq,
                            ok: Some(a),
                            error: None,
                        },
                        Err(e) => Reply {
                            seq,
                            ok: None,
                            error: Some(format!("{e:#}")),
                        },
                    };
                    send(&out, &FromAgent::Reply(reply), &[]);
                } else if let Err(e) = result {
                    tracing::warn!("{e:#}");
                }
            }
        }
    }
}

fn handle(op: Op, containers: &Containers) -> anyhow::Result<Answer> {
    match op {
        Op::Ping => Ok(Answer::Done),
        Op::Network(cfg) => crate::net::configure(&cfg).map(|_| Answer::Done),
        Op::Create(spec) => containers.create(spec).map(|pid| Answer::Created { pid }),
        Op::Start { id } => containers.start(&id).map(|_| Answer::Done),
        Op::Signal { id, signal } => containers.signal(&id, signal).map(|_| Answer::Done),
        Op::Stats { id } => containers.stats(&id).map(Answer::Stats),
        Op::Delete { id } => containers.delete(&id).map(|_| Answer::Done),
        Op::Resize { id, rows, cols } => containers.resize(&id, rows, cols).map(|_| Answer::Done),
        Op::Shutdown { .. } => unreachable!("handled by serve"),
    }
}
