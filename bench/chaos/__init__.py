"""The chaos suite (`make chaos`, short form in `make test`): R1-R6 with real processes on a real Postgres.

Each scenario prints its figures and raises `ChaosFailure` when an invariant breaks; `python -m bench.chaos`
runs them all and exits non-zero if any failed.
"""


class ChaosFailure(AssertionError):
    """An invariant broke under chaos; the message says which and by how much."""
