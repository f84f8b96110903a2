"""Job ids (pure): the one rule set of both node protocols, with their one difference named (`IdRule`).

Both protocols: a job id is a string, echoed verbatim in the job's result.
- `IdRule.HTTP` (`POST /mine`, and any id the runtime carries verbatim): 1 to 128 letters, digits and
  `. _ : -`, since the id is a URL path segment (`/result/{job_id}`), a metrics label and a log word.
- `IdRule.QUIC` (`NewJob`): the node picks its ids and matches results by them, so any string the
  miner can echo in a `JobResult` is taken; the runtime runs one that fails the HTTP rule under an
  alias (`service.node_client`).

>>> job_id_problem("a-1", IdRule.HTTP), job_id_problem("a b", IdRule.HTTP), job_id_problem("a b", IdRule.QUIC)
(None, 'job_id may contain only letters, digits and . _ : -', None)
"""

from __future__ import annotations

import enum
import re

from .qpow import MAX_U512
from .quic_messages import MAX_PAYLOAD, FrameError, JobResult, encode_frame

MAX_JOB_ID_LENGTH = 128
JOB_ID_RE = re.compile(r"[A-Za-z0-9._:-]+")  # UUIDs and other printable ids; no spaces, slashes or controls


class IdRule(enum.Enum):
    """Which protocol's rule a job id must meet (see the module docstring)."""

    HTTP = "http"  # 1-128 of [A-Za-z0-9._:-]
    QUIC = "quic"  # any string a JobResult can echo


def job_id_problem(value: object, rule: IdRule) -> str | None:
    """Why `value` is no job id under `rule`, as the error message says it; None when it is one."""
    if not isinstance(value, str):
        return "job_id must be a string"
    if rule is IdRule.QUIC:
        return unanswerable(value)
    if not 0 < len(value) <= MAX_JOB_ID_LENGTH:
        return f"job_id must be 1 to {MAX_JOB_ID_LENGTH} characters"
    if not JOB_ID_RE.fullmatch(value):
        return "job_id may contain only letters, digits and . _ : -"
    return None


def usable_job_id(value: object) -> str:
    """The id to echo in an error body or carry verbatim: `value` if it meets the HTTP rule, else ""."""
    return value if job_id_problem(value, IdRule.HTTP) is None else ""  # type: ignore[return-value]


def unanswerable(job_id: str) -> str | None:
    """Why no JobResult can echo `job_id` (None when one can).

    The node matches results by job id, so an answer under another id is ignored; a result that
    does not fit the 1024-byte frame, or holds a lone surrogate, ends the node's read loop
    (serde_json refuses both). Checked against the largest result the miner can send.

    >>> unanswerable("17") is None, unanswerable("\\ud800"), unanswerable("\\x01" * 128)
    (True, 'it holds a lone surrogate (no UTF-8 form)', 'a JobResult echoing it would exceed the 1024-byte frame limit')
    """
    widest = JobResult("completed", job_id, MAX_U512, (1 << 64) - 1, 1.7976931348623157e308)
    try:
        encode_frame(widest.to_msg())
    except FrameError as exc:
        if "surrogate" in str(exc):
            return "it holds a lone surrogate (no UTF-8 form)"
        return f"a JobResult echoing it would exceed the {MAX_PAYLOAD}-byte frame limit"
    return None

