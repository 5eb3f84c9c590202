//! One closed-loop client of a workload: a small state machine that yields the next command,
//! is told its result, and counts what happened. It reuses its commands' buffers, so a step
//! allocates nothing once warm, and the generator's own cost stays far below the engine's.

use std::mem;

use bookd_engine::{Cancel, Command, Confirm, Hold, Item, Refusal, Release};

use crate::rng::SplitMix64;
use crate::workload::{
    Names, Workload, FLASH_SALE_PARTITION, FLASH_SALE_QUANTITY_MAX, FLASH_SALE_RESOURCE,
    HOLD_TTL_MS, HOTEL_NIGHTS, HOTEL_PARTITIONS, HOTEL_ROOM_TYPES, HOTEL_STAY_NIGHTS_MAX,
    SEAT_MAP_PARTITIONS, SEAT_MAP_SEATS, SEAT_MAP_SEATS_PER_HOLD_MAX, SELL_OUT_PARTITION,
    SELL_OUT_SKUS,
};

/// Longest hold-id prefix: a name is at most 64 bytes and the sequence takes up to 20 digits.
const ID_PREFIX_SIZE_MAX_BYTES: usize = bookd_engine::limits::NAME_SIZE_MAX_BYTES - 20;

/// Which command the client sends next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// A new hold with a fresh id: the start of every loop.
    Hold,
    /// Confirm the hold just granted (flash-sale, hotel, sell-out).
    Confirm,
    /// Release the hold just granted (seat-map).
    Release,
    /// Cancel the stay just confirmed (hotel).
    Cancel,
}

/// What one client (or, added up, a whole run) did. Every command counts once in `commands`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub commands: u64,
    pub holds_granted: u64,
    /// Holds refused (in these workloads: `insufficient_capacity`, a seat taken).
    pub holds_refused: u64,
    pub confirmed: u64,
    pub released: u64,
    pub cancelled: u64,
    /// A confirm, release or cancel of a granted hold that was refused (e.g. it expired
    /// because replies were slower than the ttl). Zero in a healthy run.
    pub follow_ups_refused: u64,
}

impl Counters {
    /// Adds `other` into `self`.
    pub fn add(&mut self, other: &Counters) {
        self.commands += other.commands;
        self.holds_granted += other.holds_granted;
        self.holds_refused += other.holds_refused;
        self.confirmed += other.confirmed;
        self.released += other.released;
        self.cancelled += other.cancelled;
        self.follow_ups_refused += other.follow_ups_refused;
    }
}

/// A closed-loop client: call [`ClientLoop::next_command`], send it, pass its result to
/// [`ClientLoop::on_result`] (or [`ClientLoop::on_reply`]), repeat. The loop of each workload
/// is the one of docs/WORKLOADS.md; every choice comes from the client's own seeded stream.
#[derive(Debug, Clone)]
pub struct ClientLoop {
    workload: Workload,
    names: &'static Names,
    rng: SplitMix64,
    phase: Phase,
    /// True between `next_command` and its result: a closed loop has one command in flight.
    in_flight: bool,
    /// `hold.hold` starts with this many bytes of prefix, then the sequence number.
    id_prefix_size_bytes: usize,
    sequence: u64,
    /// Always a `Command::Hold`, rewritten in place for each new hold.
    hold: Command,
    /// `Command::Confirm`, `Release` and `Cancel`, each aimed at the last granted hold when it is
    /// the next command: one command per verb, so switching verbs moves no buffers.
    confirm: Command,
    release: Command,
    cancel: Command,
    /// The decimal digits of `sequence`, right-aligned, incremented in place.
    digits: [u8; 20],
    /// Where the digits of `sequence` start in `digits`.
    digits_start: usize,
    /// Items kept for reuse when a hold has fewer items than the previous one.
    spare_items: Vec<Item>,
    counters: Counters,
}

impl ClientLoop {
    /// Client number `client` of a run seeded with `seed`; hold ids `c{client}-{sequence}`.
    pub fn new(workload: Workload, seed: u64, client: u32) -> ClientLoop {
        let mut prefix = String::from("c");
        push_decimal(&mut prefix, u64::from(client));
        prefix.push('-');
        let hold = Command::Hold(Hold {
            partition: String::with_capacity(16),
            hold: String::with_capacity(32),
            items: Vec::with_capacity(HOTEL_STAY_NIGHTS_MAX as usize),
            ttl_ms: Some(HOLD_TTL_MS),
            reference: None,
        });
        let names = || (String::with_capacity(16), String::with_capacity(64));
        let ((p1, h1), (p2, h2), (p3, h3)) = (names(), names(), names());
        let mut client = ClientLoop {
            workload,
            names: workload.names(),
            rng: SplitMix64::stream(seed, u64::from(client)),
            phase: Phase::Hold,
            in_flight: false,
            id_prefix_size_bytes: 0,
            sequence: 0,
            hold,
            confirm: Command::Confirm(Confirm { partition: p1, hold: h1 }),
            release: Command::Release(Release { partition: p2, hold: h2 }),
            cancel: Command::Cancel(Cancel { partition: p3, hold: h3 }),
            digits: [b'0'; 20],
            digits_start: 19,
            spare_items: Vec::new(),
            counters: Counters::default(),
        };
        client.set_id_prefix(&prefix);
        client
    }

    /// Hold ids become `{prefix}{sequence}`. Give each run its own prefix (say, with the start
    /// time) when several runs share a server, since hold ids are never reused. The prefix must
    /// be 1–44 name bytes (`A-Z a-z 0-9 . _ : @ -`).
    pub fn with_id_prefix(mut self, prefix: &str) -> ClientLoop {
        self.set_id_prefix(prefix);
        self
    }

    fn set_id_prefix(&mut self, prefix: &str) {
        assert!(
            !prefix.is_empty()
                && prefix.len() <= ID_PREFIX_SIZE_MAX_BYTES
                && prefix.bytes().all(bookd_engine::is_name_byte),
            "hold id prefix {prefix:?} must be 1 to {ID_PREFIX_SIZE_MAX_BYTES} name bytes"
        );
        let id = &mut hold_mut(&mut self.hold).hold;
        id.clear();
        id.push_str(prefix);
        self.id_prefix_size_bytes = prefix.len();
    }

    pub fn workload(&self) -> Workload {
        self.workload
    }

    /// The command [`ClientLoop::next_command`] yields next.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Returns the counters so far and starts again from zero (for per-interval reports).
    pub fn take_counters(&mut self) -> Counters {
        mem::take(&mut self.counters)
    }

    /// The next command. Call [`ClientLoop::on_result`] or [`ClientLoop::on_reply`] with its
    /// result before asking again. The command lives in the client's buffers: send or apply it,
    /// or clone it to keep it.
    pub fn next_command(&mut self) -> &Command {
        assert!(!self.in_flight, "next_command called again before the previous result");
        self.in_flight = true;
        match self.phase {
            Phase::Hold => {
                self.prepare_hold();
                &self.hold
            }
            Phase::Confirm => &self.confirm,
            Phase::Release => &self.release,
            Phase::Cancel => &self.cancel,
        }
    }

    /// Tells the client the result of the command it yielded last.
    #[inline]
    pub fn on_result<T>(&mut self, result: &Result<T, Refusal>) {
        self.on_reply(result.is_ok());
    }

    /// Tells the client whether the command it yielded last succeeded (for callers that see a
    /// status on the wire rather than an engine result).
    pub fn on_reply(&mut self, ok: bool) {
        assert!(self.in_flight, "a result arrived with no command in flight");
        self.in_flight = false;
        self.counters.commands += 1;
        self.phase = match (self.phase, ok) {
            (Phase::Hold, true) => {
                self.counters.holds_granted += 1;
                let next = match self.workload {
                    Workload::FlashSale | Workload::Hotel | Workload::SellOut => Phase::Confirm,
                    Workload::SeatMap => Phase::Release,
                };
                self.aim_follow_up_at_hold(next);
                next
            }
            (Phase::Hold, false) => {
                self.counters.holds_refused += 1;
                Phase::Hold
            }
            (Phase::Confirm, true) => {
                self.counters.confirmed += 1;
                if self.workload == Workload::Hotel {
                    self.aim_follow_up_at_hold(Phase::Cancel);
                    Phase::Cancel
                } else {
                    Phase::Hold
                }
            }
            (Phase::Release, true) => {
                self.counters.released += 1;
                Phase::Hold
            }
            (Phase::Cancel, true) => {
                self.counters.cancelled += 1;
                Phase::Hold
            }
            (Phase::Confirm | Phase::Release | Phase::Cancel, false) => {
                self.counters.follow_ups_refused += 1;
                Phase::Hold
            }
        };
    }

    /// Rewrites `self.hold` as the next hold of the workload, with a fresh id.
    fn prepare_hold(&mut self) {
        let rng = &mut self.rng;
        let hold = hold_mut(&mut self.hold);
        hold.hold.truncate(self.id_prefix_size_bytes);
        push_digits(&mut hold.hold, &self.digits[self.digits_start..]);
        self.digits_start = increment_decimal(&mut self.digits, self.digits_start);
        self.sequence += 1;
        match self.workload {
            Workload::FlashSale => {
                // One partition and one resource: written once, only the quantity changes.
                if hold.partition.is_empty() {
                    hold.partition.push_str(FLASH_SALE_PARTITION);
                    set_items_len(&mut hold.items, &mut self.spare_items, 1);
                    hold.items[0].resource.push_str(FLASH_SALE_RESOURCE);
                }
                hold.items[0].quantity = rng.between(1, FLASH_SALE_QUANTITY_MAX);
            }
            Workload::SellOut => {
                // One partition, one unit of a random sku.
                if hold.partition.is_empty() {
                    hold.partition.push_str(SELL_OUT_PARTITION);
                    set_items_len(&mut hold.items, &mut self.spare_items, 1);
                    hold.items[0].quantity = 1;
                }
                let sku = rng.below(u64::from(SELL_OUT_SKUS)) as usize;
                let item = &mut hold.items[0];
                item.resource.clear();
                item.resource.push_str(&self.names.resources[sku]);
            }
            Workload::SeatMap => {
                let event = rng.below(u64::from(SEAT_MAP_PARTITIONS)) as u32;
                let seats = rng.between(1, u64::from(SEAT_MAP_SEATS_PER_HOLD_MAX)) as usize;
                let first = rng.between(0, u64::from(SEAT_MAP_SEATS - SEAT_MAP_SEATS_PER_HOLD_MAX));
                hold.partition.clear();
                hold.partition.push_str(&self.names.partitions[event as usize]);
                set_items_len(&mut hold.items, &mut self.spare_items, seats);
                for (seat, item) in (first as usize..).zip(hold.items.iter_mut()) {
                    item.resource.clear();
                    item.resource.push_str(&self.names.resources[seat]);
                    item.quantity = 1;
                }
            }
            Workload::Hotel => {
                let hotel = rng.below(u64::from(HOTEL_PARTITIONS)) as u32;
                let room_type = rng.below(u64::from(HOTEL_ROOM_TYPES)) as u32;
                let first = rng.between(0, u64::from(HOTEL_NIGHTS - HOTEL_STAY_NIGHTS_MAX)) as u32;
                let nights = rng.between(1, u64::from(HOTEL_STAY_NIGHTS_MAX)) as usize;
                hold.partition.clear();
                hold.partition.push_str(&self.names.partitions[hotel as usize]);
                set_items_len(&mut hold.items, &mut self.spare_items, nights);
                // Resource index of `rt{room_type}@{night}`: room type major, as in the setup.
                let first = (room_type * HOTEL_NIGHTS + first) as usize;
                for (index, item) in (first..).zip(hold.items.iter_mut()) {
                    item.resource.clear();
                    item.resource.push_str(&self.names.resources[index]);
                    item.quantity = 1;
                }
            }
        }
    }

    /// Points the command of `phase` at the hold just granted.
    fn aim_follow_up_at_hold(&mut self, phase: Phase) {
        let follow_up = match phase {
            Phase::Confirm => &mut self.confirm,
            Phase::Release => &mut self.release,
            Phase::Cancel => &mut self.cancel,
            Phase::Hold => unreachable!("a follow-up is never a hold"),
        };
        let hold = hold_mut(&mut self.hold);
        let (partition, id) = follow_up_names(follow_up);
        if *partition != hold.partition {
            partition.clear();
            partition.push_str(&hold.partition);
        }
        id.clear();
        id.push_str(&hold.hold);
    }
}

/// The `Hold` inside the client's hold slot, which never holds anything else.
fn hold_mut(command: &mut Command) -> &mut Hold {
    match command {
        Command::Hold(hold) => hold,
        other => unreachable!("the hold slot holds a {}", other.op()),
    }
}

/// The partition and hold id buffers of a confirm, release or cancel.
fn follow_up_names(command: &mut Command) -> (&mut String, &mut String) {
    match command {
        Command::Confirm(Confirm { partition, hold })
        | Command::Release(Release { partition, hold })
        | Command::Cancel(Cancel { partition, hold }) => (partition, hold),
        other => unreachable!("the follow-up slot holds a {}", other.op()),
    }
}

/// Appends ASCII digits to `out`.
#[inline]
fn push_digits(out: &mut String, digits: &[u8]) {
    out.extend(digits.iter().map(|&digit| char::from(digit)));
}

/// Adds one to the right-aligned decimal number in `digits[start..]`; returns its new start
/// (one less when it gains a digit).
#[inline]
fn increment_decimal(digits: &mut [u8; 20], start: usize) -> usize {
    let mut at = digits.len();
    while at > start {
        at -= 1;
        if digits[at] == b'9' {
            digits[at] = b'0';
        } else {
            digits[at] += 1;
            return start;
        }
    }
    assert!(start > 0, "a u64 has at most 20 digits");
    digits[start - 1] = b'1';
    start - 1
}

/// Makes `items` exactly `len` long, moving items to and from `spare` to keep their buffers.
fn set_items_len(items: &mut Vec<Item>, spare: &mut Vec<Item>, len: usize) {
    while items.len() > len {
        spare.extend(items.pop());
    }
    while items.len() < len {
        let item = spare
            .pop()
            .unwrap_or_else(|| Item { resource: String::with_capacity(16), quantity: 1 });
        items.push(item);
    }
}

/// Appends `value` in decimal, without going through `fmt`.
#[inline]
pub(crate) fn push_decimal(out: &mut String, mut value: u64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    out.extend(digits[start..].iter().map(|&digit| char::from(digit)));
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use bookd_engine::{Engine, Outcome};

    use super::*;

    const T0: u64 = 1_800_000_000_000;

    /// An engine that creates a workload's resources the first time a hold names them (after
    /// checking the setup has them), so tests need not create all 1.8 million resources.
    struct LazyEngine {
        engine: Engine,
        partitions: HashSet<String>,
        /// Every partition has the same resource ids: those of partition 0, with capacities.
        resources: HashMap<String, u64>,
    }

    impl LazyEngine {
        fn new(workload: Workload) -> LazyEngine {
            let partitions =
                (0..workload.partitions()).map(|i| workload.partition_name(i)).collect();
            let resources = workload
                .setup_partition(0)
                .map(|put| match put {
                    Command::PutResource(put) => (put.resource, put.capacity),
                    other => panic!("setup yielded {other:?}"),
                })
                .collect();
            LazyEngine { engine: Engine::default(), partitions, resources }
        }

        fn apply(&mut self, now_ms: u64, command: &Command) -> Result<Outcome, Refusal> {
            if let Command::Hold(hold) = command {
                assert!(
                    self.partitions.contains(&hold.partition),
                    "{} is not set up",
                    hold.partition
                );
                for item in &hold.items {
                    if self.engine.resource(&hold.partition, &item.resource).is_err() {
                        let capacity = *self
                            .resources
                            .get(&item.resource)
                            .unwrap_or_else(|| panic!("{} is not in the setup", item.resource));
                        let put = Command::PutResource(bookd_engine::PutResource {
                            partition: hold.partition.clone(),
                            resource: item.resource.clone(),
                            capacity,
                        });
                        self.engine.apply(now_ms, &put).unwrap();
                    }
                }
            }
            self.engine.apply(now_ms, command)
        }
    }

    fn hold_of(command: &Command) -> &Hold {
        match command {
            Command::Hold(hold) => hold,
            other => panic!("expected a hold, got {other:?}"),
        }
    }

    /// Runs `clients` interleaved clients for `steps` commands each against a lazily set-up
    /// engine, checking every command is valid and every refusal is one the workload expects.
    fn run(workload: Workload, clients: u32, steps: u32) -> (Counters, LazyEngine) {
        let mut engine = LazyEngine::new(workload);
        let mut loops: Vec<ClientLoop> = (0..clients).map(|c| workload.client(9, c)).collect();
        let mut now_ms = T0;
        for step in 0..steps {
            now_ms += u64::from(step % 2);
            for client in &mut loops {
                let command = client.next_command();
                assert_eq!(command.validate(), Ok(()), "{command:?}");
                let result = engine.apply(now_ms, command);
                match &result {
                    Ok(Outcome::Hold { existing, .. }) => {
                        assert!(!existing, "{command:?} reused an id")
                    }
                    Ok(Outcome::Resource { .. }) => panic!("a client put a resource"),
                    Ok(Outcome::PartitionDeleted { .. }) => panic!("a client deleted a partition"),
                    Err(Refusal::InsufficientCapacity { .. }) => {
                        assert_eq!(client.phase(), Phase::Hold, "only holds may be refused");
                    }
                    Err(other) => panic!("{command:?} was refused: {other:?}"),
                }
                client.on_result(&result);
            }
        }
        let mut total = Counters::default();
        loops.iter().for_each(|client| total.add(client.counters()));
        assert_eq!(total.commands, u64::from(clients) * u64::from(steps));
        assert_eq!(engine.engine.check_invariants(), Ok(()));
        (total, engine)
    }

    #[test]
    fn flash_sale_holds_then_confirms_everything() {
        let (counters, lazy) = run(Workload::FlashSale, 8, 1_000);
        assert_eq!((counters.holds_granted, counters.confirmed), (4_000, 4_000));
        assert_eq!(counters.holds_refused + counters.follow_ups_refused, 0);
        let ga = lazy.engine.resource("concert-1", "ga").unwrap();
        assert_eq!(ga.held, 0);
        // q uniform in 1..=4: 4 000 bookings of 2.5 units on average.
        assert!((9_000..11_000).contains(&ga.confirmed), "{}", ga.confirmed);
        assert_eq!(Workload::FlashSale.successes(&counters), 4_000);
    }

    #[test]
    fn seat_map_holds_then_releases_and_leaves_seats_free() {
        let (counters, lazy) = run(Workload::SeatMap, 64, 200);
        assert_eq!(counters.holds_granted, counters.released);
        assert_eq!(
            counters.holds_granted + counters.holds_refused,
            counters.commands - counters.released
        );
        assert_eq!(lazy.engine.stats().holds_live, 0);
        assert_eq!(counters.follow_ups_refused, 0);
    }

    #[test]
    fn hotel_holds_confirms_and_cancels() {
        let (counters, lazy) = run(Workload::Hotel, 16, 600);
        assert_eq!(counters.holds_refused, 0, "20 rooms a night never run out here");
        assert_eq!(counters.holds_granted * 3, counters.commands);
        assert_eq!(counters.cancelled, counters.confirmed);
        assert_eq!(Workload::Hotel.successes(&counters), counters.confirmed);
        assert_eq!(lazy.engine.stats().holds_live, 0);
    }

    /// Yields `count` holds from one client, each answered as refused so the next is a hold.
    fn holds(workload: Workload, seed: u64, count: usize) -> Vec<Hold> {
        let mut client = workload.client(seed, 3);
        (0..count)
            .map(|_| {
                let hold = hold_of(client.next_command()).clone();
                client.on_reply(false);
                hold
            })
            .collect()
    }

    fn number_after(text: &str, prefix: &str) -> u32 {
        text.strip_prefix(prefix).and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("{text}"))
    }

    #[test]
    fn seat_map_never_asks_past_the_last_seat() {
        let (mut first_seen, mut last_seen) = (u32::MAX, 0);
        let mut sizes = HashSet::new();
        for hold in holds(Workload::SeatMap, 1, 100_000) {
            let event = number_after(&hold.partition, "event-");
            assert!(event < 100);
            let seats: Vec<u32> =
                hold.items.iter().map(|i| number_after(&i.resource, "s-")).collect();
            sizes.insert(seats.len());
            assert!(hold.items.iter().all(|item| item.quantity == 1));
            assert!(seats.windows(2).all(|pair| pair[1] == pair[0] + 1), "{seats:?}");
            first_seen = first_seen.min(seats[0]);
            last_seen = last_seen.max(*seats.last().unwrap());
            assert!(seats[0] <= 9_996 && *seats.last().unwrap() <= 9_999, "{seats:?}");
        }
        assert_eq!((first_seen, last_seen), (0, 9_999));
        assert_eq!(sizes, HashSet::from([1, 2, 3, 4]));
    }

    #[test]
    fn hotel_stays_are_consecutive_nights_of_one_room_type_within_the_year() {
        let mut lengths = HashSet::new();
        let mut last_night_seen = 0;
        for hold in holds(Workload::Hotel, 2, 50_000) {
            assert!(number_after(&hold.partition, "hotel-") < 1_000);
            let nights: Vec<(u32, u32)> = hold
                .items
                .iter()
                .map(|item| {
                    let (room_type, night) = item.resource.split_once('@').unwrap();
                    (number_after(room_type, "rt"), night.parse().unwrap())
                })
                .collect();
            lengths.insert(nights.len());
            assert!(nights.iter().all(|&(t, n)| t == nights[0].0 && t < 5 && n <= 364));
            assert!(nights.windows(2).all(|pair| pair[1].1 == pair[0].1 + 1), "{nights:?}");
            assert!(nights[0].1 <= 358);
            last_night_seen = last_night_seen.max(nights.last().unwrap().1);
        }
        assert_eq!(lengths, (1..=7).collect::<HashSet<usize>>());
        assert_eq!(last_night_seen, 364);
    }

    #[test]
    fn flash_sale_quantities_are_one_to_four_of_ga() {
        let quantities: HashSet<u64> = holds(Workload::FlashSale, 3, 1_000)
            .iter()
            .map(|hold| {
                assert_eq!((&*hold.partition, &*hold.items[0].resource), ("concert-1", "ga"));
                assert_eq!((hold.items.len(), hold.ttl_ms), (1, Some(600_000)));
                hold.items[0].quantity
            })
            .collect();
        assert_eq!(quantities, (1..=4).collect::<HashSet<u64>>());
    }

    #[test]
    fn sell_out_holds_one_unit_of_every_sku_and_confirms_it() {
        let mut skus = HashSet::new();
        for hold in holds(Workload::SellOut, 4, 5_000) {
            assert_eq!((&*hold.partition, hold.items.len()), ("drop-1", 1));
            assert_eq!((hold.items[0].quantity, hold.ttl_ms), (1, Some(600_000)));
            skus.insert(Workload::sell_out_sku(&hold.items[0].resource).unwrap());
        }
        assert_eq!(skus, (0..100).collect::<HashSet<u32>>());
        let mut client = Workload::SellOut.client(4, 0);
        let hold = hold_of(client.next_command()).hold.clone();
        client.on_reply(true);
        assert_eq!(client.phase(), Phase::Confirm);
        match client.next_command() {
            Command::Confirm(confirm) => {
                assert_eq!((&*confirm.partition, &confirm.hold), ("drop-1", &hold))
            }
            other => panic!("expected a confirm, got {other:?}"),
        }
        client.on_reply(true);
        assert_eq!(client.phase(), Phase::Hold);
        assert_eq!(Workload::SellOut.successes(client.counters()), 1);
    }

    #[test]
    fn sell_out_sells_exactly_the_stock_then_refuses_every_hold() {
        // 64 clients × 5 000 steps: 320 000 commands, well past the 200 000 (a hold and a
        // confirm per unit) plus the refusals of skus sold out early that the sale takes.
        let (counters, lazy) = run(Workload::SellOut, 64, 5_000);
        assert_eq!(counters.confirmed, 100_000, "every unit sold once, none oversold");
        assert_eq!(counters.holds_granted, 100_000);
        assert!(counters.holds_refused > 0);
        assert_eq!(counters.follow_ups_refused, 0);
        for sku in 0..100 {
            let resource = lazy.engine.resource("drop-1", &format!("sku-{sku}")).unwrap();
            assert_eq!((resource.confirmed, resource.held, resource.capacity), (1_000, 0, 1_000));
        }
    }

    #[test]
    fn hold_ids_are_fresh_across_clients_and_follow_ups_name_the_hold() {
        let mut ids = HashSet::new();
        for client in 0..4 {
            let mut client = Workload::Hotel.client(5, client);
            for step in 0..3_000 {
                let command = client.next_command().clone();
                match &command {
                    Command::Hold(hold) => {
                        assert!(ids.insert(hold.hold.clone()), "{} reused", hold.hold)
                    }
                    Command::Confirm(Confirm { hold, .. })
                    | Command::Cancel(Cancel { hold, .. }) => {
                        assert!(ids.contains(hold));
                    }
                    other => panic!("hotel sent {other:?}"),
                }
                // Refuse one hold in five: a refused hold's id is not reused either.
                client.on_reply(step % 5 != 0 || !matches!(command, Command::Hold(_)));
            }
        }
        assert!(ids.len() > 4_000);
        let mut client = Workload::SeatMap.client(5, 0).with_id_prefix("run-17.c0-");
        assert_eq!(hold_of(client.next_command()).hold, "run-17.c0-0");
        client.on_reply(false);
        assert_eq!(hold_of(client.next_command()).hold, "run-17.c0-1");
    }

    #[test]
    fn same_seed_same_commands_other_seed_other_commands() {
        let a = holds(Workload::Hotel, 11, 50);
        assert_eq!(a, holds(Workload::Hotel, 11, 50));
        assert_ne!(a, holds(Workload::Hotel, 12, 50));
    }

    #[test]
    #[should_panic(expected = "before the previous result")]
    fn one_command_in_flight_at_a_time() {
        let mut client = Workload::FlashSale.client(0, 0);
        client.next_command();
        client.next_command();
    }

    #[test]
    #[should_panic(expected = "name bytes")]
    fn bad_id_prefix_is_refused() {
        let _ = Workload::FlashSale.client(0, 0).with_id_prefix("a/b");
    }

    #[test]
    fn increment_decimal_counts_like_push_decimal() {
        let (mut digits, mut start) = ([b'0'; 20], 19);
        for value in 0..12_345u64 {
            let mut counted = String::new();
            push_digits(&mut counted, &digits[start..]);
            let mut written = String::new();
            push_decimal(&mut written, value);
            assert_eq!(counted, written);
            start = increment_decimal(&mut digits, start);
        }
        let (mut digits, mut start) = (*b"00018446744073709550", 0);
        start = increment_decimal(&mut digits, start);
        assert_eq!(&digits[start..], b"00018446744073709551");
    }

    #[test]
    fn push_decimal_writes_every_width() {
        for value in [0, 7, 10, 99, 12_345, u64::MAX] {
            let mut out = String::from("x");
            push_decimal(&mut out, value);
            assert_eq!(out, format!("x{value}"));
        }
    }
}
