//! The operations guide stays true to the code: its metrics reference is exactly what
//! `bookd_server::http::metrics::reference_markdown()` renders from the metric table the server uses.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[test]
fn operations_guide_lists_every_metric() {
    let guide =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/OPERATIONS.md"))
            .expect("docs/OPERATIONS.md");
    let reference = bookd_server::http::metrics::reference_markdown();
    assert!(
        guide.contains(reference.trim()),
        "docs/OPERATIONS.md's metrics reference is stale; paste this under ## Metrics:\n{reference}"
    );
}
