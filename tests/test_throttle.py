"""The wrong-key throttle on its own, with a clock the test moves: per client, across clients, bounded memory."""

from __future__ import annotations

import logging

import pytest

from agent_ops.throttle import KeyThrottle, client_key


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_five_wrong_keys_make_a_client_wait_out_the_window() -> None:
    clock = Clock()
    throttle = KeyThrottle(clock=clock)
    for _ in range(5):
        assert throttle.wait("10.0.0.1") == 0
        throttle.failed("10.0.0.1")
    assert throttle.wait("10.0.0.1") == pytest.approx(60)
    assert throttle.wait("10.0.0.2") == 0, "another client is not held back"
    clock.now += 59
    assert throttle.wait("10.0.0.1") == pytest.approx(1)
    clock.now += 1
    assert throttle.wait("10.0.0.1") == 0


def test_a_full_table_forgets_its_oldest_client_not_everyone() -> None:
    """10,001 addresses used to clear the whole table, so a throttled client was free again at once."""
    throttle = KeyThrottle(max_clients=10_000, global_limit=1_000_000, clock=Clock())
    for n in range(9_999):
        throttle.failed(f"10.1.{n // 256}.{n % 256}")
    for _ in range(5):
        throttle.failed("192.0.2.7")
    assert throttle.wait("192.0.2.7") > 0
    for n in range(2):  # past the cap: the two oldest entries go, the recent guesser stays
        throttle.failed(f"10.2.0.{n}")
    assert throttle.wait("192.0.2.7") > 0
    for n in range(9_999):  # only as many newer failing clients as the table holds push it out
        throttle.failed(f"10.3.{n // 256}.{n % 256}")
    assert throttle.wait("192.0.2.7") == 0


def test_wrong_keys_from_all_clients_together_trip_a_global_stop_with_one_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    throttle = KeyThrottle(global_limit=10, clock=clock)
    throttle.succeeded("192.0.2.1")  # e.g. the cron that drives the heartbeat
    with caplog.at_level(logging.WARNING, logger="agent_ops.throttle"):
        for n in range(10):
            assert throttle.wait(f"10.0.0.{n}") == 0
            throttle.failed(f"10.0.0.{n}")
        assert throttle.wait("10.9.9.9") == pytest.approx(60), "a fresh address is refused too"
        assert throttle.wait("192.0.2.1") == 0, "a client whose key was right recently is still heard"
        clock.now += 30
        throttle.failed("192.0.2.1")  # a trusted client's wrong key while stopped: no second line
    trips = [r.getMessage() for r in caplog.records if r.name == "agent_ops.throttle"]
    assert len(trips) == 1
    assert "key throttle tripped: 10 wrong keys from all clients within 60 s" in trips[0]
    assert "429" in trips[0]
    clock.now += 31
    assert throttle.wait("10.9.9.9") == 0, "the stop ends once the rate falls"


def test_the_right_key_forgives_earlier_failures() -> None:
    throttle = KeyThrottle(clock=Clock())
    for _ in range(4):
        throttle.failed("10.0.0.1")
    throttle.succeeded("10.0.0.1")
    throttle.failed("10.0.0.1")
    assert throttle.wait("10.0.0.1") == 0


def test_ipv6_clients_count_per_64_and_mapped_ipv4_as_ipv4() -> None:
    throttle = KeyThrottle(clock=Clock())
    for n in range(5):
        throttle.failed(f"2001:db8:1:2::{n + 1:x}")
    assert throttle.wait("2001:db8:1:2:ffff::1") > 0, "the same /64"
    assert throttle.wait("2001:db8:1:3::1") == 0
    assert client_key("::ffff:192.0.2.9") == "192.0.2.9"
    assert client_key(None) == "unknown"
    assert len(client_key("x" * 10_000)) == 100
