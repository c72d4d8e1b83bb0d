"""The PostgREST transport: supabase-py's `rpc()` against `<SUPABASE_URL>/rest/v1/rpc/<function>`.

The production path on Supabase. The client is built the way a server should use it: an explicit httpx
timeout, no session persistence, no token refresh, and no retries of its own (agent_ops decides which
calls are safe to repeat).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import httpx
from postgrest.exceptions import APIError
from supabase import ClientOptions, create_client

from agent_ops.config import Settings
from agent_ops.errors import OpsError, TransportError, error_class


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


class PostgrestTransport:
    name = "postgrest"

    def __init__(self, settings: Settings) -> None:
        if settings.supabase_url is None or settings.supabase_key is None:
            raise ValueError("PostgrestTransport needs SUPABASE_URL and a service key (use Settings.validated())")
        # postgrest-py's APIError carries no HTTP status; remember it per thread to tell 5xx from 4xx.
        self._last_status = threading.local()
        self._http = httpx.Client(
            timeout=httpx.Timeout(settings.timeout, connect=settings.connect_timeout),
            event_hooks={"response": [self._remember_status]},
        )
        self._client = create_client(
            settings.supabase_url,
            settings.supabase_key.reveal(),
            ClientOptions(
                httpx_client=self._http,
                auto_refresh_token=False,
                persist_session=False,
                postgrest_client_retry=False,
            ),
        )

    def _remember_status(self, response: httpx.Response) -> None:
        self._last_status.code = response.status_code

    def call(self, function: str, params: Mapping[str, Any]) -> Any:
        self._last_status.code = None
        try:
            return self._client.rpc(function, dict(params)).execute().data
        except APIError as error:
            status = getattr(self._last_status, "code", None)
            raise self._map(error, status) from None
        except httpx.TimeoutException:
            raise TransportError(f"{function}: timed out waiting for PostgREST") from None
        except httpx.HTTPError as error:
            raise TransportError(f"{function}: {type(error).__name__} talking to PostgREST") from None

    @staticmethod
    def _map(error: APIError, status: int | None) -> OpsError:
        code = _text(error.code)
        cls = error_class(code, status)
        return cls(
            _text(error.message) or f"PostgREST error {code}",
            code=code,
            detail=_text(error.details),
            hint=_text(error.hint),
            status=status,
        )

    def close(self) -> None:
        self._http.close()
