"""`quantus-miner devnet` (arrives with the node simulator)."""


def add_args(p) -> None:
    pass


def run(args, parser) -> int:
    parser.error("devnet is not implemented yet")
    return 2
