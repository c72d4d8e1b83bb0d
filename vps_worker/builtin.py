"""Built-in executors: noop, echo, sleep, emit_event, and — when configured — http and llm.

Executors that need configuration register only when it is there (an allow-list of hosts for `http`; the
`openai` package and a key or base URL for `llm`), so a worker never claims steps it cannot run.
`http` and `llm` honour the step's deadline for the whole request (vps_worker.deadline): connect, headers
and body together end by the smaller of their own timeout and the time the attempt has left, and a
cancelled step (ctx.cancelled) cuts its request off at once.
"""

from __future__ import annotations

import json
from importlib.util import find_spec
from typing import Any
from urllib.parse import urlsplit

import httpx

from agent_ops.errors import InvalidInput
from vps_worker.config import WorkerSettings
from vps_worker.deadline import RequestDeadline, trace_hook
from vps_worker.executors import Executor, PermanentError, RetryableError, StepContext

MAX_BODY_CHARS = 65536
# The default of WORKER_HTTP_MAX_RESPONSE_BYTES: the largest output ops_complete_step accepts (1 MiB of JSON).
DEFAULT_MAX_RESPONSE_BYTES = 1024 * 1024
# Headers a payload may not set. Host picks the site behind a shared proxy or CDN (the URL's host is the one
# the allow-list checked); the others are hop-by-hop or framing, which the HTTP client owns.
FORBIDDEN_HEADERS = frozenset(
    {"host", "connection", "keep-alive", "te", "trailer", "trailers", "transfer-encoding", "upgrade", "content-length"}
)


def noop(ctx: StepContext) -> dict[str, Any]:
    return {}


def echo(ctx: StepContext) -> dict[str, Any]:
    return {"payload": ctx.payload, "inputs": ctx.inputs}


def sleep(ctx: StepContext) -> dict[str, Any]:
    seconds = ctx.payload.get("seconds", 1)
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or not 0 <= seconds <= 86400:
        raise PermanentError("payload.seconds must be a number from 0 to 86400")
    if ctx.cancelled.wait(float(seconds)):
        raise RetryableError("interrupted before the sleep finished")
    return {"slept": seconds}


def emit_event(ctx: StepContext) -> dict[str, Any]:
    """Turn the payload into a domain event (e.g. `tweet:posted`) that triggers and reactions can see."""
    spec = ctx.payload
    if not isinstance(spec.get("type"), str):
        raise PermanentError("payload.type is required (e.g. tweet:posted)")
    fields = {k: spec[k] for k in ("title", "summary", "payload") if k in spec}
    try:
        event = ctx.emit_event(spec["type"], tags=spec.get("tags"), **fields)
    except InvalidInput as error:
        raise PermanentError(str(error)) from None
    return {"event_id": event.event_id, "type": event.type}


def host_allowed(host: str, allowed: list[str]) -> bool:
    host = host.lower()
    for pattern in allowed:
        if pattern.startswith("*.") and (host.endswith(pattern[1:]) or host == pattern[2:]):
            return True
        if host == pattern:
            return True
    return False


def request_headers(headers: Any) -> dict[str, str]:
    """payload.headers, checked: strings only, no Host, hop-by-hop, Proxy-* or framing header, no line breaks."""
    if not isinstance(headers, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
        raise PermanentError("payload.headers must be an object of strings")
    for name, value in headers.items():
        lowered = name.strip().lower()
        if lowered in FORBIDDEN_HEADERS or lowered.startswith("proxy-"):
            raise PermanentError(f"payload.headers may not set {name.strip()} (routing, hop-by-hop or framing header)")
        if any(c in name or c in value for c in "\r\n\0"):
            raise PermanentError(f"payload.headers[{name.strip()!r}] holds a line break or NUL")
    return headers


def read_capped(response: httpx.Response, limit: int, deadline: RequestDeadline, what: str) -> bytes:
    """The body, streamed: fails for good past `limit` bytes (decoded), before reading any further."""
    declared = response.headers.get("content-length", "")
    too_large = PermanentError(f"{what}: response body larger than {limit} bytes (WORKER_HTTP_MAX_RESPONSE_BYTES)")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
        if deadline.fired is not None or deadline.left() <= 0:
            raise httpx.ReadTimeout("the request's deadline passed")  # the watcher is cutting it off
    return b"".join(chunks)


def http_executor(
    allowed_hosts: list[str], max_timeout: float, max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
) -> Executor:
    """A webhook call described by the payload: {url, method?, headers?, json? | body?, timeout?}.

    Only hosts on the allow-list (`WORKER_HTTP_ALLOWED_HOSTS`, `*.example.com` allowed) are called, and the
    payload may not set Host, hop-by-hop (Connection, Keep-Alive, TE, Trailer, Transfer-Encoding, Upgrade),
    Proxy-* or Content-Length headers. The response is streamed: a body over `max_response_bytes`
    (`WORKER_HTTP_MAX_RESPONSE_BYTES`, default 1 MiB) fails the step for good; JSON comes back decoded,
    other text cut to 64 Ki characters. 2xx succeeds; 429 and 5xx are retryable; any other status fails for good.
    The whole request ends by the smaller of its timeout and the step's time left (retryable 'timed out').
    """

    def http(ctx: StepContext) -> dict[str, Any]:
        spec = ctx.payload
        url = spec.get("url")
        if not isinstance(url, str):
            raise PermanentError("payload.url is required")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise PermanentError("payload.url must be an http(s) URL")
        if not host_allowed(parts.hostname, allowed_hosts):
            raise PermanentError(f"host {parts.hostname} is not in WORKER_HTTP_ALLOWED_HOSTS")
        timeout = min(float(spec.get("timeout", max_timeout)), max_timeout, ctx.time_left())
        method = str(spec.get("method") or ("POST" if "json" in spec or "body" in spec else "GET")).upper()
        headers = request_headers(spec.get("headers") or {})
        what = f"{method} {parts.hostname}"
        if timeout <= 0:
            raise RetryableError(f"{what}: no time left before the step's deadline")
        with RequestDeadline(timeout, ctx.cancelled) as deadline:
            try:
                # A client of its own: a fresh connection, so the deadline knows its socket.
                with (
                    httpx.Client(timeout=timeout, follow_redirects=False) as client,
                    client.stream(
                        method,
                        url,
                        headers=headers,
                        json=spec.get("json"),
                        content=spec.get("body") if "json" not in spec else None,
                        extensions={"trace": deadline.trace},
                    ) as response,
                ):
                    status = response.status_code
                    if status == 429 or status >= 500:
                        raise RetryableError(f"{what}: HTTP {status}")  # the body is not read at all
                    raw = read_capped(response, max_response_bytes, deadline, what)
                    encoding = response.encoding or "utf-8"
                    content_type = response.headers.get("content-type")
            except httpx.HTTPError as error:
                if deadline.fired == "cancelled":
                    raise RetryableError(f"{what}: cancelled") from None
                if deadline.fired is not None or isinstance(error, httpx.TimeoutException):
                    raise RetryableError(f"{what}: timed out after {timeout:g}s") from None
                raise RetryableError(f"{what}: {type(error).__name__}") from None
        text = raw.decode(encoding, errors="replace")[:MAX_BODY_CHARS]
        if not 200 <= status < 300:
            raise PermanentError(f"{what}: HTTP {status}: {text[:200]}")
        try:
            body: Any = json.loads(raw)
        except (ValueError, RecursionError):  # not JSON, or nested too deeply for Python: keep it as text
            body = text
        return {"status": status, "content_type": content_type, "body": body}

    return http


def llm_executor(base_url: str | None, api_key: str | None, default_model: str, timeout: float) -> Executor:
    """A chat completion against any OpenAI-compatible API (the `openai` client, extra `agent-ops[llm]`).

    Payload: {prompt | messages, system?, model?, temperature?, max_tokens?}. Output: the text and token usage.
    A call ends by the smaller of `timeout` and the step's time left, however slowly the server answers.

    The reply's `usage` is reported with the step (`ctx.add_usage`): prompt_tokens as tokens_in,
    completion_tokens as tokens_out, and the model asked for (payload.model, else `default_model`), the name
    policy `model_prices` is keyed by; the reply's own model name (often a dated snapshot) is in the output. No
    cost is computed here: the database prices the tokens from `model_prices`. A reply without usage reports
    none.
    """
    import openai  # noqa: PLC0415 - an optional extra

    # No idle connections kept: each call opens its own, so its RequestDeadline knows the socket to cut.
    http_client = httpx.Client(
        timeout=timeout, limits=httpx.Limits(max_keepalive_connections=0), event_hooks={"request": [trace_hook]}
    )
    client = openai.OpenAI(
        base_url=base_url, api_key=api_key or "unused", timeout=timeout, max_retries=0, http_client=http_client
    )

    def llm(ctx: StepContext) -> dict[str, Any]:
        spec = ctx.payload
        messages = spec.get("messages")
        if messages is None:
            if not isinstance(spec.get("prompt"), str):
                raise PermanentError("payload.prompt (a string) or payload.messages is required")
            messages = [{"role": "user", "content": spec["prompt"]}]
            if isinstance(spec.get("system"), str):
                messages.insert(0, {"role": "system", "content": spec["system"]})
        options: dict[str, Any] = {k: spec[k] for k in ("temperature", "max_tokens") if k in spec}
        limit = min(timeout, ctx.time_left())
        if limit <= 0:
            raise RetryableError("LLM call: no time left before the step's deadline")
        model = str(spec.get("model") or default_model)
        with RequestDeadline(limit, ctx.cancelled) as deadline:
            try:
                reply = client.with_options(timeout=limit).chat.completions.create(
                    model=model, messages=messages, **options
                )
            except (
                openai.RateLimitError,
                openai.APITimeoutError,
                openai.APIConnectionError,
                openai.InternalServerError,
            ) as e:
                if deadline.fired == "cancelled":
                    raise RetryableError("LLM call cancelled") from None
                if deadline.fired is not None or isinstance(e, openai.APITimeoutError):
                    raise RetryableError(f"LLM call timed out after {limit:g}s") from None
                raise RetryableError(f"LLM call failed: {type(e).__name__}") from None
            except openai.APIStatusError as error:
                raise PermanentError(f"LLM call refused: HTTP {error.status_code}") from None
        choice = reply.choices[0]
        usage = reply.usage
        if usage is not None:
            ctx.add_usage(
                tokens_in=_count(usage.prompt_tokens), tokens_out=_count(usage.completion_tokens), model=model
            )
        return {
            "text": choice.message.content,
            "finish_reason": choice.finish_reason,
            "model": reply.model,
            "usage": {
                "prompt_tokens": usage.prompt_tokens if usage else None,
                "completion_tokens": usage.completion_tokens if usage else None,
                "total_tokens": usage.total_tokens if usage else None,
            },
        }

    return llm


def _count(value: Any) -> int | None:
    """A token count from a reply (OpenAI-compatible servers differ): a whole number of at least 0, else None."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def builtin_executors(settings: WorkerSettings) -> dict[str, Executor]:
    executors: dict[str, Executor] = {"noop": noop, "echo": echo, "sleep": sleep, "emit_event": emit_event}
    if settings.http_allowed_hosts:
        executors["http"] = http_executor(
            settings.http_allowed_hosts, settings.http_timeout, settings.http_max_response_bytes
        )
    if find_spec("openai") is not None and (settings.llm_api_key or settings.llm_base_url):
        key = settings.llm_api_key.reveal() if settings.llm_api_key else None
        executors["llm"] = llm_executor(settings.llm_base_url, key, settings.llm_model, settings.http_timeout)
    return executors


def json_output(value: Any) -> Any:
    """The executor's output as the database will store it, or PermanentError when it cannot be JSON."""
    try:
        # allow_nan=False: NaN and Infinity are not JSON, and Postgres refuses them.
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as error:
        raise PermanentError(f"output is not JSON-serialisable: {error}") from None
    except RecursionError:
        raise PermanentError("output is nested too deeply to encode as JSON") from None
