"""scripts/system-deps: which Debian package it asks for, decided from the programs and files present.

A fake PATH and a fake file tree (AGENT_OPS_SYSROOT) stand in for the machine; --dry-run prints the
packages instead of installing them, and a PATH without apt-get shows what a user without apt is told.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.kit.database import ROOT

SCRIPT = ROOT / "scripts" / "system-deps"
PROGRAMS = ("initdb", "pg_ctl", "postgres", "pg_dump", "psql", "runuser", "pg_prove", "chromium")
FILES = (
    "usr/lib/postgresql/15/lib/pg_cron.so",
    "usr/lib/postgresql/15/lib/plpgsql_check.so",
    "usr/share/postgresql/15/extension/pgtap.control",
)
ALL_PACKAGES = (
    "postgresql-15 postgresql-client-15 util-linux postgresql-15-cron postgresql-15-pgtap "
    "postgresql-15-plpgsql-check libtap-parser-sourcehandler-pgtap-perl chromium"
)


def machine(tmp_path: Path, *, without: tuple[str, ...] = (), apt: bool = False) -> dict[str, str]:
    """A fake machine with everything except `without` (program names or file paths)."""
    bin_dir, root = tmp_path / "bin", tmp_path / "root"
    bin_dir.mkdir()
    for tool in ("id", "sed"):  # what the script itself calls
        which = shutil.which(tool)
        assert which, tool
        (bin_dir / tool).symlink_to(which)
    programs = PROGRAMS + (("apt-get",) if apt else ())
    for name in programs:
        if name not in without:
            fake = bin_dir / name
            fake.write_text("#!/bin/sh\nexit 0\n")
            fake.chmod(0o755)
    for relative in FILES:
        if relative not in without:
            path = root / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
    return {"PATH": str(bin_dir), "AGENT_OPS_SYSROOT": str(root), "HOME": str(tmp_path)}


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["/bin/bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=30, check=False
    )


def test_a_complete_machine_needs_nothing(tmp_path: Path) -> None:
    env = machine(tmp_path)
    dry = run(env, "--dry-run")
    assert (dry.returncode, dry.stdout.strip()) == (0, "")
    real = run(env)
    assert (real.returncode, real.stderr) == (0, "")


def test_pg_prove_is_asked_for_by_its_own_package_not_through_recommends(tmp_path: Path) -> None:
    # The fresh-machine failure: pgtap.control present (postgresql-15-pgtap) but no pg_prove.
    dry = run(machine(tmp_path, without=("pg_prove",)), "--dry-run")
    assert dry.stdout.split() == ["libtap-parser-sourcehandler-pgtap-perl"]


@pytest.mark.parametrize(
    ("missing", "package"),
    [
        (("initdb",), "postgresql-15"),
        (("pg_dump", "psql"), "postgresql-client-15"),
        (("usr/lib/postgresql/15/lib/pg_cron.so",), "postgresql-15-cron"),
        (("usr/share/postgresql/15/extension/pgtap.control",), "postgresql-15-pgtap"),
        (("usr/lib/postgresql/15/lib/plpgsql_check.so",), "postgresql-15-plpgsql-check"),
        (("chromium",), "chromium"),
    ],
)
def test_each_missing_piece_names_the_package_that_provides_it(
    tmp_path: Path, missing: tuple[str, ...], package: str
) -> None:
    dry = run(machine(tmp_path, without=missing), "--dry-run")
    assert dry.stdout.split() == [package]


def test_an_empty_machine_asks_for_every_package_once(tmp_path: Path) -> None:
    dry = run(machine(tmp_path, without=PROGRAMS + FILES), "--dry-run")
    assert dry.stdout.strip() == ALL_PACKAGES


def test_without_apt_it_prints_the_exact_install_line_and_fails(tmp_path: Path) -> None:
    result = run(machine(tmp_path, without=("pg_prove", "chromium")))
    assert result.returncode == 1
    assert (
        "install them with: sudo apt-get install --no-install-recommends "
        "libtap-parser-sourcehandler-pgtap-perl chromium"
    ) in result.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="the install branch runs as root only")
def test_as_root_with_apt_it_installs_exactly_the_missing_packages(tmp_path: Path) -> None:
    env = machine(tmp_path, without=("pg_prove",), apt=True)
    log = tmp_path / "apt.log"
    # A stand-in apt-get that records its arguments and "installs" pg_prove.
    (Path(env["PATH"]) / "apt-get").write_text(
        f'#!/bin/sh\necho "$*" >> {log}\n'
        f'case "$*" in *install*) printf "#!/bin/sh\\n" > {env["PATH"]}/pg_prove; chmod +x {env["PATH"]}/pg_prove;; '
        "esac\n"
    )
    (Path(env["PATH"]) / "chmod").symlink_to(shutil.which("chmod") or "/bin/chmod")
    result = run(env)
    assert result.returncode == 0, result.stderr
    assert log.read_text().splitlines() == [
        "update -qq",
        "install -y -qq --no-install-recommends libtap-parser-sourcehandler-pgtap-perl",
    ]


@pytest.mark.skipif(os.geteuid() != 0, reason="the install branch runs as root only")
def test_a_package_that_does_not_provide_the_piece_is_reported(tmp_path: Path) -> None:
    env = machine(tmp_path, without=("chromium",), apt=True)
    result = run(env)
    assert result.returncode == 1
    assert "still missing after apt-get install: chromium" in result.stderr


def test_make_runs_the_check_before_run_and_test() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert "setup: system-deps " in makefile
    dry = subprocess.run(["make", "-n", "test", "run"], cwd=ROOT, capture_output=True, text=True, check=False)
    assert dry.stdout.count("scripts/system-deps") >= 1
