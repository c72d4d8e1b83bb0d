"""The chaos suite (`make chaos`, short form in `make test`): R1-R7 with real processes on a real Postgres.

Each scenario prints its figures and raises `ChaosFailure` when an invariant breaks; `python -m bench.chaos`
runs them all and exits non-zero if any failed. R1, R3-R5 and R7 are the test kit's seeded scenarios
(tests/kit/workload.py, tests/kit/races.py, tests/kit/limits.py) at large sizes; tests/ runs each of them once
at a small size.
"""

from __future__ import annotations

from collections.abc import Sequence


class ChaosFailure(AssertionError):
    """An invariant broke under chaos; the message says which and by how much."""


def verdict(name: str, failures: Sequence[str]) -> None:
    """Raise ChaosFailure naming the scenario and every failure, if there is any."""
    if failures:
        raise ChaosFailure(f"{name}: " + "; ".join(failures))
