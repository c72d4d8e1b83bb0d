"""The test kit: what the tests, the benchmarks (bench/) and the chaos suite (bench/chaos/) share.

- `database`: the embedded server, scratch databases and servers, a migrated and seeded schema with policy
  set, and one-value queries;
- `contract`: calling the ops_* functions as the API does (role service_role), and running calls at once;
- `settings`: client settings for a test's database (direct, or PostgREST through tests/postgrest_standin.py);
- `children`: processes (workers, `agent-ops serve`) started in the checkout with a clean environment over
  agent_ops.processes (what `agent-ops demo` starts its worker with), the CLI run to its end, and waiting for
  a condition;
- `recorded`: the `recorded` executor, which notes every execution outside Postgres, and the tally of it;
- `trickle`: an HTTP server answering a byte at a time, which only a request's total deadline ends;
- `limits`: the races of the fleet-wide limits and the budgets (max_running, per_minute, spend), R7's;
- `workload` and `races`: the seeded scenarios behind the invariants that are checked at a small size in
  tests/ and at large sizes by the chaos suite (docs/architecture.md, "The five invariants").

Test code only: the wheel ships agent_ops and vps_worker, never this.
"""
