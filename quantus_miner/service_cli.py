"""`serve` and `devnet` commands (filled in by the service)."""

import argparse


def add_serve_args(p: argparse.ArgumentParser) -> None:
    pass


def add_devnet_args(p: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    parser.error(f"{args.command} is not implemented yet")
    return 2
