"""One throttle for every key check of `agent-ops serve`: the heartbeat endpoint's Bearer key and console sign-in.

The key that opens /api/ops/heartbeat also opens the console when CONSOLE_KEY is unset, so wrong guesses at
either count against the same client. A client is its peer address as the TCP connection shows it (the
server trusts X-Forwarded-For only from proxies named with --forwarded-allow-ips); IPv6 clients are counted
per /64, since one host commonly holds a whole /64 and could otherwise rotate through it.

- Per client: MAX_FAILURES wrong keys within WINDOW seconds, then every key check answers 429 until the
  oldest of them is WINDOW seconds old. The right key is refused too while throttled: otherwise the 429
  would not hide which guess was right.
- Across all clients: `global_limit` wrong keys within WINDOW seconds trip a global stop with one log line;
  only clients whose key was right within TRUSTED_SECONDS are still heard, so a distributed guesser cannot
  lock the cron that drives the heartbeat out as well.
- Memory is bounded: at most `max_clients` clients are remembered; the one whose last wrong key is oldest
  is forgotten first. (Clearing the whole table when full would let 10,001 addresses wipe every record.)
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable

MAX_FAILURES = 5
WINDOW = 60.0
GLOBAL_LIMIT = 100
MAX_CLIENTS = 10_000
TRUSTED_SECONDS = 3600.0
MAX_TRUSTED = 1_000

log = logging.getLogger("agent_ops.throttle")


def client_key(host: str | None) -> str:
    """The record a peer address counts against: the address itself, or its /64 for IPv6."""
    if not host:
        return "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host[:100]  # not an address (a unix socket, a test client): bounded all the same
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class KeyThrottle:
    def __init__(
        self,
        *,
        max_failures: int = MAX_FAILURES,
        window: float = WINDOW,
        global_limit: int = GLOBAL_LIMIT,
        max_clients: int = MAX_CLIENTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_failures < 1 or global_limit < 1 or max_clients < 1 or window <= 0:
            raise ValueError("throttle limits must be positive")
        self.max_failures = max_failures
        self.window = window
        self.global_limit = global_limit
        self.max_clients = max_clients
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._all_failures: deque[float] = deque(maxlen=global_limit)
        self._trusted: OrderedDict[str, float] = OrderedDict()
        self._stopped_until = 0.0
        self._lock = threading.Lock()

    def wait(self, host: str | None) -> float:
        """Seconds this client must wait before its key is checked (0: check it)."""
        client, now = client_key(host), self._clock()
        with self._lock:
            waits = [0.0]
            recent = self._failures.get(client)
            if recent is not None and len(recent) >= self.max_failures:
                waits.append(self.window - (now - recent[0]))
            if not self._is_trusted(client, now):
                waits.append(self._global_wait(now))
            return max(waits)

    def failed(self, host: str | None) -> None:
        """A wrong (or missing) key from this client."""
        client, now = client_key(host), self._clock()
        with self._lock:
            recent = self._failures.pop(client, None) or deque(maxlen=self.max_failures)
            recent.append(now)
            self._failures[client] = recent  # re-inserted: the most recently failing client is kept longest
            while len(self._failures) > self.max_clients:
                self._failures.popitem(last=False)
            self._all_failures.append(now)
            self._trip_if_over(now)

    def succeeded(self, host: str | None) -> None:
        """The right key from this client: its failures are forgiven and it stays heard under a global stop."""
        client, now = client_key(host), self._clock()
        with self._lock:
            self._failures.pop(client, None)
            self._trusted.pop(client, None)
            self._trusted[client] = now
            while len(self._trusted) > MAX_TRUSTED:
                self._trusted.popitem(last=False)

    def _is_trusted(self, client: str, now: float) -> bool:
        since = self._trusted.get(client)
        return since is not None and now - since < TRUSTED_SECONDS

    def _global_wait(self, now: float) -> float:
        if len(self._all_failures) < self.global_limit:
            return 0.0
        return max(0.0, self.window - (now - self._all_failures[0]))

    def _trip_if_over(self, now: float) -> None:
        wait = self._global_wait(now)
        if wait <= 0:
            return
        if now >= self._stopped_until:  # once per stop, not once per refused guess
            log.warning(
                "key throttle tripped: %d wrong keys from all clients within %.0f s; every key check (console "
                "sign-in and /api/ops/heartbeat) answers 429 for %.0f s, except from clients whose key was right "
                "within the last %.0f min",
                self.global_limit,
                self.window,
                wait,
                TRUSTED_SECONDS / 60,
            )
        self._stopped_until = now + wait
