"""P8 — latency tolerance: one worker's step throughput when the database is a network away.

The deployment this project is for runs the worker on a VPS and the database at Supabase, across the
internet: 5 to 80 ms per round trip, and on the PostgREST transport every call is an HTTP request. Here one
real `vps-worker` process with `--concurrency 32` drains a backlog of 3-step `noop` missions (as in P1)
through tests/tcp_proxy.py, which holds every chunk of bytes for a fixed time each way: 0, 2.5 and 15 ms,
i.e. 0, 5 and 30 ms added to every round trip. The 0 ms row goes through the same proxy, so the proxy's own
cost is in the baseline and the ratio is the delay's alone.

- direct: worker ⇄ proxy ⇄ Postgres (DATABASE_URL points at the proxy, LISTEN included).
- postgrest: worker ⇄ proxy ⇄ PostgREST stand-in ⇄ Postgres. The delay sits on the hop from the worker to the API: that
  is the internet in the deployment; PostgREST and Postgres sit next to each other at Supabase. The stand-in
  (tests/postgrest_standin.py) runs in a process of its own, like PostgREST, and caches the functions'
  signatures as PostgREST's schema cache does (the test stand-in looks them up on every request).

The proxy runs in a process of its own too, so its timed sends never wait for the benchmark's threads.
Throughput is succeeded steps per second over a 3 s window after the first completion plus a settling
second (connections opened, first claims answered); the ratio is each delay's figure over the same
transport's 0 ms figure. Rounds alternate the order of the delays (0, 5, 30 then 30, 5, 0), and each figure
is the mean of its rounds, so a drift on the machine does not fall on one delay only. During the window a
probe makes a round trip through the same proxy every 0.1 s (`select 1`; for the stand-in a GET it answers
405 at once): its median shows the delay as the machine delivered it (a busy machine wakes the proxy late).
"""

from __future__ import annotations

import argparse
import http.client
import re
import signal
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from functools import cache

import psycopg

from bench.common import bench_processes, percentile, progress
from bench.throughput import build_template, drop_template
from tests.kit.children import CheckoutProcesses, wait_until
from tests.kit.database import scratch_database
from tests.kit.settings import server_url
from tests.postgrest_standin import Routine, StandIn, make_key

ADDED_RTT_MS = (0.0, 5.0, 30.0)
CONCURRENCY = 32
MISSIONS = 4000  # 12,000 steps: enough for a window at the 0 ms rate (~1,000/s) with room to spare
WINDOW = 3.0
ROUNDS = 2
SETTLE = 1.0
TRANSPORTS = ("direct", "postgrest")
TARGET = 0.5  # at 30 ms, at least half of the 0 ms throughput (issue 15)

COUNTS = (
    b"select count(*) filter (where status = 'succeeded'), count(*) filter (where status in ('pending', 'queued'))"
    b" from public.ops_mission_steps"
)
LOW_WATER = 1500  # steps left: below this, claims would start to find fewer than CONCURRENCY queued steps
LISTENING = re.compile(r"listening on (\S+)")


def _announced(children: CheckoutProcesses, name: str, timeout: float = 30) -> str:
    """What a child printed after `listening on` (its port or URL), once it has."""
    found: list[str] = []

    def announced() -> bool:
        if (child := children.children.get(name)) and child.poll() is not None:
            raise RuntimeError(f"{name} exited with {child.returncode}:\n{children.log(name)}")
        match = LISTENING.search(children.log(name)) if children.log_path(name).exists() else None
        if match:
            found.append(match.group(1))
        return bool(match)

    wait_until(announced, timeout, f"{name} listening")
    return found[0]


def proxy(children: CheckoutProcesses, upstream: str, added_rtt_ms: float) -> int:
    """A tests/tcp_proxy.py process adding `added_rtt_ms` / 2 each way; returns its port."""
    children.start("proxy", [sys.executable, "-m", "tests.tcp_proxy", upstream, "--delay-ms", str(added_rtt_ms / 2)])
    return int(_announced(children, "proxy"))


@dataclass
class Measured:
    steps_per_s: float
    round_trip_ms: list[float]  # the probe's round trips through the proxy during the window


def worker_rate(template: str, transport: str, added_rtt_ms: float, window: float) -> Measured:
    """Succeeded steps per second of one worker (`--concurrency 32`) reaching the database through the proxy,
    and the round trips a probe saw through the same proxy meanwhile (the delay as the machine delivered it)."""
    with scratch_database("bench_p8", template=template) as url:
        info = psycopg.conninfo.conninfo_to_dict(url)
        name = f"p8-{transport}-{added_rtt_ms:g}ms"
        # The network outlives the worker: stopped first, the worker would wait out its grace period trying
        # to report through a proxy that is gone.
        with (
            bench_processes(f"{name}/network") as network,
            bench_processes(name) as children,
            ExitStack() as probes,
        ):
            if transport == "direct":
                port = proxy(network, f"{info['host']}:{info['port']}", added_rtt_ms)
                through = server_url(
                    str(info["user"]), str(info.get("password") or ""), "127.0.0.1", port, str(info["dbname"])
                )
                env = {"DATABASE_URL": through}
                probe_conn = probes.enter_context(psycopg.connect(through, autocommit=True))

                def probe() -> None:
                    probe_conn.execute(b"select 1").fetchone()

            else:
                network.start("standin", [sys.executable, "-m", "bench.latency", "standin", url])
                api = _announced(network, "standin")
                port = proxy(network, api.removeprefix("http://"), added_rtt_ms)
                env = {
                    "SUPABASE_URL": f"http://127.0.0.1:{port}",
                    "SUPABASE_SERVICE_ROLE_KEY": make_key("service_role"),
                    "AGENT_OPS_TRANSPORT": "postgrest",
                }
                api_conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                probes.callback(api_conn.close)

                def probe() -> None:
                    # The stand-in answers a GET with 405 at once: one HTTP round trip, no database.
                    api_conn.request("GET", "/rest/v1/rpc/probe")
                    api_conn.getresponse().read()

            probe()  # connected before the window
            children.start_worker(
                "worker",
                "--kinds",
                "noop",
                "--concurrency",
                str(CONCURRENCY),
                "--poll-min",
                "0.05",
                "--poll-max",
                "0.2",
                "--grace-seconds",
                "5",
                "--worker-id",
                "bench-p8",
                env=env,
            )
            with psycopg.connect(url, autocommit=True) as conn:
                return drain_rate(conn, window, probe)


def drain_rate(conn: psycopg.Connection, window: float, probe: Callable[[], None]) -> Measured:
    """Steps succeeded per second over `window` seconds from SETTLE after the first completion; the window
    ends early when the backlog runs low (a faster worker must not run out of work inside it). Every 0.1 s
    of the window the probe makes one round trip through the proxy."""

    def counts() -> tuple[int, int]:
        done, left = conn.execute(COUNTS).fetchone() or (0, 0)
        return int(done), int(left)

    wait_until(lambda: counts()[0] > 0, 60, "a first completion")
    time.sleep(SETTLE)
    round_trips = []
    start_done, start = counts()[0], time.monotonic()
    while time.monotonic() - start < window:
        sent = time.perf_counter()
        probe()
        round_trips.append((time.perf_counter() - sent) * 1000)
        time.sleep(max(0.0, 0.1 - (time.perf_counter() - sent)))
        if counts()[1] < LOW_WATER:
            break
    done, left = counts()
    elapsed = time.monotonic() - start
    if elapsed < 1.0:
        raise RuntimeError(f"P8: the backlog ran low after {elapsed:.1f}s ({left} steps left); raise MISSIONS")
    return Measured((done - start_done) / elapsed, round_trips)


def run(window: float = WINDOW, rounds: int = ROUNDS) -> dict[str, object]:
    progress(f"P8: building a backlog of {MISSIONS:,} queued 3-step missions")
    template = build_template(MISSIONS)
    measured: dict[tuple[str, float], list[Measured]] = {(t, d): [] for t in TRANSPORTS for d in ADDED_RTT_MS}
    try:
        for n in range(rounds):
            order = ADDED_RTT_MS if n % 2 == 0 else tuple(reversed(ADDED_RTT_MS))
            for transport in TRANSPORTS:
                for rtt in order:
                    progress(f"P8: round {n + 1}/{rounds}, {transport}, {rtt:g} ms added round trip")
                    measured[transport, rtt].append(worker_rate(template, transport, rtt, window))
    finally:
        drop_template(template)
    rows = []
    for transport in TRANSPORTS:
        base = statistics.mean(m.steps_per_s for m in measured[transport, 0.0])
        for rtt in ADDED_RTT_MS:
            rounds_measured = measured[transport, rtt]
            rate = statistics.mean(m.steps_per_s for m in rounds_measured)
            rows.append(
                {
                    "transport": transport,
                    "added_rtt_ms": rtt,
                    "steps_per_s": rate,
                    "ratio": rate / base,
                    "rounds_steps_per_s": [m.steps_per_s for m in rounds_measured],
                    # What a probe saw through the proxy during the windows: the added delay as delivered,
                    # plus the loopback and the answer itself.
                    "probe_round_trip_p50_ms": percentile([t for m in rounds_measured for t in m.round_trip_ms], 0.5),
                }
            )
    return {
        "concurrency": CONCURRENCY,
        "window_s": window,
        "rounds": rounds,
        "target_ratio_30ms": TARGET,
        "rows": rows,
    }


# -- the stand-in in a process of its own -----------------------------------------------------------------


class CachedStandIn(StandIn):
    """The test stand-in with PostgREST's schema cache: a function's signature is looked up once."""

    def __init__(self, db_url: str) -> None:
        super().__init__(db_url)
        self._lookup = cache(super()._routines)
        self._lookup_lock = threading.Lock()

    def _routines(self, name: str) -> list[Routine]:
        with self._lookup_lock:
            return self._lookup(name)


def serve_standin(db_url: str) -> None:
    server = CachedStandIn(db_url)
    sys.stdout.write(f"listening on {server.url}\n")
    sys.stdout.flush()
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.latency", description="P8 alone, or its stand-in")
    sub = parser.add_subparsers(dest="command")
    standin = sub.add_parser("standin", help="serve the PostgREST stand-in for DB_URL until stopped")
    standin.add_argument("db_url")
    args = parser.parse_args(argv)
    if args.command == "standin":
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        serve_standin(args.db_url)
        return 0
    parser.print_help()
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
