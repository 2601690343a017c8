//! `spec/openapi.yaml` and the router cannot drift: every route is in the spec with
//! the same method, and every operation in the spec is routed; unauthenticated routes
//! are exactly those the spec marks `security: []`.

use std::collections::BTreeSet;

use serde_json::Value;
use worktrain_daemon::api::{MCP_PATH, routes};

fn spec() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../spec/openapi.yaml");
    let text = std::fs::read_to_string(path).expect("spec/openapi.yaml");
    serde_norway::from_str(&text).expect("spec/openapi.yaml parses")
}

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

#[test]
fn every_route_is_in_the_spec_and_vice_versa() {
    let spec = spec();
    assert!(
        spec["openapi"].as_str().unwrap().starts_with("3.1"),
        "OpenAPI 3.1"
    );
    let mut in_spec = BTreeSet::new();
    let mut open_in_spec = BTreeSet::new();
    for (path, item) in spec["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            if !METHODS.contains(&method.as_str()) {
                continue;
            }
            let key = (method.to_uppercase(), path.clone());
            if op
                .get("security")
                .and_then(Value::as_array)
                .is_some_and(|s| s.is_empty())
            {
                open_in_spec.insert(key.clone());
            }
            assert!(op["operationId"].is_string(), "{key:?} has no operationId");
            assert!(op["responses"].is_object(), "{key:?} has no responses");
            in_spec.insert(key);
        }
    }
    let mut routed = BTreeSet::new();
    let mut open_routed = BTreeSet::new();
    for r in routes() {
        let key = (r.method.as_str().to_owned(), r.path.to_owned());
        assert!(routed.insert(key.clone()), "duplicate route {key:?}");
        if !r.auth {
            open_routed.insert(key);
        }
    }
    if worktrain_daemon::mcp::ENABLED {
        for m in ["POST", "GET", "DELETE"] {
            routed.insert((m.to_owned(), MCP_PATH.to_owned()));
        }
    }
    let missing: Vec<_> = routed.difference(&in_spec).collect();
    let extra: Vec<_> = in_spec.difference(&routed).collect();
    assert!(
        missing.is_empty(),
        "routes missing from spec/openapi.yaml: {missing:?}"
    );
    assert!(
        extra.is_empty(),
        "spec/openapi.yaml documents routes that do not exist: {extra:?}"
    );
    assert_eq!(open_routed, open_in_spec, "unauthenticated routes differ");
    // Every schema reference resolves.
    let text = spec.to_string();
    for cap in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = cap.split('"').next().unwrap();
        assert!(
            spec["components"]["schemas"][name].is_object(),
            "unresolved $ref {name}"
        );
    }
}
