use super::*;

fn err(method: &str, path: &str, body: &str) -> String {
    parse_request(method, path, body.as_bytes())
        .unwrap_err()
        .message
}

#[test]
fn every_route_has_a_handler() {
    let body = |r: &Route| match r.path {
        "/vm" => r#"{"state":"Paused"}"#,
        "/actions" => r#"{"action_type":"InstanceStart"}"#,
        _ => "{}",
    };
    for route in ROUTES {
        let path = route
            .path
            .replace("{drive_id}", "d")
            .replace("{iface_id}", "i");
        let b = if route.method == "GET" {
            ""
        } else {
            body(route)
        };
        match parse_request(route.method, &path, b.as_bytes()) {
            Ok(_) => {}
            Err(e) => assert_eq!(e.status, 400, "{route:?}: {e}"),
        }
    }
}

#[test]
fn unknown_path_or_method_is_400_like_firecracker() {
    assert_eq!(
        err("GET", "/nope", ""),
        "Invalid request method and/or path: GET /nope."
    );
    assert_eq!(
        err("DELETE", "/", ""),
        "Invalid request method and/or path: DELETE /."
    );
    assert_eq!(
        err("POST", "/actions", "{}"),
        "Invalid request method and/or path: POST /actions."
    );
    assert!(err("GET", "/drives/x/y", "").starts_with("Invalid request"));
    assert!(err("PATCH", "/boot-source", "{}").starts_with("Invalid request"));
}

#[test]
fn body_presence_rules() {
    assert_eq!(err("GET", "/", "{}"), "GET request cannot have a body.");
    assert_eq!(err("PUT", "/actions", ""), "Empty PUT request.");
    assert_eq!(err("PATCH", "/vm", "  "), "Empty PATCH request.");
}

#[test]
fn ids_checked_and_must_match() {
    let body = r#"{"drive_id":"a","path_on_host":"/x","is_root_device":true,"is_read_only":false}"#;
    assert!(parse_request("PUT", "/drives/a", body.as_bytes()).is_ok());
    assert!(err("PUT", "/drives/b", body).contains("does not match"));
    assert!(err("PUT", "/drives/a-b", body).contains("'-'"));
    assert!(err("PUT", "/drives/", body).contains("empty"));
    let long = "a".repeat(65);
    assert!(err("PUT", &format!("/drives/{long}"), body).contains("limit is 64"));
}

#[test]
fn json_errors_name_the_field() {
    let e = err(
        "PUT",
        "/machine-config",
        r#"{"vcpu_count":"2","mem_size_mib":128}"#,
    );
    assert!(
        e.contains("field 'vcpu_count'") && e.contains("invalid type"),
        "{e}"
    );
    let e = err(
        "PUT",
        "/machine-config",
        r#"{"vcpu_count":2,"mem_size_mib":128,"foo":1}"#,
    );
    assert!(e.contains("unknown field `foo`"), "{e}");
    let e = err(
        "PUT",
        "/machine-config",
        r#"{"vcpu_count":99999999999999999999999}"#,
    );
    assert!(e.contains("vcpu_count"), "{e}");
    let e = err("PUT", "/boot-source", "not json");
    assert!(e.starts_with("An error occurred when deserializing"), "{e}");
    let e = err("PUT", "/actions", r#"{"action_type":"Explode"}"#);
    assert!(e.contains("action_type") && e.contains("Explode"), "{e}");
    let e = err(
        "PUT",
        "/drives/d",
        r#"{"drive_id":"d","path_on_host":"/x","is_root_device":true,"rate_limiter":{"bandwidth":{"size":-1,"refill_time":1}}}"#,
    );
    assert!(e.contains("rate_limiter.bandwidth.size"), "{e}");
    let deep = "[".repeat(10_000);
    assert!(err("PUT", "/boot-source", &deep).contains("deserializing"));
}

#[test]
fn actions_and_vm_state() {
    let p = |m, path, b: &str| parse_request(m, path, b.as_bytes()).unwrap();
    assert_eq!(
        p("PUT", "/actions", r#"{"action_type":"SendCtrlAltDel"}"#),
        VmmAction::SendCtrlAltDel
    );
    assert_eq!(
        p("PUT", "/actions", r#"{"action_type":"FlushMetrics"}"#),
        VmmAction::FlushMetrics
    );
    assert_eq!(
        p("PATCH", "/vm", r#"{"state":"Resumed"}"#),
        VmmAction::Resume
    );
    let v = p(
        "PUT",
        "/vsock",
        r#"{"vsock_id":"v","guest_cid":3,"uds_path":"/tmp/v"}"#,
    );
    assert!(matches!(v, VmmAction::PutVsock(c) if c.guest_cid == 3));
}

mod fuzz {
    use proptest::prelude::*;

    use super::*;

    fn method() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("GET".to_string()),
            Just("PUT".to_string()),
            Just("PATCH".to_string()),
            "[A-Z]{1,8}"
        ]
    }

    fn path() -> impl Strategy<Value = String> {
        let known: Vec<String> = ROUTES
            .iter()
            .map(|r| r.path.replace("{drive_id}", "d").replace("{iface_id}", "i"))
            .collect();
        prop_oneof![proptest::sample::select(known), "/[ -~]{0,80}"]
    }

    fn body() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..256),
            // JSON-ish text with the API's field names, to get past the first byte.
            "\\{(\"(drive_id|path_on_host|vcpu_count|mem_size_mib|state|action_type|guest_cid|uds_path|rate_limiter|bandwidth|size|refill_time)\": ?(-?[0-9]{1,25}|\"[a-zA-Z_/]{0,10}\"|true|null|\\{\\}|\\[\\]),? ?){0,6}\\}"
                .prop_map(String::into_bytes),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn any_request_parses_or_is_a_4xx(m in method(), p in path(), b in body()) {
            if let Err(e) = parse_request(&m, &p, &b) {
                prop_assert!((400..500).contains(&e.status), "{} {} -> {}", m, p, e);
                prop_assert!(!e.message.is_empty());
            }
        }
    }
}
