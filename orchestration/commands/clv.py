"""``shopsync clv fit``: fit BG/NBD + Gamma-Gamma on a transaction CSV and predict CLV.

The command reads and writes the files; the modelling is ``transforms.clv``.
"""

from __future__ import annotations

import json
import math
from datetime import date
from pathlib import Path
from typing import Any, NoReturn

import click
import polars as pl

# Exit codes: 1 = the fit failed, 2 = the input was invalid (click's usage code too).
EXIT_FAILED = 1
EXIT_INVALID = 2

TRANSACTION_COLUMNS = ("customer_id", "date", "amount")


class TransactionsFileError(ValueError):
    """The transactions CSV cannot be read as ``customer_id,date,amount``."""


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"Error: {message}", err=True)
    raise SystemExit(code)


def _parse_dates(values: pl.Series) -> pl.Series:
    """ISO dates (``1997-01-18``, optionally with a time after them) or ``yyyymmdd`` (``19970118``)."""
    text = values.str.strip_chars()
    iso = text.str.slice(0, 10).str.to_date("%Y-%m-%d", strict=False)
    compact = text.str.to_date("%Y%m%d", strict=False)
    return iso.fill_null(compact).alias("date")


def read_transactions_csv(path: Path) -> pl.DataFrame:
    """Read a ``customer_id,date,amount`` CSV into ``transforms.clv.TRANSACTIONS_SCHEMA``.

    Raises ``TransactionsFileError`` with a message naming the file and the problem.
    """
    if not path.is_file():
        raise TransactionsFileError(
            f"Transactions file not found: {path}. Give the path of a CSV with the columns "
            "customer_id,date,amount."
        )
    try:
        raw = pl.read_csv(path, infer_schema=False)
    except (pl.exceptions.PolarsError, OSError, UnicodeDecodeError) as exc:
        raise TransactionsFileError(f"Cannot read {path} as CSV ({exc}).") from exc
    columns = [c.strip().lower() for c in raw.columns]
    raw.columns = columns
    missing = [c for c in TRANSACTION_COLUMNS if c not in columns]
    if missing:
        raise TransactionsFileError(
            f"{path} has the columns {', '.join(columns) or '(none)'}; it needs customer_id,date,amount "
            f"(missing: {', '.join(missing)})."
        )
    if raw.height == 0:
        raise TransactionsFileError(f"{path} has no transactions.")
    amount = pl.col("amount").str.strip_chars().cast(pl.Float64, strict=False)
    frame = raw.select(
        pl.col("customer_id").str.strip_chars().replace("", None),
        _parse_dates(raw["date"]),
        pl.when(amount.is_finite()).then(amount).alias("amount"),
    )
    for column, expected in (
        ("customer_id", "an id"),
        ("date", "a date like 1997-01-18"),
        ("amount", "a number"),
    ):
        bad = frame.with_row_index("_line", offset=2).filter(pl.col(column).is_null())
        if bad.height:
            line = int(bad["_line"][0])
            value = raw[column][line - 2]
            raise TransactionsFileError(
                f"{path} line {line}: {column} {value!r} is not {expected} ({bad.height} such row(s))."
            )
    return frame


def _round(value: float, digits: int = 6) -> float | None:
    return None if not math.isfinite(value) else round(value, digits)


def default_output(transactions: Path) -> Path:
    """Where predictions go without ``--output``: ``<stem>.clv.csv`` beside the transactions."""
    return transactions.with_name(f"{transactions.stem}.clv.csv")


@click.group(name="clv")
def command() -> None:
    """Predict customer lifetime value (BG/NBD + Gamma-Gamma)."""


@command.command("fit")
@click.argument("transactions", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the fit as JSON.")
@click.option(
    "--observation-end",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    default=None,
    help="Last day of the observation period (YYYY-MM-DD, inclusive). Default: the last transaction's day.",
)
@click.option(
    "--time-unit",
    type=click.Choice(["day", "week"]),
    default="week",
    show_default=True,
    help="Unit of recency and T (the parameters r and alpha are per this unit).",
)
@click.option(
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Where to write the per-customer predictions (CSV). Default: next to TRANSACTIONS, "
    "named <TRANSACTIONS name>.clv.csv (transactions.csv -> transactions.clv.csv).",
)
@click.option("--no-output", is_flag=True, help="Print the fit only; write no predictions file.")
@click.option(
    "--horizon-months",
    type=click.IntRange(1, 120),
    default=12,
    show_default=True,
    help="Months ahead that expected purchases and CLV cover.",
)
@click.option(
    "--discount-rate",
    type=click.FloatRange(0.0, 1.0, max_open=True),
    default=0.01,
    show_default=True,
    help="Monthly discount rate for CLV.",
)
def fit(
    transactions: Path,
    as_json: bool,
    observation_end: Any,
    time_unit: str,
    output: Path | None,
    no_output: bool,
    horizon_months: int,
    discount_rate: float,
) -> None:
    """Fit the CLV models on TRANSACTIONS (CSV: customer_id,date,amount) and predict per customer.

    The predictions (customer_id, expected purchases, p_alive, predicted average value,
    CLV) are written to TRANSACTIONS' folder as <name>.clv.csv unless --output says
    elsewhere or --no-output.
    """
    if output is not None and no_output:
        _fail("Give either --output or --no-output, not both.", EXIT_INVALID)
    if output is None and not no_output:
        output = default_output(transactions)
    try:
        frame = read_transactions_csv(transactions)
    except TransactionsFileError as exc:
        _fail(str(exc), EXIT_INVALID)
    end: date = observation_end.date() if observation_end is not None else frame["date"].max()  # type: ignore[assignment]
    used = frame.filter(pl.col("date") <= end)
    if used.height == 0:
        _fail(f"No transactions on or before the observation end {end.isoformat()}.", EXIT_INVALID)
    # Imported after the input checks: scipy is slow to import and bad input should fail fast.
    from transforms.clv import ClvFitError, fit_and_predict_clv
    from transforms.settings import TIME_UNIT_DAYS

    try:
        result = fit_and_predict_clv(used, end, TIME_UNIT_DAYS[time_unit], horizon_months, discount_rate)
    except ClvFitError as exc:
        _fail(str(exc), EXIT_FAILED)

    predictions = result.predictions.sort("customer_id")
    purchases_col = f"expected_purchases_{horizon_months}m"
    clv_col = f"clv_{horizon_months}m"
    if output is not None:
        try:
            output.parent.mkdir(parents=True, exist_ok=True)
            predictions.write_csv(output, float_precision=6)
        except OSError as exc:
            _fail(f"Cannot write the predictions to {output} ({exc.strerror or exc}).", EXIT_FAILED)

    bg, gg = result.bg_nbd, result.gamma_gamma
    report: dict[str, Any] = {
        "parameters": {
            "r": bg.params.r,
            "alpha": bg.params.alpha,
            "a": bg.params.a,
            "b": bg.params.b,
            "p": gg.params.p,
            "q": gg.params.q,
            "v": gg.params.v,
        },
        "customers": bg.customers,
        "repeat_customers": gg.customers,
        "transactions": used.height,
        "log_likelihood": bg.log_likelihood,
        "gamma_gamma_log_likelihood": gg.log_likelihood,
        "converged": bg.converged and gg.converged,
        "observation_end": end.isoformat(),
        "time_unit": time_unit,
        "horizon_months": horizon_months,
        "monthly_discount_rate": discount_rate,
        "totals": {
            purchases_col: _round(float(predictions[purchases_col].sum())),
            clv_col: _round(float(predictions[clv_col].sum())),
        },
        "output": str(output) if output is not None else None,
    }
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    p = report["parameters"]
    click.echo(
        f"Fitted on {bg.customers:,} customers ({gg.customers:,} repeat buyers), "
        f"{used.height:,} transactions up to {end.isoformat()}; time unit: {time_unit}."
    )
    click.echo(
        f"BG/NBD       r={p['r']:.4g}  alpha={p['alpha']:.4g}  a={p['a']:.4g}  b={p['b']:.4g}  "
        f"(log-likelihood {bg.log_likelihood:,.2f})"
    )
    click.echo(
        f"Gamma-Gamma  p={p['p']:.4g}  q={p['q']:.4g}  v={p['v']:.4g}  "
        f"(log-likelihood {gg.log_likelihood:,.2f})"
    )
    click.echo(
        f"Next {horizon_months} months: {report['totals'][purchases_col]:,.1f} expected purchases, "
        f"CLV {report['totals'][clv_col]:,.2f} in total "
        f"(mean {float(predictions[clv_col].mean()):,.2f} per customer, {discount_rate:.2%} monthly discount)."
    )
    if output is not None:
        click.echo(f"Predictions for {predictions.height:,} customers written to {output}.")
