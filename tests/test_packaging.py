"""The wheel users (and the worker image) install: both packages, the migrations, the seed, the console scripts."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from agent_ops.migrations import list_migrations
from tests.kit.database import ROOT


def test_the_wheel_carries_the_schema_and_both_packages(tmp_path: Path) -> None:
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    [wheel] = tmp_path.glob("agent_ops-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    migrations = {
        f"agent_ops/_supabase/migrations/{m.path.name}" for m in list_migrations(ROOT / "supabase" / "migrations")
    }
    assert migrations <= names
    assert "agent_ops/_supabase/seed.sql" in names
    assert {"agent_ops/sql/local_supabase.sql", "agent_ops/py.typed", "vps_worker/worker.py"} <= names
    console = ROOT / "agent_ops" / "console"
    assets = {f"agent_ops/console/{p.relative_to(console)}" for p in console.glob("*/*.*") if p.suffix != ".pyc"}
    assert any(a.endswith(".html") for a in assets)
    assert assets <= names, "the console's templates and static files ship in the wheel"
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    scripts = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "agent-ops = agent_ops.cli:main" in scripts
    assert "vps-worker = vps_worker.__main__:main" in scripts
    assert not any(n.startswith(("tests/", "supabase/tests/")) for n in names)
