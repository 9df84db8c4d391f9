//! vmctl guest agent (PID 1 inside microVMs) and its host-side protocol.
