//! The OpenAPI 3.1 description of the whole API (`openapi.json` beside this file), served as
//! is at `GET /openapi.json`.
//!
//! Invariant: the document describes exactly the routes of [`super::router::ROUTES`], no more
//! and no fewer; the tests here and in `net/tests/http.rs` check both directions.

use bytes::Bytes;

/// The document, embedded at compile time.
pub const DOCUMENT: &str = include_str!("openapi.json");

/// The document as a response body (no copy).
pub fn document() -> Bytes {
    Bytes::from_static(DOCUMENT.as_bytes())
}

const METHODS: [&str; 8] = ["get", "put", "post", "delete", "patch", "head", "options", "trace"];

/// The `(METHOD, path template)` pairs a parsed OpenAPI document describes, sorted.
pub fn operations(document: &serde_json::Value) -> Vec<(String, String)> {
    let mut operations = Vec::new();
    if let Some(paths) = document.get("paths").and_then(serde_json::Value::as_object) {
        for (path, item) in paths {
            for method in METHODS {
                if item.get(method).is_some() {
                    operations.push((method.to_ascii_uppercase(), path.clone()));
                }
            }
        }
    }
    operations.sort();
    operations
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::router::ROUTES;

    #[test]
    fn document_describes_exactly_the_router() {
        let document: serde_json::Value = serde_json::from_str(DOCUMENT).unwrap();
        assert_eq!(document["openapi"], "3.1.0");
        let mut routes: Vec<(String, String)> = ROUTES
            .iter()
            .map(|spec| (spec.method.to_string(), spec.template.to_string()))
            .collect();
        routes.sort();
        assert_eq!(operations(&document), routes);
    }

    #[test]
    fn every_reference_resolves() {
        let document: serde_json::Value = serde_json::from_str(DOCUMENT).unwrap();
        let mut stack = vec![&document];
        while let Some(value) = stack.pop() {
            match value {
                serde_json::Value::Object(map) => {
                    if let Some(target) = map.get("$ref").and_then(serde_json::Value::as_str) {
                        let pointer = target.trim_start_matches('#');
                        assert!(document.pointer(pointer).is_some(), "dangling $ref {target}");
                    }
                    stack.extend(map.values());
                }
                serde_json::Value::Array(values) => stack.extend(values),
                _ => {}
            }
        }
    }
}
