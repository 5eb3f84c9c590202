//! What commands and queries return: owned, cheap-to-clone views of a resource or a hold.

use std::sync::Arc;

/// The state of a hold. `Held` is the only live state; `Confirmed` can still be cancelled;
/// the other three are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum HoldStatus {
    Held = 0,
    Confirmed = 1,
    Released = 2,
    Expired = 3,
    Cancelled = 4,
}

impl HoldStatus {
    pub const ALL: [HoldStatus; 5] = [
        HoldStatus::Held,
        HoldStatus::Confirmed,
        HoldStatus::Released,
        HoldStatus::Expired,
        HoldStatus::Cancelled,
    ];

    /// The contract's name of the status.
    pub fn as_str(self) -> &'static str {
        match self {
            HoldStatus::Held => "held",
            HoldStatus::Confirmed => "confirmed",
            HoldStatus::Released => "released",
            HoldStatus::Expired => "expired",
            HoldStatus::Cancelled => "cancelled",
        }
    }

    /// Whether the hold has ended (released, expired or cancelled): final, and forgotten after
    /// the hold retention.
    #[inline]
    pub fn has_ended(self) -> bool {
        matches!(self, HoldStatus::Released | HoldStatus::Expired | HoldStatus::Cancelled)
    }

    /// The status with this wire value, if any.
    pub fn from_u8(value: u8) -> Option<HoldStatus> {
        HoldStatus::ALL.get(usize::from(value)).copied()
    }
}

/// A resource's counts. `held + confirmed <= capacity` always.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceView {
    pub partition: Arc<str>,
    pub id: Arc<str>,
    pub capacity: u64,
    pub held: u64,
    pub confirmed: u64,
}

impl ResourceView {
    /// Units neither held nor confirmed.
    pub fn available(&self) -> u64 {
        self.capacity - self.held - self.confirmed
    }
}

/// One item of a hold: `quantity` units of `resource`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemView {
    pub resource: Arc<str>,
    pub quantity: u32,
}

/// A hold as the contract shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldView {
    pub partition: Arc<str>,
    pub id: Arc<str>,
    pub status: HoldStatus,
    /// Shared with the hold's record: a view costs no copy of its items.
    pub items: Arc<[ItemView]>,
    pub expires_at_ms: u64,
    pub reference: Option<Arc<str>>,
}

/// One page of a resource listing. `next` is the id of the page's last resource when more
/// resources may follow, else `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourcePage {
    pub resources: Vec<ResourceView>,
    pub next: Option<Arc<str>>,
}

/// A resource read in place, as a reply shows it: borrowed from the state, no allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceRef<'a> {
    pub partition: &'a str,
    pub id: &'a str,
    pub capacity: u64,
    pub held: u64,
    pub confirmed: u64,
}

/// A hold read in place, as a reply shows it: borrowed from the state, no allocation and no
/// reference count touched, so the single writer can encode a reply without building a view
/// for another thread to free.
#[derive(Debug, Clone, Copy)]
pub struct HoldRef<'a> {
    pub partition: &'a str,
    pub id: &'a str,
    pub status: HoldStatus,
    pub expires_at_ms: u64,
    pub reference: Option<&'a str>,
    pub(crate) items: &'a [crate::state::HoldItem],
    pub(crate) resources: &'a crate::chunked::ChunkedVec<crate::state::Resource>,
}

impl<'a> HoldRef<'a> {
    /// The hold's items in order: resource id and quantity.
    pub fn items(&self) -> impl ExactSizeIterator<Item = (&'a str, u32)> + 'a {
        let resources = self.resources;
        self.items.iter().map(move |item| (&*resources[item.resource as usize].id, item.quantity))
    }
}

/// What a successful command returns, read in place right after it was applied (the borrowed
/// form of [`crate::Outcome`]; [`crate::Engine::outcome_ref`] builds it from a receipt).
#[derive(Debug, Clone, Copy)]
pub enum OutcomeRef<'a> {
    Resource { resource: ResourceRef<'a>, created: bool },
    Hold { hold: HoldRef<'a>, existing: bool },
    PartitionDeleted { partition: &'a str, resources: u32, holds: u32 },
}
