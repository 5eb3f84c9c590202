"""The binary protocol's codec (docs/protocol.md, version 1): frames, the handshake, commands,
results, the change feed. Pure functions over bytes, no I/O. Both directions are here: the
client's (HELLO, REQUEST, SUBSCRIBE, CREDIT out; HELLO_OK, RESPONSE, CHANGES, ERROR in) and the
server's, which the tests use to play a node.

Every decoder checks the shapes the protocol fixes (lengths, flags, known codes, tags and
statuses, nothing after the last field, ``held + confirmed <= capacity``) and raises
:class:`~bookd_client.errors.ProtocolError` naming what is wrong; none of them raises anything
else on any input.
"""

from __future__ import annotations

import enum
import struct
from typing import Any, Iterable, List, Optional, Sequence, Tuple, Union

from .errors import (ErrorCode, FrameTooLargeError, NodeError, ProtocolError, invalid,
                     node_error)
from .types import (CHANGE_OPS, HOLD_STATUSES, Cancel, Change, ChangedHold, ChangedResource,
                    ChangeOp, Command, Confirm, DeletePartition, Extend, GetHold, GetResource,
                    Hold, HelloOk, HoldView, Item, ListResources, PartitionDeleted,
                    PutResource, Release, Removed, ResourcePage, ResourceView, Role)

#: The only protocol version this package speaks (byte 0 of every frame header).
PROTOCOL_VERSION = 1
#: The ``u32`` length prefix in front of every frame.
LENGTH_PREFIX_SIZE = 4
#: version, kind, reserved, request id.
FRAME_HEADER_SIZE = 12
#: No decoder buffers a frame whose ``frame_len`` is above this (16 MiB).
FRAME_SIZE_CAP = 16 * 1024 * 1024
#: The node's default ``frame_size_max`` (1 MiB), until its HELLO_OK says otherwise.
FRAME_SIZE_MAX_DEFAULT = 1024 * 1024
#: Most commands in one REQUEST frame.
COMMANDS_PER_FRAME_MAX = 1000
#: Longest ERROR message a node sends.
ERROR_MESSAGE_SIZE_MAX = 1024
#: The node's default hold ttl, when a hold names none.
HOLD_TTL_MS_DEFAULT = 600_000

# Shapes the change feed's decoder checks (the engine's limits).
_NAME_SIZE_MAX = 64
_REF_SIZE_MAX = 256
_HOLD_ITEMS_MAX = 64


class Kind(enum.IntEnum):
    """What a frame carries."""

    HELLO = 0x01
    HELLO_OK = 0x02
    REQUEST = 0x03
    RESPONSE = 0x04
    SUBSCRIBE = 0x05
    CHANGES = 0x06
    CREDIT = 0x07
    REPLICATE = 0x10
    ERROR = 0xFF


_KINDS = frozenset(int(kind) for kind in Kind)

_HEADER = struct.Struct("<IBBHQ")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_COUNTS = struct.Struct("<QQQ")
_HOLD_HEAD = struct.Struct("<BQ")
_ITEM_COUNTS = struct.Struct("<IQQQ")
_HELLO_OK = struct.Struct("<BQHIHI")
#: What HELLO_OK adds for a bound connection: the shard and the partition-to-shard rule.
_BINDING = struct.Struct("<HB")
_U64_MAX = (1 << 64) - 1

OPCODES = {
    PutResource: 1, Hold: 2, Confirm: 3, Release: 4, Cancel: 5, Extend: 6, GetResource: 7,
    GetHold: 8, ListResources: 9, DeletePartition: 10,
}

TAG_RESOURCE, TAG_HOLD, TAG_PAGE, TAG_PARTITION_DELETED = 1, 2, 3, 4
_STORAGE_REASONS = ("memory", "disk")


# ---- frames ----

def encode_frame(kind: int, request_id: int, payload: bytes) -> bytes:
    """One whole frame: length prefix, header and ``payload``."""
    return _HEADER.pack(len(payload) + FRAME_HEADER_SIZE, PROTOCOL_VERSION, kind, 0,
                        request_id) + payload


def check_frame(buf: Union[bytes, bytearray, memoryview], start: int = 0,
                cap: int = FRAME_SIZE_CAP) -> Optional[int]:
    """Whether ``buf[start:]`` begins with a whole frame: its total size (prefix included),
    or ``None`` if more bytes are needed. The length prefix is checked as soon as it is
    there, and the header as soon as its first 4 bytes are: a frame that can never be valid
    (too short, over ``cap``, another version, an unknown kind, reserved bytes set) raises
    :class:`ProtocolError` (:class:`FrameTooLargeError` when over ``cap``) without waiting
    for its body."""
    have = len(buf) - start
    if have < LENGTH_PREFIX_SIZE:
        return None
    (length,) = _U32.unpack_from(buf, start)
    if length < FRAME_HEADER_SIZE:
        raise ProtocolError(f"frame length {length} is shorter than the 12-byte header")
    if length > cap:
        raise FrameTooLargeError(
            f"frame length {length} exceeds the limit of {cap} bytes")
    if have >= 8:
        version, kind = buf[start + 4], buf[start + 5]
        if version != PROTOCOL_VERSION:
            raise ProtocolError(
                f"unsupported protocol version {version} (this client speaks version 1)")
        if kind not in _KINDS:
            raise ProtocolError(f"unknown frame kind {kind:#04x}")
        if buf[start + 6] or buf[start + 7]:
            raise ProtocolError("reserved header bytes must be zero")
    total = LENGTH_PREFIX_SIZE + length
    return total if have >= total else None


def parse_frame(buf: Union[bytes, bytearray], start: int = 0,
                cap: int = FRAME_SIZE_CAP) -> Optional[Tuple[Kind, int, bytes, int]]:
    """The frame at ``buf[start:]``: ``(kind, request_id, payload, total_size)``, or ``None``
    if it is not complete yet (see :func:`check_frame`)."""
    total = check_frame(buf, start, cap)
    if total is None:
        return None
    _, _, kind, _, request_id = _HEADER.unpack_from(buf, start)
    payload = bytes(buf[start + 16:start + total])
    return Kind(kind), request_id, payload, total


class FrameBuffer:
    """Reassembles frames from a byte stream. It holds at most one incomplete frame (which
    :func:`check_frame` bounds by ``cap`` from its prefix) plus the bytes of one read."""

    __slots__ = ("_buf", "cap")

    def __init__(self, cap: int = FRAME_SIZE_CAP) -> None:
        self._buf = bytearray()
        self.cap = cap

    def feed(self, data: bytes) -> List[Tuple[Kind, int, bytes]]:
        """Adds ``data``; returns the frames it completed, in order. Raises
        :class:`ProtocolError` for bytes that can never be a frame."""
        buf = self._buf
        buf += data
        frames = []
        start = 0
        size = len(buf)
        while True:
            parsed = parse_frame(buf, start, self.cap)
            if parsed is None:
                break
            kind, request_id, payload, total = parsed
            frames.append((kind, request_id, payload))
            start += total
            if start == size:
                break
        if start:
            del buf[:start]
        return frames

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame."""
        return len(self._buf)


# ---- writing fields ----

def _str8(out: bytearray, text: str, field: str) -> None:
    data = text.encode()
    if len(data) > 255:
        raise invalid(field, "too long")
    out.append(len(data))
    out += data


def _str16(out: bytearray, text: str, field: str) -> None:
    data = text.encode()
    if len(data) > 0xFFFF:
        raise invalid(field, "too long")
    out += _U16.pack(len(data))
    out += data


def _u64(value: Any, field: str) -> bytes:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= _U64_MAX:
        raise invalid(field, "range")
    return _U64.pack(value)


def _u32(value: Any, field: str) -> bytes:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 0xFFFFFFFF:
        raise invalid(field, "range")
    return _U32.pack(value)


def _item_parts(item: Any) -> Tuple[str, int]:
    if isinstance(item, Item):
        return item.resource, item.quantity
    if isinstance(item, dict):
        return item["resource"], item["quantity"]
    resource, quantity = item
    return resource, quantity


def encode_command(command: Command, out: bytearray) -> None:
    """Appends one command. Raises :class:`~bookd_client.errors.InvalidError` (naming the
    field) for what the wire cannot carry: a name over 255 bytes, a ``ref`` over 65 535, more
    than 255 items, a number outside ``u64``. Everything else is the node's to judge."""
    opcode = OPCODES.get(type(command))
    if opcode is None:
        raise TypeError(f"not a bookd command: {command!r}")
    out.append(opcode)
    _str8(out, command.partition, "partition")
    if opcode == 10:
        return
    if opcode == 9:
        _str8(out, command.prefix, "prefix")
        if command.after is None:
            out.append(0)
        else:
            out.append(1)
            _str8(out, command.after, "after")
        if command.limit is None:
            out.append(0)
        else:
            out.append(1)
            out += _u64(command.limit, "limit")
        return
    _str8(out, command.id, "id")
    if opcode == 1:
        out += _u64(command.capacity, "capacity")
    elif opcode == 2:
        items = command.items
        if len(items) > 255:
            raise invalid("items", "too many")
        out.append(len(items))
        for item in items:
            resource, quantity = _item_parts(item)
            _str8(out, resource, "items.resource")
            out += _u64(quantity, "items.quantity")
        if command.ttl_ms is None:
            out.append(0)
        else:
            out.append(1)
            out += _u64(command.ttl_ms, "ttl_ms")
        if command.ref is None:
            out.append(0)
        else:
            out.append(1)
            _str16(out, command.ref, "ref")
    elif opcode == 6:
        out += _u64(command.ttl_ms, "ttl_ms")


def encode_commands(commands: Sequence[Command]) -> bytes:
    """A REQUEST payload: ``u16 count`` (1–1 000), then the commands."""
    if not 1 <= len(commands) <= COMMANDS_PER_FRAME_MAX:
        raise invalid("commands", "1 to 1000 commands per frame")
    out = bytearray(_U16.pack(len(commands)))
    for command in commands:
        encode_command(command, out)
    return bytes(out)


def encode_request(request_id: int, commands: Sequence[Command]) -> bytes:
    """A whole REQUEST frame."""
    return encode_frame(Kind.REQUEST, request_id, encode_commands(commands))


#: HELLO's ``shard`` that lets the node pick the shard with the fewest bound connections.
ANY_SHARD = 0xFFFF
#: HELLO_OK's shard rules by their byte.
SHARD_RULES = {1: "fnv1a64_mod"}


def encode_hello(token: Union[str, bytes, None], client_name: str,
                 shard: Optional[int] = None) -> bytes:
    """A HELLO payload; with ``shard``, the connection asks to be bound to that shard."""
    data = token.encode() if isinstance(token, str) else (token or b"")
    if len(data) > 0xFFFF:
        raise invalid("token", "too long")
    out = bytearray(_U16.pack(len(data)))
    out += data
    _str8(out, client_name, "client_name")
    if shard is not None:
        if not 0 <= shard <= 0xFFFF:
            raise invalid("shard", "must be 0 to 65535")
        out += _U16.pack(shard)
    return bytes(out)


def encode_subscribe(cursor: str, partition: Optional[str], credit: int) -> bytes:
    """A SUBSCRIBE payload."""
    out = bytearray()
    _str16(out, cursor, "cursor")
    if partition is None:
        out.append(0)
    else:
        out.append(1)
        _str8(out, partition, "partition")
    out += _u32(credit, "credit")
    return bytes(out)


def encode_credit(more: int) -> bytes:
    """A CREDIT payload."""
    return _u32(more, "credit")


# ---- reading fields ----

class Reader:
    """A bounds-checked reader over one payload; every failure is a :class:`ProtocolError`
    naming the field."""

    __slots__ = ("p", "off", "n", "what")

    def __init__(self, payload: bytes, what: str) -> None:
        self.p = payload
        self.off = 0
        self.n = len(payload)
        self.what = what

    def fail(self, message: str) -> ProtocolError:
        return ProtocolError(f"{self.what}: {message}")

    def take(self, size: int, field: str) -> bytes:
        off = self.off
        end = off + size
        if end > self.n:
            raise self.fail(f"truncated at {field}")
        self.off = end
        return self.p[off:end]

    def u8(self, field: str) -> int:
        off = self.off
        if off >= self.n:
            raise self.fail(f"truncated at {field}")
        self.off = off + 1
        return self.p[off]

    def u16(self, field: str) -> int:
        off = self.off
        if off + 2 > self.n:
            raise self.fail(f"truncated at {field}")
        self.off = off + 2
        return _U16.unpack_from(self.p, off)[0]

    def u32(self, field: str) -> int:
        off = self.off
        if off + 4 > self.n:
            raise self.fail(f"truncated at {field}")
        self.off = off + 4
        return _U32.unpack_from(self.p, off)[0]

    def u64(self, field: str) -> int:
        off = self.off
        if off + 8 > self.n:
            raise self.fail(f"truncated at {field}")
        self.off = off + 8
        return _U64.unpack_from(self.p, off)[0]

    def flag(self, field: str) -> bool:
        value = self.u8(field)
        if value > 1:
            raise self.fail(f"{field}: flag {value} is neither 0 nor 1")
        return value == 1

    def text(self, size: int, field: str) -> str:
        try:
            return self.take(size, field).decode()
        except UnicodeDecodeError:
            raise self.fail(f"{field} is not UTF-8") from None

    def str8(self, field: str) -> str:
        return self.text(self.u8(field), field)

    def str16(self, field: str) -> str:
        return self.text(self.u16(field), field)

    def opt_str8(self, field: str) -> Optional[str]:
        return self.str8(field) if self.flag(field) else None

    def opt_str16(self, field: str) -> Optional[str]:
        return self.str16(field) if self.flag(field) else None

    def opt_u64(self, field: str) -> Optional[int]:
        return self.u64(field) if self.flag(field) else None

    def name(self, field: str) -> str:
        """A name of the change feed: 1 to 64 bytes."""
        size = self.u8(field)
        if not 1 <= size <= _NAME_SIZE_MAX:
            raise self.fail(f"{field}: a name of {size} bytes (1 to 64)")
        return self.text(size, field)

    def finish(self) -> None:
        if self.off != self.n:
            raise self.fail(f"{self.n - self.off} bytes after the last field")


# ---- the handshake and ERROR ----

def decode_hello(payload: bytes) -> Tuple[bytes, str, Optional[int]]:
    """A HELLO payload: ``(token, client_name, shard)`` (``shard`` ``None``: a plain one)."""
    reader = Reader(payload, "HELLO")
    token = reader.take(reader.u16("token"), "token")
    name = reader.str8("client_name")
    shard = None if reader.off == reader.n else reader.u16("shard")
    reader.finish()
    return token, name, shard


def encode_hello_ok(hello: HelloOk) -> bytes:
    """A HELLO_OK payload."""
    role = 0 if Role(hello.role) is Role.PRIMARY else 1
    out = _HELLO_OK.pack(role, hello.epoch, hello.shards, hello.frame_size_max,
                         hello.commands_per_frame_max, hello.in_flight_max)
    if hello.bound_shard is None:
        return out
    rule = next(byte for byte, name in SHARD_RULES.items() if name == hello.shard_rule)
    return out + _U16.pack(hello.bound_shard) + bytes([rule])


def decode_hello_ok(payload: bytes) -> HelloOk:
    """A HELLO_OK payload."""
    bound = _HELLO_OK.size + _BINDING.size
    if len(payload) not in (_HELLO_OK.size, bound):
        raise ProtocolError(
            f"HELLO_OK: {len(payload)} bytes, not {_HELLO_OK.size} (or {bound} when bound)")
    role, epoch, shards, frame_max, commands_max, in_flight = _HELLO_OK.unpack_from(payload)
    if role > 1:
        raise ProtocolError(f"HELLO_OK: unknown role {role}")
    bound_shard = shard_rule = None
    if len(payload) == bound:
        bound_shard, rule = _BINDING.unpack_from(payload, _HELLO_OK.size)
        shard_rule = SHARD_RULES.get(rule)
        if shard_rule is None:
            raise ProtocolError(f"HELLO_OK: unknown shard rule {rule}")
    return HelloOk(Role.PRIMARY if role == 0 else Role.STANDBY, epoch, shards, frame_max,
                   commands_max, in_flight, bound_shard, shard_rule)


def encode_error(code: int, message: str) -> bytes:
    """An ERROR payload (the message as given: the tests send long ones on purpose)."""
    out = bytearray([int(code)])
    _str16(out, message, "message")
    return bytes(out)


def decode_error(payload: bytes) -> NodeError:
    """An ERROR payload as the typed error of its code (``closed`` set)."""
    reader = Reader(payload, "ERROR")
    number = reader.u8("code")
    try:
        code = ErrorCode(number)
    except ValueError:
        raise reader.fail(f"unknown error code {number}") from None
    message = reader.str16("message")
    reader.finish()
    details = {}
    if code == ErrorCode.CURSOR_EXPIRED and message.startswith("oldest cursor: "):
        details["oldest"] = message[len("oldest cursor: "):]
    return node_error(code, details, message, closed=True)


# ---- requests, as a node reads them ----

def decode_request(payload: bytes) -> List[Command]:
    """A REQUEST payload's commands."""
    reader = Reader(payload, "REQUEST")
    count = reader.u16("count")
    if not 1 <= count <= COMMANDS_PER_FRAME_MAX:
        raise reader.fail(f"command count {count} outside 1 to 1000")
    commands: List[Command] = []
    for _ in range(count):
        opcode = reader.u8("opcode")
        partition = reader.str8("partition")
        if opcode == 10:
            commands.append(DeletePartition(partition))
            continue
        if opcode == 9:
            prefix = reader.str8("prefix")
            after = reader.opt_str8("after")
            commands.append(ListResources(partition, prefix, after, reader.opt_u64("limit")))
            continue
        if not 1 <= opcode <= 8:
            raise reader.fail(f"unknown opcode {opcode}")
        ident = reader.str8("id")
        if opcode == 1:
            commands.append(PutResource(partition, ident, reader.u64("capacity")))
        elif opcode == 2:
            items = []
            for _ in range(reader.u8("items")):
                resource = reader.str8("items.resource")
                items.append(Item(resource, reader.u64("items.quantity")))
            ttl = reader.opt_u64("ttl_ms")
            commands.append(Hold(partition, ident, items, ttl, reader.opt_str16("ref")))
        elif opcode == 6:
            commands.append(Extend(partition, ident, reader.u64("ttl_ms")))
        else:
            cls = {3: Confirm, 4: Release, 5: Cancel, 7: GetResource, 8: GetHold}[opcode]
            commands.append(cls(partition, ident))
    reader.finish()
    return commands


# ---- results ----

def _counts(reader: Reader, partition: str) -> ResourceView:
    ident = reader.str8("id")
    capacity = reader.u64("capacity")
    held = reader.u64("held")
    confirmed = reader.u64("confirmed")
    if held + confirmed > capacity:
        raise reader.fail(f"resource {ident}: held {held} + confirmed {confirmed} exceeds "
                          f"capacity {capacity}")
    return ResourceView(partition, ident, capacity, held, confirmed)


def _status(reader: Reader) -> Any:
    status = reader.u8("hold status")
    if status >= len(HOLD_STATUSES):
        raise reader.fail(f"unknown hold status {status}")
    return HOLD_STATUSES[status]


def _details(reader: Reader, code: ErrorCode) -> dict:
    if code == ErrorCode.RESOURCE_NOT_FOUND:
        return {"resource": reader.str8("resource")}
    if code == ErrorCode.INSUFFICIENT_CAPACITY:
        return {"resource": reader.str8("resource"), "requested": reader.u64("requested"),
                "available": reader.u64("available")}
    if code == ErrorCode.INVALID:
        return {"field": reader.str8("field"), "reason": reader.str8("reason")}
    if code == ErrorCode.CAPACITY_BELOW_USAGE:
        return {"capacity": reader.u64("capacity"), "used": reader.u64("used")}
    if code == ErrorCode.OVERLOADED:
        return {"table": reader.str8("table"), "max": reader.u32("max")}
    if code == ErrorCode.PARTITION_HAS_LIVE_HOLDS:
        return {"held": reader.u32("held")}
    if code == ErrorCode.STORAGE_FULL:
        reason = reader.u8("reason")
        if reason > 1:
            raise reader.fail(f"unknown storage_full reason {reason}")
        return {"reason": _STORAGE_REASONS[reason]}
    return {}


def _code(reader: Reader, status: int) -> ErrorCode:
    try:
        return ErrorCode(status)
    except ValueError:
        raise reader.fail(f"unknown result status {status}") from None


def decode_result(reader: Reader) -> Any:
    """One result: a view, or the typed error of its code (returned, not raised)."""
    status = reader.u8("status")
    if status:
        code = _code(reader, status)
        return node_error(code, _details(reader, code))
    tag = reader.u8("tag")
    if tag == TAG_RESOURCE:
        created = reader.flag("created")
        resource = _counts(reader, reader.str8("partition"))
        resource.created = created
        return resource
    if tag == TAG_HOLD:
        existing = reader.flag("existing")
        partition = reader.str8("partition")
        ident = reader.str8("id")
        status_ = _status(reader)
        expires = reader.u64("expires_at_ms")
        items = []
        for _ in range(reader.u8("items")):
            resource = reader.str8("items.resource")
            items.append(Item(resource, reader.u32("items.quantity")))
        ref = reader.opt_str16("ref")
        return HoldView(partition, ident, status_, tuple(items), expires, ref, existing)
    if tag == TAG_PAGE:
        partition = reader.str8("partition")
        resources = [_counts(reader, partition) for _ in range(reader.u16("resources"))]
        return ResourcePage(partition, resources, reader.opt_str8("next"))
    if tag == TAG_PARTITION_DELETED:
        partition = reader.str8("partition")
        return PartitionDeleted(partition, reader.u32("resources"), reader.u32("holds"))
    raise reader.fail(f"unknown result tag {tag}")


def decode_response(payload: bytes) -> List[Any]:
    """A RESPONSE payload: one view or typed error per command, in order."""
    reader = Reader(payload, "RESPONSE")
    results = [decode_result(reader) for _ in range(reader.u16("count"))]
    reader.finish()
    return results


def _skip8(reader: Reader, field: str) -> None:
    reader.take(reader.u8(field), field)


def decode_statuses(payload: bytes) -> List[int]:
    """A RESPONSE payload reduced to one status per result: 0 for success, else the error
    code's number. Checks the same framing as :func:`decode_response` without building the
    results (what a load generator needs)."""
    reader = Reader(payload, "RESPONSE")
    statuses = []
    append = statuses.append
    for _ in range(reader.u16("count")):
        status = reader.u8("status")
        if status:
            _details(reader, _code(reader, status))
            append(status)
            continue
        tag = reader.u8("tag")
        if tag == TAG_HOLD:
            reader.flag("existing")
            _skip8(reader, "partition")
            _skip8(reader, "id")
            _status(reader)
            reader.take(8, "expires_at_ms")
            for _ in range(reader.u8("items")):
                _skip8(reader, "items.resource")
                reader.take(4, "items.quantity")
            if reader.flag("ref"):
                reader.take(reader.u16("ref"), "ref")
        elif tag == TAG_RESOURCE:
            reader.flag("created")
            _skip8(reader, "partition")
            _counts(reader, "")
        elif tag == TAG_PAGE:
            _skip8(reader, "partition")
            for _ in range(reader.u16("resources")):
                _counts(reader, "")
            if reader.flag("next"):
                _skip8(reader, "next")
        elif tag == TAG_PARTITION_DELETED:
            _skip8(reader, "partition")
            reader.take(8, "counts")
        else:
            raise reader.fail(f"unknown result tag {tag}")
        append(0)
    reader.finish()
    return statuses


def _put_counts(out: bytearray, resource: Any) -> None:
    _str8(out, resource.id, "id")
    out += _COUNTS.pack(resource.capacity, resource.held, resource.confirmed)


def encode_result(result: Any, out: bytearray) -> None:
    """Appends one result (a view or a :class:`NodeError`), as a node writes it."""
    if isinstance(result, NodeError):
        code = result.code
        out.append(int(code))
        d = result.details
        if code == ErrorCode.RESOURCE_NOT_FOUND:
            _str8(out, d["resource"], "resource")
        elif code == ErrorCode.INSUFFICIENT_CAPACITY:
            _str8(out, d["resource"], "resource")
            out += _U64.pack(d["requested"]) + _U64.pack(d["available"])
        elif code == ErrorCode.INVALID:
            _str8(out, d["field"], "field")
            _str8(out, d["reason"], "reason")
        elif code == ErrorCode.CAPACITY_BELOW_USAGE:
            out += _U64.pack(d["capacity"]) + _U64.pack(d["used"])
        elif code == ErrorCode.OVERLOADED:
            _str8(out, d.get("table", ""), "table")
            out += _U32.pack(d.get("max", 0))
        elif code == ErrorCode.PARTITION_HAS_LIVE_HOLDS:
            out += _U32.pack(d.get("held", 0))
        elif code == ErrorCode.STORAGE_FULL:
            out.append(_STORAGE_REASONS.index(d.get("reason", "memory")))
        return
    out.append(0)
    if isinstance(result, ResourceView):
        out.append(TAG_RESOURCE)
        out.append(1 if result.created else 0)
        _str8(out, result.partition, "partition")
        _put_counts(out, result)
    elif isinstance(result, HoldView):
        out.append(TAG_HOLD)
        out.append(1 if result.existing else 0)
        _str8(out, result.partition, "partition")
        _str8(out, result.id, "id")
        out += _HOLD_HEAD.pack(HOLD_STATUSES.index(result.status), result.expires_at_ms)
        out.append(len(result.items))
        for item in result.items:
            _str8(out, item.resource, "items.resource")
            out += _U32.pack(item.quantity)
        if result.ref is None:
            out.append(0)
        else:
            out.append(1)
            _str16(out, result.ref, "ref")
    elif isinstance(result, ResourcePage):
        out.append(TAG_PAGE)
        _str8(out, result.partition, "partition")
        out += _U16.pack(len(result.resources))
        for resource in result.resources:
            _put_counts(out, resource)
        if result.next is None:
            out.append(0)
        else:
            out.append(1)
            _str8(out, result.next, "next")
    elif isinstance(result, PartitionDeleted):
        out.append(TAG_PARTITION_DELETED)
        _str8(out, result.partition, "partition")
        out += _U32.pack(result.resources) + _U32.pack(result.holds)
    else:
        raise TypeError(f"not a result: {result!r}")


def encode_response(results: Iterable[Any]) -> bytes:
    """A RESPONSE payload."""
    results = list(results)
    out = bytearray(_U16.pack(len(results)))
    for result in results:
        encode_result(result, out)
    return bytes(out)


# ---- the change feed ----

def decode_subscribe(payload: bytes) -> Tuple[str, Optional[str], int]:
    """A SUBSCRIBE payload: ``(cursor, partition, credit)``."""
    reader = Reader(payload, "SUBSCRIBE")
    cursor = reader.str16("cursor")
    partition = reader.opt_str8("partition")
    credit = reader.u32("credit")
    reader.finish()
    return cursor, partition, credit


def decode_credit(payload: bytes) -> int:
    """A CREDIT payload: how many more changes."""
    reader = Reader(payload, "CREDIT")
    more = reader.u32("credit")
    reader.finish()
    return more


def _items(reader: Reader) -> Tuple[List[Item], List[ChangedResource]]:
    count = reader.u8("items")
    if not 1 <= count <= _HOLD_ITEMS_MAX:
        raise reader.fail(f"a hold of {count} items (1 to 64)")
    items, resources = [], []
    for _ in range(count):
        resource = reader.name("items.resource")
        quantity = reader.u32("items.quantity")
        capacity = reader.u64("capacity")
        held = reader.u64("held")
        confirmed = reader.u64("confirmed")
        items.append(Item(resource, quantity))
        resources.append(ChangedResource(resource, capacity, held, confirmed))
    return items, resources


def decode_change(data: bytes, cursor: str) -> Change:
    """One change (the log's change layout) with the cursor just after it."""
    reader = Reader(data, "CHANGES: change")
    number = reader.u8("op")
    if not 1 <= number < len(CHANGE_OPS):
        raise reader.fail(f"unknown change op {number}")
    op = CHANGE_OPS[number]
    change = Change(cursor, op, reader.u64("at_ms"), reader.name("partition"))
    if op is ChangeOp.PUT_RESOURCE:
        ident = reader.name("resource")
        capacity, held, confirmed = reader.u64("capacity"), reader.u64("held"), reader.u64(
            "confirmed")
        change.resources = [ChangedResource(ident, capacity, held, confirmed)]
    elif op is ChangeOp.DELETE_PARTITION:
        change.removed = Removed(reader.u32("resources"), reader.u32("holds"))
    else:
        ident = reader.name("hold")
        status = _status(reader)
        expires = reader.u64("expires_at_ms")
        ref = None
        if reader.flag("ref"):
            size = reader.u16("ref")
            if size > _REF_SIZE_MAX:
                raise reader.fail(f"a ref of {size} bytes (0 to 256)")
            ref = reader.text(size, "ref")
        items, resources = _items(reader)
        change.hold = ChangedHold(ident, status, expires, ref, tuple(items))
        change.resources = resources
    reader.finish()
    return change


def decode_changes(payload: bytes) -> Tuple[str, List[Change]]:
    """A CHANGES payload: the cursor the subscription goes on from, and the changes."""
    reader = Reader(payload, "CHANGES")
    cursor = reader.str16("cursor")
    changes = []
    for _ in range(reader.u16("count")):
        after = reader.str16("cursor")
        size = reader.u32("change length")
        changes.append(decode_change(reader.take(size, "change"), after))
    reader.finish()
    return cursor, changes


def encode_change(change: Change) -> bytes:
    """One change in the log's change layout (without its cursor), as a node writes it."""
    out = bytearray([CHANGE_OPS.index(ChangeOp(change.op))])
    out += _U64.pack(change.at_ms)
    _str8(out, change.partition, "partition")
    if change.op == ChangeOp.PUT_RESOURCE:
        resource = change.resources[0]
        _put_counts(out, resource)
    elif change.op == ChangeOp.DELETE_PARTITION:
        removed = change.removed or Removed(0, 0)
        out += _U32.pack(removed.resources) + _U32.pack(removed.holds)
    else:
        hold = change.hold
        _str8(out, hold.id, "hold")
        out += _HOLD_HEAD.pack(HOLD_STATUSES.index(hold.status), hold.expires_at_ms)
        if hold.ref is None:
            out.append(0)
        else:
            out.append(1)
            _str16(out, hold.ref, "ref")
        out.append(len(hold.items))
        for item, resource in zip(hold.items, change.resources):
            _str8(out, item.resource, "items.resource")
            out += _ITEM_COUNTS.pack(item.quantity, resource.capacity, resource.held,
                                     resource.confirmed)
    return bytes(out)


def encode_changes(cursor: str, changes: Sequence[Change]) -> bytes:
    """A CHANGES payload, as a node writes it."""
    out = bytearray()
    _str16(out, cursor, "cursor")
    out += _U16.pack(len(changes))
    for change in changes:
        _str16(out, change.cursor, "cursor")
        data = encode_change(change)
        out += _U32.pack(len(data))
        out += data
    return bytes(out)
