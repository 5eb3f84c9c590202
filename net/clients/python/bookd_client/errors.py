"""Typed errors. Every error the node can answer carries the contract's error code (the same
codes as HTTP, docs/protocol.md "Error codes"), whether it came as a command's result or as an
ERROR frame that closed the connection; each code has its own class, so callers can write
``except InsufficientCapacityError``. Errors of the client itself (a timeout, bytes from the
server that are not the protocol, a closed client) have classes of their own."""

from __future__ import annotations

import enum
from typing import Any, Dict, Optional, Type


class ErrorCode(enum.IntEnum):
    """The contract's error codes with their stable wire numbers (never reused)."""

    BAD_REQUEST = 1
    UNAUTHORIZED = 2
    RESOURCE_NOT_FOUND = 3
    HOLD_NOT_FOUND = 4
    NOT_FOUND = 5
    INSUFFICIENT_CAPACITY = 6
    HOLD_ID_CONFLICT = 7
    HOLD_EXPIRED = 8
    HOLD_RELEASED = 9
    HOLD_CONFIRMED = 10
    HOLD_NOT_CONFIRMED = 11
    HOLD_CANCELLED = 12
    CAPACITY_BELOW_USAGE = 13
    ALREADY_PRIMARY = 14
    PAYLOAD_TOO_LARGE = 15
    INVALID = 16
    OVERLOADED = 17
    STANDBY_READ_ONLY = 18
    REPLICATION_TIMEOUT = 19
    UNAVAILABLE = 20
    PARTITION_HAS_LIVE_HOLDS = 21
    STORAGE_FULL = 22
    CURSOR_EXPIRED = 23

    @property
    def text(self) -> str:
        """The contract's name of the code (``insufficient_capacity``)."""
        return self.name.lower()

    @property
    def http_status(self) -> int:
        """The HTTP status the same error has over HTTP."""
        return HTTP_STATUS[self]

    @classmethod
    def from_text(cls, text: str) -> "ErrorCode":
        """The code called ``text`` (``"hold_not_found"``)."""
        return cls[text.upper()]


HTTP_STATUS: Dict[ErrorCode, int] = {
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.RESOURCE_NOT_FOUND: 404,
    ErrorCode.HOLD_NOT_FOUND: 404,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.INSUFFICIENT_CAPACITY: 409,
    ErrorCode.HOLD_ID_CONFLICT: 409,
    ErrorCode.HOLD_EXPIRED: 409,
    ErrorCode.HOLD_RELEASED: 409,
    ErrorCode.HOLD_CONFIRMED: 409,
    ErrorCode.HOLD_NOT_CONFIRMED: 409,
    ErrorCode.HOLD_CANCELLED: 409,
    ErrorCode.CAPACITY_BELOW_USAGE: 409,
    ErrorCode.ALREADY_PRIMARY: 409,
    ErrorCode.PAYLOAD_TOO_LARGE: 413,
    ErrorCode.INVALID: 422,
    ErrorCode.OVERLOADED: 429,
    ErrorCode.STANDBY_READ_ONLY: 503,
    ErrorCode.REPLICATION_TIMEOUT: 503,
    ErrorCode.UNAVAILABLE: 503,
    ErrorCode.PARTITION_HAS_LIVE_HOLDS: 409,
    ErrorCode.STORAGE_FULL: 507,
    ErrorCode.CURSOR_EXPIRED: 410,
}


class BookdError(Exception):
    """Every error of this package."""


class NodeError(BookdError):
    """The node answered with a contract error code.

    ``code`` is the :class:`ErrorCode`, ``details`` the code's details as the HTTP error body
    has them (``{"resource": "ga", "requested": 5, "available": 3}``), also readable as
    attributes (``error.resource``). ``closed`` is true when the error came as an ERROR frame,
    after which the node closed the connection (a refused handshake, a malformed frame), false
    for a command's result. ``str(error)`` is the message HTTP puts in ``"message"``.
    """

    code: ErrorCode = ErrorCode.BAD_REQUEST

    def __init__(self, message: Optional[str] = None, details: Optional[Dict[str, Any]] = None,
                 *, closed: bool = False) -> None:
        self.details: Dict[str, Any] = dict(details or {})
        self.closed = closed
        super().__init__(message if message is not None else describe(self.code, self.details))

    def __getattr__(self, name: str) -> Any:
        details = self.__dict__.get("details")
        if details is not None and name in details:
            return details[name]
        raise AttributeError(name)

    @property
    def http_status(self) -> int:
        """The HTTP status of the same error."""
        return HTTP_STATUS[self.code]

    @property
    def message(self) -> str:
        return str(self)

    def as_dict(self) -> Dict[str, Any]:
        """The error as an HTTP error body: ``{"error": code, "message": …, **details}``."""
        return {"error": self.code.text, "message": str(self), **self.details}

    def __reduce__(self):  # picklable despite the keyword-only argument
        return (_rebuild, (type(self), str(self), self.details, self.closed))

    def __eq__(self, other: object) -> bool:
        return (type(self) is type(other) and self.details == other.details  # type: ignore
                and str(self) == str(other))

    __hash__ = Exception.__hash__


def _rebuild(cls, message, details, closed):
    return cls(message, details, closed=closed)


def describe(code: ErrorCode, details: Dict[str, Any]) -> str:
    """The message of an error from its code and details (the node's own wording)."""
    d = details
    if code == ErrorCode.INVALID and "field" in d:
        return f"invalid {d['field']}: {d.get('reason', '')}"
    if code == ErrorCode.RESOURCE_NOT_FOUND and "resource" in d:
        return f"resource {d['resource']} not found"
    if code == ErrorCode.INSUFFICIENT_CAPACITY and "resource" in d:
        return (f"resource {d['resource']}: requested {d.get('requested')}, "
                f"available {d.get('available')}")
    if code == ErrorCode.CAPACITY_BELOW_USAGE and "capacity" in d:
        return f"capacity {d['capacity']} below usage {d.get('used')}"
    if code == ErrorCode.OVERLOADED:
        if d.get("table"):
            return f"{d['table']} table is full ({d.get('max')} entries)"
        return "shard queue is full; retry later"
    if code == ErrorCode.PARTITION_HAS_LIVE_HOLDS and "held" in d:
        return f"partition has {d['held']} held holds"
    if code == ErrorCode.STORAGE_FULL and "reason" in d:
        return f"storage full ({d['reason']})"
    if code == ErrorCode.NOT_FOUND:
        return "partition not found"
    return code.text.replace("_", " ")


def _camel(code: ErrorCode) -> str:
    return "".join(word.capitalize() for word in code.text.split("_")) + "Error"


#: The class of each code.
ERROR_CLASSES: Dict[ErrorCode, Type[NodeError]] = {}

for _code in ErrorCode:
    _cls = type(_camel(_code), (NodeError,), {
        "code": _code,
        "__doc__": f"``{_code.text}`` (HTTP {HTTP_STATUS[_code]}).",
        "__module__": __name__,
    })
    ERROR_CLASSES[_code] = _cls
    globals()[_cls.__name__] = _cls
del _code, _cls

# Named here for readers and type checkers; each is the generated class of its code.
BadRequestError: Type[NodeError] = ERROR_CLASSES[ErrorCode.BAD_REQUEST]
UnauthorizedError: Type[NodeError] = ERROR_CLASSES[ErrorCode.UNAUTHORIZED]
ResourceNotFoundError: Type[NodeError] = ERROR_CLASSES[ErrorCode.RESOURCE_NOT_FOUND]
HoldNotFoundError: Type[NodeError] = ERROR_CLASSES[ErrorCode.HOLD_NOT_FOUND]
NotFoundError: Type[NodeError] = ERROR_CLASSES[ErrorCode.NOT_FOUND]
InsufficientCapacityError: Type[NodeError] = ERROR_CLASSES[ErrorCode.INSUFFICIENT_CAPACITY]
HoldIdConflictError: Type[NodeError] = ERROR_CLASSES[ErrorCode.HOLD_ID_CONFLICT]
HoldExpiredError: Type[NodeError] = ERROR_CLASSES[ErrorCode.HOLD_EXPIRED]
HoldReleasedError: Type[NodeError] = ERROR_CLASSES[ErrorCode.HOLD_RELEASED]
HoldConfirmedError: Type[NodeError] = ERROR_CLASSES[ErrorCode.HOLD_CONFIRMED]
HoldNotConfirmedError: Type[NodeError] = ERROR_CLASSES[ErrorCode.HOLD_NOT_CONFIRMED]
HoldCancelledError: Type[NodeError] = ERROR_CLASSES[ErrorCode.HOLD_CANCELLED]
CapacityBelowUsageError: Type[NodeError] = ERROR_CLASSES[ErrorCode.CAPACITY_BELOW_USAGE]
AlreadyPrimaryError: Type[NodeError] = ERROR_CLASSES[ErrorCode.ALREADY_PRIMARY]
PayloadTooLargeError: Type[NodeError] = ERROR_CLASSES[ErrorCode.PAYLOAD_TOO_LARGE]
InvalidError: Type[NodeError] = ERROR_CLASSES[ErrorCode.INVALID]
OverloadedError: Type[NodeError] = ERROR_CLASSES[ErrorCode.OVERLOADED]
StandbyReadOnlyError: Type[NodeError] = ERROR_CLASSES[ErrorCode.STANDBY_READ_ONLY]
ReplicationTimeoutError: Type[NodeError] = ERROR_CLASSES[ErrorCode.REPLICATION_TIMEOUT]
UnavailableError: Type[NodeError] = ERROR_CLASSES[ErrorCode.UNAVAILABLE]
PartitionHasLiveHoldsError: Type[NodeError] = ERROR_CLASSES[ErrorCode.PARTITION_HAS_LIVE_HOLDS]
StorageFullError: Type[NodeError] = ERROR_CLASSES[ErrorCode.STORAGE_FULL]
CursorExpiredError: Type[NodeError] = ERROR_CLASSES[ErrorCode.CURSOR_EXPIRED]


def node_error(code: ErrorCode, details: Optional[Dict[str, Any]] = None,
               message: Optional[str] = None, *, closed: bool = False) -> NodeError:
    """The typed error of ``code``."""
    return ERROR_CLASSES[code](message, details, closed=closed)


def invalid(field: str, reason: str) -> NodeError:
    """``invalid`` naming ``field``, raised by the client for what it cannot send."""
    return node_error(ErrorCode.INVALID, {"field": field, "reason": reason})


class ProtocolError(BookdError):
    """The server sent bytes that are not the protocol (a truncated or malformed frame, an
    unknown kind or code, a frame of the wrong kind). The connection is dropped."""


class FrameTooLargeError(ProtocolError):
    """The server announced a frame above the 16 MiB every decoder refuses (refused from its
    length prefix alone, before any of its body is read). What the client would have to send
    above the node's ``frame_size_max`` is refused before sending as
    :class:`PayloadTooLargeError` instead."""


class CallTimeoutError(BookdError, TimeoutError):
    """A call did not complete within its timeout; whether it took effect is unknown (resending
    is safe: see the README, "Retries")."""


class ClientClosedError(BookdError):
    """The client was closed while the call waited, or before it was made."""
