"""bookd-client: the asyncio client of bookd's binary protocol (docs/protocol.md), standard
library only.

>>> import asyncio, bookd_client
>>> async def main():
...     async with await bookd_client.connect("127.0.0.1:7070") as client:
...         await client.put_resource("concert-1", "A-1", 1)
...         hold = await client.hold("concert-1", "order-1", [("A-1", 1)], ttl_ms=60_000)
...         await client.confirm("concert-1", hold.id)

The package's version is ``1.x`` for protocol version 1 (:data:`PROTOCOL_VERSION`).
"""

from .client import Client, ClientConfig, ClientStats, connect
from .errors import *  # noqa: F401,F403  (every error class)
from .errors import (ERROR_CLASSES, BookdError, CallTimeoutError, ClientClosedError, ErrorCode,
                     FrameTooLargeError, NodeError, ProtocolError)
from .feed import Subscription
from .protocol import PROTOCOL_VERSION
from .types import (Cancel, Change, ChangedHold, ChangedResource, ChangeOp, Command, Confirm,
                    DeletePartition, Extend, GetHold, GetResource, HelloOk, Hold, HoldStatus,
                    HoldView, Item, ListResources, PartitionDeleted, PutResource, Release,
                    Removed, ResourcePage, ResourceView, Role)

__version__ = "1.0.0"

__all__ = [
    "Client", "ClientConfig", "ClientStats", "connect", "Subscription", "PROTOCOL_VERSION",
    "BookdError", "NodeError", "ProtocolError", "FrameTooLargeError", "CallTimeoutError",
    "ClientClosedError", "ErrorCode", "ERROR_CLASSES",
    "Cancel", "Change", "ChangedHold", "ChangedResource", "ChangeOp", "Command", "Confirm",
    "DeletePartition", "Extend", "GetHold", "GetResource", "HelloOk", "Hold", "HoldStatus",
    "HoldView", "Item", "ListResources", "PartitionDeleted", "PutResource", "Release",
    "Removed", "ResourcePage", "ResourceView", "Role",
] + [cls.__name__ for cls in ERROR_CLASSES.values()]
