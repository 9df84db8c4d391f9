//! `api/openapi.yaml` documents exactly the server's route table, and its schemas use the
//! field names the wire types accept.

use std::collections::BTreeSet;

use api::routes::ROUTES;
use serde_norway::Value;

fn spec() -> Value {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.yaml"))
        .expect("read api/openapi.yaml");
    serde_norway::from_str(&text).expect("api/openapi.yaml is valid YAML")
}

#[test]
fn spec_routes_equal_server_routes() {
    let spec = spec();
    assert!(spec["openapi"].as_str().unwrap().starts_with("3."));
    let mut in_spec = BTreeSet::new();
    for (path, item) in spec["paths"].as_mapping().expect("paths") {
        let path = path.as_str().unwrap().to_string();
        for (key, _) in item.as_mapping().unwrap() {
            let key = key.as_str().unwrap();
            if ["get", "put", "patch", "post", "delete", "head", "options"].contains(&key) {
                in_spec.insert((key.to_uppercase(), path.clone()));
            }
        }
    }
    let in_server: BTreeSet<_> = ROUTES
        .iter()
        .map(|r| (r.method.to_string(), r.path.to_string()))
        .collect();
    let missing: Vec<_> = in_server.difference(&in_spec).collect();
    let extra: Vec<_> = in_spec.difference(&in_server).collect();
    assert!(
        missing.is_empty(),
        "routes missing from openapi.yaml: {missing:?}"
    );
    assert!(
        extra.is_empty(),
        "openapi.yaml routes the server lacks: {extra:?}"
    );
}

#[test]
fn every_ref_resolves_and_schemas_match_types() {
    let spec = spec();
    let text = serde_norway::to_string(&spec).unwrap();
    let schemas = spec["components"]["schemas"].as_mapping().unwrap();
    for line in text.lines().filter(|l| l.contains("$ref")) {
        let target = line
            .split("#/components/")
            .nth(1)
            .unwrap()
            .trim_matches(['"', '\'', ' ']);
        let (kind, name) = target.split_once('/').unwrap();
        assert!(
            spec["components"][kind].get(name).is_some(),
            "dangling $ref {target}"
        );
    }
    // A document with every property of the spec's MachineConfiguration and Drive must be
    // accepted by the wire types (deny_unknown_fields would reject a name the types lack).
    let props = |name: &str| -> Vec<String> {
        schemas[name]["properties"]
            .as_mapping()
            .unwrap()
            .keys()
            .map(|k| k.as_str().unwrap().to_string())
            .collect()
    };
    let mut m = serde_json::Map::new();
    for p in props("MachineConfiguration") {
        let v = match p.as_str() {
            "vcpu_count" => serde_json::json!(2),
            "mem_size_mib" => serde_json::json!(128),
            "cpu_template" | "huge_pages" => serde_json::json!("None"),
            _ => serde_json::json!(false),
        };
        m.insert(p, v);
    }
    serde_json::from_value::<api::types::MachineConfig>(m.into()).unwrap();
    let full_keys: BTreeSet<_> = props("FullVmConfiguration").into_iter().collect();
    let ours = serde_json::to_value(api::VmResources::default()).unwrap();
    let ours: BTreeSet<_> = ours.as_object().unwrap().keys().cloned().collect();
    assert_eq!(full_keys, ours);
}
