"""Argument plumbing shared by the commands: the settings table as flags, and small value parsers."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from typing import Any

from ..core.config import CPU_ENGINE_OF_GPU, ConfigError, ServiceConfig, resolve, settings_for
from ..engines import engine_problem, kernel_problem


def arg_type(kind: Callable[[str], Any], ok: Callable[[Any], bool], expected: str) -> Callable[[str], Any]:
    """An argparse type: `kind` of the text when it passes `ok`, else "expected <expected>, got '<text>'"."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not ok(value):  # NaN fails every comparison: refused too
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return parse


positive_int = arg_type(int, lambda v: v >= 1, "a positive integer")
positive_float = arg_type(float, lambda v: 0 < v < float("inf"), "a positive number")
port_number = arg_type(int, lambda v: 0 <= v <= 65535, "a port number 0-65535")


def add_settings(parser: argparse.ArgumentParser, command: str) -> None:
    """Add `command`'s settings from the table: flag, aliases, env twin in the help."""
    for s in settings_for(command):
        parser.add_argument(s.flag, *s.aliases, dest=s.name, default=None, metavar=s.env,
                            help=f"{s.help} (env {s.env})")


def resolve_settings(args: argparse.Namespace, parser: argparse.ArgumentParser, command: str) -> ServiceConfig:
    """The command's configuration (flag > env > default); a bad value exits 2 with the table's message."""
    try:
        config = resolve({s.name: getattr(args, s.name) for s in settings_for(command)}, command=command)
    except ConfigError as exc:
        parser.error(str(exc))
    if problem := engine_problem(config.engine, config.gpu_devices):
        parser.error(f"--engine={config.engine}: {problem}")
    # --kernel picks the kernel of the CPU threads beside a GPU engine's devices
    if problem := kernel_problem(CPU_ENGINE_OF_GPU[config.engine] if config.cpu_threads else config.engine,
                                 config.kernel):
        parser.error(f"--kernel/MINER_KERNEL={config.kernel!r}: {problem}")
    return config


def setup_logging(level: str) -> None:
    # on a terminal each record first erases the line it lands on: a live status line (devnet's)
    # would otherwise run into it
    """Log to stderr at `level`, one line per record."""
    clear = "\r\x1b[K" if sys.stderr.isatty() else ""
    logging.basicConfig(level=level.upper(), stream=sys.stderr,
                        format=clear + "%(asctime)s %(levelname)s %(name)s: %(message)s")
