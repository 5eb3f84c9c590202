//! The Redis and PostgreSQL peers of `bookd bench --compare` keep the contract's semantics
//! (all or nothing, no oversell, idempotent hold ids and follow-ups), against a real Redis and a
//! real PostgreSQL started for the test (`.ci/run` installs both; a missing one fails the test).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bookd_bench::load::{Answer, Driver, PostgresDriver, PostgresServer, RedisDriver, RedisServer};
use bookd_engine::{Cancel, Command, Confirm, Hold, Item, PutResource, Release};

fn put(resource: &str, capacity: u64) -> Command {
    Command::PutResource(PutResource { partition: "p".into(), resource: resource.into(), capacity })
}

fn hold(id: &str, items: &[(&str, u64)]) -> Command {
    Command::Hold(Hold {
        partition: "p".into(),
        hold: id.into(),
        items: items
            .iter()
            .map(|(resource, quantity)| Item { resource: (*resource).into(), quantity: *quantity })
            .collect(),
        ttl_ms: Some(600_000),
        reference: None,
    })
}

fn confirm(id: &str) -> Command {
    Command::Confirm(Confirm { partition: "p".into(), hold: id.into() })
}

fn release(id: &str) -> Command {
    Command::Release(Release { partition: "p".into(), hold: id.into() })
}

fn cancel(id: &str) -> Command {
    Command::Cancel(Cancel { partition: "p".into(), hold: id.into() })
}

async fn check_semantics<D: Driver>(driver: &D) {
    driver.setup_batch(vec![put("a", 3), put("b", 1)]).await.unwrap();
    let ok = Answer::Ok;
    // All or nothing: b has 1 unit, so a hold of 2 a + 2 b takes nothing.
    assert_eq!(
        driver.execute(&hold("h1", &[("a", 2), ("b", 2)])).await,
        Answer::Refused("insufficient_capacity")
    );
    assert_eq!(driver.execute(&hold("h1", &[("a", 2), ("b", 1)])).await, ok);
    // The same id and items again: success, nothing taken twice; other items: conflict.
    assert_eq!(driver.execute(&hold("h1", &[("a", 2), ("b", 1)])).await, ok);
    assert_eq!(driver.execute(&hold("h1", &[("a", 1)])).await, Answer::Refused("hold_id_conflict"));
    // a has 1 unit left, b none: no oversell.
    assert_eq!(
        driver.execute(&hold("h2", &[("a", 2)])).await,
        Answer::Refused("insufficient_capacity")
    );
    assert_eq!(
        driver.execute(&hold("h2", &[("b", 1)])).await,
        Answer::Refused("insufficient_capacity")
    );
    assert_eq!(driver.execute(&hold("h3", &[("a", 1)])).await, ok);
    assert_eq!(
        driver.execute(&hold("h4", &[("zz", 1)])).await,
        Answer::Refused("resource_not_found")
    );
    // The lifecycle, with idempotent repeats and refusals in the wrong state.
    assert_eq!(driver.execute(&cancel("h1")).await, Answer::Refused("hold_not_confirmed"));
    assert_eq!(driver.execute(&confirm("h1")).await, ok);
    assert_eq!(driver.execute(&confirm("h1")).await, ok);
    assert_eq!(driver.execute(&release("h1")).await, Answer::Refused("hold_confirmed"));
    assert_eq!(driver.execute(&cancel("h1")).await, ok);
    assert_eq!(driver.execute(&cancel("h1")).await, ok);
    assert_eq!(driver.execute(&confirm("h1")).await, Answer::Refused("hold_cancelled"));
    assert_eq!(driver.execute(&release("h3")).await, ok);
    assert_eq!(driver.execute(&release("h3")).await, ok);
    assert_eq!(driver.execute(&confirm("nope")).await, Answer::Refused("hold_not_found"));
    // Everything is back: the whole capacity can be held again.
    assert_eq!(driver.execute(&hold("h5", &[("a", 3), ("b", 1)])).await, ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_peer_keeps_the_contract() {
    let server = RedisServer::start(true, None).await.unwrap_or_else(|why| panic!("{why}"));
    let driver = RedisDriver::connect(&server.addr, 2).await.unwrap();
    check_semantics(&driver.for_client(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_peer_keeps_the_contract() {
    let server = PostgresServer::start(true, None).await.unwrap_or_else(|why| panic!("{why}"));
    let driver = PostgresDriver::connect(&server.config, 2).await.unwrap();
    check_semantics(&driver).await;
}
