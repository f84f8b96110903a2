"""`POST /mine` bodies (sans-I/O): parsing, validation, and the refusals that carry their HTTP status.

>>> req = parse_mine_request(b'{"job_id":"a","mining_hash":"' + b"00" * 32 + b'","distance_threshold":"5",'
...                          b'"nonce_start":"' + b"0" * 128 + b'","nonce_end":"' + b"f" * 128 + b'"}')
>>> req.job_id, req.threshold, req.nonce_start
('a', 5, 0)
"""

import json

import attrs

from .job_ids import IdRule, job_id_problem, usable_job_id
from .protocol import parse_hex, parse_threshold

FIELDS = ("job_id", "mining_hash", "distance_threshold", "nonce_start", "nonce_end")


@attrs.frozen
class MineRequest:
    """A mining job: header, bound (v1 distance threshold; v2 target, for QUIC jobs) and inclusive range."""

    job_id: str
    header: bytes
    threshold: int
    nonce_start: int
    nonce_end: int


class Refused(Exception):
    """A job request the miner turns down; `status` is the HTTP status the API answers with.

    >>> DuplicateJob("job a already exists", "a").status
    409
    """

    status = 400

    def __init__(self, message: str, job_id: str = ""):
        super().__init__(message)
        self.message = message
        self.job_id = job_id  # echoed in the error body when the request carried a usable one


class InvalidRequest(Refused):
    """The body is not a valid mining request."""

    status = 400


class DuplicateJob(Refused):
    """A job with this id exists (running or retained)."""

    status = 409


class TooManyJobs(Refused):
    """`--max-jobs` jobs are running already."""

    status = 429


def parse_mine_request(body: bytes) -> MineRequest:
    """Parse and validate a `POST /mine` body; raise InvalidRequest with the message the API returns."""
    try:
        doc = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise InvalidRequest("body is not valid UTF-8") from None
    except RecursionError:
        raise InvalidRequest("body is not valid JSON: nested too deeply") from None
    except ValueError as exc:
        raise InvalidRequest(f"body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidRequest("body must be a JSON object")
    job_id = usable_job_id(doc.get("job_id"))
    missing = [f for f in FIELDS if f not in doc]
    if missing:
        raise InvalidRequest(f"missing field(s): {', '.join(missing)}", job_id)
    extra = sorted(k for k in doc if k not in FIELDS)
    if extra:
        raise InvalidRequest(f"unknown field(s): {', '.join(extra[:5])}", job_id)
    if (problem := job_id_problem(doc["job_id"], IdRule.HTTP)) is not None:
        raise InvalidRequest(problem)
    try:
        header = parse_hex(doc["mining_hash"], length=64, name="mining_hash")
        threshold = parse_threshold(doc["distance_threshold"])
        start = parse_hex(doc["nonce_start"], length=128, name="nonce_start")
        end = parse_hex(doc["nonce_end"], length=128, name="nonce_end")
    except ValueError as exc:
        raise InvalidRequest(str(exc), job_id) from None
    if start > end:
        raise InvalidRequest("nonce_start must be <= nonce_end", job_id)
    return MineRequest(job_id, header.to_bytes(32, "big"), threshold, start, end)


def mine_body(request: MineRequest) -> dict:
    """The `POST /mine` body for `request` (the one writer: devnet, tests and scripts use it).

    >>> req = MineRequest("a", bytes(32), 5, 1, 9)
    >>> parse_mine_request(json.dumps(mine_body(req)).encode()) == req
    True
    """
    return {"job_id": request.job_id, "mining_hash": request.header.hex(), "distance_threshold": str(request.threshold),
            "nonce_start": format(request.nonce_start, "0128x"), "nonce_end": format(request.nonce_end, "0128x")}
