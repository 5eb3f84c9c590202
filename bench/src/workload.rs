//! The workloads of docs/WORKLOADS.md: their names, shapes and setup commands (one `put_resource` per
//! resource). Setup is a plain iterator, so it costs no memory up front.

use std::fmt;
use std::sync::OnceLock;

use bookd_engine::{Command, PutResource};

use crate::client::{push_decimal, ClientLoop};

/// Time to live of every hold the workloads take: 600 s.
pub const HOLD_TTL_MS: u64 = 600_000;

/// flash-sale: one partition, one resource.
pub(crate) const FLASH_SALE_PARTITION: &str = "concert-1";
pub(crate) const FLASH_SALE_RESOURCE: &str = "ga";
pub(crate) const FLASH_SALE_CAPACITY: u64 = 100_000_000;
/// flash-sale: q uniform in 1..=4.
pub(crate) const FLASH_SALE_QUANTITY_MAX: u64 = 4;

/// seat-map: `event-0` .. `event-99`, seats `s-0` .. `s-9999` of capacity 1.
pub(crate) const SEAT_MAP_PARTITIONS: u32 = 100;
pub(crate) const SEAT_MAP_SEATS: u32 = 10_000;
/// seat-map: k consecutive seats, k uniform in 1..=4, from a start seat in 0..=9996.
pub(crate) const SEAT_MAP_SEATS_PER_HOLD_MAX: u32 = 4;

/// hotel: `hotel-0` .. `hotel-999`, `rt{t}@{n}` for t in 0..=4 and n in 0..=364, capacity 20.
pub(crate) const HOTEL_PARTITIONS: u32 = 1_000;
pub(crate) const HOTEL_ROOM_TYPES: u32 = 5;
pub(crate) const HOTEL_NIGHTS: u32 = 365;
pub(crate) const HOTEL_CAPACITY: u64 = 20;
/// hotel: a stay of L nights, L uniform in 1..=7, from a first night in 0..=358.
pub(crate) const HOTEL_STAY_NIGHTS_MAX: u32 = 7;

/// sell-out: one partition, `sku-0` .. `sku-99` of capacity 1 000 (100 000 units in all).
pub(crate) const SELL_OUT_PARTITION: &str = "drop-1";
pub const SELL_OUT_SKUS: u32 = 100;
pub(crate) const SELL_OUT_CAPACITY: u64 = 1_000;
/// Every unit the sell-out's setup creates.
pub const SELL_OUT_UNITS: u64 = SELL_OUT_SKUS as u64 * SELL_OUT_CAPACITY;

const _: () = assert!(SEAT_MAP_SEATS_PER_HOLD_MAX as usize <= bookd_engine::limits::HOLD_ITEMS_MAX);
const _: () = assert!(HOTEL_STAY_NIGHTS_MAX as usize <= bookd_engine::limits::HOLD_ITEMS_MAX);
const _: () =
    assert!(HOTEL_STAY_NIGHTS_MAX <= HOTEL_NIGHTS && SEAT_MAP_SEATS_PER_HOLD_MAX <= SEAT_MAP_SEATS);

/// One of the workloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Workload {
    /// One hot resource: hold q ∈ 1..=4 of `concert-1/ga`, then confirm. Success: bookings.
    FlashSale,
    /// 1 000 000 seats: hold k ∈ 1..=4 consecutive seats, release if held. Success: holds
    /// granted (against refused).
    SeatMap,
    /// 1 825 000 room-nights: hold L ∈ 1..=7 nights, confirm then cancel if held. Success: stays
    /// booked.
    Hotel,
    /// Demand far above supply: hold 1 unit of one of 100 skus of 1 000 units, confirm if held.
    /// Once the 100 000 units are sold every hold is refused. Success: units sold.
    SellOut,
}

impl Workload {
    pub const ALL: [Workload; 4] =
        [Workload::FlashSale, Workload::SeatMap, Workload::Hotel, Workload::SellOut];
    /// The workloads whose command mix stays the same for the whole run (sell-out turns into
    /// refusals alone once sold out): the engine benchmarks' mixes.
    pub const STEADY: [Workload; 3] = [Workload::FlashSale, Workload::SeatMap, Workload::Hotel];

    /// The workload's name in docs/WORKLOADS.md (`flash-sale`, `seat-map`, `hotel`, `sell-out`).
    pub fn name(self) -> &'static str {
        match self {
            Workload::FlashSale => "flash-sale",
            Workload::SeatMap => "seat-map",
            Workload::Hotel => "hotel",
            Workload::SellOut => "sell-out",
        }
    }

    /// The workload called `name`, if any.
    pub fn from_name(name: &str) -> Option<Workload> {
        Workload::ALL.into_iter().find(|workload| workload.name() == name)
    }

    /// How many partitions the setup creates.
    pub fn partitions(self) -> u32 {
        match self {
            Workload::FlashSale | Workload::SellOut => 1,
            Workload::SeatMap => SEAT_MAP_PARTITIONS,
            Workload::Hotel => HOTEL_PARTITIONS,
        }
    }

    /// How many resources each partition has.
    pub fn resources_per_partition(self) -> u32 {
        match self {
            Workload::FlashSale => 1,
            Workload::SeatMap => SEAT_MAP_SEATS,
            Workload::Hotel => HOTEL_ROOM_TYPES * HOTEL_NIGHTS,
            Workload::SellOut => SELL_OUT_SKUS,
        }
    }

    /// How many resources the setup creates (1, 1 000 000, 1 825 000, 100).
    pub fn resources(self) -> u64 {
        u64::from(self.partitions()) * u64::from(self.resources_per_partition())
    }

    /// The name of partition `index` (`concert-1`, `event-{index}`, `hotel-{index}`, `drop-1`).
    pub fn partition_name(self, index: u32) -> String {
        assert!(index < self.partitions(), "{} has no partition {index}", self.name());
        let mut name = String::with_capacity(16);
        self.write_partition(&mut name, index);
        name
    }

    /// The `put_resource` commands that create every resource, partition by partition.
    pub fn setup(self) -> Setup {
        Setup { workload: self, next: 0, end: self.resources() }
    }

    /// The `put_resource` commands of partition `index` alone (for a partial setup).
    pub fn setup_partition(self, index: u32) -> Setup {
        assert!(index < self.partitions(), "{} has no partition {index}", self.name());
        let per_partition = u64::from(self.resources_per_partition());
        let start = u64::from(index) * per_partition;
        Setup { workload: self, next: start, end: start + per_partition }
    }

    /// Closed-loop client number `client` of a run seeded with `seed`. Its hold ids are
    /// `c{client}-{sequence}`; see [`ClientLoop::with_id_prefix`] to make them fresh across runs.
    pub fn client(self, seed: u64, client: u32) -> ClientLoop {
        ClientLoop::new(self, seed, client)
    }

    /// The workload's success figure out of `counters`: bookings (flash-sale), holds granted
    /// (seat-map), stays booked (hotel), units sold (sell-out: one unit per confirmed hold).
    pub fn successes(self, counters: &crate::Counters) -> u64 {
        match self {
            Workload::FlashSale | Workload::Hotel | Workload::SellOut => counters.confirmed,
            Workload::SeatMap => counters.holds_granted,
        }
    }

    /// What [`Workload::successes`] counts, for a table header.
    pub fn success_name(self) -> &'static str {
        match self {
            Workload::FlashSale => "bookings",
            Workload::SeatMap => "holds granted",
            Workload::Hotel => "stays booked",
            Workload::SellOut => "units sold",
        }
    }

    /// The sku number of a sell-out resource id (`sku-17` → 17); `None` for any other id.
    pub fn sell_out_sku(resource: &str) -> Option<u32> {
        let digits = resource.strip_prefix("sku-")?;
        // Canonical decimal only: `sku-07` names no resource of the setup.
        if digits.is_empty() || (digits.len() > 1 && digits.starts_with('0')) {
            return None;
        }
        digits.parse().ok().filter(|&sku| sku < SELL_OUT_SKUS)
    }

    pub(crate) fn write_partition(self, out: &mut String, index: u32) {
        match self {
            Workload::FlashSale => out.push_str(FLASH_SALE_PARTITION),
            Workload::SellOut => out.push_str(SELL_OUT_PARTITION),
            Workload::SeatMap => {
                out.push_str("event-");
                push_decimal(out, u64::from(index));
            }
            Workload::Hotel => {
                out.push_str("hotel-");
                push_decimal(out, u64::from(index));
            }
        }
    }

    /// Writes the id of resource `index` of a partition (`ga`, `s-{seat}`, `rt{t}@{night}`,
    /// `sku-{index}`).
    pub(crate) fn write_resource(self, out: &mut String, index: u32) {
        match self {
            Workload::FlashSale => out.push_str(FLASH_SALE_RESOURCE),
            Workload::SeatMap => {
                out.push_str("s-");
                push_decimal(out, u64::from(index));
            }
            Workload::Hotel => write_room_night(out, index / HOTEL_NIGHTS, index % HOTEL_NIGHTS),
            Workload::SellOut => {
                out.push_str("sku-");
                push_decimal(out, u64::from(index));
            }
        }
    }

    /// The workload's names, built once per process and shared by every client.
    pub(crate) fn names(self) -> &'static Names {
        static FLASH_SALE: OnceLock<Names> = OnceLock::new();
        static SEAT_MAP: OnceLock<Names> = OnceLock::new();
        static HOTEL: OnceLock<Names> = OnceLock::new();
        static SELL_OUT: OnceLock<Names> = OnceLock::new();
        let names = match self {
            Workload::FlashSale => &FLASH_SALE,
            Workload::SeatMap => &SEAT_MAP,
            Workload::Hotel => &HOTEL,
            Workload::SellOut => &SELL_OUT,
        };
        names.get_or_init(|| Names::new(self))
    }

    fn capacity(self) -> u64 {
        match self {
            Workload::FlashSale => FLASH_SALE_CAPACITY,
            Workload::SeatMap => 1,
            Workload::Hotel => HOTEL_CAPACITY,
            Workload::SellOut => SELL_OUT_CAPACITY,
        }
    }
}

/// Every partition name of a workload, and the resource ids of one partition (the same in every
/// partition), by index: clients copy names instead of formatting numbers for every command.
pub(crate) struct Names {
    pub(crate) partitions: Box<[Box<str>]>,
    /// Resource `index` of a partition: seat `s-{index}`; hotel `rt{index / 365}@{index % 365}`.
    pub(crate) resources: Box<[Box<str>]>,
}

impl Names {
    fn new(workload: Workload) -> Names {
        let name = |write: &dyn Fn(&mut String)| {
            let mut name = String::with_capacity(16);
            write(&mut name);
            name.into_boxed_str()
        };
        Names {
            partitions: (0..workload.partitions())
                .map(|index| name(&|out| workload.write_partition(out, index)))
                .collect(),
            resources: (0..workload.resources_per_partition())
                .map(|index| name(&|out| workload.write_resource(out, index)))
                .collect(),
        }
    }
}

impl fmt::Debug for Names {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Names")
            .field("partitions", &self.partitions.len())
            .field("resources", &self.resources.len())
            .finish()
    }
}

/// Writes the hotel resource id `rt{room_type}@{night}`.
#[inline]
fn write_room_night(out: &mut String, room_type: u32, night: u32) {
    out.push_str("rt");
    push_decimal(out, u64::from(room_type));
    out.push('@');
    push_decimal(out, u64::from(night));
}

/// The setup commands of a workload (or of one partition): one `put_resource` per resource.
#[derive(Debug, Clone)]
pub struct Setup {
    workload: Workload,
    /// The next resource, counted over the whole workload; the setup ends before `end`.
    next: u64,
    end: u64,
}

impl Iterator for Setup {
    type Item = Command;

    fn next(&mut self) -> Option<Command> {
        if self.next >= self.end {
            return None;
        }
        let per_partition = u64::from(self.workload.resources_per_partition());
        let partition_index = (self.next / per_partition) as u32;
        let resource = (self.next % per_partition) as u32;
        self.next += 1;
        let mut partition = String::with_capacity(16);
        self.workload.write_partition(&mut partition, partition_index);
        let mut id = String::with_capacity(16);
        self.workload.write_resource(&mut id, resource);
        Some(Command::PutResource(PutResource {
            partition,
            resource: id,
            capacity: self.workload.capacity(),
        }))
    }

    fn nth(&mut self, n: usize) -> Option<Command> {
        self.next = self.next.saturating_add(n as u64).min(self.end);
        self.next()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = (self.end - self.next) as usize;
        (left, Some(left))
    }
}

impl ExactSizeIterator for Setup {}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(command: &Command) -> &PutResource {
        match command {
            Command::PutResource(put) => put,
            other => panic!("setup yielded {other:?}"),
        }
    }

    #[test]
    fn names_round_trip() {
        for workload in Workload::ALL {
            assert_eq!(Workload::from_name(workload.name()), Some(workload));
        }
        assert_eq!(Workload::from_name("nope"), None);
    }

    #[test]
    fn setup_sizes_match_workloads_md() {
        assert_eq!(Workload::FlashSale.resources(), 1);
        assert_eq!(Workload::SeatMap.resources(), 1_000_000);
        assert_eq!(Workload::Hotel.resources(), 1_825_000);
        assert_eq!(Workload::SellOut.resources(), 100);
        for workload in Workload::ALL {
            assert_eq!(workload.setup().len() as u64, workload.resources());
        }
    }

    #[test]
    fn flash_sale_setup_is_one_big_resource() {
        let commands: Vec<Command> = Workload::FlashSale.setup().collect();
        assert_eq!(commands.len(), 1);
        let put = put(&commands[0]);
        assert_eq!(
            (&*put.partition, &*put.resource, put.capacity),
            ("concert-1", "ga", 100_000_000)
        );
    }

    #[test]
    fn seat_map_setup_first_and_last() {
        let mut setup = Workload::SeatMap.setup();
        let first = setup.next().unwrap();
        assert_eq!(
            (&*put(&first).partition, &*put(&first).resource, put(&first).capacity),
            ("event-0", "s-0", 1)
        );
        let last = Workload::SeatMap.setup_partition(99).last().unwrap();
        assert_eq!((&*put(&last).partition, &*put(&last).resource), ("event-99", "s-9999"));
        assert_eq!(Workload::SeatMap.setup_partition(99).len(), 10_000);
    }

    #[test]
    fn hotel_setup_covers_every_room_night_once() {
        let commands: Vec<Command> = Workload::Hotel.setup_partition(7).collect();
        assert_eq!(commands.len(), 5 * 365);
        let mut ids: Vec<&str> = commands.iter().map(|c| &*put(c).resource).collect();
        assert!(commands.iter().all(|c| put(c).partition == "hotel-7" && put(c).capacity == 20));
        assert_eq!(
            (ids[0], ids[364], ids[365], ids[1824]),
            ("rt0@0", "rt0@364", "rt1@0", "rt4@364")
        );
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 5 * 365);
        let last = Workload::Hotel.setup().nth(1_825_000 - 1).unwrap();
        assert_eq!((&*put(&last).partition, &*put(&last).resource), ("hotel-999", "rt4@364"));
    }

    #[test]
    fn sell_out_setup_is_a_hundred_skus_of_a_thousand() {
        let commands: Vec<Command> = Workload::SellOut.setup().collect();
        assert_eq!(commands.len(), 100);
        assert!(commands.iter().all(|c| put(c).partition == "drop-1" && put(c).capacity == 1_000));
        let ids: Vec<&str> = commands.iter().map(|c| &*put(c).resource).collect();
        assert_eq!((ids[0], ids[1], ids[99]), ("sku-0", "sku-1", "sku-99"));
        let units: u64 = commands.iter().map(|c| put(c).capacity).sum();
        assert_eq!(units, SELL_OUT_UNITS);
        assert_eq!(SELL_OUT_UNITS, 100_000);
        assert_eq!(Workload::from_name("sell-out"), Some(Workload::SellOut));
        assert_eq!(Workload::SellOut.partition_name(0), "drop-1");
        for (index, id) in ids.iter().enumerate() {
            assert_eq!(Workload::sell_out_sku(id), Some(index as u32));
        }
        for id in ["sku-100", "sku-", "sku-07", "sku--1", "ga", "s-1"] {
            assert_eq!(Workload::sell_out_sku(id), None, "{id}");
        }
    }

    #[test]
    fn name_tables_match_the_setup() {
        for workload in Workload::ALL {
            let names = workload.names();
            assert_eq!(names.partitions.len() as u32, workload.partitions());
            let last_partition = workload.partitions() - 1;
            for (index, command) in workload.setup_partition(last_partition).enumerate() {
                assert_eq!(&*names.resources[index], &*put(&command).resource);
                assert_eq!(&*names.partitions[last_partition as usize], &*put(&command).partition);
            }
        }
    }

    #[test]
    fn every_setup_command_is_valid() {
        for workload in Workload::ALL {
            let partitions = [0, workload.partitions() - 1];
            for command in partitions.iter().flat_map(|&p| workload.setup_partition(p)) {
                assert_eq!(command.validate(), Ok(()), "{command:?}");
            }
        }
    }
}
