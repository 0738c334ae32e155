"""The ``shopsync`` command line: store operations, the devstore, the demo and tools."""

from __future__ import annotations

import importlib
import sys

import click

# name shown to the user -> module under orchestration.commands exposing ``command``
COMMAND_MODULES: dict[str, str] = {
    "engagement": "engagement",
    "clv": "clv",
    "demo": "demo",
    "devstore": "devstore",
    "identity": "identity",
    "query": "query",
    "status": "status",
    "projects": "projects",
    "push": "push",
    "stores": "stores",
    "webhooks": "webhooks",
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported only when used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMAND_MODULES)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module_name = COMMAND_MODULES.get(cmd_name)
        if module_name is None:
            return None
        module = importlib.import_module(f"orchestration.commands.{module_name}")
        command: click.Command = module.command
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="shopsync")
def cli() -> None:
    """shopsync keeps Shopify stores and a customer warehouse in step, both ways."""
    from pipelines.logs import configure_logging

    configure_logging()


def main() -> None:
    """Console entry point."""
    sys.exit(cli.main(standalone_mode=True))
