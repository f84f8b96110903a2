"""Token and pin files read as the node and the upstream miner read them; `connect` exits 2 otherwise.

Test charter: real files in tmp_path, the real readers, and the `connect` command as a process for
the exit status and message (it fails before any network I/O, so no node is needed). The one
end-to-end case runs `connect_miner` against the QUIC node simulator over 127.0.0.1 with an
operator-chosen token, which the node accepts (the node is outside this project).
"""

from __future__ import annotations

import subprocess
import sys
from functools import partial

import pytest
import trio
from prometheus_client import CollectorRegistry

from quantus_miner.core.config import ServiceConfig
from quantus_miner.core.quic_messages import NewJob
from quantus_miner.devnet.quic_node import NodeSim
from quantus_miner.quic import tls
from quantus_miner.service.node_client import connect_miner

PIN = "0123456789abcdef" * 4


@pytest.mark.parametrize("content, expected", [
    ("operator-chosen-token-1234\n", "operator-chosen-token-1234"),
    ("  spaced token \r\n\n", "spaced token"),
    ("ab" * 32 + "\n", "ab" * 32),
    ("x" * 512, "x" * 512),
    ("jeton-é-ü", "jeton-é-ü"),
], ids=["operator token", "trimmed", "node-generated", "512 bytes", "utf-8"])
def test_token_file_accepts_what_the_node_accepts(tmp_path, content, expected):
    (tmp_path / "t").write_text(content)
    assert tls.read_token_file(tmp_path / "t") == expected


@pytest.mark.parametrize("content, message", [
    ("", "auth token is empty"),
    (" \n\t\n", "auth token is empty"),
    ("x" * 513, "auth token is 513 bytes; the node accepts at most 512"),
    ("é" * 257, "auth token is 514 bytes"),
    ('"' * 510, "does not fit the node's 1024-byte Ready frame"),
], ids=["empty", "blank", "513 bytes", "514 utf-8 bytes", "escapes past the frame"])
def test_token_file_refused_clearly_without_quoting_the_token(tmp_path, content, message):
    (tmp_path / "t").write_text(content)
    with pytest.raises(tls.CredentialError, match=message) as info:
        tls.read_token_file(tmp_path / "t")
    assert str(tmp_path / "t") in str(info.value)
    if content.strip():
        assert content.strip()[:20] not in str(info.value)


def test_token_file_not_utf8(tmp_path):
    (tmp_path / "t").write_bytes(b"\xff\xfe token")
    with pytest.raises(tls.CredentialError, match="not UTF-8 text"):
        tls.read_token_file(tmp_path / "t")


@pytest.mark.parametrize("content", [
    PIN + "\n",
    PIN.upper(),
    "  " + PIN + "  \n",
    ":".join(PIN[i:i + 2] for i in range(0, 64, 2)).upper(),
    " ".join(PIN[i:i + 2] for i in range(0, 64, 2)),
    ":".join(PIN[i:i + 2] for i in range(0, 64, 2)) + "\n",
], ids=["node file", "upper case", "whitespace", "AB:CD colons", "spaced pairs", "colons lower"])
def test_pin_file_accepts_the_forms_people_paste(tmp_path, content):
    (tmp_path / "p").write_text(content)
    assert tls.read_pin_file(tmp_path / "p") == PIN


@pytest.mark.parametrize("content, message", [
    ("", "must be 64 hex characters, got 0"),
    (PIN[:-2], "must be 64 hex characters, got 62"),
    (PIN + "00", "must be 64 hex characters, got 66"),
    ("0x" + PIN[2:], r"not hexadecimal \(found 'x'\)"),
    ("sha256=" + PIN, "not hexadecimal"),
    (PIN[:-1] + "g", r"found 'g'"),
], ids=["empty", "short", "long", "0x prefix", "label", "non-hex"])
def test_pin_file_refuses_anything_else_clearly(tmp_path, content, message):
    (tmp_path / "p").write_text(content)
    with pytest.raises(tls.CredentialError, match=message):
        tls.read_pin_file(tmp_path / "p")


def test_connect_exits_2_with_the_reason_for_a_bad_file(tmp_path):
    (tmp_path / "token").write_text("")
    (tmp_path / "pin").write_text(PIN)
    proc = subprocess.run(
        [sys.executable, "-m", "quantus_miner", "connect", "--node-addr", "127.0.0.1:9",
         "--auth-token-file", str(tmp_path / "token"), "--tls-cert-sha256-file", str(tmp_path / "pin")],
        capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("quantus-miner: error: auth token is empty (file ")
    assert "Traceback" not in proc.stderr


async def test_an_operator_chosen_token_and_a_colon_pin_mine_with_the_node(tmp_path):
    sim = NodeSim(token="operator-chosen-token-1234")
    sim.set_job(NewJob("1", bytes([1]) * 32, 3000))
    with trio.fail_after(30):
        async with trio.open_nursery() as n:
            await n.start(sim.run)
            pin_path, token_path = sim.write_files(tmp_path)
            pin_path.write_text(":".join(sim.pin[i:i + 2] for i in range(0, 64, 2)).upper() + "\n")
            config = ServiceConfig(node_addr=("127.0.0.1", sim.port), auth_token_file=str(token_path),
                                   tls_cert_sha256_file=str(pin_path), engine="cpu-fast-v2", cores=1)
            await n.start(partial(connect_miner, config, registry=CollectorRegistry(), backoff=(0.05, 0.4)))
            await sim.wait_for(lambda: "1" in sim.accepted)
            assert sim.miners[0].tokens_seen == ["operator-chosen-token-1234"]
            n.cancel_scope.cancel()
