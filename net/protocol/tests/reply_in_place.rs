//! A command's reply encoded in place from its receipt (what the shards send) is the same
//! bytes as the reply encoded from its outcome's views (what the codec's other users build),
//! for every command of random histories: long and short ids, references, several items,
//! repeated holds, every verb, deleted partitions.

use bookd_engine::{
    Cancel, Command, Confirm, DeletePartition, Engine, Extend, Hold, Item, OpResult, PutResource,
    Release,
};
use bookd_protocol::reply::{encode_op_result, encode_outcome_ref};
use proptest::prelude::*;

const T0: u64 = 1_700_000_000_000;

fn name(kind: &str, n: u8) -> String {
    // Every fourth name is longer than the engine keeps inline.
    if n % 4 == 3 {
        format!("{kind}-{n}-a-name-well-beyond-the-inline-bytes")
    } else {
        format!("{kind}{n}")
    }
}

fn command(verb: u8, partition: u8, a: u8, b: u8) -> Command {
    let partition = name("p", partition % 2);
    let hold = name("h", a % 8);
    match verb % 8 {
        0 => Command::PutResource(PutResource {
            partition,
            resource: name("r", b % 4),
            capacity: u64::from(a % 5) + 1,
        }),
        1 | 2 => Command::Hold(Hold {
            partition,
            hold,
            items: (0..=(b % 3))
                .map(|i| Item { resource: name("r", (b % 4 + i) % 4), quantity: u64::from(i) + 1 })
                .collect(),
            ttl_ms: Some(u64::from(b) * 100 + 1_000),
            reference: b.is_multiple_of(2).then(|| format!("order-{b}")),
        }),
        3 => Command::Confirm(Confirm { partition, hold }),
        4 => Command::Release(Release { partition, hold }),
        5 => Command::Cancel(Cancel { partition, hold }),
        6 => Command::Extend(Extend { partition, hold, ttl_ms: u64::from(b) * 10 + 1 }),
        _ => Command::DeletePartition(DeletePartition { partition }),
    }
}

proptest! {
    #[test]
    fn replies_in_place_match_replies_from_views(
        steps in proptest::collection::vec((any::<u8>(), any::<u8>(), any::<u8>(), any::<u8>()), 1..200)
    ) {
        let mut engine = Engine::default();
        // Every resource exists at first, so most holds are taken.
        let puts = (0..8).map(|n| (0, n / 4, 7, n % 4));
        let mut took_effect = 0;
        for (at, (verb, partition, a, b)) in puts.chain(steps).enumerate() {
            let command = command(verb, partition, a, b);
            let now_ms = T0 + at as u64 * 50;
            let Ok(receipt) = engine.apply_receipt(now_ms, &command) else { continue };
            let mut in_place = Vec::new();
            encode_outcome_ref(&engine.outcome_ref(&command, &receipt), &mut in_place);
            let mut from_views = Vec::new();
            let outcome = OpResult::Command(Ok(engine.outcome_for(&command, &receipt)));
            encode_op_result(&outcome, &mut from_views);
            prop_assert_eq!(in_place, from_views, "{:?}", command);
            took_effect += 1;
        }
        prop_assert!(took_effect >= 8);
    }
}
