//! The OpenAPI document is valid OpenAPI 3 (checked by the standard
//! `openapi-spec-validator`), and it describes exactly the routes the gateway serves.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

fn manifest() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn the_document_validates_with_a_standard_validator() {
    let doc = manifest().join("openapi.json");
    let out = Command::new("python3")
        .args(["-m", "openapi_spec_validator"])
        .arg(&doc)
        .output()
        .expect("python3 is needed: apt-get install python3");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !text.contains("No module named"),
        "openapi-spec-validator is not installed: pip install openapi-spec-validator ({text})"
    );
    assert!(
        out.status.success(),
        "the OpenAPI document is invalid:\n{text}"
    );
    assert!(text.contains("OK"), "{text}");
}

#[test]
fn the_document_and_the_router_name_the_same_routes() {
    let doc: serde_json::Value =
        serde_json::from_str(palisade_gateway::api::OPENAPI).expect("json");
    let documented: BTreeSet<String> = doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, ops)| {
            ops.as_object()
                .into_iter()
                .flatten()
                .map(move |(method, _)| format!("{} {path}", method.to_uppercase()))
        })
        .collect();
    let source = std::fs::read_to_string(manifest().join("src/api.rs")).expect("api.rs");
    // rustfmt may split a `.route(` call over lines: read the source as one line.
    let flat = source.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut served = BTreeSet::new();
    for piece in flat.split(".route(").skip(1) {
        let rest = piece
            .trim_start()
            .strip_prefix('"')
            .expect("route path literal");
        let (path, handler) = rest.split_once('"').expect("route line");
        // A wildcard capture (`{*object}`) is a path parameter (`{object}`) to OpenAPI.
        let path = path.replace("{*", "{");
        let handler = handler.trim_start_matches([',', ' ']);
        let method = handler.split('(').next().expect("method").to_uppercase();
        served.insert(format!("{method} {path}"));
        // Methods chained on the same route: `get(a).put(b)`.
        let route_end = handler.find(".route(").unwrap_or(handler.len());
        for chained in ["get", "post", "put", "delete"] {
            if handler[..route_end].contains(&format!(").{chained}(")) {
                served.insert(format!("{} {path}", chained.to_uppercase()));
            }
        }
    }
    assert!(served.len() >= 10, "{served:?}");
    assert_eq!(documented, served, "openapi.json and api.rs disagree");
}
