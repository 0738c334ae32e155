"""``shopsync identity resolve`` end to end, as a user runs it (a subprocess)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[2]
SHOPSYNC = (
    [sys.executable, "-m", "orchestration.cli"]
    if not (ROOT / ".venv/bin/shopsync").exists()
    else [str(ROOT / ".venv/bin/shopsync")]
)

RECORDS = """record_id,first_name,last_name,email,phone,address1,zip,country,loyalty_tier
1,Bob,Smith,bob.smith@gmail.com,,1 Main Street,02110,US,gold
2,Robert,Smith,B.O.B.Smith+x@googlemail.com,,1 Main St,02110,US,
3,Jane,Smith,,(617) 555-0100,1 Main St,02110,US,
4,Jane,Smith,,+16175550100,,,US,
5,Ann,Other,ann@example.com,,9 Elm Rd,90210,US,
"""


def _run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SHOPSYNC, "identity", "resolve", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )


def test_resolve_csv_to_csv_and_parquet(tmp_path: Path) -> None:
    source = tmp_path / "records.csv"
    source.write_text(RECORDS)
    out = tmp_path / "contacts.csv"
    run = _run(source, out)
    assert run.returncode == 0, run.stderr
    assert "Resolved 5 records into 3 contacts" in run.stdout
    assert "email_match: 2" in run.stdout and "phone_match: 2" in run.stdout
    assert "loyalty_tier" in run.stderr  # unknown columns are named, not fatal
    mapping = pl.read_csv(out, infer_schema=False)
    assert mapping.columns == ["record_id", "contact_id"]
    contact = dict(zip(mapping["record_id"], mapping["contact_id"], strict=True))
    assert contact["1"] == contact["2"] and contact["3"] == contact["4"] and contact["1"] != contact["3"]

    # Parquet in and out, with the first run as the previous mapping: ids are kept
    pl.read_csv(source, infer_schema=False).write_parquet(tmp_path / "records.parquet")
    run2 = _run(tmp_path / "records.parquet", tmp_path / "contacts.parquet", "--previous", out)
    assert run2.returncode == 0, run2.stderr
    assert "new_contacts: 0" in run2.stdout
    again = pl.read_parquet(tmp_path / "contacts.parquet")
    assert dict(zip(again["record_id"], again["contact_id"], strict=True)) == contact


def test_resolve_with_names_and_addresses_only(tmp_path: Path) -> None:
    source = tmp_path / "people.csv"
    source.write_text(
        "record_id,first_name,last_name,address1,zip\n"
        "a1,Bob,Smith,1 Main Street,02110\n"
        "a2,Robert,Smith,1 Main St.,02110\n"
        "a3,Jane,Smith,1 Main St,02110\n"
    )
    run = _run(source, tmp_path / "out.parquet")
    assert run.returncode == 0, run.stderr
    assert "Resolved 3 records into 2 contacts" in run.stdout
    assert "probabilistic_match: 2" in run.stdout


def test_resolve_errors_are_clear(tmp_path: Path) -> None:
    missing = _run(tmp_path / "nope.csv", tmp_path / "out.csv")
    assert missing.returncode == 2
    assert "does not exist" in missing.stderr and "Traceback" not in missing.stderr

    no_id = tmp_path / "no_id.csv"
    no_id.write_text("first_name,last_name\nBob,Smith\n")
    run = _run(no_id, tmp_path / "out.csv")
    assert run.returncode == 2
    assert "no record_id column" in run.stderr and "Traceback" not in run.stderr

    good = tmp_path / "good.csv"
    good.write_text("record_id\n1\n")
    bad_out = _run(good, tmp_path / "out.xlsx")
    assert bad_out.returncode == 2
    assert "unknown extension '.xlsx'" in bad_out.stderr and "use .csv or .parquet" in bad_out.stderr
    bad_in = tmp_path / "records.json"
    bad_in.write_text("{}")
    assert "unknown extension '.json'" in _run(bad_in, tmp_path / "out.csv").stderr

    blank_id = tmp_path / "blank_id.csv"
    blank_id.write_text("record_id,first_name\n1,Ann\n,Bob\n")
    run = _run(blank_id, tmp_path / "out.csv")
    assert run.returncode == 1
    assert "1 records have no record_id" in run.stderr and "Traceback" not in run.stderr

    broken = tmp_path / "broken.parquet"
    broken.write_text("not parquet")
    run = _run(broken, tmp_path / "out.csv")
    assert run.returncode == 1
    assert "Could not read 'broken.parquet' as PARQUET" in run.stderr and "Traceback" not in run.stderr


def test_output_is_exactly_record_id_contact_id_unless_details_are_asked_for(tmp_path: Path) -> None:
    source = tmp_path / "records.csv"
    source.write_text(
        "shop,record_type,record_id,first_name,last_name,email\n"
        "a,customer,1,Bob,Smith,bob@example.com\n"
        "b,customer,1,Robert,Smith,bob@example.com\n"
        "b,order,7,Ann,Lee,ann@example.com\n"
    )
    plain = _run(source, tmp_path / "plain.csv")
    assert plain.returncode == 0, plain.stderr
    assert pl.read_csv(tmp_path / "plain.csv").columns == ["record_id", "contact_id"]
    assert "repeat across shop and record_type; add --details" in plain.stderr
    detailed = _run(source, tmp_path / "detailed.parquet", "--details")
    assert detailed.returncode == 0, detailed.stderr
    out = pl.read_parquet(tmp_path / "detailed.parquet")
    assert out.columns == ["shop", "record_type", "record_id", "contact_id", "rule", "score"]
    assert out.filter(pl.col("record_id") == "1")["rule"].to_list() == ["email", "email"]


def test_a_repeated_record_id_is_an_error_not_a_silent_drop(tmp_path: Path) -> None:
    source = tmp_path / "records.csv"
    source.write_text("record_id,first_name\n1,Ann\n2,Bob\n1,Cara\n3,Dan\n3,Eve\n3,Finn\n")
    out = tmp_path / "out.csv"
    run = _run(source, out)
    assert run.returncode == 2
    assert "gives the same record_id more than once: 1 (2 times), 3 (3 times)" in run.stderr
    assert "Traceback" not in run.stderr and not out.exists()
