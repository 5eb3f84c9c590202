"""docs/protocol-vectors.json, both ways and byte for byte: each vector's hex decodes to its
value, its value encodes to its hex, and every malformed frame is refused with ProtocolError."""

import pytest

from bookd_client import protocol as p
from bookd_client.errors import ErrorCode, NodeError, ProtocolError, node_error
from bookd_client.types import (Cancel, Change, ChangedHold, ChangedResource, ChangeOp, Confirm,
                                DeletePartition, Extend, GetHold, GetResource, Hold, HelloOk,
                                HoldStatus, HoldView, Item, ListResources, PartitionDeleted,
                                PutResource, Release, Removed, ResourcePage, ResourceView, Role)

from conftest import vectors_path
import json

with open(vectors_path()) as _file:
    FILE = json.load(_file)
VECTORS = FILE["vectors"]
MALFORMED = FILE["malformed"]

OPS = {"put_resource": PutResource, "hold": Hold, "confirm": Confirm, "release": Release,
       "cancel": Cancel, "extend": Extend, "get_resource": GetResource, "get_hold": GetHold,
       "list_resources": ListResources, "delete_partition": DeletePartition}
OP_NAMES = {cls: name for name, cls in OPS.items()}


# ---- value (JSON) -> objects ----

def command_of(value):
    op = OPS[value["op"]]
    if op is DeletePartition:
        return DeletePartition(value["partition"])
    if op is ListResources:
        return ListResources(value["partition"], value["prefix"], value["after"], value["limit"])
    if op is PutResource:
        return PutResource(value["partition"], value["id"], value["capacity"])
    if op is Hold:
        items = [Item(item["resource"], item["quantity"]) for item in value["items"]]
        return Hold(value["partition"], value["id"], items, value["ttl_ms"], value["ref"])
    if op is Extend:
        return Extend(value["partition"], value["id"], value["ttl_ms"])
    return op(value["partition"], value["id"])


def result_of(value):
    if "error" in value:
        details = {k: v for k, v in value.items() if k != "error"}
        return node_error(ErrorCode.from_text(value["error"]), details)
    kind = value["result"]
    if kind == "resource":
        return ResourceView(value["partition"], value["id"], value["capacity"], value["held"],
                            value["confirmed"], value["created"])
    if kind == "hold":
        items = tuple(Item(i["resource"], i["quantity"]) for i in value["items"])
        return HoldView(value["partition"], value["id"], HoldStatus(value["status"]), items,
                        value["expires_at_ms"], value["ref"], value["existing"])
    if kind == "page":
        resources = [ResourceView(value["partition"], r["id"], r["capacity"], r["held"],
                                  r["confirmed"]) for r in value["resources"]]
        return ResourcePage(value["partition"], resources, value["next"])
    assert kind == "partition_deleted"
    return PartitionDeleted(value["partition"], value["resources"], value["holds"])


def change_of(value):
    hold = value["hold"]
    if hold is not None:
        hold = ChangedHold(hold["id"], HoldStatus(hold["status"]), hold["expires_at_ms"],
                           hold["ref"],
                           tuple(Item(i["resource"], i["quantity"]) for i in hold["items"]))
    removed = value["removed"]
    return Change(value["cursor"], ChangeOp(value["op"]), value["at_ms"], value["partition"],
                  hold,
                  [ChangedResource(r["id"], r["capacity"], r["held"], r["confirmed"])
                   for r in value["resources"]],
                  None if removed is None else Removed(removed["resources"], removed["holds"]))


# ---- objects -> value ----

def command_value(command):
    value = {"op": OP_NAMES[type(command)], "partition": command.partition}
    if isinstance(command, DeletePartition):
        return value
    if isinstance(command, ListResources):
        return {**value, "prefix": command.prefix, "after": command.after,
                "limit": command.limit}
    value["id"] = command.id
    if isinstance(command, PutResource):
        value["capacity"] = command.capacity
    elif isinstance(command, Hold):
        value["items"] = [{"resource": i.resource, "quantity": i.quantity}
                          for i in command.items]
        value["ttl_ms"] = command.ttl_ms
        value["ref"] = command.ref
    elif isinstance(command, Extend):
        value["ttl_ms"] = command.ttl_ms
    return value


def result_value(result):
    if isinstance(result, NodeError):
        return {"error": result.code.text, **result.details}
    if isinstance(result, ResourceView):
        return {"result": "resource", "created": result.created, "partition": result.partition,
                "id": result.id, "capacity": result.capacity, "held": result.held,
                "confirmed": result.confirmed}
    if isinstance(result, HoldView):
        return {"result": "hold", "existing": result.existing, "partition": result.partition,
                "id": result.id, "status": result.status.value,
                "expires_at_ms": result.expires_at_ms,
                "items": [{"resource": i.resource, "quantity": i.quantity}
                          for i in result.items],
                "ref": result.ref}
    if isinstance(result, ResourcePage):
        return {"result": "page", "partition": result.partition,
                "resources": [{"id": r.id, "capacity": r.capacity, "held": r.held,
                               "confirmed": r.confirmed} for r in result.resources],
                "next": result.next}
    return {"result": "partition_deleted", "partition": result.partition,
            "resources": result.resources, "holds": result.holds}


def change_value(change):
    hold = change.hold
    return {
        "cursor": change.cursor, "op": change.op.value, "at_ms": change.at_ms,
        "partition": change.partition,
        "hold": None if hold is None else {
            "id": hold.id, "status": hold.status.value, "expires_at_ms": hold.expires_at_ms,
            "ref": hold.ref,
            "items": [{"resource": i.resource, "quantity": i.quantity} for i in hold.items]},
        "resources": [{"id": r.id, "capacity": r.capacity, "held": r.held,
                       "confirmed": r.confirmed} for r in change.resources],
        "removed": None if change.removed is None else {
            "resources": change.removed.resources, "holds": change.removed.holds},
    }


# ---- each kind both ways ----

def encode_value(kind, value):
    """The payload this package writes for a vector's value."""
    if kind == "HELLO":
        return p.encode_hello(value["token"], value["client_name"], value.get("shard"))
    if kind == "REQUEST":
        return p.encode_commands([command_of(c) for c in value["commands"]])
    if kind == "SUBSCRIBE":
        return p.encode_subscribe(value["cursor"], value["partition"], value["credit"])
    if kind == "CREDIT":
        return p.encode_credit(value["credit"])
    if kind == "HELLO_OK":
        return p.encode_hello_ok(HelloOk(Role(value["role"]), value["epoch"], value["shards"],
                                         value["frame_size_max"],
                                         value["commands_per_frame_max"],
                                         value["in_flight_max"], value.get("bound_shard"),
                                         value.get("shard_rule")))
    if kind == "RESPONSE":
        return p.encode_response(result_of(r) for r in value["results"])
    if kind == "ERROR":
        return p.encode_error(ErrorCode.from_text(value["code"]), value["message"])
    assert kind == "CHANGES"
    return p.encode_changes(value["cursor"], [change_of(c) for c in value["changes"]])


def decode_value(kind, payload):
    """What this package decodes a vector's payload to, as a value."""
    if kind == "HELLO":
        token, name, shard = p.decode_hello(payload)
        value = {"token": token.decode(), "client_name": name}
        return value if shard is None else {**value, "shard": shard}
    if kind == "REQUEST":
        return {"commands": [command_value(c) for c in p.decode_request(payload)]}
    if kind == "SUBSCRIBE":
        cursor, partition, credit = p.decode_subscribe(payload)
        return {"cursor": cursor, "partition": partition, "credit": credit}
    if kind == "CREDIT":
        return {"credit": p.decode_credit(payload)}
    if kind == "HELLO_OK":
        hello = p.decode_hello_ok(payload)
        return {"role": hello.role.value, "epoch": hello.epoch, "shards": hello.shards,
                "frame_size_max": hello.frame_size_max,
                "commands_per_frame_max": hello.commands_per_frame_max,
                "in_flight_max": hello.in_flight_max,
                **({} if hello.bound_shard is None else
                   {"bound_shard": hello.bound_shard, "shard_rule": hello.shard_rule})}
    if kind == "RESPONSE":
        return {"results": [result_value(r) for r in p.decode_response(payload)]}
    if kind == "ERROR":
        error = p.decode_error(payload)
        assert error.closed
        return {"code": error.code.text, "message": str(error)}
    assert kind == "CHANGES"
    cursor, changes = p.decode_changes(payload)
    return {"cursor": cursor, "changes": [change_value(c) for c in changes]}


def test_the_file_is_protocol_1_with_every_kind():
    assert FILE["protocol_version"] == p.PROTOCOL_VERSION
    kinds = {vector["kind"] for vector in VECTORS}
    assert kinds == {"HELLO", "HELLO_OK", "REQUEST", "RESPONSE", "ERROR", "SUBSCRIBE",
                     "CHANGES", "CREDIT"}


def test_error_codes_are_the_files():
    assert [(c["number"], c["code"], c["http"]) for c in FILE["error_codes"]] == [
        (int(code), code.text, code.http_status) for code in ErrorCode]


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_vector_encodes_to_its_bytes(vector):
    kind = vector["kind"]
    frame = p.encode_frame(p.Kind[kind], vector["frame"]["request_id"],
                           encode_value(kind, vector["value"]))
    assert frame.hex() == vector["hex"]


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_vector_decodes_to_its_value(vector):
    data = bytes.fromhex(vector["hex"])
    kind, request_id, payload, total = p.parse_frame(data)
    assert total == len(data)
    assert kind == p.Kind[vector["kind"]]
    assert int(kind) == vector["frame"]["kind"]
    assert request_id == vector["frame"]["request_id"]
    assert total - 4 == vector["frame"]["frame_len"]
    assert decode_value(vector["kind"], payload) == vector["value"]
    # Byte by byte, a frame is never complete before its last byte.
    buffer = p.FrameBuffer()
    for byte in data[:-1]:
        assert buffer.feed(bytes([byte])) == []
    assert buffer.feed(data[-1:]) == [(kind, request_id, payload)]


@pytest.mark.parametrize("vector", [v for v in VECTORS if v["kind"] == "RESPONSE"],
                         ids=[v["name"] for v in VECTORS if v["kind"] == "RESPONSE"])
def test_statuses_agree_with_results(vector):
    _, _, payload, _ = p.parse_frame(bytes.fromhex(vector["hex"]))
    expected = [ErrorCode.from_text(r["error"]) if "error" in r else 0
                for r in vector["value"]["results"]]
    assert p.decode_statuses(payload) == expected


def decode_any(kind, payload):
    return {
        p.Kind.HELLO: p.decode_hello, p.Kind.HELLO_OK: p.decode_hello_ok,
        p.Kind.REQUEST: p.decode_request, p.Kind.RESPONSE: p.decode_response,
        p.Kind.ERROR: p.decode_error, p.Kind.SUBSCRIBE: p.decode_subscribe,
        p.Kind.CHANGES: p.decode_changes, p.Kind.CREDIT: p.decode_credit,
    }[kind](payload)


@pytest.mark.parametrize("vector", MALFORMED, ids=[v["name"] for v in MALFORMED])
def test_malformed_frame_is_refused(vector):
    data = bytes.fromhex(vector["hex"])
    with pytest.raises(ProtocolError):
        parsed = p.parse_frame(data)
        assert vector["error"] == "payload", "the header must have been refused"
        assert parsed is not None and parsed[3] == len(data)
        kind, _, payload, _ = parsed
        decode_any(kind, payload)
        if kind == p.Kind.RESPONSE:
            p.decode_statuses(payload)


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_every_cut_of_a_payload_is_refused_cleanly(vector):
    """A payload cut anywhere short raises ProtocolError, never anything else."""
    _, _, payload, _ = p.parse_frame(bytes.fromhex(vector["hex"]))
    kind = p.Kind[vector["kind"]]
    # The one shorter payload that is itself complete: a bound HELLO or HELLO_OK without its
    # optional trailing shard fields (2 and 3 bytes) is the plain one.
    optional = {"hello-bound": 2, "hello-ok-bound": 3}.get(vector["name"])
    for cut in range(len(payload)):
        try:
            decoded = decode_any(kind, payload[:cut])
        except ProtocolError:
            continue
        if optional is not None and cut == len(payload) - optional:
            plain = {k: v for k, v in vector["value"].items()
                     if k not in ("shard", "bound_shard", "shard_rule")}
            assert decode_value(vector["kind"], payload[:cut]) == plain
            continue
        pytest.fail(f"{vector['name']}: a payload cut at {cut} decoded ({decoded!r})")


def test_the_package_version_follows_the_protocol_version():
    import re

    import bookd_client
    from conftest import PACKAGE_DIR
    text = (PACKAGE_DIR / "pyproject.toml").read_text()
    version = re.search(r'^version = "([^"]+)"', text, re.M).group(1)
    assert version == bookd_client.__version__
    assert int(version.split(".")[0]) == bookd_client.PROTOCOL_VERSION == FILE["protocol_version"]
