//! The operations guide stays true to the code: its replication metrics table is exactly what
//! `bookd_replication::metrics::reference_markdown()` renders from the families `/metrics` uses.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[test]
fn operations_guide_lists_every_replication_metric() {
    let guide =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/OPERATIONS.md"))
            .expect("docs/OPERATIONS.md");
    let reference = bookd_replication::metrics::reference_markdown();
    assert!(
        guide.contains(reference.trim()),
        "docs/OPERATIONS.md's replication metrics are stale; paste this under ### Replication metrics:\n{reference}"
    );
}
