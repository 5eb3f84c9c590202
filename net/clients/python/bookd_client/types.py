"""The values the client hands out and takes: resources, holds, pages, changes, the node's
handshake, and the commands of a batch. Field names are those of docs/API.md and
docs/protocol.md."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Optional, Sequence, Tuple, Union


class HoldStatus(str, enum.Enum):
    """A hold's status; the wire value is the member's position (0 ``held`` … 4 ``cancelled``)."""

    HELD = "held"
    CONFIRMED = "confirmed"
    RELEASED = "released"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


#: Hold statuses by wire value.
HOLD_STATUSES: Tuple[HoldStatus, ...] = tuple(HoldStatus)


class Role(str, enum.Enum):
    """A node's role in replication, as HELLO_OK carries it (0 primary, 1 standby)."""

    PRIMARY = "primary"
    STANDBY = "standby"


class ChangeOp(str, enum.Enum):
    """What a change of the feed did; the wire value is the position plus one."""

    PUT_RESOURCE = "put_resource"
    HOLD = "hold"
    CONFIRM = "confirm"
    RELEASE = "release"
    CANCEL = "cancel"
    EXTEND = "extend"
    EXPIRE = "expire"
    DELETE_PARTITION = "delete_partition"


#: Change ops by wire value (index 0 is unused: ops start at 1).
CHANGE_OPS: Tuple[Optional[ChangeOp], ...] = (None,) + tuple(ChangeOp)


@dataclass(slots=True)
class ResourceView:
    """A resource's counts. ``created`` is true only for a ``put_resource`` that created it
    (HTTP 201 rather than 200)."""

    partition: str
    id: str
    capacity: int
    held: int
    confirmed: int
    created: bool = False

    @property
    def available(self) -> int:
        """``capacity - held - confirmed``."""
        return self.capacity - self.held - self.confirmed


@dataclass(slots=True)
class Item:
    """``quantity`` units of ``resource``: one item of a hold."""

    resource: str
    quantity: int


@dataclass(slots=True)
class HoldView:
    """A hold as the node shows it. ``existing`` is true only for a ``hold`` whose id already
    existed (a safe repeat: HTTP 200 ``"existing": true``)."""

    partition: str
    id: str
    status: HoldStatus
    items: Tuple[Item, ...]
    expires_at_ms: int
    ref: Optional[str] = None
    existing: bool = False


@dataclass(slots=True)
class ResourcePage:
    """One page of a listing; pass ``next`` as ``after`` for the following page (``None``:
    the last page)."""

    partition: str
    resources: list
    next: Optional[str] = None


@dataclass(slots=True)
class PartitionDeleted:
    """The result of ``delete_partition``: how many resources and holds went with it."""

    partition: str
    resources: int
    holds: int


@dataclass(slots=True)
class HelloOk:
    """The node's answer to the handshake: its role, epoch and the limits a client respects."""

    role: Role
    epoch: int
    shards: int
    frame_size_max: int
    commands_per_frame_max: int
    in_flight_max: int
    #: The shard this connection is bound to, when its HELLO asked for one (``None``: plain).
    bound_shard: Optional[int] = None
    #: How partitions map to shards, told with ``bound_shard``: ``"fnv1a64_mod"`` (FNV-1a 64 of
    #: the partition name's bytes, modulo the shard count).
    shard_rule: Optional[str] = None


@dataclass(slots=True)
class ChangedResource:
    """A resource as after a change (absolute counts)."""

    id: str
    capacity: int
    held: int
    confirmed: int

    @property
    def available(self) -> int:
        return self.capacity - self.held - self.confirmed


@dataclass(slots=True)
class ChangedHold:
    """A hold as after a change."""

    id: str
    status: HoldStatus
    expires_at_ms: int
    ref: Optional[str]
    items: Tuple[Item, ...]


@dataclass(slots=True)
class Removed:
    """What ``delete_partition`` removed with the partition."""

    resources: int
    holds: int


@dataclass(slots=True)
class Change:
    """One change of the feed and ``cursor``, the position just after it (resume from there)."""

    cursor: str
    op: ChangeOp
    at_ms: int
    partition: str
    hold: Optional[ChangedHold] = None
    resources: list = field(default_factory=list)
    removed: Optional[Removed] = None


# ---- commands (the elements of a batch) ----

ItemsLike = Sequence[Union[Item, Tuple[str, int]]]


@dataclass(slots=True)
class PutResource:
    """Create a resource or set its capacity."""

    partition: str
    id: str
    capacity: int


@dataclass(slots=True)
class Hold:
    """Take units of each item, all or nothing; ``id`` is the idempotency key. ``ttl_ms``
    ``None``: the node's default (600 000)."""

    partition: str
    id: str
    items: ItemsLike
    ttl_ms: Optional[int] = None
    ref: Optional[str] = None


@dataclass(slots=True)
class Confirm:
    """Confirm a held hold."""

    partition: str
    id: str


@dataclass(slots=True)
class Release:
    """Release a held hold."""

    partition: str
    id: str


@dataclass(slots=True)
class Cancel:
    """Cancel a confirmed hold."""

    partition: str
    id: str


@dataclass(slots=True)
class Extend:
    """Set a held hold's expiry to now + ``ttl_ms``."""

    partition: str
    id: str
    ttl_ms: int


@dataclass(slots=True)
class GetResource:
    """Read a resource."""

    partition: str
    id: str


@dataclass(slots=True)
class GetHold:
    """Read a hold."""

    partition: str
    id: str


@dataclass(slots=True)
class ListResources:
    """A page of a partition's resources in id order (``limit`` ``None``: 100)."""

    partition: str
    prefix: str = ""
    after: Optional[str] = None
    limit: Optional[int] = None


@dataclass(slots=True)
class DeletePartition:
    """Remove a partition with every resource and hold in it (refused while a hold is held)."""

    partition: str


Command = Union[
    PutResource, Hold, Confirm, Release, Cancel, Extend, GetResource, GetHold, ListResources,
    DeletePartition,
]
Result = Union[ResourceView, HoldView, ResourcePage, PartitionDeleted]
