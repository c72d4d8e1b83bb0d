"""Released migrations never change: supabase/migrations.lock, scripts/lock-migrations and the upgrade path.

The lock names the release that shipped each file and its sha256. Files of earlier releases must match it
byte for byte; the release in progress is the project version. A database migrated with the previous
release and upgraded must end with the same schema as one migrated fresh.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

from agent_ops.localpg import find_binaries
from agent_ops.migrations import list_migrations, migrate
from tests.kit.database import ROOT

MIGRATIONS = ROOT / "supabase" / "migrations"
LOCK = ROOT / "supabase" / "migrations.lock"


def project_version() -> tuple[int, ...]:
    with (ROOT / "pyproject.toml").open("rb") as handle:
        version: str = tomllib.load(handle)["project"]["version"]
    return release_key(version)


def release_key(label: str) -> tuple[int, ...]:
    return tuple(int(part) for part in label.split("."))


def read_lock(path: Path = LOCK) -> dict[str, tuple[str, str]]:
    """file name -> (release, sha256)."""
    entries: dict[str, tuple[str, str]] = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        label, digest, name = line.split()
        entries[name] = (label, digest)
    return entries


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_released_migrations_are_unchanged() -> None:
    current = project_version()
    edited = [
        f"{name} (released in {label})"
        for name, (label, digest) in read_lock().items()
        if release_key(label) < current and (not (MIGRATIONS / name).exists() or sha256(MIGRATIONS / name) != digest)
    ]
    assert not edited, (
        f"released migrations were edited or removed: {', '.join(edited)}. Restore them (git checkout) and put "
        "the change in a new migration (`create or replace`)."
    )


def test_every_migration_is_locked_and_none_is_from_a_future_release() -> None:
    locked = read_lock()
    current = project_version()
    unlocked = [m.path.name for m in list_migrations(MIGRATIONS) if m.path.name not in locked]
    assert not unlocked, f"new migrations are not in supabase/migrations.lock: {unlocked}; run scripts/lock-migrations"
    assert all(release_key(label) <= current for label, _ in locked.values())
    for name, (label, digest) in locked.items():
        if release_key(label) == current:
            assert sha256(MIGRATIONS / name) == digest, f"{name} changed: run scripts/lock-migrations"


def test_new_migrations_sort_after_every_released_one() -> None:
    current = project_version()
    locked = read_lock()
    released = [name for name, (label, _) in locked.items() if release_key(label) < current]
    new = [name for name, (label, _) in locked.items() if release_key(label) == current]
    assert not released or not new or min(new) > max(released)


@pytest.fixture
def repo_copy(tmp_path: Path) -> Path:
    """The parts of the checkout lock-migrations reads, in a scratch folder it may write to."""
    copy = tmp_path / "repo"
    (copy / "scripts").mkdir(parents=True)
    shutil.copy2(ROOT / "scripts" / "lock-migrations", copy / "scripts")
    shutil.copy2(ROOT / "pyproject.toml", copy)
    shutil.copytree(ROOT / "supabase", copy / "supabase", ignore=shutil.ignore_patterns(".temp", ".branches"))
    return copy


def lock_migrations(repo: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(repo / "scripts" / "lock-migrations")], capture_output=True, text=True, timeout=30, check=False
    )


def test_lock_migrations_adds_new_files_and_refuses_to_rehash_released_ones(repo_copy: Path) -> None:
    assert lock_migrations(repo_copy).returncode == 0
    assert (repo_copy / "supabase" / "migrations.lock").read_text() == LOCK.read_text()

    new = repo_copy / "supabase" / "migrations" / "29991231000000_later_change.sql"
    new.write_text("select 1;\n")
    assert lock_migrations(repo_copy).returncode == 0
    label, digest = read_lock(repo_copy / "supabase" / "migrations.lock")[new.name]
    assert (release_key(label), digest) == (project_version(), sha256(new))

    released = next(name for name, (lab, _) in read_lock().items() if release_key(lab) < project_version())
    (repo_copy / "supabase" / "migrations" / released).write_text("-- edited after release\n")
    before = (repo_copy / "supabase" / "migrations.lock").read_text()
    refused = lock_migrations(repo_copy)
    assert refused.returncode == 1
    assert f"{released} was released in" in refused.stderr
    assert (repo_copy / "supabase" / "migrations.lock").read_text() == before


def normalised_schema(url: str) -> str:
    dump = subprocess.run(
        [find_binaries().tool("pg_dump"), "--schema-only", "--no-owner", url],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    # pg_dump's per-run restrict key and its session settings are not part of the schema.
    kept = [
        line
        for line in dump.splitlines()
        if line.strip() and not line.startswith(("--", "SET ", "\\restrict", "\\unrestrict", "SELECT pg_catalog."))
    ]
    return "\n".join(kept)


def test_upgrading_from_the_previous_release_gives_the_fresh_schema(
    make_empty_db: Callable[[], str], tmp_path: Path
) -> None:
    current = project_version()
    previous = tmp_path / "previous"
    previous.mkdir()
    for name, (label, _) in read_lock().items():
        if release_key(label) < current:
            shutil.copy2(MIGRATIONS / name, previous / name)
    assert list(previous.iterdir()), "the lock names no earlier release"

    upgraded, fresh = make_empty_db(), make_empty_db()
    migrate(upgraded, previous)
    migrate(upgraded, MIGRATIONS)
    migrate(fresh, MIGRATIONS)
    upgraded_schema, fresh_schema = normalised_schema(upgraded), normalised_schema(fresh)
    assert re.search(r"CREATE TABLE public\.ops_missions", fresh_schema)
    assert upgraded_schema == fresh_schema
