"""The ops console's pages and form actions (mounted at /console by `agent-ops serve`).

Server-rendered Jinja2 with autoescaping; a small script (static/console.js) adds in-place results for the
proposal buttons, live events and mission refresh, and every page works without it. Every page and action
needs a session (see auth.py); every form action checks the session's CSRF token. The console reaches the
database only through `agent_ops.Ops`. Ids in paths and queries are checked against Postgres's bigint before
they reach it, so a refusal names the parameter, never a SQL signature.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import urlencode

import jinja2
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from agent_ops.client import Ops
from agent_ops.console.auth import NAME, SESSION_COOKIE, ConsoleAccess, Sessions, csrf_token, csrf_valid, operator
from agent_ops.console.charts import Chart, health_charts
from agent_ops.errors import NotFound, OpsError, TransportError
from agent_ops.http_limits import FORM_BYTES
from agent_ops.models import MISSION_STATUSES, GatePreview, Notification, Status, TriggerRule
from agent_ops.throttle import KeyThrottle

T = TypeVar("T")
Handler = Callable[[Request], Awaitable[Response]]

BIGINT_MAX = 2**63 - 1
# ops_set_policy accepts at most ops_internal.max_policy_bytes() (256 KiB) of JSON. Form encoding can triple
# each byte (%XX), and the form carries its CSRF token besides.
POLICY_VALUE_BYTES = 256 * 1024
POLICY_FORM_BYTES = 3 * POLICY_VALUE_BYTES + FORM_BYTES
# ops_set_trigger_rule accepts a rule of at most ops_internal.max_trigger_rule_bytes() (64 KiB) of JSON; the
# editor's form is capped the same way (the dry run posts the same form).
TRIGGER_RULE_BYTES = 64 * 1024
TRIGGER_FORM_BYTES = 3 * TRIGGER_RULE_BYTES + FORM_BYTES
# Body caps above FORM_BYTES, by path prefix inside the console (see agent_ops/http_limits.py).
LARGER_BODIES = {
    "/policy/": POLICY_FORM_BYTES,
    "/triggers/save": TRIGGER_FORM_BYTES,
    "/triggers/preview": TRIGGER_FORM_BYTES,
}
# Scripts and styles come only from /console/static: no inline code runs, whatever an event's text holds.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def _time(value: datetime | str | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _duration(start: datetime | None, end: datetime | None) -> str:
    if start is None:
        return "-"
    seconds = ((end or datetime.now(UTC)) - start).total_seconds()
    text = (
        f"{seconds * 1000:.0f} ms"
        if seconds < 1
        else f"{seconds:.1f} s"
        if seconds < 120
        else f"{seconds / 60:.0f} min"
    )
    return text if end is not None else f"{text} so far"


def _json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str, sort_keys=True)


def _age(seconds: float | int | None) -> str:
    """A duration for people: 45 s, 12 min, 3.5 h, 2.0 d."""
    if seconds is None:
        return "-"
    value = float(seconds)
    if value < 120:
        return f"{value:.0f} s"
    if value < 7200:
        return f"{value / 60:.0f} min"
    if value < 172800:
        return f"{value / 3600:.1f} h"
    return f"{value / 86400:.1f} d"


def _ago(value: datetime | str | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return f"{_age(max(0.0, (datetime.now(UTC) - value).total_seconds()))} ago"


def _next_firing(rule: TriggerRule) -> str:
    if not rule.enabled:
        return "-"
    return "due now" if rule.due else _time(rule.next_due_at)


def _rule_text(rule: TriggerRule) -> str:
    """A rule's definition for its editor, in the order of TRIGGER_RULE_FIELDS."""
    return json.dumps(rule.definition(), indent=2, ensure_ascii=False)


# What the new-rule editor starts with: a valid rule that starts disabled.
NEW_TRIGGER_RULE = {
    "name": "my-rule",
    "trigger_event": "event",
    "conditions": {"event_type": "mission:failed", "lookback_minutes": 60},
    "action_config": {
        "agent_id": "brain",
        "title": "Look into mission #{{event.mission_id}}",
        "steps": [{"kind": "analyze", "payload": {"mission_id": "{{event.mission_id}}"}}],
    },
    "cooldown_minutes": 60,
    "enabled": False,
}


# Why a stalled kind's queue does not move (ops_queue_stalls.reason), for people.
STALL_REASONS = {
    "no_worker": "no live worker serves it",
    "disabled": "the kind is disabled",
    "workers_busy": "its workers do not keep up",
}


templates = jinja2.Environment(
    loader=jinja2.PackageLoader("agent_ops.console", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def _usd(value: float | None) -> str:
    """An amount of USD for people: up to 6 decimals, trailing zeros dropped (0.0042, 12.5, 0)."""
    return "-" if value is None else f"{value:.6f}".rstrip("0").rstrip(".")


templates.filters.update(time=_time, pretty=_json, usd=_usd)
templates.globals.update(
    duration=_duration, age=_age, ago=_ago, stall_reasons=STALL_REASONS, next_firing=_next_firing, rule_text=_rule_text
)


class BadParameter(ValueError):
    """A path or query parameter the console refuses before calling the database (answered 400)."""


def bigint(name: str, value: object, minimum: int = 1) -> int:
    """`value` as an integer from `minimum` to Postgres's bigint maximum, else BadParameter naming `name`."""
    try:
        number = int(str(value).strip())
    except ValueError:
        raise BadParameter(f"{name} must be an integer") from None
    if not minimum <= number <= BIGINT_MAX:
        raise BadParameter(f"{name} must be an integer from {minimum} to {BIGINT_MAX}")
    return number


class ConsoleStatic(StaticFiles):
    """StaticFiles where a name the file system cannot hold (a NUL byte) is simply not found, not a 500."""

    def lookup_path(self, path: str) -> tuple[str, os.stat_result | None]:
        if "\x00" in path:
            return "", None
        return super().lookup_path(path)


class Console:
    def __init__(self, ops: Ops, access: ConsoleAccess, throttle: KeyThrottle | None = None) -> None:
        self.ops = ops
        self.access = access
        self.sessions = Sessions(access)
        self.throttle = throttle or KeyThrottle()

    # -- plumbing ---------------------------------------------------------------------------------------------

    async def call(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await run_in_threadpool(function, *args, **kwargs)

    @staticmethod
    def base(request: Request) -> str:
        return str(request.scope.get("root_path", "")).rstrip("/")

    @staticmethod
    def flash(request: Request, text: str, kind: str = "ok") -> None:
        request.session.setdefault("flash", []).append({"kind": kind, "text": text})

    async def render(self, request: Request, template: str, http_status: int = 200, **context: Any) -> HTMLResponse:
        if "system" not in context:
            try:
                context["system"] = (await self.call(self.ops.get_policy, "system")).value
            except NotFound:
                context["system"] = {"enabled": True}  # no key: the switch is on (ops_internal.system_enabled)
        base = self.base(request)
        here = request.url.path[len(base) :] or "/"
        if request.method != "GET":  # a form's answer (e.g. a refused policy): come back to its page, not the action
            here = "/" + here.strip("/").split("/")[0]
        body = templates.get_template(template).render(
            base=base,
            csrf=csrf_token(request.session),
            operator=operator(request.session),
            flashes=request.session.pop("flash", []),
            path=request.url.path,
            here=here,
            **context,
        )
        return HTMLResponse(body, status_code=http_status, headers=SECURITY_HEADERS)

    def closed(self, request: Request) -> HTMLResponse:
        body = templates.get_template("closed.html").render(base=self.base(request))
        return HTMLResponse(body, status_code=503, headers=SECURITY_HEADERS)

    def page(self, handler: Handler) -> Handler:
        """A page or action for signed-in sessions only; database outages become a 503 page."""

        async def guarded(request: Request) -> Response:
            if not self.access.open:
                return self.closed(request)
            if not self.sessions.signed_in(request.session):
                if request.method == "GET" and not request.headers.get("x-console-fetch"):
                    query = request.url.query
                    target = urlencode({"next": request.url.path + (f"?{query}" if query else "")})
                    return RedirectResponse(f"{self.base(request)}/login?{target}", status_code=303)
                return JSONResponse({"error": "sign in first"}, status_code=401, headers=SECURITY_HEADERS)
            try:
                return await handler(request)
            except BadParameter as error:
                if self.wants_fragment(request):
                    return JSONResponse({"error": str(error)}, status_code=400, headers=SECURITY_HEADERS)
                return await self.render(
                    request, "missing.html", http_status=400, heading="Bad request", message=str(error)
                )
            except TransportError as error:
                body = templates.get_template("closed.html").render(base=self.base(request), error=error.message)
                return HTMLResponse(body, status_code=503, headers=SECURITY_HEADERS)

        return guarded

    def action(self, handler: Callable[[Request, FormData], Awaitable[Response]]) -> Handler:
        """A form action: signed in, and the form carries this session's CSRF token."""

        async def checked(request: Request) -> Response:
            form = await request.form()
            if not csrf_valid(request.session, form.get("csrf")):
                return HTMLResponse("refused: missing or wrong CSRF token", status_code=403, headers=SECURITY_HEADERS)
            return await handler(request, form)

        return self.page(checked)

    def back(self, request: Request, path: str) -> RedirectResponse:
        return RedirectResponse(f"{self.base(request)}{path}", status_code=303)

    @staticmethod
    def wants_fragment(request: Request) -> bool:
        return request.headers.get("x-console-fetch") == "1"

    # -- sign in and out --------------------------------------------------------------------------------------

    async def login_page(self, request: Request) -> Response:
        if not self.access.open:
            return self.closed(request)
        if self.sessions.signed_in(request.session):
            return self.back(request, "/")
        return self.login_form(request, request.query_params.get("next", ""))

    def login_form(self, request: Request, next_path: str, error: str | None = None, status: int = 200) -> Response:
        body = templates.get_template("login.html").render(
            base=self.base(request), csrf=csrf_token(request.session), next=next_path, error=error
        )
        return HTMLResponse(body, status_code=status, headers=SECURITY_HEADERS)

    async def login(self, request: Request) -> Response:
        if not self.access.open:
            return self.closed(request)
        client = request.client.host if request.client else None
        # Before the form is read: a throttled client costs no parsing, and its key is not even looked at.
        wait = self.throttle.wait(client)
        if wait > 0:
            message = f"Too many wrong keys: try again in {wait:.0f} s."
            return self.login_form(request, request.query_params.get("next", ""), message, 429)
        form = await request.form()
        next_path = str(form.get("next", ""))
        if not csrf_valid(request.session, form.get("csrf")):
            return self.login_form(request, next_path, "The form expired; try again.", 403)
        key, name = str(form.get("key", "")), str(form.get("name", "")).strip()
        if not self.access.key_matches(key):
            self.throttle.failed(client)
            return self.login_form(request, next_path, "Wrong key.", 401)
        self.throttle.succeeded(client)
        if name and not NAME.match(name):
            return self.login_form(request, next_path, "Name: up to 60 letters, digits, spaces, _ . @ -", 400)
        self.sessions.sign_in(request.session, name)
        target = next_path
        base = self.base(request)
        # Only a path inside the console: never an open redirect.
        if not target.startswith(f"{base}/") or target.startswith("//") or "\\" in target:
            target = f"{base}/"
        return RedirectResponse(target, status_code=303)

    async def logout(self, request: Request, form: FormData) -> Response:
        self.sessions.sign_out(request.session)
        return self.back(request, "/login")

    # -- pages ------------------------------------------------------------------------------------------------

    async def home(self, request: Request) -> Response:
        return self.back(request, "/proposals")

    async def proposals(self, request: Request) -> Response:
        pending = await self.call(self.ops.pending_proposals, limit=100)
        previews = await asyncio.gather(*(self.call(self._preview, p.id) for p in pending))
        verdicts = {p.id: preview for p, preview in zip(pending, previews, strict=True)}
        recent = [p for p in await self.call(self.ops.proposals, limit=15) if p.status != "pending"][:8]
        return await self.render(request, "proposals.html", pending=pending, verdicts=verdicts, recent=recent)

    def _preview(self, proposal_id: int) -> GatePreview | None:
        try:
            return self.ops.preview_gates(proposal_id)
        except NotFound:
            return None  # decided and pruned since the list was read

    async def decide(self, request: Request, form: FormData) -> Response:
        proposal_id = bigint("proposal_id", request.path_params["proposal_id"])
        approving = request.url.path.endswith("/approve")
        reason = str(form.get("reason", "")).strip()
        try:
            if approving:
                result = await self.call(self.ops.approve, proposal_id, decided_by=operator(request.session))
            else:
                result = await self.call(
                    self.ops.reject, proposal_id, reason=reason, decided_by=operator(request.session)
                )
            outcome: dict[str, Any] = {
                "proposal_id": proposal_id,
                "status": result.status,
                "reason": result.reason,
                "mission_id": result.mission_id,
                "approving": approving,
            }
        except OpsError as error:
            outcome = {
                "proposal_id": proposal_id,
                "status": "error",
                "reason": refusal_or_raise(error),
                "approving": approving,
            }
        if self.wants_fragment(request):
            body = templates.get_template("_decided.html").render(base=self.base(request), outcome=outcome)
            return HTMLResponse(body, headers=SECURITY_HEADERS)
        self.flash(request, _decision_text(outcome), "error" if outcome["status"] == "error" else "ok")
        return self.back(request, "/proposals")

    async def missions(self, request: Request) -> Response:
        status = request.query_params.get("status") or None
        agent = request.query_params.get("agent", "").strip() or None
        error = None
        try:
            missions = await self.call(self.ops.missions, status=status, agent_id=agent, limit=100)
        except OpsError as failure:
            missions, error = [], refusal_or_raise(failure)
        return await self.render(
            request,
            "missions.html",
            missions=missions,
            status=status or "",
            agent=agent or "",
            statuses=MISSION_STATUSES,
            error=error,
        )

    async def mission(self, request: Request) -> Response:
        mission_id = bigint("mission_id", request.path_params["mission_id"])
        try:
            mission = await self.call(self.ops.mission, mission_id)
        except OpsError as error:
            return await self.render(request, "missing.html", http_status=404, message=refusal_or_raise(error))
        events = await self.call(self.ops.events, mission_id=mission_id, limit=100)
        return await self.render(request, "mission.html", mission=mission, events=events)

    async def cancel(self, request: Request, form: FormData) -> Response:
        mission_id = bigint("mission_id", request.path_params["mission_id"])
        given, who = str(form.get("reason", "")).strip(), operator(request.session)
        reason = f"{given} ({who})" if given else f"cancelled by {who}"
        try:
            outcome = await self.call(self.ops.cancel, mission_id, reason=reason)
            self.flash(request, f"Mission #{mission_id} is {outcome.status}.")
        except OpsError as error:
            self.flash(request, f"Mission #{mission_id} was not cancelled: {refusal_or_raise(error)}", "error")
        return self.back(request, f"/missions/{mission_id}")

    def _event_filters(self, request: Request) -> dict[str, str | None]:
        return {name: request.query_params.get(name, "").strip() or None for name in ("type", "tag", "agent")}

    async def events(self, request: Request) -> Response:
        filters = self._event_filters(request)
        error = None
        try:
            events = await self.call(
                self.ops.events, type=filters["type"], tag=filters["tag"], agent_id=filters["agent"], limit=100
            )
        except OpsError as failure:
            events, error = [], refusal_or_raise(failure)
        return await self.render(
            request,
            "events.html",
            events=events,
            filters=filters,
            error=error,
            last_id=max((e.id for e in events), default=0),
        )

    async def events_feed(self, request: Request) -> Response:
        """New events after `after_id`, oldest first, as table rows for the live feed."""
        filters = self._event_filters(request)
        try:
            after = bigint("after_id", request.query_params.get("after_id", "0"), minimum=-BIGINT_MAX - 1)
        except BadParameter as error:
            return JSONResponse({"error": str(error)}, status_code=400, headers=SECURITY_HEADERS)
        try:
            events = await self.call(
                self.ops.events,
                type=filters["type"],
                tag=filters["tag"],
                agent_id=filters["agent"],
                after_id=max(after, 0),
                limit=100,
            )
        except OpsError as error:
            return JSONResponse({"error": refusal_or_raise(error)}, status_code=400, headers=SECURITY_HEADERS)
        # Newest first, like the table they are put on top of.
        rows = templates.get_template("_event_rows.html").render(base=self.base(request), events=events[::-1])
        last = max((e.id for e in events), default=after)
        return JSONResponse({"last_id": last, "count": len(events), "html": rows}, headers=SECURITY_HEADERS)

    async def policy(self, request: Request) -> Response:
        return await self.render(
            request, "policy.html", policies=await self.call(self.ops.policies), errors={}, drafts={}
        )

    async def save_policy(self, request: Request, form: FormData) -> Response:
        key = str(request.path_params["key"])
        text = str(form.get("value", ""))
        try:
            value = json.loads(text)
        except json.JSONDecodeError as error:
            problem = f"not valid JSON: {error.msg} (line {error.lineno}, column {error.colno})"
        except RecursionError:
            problem = "not valid JSON: nested too deeply"
        else:
            try:
                await self.call(self.ops.set_policy, key, value, updated_by=operator(request.session))
            except OpsError as error:
                problem = refusal_or_raise(error)
            else:
                self.flash(request, f"Saved {key}.")
                return self.back(request, f"/policy#policy-{key}")
        policies = await self.call(self.ops.policies)
        if key not in {p.key for p in policies}:  # no editor to show the reason under
            self.flash(request, f"{key} was not saved: {problem}", "error")
        return await self.render(
            request, "policy.html", http_status=400, policies=policies, errors={key: problem}, drafts={key: text}
        )

    async def switch(self, request: Request, form: FormData) -> Response:
        """The kill switch from the banner: stop or resume the whole system."""
        enabled = form.get("enabled") == "true"
        value: dict[str, Any] = {"enabled": enabled}
        if not enabled:
            given = str(form.get("reason", "")).strip()[:400]
            who = operator(request.session)
            value["reason"] = f"{given} ({who})" if given else f"stopped by {who}"
        try:
            await self.call(self.ops.set_policy, "system", value, updated_by=operator(request.session))
            self.flash(request, "System resumed." if enabled else "System stopped: no new proposals, no claims.")
        except OpsError as error:
            self.flash(request, f"The system switch was not changed: {refusal_or_raise(error)}", "error")
        target = str(form.get("back", ""))
        return self.back(request, target if target.startswith("/") and not target.startswith("//") else "/")

    async def health(self, request: Request) -> Response:
        status, runs, charts, dead = await asyncio.gather(
            self.call(self.ops.status),
            self.call(self.ops.action_runs, action="heartbeat", limit=20),
            self.call(self._charts),
            self.call(self._dead_letters),
        )
        return await self.render(
            request,
            "health.html",
            status=status,
            runs=runs,
            charts=charts,
            dead=dead,
            kinds=kind_rows(status),
            limits=limit_rows(status),
        )

    def _charts(self) -> list[Chart] | None:
        """The last 24 hours from the heartbeat's minute rollup; None when the database refuses the read."""
        try:
            return health_charts(self.ops.metrics_history(24))
        except OpsError as error:
            refusal_or_raise(error)
            return None

    def _dead_letters(self) -> list[Notification] | None:
        """Notifications given up on, newest first; None when the outbox cannot be read."""
        try:
            return self.ops.notifications(status="dead", limit=20)
        except OpsError as error:
            refusal_or_raise(error)
            return None

    async def enable_kind(self, request: Request, form: FormData) -> Response:
        kind = str(request.path_params["kind"])
        try:
            await self.call(
                self.ops.set_policy, f"worker:{kind}", {"enabled": True}, updated_by=operator(request.session)
            )
            self.flash(request, f"{kind} re-enabled: workers claim it again.")
        except OpsError as error:
            self.flash(request, f"{kind} was not re-enabled: {refusal_or_raise(error)}", "error")
        return self.back(request, "/health")

    # -- trigger rules ----------------------------------------------------------------------------------------

    async def triggers(self, request: Request) -> Response:
        return await self.trigger_page(request)

    async def trigger_page(
        self,
        request: Request,
        http_status: int = 200,
        *,
        errors: dict[str, str] | None = None,
        drafts: dict[str, str] | None = None,
        previews: dict[str, Any] | None = None,
    ) -> HTMLResponse:
        rules = await self.call(self.ops.trigger_rules)
        return await self.render(
            request,
            "triggers.html",
            http_status=http_status,
            rules=rules,
            errors=errors or {},
            drafts=drafts or {},
            previews=previews or {},
            new_rule=json.dumps(NEW_TRIGGER_RULE, indent=2),
        )

    @staticmethod
    def _trigger_form(form: FormData) -> tuple[str, str, dict[str, Any] | None, str | None]:
        """(editor, text, the rule document or None, why it is not one): the editor is the rule's name, or ""
        for the new-rule editor, and says where the answer is shown."""
        editor, text = str(form.get("editor", "")), str(form.get("value", ""))
        try:
            value = json.loads(text)
        except json.JSONDecodeError as error:
            return editor, text, None, f"not valid JSON: {error.msg} (line {error.lineno}, column {error.colno})"
        except RecursionError:
            return editor, text, None, "not valid JSON: nested too deeply"
        if not isinstance(value, dict):
            return editor, text, None, "rule must be a JSON object"
        return editor, text, value, None

    async def _trigger_refused(self, request: Request, editor: str, text: str, problem: str) -> HTMLResponse:
        rules = await self.call(self.ops.trigger_rules)
        if editor and editor not in {r.name for r in rules}:  # its card is gone: answer in the new-rule editor
            editor = ""
        return await self.trigger_page(request, 400, errors={editor: problem}, drafts={editor: text})

    async def save_trigger(self, request: Request, form: FormData) -> Response:
        editor, text, rule, problem = self._trigger_form(form)
        if rule is not None:
            try:
                change = await self.call(self.ops.set_trigger_rule, rule, updated_by=operator(request.session))
            except OpsError as error:
                problem = refusal_or_raise(error)
            else:
                name = change.rule.name
                said = ", ".join(change.changed) if change.action == "updated" else change.action
                self.flash(request, f"Trigger rule {name}: {said}.")
                return self.back(request, f"/triggers#trigger-{name}")
        return await self._trigger_refused(request, editor, text, str(problem))

    async def preview_trigger(self, request: Request, form: FormData) -> Response:
        """The dry run of the editor's rule as it stands (saved or not): nothing is written."""
        editor, text, rule, problem = self._trigger_form(form)
        if rule is not None:
            try:
                preview = await self.call(self.ops.preview_trigger_rule, rule=rule)
            except OpsError as error:
                problem = refusal_or_raise(error)
            else:
                return await self.trigger_page(request, drafts={editor: text}, previews={editor: preview})
        return await self._trigger_refused(request, editor, text, str(problem))

    async def switch_trigger(self, request: Request, form: FormData) -> Response:
        name = str(request.path_params["name"])
        enabled = request.url.path.endswith("/enable")
        try:
            change = await self.call(self.ops.set_trigger_enabled, name, enabled, updated_by=operator(request.session))
            state = "on" if enabled else "off"
            self.flash(
                request,
                f"Trigger rule {name} was already {state}."
                if change.action == "unchanged"
                else f"Trigger rule {name} is {state}"
                + (": the heartbeat checks it from now on." if enabled else ": it proposes nothing until enabled."),
            )
        except OpsError as error:
            self.flash(request, f"Trigger rule {name} was not changed: {refusal_or_raise(error)}", "error")
        return self.back(request, f"/triggers#trigger-{name}")

    async def delete_trigger(self, request: Request, form: FormData) -> Response:
        name = str(request.path_params["name"])
        try:
            await self.call(self.ops.delete_trigger_rule, name, updated_by=operator(request.session))
            self.flash(request, f"Trigger rule {name} deleted (its trigger:deleted event keeps the definition).")
        except OpsError as error:
            self.flash(request, f"Trigger rule {name} was not deleted: {refusal_or_raise(error)}", "error")
        return self.back(request, "/triggers")

    # -- the app ----------------------------------------------------------------------------------------------

    def app(self) -> Starlette:
        page, action = self.page, self.action
        routes = [
            Route("/", page(self.home)),
            Route("/login", self.login_page, methods=["GET"]),
            Route("/login", self.login, methods=["POST"]),
            Route("/logout", action(self.logout), methods=["POST"]),
            Route("/proposals", page(self.proposals)),
            Route("/proposals/{proposal_id:int}/approve", action(self.decide), methods=["POST"]),
            Route("/proposals/{proposal_id:int}/reject", action(self.decide), methods=["POST"]),
            Route("/missions", page(self.missions)),
            Route("/missions/{mission_id:int}", page(self.mission)),
            Route("/missions/{mission_id:int}/cancel", action(self.cancel), methods=["POST"]),
            Route("/events", page(self.events)),
            Route("/events/feed", page(self.events_feed)),
            Route("/triggers", page(self.triggers)),
            Route("/triggers/save", action(self.save_trigger), methods=["POST"]),
            Route("/triggers/preview", action(self.preview_trigger), methods=["POST"]),
            Route("/triggers/{name:str}/enable", action(self.switch_trigger), methods=["POST"]),
            Route("/triggers/{name:str}/disable", action(self.switch_trigger), methods=["POST"]),
            Route("/triggers/{name:str}/delete", action(self.delete_trigger), methods=["POST"]),
            Route("/policy", page(self.policy)),
            Route("/policy/{key:str}", action(self.save_policy), methods=["POST"]),
            Route("/system", action(self.switch), methods=["POST"]),
            Route("/health", page(self.health)),
            Route("/kinds/{kind:str}/enable", action(self.enable_kind), methods=["POST"]),
            Mount("/static", ConsoleStatic(packages=[("agent_ops.console", "static")]), name="static"),
        ]
        session = Middleware(
            SessionMiddleware,
            secret_key=self.sessions.secret,
            session_cookie=SESSION_COOKIE,
            max_age=math.ceil(self.access.session_seconds),
            same_site="strict",
            https_only=self.access.secure_cookie,
        )
        return Starlette(routes=routes, middleware=[session])


def kind_rows(status: Status) -> list[dict[str, Any]]:
    """The health page's breakers table: every kind with a breaker that is not closed or has failures in a row,
    and every kind disabled in policy (by the breaker or by a person), which gets a Re-enable button."""
    rows = []
    for kind in sorted(set(status.breakers) | set(status.circuit_breakers)):
        breaker = status.breakers.get(kind) or {}
        flag = status.circuit_breakers.get(kind) or {}
        state = breaker.get("state", "closed")
        rows.append(
            {
                "kind": kind,
                "state": "disabled" if flag and state == "closed" else state,
                "failures": breaker.get("consecutive_failures", flag.get("failures", 0)),
                "last_error": breaker.get("last_error"),
                "reopen_at": breaker.get("reopen_at"),
                "reason": flag.get("reason"),
                "disabled": bool(flag),
            }
        )
    return rows


def limit_rows(status: Status) -> list[dict[str, Any]]:
    """The health page's kind limits table: each kind with a fleet-wide limit (worker_policy.kinds), what it uses
    against each limit, and whether a limit is reached now (`full`: its queued steps wait for capacity)."""
    rows = []
    for kind, limit in sorted(status.limits.items()):
        at_max = limit.max_running is not None and limit.running >= limit.max_running
        at_rate = limit.per_minute is not None and (limit.last_minute or 0) >= limit.per_minute
        rows.append({"kind": kind, "limit": limit, "full": at_max or at_rate})
    return rows


def refusal_or_raise(error: OpsError) -> str:
    """What the database refused, to show on the page; an outage (TransportError) is raised again, for the 503
    page of `Console.page`."""
    if isinstance(error, TransportError):
        raise error
    return error.message


def _decision_text(outcome: dict[str, Any]) -> str:
    number = f"Proposal #{outcome['proposal_id']}"
    if outcome["status"] == "error":
        return f"{number}: {outcome['reason']}"
    if outcome["status"] == "accepted":
        return f"{number} approved: mission #{outcome['mission_id']} created."
    if outcome["approving"]:
        return f"{number} was rejected by the gates: {outcome['reason']}"
    return f"{number} rejected: {outcome['reason']}"


templates.globals.update(decision_text=_decision_text)


def create_console(ops: Ops, access: ConsoleAccess | None = None, throttle: KeyThrottle | None = None) -> Starlette:
    """The console app; `throttle` is the wrong-key throttle it shares with the heartbeat endpoint.

    Serve it through `agent_ops.server.create_app`, which caps request bodies (LARGER_BODIES) before any form
    here is parsed.
    """
    return Console(ops, access or ConsoleAccess.from_settings(ops.settings), throttle).app()
