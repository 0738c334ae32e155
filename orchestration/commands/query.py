"""``shopsync query``: SQL against the analyst snapshot, read-only.

``shopsync query "SELECT * FROM marts.rfm_segments"`` runs one statement against
``data/snapshot/analyst.duckdb`` (or ``--snapshot PATH``) and prints the result as a table
(``--format csv|json`` for machines); ``shopsync query --list`` lists the views. The
snapshot is a copy the pipeline refreshes after each transform run, so a query never
blocks the pipeline and never sees a half-finished refresh.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import click

DEFAULT_SNAPSHOT = Path("data/snapshot/analyst.duckdb")


def _open(snapshot: Path) -> Any:
    import duckdb

    if not snapshot.is_file():
        raise click.ClickException(
            f"No analyst snapshot at {snapshot}. Materialise the intelligence assets "
            "(or run `shopsync demo`) first, or point --snapshot at one."
        )
    try:
        return duckdb.connect(str(snapshot), read_only=True)
    except duckdb.Error as exc:
        raise click.ClickException(f"Cannot open the snapshot {snapshot}: {exc}") from None


def _render(columns: list[str], rows: list[tuple[Any, ...]], fmt: str) -> str:
    if fmt == "json":
        return "\n".join(json.dumps(dict(zip(columns, r, strict=True)), default=str) for r in rows)
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(columns)
        writer.writerows(rows)
        return buffer.getvalue().rstrip("\n")
    cells = [[("" if v is None else str(v)) for v in row] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    lines.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(lines)


def project_snapshot(project: str | None) -> Path:
    """The snapshot file of a project (its warehouse's folder), from the control plane when there is one."""
    from orchestration.control import ControlSettings, StoreRegistry
    from orchestration.control.projects import ProjectPaths
    from pipelines.snapshot import DATABASE_NAME

    settings = ControlSettings(**({"project": project} if project else {}))
    if settings.control_url or (settings.data_dir / "control.db").exists():
        registry = StoreRegistry(settings)
        try:
            paths = registry.project_paths(settings.project)
        finally:
            registry.close()
    else:
        paths = ProjectPaths.resolve(settings.project, settings.data_dir)
    return paths.snapshot / DATABASE_NAME


@click.command(name="query")
@click.argument("sql", required=False)
@click.option(
    "--snapshot",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help=f"The analyst snapshot file to query (default: the project's, {DEFAULT_SNAPSHOT} for the default project).",
)
@click.option(
    "--project",
    default=None,
    help="Query this project's snapshot (default: $SHOPSYNC_PROJECT, else the default project).",
)
@click.option("--list", "list_views", is_flag=True, help="List the tables and marts you can query.")
@click.option(
    "--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True
)
@click.option("--limit", type=click.IntRange(1), default=1000, show_default=True, help="Most rows to print.")
def command(
    sql: str | None, snapshot: Path | None, project: str | None, list_views: bool, fmt: str, limit: int
) -> None:
    """Run SQL read-only against the analyst snapshot (DuckDB dialect)."""
    if snapshot is None:
        snapshot = project_snapshot(project)
    if not list_views and not sql:
        raise click.UsageError(
            'Give a SQL statement, e.g. shopsync query "SELECT * FROM marts.rfm_segments", or --list.'
        )
    import duckdb

    con = _open(snapshot)
    try:
        if list_views:
            rows = con.execute(
                "SELECT schema_name || '.' || view_name FROM duckdb_views() WHERE NOT internal ORDER BY 1"
            ).fetchall()
            click.echo("\n".join(r[0] for r in rows))
            return
        try:
            cursor = con.execute(sql)
            columns = [d[0] for d in cursor.description or []]
            rows = cursor.fetchmany(limit)
        except duckdb.Error as exc:
            # the snapshot is read-only: writes land here too, with DuckDB's own reason
            raise click.ClickException(f"Query failed: {exc}") from None
    finally:
        con.close()
    if columns:
        click.echo(_render(columns, rows, fmt))
