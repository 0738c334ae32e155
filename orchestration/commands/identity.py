"""``shopsync identity``: resolve customer records into contacts from a file.

``shopsync identity resolve INPUT OUTPUT`` reads records (CSV or Parquet, by extension)
with ``record_id`` and any of the identity columns, writes exactly ``record_id,
contact_id`` (``--details`` adds the shop, record type, rule and score) in the format
OUTPUT's extension names, and prints the run's outcome counts. A record_id given twice is
an error, never a silent drop.
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
@click.option(
    "--details",
    is_flag=True,
    help="Also write shop and record_type (when INPUT has them), the rule that linked each record "
    "(email, phone, probabilistic, unique) and its score.",
)
def resolve_command(
    input_path: Path, output_path: Path, previous: Path | None, region: str, details: bool
) -> None:
    """Resolve the records in INPUT into contacts and write record_id, contact_id to OUTPUT.

    INPUT (.csv or .parquet) needs a record_id column, unique per record (per shop and
    record_type when it has those columns), and any of: first_name, last_name, email,
    phone, address1, address2, city, province, zip, country, source.
    """
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
    _refuse_duplicate_ids(records, input_path)
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
    # keep the caller's record_id values (and type); the rest only when asked for
    keys = [c for c in ("shop", "record_type") if c in records.columns]
    out = (
        out.select(*keys, "record_id", "contact_id", "rule", "score")
        if details
        else out.select("record_id", "contact_id")
    )
    if not details and keys and records["record_id"].is_duplicated().any():
        click.echo(
            f"Note: some record_id values repeat across {' and '.join(keys)}; add --details to tell them apart.",
            err=True,
        )
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


def _refuse_duplicate_ids(records: pl.DataFrame, path: Path) -> None:
    """A usage error naming the record ids INPUT gives more than once (resolving would lose rows)."""
    import polars as pl

    keys = [c for c in ("shop", "record_type") if c in records.columns] + ["record_id"]
    repeated = (
        records.filter(pl.col("record_id").is_not_null())
        .group_by(keys)
        .len()
        .filter(pl.col("len") > 1)
        .sort(keys)
    )
    if repeated.height == 0:
        return
    shown = ", ".join(
        f"{row['record_id']!s} ({row['len']} times)" for row in repeated.head(5).iter_rows(named=True)
    )
    more = f" and {repeated.height - 5} more" if repeated.height > 5 else ""
    scope = f" within one {' and '.join(keys[:-1])}" if len(keys) > 1 else ""
    raise click.UsageError(
        f"Input file {path.name!r} gives the same record_id{scope} more than once: {shown}{more}. "
        "Every record needs its own record_id; fix or remove the repeated rows and run again."
    )


def _read(path: Path, fmt: str) -> pl.DataFrame:
    """Read a CSV (all columns as text, so ids and zips keep leading zeros) or Parquet file."""
    import polars as pl

    try:
        if fmt == "csv":
            return pl.read_csv(path, infer_schema=False)
        return pl.read_parquet(path)
    except (pl.exceptions.ComputeError, OSError) as exc:
        raise click.ClickException(f"Could not read {path.name!r} as {fmt.upper()}: {exc}") from None
