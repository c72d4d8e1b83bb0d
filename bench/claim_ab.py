"""Claim latency of this checkout's schema against an earlier revision's, interleaved (P5's method).

`python -m bench.claim_ab --base REV` builds two databases: one from REV's migrations and seed (read with
`git archive`, nothing is checked out) and one from this checkout's. Each holds 1,000 finished steps and 1,000
queued single-step `noop` missions (an unlimited kind, no budgets: the path every claim took before fleet-wide
limits existed). One client per database claims one step at a time with the worker's own `Ops.claim`, in rounds
alternating between the two so drift on the machine falls on both alike; only the claim round trip is timed.
The figure is this checkout's p50 over the base's.
"""

from __future__ import annotations

import argparse
import io
import subprocess
import tarfile
import tempfile
from pathlib import Path

from bench.claim_latency import claim_and_complete, claim_database
from bench.common import percentile, progress
from tests.kit.database import ROOT

ROUNDS = 10
CLAIMS_PER_ROUND = 80


def schema_at(revision: str, into: Path) -> tuple[Path, Path]:
    """REV's supabase/migrations and seed.sql, extracted under `into`."""
    archive = subprocess.run(
        ["git", "archive", revision, "supabase/migrations", "supabase/seed.sql"],
        cwd=ROOT, check=True, capture_output=True,
    ).stdout  # fmt: skip
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into / "supabase" / "migrations", into / "supabase" / "seed.sql"


def run(base: str) -> dict[str, object]:
    base_ms: list[float] = []
    head_ms: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        base_migrations, base_seed = schema_at(base, Path(tmp))
        with claim_database(1_000, (base_migrations, base_seed)) as before, claim_database(1_000) as after:
            for n in range(ROUNDS):
                progress(f"claim A/B: round {n + 1}/{ROUNDS}")
                base_ms += claim_and_complete(before, CLAIMS_PER_ROUND)
                head_ms += claim_and_complete(after, CLAIMS_PER_ROUND)
    base_p50, head_p50 = percentile(base_ms, 0.5) * 1000, percentile(head_ms, 0.5) * 1000
    base_p95, head_p95 = percentile(base_ms, 0.95) * 1000, percentile(head_ms, 0.95) * 1000
    result: dict[str, object] = {
        "base": base, "base_p50_ms": base_p50, "head_p50_ms": head_p50, "base_p95_ms": base_p95,
        "head_p95_ms": head_p95, "ratio_p50": head_p50 / base_p50, "ratio_p95": head_p95 / base_p95,
    }  # fmt: skip
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the git revision to compare against")
    figures = run(parser.parse_args().base)
    f = figures
    print(f"claim p50: {f['head_p50_ms']:.2f} ms vs {f['base_p50_ms']:.2f} ms at {f['base']}"
          f" (ratio {f['ratio_p50']:.3f}); p95 {f['head_p95_ms']:.2f} vs {f['base_p95_ms']:.2f} ms"
          f" ({f['ratio_p95']:.3f})")  # fmt: skip


if __name__ == "__main__":
    main()
