"""Canned Anthropic Messages API payloads, as Anthropic, Amazon Bedrock and Google Vertex AI
send them: a message, the server-sent events of a stream, and Bedrock's binary AWS
event-stream framing of those events (`application/vnd.amazon.eventstream`: a prelude with
lengths and a CRC32, typed headers, the payload, a message CRC32; each event's JSON is
base64 in the `bytes` field of a `chunk` event), plus an independent check of an AWS
Signature Version 4 (the signing algorithm as AWS documents it, not botocore's code).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import struct
import urllib.parse
import zlib
from collections.abc import AsyncIterator
from typing import Any

MODEL_ID = "claude-test-20250101"


def message(content: list[dict[str, Any]], stop: str = "end_turn", model: str = MODEL_ID) -> dict[str, Any]:
    return {"id": "msg_01", "type": "message", "role": "assistant", "model": model, "content": content,
            "stop_reason": stop, "stop_sequence": None, "usage": {"input_tokens": 10, "output_tokens": 5}}


def text(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value}


def tool_use(name: str, arguments: dict[str, Any], id: str = "toolu_1") -> dict[str, Any]:
    return {"type": "tool_use", "id": id, "name": name, "input": arguments}


def stream_events(
    words: list[str], *, tool: tuple[str, str] | None = None, model: str = MODEL_ID
) -> list[dict[str, Any]]:
    """The events of a streamed message: text deltas, then optionally one tool call whose
    arguments arrive in two pieces."""
    events: list[dict[str, Any]] = [
        {"type": "message_start", "message": {**message([], model=model), "stop_reason": None,
                                              "usage": {"input_tokens": 12, "output_tokens": 1}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        *({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": w}} for w in words),
        {"type": "content_block_stop", "index": 0},
    ]
    if tool is not None:
        name, arguments = tool
        half = len(arguments) // 2
        events += [
            {"type": "content_block_start", "index": 1,
             "content_block": {"type": "tool_use", "id": "toolu_9", "name": name, "input": {}}},
            {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta",
                                                                  "partial_json": arguments[:half]}},
            {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta",
                                                                  "partial_json": arguments[half:]}},
            {"type": "content_block_stop", "index": 1},
        ]
    events += [
        {"type": "message_delta", "delta": {"stop_reason": "tool_use" if tool else "end_turn", "stop_sequence": None},
         "usage": {"output_tokens": 7}},
        {"type": "message_stop"},
    ]
    return events


async def sse(events: list[dict[str, Any]]) -> AsyncIterator[bytes]:
    for event in events:
        yield f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()


# -- AWS event stream ---------------------------------------------------------------------


def _header(name: str, value: str) -> bytes:
    raw_name, raw_value = name.encode(), value.encode()
    return struct.pack("!B", len(raw_name)) + raw_name + b"\x07" + struct.pack("!H", len(raw_value)) + raw_value


def event_stream_message(headers: dict[str, str], payload: bytes) -> bytes:
    encoded = b"".join(_header(k, v) for k, v in headers.items())
    prelude = struct.pack("!II", 12 + len(encoded) + len(payload) + 4, len(encoded))
    prelude += struct.pack("!I", zlib.crc32(prelude))
    frame = prelude + encoded + payload
    return frame + struct.pack("!I", zlib.crc32(frame))


def bedrock_chunk(event: dict[str, Any]) -> bytes:
    payload = json.dumps({"bytes": base64.b64encode(json.dumps(event).encode()).decode(), "p": "abcdef"}).encode()
    return event_stream_message({":event-type": "chunk", ":content-type": "application/json",
                                 ":message-type": "event"}, payload)


def bedrock_exception(kind: str, text: str) -> bytes:
    return event_stream_message({":exception-type": kind, ":content-type": "application/json",
                                 ":message-type": "exception"}, json.dumps({"message": text}).encode())


async def event_stream(frames: list[bytes], split: int = 7) -> AsyncIterator[bytes]:
    """The frames as network chunks that do not line up with frame boundaries."""
    data = b"".join(frames)
    for start in range(0, len(data), split * 11):
        yield data[start : start + split * 11]


# -- AWS Signature Version 4 ---------------------------------------------------------------


def _hmac(key: bytes, value: str) -> bytes:
    return hmac.new(key, value.encode(), hashlib.sha256).digest()


def verify_sigv4(method: str, path: str, headers: dict[str, str], body: bytes, secret_key: str) -> dict[str, str]:
    """Recompute the request's SigV4 signature from its method, path, signed headers and
    body with `secret_key`; return the parts of its credential scope. Raises AssertionError
    when the signature does not match."""
    scheme, _, rest = headers["authorization"].partition(" ")
    assert scheme == "AWS4-HMAC-SHA256", headers["authorization"]
    fields = dict(part.strip().split("=", 1) for part in rest.split(","))
    access_key, date, region, service, terminator = fields["Credential"].split("/")
    signed = fields["SignedHeaders"].split(";")
    uri, _, query = path.partition("?")
    canonical_query = "&".join(sorted(f"{k}={v}" for k, v in urllib.parse.parse_qsl(query, keep_blank_values=True)))
    canonical_headers = "".join(f"{name}:{' '.join(headers[name].split())}\n" for name in signed)
    canonical = "\n".join([method, urllib.parse.quote(uri, safe="/~"), canonical_query, canonical_headers,
                           ";".join(signed), hashlib.sha256(body).hexdigest()])
    scope = f"{date}/{region}/{service}/{terminator}"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", headers["x-amz-date"], scope,
                         hashlib.sha256(canonical.encode()).hexdigest()])
    key = _hmac(_hmac(_hmac(_hmac(("AWS4" + secret_key).encode(), date), region), service), terminator)
    expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    assert hmac.compare_digest(expected, fields["Signature"]), "SigV4 signature does not match"
    return {"access_key": access_key, "region": region, "service": service, "signed": ";".join(signed)}
