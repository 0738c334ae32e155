"""``shopsync identity``: resolve customer records into contacts from a file.

``shopsync identity resolve INPUT OUTPUT`` reads records (CSV or Parquet, by extension)
with ``record_id`` and any of the identity columns, writes ``record_id, contact_id`` in
the format OUTPUT's extension names, and prints the run's outcome counts.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    import polars as pl

FORMATS: dict[str, str] = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


def _format(path: Path, role: str) -> str:
    """The file format for ``path`` from its extension, or a usage error naming the accepted ones."""
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise click.UsageError(
            f"{role} file {path.name!r} has an unknown extension {path.suffix or '(none)'!r}; "
            "use .csv or .parquet."
        )
    return fmt


@click.group(name="identity")
def command() -> None:
    """Identity resolution: which records are the same person."""


@command.command(name="resolve")
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
@click.argument("output_path", metavar="OUTPUT", type=click.Path(path_type=Path))
@click.option(
    "--previous",
    type=click.Path(path_type=Path),
    default=None,
    help="Last run's output (record_id, contact_id, optionally shop/record_type) whose ids to keep.",
)
@click.option("--region", default="US", show_default=True, help="Default phone region (ISO country code).")
def resolve_command(input_path: Path, output_path: Path, previous: Path | None, region: str) -> None:
    """Resolve the records in INPUT into contacts and write record_id, contact_id to OUTPUT."""
    in_fmt = _format(input_path, "Input")
    out_fmt = _format(output_path, "Output")
    if not input_path.is_file():
        raise click.UsageError(f"Input file {str(input_path)!r} does not exist; check the path.")
    # imported here so that usage errors above answer at once
    import polars as pl

    from transforms.identity import LinkageSettings, resolve
    from transforms.identity.normalise import INPUT_COLUMNS

    records = _read(input_path, in_fmt)
    if "record_id" not in records.columns:
        raise click.UsageError(
            f"Input file {input_path.name!r} has no record_id column; add one (a unique id per record). "
            f"Columns found: {', '.join(records.columns) or '(none)'}."
        )
    known = [c for c in records.columns if c in INPUT_COLUMNS]
    ignored = [c for c in records.columns if c not in INPUT_COLUMNS]
    if ignored:
        click.echo(f"Ignoring columns: {', '.join(ignored)}", err=True)
    prev = None
    if previous is not None:
        if not previous.is_file():
            raise click.UsageError(f"Previous mapping {str(previous)!r} does not exist; check the path.")
        prev = _read(previous, _format(previous, "Previous"))
        if not {"record_id", "contact_id"} <= set(prev.columns):
            raise click.UsageError("The previous mapping needs record_id and contact_id columns.")
    try:
        result = resolve(
            records.select(known), previous=prev, settings=LinkageSettings(default_region=region.upper())
        )
    except ValueError as exc:
        raise click.ClickException(f"{exc}. Fix the input file and run again.") from None
    out = result.contact_identities
    # keep the caller's record_id values (and type) and add the shop/record type only if given
    cols = [c for c in ("shop", "record_type") if c in records.columns]
    out = out.select(*cols, "record_id", "contact_id")
    if records.schema["record_id"] != pl.String:
        out = out.with_columns(pl.col("record_id").cast(records.schema["record_id"]))
    output_path.parent.mkdir(parents=True, exist_ok=True)
    if out_fmt == "csv":
        out.write_csv(output_path)
    else:
        out.write_parquet(output_path)
    counts = dict(zip(result.outcomes["outcome"], result.outcomes["count"], strict=True))
    click.echo(f"Resolved {counts['records']} records into {counts['contacts']} contacts -> {output_path}")
    for name, value in counts.items():
        if name not in ("records", "contacts"):
            click.echo(f"  {name}: {value}")


def _read(path: Path, fmt: str) -> pl.DataFrame:
    """Read a CSV (all columns as text, so ids and zips keep leading zeros) or Parquet file."""
    import polars as pl

    try:
        if fmt == "csv":
            return pl.read_csv(path, infer_schema=False)
        return pl.read_parquet(path)
    except (pl.exceptions.ComputeError, OSError) as exc:
        raise click.ClickException(f"Could not read {path.name!r} as {fmt.upper()}: {exc}") from None
