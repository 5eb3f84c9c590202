//! The HTTP/JSON API over real HTTP on 127.0.0.1 (port 0), against in-memory shard logs:
//! every route, status and error code of the public API, idempotent repeats, expiry on
//! an idle server (fake clock), paging, batches, auth, body limits, bad input that changes
//! nothing, concurrency, overload, timeouts, the connection limit, graceful shutdown, and the
//! OpenAPI document against the router.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bookd_server::http::router::ROUTES;
use bookd_server::http::{openapi, HttpConfig, NodeInfo, PromoteFuture, Role, StorageInfo};
use serde_json::{json, Value};
use support::http::*;
use support::{closed_within, wait_until, T0};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const P: &str = "/v1/partitions/event-1";

async fn server() -> TestServer {
    TestServer::start(Options::default()).await
}

async fn put(client: &mut Client, resource: &str, capacity: u64) -> Response {
    client.put_json(&format!("{P}/resources/{resource}"), &json!({ "capacity": capacity })).await
}

async fn hold(client: &mut Client, id: &str, items: Value) -> Response {
    client.post_json(&format!("{P}/holds"), &json!({ "id": id, "items": items })).await
}

async fn resource(client: &mut Client, resource: &str) -> Value {
    let response = client.get(&format!("{P}/resources/{resource}")).await;
    assert_eq!(response.status, 200, "{}", response.text());
    response.json()
}

fn counts(resource: &Value) -> (u64, u64, u64, u64) {
    let field = |name: &str| resource[name].as_u64().unwrap();
    (field("capacity"), field("held"), field("confirmed"), field("available"))
}

fn assert_error(response: &Response, status: u16, code: &str) {
    assert_eq!(response.status, status, "{}", response.text());
    assert_eq!(response.code(), code, "{}", response.text());
    assert!(response.json()["message"].is_string());
    assert_eq!(response.header("content-type"), Some("application/json"));
}

fn assert_invalid(response: &Response, field: &str) {
    assert_error(response, 422, "invalid");
    assert_eq!(response.json()["field"], field, "{}", response.text());
}

// ----- resources -----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_creates_then_changes_and_get_shows_the_counts() {
    let server = server().await;
    let mut client = server.client();
    let created = put(&mut client, "A-12", 5).await;
    assert_eq!(created.status, 201, "{}", created.text());
    assert_eq!(created.header("content-type"), Some("application/json"));
    assert_eq!(
        created.json(),
        json!({"partition":"event-1","id":"A-12","capacity":5,"held":0,"confirmed":0,"available":5})
    );
    let changed = put(&mut client, "A-12", 7).await;
    assert_eq!(changed.status, 200);
    assert_eq!(changed.json()["capacity"], 7);
    assert_eq!(counts(&resource(&mut client, "A-12").await), (7, 0, 0, 7));

    let missing = client.get(&format!("{P}/resources/nope")).await;
    assert_error(&missing, 404, "resource_not_found");
    assert_eq!(missing.json()["resource"], "nope");

    assert_eq!(
        hold(&mut client, "h1", json!([{"resource":"A-12","quantity":4}])).await.status,
        201
    );
    let below = put(&mut client, "A-12", 3).await;
    assert_error(&below, 409, "capacity_below_usage");
    assert_eq!(counts(&resource(&mut client, "A-12").await), (7, 4, 0, 3));
    assert_eq!(put(&mut client, "A-12", 4).await.status, 200);
    assert_eq!(put(&mut client, "zero", 0).await.status, 201);

    // Path segments are percent-decoded; the contract's alphabet also works unencoded.
    let body = json!({"capacity": 2});
    let encoded =
        client.put_json("/v1/partitions/hotel%3A7/resources/deluxe%402026-12-01", &body).await;
    assert_eq!(encoded.status, 201, "{}", encoded.text());
    assert_eq!(encoded.json()["partition"], "hotel:7");
    assert_eq!(encoded.json()["id"], "deluxe@2026-12-01");
    let plain = client.get("/v1/partitions/hotel:7/resources/deluxe@2026-12-01").await;
    assert_eq!(plain.json()["capacity"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_pages_to_the_end_in_byte_order() {
    let server = server().await;
    let mut client = server.client();
    let mut expected = Vec::new();
    for index in 0..25 {
        let id = format!("s-{index}");
        assert_eq!(put(&mut client, &id, index).await.status, 201);
        expected.push(id);
    }
    for other in ["r-1", "t-1", "s"] {
        assert_eq!(put(&mut client, other, 1).await.status, 201);
    }
    expected.sort(); // byte order: s-0, s-1, s-10, …
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut path = format!("{P}/resources?prefix=s-&limit=10");
        if let Some(after) = &after {
            path.push_str(&format!("&after={after}"));
        }
        let page = client.get(&path).await;
        assert_eq!(page.status, 200, "{}", page.text());
        let page = page.json();
        pages += 1;
        for resource in page["resources"].as_array().unwrap() {
            seen.push(resource["id"].as_str().unwrap().to_string());
            assert_eq!(resource["partition"], "event-1");
            assert!(resource["available"].is_u64());
        }
        match page["next"].as_str() {
            Some(next) => {
                assert_eq!(Some(next), seen.last().map(String::as_str));
                after = Some(next.to_string());
            }
            None => break,
        }
        assert!(pages < 10, "paging does not end");
    }
    assert_eq!(seen, expected);
    assert!(pages >= 3);

    let all = client.get(&format!("{P}/resources")).await.json();
    assert_eq!(all["resources"].as_array().unwrap().len(), 28);
    assert_eq!(all["next"], Value::Null);
    let ids: Vec<&str> =
        all["resources"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap()).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted);

    let mut empty = client.get("/v1/partitions/nobody/resources").await.json();
    // Every listing carries the change feed's position (list-then-watch).
    let cursor = empty.as_object_mut().unwrap().remove("cursor").unwrap();
    assert!(cursor.as_str().unwrap().starts_with('c'), "{cursor}");
    assert_eq!(empty, json!({"resources": [], "next": null}));
    let encoded = client.get(&format!("{P}/resources?prefix=s%2D2&limit=1000")).await.json();
    assert_eq!(encoded["resources"].as_array().unwrap().len(), 6); // s-2, s-20 … s-24

    assert_invalid(&client.get(&format!("{P}/resources?limit=0")).await, "limit");
    assert_invalid(&client.get(&format!("{P}/resources?limit=1001")).await, "limit");
    assert_invalid(&client.get(&format!("{P}/resources?limit=ten")).await, "limit");
    assert_invalid(&client.get(&format!("{P}/resources?limit=1.5")).await, "limit");
    assert_invalid(&client.get(&format!("{P}/resources?prefix=a%20b")).await, "prefix");
    assert_invalid(&client.get(&format!("{P}/resources?after=a/b")).await, "after");
    assert_error(&client.get(&format!("{P}/resources?limt=5")).await, 400, "bad_request");
    assert_error(&client.get(&format!("{P}/resources?limit=1&limit=2")).await, 400, "bad_request");
    assert_invalid(&client.get("/v1/partitions/a%20b/resources").await, "partition");
}

// ----- holds -----------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_lifecycle_with_idempotent_repeats() {
    let server = server().await;
    let mut client = server.client();
    put(&mut client, "a", 10).await;
    put(&mut client, "b", 10).await;
    let items = json!([{"resource":"a","quantity":2},{"resource":"b","quantity":3}]);
    let created = client
        .post_json(
            &format!("{P}/holds"),
            &json!({"id":"h1","items":items,"ttl_ms":60000,"ref":"order-7"}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text());
    let body = created.json();
    assert_eq!(body["partition"], "event-1");
    assert_eq!(body["id"], "h1");
    assert_eq!(body["status"], "held");
    assert_eq!(body["items"], items);
    assert_eq!(body["expires_at_ms"], T0 + 60_000);
    assert_eq!(body["ref"], "order-7");
    assert_eq!(body["existing"], false);

    // Same items in another order: the existing hold, 200.
    let again = hold(
        &mut client,
        "h1",
        json!([{"resource":"b","quantity":3},{"resource":"a","quantity":2}]),
    )
    .await;
    assert_eq!(again.status, 200);
    assert_eq!(again.json()["existing"], true);
    assert_eq!(again.json()["expires_at_ms"], T0 + 60_000);
    let conflict = hold(&mut client, "h1", json!([{"resource":"a","quantity":1}])).await;
    assert_error(&conflict, 409, "hold_id_conflict");
    assert_eq!(counts(&resource(&mut client, "a").await), (10, 2, 0, 8));

    let got = client.get(&format!("{P}/holds/h1")).await;
    assert_eq!(got.status, 200);
    assert!(got.json().get("existing").is_none(), "GET shows no `existing`");
    assert_eq!(got.json()["status"], "held");

    // extend
    server.advance_clock(1_000);
    let extended =
        client.post_json(&format!("{P}/holds/h1/extend"), &json!({"ttl_ms": 5000})).await;
    assert_eq!(extended.status, 200, "{}", extended.text());
    assert_eq!(extended.json()["expires_at_ms"], T0 + 1_000 + 5_000);
    assert!(extended.json().get("existing").is_none());

    // cancel of a held hold is refused
    assert_error(&client.post(&format!("{P}/holds/h1/cancel")).await, 409, "hold_not_confirmed");

    // confirm, and again
    let confirmed = client.post(&format!("{P}/holds/h1/confirm")).await;
    assert_eq!(confirmed.status, 200);
    assert_eq!(confirmed.json()["status"], "confirmed");
    let confirmed = client.post_json(&format!("{P}/holds/h1/confirm"), &json!({})).await;
    assert_eq!(confirmed.status, 200);
    assert_eq!(confirmed.json()["status"], "confirmed");
    assert_eq!(counts(&resource(&mut client, "a").await), (10, 0, 2, 8));
    assert_error(&client.post(&format!("{P}/holds/h1/release")).await, 409, "hold_confirmed");
    let extend = client.post_json(&format!("{P}/holds/h1/extend"), &json!({"ttl_ms": 5})).await;
    assert_error(&extend, 409, "hold_confirmed");

    // cancel, and again
    let cancelled = client.post(&format!("{P}/holds/h1/cancel")).await;
    assert_eq!(cancelled.status, 200);
    assert_eq!(cancelled.json()["status"], "cancelled");
    assert_eq!(client.post(&format!("{P}/holds/h1/cancel")).await.json()["status"], "cancelled");
    assert_eq!(counts(&resource(&mut client, "a").await), (10, 0, 0, 10));
    assert_error(&client.post(&format!("{P}/holds/h1/confirm")).await, 409, "hold_cancelled");
    assert_error(&client.post(&format!("{P}/holds/h1/release")).await, 409, "hold_cancelled");
    let extend = client.post_json(&format!("{P}/holds/h1/extend"), &json!({"ttl_ms": 5})).await;
    assert_error(&extend, 409, "hold_cancelled");

    // release, and again
    assert_eq!(hold(&mut client, "h2", json!([{"resource":"a","quantity":1}])).await.status, 201);
    let released = client.post(&format!("{P}/holds/h2/release")).await;
    assert_eq!(released.status, 200);
    assert_eq!(released.json()["status"], "released");
    assert_eq!(client.post(&format!("{P}/holds/h2/release")).await.json()["status"], "released");
    assert_error(&client.post(&format!("{P}/holds/h2/confirm")).await, 409, "hold_released");
    assert_error(&client.post(&format!("{P}/holds/h2/cancel")).await, 409, "hold_released");
    let extend = client.post_json(&format!("{P}/holds/h2/extend"), &json!({"ttl_ms": 5})).await;
    assert_error(&extend, 409, "hold_released");
    assert_eq!(counts(&resource(&mut client, "a").await), (10, 0, 0, 10));

    // unknown holds
    for verb in ["confirm", "release", "cancel"] {
        assert_error(&client.post(&format!("{P}/holds/nope/{verb}")).await, 404, "hold_not_found");
    }
    assert_error(&client.get(&format!("{P}/holds/nope")).await, 404, "hold_not_found");
    let extend = client.post_json(&format!("{P}/holds/nope/extend"), &json!({"ttl_ms": 5})).await;
    assert_error(&extend, 404, "hold_not_found");
    // default ttl and null ref
    let plain = hold(&mut client, "h3", json!([{"resource":"a","quantity":1}])).await.json();
    assert_eq!(plain["expires_at_ms"], T0 + 1_000 + 600_000);
    assert_eq!(plain["ref"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insufficient_capacity_names_the_item_and_records_nothing() {
    let server = server().await;
    let mut client = server.client();
    put(&mut client, "a", 5).await;
    put(&mut client, "b", 2).await;
    let refused = hold(
        &mut client,
        "h",
        json!([{"resource":"a","quantity":1},{"resource":"b","quantity":3}]),
    )
    .await;
    assert_error(&refused, 409, "insufficient_capacity");
    let body = refused.json();
    assert_eq!(
        (body["resource"].clone(), body["requested"].clone(), body["available"].clone()),
        (json!("b"), json!(3), json!(2))
    );
    assert_eq!(counts(&resource(&mut client, "a").await), (5, 0, 0, 5));
    assert_error(&client.get(&format!("{P}/holds/h")).await, 404, "hold_not_found");
    let missing = hold(&mut client, "h", json!([{"resource":"zz","quantity":1}])).await;
    assert_error(&missing, 404, "resource_not_found");
    assert_eq!(missing.json()["resource"], "zz");
    // The refused id may be used again.
    let granted = hold(&mut client, "h", json!([{"resource":"b","quantity":2}])).await;
    assert_eq!(granted.status, 201);
    assert_eq!(counts(&resource(&mut client, "b").await), (2, 2, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holds_expire_on_an_idle_server() {
    let server = server().await;
    let mut client = server.client();
    put(&mut client, "a", 3).await;
    let created = client
        .post_json(
            &format!("{P}/holds"),
            &json!({"id":"h","items":[{"resource":"a","quantity":2}],"ttl_ms":1000}),
        )
        .await;
    assert_eq!(created.json()["expires_at_ms"], T0 + 1_000);
    let early = client
        .post_json(
            &format!("{P}/holds"),
            &json!({"id":"e","items":[{"resource":"a","quantity":1}],"ttl_ms":1000}),
        )
        .await;
    assert_eq!(early.status, 201);
    server.advance_clock(999);
    assert_eq!(client.post(&format!("{P}/holds/e/confirm")).await.json()["status"], "confirmed");

    // Exactly at expires_at_ms: no request is sent; the idle shard's tick must expire it.
    server.advance_clock(1);
    let addr = server.addr;
    let freed = wait_until(Duration::from_secs(10), || async move {
        let mut probe = Client::new(addr);
        let resource = probe.get(&format!("{P}/resources/a")).await.json();
        resource["held"] == 0 && resource["available"] == 2
    })
    .await;
    assert!(freed, "expired units were not freed on an idle server");
    assert_eq!(client.get(&format!("{P}/holds/h")).await.json()["status"], "expired");
    assert_error(&client.post(&format!("{P}/holds/h/confirm")).await, 409, "hold_expired");
    let extend = client.post_json(&format!("{P}/holds/h/extend"), &json!({"ttl_ms": 5})).await;
    assert_error(&extend, 409, "hold_expired");
    assert_error(&client.post(&format!("{P}/holds/h/cancel")).await, 409, "hold_expired");
    // Release of an expired hold succeeds with the current state and changes nothing.
    let released = client.post(&format!("{P}/holds/h/release")).await;
    assert_eq!(released.status, 200);
    assert_eq!(released.json()["status"], "expired");
    assert_eq!(counts(&resource(&mut client, "a").await), (3, 0, 1, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirm_at_the_expiry_instant_is_refused() {
    let server = server().await;
    let mut client = server.client();
    put(&mut client, "a", 1).await;
    let created = client
        .post_json(
            &format!("{P}/holds"),
            &json!({"id":"h","items":[{"resource":"a","quantity":1}],"ttl_ms":50}),
        )
        .await;
    assert_eq!(created.status, 201);
    server.advance_clock(50);
    assert_error(&client.post(&format!("{P}/holds/h/confirm")).await, 409, "hold_expired");
    assert_eq!(counts(&resource(&mut client, "a").await), (1, 0, 0, 1));
}

// ----- batch -----------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_runs_independent_commands_in_order() {
    let server = server().await;
    let mut client = server.client();
    let body = json!({"commands": [
        {"op":"put_resource","partition":"p1","id":"r","capacity":2},
        {"op":"put_resource","partition":"p2","id":"r","capacity":1},
        {"op":"hold","partition":"p1","id":"h1","items":[{"resource":"r","quantity":1}],"ttl_ms":60000,"ref":"x"},
        {"op":"hold","partition":"p1","id":"h1","items":[{"resource":"r","quantity":1}]},
        {"op":"hold","partition":"p1","id":"h2","items":[{"resource":"r","quantity":5}]},
        {"op":"confirm","partition":"p1","id":"h1"},
        {"op":"hold","partition":"p2","id":"h9","items":[{"resource":"r","quantity":1}]},
        {"op":"extend","partition":"p2","id":"h9","ttl_ms":1000},
        {"op":"release","partition":"p2","id":"h9"},
        {"op":"cancel","partition":"p1","id":"h1"},
        {"op":"confirm","partition":"p1","id":"missing"},
        {"op":"fly","partition":"p1","id":"h1"},
        {"op":"put_resource","partition":"p1","id":"r2"},
        {"op":"put_resource","partition":"p1","id":"r2","capacity":"3"},
        {"op":"confirm","partition":"p1","id":"h1","ttl_ms":5},
        42,
        {"op":"put_resource","partition":"bad partition","id":"r","capacity":1},
        {"op":"hold","partition":"p1","id":"h3","items":[{"resource":"r","quantity":1.5}]},
        {"op":"put_resource","partition":"p1","id":"r3","capacity":-1}
    ]});
    let response = client.post_json("/v1/batch", &body).await;
    assert_eq!(response.status, 200, "{}", response.text());
    let results = response.json()["results"].as_array().unwrap().clone();
    let statuses: Vec<u64> = results.iter().map(|r| r["status"].as_u64().unwrap()).collect();
    assert_eq!(
        statuses,
        [
            201, 201, 201, 200, 409, 200, 201, 200, 200, 200, 404, 422, 400, 400, 400, 400, 422,
            400, 422
        ]
    );
    assert_eq!(results[0]["body"]["capacity"], 2);
    assert_eq!(results[2]["body"]["existing"], false);
    assert_eq!(results[2]["body"]["ref"], "x");
    assert_eq!(results[3]["body"]["existing"], true);
    assert_eq!(results[4]["body"]["error"], "insufficient_capacity");
    assert_eq!(results[4]["body"]["requested"], 5);
    assert_eq!(results[5]["body"]["status"], "confirmed");
    assert!(results[5]["body"].get("existing").is_none());
    assert_eq!(results[8]["body"]["status"], "released");
    assert_eq!(results[9]["body"]["status"], "cancelled");
    assert_eq!(results[10]["body"]["error"], "hold_not_found");
    assert_eq!(results[11]["body"]["field"], "op");
    assert_eq!(results[16]["body"]["field"], "partition");
    assert_eq!(results[18]["body"]["field"], "capacity");
    for result in &results[12..16] {
        assert_eq!(result["body"]["error"], "bad_request");
    }
    // Nothing the invalid elements named exists.
    assert_error(&client.get("/v1/partitions/p1/resources/r2").await, 404, "resource_not_found");
    assert_error(&client.get("/v1/partitions/p1/holds/h3").await, 404, "hold_not_found");

    let empty = client.post_json("/v1/batch", &json!({"commands": []})).await;
    assert_eq!(empty.json(), json!({"results": []}));
    assert_error(&client.post_json("/v1/batch", &json!({})).await, 400, "bad_request");
    assert_error(&client.post_json("/v1/batch", &json!({"commands": 5})).await, 400, "bad_request");
    assert_error(&client.post_json("/v1/batch", &json!([1])).await, 400, "bad_request");
}

// ----- partitions ------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_partition_that_does_not_exist_is_not_found() {
    let server = server().await;
    let mut client = server.client();
    let missing = client.delete("/v1/partitions/nowhere").await;
    assert_error(&missing, 404, "not_found");
    assert_eq!(missing.json()["message"], "partition not found");
    let with_body = client.request("DELETE", "/v1/partitions/nowhere", Some(b"{}")).await;
    assert_error(&with_body, 404, "not_found");
    let bad_body = client.request("DELETE", "/v1/partitions/nowhere", Some(br#"{"x":1}"#)).await;
    assert_error(&bad_body, 400, "bad_request");
    assert_invalid(&client.delete("/v1/partitions/bad%20name").await, "partition");
    // The route serves DELETE only.
    let wrong = client.get("/v1/partitions/nowhere").await;
    assert_error(&wrong, 405, "method_not_allowed");
    assert_eq!(wrong.header("allow"), Some("DELETE"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_with_a_held_hold_is_not_deleted_and_still_serves() {
    let server = server().await;
    let mut client = server.client();
    put(&mut client, "a", 3).await;
    assert_eq!(hold(&mut client, "h", json!([{"resource":"a","quantity":2}])).await.status, 201);
    let refused = client.delete(P).await;
    assert_error(&refused, 409, "partition_has_live_holds");
    assert_eq!(refused.json()["held"], 1, "{}", refused.text());
    // Nothing changed: the resource, the hold and new holds are still served.
    assert_eq!(counts(&resource(&mut client, "a").await), (3, 2, 0, 1));
    let held = client.get(&format!("{P}/holds/h")).await;
    assert_eq!(held.status, 200);
    assert_eq!(held.json()["status"], "held");
    assert_eq!(hold(&mut client, "h2", json!([{"resource":"a","quantity":1}])).await.status, 201);
    let refused = client.delete(P).await;
    assert_eq!(refused.json()["held"], 2, "{}", refused.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_without_held_holds_is_deleted_with_everything_in_it() {
    let server = server().await;
    let mut client = server.client();
    put(&mut client, "a", 3).await;
    put(&mut client, "b", 3).await;
    hold(&mut client, "h1", json!([{"resource":"a","quantity":1}])).await;
    assert_eq!(client.post(&format!("{P}/holds/h1/release")).await.status, 200);
    hold(&mut client, "h2", json!([{"resource":"b","quantity":2}])).await;
    assert_eq!(client.post(&format!("{P}/holds/h2/confirm")).await.status, 200);

    let deleted = client.delete(P).await;
    assert_eq!(deleted.status, 200, "{}", deleted.text());
    assert_eq!(deleted.header("content-type"), Some("application/json"));
    assert_eq!(deleted.json(), json!({"partition": "event-1", "resources": 2, "holds": 2}));
    assert_error(&client.get(&format!("{P}/resources/a")).await, 404, "resource_not_found");
    assert_error(&client.get(&format!("{P}/resources/b")).await, 404, "resource_not_found");
    assert_error(&client.get(&format!("{P}/holds/h1")).await, 404, "hold_not_found");
    assert_error(&client.get(&format!("{P}/holds/h2")).await, 404, "hold_not_found");
    let listing = client.get(&format!("{P}/resources")).await;
    assert_eq!(listing.json()["resources"], json!([]));
    // A repeat finds nothing; the name can be used again.
    assert_error(&client.delete(P).await, 404, "not_found");
    assert_eq!(put(&mut client, "a", 1).await.status, 201);
    assert_eq!(hold(&mut client, "h1", json!([{"resource":"a","quantity":1}])).await.status, 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_deletes_partitions() {
    let server = server().await;
    let mut client = server.client();
    let body = json!({"commands": [
        {"op":"put_resource","partition":"p1","id":"r","capacity":2},
        {"op":"hold","partition":"p1","id":"h","items":[{"resource":"r","quantity":1}]},
        {"op":"put_resource","partition":"p2","id":"r","capacity":2},
        {"op":"delete_partition","partition":"p1"},
        {"op":"delete_partition","partition":"p2","id":"ignored"},
        {"op":"delete_partition","partition":"p3"},
        {"op":"delete_partition","partition":"p2","capacity":1},
        {"op":"delete_partition","partition":"bad partition"},
        {"op":"confirm","partition":"p1"}
    ]});
    let response = client.post_json("/v1/batch", &body).await;
    assert_eq!(response.status, 200, "{}", response.text());
    let results = response.json()["results"].as_array().unwrap().clone();
    let statuses: Vec<u64> = results.iter().map(|r| r["status"].as_u64().unwrap()).collect();
    assert_eq!(statuses, [201, 201, 201, 409, 200, 404, 400, 422, 400]);
    assert_eq!(results[3]["body"]["error"], "partition_has_live_holds");
    assert_eq!(results[3]["body"]["held"], 1);
    assert_eq!(results[4]["body"], json!({"partition": "p2", "resources": 1, "holds": 0}));
    assert_eq!(results[5]["body"]["error"], "not_found");
    assert_eq!(results[7]["body"]["field"], "partition");
    assert!(results[8]["body"]["message"].as_str().unwrap().contains("id"), "{}", results[8]);
    assert_eq!(client.get("/v1/partitions/p1/resources/r").await.status, 200);
    assert_error(&client.get("/v1/partitions/p2/resources/r").await, 404, "resource_not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_takes_a_thousand_commands_and_refuses_more() {
    let server = server().await;
    let mut client = server.client();
    let commands: Vec<Value> = (0..1000)
        .map(|i| json!({"op":"put_resource","partition":format!("p{}", i % 7),"id":format!("r{i}"),"capacity":1}))
        .collect();
    let body = json!({ "commands": commands });
    assert!(body.to_string().len() <= 64 * 1024, "the test batch must fit the body limit");
    let response = client.post_json("/v1/batch", &body).await;
    assert_eq!(response.status, 200, "{}", response.text());
    let results = response.json()["results"].as_array().unwrap().clone();
    assert_eq!(results.len(), 1000);
    for (index, result) in results.iter().enumerate() {
        assert_eq!(result["status"], 201);
        assert_eq!(result["body"]["id"], format!("r{index}"));
    }
    // Holds are longer: as many as fit the body limit, one per resource, all granted.
    let held: Vec<Value> = (0..700)
        .map(|i| json!({"op":"hold","partition":format!("p{}", i % 7),"id":format!("h{i}"),"items":[{"resource":format!("r{i}"),"quantity":1}]}))
        .collect();
    let body = json!({ "commands": held });
    assert!(body.to_string().len() <= 64 * 1024);
    let response = client.post_json("/v1/batch", &body).await;
    let results = response.json()["results"].as_array().unwrap().clone();
    assert_eq!(results.len(), 700);
    assert!(results.iter().all(|r| r["status"] == 201 && r["body"]["existing"] == false));

    let mut commands: Vec<Value> =
        (0..1001).map(|i| json!({"op":"confirm","partition":"p","id":format!("{i}")})).collect();
    let too_many = client.post_json("/v1/batch", &json!({ "commands": commands })).await;
    assert_invalid(&too_many, "commands");
    commands.truncate(1000);
    let response = client.post_json("/v1/batch", &json!({ "commands": commands })).await;
    assert_eq!(response.status, 200);
    let results = response.json()["results"].as_array().unwrap().clone();
    assert!(results.iter().all(|r| r["body"]["error"] == "hold_not_found"));
}

// ----- security and limits -------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_guards_every_route_but_health() {
    let server =
        TestServer::start(Options { token: Some("s3cret".into()), ..Options::default() }).await;
    let mut anonymous = server.client();
    for spec in ROUTES {
        let path = spec
            .template
            .replace("{partition}", "p")
            .replace("{resource}", "r")
            .replace("{hold}", "h");
        let response = anonymous.request(spec.method, &path, None).await;
        if spec.template == "/health" {
            assert_eq!(response.status, 200);
            assert_eq!(response.json()["status"], "ok");
        } else {
            assert_error(&response, 401, "unauthorized");
            assert_eq!(response.header("www-authenticate"), Some("Bearer"));
        }
    }
    assert_error(&anonymous.get("/no/such/route").await, 401, "unauthorized");
    let mut wrong = server.client().with_token("s3cre");
    assert_error(&wrong.get("/v1/status").await, 401, "unauthorized");
    let mut longer = server.client().with_token("s3cret0");
    assert_error(&longer.get("/v1/status").await, 401, "unauthorized");
    let mut right = server.client().with_token("s3cret");
    assert_eq!(right.get("/v1/status").await.status, 200);
    assert_eq!(put(&mut right, "a", 1).await.status, 201);
    assert_eq!(right.get("/metrics").await.status, 200);
    assert_error(&right.get("/no/such/route").await, 404, "not_found");
    // Nothing an unauthorised request asked for happened.
    assert_error(&right.get("/v1/partitions/p/resources/r").await, 404, "resource_not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_64_kib_are_refused() {
    let server = server().await;
    let mut client = server.client();
    // Announced by Content-Length with `Expect: 100-continue`: refused at once, before the
    // client sends the body (and with no `100 Continue`).
    let head = format!(
        "PUT {P}/resources/a HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
        64 * 1024 + 1
    );
    let response = client.exchange(head.as_bytes()).await;
    assert_error(&response, 413, "payload_too_large");
    // Announced far beyond what is drained: refused at once too.
    let mut client = server.client();
    let head = format!(
        "PUT {P}/resources/a HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
        1u64 << 40
    );
    let response = client.exchange(head.as_bytes()).await;
    assert_error(&response, 413, "payload_too_large");

    // Announced and sent at once (as curl does below 1 MiB): the rest is drained first, so
    // the client reads the answer rather than a reset.
    let mut client = server.client();
    let mut request =
        format!("PUT {P}/resources/a HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n", 70_000)
            .into_bytes();
    request.resize(request.len() + 70_000, b' ');
    let response = client.exchange(&request).await;
    assert_error(&response, 413, "payload_too_large");

    // Chunked, with no length announced: refused once the bytes pass the limit.
    let mut client = server.client();
    let mut request =
        format!("POST {P}/holds HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
            .into_bytes();
    let chunk = vec![b' '; 8 * 1024];
    for _ in 0..12 {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(&chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let response = client.exchange(&request).await;
    assert_error(&response, 413, "payload_too_large");

    // A body of exactly 64 KiB is read (and is then judged on its content).
    let mut client = server.client();
    let mut body = br#"{"capacity":1}"#.to_vec();
    body.resize(64 * 1024, b' ');
    let response = client.request("PUT", &format!("{P}/resources/a"), Some(&body)).await;
    assert_eq!(response.status, 201, "{}", response.text());

    // Chunked under the limit works.
    let mut client = server.client();
    let body = br#"{"capacity":2}"#;
    let mut request =
        format!("PUT {P}/resources/a HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
            .into_bytes();
    request.extend_from_slice(format!("{:x}\r\n", body.len()).as_bytes());
    request.extend_from_slice(body);
    request.extend_from_slice(b"\r\n0\r\n\r\n");
    assert_eq!(client.exchange(&request).await.status, 200);
}

/// Every kind of bad input, each answered with its code; none changes any state or log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_and_change_nothing() {
    let server = server().await;
    let mut client = server.client();
    put(&mut client, "a", 5).await;
    put(&mut client, "b", 5).await;
    assert_eq!(hold(&mut client, "h", json!([{"resource":"a","quantity":1}])).await.status, 201);
    let snapshot = |addr| async move {
        let mut c = Client::new(addr);
        let status = c.get("/v1/status").await.json();
        let lsns: Vec<Value> = status["shards"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| json!([s["last_lsn"], s["holds"], s["resources"]]))
            .collect();
        let list = c.get(&format!("{P}/resources")).await.json();
        let hold = c.get(&format!("{P}/holds/h")).await.json();
        (lsns, list, hold)
    };
    let before = snapshot(server.addr).await;

    let holds = format!("{P}/holds");
    let bad_json: &[(&str, &[u8])] = &[
        ("malformed", b"{\"id\":"),
        ("not an object", b"[1,2]"),
        ("empty", b""),
        ("missing items", br#"{"id":"x"}"#),
        ("missing id", br#"{"items":[{"resource":"a","quantity":1}]}"#),
        ("id wrong type", br#"{"id":5,"items":[{"resource":"a","quantity":1}]}"#),
        ("items wrong type", br#"{"id":"x","items":{"resource":"a"}}"#),
        ("quantity string", br#"{"id":"x","items":[{"resource":"a","quantity":"1"}]}"#),
        ("quantity fraction", br#"{"id":"x","items":[{"resource":"a","quantity":1.5}]}"#),
        ("quantity missing", br#"{"id":"x","items":[{"resource":"a"}]}"#),
        ("ttl wrong type", br#"{"id":"x","items":[{"resource":"a","quantity":1}],"ttl_ms":"5"}"#),
        ("ref wrong type", br#"{"id":"x","items":[{"resource":"a","quantity":1}],"ref":7}"#),
        ("unknown field", br#"{"id":"x","items":[{"resource":"a","quantity":1}],"tll_ms":5}"#),
        ("duplicate field", br#"{"id":"x","id":"y","items":[{"resource":"a","quantity":1}]}"#),
        ("invalid utf-8", b"{\"id\":\"x\xff\",\"items\":[{\"resource\":\"a\",\"quantity\":1}]}"),
        ("trailing garbage", br#"{"id":"x","items":[{"resource":"a","quantity":1}]} x"#),
    ];
    for (what, body) in bad_json {
        let response = client.request("POST", &holds, Some(body)).await;
        assert_eq!(response.status, 400, "{what}: {}", response.text());
        assert_eq!(response.code(), "bad_request", "{what}");
    }
    let resource_a = format!("{P}/resources/a");
    for body in [&br#"{"capacity":"5"}"#[..], b"{}", b"{\"capacity\":1.5}", b"null", b"\xff\xfe"] {
        assert_error(&client.request("PUT", &resource_a, Some(body)).await, 400, "bad_request");
    }
    let extend = format!("{P}/holds/h/extend");
    for body in [&b""[..], b"{}", br#"{"ttl_ms":"5"}"#, br#"{"ttl_ms":null}"#] {
        assert_error(&client.request("POST", &extend, Some(body)).await, 400, "bad_request");
    }
    let confirm = format!("{P}/holds/h/confirm");
    assert_error(&client.request("POST", &confirm, Some(b"x")).await, 400, "bad_request");
    assert_error(&client.request("POST", &confirm, Some(br#"{"a":1}"#)).await, 400, "bad_request");

    let invalid: Vec<(Value, &str)> = vec![
        (json!({"id":"a b","items":[{"resource":"a","quantity":1}]}), "id"),
        (json!({"id":"","items":[{"resource":"a","quantity":1}]}), "id"),
        (json!({"id":"x".repeat(65),"items":[{"resource":"a","quantity":1}]}), "id"),
        (json!({"id":"x","items":[]}), "items"),
        (json!({"id":"x","items":[{"resource":"a","quantity":0}]}), "items[0].quantity"),
        (json!({"id":"x","items":[{"resource":"a","quantity":-1}]}), "items[0].quantity"),
        (
            json!({"id":"x","items":[{"resource":"a","quantity":4294967296u64}]}),
            "items[0].quantity",
        ),
        (
            json!({"id":"x","items":[{"resource":"a","quantity":1},{"resource":"a","quantity":1}]}),
            "items[1].resource",
        ),
        (json!({"id":"x","items":[{"resource":"a/b","quantity":1}]}), "items[0].resource"),
        (json!({"id":"x","items":[{"resource":"a","quantity":1}],"ttl_ms":0}), "ttl_ms"),
        (json!({"id":"x","items":[{"resource":"a","quantity":1}],"ttl_ms":86400001}), "ttl_ms"),
        (json!({"id":"x","items":[{"resource":"a","quantity":1}],"ref":"r".repeat(257)}), "ref"),
    ];
    for (body, field) in &invalid {
        assert_invalid(&client.post_json(&holds, body).await, field);
    }
    let many: Vec<Value> =
        (0..65).map(|i| json!({"resource":format!("r{i}"),"quantity":1})).collect();
    assert_invalid(&client.post_json(&holds, &json!({"id":"x","items":many})).await, "items");
    let huge = br#"{"id":"x","items":[{"resource":"a","quantity":18446744073709551616}]}"#;
    assert_invalid(&client.request("POST", &holds, Some(huge)).await, "items[0].quantity");
    assert_invalid(&put(&mut client, "a", 1 << 53).await, "capacity");
    let huge = br#"{"capacity":1e20}"#;
    assert_invalid(&client.request("PUT", &resource_a, Some(huge)).await, "capacity");
    let negative = br#"{"capacity":-5}"#;
    assert_invalid(&client.request("PUT", &resource_a, Some(negative)).await, "capacity");
    let extend_body = json!({"ttl_ms": 0});
    assert_invalid(&client.post_json(&extend, &extend_body).await, "ttl_ms");
    assert_invalid(&client.post_json(&extend, &json!({"ttl_ms": -3})).await, "ttl_ms");
    // Bad names in the path, percent-decoded first.
    let body = json!({"capacity": 1});
    assert_invalid(&client.put_json("/v1/partitions/a%20b/resources/x", &body).await, "partition");
    assert_invalid(&client.put_json(&format!("{P}/resources/x%2Fy"), &body).await, "id");
    assert_invalid(&client.put_json(&format!("{P}/resources/%FF"), &body).await, "id");
    assert_invalid(&client.get("/v1/partitions/a%20b/resources/x").await, "partition");
    assert_invalid(&client.get(&format!("{P}/holds/h%21")).await, "id");
    assert_invalid(&client.post("/v1/partitions/a%20b/holds/h/confirm").await, "partition");
    let long = "p".repeat(65);
    assert_invalid(
        &client.put_json(&format!("/v1/partitions/{long}/resources/x"), &body).await,
        "partition",
    );
    assert_invalid(&client.put_json("/v1/partitions//resources/x", &body).await, "partition");
    // Unknown routes and methods.
    assert_error(&client.get("/v2/anything").await, 404, "not_found");
    assert_error(&client.get("/").await, 404, "not_found");
    let wrong_method = client.request("DELETE", &format!("{P}/resources/a"), None).await;
    assert_error(&wrong_method, 405, "method_not_allowed");
    assert_eq!(wrong_method.header("allow"), Some("PUT, GET"));
    assert_error(&client.get("/v1/batch").await, 405, "method_not_allowed");
    let trace = client.request("TRACE", "/health", None).await;
    assert_error(&trace, 405, "method_not_allowed");
    assert_eq!(trace.header("allow"), Some("GET"));
    assert_error(&client.post(&format!("{P}/holds/h/explode")).await, 404, "not_found");

    // The connection is still usable, and nothing changed anywhere.
    assert_eq!(snapshot(server.addr).await, before);
    assert_eq!(counts(&resource(&mut client, "a").await), (5, 1, 0, 4));
}

// ----- concurrency and overload ----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_holds_on_a_hundred_units_grant_exactly_a_hundred() {
    let server = server().await;
    let mut client = server.client();
    assert_eq!(put(&mut client, "flash", 100).await.status, 201);
    let mut tasks = Vec::new();
    for index in 0..1000 {
        let addr = server.addr;
        tasks.push(tokio::spawn(async move {
            let mut client = Client::new(addr);
            let body = json!({"id": format!("buyer-{index}"), "items": [{"resource":"flash","quantity":1}]});
            client.post_json(&format!("{P}/holds"), &body).await
        }));
    }
    let (mut granted, mut refused) = (0, 0);
    for task in tasks {
        let response = task.await.unwrap();
        match response.status {
            201 => granted += 1,
            409 => {
                assert_eq!(response.code(), "insufficient_capacity");
                refused += 1;
            }
            other => panic!("unexpected {other}: {}", response.text()),
        }
    }
    assert_eq!((granted, refused), (100, 900));
    assert_eq!(counts(&resource(&mut client, "flash").await), (100, 100, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_overloaded_with_retry_after() {
    let server =
        TestServer::start(Options { shards: 1, queue_messages_max: 1, ..Options::default() }).await;
    let mut client = server.client();
    put(&mut client, "a", 10).await;
    // Stall the shard, queue one request (the queue holds one message), then one too many.
    server.gate.close();
    assert!(wait_until(Duration::from_secs(10), || async { server.gate.waiting() == 1 }).await);
    let addr = server.addr;
    let queued = tokio::spawn(async move {
        hold(&mut Client::new(addr), "h1", json!([{"resource":"a","quantity":1}])).await
    });
    let runtime = server.runtime.clone();
    let full = wait_until(Duration::from_secs(10), || {
        let runtime = runtime.clone();
        async move { runtime.queue_depths()[0] == 1 }
    });
    assert!(full.await);
    let third = hold(&mut client, "h3", json!([{"resource":"a","quantity":1}])).await;
    assert_error(&third, 429, "overloaded");
    assert_eq!(third.header("retry-after"), Some("1"));
    let batch = client
        .post_json(
            "/v1/batch",
            &json!({"commands":[{"op":"confirm","partition":"event-1","id":"h1"}]}),
        )
        .await;
    assert_eq!(batch.status, 200);
    assert_eq!(batch.json()["results"][0]["status"], 429);
    assert_eq!(batch.header("retry-after"), Some("1"));
    server.gate.open();
    assert_eq!(queued.await.unwrap().status, 201);
    assert_error(&client.get(&format!("{P}/holds/h3")).await, 404, "hold_not_found");
    assert_eq!(counts(&resource(&mut client, "a").await), (10, 1, 0, 9));
}

// ----- node routes -----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_status_metrics_checkpoint_and_promote_on_a_primary() {
    let data_dir = tempfile::tempdir().unwrap();
    let storage =
        StorageInfo { memory_max_bytes: 1 << 30, data_dir: Some(data_dir.path().to_path_buf()) };
    let server = TestServer::start(Options { storage, ..Options::default() }).await;
    let mut client = server.client();
    put(&mut client, "a", 3).await;
    hold(&mut client, "h", json!([{"resource":"a","quantity":1}])).await;
    let health = client.get("/health").await;
    assert_eq!(health.json(), json!({"status":"ok","role":"primary","epoch":1}));
    assert_eq!(health.header("content-type"), Some("application/json"));

    let status = client.get("/v1/status").await.json();
    assert_eq!(status["role"], "primary");
    assert_eq!(status["epoch"], 1);
    assert_eq!(status["standbys"], json!([]));
    let shards = status["shards"].as_array().unwrap();
    assert_eq!(shards.len(), 2);
    let last: u64 = shards.iter().map(|s| s["last_lsn"].as_u64().unwrap()).sum();
    let durable: u64 = shards.iter().map(|s| s["durable_lsn"].as_u64().unwrap()).sum();
    assert!(last >= 2 && durable == last, "{status}");

    let checkpoint = client.post("/admin/checkpoint").await;
    assert_eq!(checkpoint.status, 200, "{}", checkpoint.text());
    let snapshots = checkpoint.json()["snapshots"].as_array().unwrap().clone();
    assert_eq!(snapshots.len(), 2);
    assert_eq!(snapshots[0]["shard"], 0);
    assert!(snapshots.iter().all(|s| s["lsn"].is_u64()));

    assert_error(&client.post("/admin/promote").await, 409, "already_primary");

    let metrics = client.get("/metrics").await;
    assert_eq!(metrics.status, 200);
    assert!(metrics.header("content-type").unwrap().starts_with("text/plain"));
    let text = metrics.text();
    for line in text.lines().filter(|line| !line.starts_with('#')) {
        assert!(line.starts_with("bookd_"), "{line}");
        let value = line.rsplit(' ').next().unwrap();
        assert!(value.parse::<f64>().is_ok() || value == "+Inf", "{line}");
    }
    for expected in [
        "bookd_commands_total{op=\"put_resource\",result=\"ok\"} 1",
        "bookd_commands_total{op=\"hold\",result=\"ok\"} 1",
        "bookd_command_latency_seconds_count{op=\"hold\"} 1",
        "bookd_role{role=\"primary\"} 1",
        "bookd_role{role=\"standby\"} 0",
        "bookd_epoch 1",
        "bookd_queue_depth{shard=\"1\"}",
        "bookd_log_records_total{shard=\"0\"}",
        "bookd_commit_latency_seconds_bucket{le=\"+Inf\"}",
        "bookd_shard_batch_ops_count",
        "bookd_http_batch_commands_count 0",
        "bookd_refusals_total{code=\"insufficient_capacity\"} 0",
        "bookd_holds_live{shard=\"0\"}",
        "bookd_resources{shard=\"1\"}",
        "bookd_snapshots_total{shard=\"0\"}",
        "bookd_http_responses_total{status=\"201\"} 2",
        "bookd_http_responses_total{status=\"507\"} 0",
        "bookd_commands_total{op=\"delete_partition\",result=\"ok\"} 0",
        "bookd_command_latency_seconds_count{op=\"delete_partition\"} 0",
        "bookd_command_latency_seconds_count{op=\"list_resources\"} 0",
        "bookd_refusals_total{code=\"storage_full\"} 0",
        "bookd_refusals_total{code=\"partition_has_live_holds\"} 0",
        "bookd_memory_max_bytes 1073741824\n",
        "bookd_memory_bytes ",
    ] {
        assert!(text.contains(expected), "missing {expected}\n{text}");
    }
    for doc in bookd_server::http::metrics::METRICS {
        assert!(
            text.contains(&format!("# TYPE {} {}", doc.name, doc.kind.as_str())),
            "{}",
            doc.name
        );
    }
    let gauge = |name: &str| -> u64 {
        let line = text.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap();
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert!(gauge("bookd_disk_free_bytes") > 0, "{text}");
    let _ = gauge("bookd_memory_bytes");
    let holds_live: u64 = text
        .lines()
        .filter(|l| l.starts_with("bookd_holds_live{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(holds_live, 1);
}

/// A standby whose promotion the test controls; promotion makes its shards writable.
#[derive(Debug, Default)]
struct FakeStandby {
    promoted: AtomicBool,
    runtime: std::sync::OnceLock<Arc<bookd_runtime::Runtime>>,
}

impl NodeInfo for FakeStandby {
    fn role(&self) -> Role {
        if self.promoted.load(Ordering::SeqCst) {
            Role::Primary
        } else {
            Role::Standby
        }
    }
    fn status_extras(&self) -> serde_json::Map<String, Value> {
        let mut extras = serde_json::Map::new();
        extras.insert("primary".into(), json!({"addr": "127.0.0.1:7070", "lag": 0}));
        extras
    }
    fn promote(&self) -> PromoteFuture<'_> {
        Box::pin(async move {
            self.promoted.store(true, Ordering::SeqCst);
            if let Some(runtime) = self.runtime.get() {
                runtime.set_writable(true);
            }
            Ok(2)
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_serves_reads_refuses_writes_and_promotes() {
    let node = Arc::new(FakeStandby::default());
    let server = TestServer::start(Options { node: node.clone(), ..Options::default() }).await;
    node.runtime.set(server.runtime.clone()).unwrap();
    let mut client = server.client();
    assert_eq!(client.get("/health").await.json()["role"], "standby");
    assert_error(&put(&mut client, "a", 1).await, 503, "standby_read_only");
    assert_error(
        &hold(&mut client, "h", json!([{"resource":"a","quantity":1}])).await,
        503,
        "standby_read_only",
    );
    for verb in ["confirm", "release", "cancel"] {
        assert_error(&client.post(&format!("{P}/holds/h/{verb}")).await, 503, "standby_read_only");
    }
    let extend = client.post_json(&format!("{P}/holds/h/extend"), &json!({"ttl_ms": 5})).await;
    assert_error(&extend, 503, "standby_read_only");
    let batch = client.post_json("/v1/batch", &json!({"commands": []})).await;
    assert_error(&batch, 503, "standby_read_only");
    assert_error(&client.delete(P).await, 503, "standby_read_only");
    assert_error(&client.get(&format!("{P}/resources/a")).await, 404, "resource_not_found");
    assert_eq!(client.get(&format!("{P}/resources")).await.status, 200);
    let status = client.get("/v1/status").await.json();
    assert_eq!(status["role"], "standby");
    assert_eq!(status["primary"]["lag"], 0);
    let metrics = client.get("/metrics").await.text();
    assert!(metrics.contains("bookd_role{role=\"standby\"} 1"));
    // Without a budget or a data directory: no limit, and no disk to measure.
    assert!(metrics.contains("bookd_memory_max_bytes +Inf\n"), "{metrics}");
    assert!(!metrics.lines().any(|l| l.starts_with("bookd_disk_free_bytes ")), "{metrics}");

    let promoted = client.post("/admin/promote").await;
    assert_eq!(promoted.status, 200, "{}", promoted.text());
    assert_eq!(promoted.json(), json!({"role": "primary", "epoch": 2}));
    assert_eq!(put(&mut client, "a", 1).await.status, 201);
    assert_error(&client.post("/admin/promote").await, 409, "already_primary");
}

// ----- connections -----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_clients_are_disconnected() {
    let config = HttpConfig {
        header_read_timeout: Duration::from_millis(300),
        body_read_timeout: Duration::from_millis(300),
        ..HttpConfig::default()
    };
    let server = TestServer::start(Options { config, ..Options::default() }).await;
    // Connects and sends nothing.
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    assert!(closed_within(&mut silent, Duration::from_secs(10)).await);
    // Sends half a head and stalls.
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    slow.write_all(b"GET /health HTTP/1.1\r\nHost:").await.unwrap();
    assert!(closed_within(&mut slow, Duration::from_secs(10)).await);
    // Sends a head, then too little of its body.
    let mut stalled = TcpStream::connect(server.addr).await.unwrap();
    stalled
        .write_all(
            format!("PUT {P}/resources/a HTTP/1.1\r\nHost: t\r\nContent-Length: 20\r\n\r\n{{")
                .as_bytes(),
        )
        .await
        .unwrap();
    let mut buffer = Vec::new();
    let response = read_response(&mut stalled, &mut buffer).await;
    assert_error(&response, 400, "bad_request");
    assert!(closed_within(&mut stalled, Duration::from_secs(10)).await);
    // A kept-alive connection that goes idle after a request.
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n").await.unwrap();
    let mut buffer = Vec::new();
    assert_eq!(read_response(&mut idle, &mut buffer).await.status, 200);
    assert!(closed_within(&mut idle, Duration::from_secs(10)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_read_its_responses_is_disconnected() {
    let config =
        HttpConfig { write_stall_timeout: Duration::from_millis(300), ..HttpConfig::default() };
    let server = TestServer::start(Options { config, ..Options::default() }).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    // Far more response bytes (2 000 × the OpenAPI document) than socket buffers hold.
    let requests = b"GET /openapi.json HTTP/1.1\r\nHost: t\r\n\r\n".repeat(2000);
    let _writer = tokio::spawn(async move {
        let _ = stream.write_all(&requests).await;
        // Keep the connection open, never reading.
        tokio::time::sleep(Duration::from_secs(120)).await;
        drop(stream);
    });
    let app = server.app.clone();
    assert!(
        wait_until(Duration::from_secs(10), || {
            let app = app.clone();
            async move { app.metrics().connections_open() == 1 }
        })
        .await
    );
    let app = server.app.clone();
    let closed = wait_until(Duration::from_secs(20), || {
        let app = app.clone();
        async move { app.metrics().connections_open() == 0 }
    });
    assert!(closed.await, "a client that never reads kept its connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_heads_are_refused_by_hyper() {
    let server = server().await;
    let big = format!("GET /health HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n", "a".repeat(20_000));
    let many: String = (0..100).map(|i| format!("X-H{i}: v\r\n")).collect();
    let many = format!("GET /health HTTP/1.1\r\n{many}\r\n");
    for head in [big, many] {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        stream.write_all(head.as_bytes()).await.unwrap();
        // hyper answers 431 (or 400) and closes; the close may reset the connection before
        // the client reads the answer, so what must hold is: no success, and a closed socket.
        let mut answer = Vec::new();
        let mut chunk = [0u8; 4096];
        let closed = loop {
            match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk)).await {
                Err(_) => break false,
                Ok(Ok(0)) | Ok(Err(_)) => break true,
                Ok(Ok(read)) => answer.extend_from_slice(&chunk[..read]),
            }
        };
        assert!(closed, "the connection was not closed");
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.is_empty()
                || answer.starts_with("HTTP/1.1 431")
                || answer.starts_with("HTTP/1.1 400"),
            "{answer}"
        );
    }
    // The server is fine.
    assert_eq!(server.client().get("/health").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_wait_for_a_free_slot() {
    let config = HttpConfig { connections_max: 2, ..HttpConfig::default() };
    let server = TestServer::start(Options { config, ..Options::default() }).await;
    let mut first = server.client();
    let mut second = server.client();
    assert_eq!(first.get("/health").await.status, 200);
    assert_eq!(second.get("/health").await.status, 200);
    let addr = server.addr;
    let mut third = tokio::spawn(async move { Client::new(addr).get("/health").await });
    let early = tokio::time::timeout(Duration::from_millis(300), &mut third).await;
    assert!(early.is_err(), "a third connection was served beyond the limit");
    drop(first);
    let response = tokio::time::timeout(Duration::from_secs(10), third).await.unwrap().unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(second.get("/health").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_requests_in_flight_then_returns() {
    let mut server = server().await;
    let mut client = server.client();
    put(&mut client, "a", 1).await;
    let mut idle = server.client();
    assert_eq!(idle.get("/health").await.status, 200);
    server.gate.close();
    assert!(wait_until(Duration::from_secs(10), || async { server.gate.waiting() == 2 }).await);
    let addr = server.addr;
    let in_flight = tokio::spawn(async move {
        hold(&mut Client::new(addr), "h", json!([{"resource":"a","quantity":1}])).await
    });
    let runtime = server.runtime.clone();
    let queued = wait_until(Duration::from_secs(10), || {
        let runtime = runtime.clone();
        async move { runtime.queue_depths().iter().sum::<usize>() == 1 }
    });
    assert!(queued.await, "the request did not reach the stalled shard's queue");
    server.stop();
    // Stopping: the listener closes first; the held request is still waiting, not dropped.
    let closed =
        wait_until(
            Duration::from_secs(10),
            || async move { TcpStream::connect(addr).await.is_err() },
        );
    assert!(closed.await, "the listener did not close");
    assert!(!in_flight.is_finished());
    server.gate.open();
    let response = tokio::time::timeout(Duration::from_secs(10), in_flight).await.unwrap().unwrap();
    assert_eq!(response.status, 201);
    server.stopped().await.unwrap();
    assert!(TcpStream::connect(addr).await.is_err(), "the listener is closed");
}

// ----- OpenAPI ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_matches_the_router_both_ways() {
    let server = server().await;
    let mut client = server.client();
    let response = client.get("/openapi.json").await;
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-type"), Some("application/json"));
    let document = response.json();
    assert_eq!(document["openapi"], "3.1.0");
    let documented = openapi::operations(&document);
    let mut routed: Vec<(String, String)> =
        ROUTES.iter().map(|s| (s.method.to_string(), s.template.to_string())).collect();
    routed.sort();
    assert_eq!(documented, routed, "the document and the router disagree");
    // Every documented operation is served: none answers the router's own `not_found`.
    for (method, template) in &documented {
        let path =
            template.replace("{partition}", "p").replace("{resource}", "r").replace("{hold}", "h");
        let body: Option<&[u8]> = if method == "GET" { None } else { Some(b"{}") };
        let response = client.request(method, &path, body).await;
        // The router's own `not_found` (no route); deleting a missing partition is the
        // engine's, "partition not found".
        let routed_away = response.code_or_none().as_deref() == Some("not_found")
            && response.json()["message"] != "partition not found";
        assert!(!routed_away, "{method} {path}: {}", response.text());
        // Every documented status covers what the route answered.
        let operation = &document["paths"][template][method.to_ascii_lowercase()];
        let status = response.status.to_string();
        assert!(
            operation["responses"].get(&status).is_some(),
            "{method} {template} answered {status}, which the document does not list"
        );
    }
    // And a path the document does not list is not served.
    assert_error(&client.get("/v1/partitions/p/things").await, 404, "not_found");
}

trait CodeOrNone {
    fn code_or_none(&self) -> Option<String>;
}

impl CodeOrNone for Response {
    fn code_or_none(&self) -> Option<String> {
        serde_json::from_slice::<Value>(&self.body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
    }
}
