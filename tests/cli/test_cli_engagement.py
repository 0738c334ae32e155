"""``shopsync engagement import`` as a user runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from orchestration.cli import main; main()", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_import_reports_counts_and_quarantine(tmp_path: Path) -> None:
    feed = tmp_path / "feed.jsonl"
    feed.write_text(
        '{"event_id":"x","occurred_at":"2026-01-01T00:00:00Z","type":"email_open","email":"a@b.co"}\nnope\n'
    )
    done = run("engagement", "import", str(feed), "--landing", str(tmp_path / "landing"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "1 events landed" in done.stdout and "1 lines quarantined" in done.stdout


def test_missing_file_is_a_clear_error_without_traceback(tmp_path: Path) -> None:
    done = run("engagement", "import", str(tmp_path / "missing.csv"), cwd=tmp_path)
    assert done.returncode == 1
    assert "no such engagement file" in done.stderr and "Traceback" not in done.stderr
