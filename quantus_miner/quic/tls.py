"""Certificate, pin and token helpers (the node's files, as the miner reads them).

The node keeps a self-signed certificate for "localhost"; the miner trusts it only through
the pin file (lowercase hex SHA-256 of the certificate DER). The token file holds the node's
token (64 random hex chars it generates, or any operator-chosen one) plus a newline, mode 0600.

Both files are read as the node (`node/src/miner_server.rs`) and the upstream miner
(`quic-transport`) read them: the token trimmed, non-empty, at most 512 bytes and small enough
for a 1024-byte Ready frame; the pin as 64 hex digits in either case, with ':' and whitespace
ignored (`AB:CD:...` as certificate tools print it).

>>> cert, key = make_self_signed()
>>> len(cert_sha256(cert))
64
>>> parse_pin(" AB:CD" + ":ef" * 30 + " ")[:8]
'abcdefef'
>>> check_token("operator-chosen-token-1234")
'operator-chosen-token-1234'
>>> check_token("")
Traceback (most recent call last):
quantus_miner.quic.tls.CredentialError: auth token is empty
"""

from __future__ import annotations

import datetime
import hashlib
import os
import re
import secrets
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ..core.quic_messages import FrameError, Ready, encode_frame

_HEX = re.compile(r"[0-9a-fA-F]*")
_PIN_SEPARATORS = re.compile(r"[\s:]+")
MAX_TOKEN_BYTES = 512  # the node's MAX_AUTH_TOKEN_LEN


class CredentialError(ValueError):
    """A pin or token file is missing or malformed."""


def make_self_signed(
    common_name: str = "localhost", *, days: int = 3650
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A self-signed certificate for `common_name` (P-256: fast to generate, aioquic-compatible)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(common_name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def cert_der(cert: x509.Certificate) -> bytes:
    """The certificate in DER."""
    return cert.public_bytes(serialization.Encoding.DER)


def cert_sha256(cert: x509.Certificate) -> str:
    """Lowercase hex SHA-256 of the DER encoding: the pin."""
    return hashlib.sha256(cert_der(cert)).hexdigest()


def write_pem(cert_path: str | os.PathLike, key_path: str | os.PathLike,
              cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
    """Write the certificate and its private key (owner-only) as PEM."""
    Path(cert_path).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_private(key_path, key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


def load_pem(cert_path: str | os.PathLike, key_path: str | os.PathLike):
    """The certificate and key from PEM files."""
    cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    key = serialization.load_pem_private_key(Path(key_path).read_bytes(), password=None)
    return cert, key


def write_der(cert_path: str | os.PathLike, key_path: str | os.PathLike,
              cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
    """The node's own form: `miner-tls-cert.der` and `miner-tls-key.der` (PKCS#8), both mode 0600."""
    _write_private(cert_path, cert_der(cert))
    _write_private(key_path, key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


def load_der(cert_path: str | os.PathLike, key_path: str | os.PathLike):
    """The certificate and key from DER files (the node's format); CredentialError if unreadable."""
    try:
        cert = x509.load_der_x509_certificate(Path(cert_path).read_bytes())
        key = serialization.load_der_private_key(Path(key_path).read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise CredentialError(f"cannot load the certificate {os.fspath(cert_path)!r} and key "
                              f"{os.fspath(key_path)!r}: {exc}; delete both to regenerate") from None
    return cert, key


def _write_private(path: str | os.PathLike, data: bytes) -> None:
    # Create with 0600 directly (no window where the secret is world-readable), and
    # fchmod in case the file already existed with looser permissions.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
    finally:
        os.close(fd)


def write_pin_file(path: str | os.PathLike, cert: x509.Certificate) -> str:
    """Write the certificate's SHA-256 pin file; return the pin."""
    pin = cert_sha256(cert)
    Path(path).write_text(pin + "\n")
    return pin


def write_token_file(path: str | os.PathLike, token: str | None = None) -> str:
    """Write (and return) a token + newline, mode 0600: 64 random hex chars if not given."""
    token = secrets.token_hex(32) if token is None else check_token(token)
    _write_private(path, (token + "\n").encode())
    return token


def validate_hex(value: str, length: int, what: str) -> str:
    """`value` if it is `length` hex characters; else CredentialError naming `what`."""
    if len(value) != length:
        raise CredentialError(f"{what} must be {length} hex characters, got {len(value)}")
    if not _HEX.fullmatch(value):
        raise CredentialError(f"{what} is not hexadecimal")
    return value


def check_token(token: str) -> str:
    """The token as the node accepts it (already trimmed); never quoted in an error."""
    if not token:
        raise CredentialError("auth token is empty")
    size = len(token.encode())
    if size > MAX_TOKEN_BYTES:
        raise CredentialError(f"auth token is {size} bytes; the node accepts at most {MAX_TOKEN_BYTES}")
    try:
        encode_frame(Ready(token).to_msg())
    except FrameError:
        raise CredentialError("auth token does not fit the node's 1024-byte Ready frame once JSON-escaped "
                              "(avoid quotes, backslashes and control characters)") from None
    return token


def parse_pin(text: str) -> str:
    """A SHA-256 pin in any usual form -> 64 lowercase hex digits (':' and whitespace ignored)."""
    digits = _PIN_SEPARATORS.sub("", text)
    if not _HEX.fullmatch(digits):
        bad = next(c for c in digits if c not in "0123456789abcdefABCDEF")
        raise CredentialError(f"certificate pin is not hexadecimal (found {bad!r}); expected the node's "
                              "miner-tls-cert-sha256: 64 hex digits, ':' separators allowed")
    if len(digits) != 64:
        raise CredentialError(f"certificate pin must be 64 hex characters, got {len(digits)} "
                              "(':' and whitespace between them are ignored)")
    return digits.lower()


def _read(path: str | os.PathLike, what: str) -> str:
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise CredentialError(f"{what} file {os.fspath(path)!r} does not exist") from None
    except IsADirectoryError:
        raise CredentialError(f"{what} file {os.fspath(path)!r} is a directory") from None
    except OSError as exc:
        raise CredentialError(f"cannot read {what} file {os.fspath(path)!r}: {exc.strerror}") from None
    try:
        # the node writes a trailing newline and trims whitespace itself (Rust's str::trim)
        return raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise CredentialError(f"{what} file {os.fspath(path)!r} is not UTF-8 text") from None


def _read_checked(path: str | os.PathLike, what: str, check: Callable[[str], str]) -> str:
    """`check` of the file's trimmed text; its CredentialError names the file."""
    text = _read(path, what)
    try:
        return check(text)
    except CredentialError as exc:
        raise CredentialError(f"{exc} (file {os.fspath(path)!r})") from None


def read_pin_file(path: str | os.PathLike) -> str:
    """The pinned SHA-256 (lowercase hex) from `miner-tls-cert-sha256`, in any usual form."""
    return _read_checked(path, "certificate pin", parse_pin)


def read_token_file(path: str | os.PathLike) -> str:
    """The auth token from `miner-auth-token`: the file trimmed, as the node reads it."""
    return _read_checked(path, "auth token", check_token)
