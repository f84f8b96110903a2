"""A job's result: the one model that HTTP `/result`, the QUIC `JobResult` and `mine --json` format (pure).

Both node protocols carry the same six fields, spelled the same way: status, job_id, nonce (Rust `{:x}`),
work (the nonce as 64 big-endian bytes in hex), hash_count, elapsed_time.

>>> body = Result("completed", 0x2a, 5, 0.5).fields("17")
>>> list(body), body["nonce"], body["work"][-4:]
(['status', 'job_id', 'nonce', 'work', 'hash_count', 'elapsed_time'], '2a', '002a')
"""

from __future__ import annotations

from typing import Any

import attrs

from .protocol import nonce_hex, work_hex


@attrs.frozen
class Result:
    """What a job came to: its status, the nonce when it found one, the nonces tested and the time taken.

    `distance` is the found nonce's measure (QPoW v1 distance, v2 hash), shown only by `mine`.
    """

    status: str = "completed"  # "completed" with a nonce; "failed", "cancelled", "error", ... otherwise
    nonce: int | None = None
    hash_count: int = 0
    elapsed_time: float = 0.0
    distance: int | None = None

    @classmethod
    def of(cls, snap: Any) -> Result:
        """A runtime job's result as of `snap`, a `jobs.JobSnapshot` (a nonce only once the job completed)."""
        completed = snap.status == "completed"
        return cls(str(snap.status), snap.nonce if completed else None, snap.hash_count, snap.elapsed_time,
                   snap.distance if completed else None)

    def fields(self, job_id: str | None, *, distance_key: str | None = None) -> dict[str, Any]:
        """The protocols' fields (no `job_id` when None; `distance_key` adds the measure after `work`)."""
        found = self.nonce is not None
        body: dict[str, Any] = {"status": self.status}
        if job_id is not None:
            body["job_id"] = job_id
        body["nonce"] = nonce_hex(self.nonce) if found else None
        body["work"] = work_hex(self.nonce) if found else None
        if distance_key is not None:
            body[distance_key] = work_hex(self.distance) if self.distance is not None else None
        body["hash_count"] = self.hash_count
        body["elapsed_time"] = self.elapsed_time
        return body
