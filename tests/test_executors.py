"""Built-in executors, the registry, and worker settings."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

from agent_ops import Ops, step
from agent_ops.config import ConfigError
from tests.kit.settings import direct_settings
from tests.kit.trickle import Trickle
from vps_worker.builtin import builtin_executors, echo, emit_event, http_executor, llm_executor, noop, sleep
from vps_worker.config import WorkerSettings
from vps_worker.executors import (
    PermanentError,
    RetryableError,
    StepContext,
    Usage,
    executor,
    registry,
    with_aliases,
)


def context(payload: dict[str, Any] | None = None, emit: Any = None, **overrides: Any) -> StepContext:
    values: dict[str, Any] = {
        "step_id": 1,
        "mission_id": 1,
        "agent_id": "brain",
        "kind": "test",
        "payload": payload or {},
        "inputs": {"0": {"pages": 3}},
        "attempt": 1,
        "max_attempts": 3,
        "deadline": datetime.now(UTC) + timedelta(minutes=5),
        "logger": logging.LoggerAdapter(logging.getLogger("test"), {}),
        "emit": emit or (lambda *a, **k: None),
        **overrides,
    }
    return StepContext(**values)


def test_noop_echo_and_sleep() -> None:
    assert noop(context()) == {}
    assert echo(context({"a": 1})) == {"payload": {"a": 1}, "inputs": {"0": {"pages": 3}}}
    assert sleep(context({"seconds": 0.01})) == {"slept": 0.01}
    with pytest.raises(PermanentError, match=r"payload\.seconds must be a number"):
        sleep(context({"seconds": "long"}))
    ctx = context({"seconds": 30})
    threading.Timer(0.1, ctx.cancelled.set).start()
    started = time.monotonic()
    with pytest.raises(RetryableError, match="interrupted"):
        sleep(ctx)
    assert time.monotonic() - started < 5


def test_emit_event_turns_a_payload_into_a_domain_event(db_url: str) -> None:
    with Ops(direct_settings(db_url)) as ops:
        mission = ops.propose("twitter-alt", "post", [step("crawl")]).mission_id
        claimed = ops.claim("w")[0]
        ctx = context(
            {"type": "tweet:posted", "tags": ["launch"], "payload": {"tweet_id": "t-1"}},
            emit=ops.emit_event,
            step_id=claimed.id,
            mission_id=mission,
            agent_id="twitter-alt",
        )
        out = emit_event(ctx)
        stored = ops.events(type="tweet:posted")[0]
    assert out == {"event_id": stored.id, "type": "tweet:posted"}
    assert (stored.agent_id, stored.mission_id, stored.step_id, stored.source) == (
        "twitter-alt",
        mission,
        claimed.id,
        "worker",
    )
    assert stored.tags == ["tweet:posted", "tweet", "posted", "launch"]
    with pytest.raises(PermanentError, match="reserved entity mission"):
        emit_event(context({"type": "mission:failed"}, emit=ops_emit_refusing()))


def ops_emit_refusing() -> Any:
    from agent_ops.errors import InvalidInput  # noqa: PLC0415

    def emit(*_: Any, **__: Any) -> None:
        raise InvalidInput("type mission:failed uses the reserved entity mission")

    return emit


HUGE = 50 * 1024 * 1024


class Recorder(BaseHTTPRequestHandler):
    """A local HTTP peer: /ok, /teapot (418), /busy (503), /slow, /v1/chat/completions (OpenAI-compatible),
    /huge (50 MiB streamed, chunked) and /huge-declared (50 MiB with its Content-Length)."""

    protocol_version = "HTTP/1.1"
    requests: ClassVar[list[dict[str, Any]]] = []
    sent: ClassVar[list[int]] = []  # bytes of body each /huge* reply managed to write

    def _stream_huge(self, declared: bool) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length" if declared else "Transfer-Encoding", str(HUGE) if declared else "chunked")
        self.end_headers()
        chunk, written = b"x" * 65536, 0
        try:
            while written < HUGE:
                self.wfile.write(chunk if declared else b"%x\r\n%s\r\n" % (len(chunk), chunk))
                written += len(chunk)
            if not declared:
                self.wfile.write(b"0\r\n\r\n")
        except OSError:
            self.close_connection = True  # the client hung up: that is the point
        finally:
            Recorder.sent.append(written)

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _reply(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self.do_POST()

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"null")
        Recorder.requests.append(
            {"path": self.path, "method": self.command, "body": body, "auth": self.headers.get("Authorization")}
        )
        if self.path.startswith("/huge"):
            self._stream_huge(declared=self.path == "/huge-declared")
            return
        if self.path == "/slow":
            time.sleep(2)
        if self.path.endswith("/chat/completions"):
            content = body["messages"][-1]["content"]
            if content == "rate limit me":
                self._reply(429, {"error": {"message": "slow down"}})
                return
            if content == "bad request":
                self._reply(400, {"error": {"message": "nope"}})
                return
            message = {"role": "assistant", "content": f"echo: {content}"}
            reply = {
                "id": "c-1",
                "object": "chat.completion",
                "created": 0,
                # A dated snapshot of the model asked for, as OpenAI names "gpt-4o-mini" "gpt-4o-mini-2024-07-18".
                "model": f"{body['model']}-2024-07-18" if content == "snapshot" else body["model"],
                "choices": [{"index": 0, "finish_reason": "stop", "message": message}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
            }
            if content == "no usage":
                del reply["usage"]
            self._reply(200, reply)
            return
        status = {"/ok": 200, "/teapot": 418, "/busy": 503, "/slow": 200}.get(self.path.split("?")[0], 404)
        self._reply(status, {"path": self.path, "got": body})


class QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        return  # a client that gave up (the timeout test) is expected, not news


@pytest.fixture
def peer() -> Iterator[str]:
    server = QuietServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    Recorder.requests = []
    Recorder.sent = []
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_http_calls_allowed_hosts_and_classifies_failures(peer: str) -> None:
    http = http_executor(["127.0.0.1"], max_timeout=1.0)
    out = http(context({"url": f"{peer}/ok", "json": {"hello": "world"}, "headers": {"X-Token": "t"}}))
    assert out["status"] == 200
    assert out["body"] == {"path": "/ok", "got": {"hello": "world"}}
    assert Recorder.requests[-1]["method"] == "POST"
    with pytest.raises(PermanentError, match="HTTP 418"):
        http(context({"url": f"{peer}/teapot"}))
    with pytest.raises(RetryableError, match="HTTP 503"):
        http(context({"url": f"{peer}/busy"}))
    with pytest.raises(RetryableError, match="timed out"):
        http(context({"url": f"{peer}/slow", "timeout": 0.2}))
    with pytest.raises(PermanentError, match="not in WORKER_HTTP_ALLOWED_HOSTS"):
        http(context({"url": "http://example.com/hook"}))
    with pytest.raises(PermanentError, match=r"payload\.url is required"):
        http(context({}))


def test_http_streams_the_response_and_fails_for_good_past_the_byte_cap(peer: str) -> None:
    cap = 1024 * 1024
    http = http_executor(["127.0.0.1"], max_timeout=10.0, max_response_bytes=cap)
    with pytest.raises(PermanentError, match=r"GET 127\.0\.0\.1: response body larger than 1048576 bytes"):
        http(context({"url": f"{peer}/huge"}))
    deadline = time.monotonic() + 10
    while not Recorder.sent and time.monotonic() < deadline:
        time.sleep(0.05)
    # The client hung up after about the cap: the server could not write the 50 MiB (socket buffers aside).
    assert Recorder.sent, "the server finished (or gave up) writing"
    assert Recorder.sent[0] < 16 * 1024 * 1024
    with pytest.raises(PermanentError, match="WORKER_HTTP_MAX_RESPONSE_BYTES"):
        http(context({"url": f"{peer}/huge-declared"}))
    assert http(context({"url": f"{peer}/ok"}))["status"] == 200, "a body under the cap is read as before"


@pytest.mark.parametrize(
    "header",
    ["Host", "host ", "Connection", "Keep-Alive", "Proxy-Authorization", "Proxy-Connection", "TE", "Trailer",
     "Transfer-Encoding", "Upgrade", "Content-Length"],
)  # fmt: skip
def test_http_refuses_host_and_hop_by_hop_headers(peer: str, header: str) -> None:
    http = http_executor(["127.0.0.1"], max_timeout=1.0)
    with pytest.raises(PermanentError, match=f"may not set {header.strip()}"):
        http(context({"url": f"{peer}/ok", "headers": {header: "internal.example"}}))
    with pytest.raises(PermanentError, match="line break"):
        http(context({"url": f"{peer}/ok", "headers": {"X-Note": "a\r\nHost: internal.example"}}))
    assert Recorder.requests == [], "nothing was sent"


def test_llm_calls_an_openai_compatible_api(peer: str) -> None:
    llm = llm_executor(f"{peer}/v1", "sk-test", "tiny-model", timeout=5)
    ctx = context({"prompt": "hello", "system": "be brief"})
    out = llm(ctx)
    assert out == {
        "text": "echo: hello",
        "finish_reason": "stop",
        "model": "tiny-model",
        "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
    }
    assert ctx.usage == Usage(tokens_in=5, tokens_out=3, model="tiny-model"), "reported with the step, no cost"
    sent = Recorder.requests[-1]
    assert sent["body"]["messages"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}]
    assert sent["auth"] == "Bearer sk-test"
    limited, refused, empty = context({"prompt": "rate limit me"}), context({"prompt": "bad request"}), context({})
    with pytest.raises(RetryableError):
        llm(limited)
    with pytest.raises(PermanentError, match="HTTP 400"):
        llm(refused)
    with pytest.raises(PermanentError, match=r"payload\.prompt"):
        llm(empty)
    assert [c.usage for c in (limited, refused, empty)] == [None, None, None], "no reply, no usage"


def test_llm_usage_names_the_model_asked_for_the_one_model_prices_is_keyed_by(peer: str) -> None:
    llm = llm_executor(f"{peer}/v1", "sk-test", "tiny-model", timeout=5)
    ctx = context({"prompt": "snapshot", "model": "gpt-4o-mini"})
    assert llm(ctx)["model"] == "gpt-4o-mini-2024-07-18", "the reply's own name stays in the output"
    assert ctx.usage == Usage(tokens_in=5, tokens_out=3, model="gpt-4o-mini")
    llm(ctx)  # a second call in the same attempt adds up
    assert ctx.usage == Usage(tokens_in=10, tokens_out=6, model="gpt-4o-mini")
    quiet = context({"prompt": "no usage"})
    assert llm(quiet)["text"] == "echo: no usage"
    assert quiet.usage is None, "a reply without usage reports none"


def test_usage_adds_up_across_calls_and_refuses_what_can_never_be_right() -> None:
    ctx = context()
    assert ctx.usage is None
    ctx.add_usage(tokens_in=10, tokens_out=2, cost_usd=0.5, model="a")
    total = ctx.add_usage(tokens_in=5, cost_usd=0.25, model="b")
    assert total == ctx.usage == Usage(tokens_in=15, tokens_out=2, cost_usd=0.75, model="b")
    ctx.add_usage(tokens_out=1)  # a call without a cost: the database prices all the tokens instead
    assert ctx.usage == Usage(tokens_in=15, tokens_out=3, cost_usd=None, model="b")
    assert ctx.usage.to_json() == {"tokens_in": 15, "tokens_out": 3, "model": "b"}
    bad: list[dict[str, Any]] = [
        {"tokens_in": -1},
        {"tokens_out": 1.5},
        {"tokens_in": True},
        {"cost_usd": float("nan")},
        {"cost_usd": -0.1},
        {"cost_usd": "0.1"},
        {"model": ""},
    ]
    for fields in bad:
        with pytest.raises(ValueError, match=f"usage\\.{next(iter(fields))} must be"):
            ctx.add_usage(**fields)
    assert ctx.usage == Usage(tokens_in=15, tokens_out=3, model="b"), "a refused call adds nothing"


@pytest.mark.parametrize("path", ["/headers", "/body"])
def test_http_ends_at_its_timeout_for_the_whole_request_however_slowly_the_server_answers(path: str) -> None:
    """A server sending a byte every second never trips a per-read timeout; the request's total deadline cuts
    it off (connect, headers and body together): "timeout": 3 ends within about 3 s, not minutes."""
    http = http_executor(["127.0.0.1"], max_timeout=30.0)
    with Trickle(interval=1.0) as server:
        started = time.monotonic()
        with pytest.raises(RetryableError, match=r"GET 127\.0\.0\.1: timed out after 3s"):
            http(context({"url": f"{server.url}{path}", "timeout": 3}))
        took = time.monotonic() - started
    assert 2.9 < took < 4.0, f"{took:.1f}s"


def test_http_is_bounded_by_the_step_s_time_left_and_cut_off_when_the_step_is_cancelled() -> None:
    http = http_executor(["127.0.0.1"], max_timeout=30.0)
    with Trickle(interval=1.0) as server:
        ctx = context({"url": f"{server.url}/headers", "timeout": 30}, ends_at=time.monotonic() + 2)
        started = time.monotonic()
        with pytest.raises(RetryableError, match="timed out after"):
            http(ctx)
        assert time.monotonic() - started < 3.0, "the deadline (2 s left) beats the payload's 30 s"
        ctx = context({"url": f"{server.url}/body", "timeout": 30})
        threading.Timer(0.5, ctx.cancelled.set).start()
        started = time.monotonic()
        with pytest.raises(RetryableError, match=r"GET 127\.0\.0\.1: cancelled"):
            http(ctx)
        assert time.monotonic() - started < 1.5, "cancellation cuts the request off at once"
        with pytest.raises(RetryableError, match="no time left"):
            http(context({"url": f"{server.url}/body"}, ends_at=time.monotonic() - 1))


def test_llm_calls_are_bounded_by_the_step_s_time_left() -> None:
    with Trickle(interval=1.0) as server:
        llm = llm_executor(f"{server.url}/headers/v1", "sk-test", "tiny-model", timeout=30)
        started = time.monotonic()
        with pytest.raises(RetryableError, match="LLM call timed out after"):
            llm(context({"prompt": "hello"}, ends_at=time.monotonic() + 2))
        assert time.monotonic() - started < 3.0


def test_the_step_context_counts_time_left_on_the_monotonic_clock() -> None:
    assert context(ends_at=time.monotonic() + 10).time_left() == pytest.approx(10, abs=0.5)
    assert context(ends_at=time.monotonic() - 10).time_left() == 0
    # Built without the worker's clock, it reads the deadline against the wall clock.
    assert context(deadline=datetime.now(UTC) + timedelta(seconds=20)).time_left() == pytest.approx(20, abs=0.5)


def test_configured_executors_register_only_when_configured() -> None:
    bare = builtin_executors(WorkerSettings())
    assert sorted(bare) == ["echo", "emit_event", "noop", "sleep"]
    configured = builtin_executors(WorkerSettings(http_allowed_hosts=["api.example.com"], llm_base_url="http://llm/v1"))
    assert sorted(configured) == ["echo", "emit_event", "http", "llm", "noop", "sleep"]


def test_registry_decorator_and_aliases() -> None:
    @executor("custom_kind")
    def custom(ctx: StepContext) -> str:
        return "ok"

    assert registry()["custom_kind"] is custom
    combined = with_aliases({"sleep": sleep}, {"crawl": "sleep"})
    assert combined["crawl"] is sleep
    with pytest.raises(KeyError, match="no executor for 'nothing'"):
        with_aliases({"sleep": sleep}, {"crawl": "nothing"})


def test_worker_settings_from_the_environment() -> None:
    settings = WorkerSettings.from_environ(
        {
            "WORKER_ID": "w-1",
            "WORKER_KINDS": "crawl, analyze",
            "WORKER_CONCURRENCY": "8",
            "WORKER_ALIASES": "crawl=sleep",
            "WORKER_HTTP_ALLOWED_HOSTS": "API.example.com",
            "WORKER_HTTP_MAX_RESPONSE_BYTES": "2048",
            "LLM_API_KEY": "sk-secret",
        }
    )
    assert settings.http_max_response_bytes == 2048
    assert WorkerSettings.from_environ({}).http_max_response_bytes == 1024 * 1024
    assert (settings.worker_id, settings.kinds, settings.concurrency) == ("w-1", ["crawl", "analyze"], 8)
    assert settings.aliases == {"crawl": "sleep"}
    assert settings.http_allowed_hosts == ["api.example.com"]
    assert "sk-secret" not in repr(settings)
    assert (WorkerSettings.from_environ({}).poll_min, WorkerSettings.from_environ({}).poll_max) == (5.0, 15.0)
    with pytest.raises(ConfigError, match="WORKER_CONCURRENCY must be at least 1"):
        WorkerSettings.from_environ({"WORKER_CONCURRENCY": "0"})
    with pytest.raises(ConfigError, match="WORKER_POLL_MAX must be at least WORKER_POLL_MIN"):
        WorkerSettings.from_environ({"WORKER_POLL_MIN": "10", "WORKER_POLL_MAX": "2"})
    with pytest.raises(ConfigError, match="WORKER_ALIASES must be KIND=EXECUTOR"):
        WorkerSettings.from_environ({"WORKER_ALIASES": "crawl"})
