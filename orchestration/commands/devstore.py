"""``shopsync devstore``: run the local Shopify emulator.

``shopsync devstore serve`` generates shops, prints ONE JSON line on stdout with the URL and
every shop's credentials (so scripts can read it), then serves until interrupted.
"""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import click


@click.group(name="devstore")
def command() -> None:
    """The devstore: a local Shopify serving generated shops."""


@command.command(name="serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option(
    "--port", default=8700, show_default=True, type=click.IntRange(0, 65535), help="Port (0 = any free port)."
)
@click.option("--stores", default=2, show_default=True, type=click.IntRange(1, 50), help="Number of shops.")
@click.option(
    "--customers", default=1000, show_default=True, type=click.IntRange(1), help="Customers per shop."
)
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the generated world.")
@click.option(
    "--plan",
    type=click.Choice(["standard", "advanced", "plus"]),
    default=None,
    help="Shopify plan of every shop (sets the rate limit); default: the generator's mix.",
)
@click.option(
    "--tls-cert",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="PEM certificate (HTTPS).",
)
@click.option(
    "--tls-key", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="PEM private key (HTTPS)."
)
def serve_command(
    host: str,
    port: int,
    stores: int,
    customers: int,
    seed: int,
    plan: str | None,
    tls_cert: Path | None,
    tls_key: Path | None,
) -> None:
    """Generate shops and serve the Admin API for them until interrupted."""
    if (tls_cert is None) != (tls_key is None):
        raise click.UsageError("Give both --tls-cert and --tls-key for HTTPS, or neither.")
    from devstore.server import create_world, serve, shop_credentials

    if port == 0:
        # pick the port now so the printed URL is the one served
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind((host, 0))
            port = probe.getsockname()[1]
    else:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError:
                click.echo(
                    f"Error: port {port} on {host} is already in use; choose another with --port.", err=True
                )
                sys.exit(1)
    world = create_world(stores=stores, customers=customers, seed=seed, plan=plan)
    scheme = "https" if tls_cert else "http"
    url = f"{scheme}://{host}:{port}"
    click.echo(json.dumps({"url": url, "shops": shop_credentials(world, url)}))
    sys.stdout.flush()
    serve(world, host, port, tls_cert=tls_cert, tls_key=tls_key)
