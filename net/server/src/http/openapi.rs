//! The OpenAPI 3.1 description of the whole API (`openapi.json` beside this file), served at
//! `GET /openapi.json` as the node is configured: with a token, every operation but `/health`
//! requires the bearer scheme; without one, no operation requires anything and none answers 401.
//!
//! Invariant: the document describes exactly the routes of [`super::router::ROUTES`], no more
//! and no fewer; the tests here and in `net/server/tests/http.rs` check both directions.

use bytes::Bytes;

/// The document, embedded at compile time, for a node with a token.
pub const DOCUMENT: &str = include_str!("openapi.json");

/// The document for a node that requires a token (`token_required`) or not.
pub fn document(token_required: bool, shards: usize) -> Bytes {
    let mut document: serde_json::Value = match serde_json::from_str(DOCUMENT) {
        Ok(document) => document,
        // Checked by the tests below: the embedded document always parses.
        Err(error) => panic!("invariant broken: openapi.json does not parse: {error}"),
    };
    if !token_required {
        without_auth(&mut document);
    }
    with_cursor_shards(&mut document, shards);
    match serde_json::to_vec(&document) {
        Ok(bytes) => Bytes::from(bytes),
        Err(error) => panic!("invariant broken: a parsed document does not serialise: {error}"),
    }
}

/// A cursor names a position in each of the node's shards: the pattern says how many.
fn with_cursor_shards(document: &mut serde_json::Value, shards: usize) {
    const POSITION: &str = "[1-9][0-9]{0,18}\\.[0-9]{1,9}";
    let more = shards.saturating_sub(1);
    let pattern = format!("^c{POSITION}(_{POSITION}){{{more}}}$");
    // "c", then per shard up to 19 + 1 + 9 digits and a separator.
    let length_max = 1 + shards.max(1) * 30;
    if let Some(cursor) = document.pointer_mut("/components/schemas/Cursor") {
        cursor["pattern"] = serde_json::Value::String(pattern);
        cursor["maxLength"] = serde_json::Value::from(length_max);
    }
}

/// Removes every security requirement and every 401 response.
fn without_auth(document: &mut serde_json::Value) {
    if let Some(root) = document.as_object_mut() {
        root.remove("security");
    }
    let Some(paths) = document.get_mut("paths").and_then(serde_json::Value::as_object_mut) else {
        return;
    };
    for item in paths.values_mut().filter_map(serde_json::Value::as_object_mut) {
        for operation in item.values_mut().filter_map(serde_json::Value::as_object_mut) {
            operation.remove("security");
            if let Some(responses) =
                operation.get_mut("responses").and_then(serde_json::Value::as_object_mut)
            {
                responses.remove("401");
            }
        }
    }
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
    fn without_a_token_nothing_requires_one() {
        let secured: serde_json::Value = serde_json::from_slice(&document(true, 2)).unwrap();
        assert!(secured.get("security").is_some());
        let open: serde_json::Value = serde_json::from_slice(&document(false, 2)).unwrap();
        assert!(open.get("security").is_none());
        let text = open.to_string();
        assert!(!text.contains("\"security\""), "an operation still names a security requirement");
        assert!(!text.contains("\"401\""), "an operation still answers 401");
        assert_eq!(operations(&open), operations(&secured), "the same operations either way");
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
