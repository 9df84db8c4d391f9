//! The route table and the translation of an HTTP request into a [`VmmAction`].
//!
//! Pure functions, no I/O: the server feeds them the method, path and body it read.

use serde::de::DeserializeOwned;

use crate::action::VmmAction;
use crate::types::{
    check_id, ActionType, BlockDeviceConfig, BlockDeviceUpdateConfig, BootSourceConfig,
    InstanceActionInfo, LoggerConfig, MachineConfig, MachineConfigUpdate, MetricsConfig,
    NetworkInterfaceConfig, NetworkInterfaceUpdateConfig, VmStateRequest, VmStateUpdate,
    VsockConfig,
};

/// One route of the API: an HTTP method and a path template (`{name}` is a path parameter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    /// `GET`, `PUT` or `PATCH`.
    pub method: &'static str,
    /// Path template, as in `api/openapi.yaml`.
    pub path: &'static str,
}

const fn r(method: &'static str, path: &'static str) -> Route {
    Route { method, path }
}

/// Every route the server answers; `api/openapi.yaml` documents exactly these.
pub const ROUTES: &[Route] = &[
    r("GET", "/"),
    r("GET", "/version"),
    r("GET", "/vm/config"),
    r("PATCH", "/vm"),
    r("PUT", "/actions"),
    r("PUT", "/boot-source"),
    r("GET", "/machine-config"),
    r("PUT", "/machine-config"),
    r("PATCH", "/machine-config"),
    r("PUT", "/drives/{drive_id}"),
    r("PATCH", "/drives/{drive_id}"),
    r("PUT", "/network-interfaces/{iface_id}"),
    r("PATCH", "/network-interfaces/{iface_id}"),
    r("PUT", "/vsock"),
    r("PUT", "/logger"),
    r("PUT", "/metrics"),
];

/// A request that cannot become an action; answered with `status` and `{"fault_message"}`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RequestError {
    /// HTTP status (400 unless said otherwise).
    pub status: u16,
    /// The fault message.
    pub message: String,
}

impl RequestError {
    /// A 400 Bad Request with `message`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: 400,
            message: message.into(),
        }
    }
}

/// Matches `path` against `template`; returns the path parameter, if the template has one.
fn match_template<'p>(template: &str, path: &'p str) -> Option<Option<&'p str>> {
    let mut param = None;
    let mut t = template.split('/');
    let mut p = path.split('/');
    loop {
        match (t.next(), p.next()) {
            (None, None) => return Some(param),
            (Some(ts), Some(ps)) if ts.starts_with('{') => param = Some(ps),
            (Some(ts), Some(ps)) if ts == ps => {}
            _ => return None,
        }
    }
}

/// Finds the route of `method` and `path` (query string already removed) and its parameter.
pub fn find_route<'p>(method: &str, path: &'p str) -> Option<(Route, Option<&'p str>)> {
    ROUTES
        .iter()
        .filter(|r| r.method == method)
        .find_map(|r| match_template(r.path, path).map(|param| (*r, param)))
}

fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, RequestError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    let value: T = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let at = if path == "." {
            String::new()
        } else {
            format!("field '{path}': ")
        };
        RequestError::bad_request(format!(
            "An error occurred when deserializing the json body of a request: {at}{}.",
            e.inner()
        ))
    })?;
    Ok(value)
}

fn checked_id<'p>(field: &str, id: Option<&'p str>) -> Result<&'p str, RequestError> {
    let id = id.unwrap_or("");
    check_id(field, id).map_err(|e| {
        RequestError::bad_request(format!(
            "API Resource IDs can only contain alphanumeric characters and underscores: {e}."
        ))
    })?;
    Ok(id)
}

fn same_id(path_id: &str, body_id: &str) -> Result<(), RequestError> {
    if path_id != body_id {
        return Err(RequestError::bad_request(format!(
            "The id from the path does not match the id from the body! (path: '{path_id}', \
             body: '{body_id}')"
        )));
    }
    Ok(())
}

/// Turns a request into an action. `path` must not contain the query string.
pub fn parse_request(method: &str, path: &str, body: &[u8]) -> Result<VmmAction, RequestError> {
    let Some((route, param)) = find_route(method, path) else {
        return Err(RequestError::bad_request(format!(
            "Invalid request method and/or path: {method} {path}."
        )));
    };
    let has_body = !body.iter().all(u8::is_ascii_whitespace);
    match (method, has_body) {
        ("GET", true) => return Err(RequestError::bad_request("GET request cannot have a body.")),
        ("PUT", false) => return Err(RequestError::bad_request("Empty PUT request.")),
        ("PATCH", false) => return Err(RequestError::bad_request("Empty PATCH request.")),
        _ => {}
    }
    let action = match (route.method, route.path) {
        ("GET", "/") => VmmAction::GetInstanceInfo,
        ("GET", "/version") => VmmAction::GetVersion,
        ("GET", "/vm/config") => VmmAction::GetFullVmConfig,
        ("GET", "/machine-config") => VmmAction::GetMachineConfig,
        ("PATCH", "/vm") => match parse_body::<VmStateUpdate>(body)?.state {
            VmStateRequest::Paused => VmmAction::Pause,
            VmStateRequest::Resumed => VmmAction::Resume,
        },
        ("PUT", "/actions") => match parse_body::<InstanceActionInfo>(body)?.action_type {
            ActionType::InstanceStart => VmmAction::InstanceStart,
            ActionType::SendCtrlAltDel => VmmAction::SendCtrlAltDel,
            ActionType::FlushMetrics => VmmAction::FlushMetrics,
        },
        ("PUT", "/boot-source") => VmmAction::PutBootSource(parse_body::<BootSourceConfig>(body)?),
        ("PUT", "/machine-config") => {
            VmmAction::PutMachineConfig(parse_body::<MachineConfig>(body)?)
        }
        ("PATCH", "/machine-config") => {
            VmmAction::PatchMachineConfig(parse_body::<MachineConfigUpdate>(body)?)
        }
        ("PUT", "/drives/{drive_id}") => {
            let id = checked_id("drive_id", param)?;
            let cfg = parse_body::<BlockDeviceConfig>(body)?;
            same_id(id, &cfg.drive_id)?;
            VmmAction::PutDrive(cfg)
        }
        ("PATCH", "/drives/{drive_id}") => {
            let id = checked_id("drive_id", param)?;
            let cfg = parse_body::<BlockDeviceUpdateConfig>(body)?;
            same_id(id, &cfg.drive_id)?;
            VmmAction::PatchDrive(cfg)
        }
        ("PUT", "/network-interfaces/{iface_id}") => {
            let id = checked_id("iface_id", param)?;
            let cfg = parse_body::<NetworkInterfaceConfig>(body)?;
            same_id(id, &cfg.iface_id)?;
            VmmAction::PutNetworkInterface(cfg)
        }
        ("PATCH", "/network-interfaces/{iface_id}") => {
            let id = checked_id("iface_id", param)?;
            let cfg = parse_body::<NetworkInterfaceUpdateConfig>(body)?;
            same_id(id, &cfg.iface_id)?;
            VmmAction::PatchNetworkInterface(cfg)
        }
        ("PUT", "/vsock") => VmmAction::PutVsock(parse_body::<VsockConfig>(body)?),
        ("PUT", "/logger") => VmmAction::PutLogger(parse_body::<LoggerConfig>(body)?),
        ("PUT", "/metrics") => VmmAction::PutMetrics(parse_body::<MetricsConfig>(body)?),
        (m, p) => {
            // Every entry of ROUTES has an arm above; the unit tests check it.
            return Err(RequestError {
                status: 500,
                message: format!("route {m} {p} has no handler"),
            });
        }
    };
    Ok(action)
}

#[cfg(test)]
#[path = "routes_tests.rs"]
mod tests;
