"""Miner <-> node wire format (sans-I/O).

A frame is a 4-byte big-endian payload length followed by compact JSON; a payload over
1024 bytes is a protocol error that ends the connection. Messages are serde "externally
tagged" objects with exactly one key: Ready, NewJob or JobResult.

>>> frame = encode_frame(Ready("ab" * 32).to_msg())
>>> frame[:4], frame[4:20]
(b'\\x00\\x00\\x00V', b'{"Ready":{"token')
>>> dec = FrameDecoder()
>>> list(dec.feed(frame[:3])), list(dec.feed(frame[3:]))  # frames may arrive split anywhere
([], [{'Ready': {'token': 'abababababababababababababababababababababababababababababababab'}}])
>>> list(FrameDecoder().feed(b"\\x00\\x00\\x04\\x01"))
Traceback (most recent call last):
quantus_miner.core.quic_messages.FrameError: frame payload of 1025 bytes exceeds the 1024-byte limit
"""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Iterator
from typing import Any

import attrs

from .bounds import BoundError, parse_u512
from .qpow import MAX_U512
from .results import Result

MAX_PAYLOAD = 1024
MESSAGE_TYPES = frozenset({"Ready", "NewJob", "JobResult"})
JOB_STATUSES = frozenset(
    {"accepted", "running", "completed", "failed", "cancelled", "not_found", "error"}
)

_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_HEX128 = re.compile(r"[0-9a-fA-F]{128}")
DIFFICULTY_PROBLEM = {"type": "difficulty must be a decimal string", "syntax": "difficulty must be a decimal string",
                      "low": "difficulty must be > 0", "high": "difficulty exceeds U512"}
_LEN = struct.Struct(">I")


class FrameError(ValueError):
    """The byte stream violates the framing/envelope rules; the connection must end."""


class MessageError(ValueError):
    """A well-framed message whose fields are invalid (e.g. a malformed JobResult)."""


class JobInputError(MessageError):
    """A NewJob with invalid input: the miner answers it with status "failed".

    `job_id` is the job id if it was at least a string (so it can be answered), else None.
    """

    def __init__(self, job_id: str | None, reason: str):
        super().__init__(f"invalid job {show_id(job_id) if job_id is not None else '(no string id)'}: {reason}")
        self.job_id = job_id
        self.reason = reason


# --- framing -------------------------------------------------------------------------


def encode_frame(msg: dict[str, Any], *, max_payload: int = MAX_PAYLOAD) -> bytes:
    """Encode one message as length prefix + compact JSON.

    Oversized payloads are refused on the sending side too, since the peer would
    drop the connection anyway.

    >>> encode_frame({"Ready": {"token": "x"}})
    b'\\x00\\x00\\x00\\x17{"Ready":{"token":"x"}}'
    """
    try:
        payload = json.dumps(msg, separators=(",", ":"), ensure_ascii=False).encode()
    except UnicodeEncodeError:  # a lone surrogate: no UTF-8 form, and serde_json refuses its escape
        raise FrameError("message holds a lone surrogate, which has no UTF-8 encoding") from None
    if len(payload) > max_payload:
        raise FrameError(f"frame payload of {len(payload)} bytes exceeds the {max_payload}-byte limit")
    return _LEN.pack(len(payload)) + payload


def show_id(job_id: object, limit: int = 64) -> str:
    """A job id as logged: quoted, control characters and lone surrogates escaped, long ids cut.

    A node chooses its ids; printed raw, a newline in one would forge a log line.

    >>> print(show_id("17"), show_id("a\\nb"), show_id("\\ud800"), show_id("x" * 70, 4))
    '17' 'a\\nb' '\\ud800' 'xxxx'...(70 chars)
    """
    if not isinstance(job_id, str):
        return f"<{type(job_id).__name__}>"
    if len(job_id) <= limit:
        return repr(job_id)
    return f"{job_id[:limit]!r}...({len(job_id)} chars)"


def message_type(msg: dict[str, Any]) -> str:
    """The tag of an envelope that `FrameDecoder` already accepted.

    >>> message_type({"NewJob": {}})
    'NewJob'
    """
    return next(iter(msg))


def check_envelope(msg: Any) -> dict[str, Any]:
    """Check the externally-tagged envelope: {"<known type>": {...}}.

    >>> check_envelope({"Cancel": {}})
    Traceback (most recent call last):
    quantus_miner.core.quic_messages.FrameError: unknown message type 'Cancel'
    """
    if not isinstance(msg, dict):
        raise FrameError(f"message is not a JSON object but {type(msg).__name__}")
    if len(msg) != 1:
        raise FrameError(f"message must have exactly one tag, got {len(msg)}")
    (tag, body), = msg.items()
    if tag not in MESSAGE_TYPES:
        raise FrameError(f"unknown message type {tag[:40]!r}")
    if not isinstance(body, dict):
        raise FrameError(f"{tag} body is not a JSON object")
    return msg


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


class FrameDecoder:
    """Incremental decoder: feed stream bytes, iterate complete messages.

    After a FrameError the decoder stays broken (the stream position is lost), so every
    later feed raises again; the caller is expected to close the connection.

    >>> d = FrameDecoder()
    >>> list(d.feed(encode_frame({"NewJob": {"job_id": "1"}}) + b"\\x00\\x00"))
    [{'NewJob': {'job_id': '1'}}]
    >>> d.pending_bytes
    2
    >>> msgs = d.feed(b"\\x00\\x02[]" + encode_frame({"Ready": {"token": "t"}}))
    >>> next(msgs)
    Traceback (most recent call last):
    quantus_miner.core.quic_messages.FrameError: message is not a JSON object but list
    >>> d.feed(b"")  # broken for good
    Traceback (most recent call last):
    quantus_miner.core.quic_messages.FrameError: message is not a JSON object but list
    """

    def __init__(self, max_payload: int = MAX_PAYLOAD):
        self._max = max_payload
        self._buf = bytearray()
        self._error: FrameError | None = None

    @property
    def pending_bytes(self) -> int:
        """Bytes buffered towards the next frame."""
        return len(self._buf)

    def feed(self, data: bytes) -> Iterator[dict[str, Any]]:
        """Buffer `data` now; iterate the result for the complete messages, in order.

        Lazy on purpose: messages before a bad frame are yielded before FrameError is
        raised, so the caller can act on them. Frames left unconsumed stay buffered.
        """
        if self._error is not None:
            raise self._error
        self._buf += data
        return self._drain()

    def _drain(self) -> Iterator[dict[str, Any]]:
        try:
            while len(self._buf) >= 4:
                (length,) = _LEN.unpack_from(self._buf)
                # check before buffering the payload: the buffer never exceeds 4 + max
                if length > self._max:
                    raise FrameError(f"frame payload of {length} bytes exceeds the {self._max}-byte limit")
                if len(self._buf) < 4 + length:
                    break
                payload = bytes(self._buf[4 : 4 + length])
                del self._buf[: 4 + length]
                try:
                    msg = json.loads(payload, parse_constant=_no_constant)
                except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                    raise FrameError(f"frame payload is not valid JSON: {exc}") from None
                except ValueError as exc:  # NaN / Infinity: Python extensions serde_json refuses
                    raise FrameError(f"frame payload is not valid JSON: {exc}") from None
                yield check_envelope(msg)
        except FrameError as exc:
            self._error = exc
            raise


# --- typed messages ------------------------------------------------------------------


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@attrs.frozen
class Ready:
    """miner -> node, first message: the token file's content without its newline."""

    token: str

    def to_msg(self) -> dict[str, Any]:
        """The envelope to send."""
        return {"Ready": {"token": self.token}}

    @classmethod
    def from_msg(cls, msg: dict[str, Any]) -> Ready:
        """
        >>> Ready.from_msg({"Ready": {"token": "t"}})
        Ready(token='t')
        """
        body = msg.get("Ready")
        if not isinstance(body, dict) or not isinstance(body.get("token"), str):
            raise MessageError("Ready needs a string token")
        return cls(body["token"])


@attrs.frozen
class NewJob:
    """node -> miner. `mining_hash` is the 32-byte header; `difficulty` > 0."""

    job_id: str
    mining_hash: bytes
    difficulty: int

    def to_msg(self) -> dict[str, Any]:
        """The envelope to send (the simulators' side)."""
        return {
            "NewJob": {
                "job_id": self.job_id,
                "mining_hash": self.mining_hash.hex(),
                "difficulty": str(self.difficulty),
            }
        }

    @classmethod
    def from_msg(cls, msg: dict[str, Any]) -> NewJob:
        """Validate a NewJob; bad input raises JobInputError (answer: status "failed").

        >>> j = NewJob.from_msg({"NewJob": {"job_id": "17", "mining_hash": "00" * 32,
        ...                                 "difficulty": "131072"}})
        >>> j.job_id, j.difficulty, len(j.mining_hash)
        ('17', 131072, 32)
        >>> NewJob.from_msg({"NewJob": {"job_id": "18", "mining_hash": "00" * 32,
        ...                             "difficulty": "0"}})
        Traceback (most recent call last):
        quantus_miner.core.quic_messages.JobInputError: invalid job '18': difficulty must be > 0
        """
        body = msg.get("NewJob")
        if not isinstance(body, dict):
            raise JobInputError(None, "NewJob body is not an object")
        job_id = body.get("job_id")
        if not isinstance(job_id, str):
            raise JobInputError(None, "job_id must be a string")
        mining_hash = body.get("mining_hash")
        if not isinstance(mining_hash, str) or not _HEX64.fullmatch(mining_hash):
            raise JobInputError(job_id, "mining_hash must be 64 hex characters")
        try:
            value = parse_u512(body.get("difficulty"), least=1)
        except BoundError as exc:
            raise JobInputError(job_id, DIFFICULTY_PROBLEM[exc.kind]) from None
        return cls(job_id, bytes.fromhex(mining_hash), value)


@attrs.frozen
class JobResult:
    """miner -> node. `nonce` is the U512 nonce (None when absent); `work` is derived."""

    status: str = attrs.field(validator=attrs.validators.in_(JOB_STATUSES))
    job_id: str
    nonce: int | None = attrs.field(default=None)
    hash_count: int = 0
    elapsed_time: float = 0.0

    @nonce.validator
    def _check_nonce(self, _attr: Any, value: int | None) -> None:
        if value is not None and not (_is_int(value) and 0 <= value <= MAX_U512):
            raise ValueError("nonce must be an int in U512 range")

    @property
    def work(self) -> bytes | None:
        """The nonce as 64 big-endian bytes, or None."""
        return None if self.nonce is None else self.nonce.to_bytes(64, "big")

    def to_msg(self) -> dict[str, Any]:
        """
        >>> JobResult("completed", "17", 0x2a, 5, 0.5).to_msg()["JobResult"]["nonce"]
        '2a'
        """
        return {"JobResult": Result(self.status, self.nonce, self.hash_count, self.elapsed_time).fields(self.job_id)}

    @classmethod
    def from_msg(cls, msg: dict[str, Any]) -> JobResult:
        """Parse as the node does: `work` (64 bytes) is authoritative for the nonce.

        >>> r = JobResult.from_msg(JobResult("completed", "17", 42, 9, 1.5).to_msg())
        >>> r.nonce, r.hash_count
        (42, 9)
        """
        body = msg.get("JobResult")
        if not isinstance(body, dict):
            raise MessageError("JobResult body is not an object")
        status, job_id = body.get("status"), body.get("job_id")
        if status not in JOB_STATUSES:
            raise MessageError(f"unknown status {status!r:.40}")
        if not isinstance(job_id, str):
            raise MessageError("job_id must be a string")
        hash_count, elapsed = body.get("hash_count", 0), body.get("elapsed_time", 0.0)
        if not _is_int(hash_count) or hash_count < 0:
            raise MessageError("hash_count must be a non-negative integer")
        if isinstance(elapsed, bool) or not isinstance(elapsed, (int, float)) or not (
            math.isfinite(elapsed) and elapsed >= 0
        ):
            raise MessageError("elapsed_time must be a non-negative number")
        nonce = None
        work = body.get("work")
        if work is not None:
            if not isinstance(work, str) or not _HEX128.fullmatch(work):
                raise MessageError("work must be 128 hex characters (64 bytes)")
            nonce = int(work, 16)
            claimed = body.get("nonce")
            if claimed is not None and (
                not isinstance(claimed, str)
                or not re.fullmatch(r"[0-9a-fA-F]{1,128}", claimed)
                or int(claimed, 16) != nonce
            ):
                raise MessageError("nonce does not match work")
        return cls(status, job_id, nonce, hash_count, float(elapsed))


def parse_message(msg: dict[str, Any]) -> Ready | NewJob | JobResult:
    """Typed view of an envelope accepted by FrameDecoder.

    >>> parse_message({"Ready": {"token": "t"}})
    Ready(token='t')
    """
    return {"Ready": Ready, "NewJob": NewJob, "JobResult": JobResult}[message_type(msg)].from_msg(msg)
