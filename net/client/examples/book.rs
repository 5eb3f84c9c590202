//! A runnable tour of the Rust client: connect, create a resource, hold, confirm, read back,
//! and one explicit batch. Invariant: it only talks to the node at `--addr`.
//!
//! ```text
//! bookd serve --data-dir /tmp/bookd-demo &        # prints: bookd ready http=… binary=…
//! cargo run -p bookd-client --example book -- --addr 127.0.0.1:7070 [--token T]
//! ```

use bookd_client::{Client, ClientConfig, ClientError};
use bookd_engine::ListQuery;
use bookd_engine::Op;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    if let Err(error) = run().await {
        eprintln!("book: {error}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), ClientError> {
    let mut addr = "127.0.0.1:7070".to_string();
    let mut token = std::env::var("BOOKD_TOKEN").ok();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match (flag.as_str(), args.next()) {
            ("--addr", Some(value)) => addr = value,
            ("--token", Some(value)) => token = Some(value),
            _ => {
                eprintln!("usage: book [--addr HOST:PORT] [--token T]");
                std::process::exit(2);
            }
        }
    }
    let config = ClientConfig { connections: 2, token, ..ClientConfig::default() };
    let client = Client::connect(&addr, config).await?;
    let hello = client.hello();
    println!("connected: role {:?}, epoch {}, {} shards", hello.role, hello.epoch, hello.shards);

    let seat = client.put_resource("concert-1", "A-12", 1).await?;
    println!(
        "resource {}/{}: capacity {}, available {}",
        seat.resource.partition,
        seat.resource.id,
        seat.resource.capacity,
        seat.resource.available()
    );

    // The hold id is the idempotency key: sending it again is safe.
    let hold_id = format!("order-{}", std::process::id());
    let held =
        client.hold("concert-1", &hold_id, &[("A-12", 1)], Some(60_000), Some("payment-1")).await;
    match held {
        Ok(held) => println!(
            "hold {}: {:?} until {} (existing: {})",
            held.hold.id, held.hold.status, held.hold.expires_at_ms, held.existing
        ),
        Err(ClientError::Refused(refused)) => {
            println!("hold refused: {} ({refused})", refused.code)
        }
        Err(other) => return Err(other),
    }
    match client.confirm("concert-1", &hold_id).await {
        Ok(hold) => println!("confirmed: {:?}", hold.status),
        Err(error) => println!("confirm: {error}"),
    }
    let seat = client.get_resource("concert-1", "A-12").await?;
    println!(
        "now held {}, confirmed {}, available {}",
        seat.held,
        seat.confirmed,
        seat.available()
    );

    // Many commands in one frame, one result each, in order.
    let batch = vec![
        Op::GetResource { partition: "concert-1".into(), id: "A-12".into() },
        Op::GetHold { partition: "concert-1".into(), id: hold_id.clone() },
        Op::GetResource { partition: "concert-1".into(), id: "Z-99".into() },
    ];
    for (request, result) in batch.iter().zip(client.execute(&batch).await?) {
        match result {
            Ok(reply) => println!("{:?} -> ok {reply:?}", request.partition()),
            Err(error) => println!("{:?} -> {error}", request.partition()),
        }
    }
    let page = client.list_resources("concert-1", &ListQuery::default()).await?;
    println!("{} resources listed, next: {:?}", page.resources.len(), page.next);
    Ok(())
}
