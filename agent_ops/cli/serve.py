"""`agent-ops serve`: the HTTP service, the ops console, the heartbeat endpoint, /metrics and /healthz."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from agent_ops.cli.context import connection_options, open_ops
from agent_ops.cli.output import note
from agent_ops.triggers import load_plugins

# The setting (environment or .env) naming the proxies whose X-Forwarded-For is believed.
FORWARDED_SETTING = "AGENT_OPS_FORWARDED_ALLOW_IPS"
STARTUP_FAILURE = 3  # as `uvicorn.run` exits when it cannot listen


def _serve(args: argparse.Namespace) -> int:
    import uvicorn  # noqa: PLC0415 - only the serve command needs the ASGI server

    from agent_ops.console import ConsoleAccess  # noqa: PLC0415
    from agent_ops.http_server import server_config  # noqa: PLC0415
    from agent_ops.notify import Deliverer, DeliveryLoop  # noqa: PLC0415
    from agent_ops.server import create_app, loopback_host  # noqa: PLC0415
    from agent_ops.throttle import KeyThrottle  # noqa: PLC0415

    plugins = load_plugins(args.plugins or [])
    with open_ops(args) as ops:
        if ops.settings.ops_key is None:
            note("warning: OPS_KEY is not set, so /api/ops/heartbeat answers 503 until it is")
        if not ConsoleAccess.from_settings(ops.settings).open:
            note("warning: neither CONSOLE_KEY nor OPS_KEY is set, so the console stays closed (503)")
        proxies = args.forwarded_allow_ips or (ops.settings.environ.get(FORWARDED_SETTING) or "").strip() or None
        if proxies is None and os.environ.get("FORWARDED_ALLOW_IPS"):
            note("warning: FORWARDED_ALLOW_IPS is ignored; name trusted proxies with --forwarded-allow-ips")
        note(f"serving on http://{args.host}:{args.port} (heartbeat: /api/ops/heartbeat, health: /healthz)")
        note(f"console: http://{args.host}:{args.port}/console/ (sign in with CONSOLE_KEY, else OPS_KEY)")
        note(
            f"client addresses: from X-Forwarded-For when sent by {proxies}"
            if proxies
            else "client addresses: the connection's peer (X-Forwarded-For is ignored without --forwarded-allow-ips)"
        )
        metrics_open = loopback_host(args.host)
        note(
            f"metrics: http://{args.host}:{args.port}/metrics, "
            + (
                "open to loopback clients (proxied requests need the Bearer OPS_KEY)"
                if metrics_open
                else "with the Bearer OPS_KEY (not a loopback bind)"
            )
        )
        throttle = KeyThrottle(global_limit=args.key_failures_per_minute)
        app = create_app(
            ops, plugins, throttle=throttle, body_timeout=args.body_timeout, metrics_open_on_loopback=metrics_open
        )
        config = server_config(
            app,
            host=args.host,
            port=args.port,
            log_level=args.log_level,
            header_timeout=args.header_timeout,
            keep_alive_timeout=args.keep_alive_timeout,
            forwarded_allow_ips=proxies,
        )
        _log_warnings_to_stderr("agent_ops.throttle")
        _log_warnings_to_stderr("agent_ops.notify")
        server = uvicorn.Server(config)
        with contextlib.ExitStack() as background:
            if args.notify_every > 0:
                # Notifications that are due go out from here every few seconds (agent_ops/notify.py).
                deliverer = background.enter_context(Deliverer(ops))
                background.enter_context(DeliveryLoop(deliverer, every=args.notify_every))
                note(f"notifications: delivered every {args.notify_every:g} s (policy `notifications`)")
            # uvicorn re-raises the Ctrl-C it has already shut down cleanly for; `uvicorn.run` swallows it too.
            with contextlib.suppress(KeyboardInterrupt):
                server.run()
    return 0 if server.started else STARTUP_FAILURE


def _log_warnings_to_stderr(name: str) -> None:
    """The throttle's trip line reaches the operator, although the CLI keeps agent_ops's logs quiet."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s:  %(message)s"))
    handler.setLevel(logging.WARNING)
    logging.getLogger(name).addHandler(handler)


def _positive(kind: type[float] | type[int]) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be more than 0, not {text}")
        return value

    return parse


def register(commands: Any) -> None:
    common = connection_options()
    serve = commands.add_parser(
        "serve",
        parents=[common],
        help="HTTP service: the ops console (/console/), /api/ops/heartbeat (Bearer OPS_KEY), /metrics and /healthz",
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--plugins", action="append", metavar="MODULE", help="import trigger plug-ins from MODULE")
    serve.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    serve.add_argument(
        "--notify-every",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="deliver due notifications every SECONDS from a background thread; 0 turns it off (default 5)",
    )
    limits = serve.add_argument_group("limits")
    limits.add_argument(
        "--forwarded-allow-ips",
        metavar="ADDRESSES",
        help="believe X-Forwarded-For/-Proto only from these proxies: comma-separated IPs or networks, or * "
        f"(default: ${FORWARDED_SETTING}, else none: the client is the connection's peer)",
    )
    timeouts: list[tuple[str, type[float] | type[int], float, str]] = [
        (
            "--header-timeout",
            float,
            10.0,
            "close a connection that has not sent a complete request head within SECONDS",
        ),
        ("--body-timeout", float, 10.0, "answer 408 when a request body stalls for SECONDS"),
        ("--keep-alive-timeout", int, 5, "close an idle keep-alive connection after SECONDS"),
    ]
    for flag, kind, default, text in timeouts:
        limits.add_argument(
            flag, type=_positive(kind), default=default, metavar="SECONDS", help=f"{text} (default {default:g})"
        )
    limits.add_argument(
        "--key-failures-per-minute",
        type=_positive(int),
        default=100,
        metavar="N",
        help="after N wrong keys within a minute from all clients together, refuse key checks (429) except "
        "from clients whose key was right within the hour (default 100; per client: 5)",
    )
    serve.set_defaults(handler=_serve)
