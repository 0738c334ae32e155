"""Subcommands of the ``shopsync`` CLI, one module per command group.

Each module exposes a click command or group named ``command``; ``orchestration.cli``
imports them lazily so ``shopsync --help`` stays fast and a broken group cannot take the
others down.
"""
