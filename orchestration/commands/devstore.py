"""``shopsync devstore``: run the local Shopify emulator, or write a generated world to files.

``shopsync devstore serve`` generates shops, prints ONE JSON line on stdout with the URL and
every shop's credentials (so scripts can read it), then serves until interrupted.
``shopsync devstore generate`` writes a world's bulk-export JSONL, ground truth and
engagement feed without serving, and prints one JSON line saying what it wrote.
"""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import click


@click.group(name="devstore")
def command() -> None:
    """The devstore: a local Shopify serving generated shops."""


def _world_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The options that say which world to generate (shared by serve and generate)."""
    for option in reversed(
        (
            click.option(
                "--stores", default=2, show_default=True, type=click.IntRange(1, 50), help="Number of shops."
            ),
            click.option(
                "--customers",
                default=1000,
                show_default=True,
                type=click.IntRange(1),
                help="Customers per shop.",
            ),
            click.option(
                "--seed", default=0, show_default=True, type=int, help="Seed of the generated world."
            ),
        )
    ):
        fn = option(fn)
    return fn


def _refuse_overwrite(tables: Any, out: Path, *, bulk: bool, option: str) -> None:
    from devstore.export import existing

    found = existing(tables, out, bulk=bulk)
    if found:
        names = ", ".join(str(p) for p in found[:3]) + (" …" if len(found) > 3 else "")
        click.echo(
            f"Error: {names} already exist{'s' if len(found) == 1 else ''}; nothing was written. "
            f"Choose an empty directory with {option}, or move those files away.",
            err=True,
        )
        sys.exit(1)


@command.command(name="serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option(
    "--port", default=8700, show_default=True, type=click.IntRange(0, 65535), help="Port (0 = any free port)."
)
@_world_options
@click.option(
    "--plan",
    type=click.Choice(["standard", "advanced", "plus"]),
    default=None,
    help="Shopify plan of every shop (sets the rate limit); default: the generator's mix.",
)
@click.option(
    "--token-ttl",
    type=click.IntRange(1),
    default=None,
    metavar="SECONDS",
    help="Lifetime of client-credentials tokens (default 86400, Shopify's 24 hours).",
)
@click.option(
    "--redirect-url",
    "redirect_urls",
    multiple=True,
    metavar="URL",
    help="An allowed OAuth redirection URL of the app (repeat for several); authorize refuses any other.",
)
@click.option(
    "--truth-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write the ground truth (truth.csv: person per record) and engagement.jsonl here.",
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
    token_ttl: int | None,
    redirect_urls: tuple[str, ...],
    truth_dir: Path | None,
    tls_cert: Path | None,
    tls_key: Path | None,
) -> None:
    """Generate shops and serve the Admin API for them until interrupted."""
    if (tls_cert is None) != (tls_key is None):
        raise click.UsageError("Give both --tls-cert and --tls-key for HTTPS, or neither.")
    from urllib.parse import urlsplit

    for url in redirect_urls:
        if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
            raise click.BadParameter(
                f"{url!r} is not an absolute http(s) URL, e.g. https://app.example/auth/callback.",
                param_hint="--redirect-url",
            )
    from devstore.generator import generate_world
    from devstore.server import serve, shop_credentials, world_from_tables

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
    tables = generate_world(stores=stores, customers=customers, seed=seed)
    announced: dict[str, Any] = {}
    if truth_dir is not None:
        from devstore.export import write_world_files

        _refuse_overwrite(tables, truth_dir, bulk=False, option="--truth-dir")
        written = write_world_files(tables, truth_dir, bulk=False)
        announced["files"] = {"truth": written["truth"]["path"], "engagement": written["engagement"]["path"]}
    world = world_from_tables(
        tables,
        seed=seed,
        plan=plan,
        token_ttl=timedelta(seconds=token_ttl) if token_ttl is not None else None,
        redirect_urls=redirect_urls,
    )
    del tables
    scheme = "https" if tls_cert else "http"
    url = f"{scheme}://{host}:{port}"
    click.echo(json.dumps({"url": url, "shops": shop_credentials(world, url), **announced}))
    sys.stdout.flush()
    serve(world, host, port, tls_cert=tls_cert, tls_key=tls_key)


@command.command(name="generate")
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory to write into (created if missing; existing files are never overwritten).",
)
@_world_options
@click.option(
    "--orders-per-customer",
    default=2.0,
    show_default=True,
    type=click.FloatRange(0, 100),
    help="Average orders per customer record.",
)
def generate_command(out: Path, stores: int, customers: int, seed: int, orders_per_customer: float) -> None:
    """Write a generated world to files, without serving it.

    Per shop a bulk-export JSONL of its customers and one of its orders with line items (the
    files Shopify's bulk operations return), plus truth.csv (the person behind every
    customer, order and checkout record) and engagement.jsonl (an email/SMS feed for
    ``shopsync engagement import``). The same seed gives the same files.
    """
    from devstore.export import write_world_files
    from devstore.generator import generate_world, person_summary

    tables = generate_world(
        stores=stores, customers=customers, seed=seed, orders_per_customer=orders_per_customer
    )
    _refuse_overwrite(tables, out, bulk=True, option="--out")
    written = write_world_files(tables, out, bulk=True)
    click.echo(json.dumps({"seed": seed, "persons": person_summary(tables), **written}))
