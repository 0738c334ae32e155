"""``shopsync clv fit`` end to end, as a subprocess of the installed console script."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from orchestration.cli import cli

REPO = Path(__file__).parents[2]
CDNOW = REPO / "tests" / "data" / "cdnow_sample.csv"
SHOPSYNC = Path(sys.executable).parent / "shopsync"


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SHOPSYNC), "clv", "fit", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )


def test_fit_cdnow_json_and_predictions(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "predictions.csv"
    result = run(CDNOW, "--json", "--observation-end", "1997-09-30", "--time-unit", "week", "--output", out)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    p = report["parameters"]
    assert set(p) == {"r", "alpha", "a", "b", "p", "q", "v"}
    published = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426, "p": 6.25, "q": 3.74, "v": 15.44}
    for name, value in published.items():
        assert f"{p[name]:.3g}" == f"{value:.3g}", name
    assert report["customers"] == 2357
    assert report["repeat_customers"] == 946
    assert report["log_likelihood"] == pytest.approx(-9582.4, abs=0.05)
    assert report["observation_end"] == "1997-09-30" and report["time_unit"] == "week"
    predictions = pl.read_csv(out, schema_overrides={"customer_id": pl.String})
    assert predictions.height == 2357
    assert {"expected_purchases_12m", "p_alive", "predicted_average_value", "clv_12m"} <= set(
        predictions.columns
    )
    assert predictions["clv_12m"].sum() == pytest.approx(report["totals"]["clv_12m"], rel=1e-6)


def test_readable_summary_and_default_observation_end(tmp_path: Path) -> None:
    # yyyymmdd dates (the raw CDNOW convention) are read too; the end defaults to the last day
    rows = ["customer_id,date,amount"]
    raw = pl.read_csv(CDNOW, schema_overrides={"date": pl.Date}).filter(
        pl.col("date") <= pl.date(1997, 9, 30)
    )
    rows += [f"{c},{d.strftime('%Y%m%d')},{a}" for c, d, a in raw.iter_rows()]
    compact = tmp_path / "cdnow_compact.csv"
    compact.write_text("\n".join(rows) + "\n")
    result = run(compact, "--time-unit", "day")
    assert result.returncode == 0, result.stderr
    assert "Fitted on 2,357 customers (946 repeat buyers)" in result.stdout
    assert "up to 1997-09-30; time unit: day" in result.stdout
    assert "r=0.2426" in result.stdout and "alpha=30.9" in result.stdout  # 4.414 weeks × 7
    # without --output the predictions land next to the input, and the summary says where
    beside = tmp_path / "cdnow_compact.clv.csv"
    assert f"Predictions for 2,357 customers written to {beside}." in result.stdout
    assert pl.read_csv(beside).height == 2357


def test_no_output_writes_nothing_and_both_flags_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "transactions.csv"
    path.write_text(CDNOW.read_text())
    quiet = CliRunner().invoke(cli, ["clv", "fit", str(path), "--json", "--no-output"])
    assert quiet.exit_code == 0, quiet.output
    assert json.loads(quiet.stdout)["output"] is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["transactions.csv"]
    both = CliRunner().invoke(
        cli, ["clv", "fit", str(path), "--output", str(tmp_path / "x.csv"), "--no-output"]
    )
    assert both.exit_code == 2 and "either --output or --no-output" in both.stderr


@pytest.mark.parametrize(
    ("content", "code", "message"),
    [
        (None, 2, "Transactions file not found"),
        ("customer_id,date,amount\n1,2026-01-01,3\n2,2026-01-02,4\n3,2026-01-03,5\n", 1, "No repeat buyers"),
    ],
)
def test_errors_are_clear_and_have_no_traceback(
    tmp_path: Path, content: str | None, code: int, message: str
) -> None:
    path = tmp_path / "transactions.csv"
    if content is not None:
        path.write_text(content)
    result = run(path, "--json")
    assert result.returncode == code, result.stderr
    assert message in result.stderr
    assert result.stderr.startswith("Error: ")
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


# The remaining input checks run in-process (same click command) to keep the suite fast.
@pytest.mark.parametrize(
    ("content", "args", "message"),
    [
        (
            "customer,day,value\n1,2026-01-01,3\n",
            (),
            "needs customer_id,date,amount (missing: customer_id, date, amount)",
        ),
        ("customer_id,date,amount\n", (), "has no transactions"),
        (
            "customer_id,date,amount\n1,2026-01-01,3\n1,01/02/2026,4\n",
            (),
            "line 3: date '01/02/2026' is not a date",
        ),
        (
            "customer_id,date,amount\n1,2026-01-01,3\n1,2026-01-02,abc\n",
            (),
            "line 3: amount 'abc' is not a number",
        ),
        ("customer_id,date,amount\n1,2026-01-01,inf\n", (), "line 2: amount 'inf' is not a number"),
        ("customer_id,date,amount\n,2026-01-01,3\n", (), "line 2: customer_id"),
        (
            "customer_id,date,amount\n1,2026-01-01,3\n",
            ("--observation-end", "1990-01-01"),
            "No transactions on or before the observation end 1990-01-01",
        ),
    ],
)
def test_invalid_input_messages(tmp_path: Path, content: str, args: tuple[str, ...], message: str) -> None:
    path = tmp_path / "transactions.csv"
    path.write_text(content)
    result = CliRunner().invoke(cli, ["clv", "fit", str(path), "--json", *args])
    assert result.exit_code == 2, result.output
    assert "Error: " in result.stderr and message in result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.stdout == ""
