//! Crash safety of the real `bookd` binary: many connections drive two-item holds and confirms,
//! bookd is killed with SIGKILL at a random moment, restarted on the same data directory, and
//! every acknowledged hold and confirm must be there with its state; counters must add up over
//! every hold that exists (so nothing unacknowledged is half-applied). Repeated several rounds.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bookd_testkit::SplitMix64;
use support::{request, Bookd};

const CLIENTS: usize = 12;
const ROUNDS: u64 = 5;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Acked {
    held: bool,
    confirmed: bool,
}

/// Every hold id ever attempted, with what was acknowledged for it.
type Ledger = Arc<Mutex<BTreeMap<String, Acked>>>;

fn client_loop(
    http: String,
    client: usize,
    round: u64,
    stop: Arc<AtomicBool>,
    ledger: Ledger,
    acks: Arc<AtomicUsize>,
) {
    let mut rng = SplitMix64::new(round * 1_000 + client as u64);
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) && n < 2_000 {
        n += 1;
        let id = format!("r{round}-c{client}-{n}");
        ledger.lock().unwrap().insert(id.clone(), Acked::default());
        let quantity = 1 + rng.next_mod(3);
        let body = format!(
            r#"{{"id":"{id}","items":[{{"resource":"a","quantity":{quantity}}},{{"resource":"b","quantity":{quantity}}}]}}"#
        );
        match request(&http, "POST", "/v1/partitions/shop/holds", None, Some(&body)) {
            Ok((201, _)) => {
                ledger.lock().unwrap().get_mut(&id).unwrap().held = true;
                acks.fetch_add(1, Ordering::Relaxed);
            }
            Ok((status, body)) => panic!("hold {id}: unexpected {status} {body}"),
            Err(_) => return, // bookd was killed
        }
        if rng.next_mod(2) == 0 {
            let path = format!("/v1/partitions/shop/holds/{id}/confirm");
            match request(&http, "POST", &path, None, None) {
                Ok((200, _)) => ledger.lock().unwrap().get_mut(&id).unwrap().confirmed = true,
                Ok((status, body)) => panic!("confirm {id}: unexpected {status} {body}"),
                Err(_) => return,
            }
        }
    }
}

fn counts(bookd: &Bookd, resource: &str) -> (u64, u64) {
    let (status, json) =
        bookd.request("GET", &format!("/v1/partitions/shop/resources/{resource}"), None);
    assert_eq!(status, 200);
    (json["held"].as_u64().unwrap(), json["confirmed"].as_u64().unwrap())
}

#[test]
fn sigkill_loses_no_acknowledged_command() {
    let temp = tempfile::tempdir().unwrap();
    let ledger: Ledger = Arc::default();
    let mut rng = SplitMix64::new(42);
    {
        let bookd = Bookd::serve(temp.path(), &["--shards", "2"]);
        for resource in ["a", "b"] {
            let path = format!("/v1/partitions/shop/resources/{resource}");
            assert_eq!(bookd.request("PUT", &path, Some(r#"{"capacity":100000000}"#)).0, 201);
        }
        bookd.kill9();
    }
    for round in 0..ROUNDS {
        let bookd = Bookd::serve(temp.path(), &["--shards", "2"]);
        let stop = Arc::new(AtomicBool::new(false));
        let acks = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..CLIENTS)
            .map(|client| {
                let (http, stop, ledger, acks) =
                    (bookd.http.clone(), stop.clone(), ledger.clone(), acks.clone());
                std::thread::spawn(move || client_loop(http, client, round, stop, ledger, acks))
            })
            .collect();
        // Kill at a random moment: after a random number of acknowledgements in this round.
        let kill_after = 20 + rng.next_mod(300) as usize;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while acks.load(Ordering::Relaxed) < kill_after && std::time::Instant::now() < deadline {
            std::thread::yield_now();
        }
        bookd.kill9();
        stop.store(true, Ordering::Relaxed);
        for thread in threads {
            thread.join().unwrap();
        }
        check(temp.path(), &ledger);
    }
}

/// Restarts bookd and checks the ledger against it, then stops it with SIGKILL again.
fn check(data_dir: &std::path::Path, ledger: &Ledger) {
    let bookd = Bookd::serve(data_dir, &["--shards", "2"]);
    let ledger = ledger.lock().unwrap();
    let (mut held, mut confirmed) = (0u64, 0u64);
    for (id, acked) in ledger.iter() {
        let (status, hold) = bookd.request("GET", &format!("/v1/partitions/shop/holds/{id}"), None);
        if acked.held {
            assert_eq!(status, 200, "acknowledged hold {id} is lost");
        }
        if status == 404 {
            continue; // never acknowledged, never durable: fine
        }
        assert_eq!(status, 200, "{hold}");
        let state = hold["status"].as_str().unwrap();
        if acked.confirmed {
            assert_eq!(state, "confirmed", "acknowledged confirm of {id} is lost");
        }
        assert!(state == "held" || state == "confirmed", "{id}: {state}");
        let items = hold["items"].as_array().unwrap();
        assert_eq!(items.len(), 2, "hold {id} is whole");
        let quantity = items[0]["quantity"].as_u64().unwrap();
        assert_eq!(items[1]["quantity"].as_u64().unwrap(), quantity);
        if state == "held" {
            held += quantity;
        } else {
            confirmed += quantity;
        }
    }
    // Every unit counted on a resource belongs to a hold that exists, on both resources alike.
    assert_eq!(counts(&bookd, "a"), (held, confirmed));
    assert_eq!(counts(&bookd, "b"), (held, confirmed));
    drop(ledger);
    bookd.kill9();
}
