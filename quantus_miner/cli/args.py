"""Argument plumbing shared by the commands: the settings table as flags, and small value parsers."""

from __future__ import annotations

import argparse
import logging
import sys

from ..core.config import ConfigError, ServiceConfig, resolve, settings_for
from ..engines import engine_problem, kernel_problem


def positive_int(text: str) -> int:
    """argparse type: an integer > 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


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
    if problem := kernel_problem(config.engine, config.kernel):
        parser.error(f"--kernel/MINER_KERNEL={config.kernel!r}: {problem}")
    return config


def setup_logging(level: str) -> None:
    # on a terminal each record first erases the line it lands on: a live status line (devnet's)
    # would otherwise run into it
    """Log to stderr at `level`, one line per record."""
    clear = "\r\x1b[K" if sys.stderr.isatty() else ""
    logging.basicConfig(level=level.upper(), stream=sys.stderr,
                        format=clear + "%(asctime)s %(levelname)s %(name)s: %(message)s")
