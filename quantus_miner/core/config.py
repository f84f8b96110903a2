"""The settings table: every tunable of every command is a flag with an env twin and a default written once.

A flag beats its environment variable, which beats the default; a bad value raises
`ConfigError` naming the flag or variable at fault (the commands exit 2 with it).

>>> resolve({"port": None}, {"MINER_PORT": "9000"}).port
9000
>>> resolve({}, {"MINER_CORES": "1"}, command="bench").cores
1
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable, Mapping

import attrs

LOG_LEVELS = ("debug", "info", "warning", "error")
ENGINE_NAMES = ("cpu-fast", "cpu-baseline", "cpu-fast-v2", "cpu-baseline-v2", "gpu-cuda", "gpu-cuda-v2")  # `engines.get_engine` builds each
GPU_ENGINES = frozenset({"gpu-cuda", "gpu-cuda-v2"})  # CUDA (the optional `gpu` extra): one executor slot per device
# The CPU engine of a GPU engine's proof of work: what `--cores N` threads run beside the devices
CPU_ENGINE_OF_GPU = {"gpu-cuda": "cpu-fast", "gpu-cuda-v2": "cpu-fast-v2"}


class Pow(enum.StrEnum):
    """A proof of work: v1 (modexp + SHA3-512, the HTTP node of 2025), v2 (Poseidon2, the QUIC node since
    chain v0.10.0). A str enum: an engine that still says "v1" compares equal."""

    V1 = "v1"
    V2 = "v2"


# The proof of work each engine implements. Each engine says so too (`engine.pow`); a test checks
# that the two agree. `serve` takes v1 engines only, `connect` v2 only, mine/bench both.
POW_OF_ENGINE = {"cpu-fast": Pow.V1, "cpu-baseline": Pow.V1, "cpu-fast-v2": Pow.V2, "cpu-baseline-v2": Pow.V2,
                 "gpu-cuda": Pow.V1, "gpu-cuda-v2": Pow.V2}
# The same kind of engine for the other proof of work: a `quantus-miner worker` warms both, so one
# cluster serves `serve` (v1) and `connect` (v2) miners alike.
OTHER_POW_ENGINE = {"cpu-fast": "cpu-fast-v2", "cpu-fast-v2": "cpu-fast", "cpu-baseline": "cpu-baseline-v2",
                    "cpu-baseline-v2": "cpu-baseline", "gpu-cuda": "gpu-cuda-v2", "gpu-cuda-v2": "gpu-cuda"}
POW_NAMES = {Pow.V1: "QPoW v1 (HTTP node protocol)", Pow.V2: "QPoW v2 (QUIC node protocol, chain v0.10.0+)"}


@attrs.frozen
class Network:
    """A generation of the Quantus network the miner serves."""

    pow: Pow
    transport: str  # how the node hands out jobs
    engine: str  # the default engine for it


NETWORKS = {"2025": Network(Pow.V1, "HTTP", "cpu-fast"), "2026": Network(Pow.V2, "QUIC", "cpu-fast-v2")}
COMMANDS = ("serve", "mine", "bench", "devnet", "connect", "worker")
# Kernels `MINER_KERNEL` may force, fastest first: cpu-fast's (QPoW v1) and cpu-fast-v2's (QPoW v2); "auto"
# picks, for the engine in use, the fastest that the host supports and that passes its self-test on it
V1_KERNELS = ("ifma8", "avx2x8", "lanes8")
V2_KERNELS = ("v2-avx512", "v2-avx2", "v2-lanes8")
KERNEL_NAMES = ("auto", *V1_KERNELS, *V2_KERNELS)
KERNELS_OF_ENGINE = {"cpu-fast": V1_KERNELS, "cpu-fast-v2": V2_KERNELS}
MIN_JOB_RETENTION_S = 5.0  # ten of the node's 500 ms polls: a found nonce is always seen before it goes
SCHEDULER_SCHEMES = ("tcp", "tls")


def available_cores() -> int:
    """All CPUs this process may use."""
    return len(os.sched_getaffinity(0))


@attrs.frozen
class ServiceConfig:
    """Every setting of every command, resolved (flag > env > default); see `SETTINGS`."""

    host: str = "127.0.0.1"
    port: int = 9833
    cores: int = attrs.field(factory=lambda: available_cores())
    engine: str = "cpu-fast"
    progress_chunk_ms: int = 2000
    metrics_port: int | None = None
    job_retention_s: float = 300.0
    log_level: str = "info"
    rate_ema_alpha: float = 0.2
    max_jobs: int = 16
    worker_nice: int = 0  # mining threads' nice value: higher keeps the API snappier on a busy machine
    max_finished_jobs: int = 1000  # kept for /result
    metrics_finished_jobs: int = 100  # of those, the most recently ended ones exposed in /metrics
    metrics_cache_s: float = 0.1  # an exposition is reused for at most this long (the freshness bound)
    kernel: str = "auto"
    max_connections: int = 512  # on the API port, within the fd limit (the metrics port holds 8)
    idle_timeout_s: float = 5.0  # an HTTP connection with no traffic either way is closed after this
    log_speed_s: float = 60.0  # seconds between speed lines (serve, devnet); 0: none
    progress_log_s: float = 10.0  # seconds between plain progress lines of mine/bench when stderr is no terminal
    # connect (the 2026 QUIC node): where the node listens and its two credential files
    node_addr: tuple[str, int] | None = None
    auth_token_file: str | None = None
    tls_cert_sha256_file: str | None = None
    cluster: str | None = None  # Dask scheduler address; None: mine with this machine's threads
    cluster_timeout_s: float = 5.0  # bound on connecting to the scheduler
    nthreads: int = attrs.field(factory=lambda: available_cores())  # `worker`: mining threads
    worker_name: str | None = None  # `worker`: the name Dask (and the miner's metrics) know it by
    gpu_devices: int | None = None  # GPU engines: how many CUDA devices (each one executor slot); None: all
    # GPU engines: CPU threads mining beside the devices (cpu-fast / cpu-fast-v2), from an explicit --cores or
    # MINER_CORES; 0 (the default, or --cores 0): GPUs only. `cores` then counts the devices' slots.
    cpu_threads: int = 0


def _number(kind: Callable[[str], float], ok: Callable[[float], bool], message: str) -> Callable[[str], float]:
    """A parser of `kind` (int, float) that refuses values failing `ok` with `message`."""
    def parse(text: str):
        value = kind(text)
        if not ok(value):  # NaN fails every comparison: refused too
            raise ValueError(message)
        return value

    return parse


INF = float("inf")
_port = _number(int, lambda v: 0 <= v <= 65535, "must be a port number 0-65535")
_positive_int = _number(int, lambda v: v >= 1, "must be a positive integer")
_cores = _number(int, lambda v: v >= 0, "must be a positive integer")  # 0: GPUs only (checked in `resolve`)
_non_negative_float = _number(float, lambda v: 0 <= v < INF, "must be a number >= 0")
_retention = _number(float, lambda v: MIN_JOB_RETENTION_S <= v < INF,
                     f"must be a number of seconds >= {MIN_JOB_RETENTION_S:g}")
_timeout = _number(float, lambda v: 0.1 <= v <= 3600, "must be a number of seconds 0.1-3600")
_connections = _number(int, lambda v: 1 <= v <= 65536, "must be an integer 1-65536")
_positive_float = _number(float, lambda v: 0 < v < INF, "must be a number > 0")
_nice = _number(int, lambda v: 0 <= v <= 19, "must be a nice value 0-19")
_alpha = _number(float, lambda v: 0 < v <= 1, "must be in (0, 1]")


def _node_addr(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError("must be HOST:PORT (e.g. 127.0.0.1:9833)")
    return host.strip("[]"), int(port)


def scheduler_address(text: str) -> str:
    """A Dask scheduler address, `tcp://HOST:PORT` or `tls://HOST:PORT`; a bare HOST:PORT means tcp.

    >>> scheduler_address("10.0.0.5:8786"), scheduler_address("tls://sched.lan:8786")
    ('tcp://10.0.0.5:8786', 'tls://sched.lan:8786')
    """
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "tcp", text
    host, colon, port = rest.rpartition(":")
    if scheme not in SCHEDULER_SCHEMES or not colon or not host.strip("[]") or not port.isdigit() \
            or not 0 < int(port) <= 65535:
        raise ValueError("must be a scheduler address like tcp://HOST:8786 (or tls://)")
    return f"{scheme}://{rest}"


def _gpu_devices(text: str) -> int | None:
    """`all` (None) or a count of devices.

    >>> _gpu_devices("all"), _gpu_devices("2")
    (None, 2)
    """
    if text.strip().lower() == "all":
        return None
    try:
        value = int(text)
    except ValueError:
        raise ValueError("must be a positive integer or 'all'") from None
    if value < 1:
        raise ValueError("must be a positive integer or 'all'")
    return value


def _name(text: str) -> str:
    if not text or len(text) > 64 or not all(c.isalnum() or c in "-_." for c in text):
        raise ValueError("must be 1-64 letters, digits, '-', '_' or '.'")
    return text


def _choice(options: tuple[str, ...]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in options:
            raise ValueError(f"must be one of {', '.join(options)}")
        return text

    return parse


ALL = frozenset(COMMANDS) - {"worker"}  # every command that mines in this process
MINERS = frozenset({"serve", "devnet", "connect"})  # commands that start the miner runtime
LOCAL = frozenset({"mine", "bench"})  # commands that mine in this process, without the service
CONNECT = frozenset({"connect"})
CLUSTER = frozenset({"serve", "connect", "devnet", "bench", "worker"})  # commands that talk to a Dask scheduler


@attrs.frozen
class Setting:
    """One row of the settings table: the config field, its flag and env twin, parser, help, commands."""

    name: str  # ServiceConfig field
    flag: str
    env: str
    parse: Callable[[str], object]
    help: str
    commands: frozenset[str] = frozenset({"serve"})
    aliases: tuple[str, ...] = ()


SETTINGS = (
    Setting("host", "--host", "MINER_HOST", str,
            "address to bind (0.0.0.0 for a node on another host; connect: the metrics port's)",
            frozenset({"serve", "connect"})),
    Setting("port", "--port", "MINER_PORT", _port, "API port (0: any free port)"),
    Setting("cores", "--cores", "MINER_CORES", _cores,
            "worker threads (default: all usable CPUs); with a GPU engine: CPU threads mining beside the GPUs "
            "(default 0: GPUs only)", ALL, ("--num-cores",)),
    Setting("engine", "--engine", "MINER_ENGINE", _choice(ENGINE_NAMES),
            "mining engine (default cpu-fast; connect: cpu-fast-v2)", ALL | {"worker"}),
    Setting("progress_chunk_ms", "--progress-chunk-ms", "MINER_PROGRESS_CHUNK_MS", _positive_int,
            "target milliseconds between a worker's progress reports (bench: with --cluster)", MINERS | {"bench"}),
    Setting("metrics_port", "--metrics-port", "MINER_METRICS_PORT", _port,
            "Prometheus /metrics port (serve, connect default: none; devnet default: any free port)", MINERS),
    Setting("job_retention_s", "--job-retention-s", "MINER_JOB_RETENTION_S", _retention,
            f"seconds a finished job stays queryable after it ended (at least {MIN_JOB_RETENTION_S:g})"),
    Setting("log_level", "--log-level", "MINER_LOG_LEVEL", _choice(LOG_LEVELS),
            "log level (serve, connect default: info; devnet default: warning)", MINERS | {"worker"}),
    Setting("rate_ema_alpha", "--rate-ema-alpha", "MINER_RATE_EMA_ALPHA", _alpha, "EMA smoothing of worker rates"),
    Setting("max_jobs", "--max-jobs", "MINER_MAX_JOBS", _positive_int, "most jobs running at once"),
    Setting("worker_nice", "--worker-nice", "MINER_WORKER_NICE", _nice,
            "nice value of mining threads, 0-19 (higher: faster API under load, a little less hash rate)"),
    Setting("log_speed_s", "--log-speed-s", "MINER_LOG_SPEED_S", _non_negative_float,
            "seconds between speed lines (hash rate over 10 s / 60 s / 15 min; 0: none)", MINERS),
    Setting("progress_log_s", "--progress-log-s", "MINER_PROGRESS_LOG_S", _positive_float,
            "seconds between progress lines when stderr is not a terminal", LOCAL),
    # names match the upstream miner's MINER_NODE_ADDR, --auth-token-file and --tls-cert-sha256-file
    Setting("node_addr", "--node-addr", "MINER_NODE_ADDR", _node_addr,
            "the node's miner QUIC address HOST:PORT (its --miner-listen-port)", CONNECT),
    Setting("auth_token_file", "--auth-token-file", "MINER_AUTH_TOKEN_FILE", str,
            "the node's miner-auth-token file", CONNECT),
    Setting("tls_cert_sha256_file", "--tls-cert-sha256-file", "MINER_TLS_CERT_SHA256_FILE", str,
            "the node's miner-tls-cert-sha256 file: the pinned certificate hash", CONNECT),
    Setting("kernel", "--kernel", "MINER_KERNEL", _choice(KERNEL_NAMES), "cpu-fast / cpu-fast-v2 kernel (default auto)", ALL | {"worker"}),
    Setting("max_connections", "--max-connections", "MINER_MAX_CONNECTIONS", _connections,
            "most open connections on the API port; at the cap the quietest one is closed (default 512)"),
    Setting("idle_timeout_s", "--idle-timeout-s", "MINER_IDLE_TIMEOUT_S", _timeout,
            "seconds an HTTP connection may stay silent before it is closed (default 5)"),
    Setting("cluster", "--cluster", "MINER_CLUSTER", scheduler_address,
            "mine on the Dask cluster of this scheduler, tcp://HOST:8786 or tls:// (default: this machine's threads)",
            CLUSTER),
    Setting("cluster_timeout_s", "--cluster-timeout-s", "MINER_CLUSTER_TIMEOUT_S", _positive_float,
            "seconds to wait for the Dask scheduler when connecting (default 5)", CLUSTER),
    Setting("nthreads", "--nthreads", "MINER_WORKER_NTHREADS", _positive_int,
            "mining threads of this worker (default: all usable CPUs)", frozenset({"worker"})),
    Setting("gpu_devices", "--gpu-devices", "MINER_GPU_DEVICES", _gpu_devices,
            "GPU engines: CUDA devices to mine on, N or all (default all); each is one executor slot, beside "
            "the CPU threads of an explicit --cores N", ALL | {"worker"}),
    Setting("worker_name", "--name", "MINER_WORKER_NAME", _name,
            "this worker's name in Dask and in the miner's metrics (default: its address)", frozenset({"worker"})),
)
REQUIRED: dict[str, tuple[str, ...]] = {"connect": ("node_addr", "auth_token_file", "tls_cert_sha256_file")}

# Defaults that differ by command: the devnet's miner takes any free ports and logs quietly.
COMMAND_DEFAULTS: dict[str, dict[str, object]] = {
    "devnet": {"port": 0, "metrics_port": 0, "log_level": "warning"},
    "connect": {"engine": "cpu-fast-v2"},
}
# The proofs of work a command can mine: the HTTP service is the v1 node's, connect the v2 node's.
POWS_OF_COMMAND = {"serve": (Pow.V1,), "connect": (Pow.V2,), "mine": tuple(Pow), "bench": tuple(Pow),
                   "devnet": tuple(Pow)}


class ConfigError(ValueError):
    """A bad setting; the message names the flag or variable at fault."""

    pass


def settings_for(command: str) -> tuple[Setting, ...]:
    """The settings `command` takes, in table order."""
    return tuple(s for s in SETTINGS if command in s.commands)


def resolve(flags: Mapping[str, object], env: Mapping[str, str] | None = None,
            command: str = "serve") -> ServiceConfig:
    """Flag beats env beats default; raise ConfigError naming the flag or env var at fault."""
    env = os.environ if env is None else env
    values = dict(COMMAND_DEFAULTS.get(command, {}))
    sources: dict[str, str] = {}
    for s in settings_for(command):
        raw, source = flags.get(s.name), s.flag
        if raw is None and env.get(s.env, "") != "":
            raw, source = env[s.env], s.env
        if raw is None:
            continue
        try:
            values[s.name] = s.parse(str(raw))
            sources[s.name] = f"{source}={raw!r}"
        except ValueError as exc:
            detail = str(exc) if str(exc).startswith("must") else "has the wrong format"
            raise ConfigError(f"{source}={raw!r} {detail}") from None
    for name in REQUIRED.get(command, ()):
        if values.get(name) is None:
            s = next(s for s in SETTINGS if s.name == name)
            raise ConfigError(f"{s.flag} (or {s.env}) is required")
    if "cores" in values and values.get("engine", "cpu-fast") in GPU_ENGINES:
        # a GPU engine's slots are its devices; an explicit --cores adds that many CPU threads beside them
        values["cpu_threads"] = values.pop("cores")
    elif values.get("cores") == 0:
        raise ConfigError(f"{sources['cores']} must be a positive integer (0, GPUs only, needs a GPU engine)")
    config = ServiceConfig(**values)
    check_pow(config.engine, POWS_OF_COMMAND.get(command, tuple(Pow)), command)
    return config


def check_pow(engine: str, pows: tuple[Pow, ...], what: str) -> None:
    """Refuse an engine whose proof of work `what` (a command) cannot use.

    >>> check_pow("cpu-fast-v2", (Pow.V1,), "serve")
    Traceback (most recent call last):
    quantus_miner.core.config.ConfigError: --engine=cpu-fast-v2 mines QPoW v2 (QUIC node protocol, chain v0.10.0+); serve needs a QPoW v1 engine: cpu-fast, cpu-baseline, gpu-cuda
    """
    pow_ = POW_OF_ENGINE[engine]
    if pow_ not in pows:
        fitting = ", ".join(e for e, p in POW_OF_ENGINE.items() if p in pows)
        raise ConfigError(f"--engine={engine} mines {POW_NAMES[pow_]}; {what} needs a QPoW "
                          f"{'/'.join(pows)} engine: {fitting}")
