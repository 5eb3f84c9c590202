//! The binary protocol in a real `bookd serve` process: the ready line names both listeners,
//! the client books through the binary port of a durable node, the booking survives a restart,
//! and SIGTERM stops both listeners cleanly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use bookd_client::{Client, ClientConfig};
use bookd_engine::HoldStatus;
use support::Bookd;

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(future)
}

#[test]
fn a_durable_node_serves_the_binary_protocol_and_keeps_what_it_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let node = Bookd::serve(&data, &["--token", "t0k"]);
    assert!(!node.binary.is_empty(), "the ready line names the binary address");
    let binary = node.binary.clone();
    let (held, resource) = block_on(async {
        let config =
            ClientConfig { connections: 2, token: Some("t0k".into()), ..ClientConfig::default() };
        let client = Client::connect(&binary, config).await.unwrap();
        client.put_resource("ev-1", "A-12", 2).await.unwrap();
        let held = client.hold("ev-1", "h-1", &[("A-12", 1)], None, None).await.unwrap();
        client.confirm("ev-1", "h-1").await.unwrap();
        // The HTTP API sees what the binary protocol did.
        let resource = client.get_resource("ev-1", "A-12").await.unwrap();
        (held, resource)
    });
    assert!(!held.existing);
    assert_eq!((resource.held, resource.confirmed), (0, 1));
    let (status, body) = bookd::http_client::request(
        &node.http,
        "GET",
        "/v1/partitions/ev-1/holds/h-1",
        Some("t0k"),
        None,
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"confirmed\""), "{body}");
    assert!(node.terminate().success(), "SIGTERM stops both listeners with exit 0");

    let node = Bookd::serve(&data, &["--token", "t0k"]);
    let binary = node.binary.clone();
    let hold = block_on(async {
        let config =
            ClientConfig { connections: 1, token: Some("t0k".into()), ..ClientConfig::default() };
        let client = Client::connect(&binary, config).await.unwrap();
        client.get_hold("ev-1", "h-1").await.unwrap()
    });
    assert_eq!(hold.status, HoldStatus::Confirmed, "acknowledged over the binary protocol, kept");
    assert!(node.terminate().success());
}
