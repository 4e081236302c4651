"""Subcommands of this area (being written)."""


def register(subparsers) -> None:
    """Add this area's subcommands to the ``mmtlab`` parser."""
