"""The PostgREST transport: supabase-py's `rpc()` against `<SUPABASE_URL>/rest/v1/rpc/<function>`.

The production path on Supabase. The client is built the way a server should use it: an explicit httpx
timeout, no session persistence, no token refresh, and no retries of its own (agent_ops decides which
calls are safe to repeat).

supabase-py decodes answers with `json.loads`, which raises RecursionError on JSON nested thousands of
levels deep (rows written before the SQL limited nesting). Such an answer, and one that decodes but is too
deep for recursive consumers, is decoded again from the response body with `agent_ops.jsonsafe`.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Any

import httpx
from postgrest.exceptions import APIError
from supabase import ClientOptions, create_client

from agent_ops import jsonsafe
from agent_ops.config import Settings
from agent_ops.errors import OpsError, TransportError, error_class
from agent_ops.transports import Poll


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


class PostgrestTransport:
    name = "postgrest"
    supports_listen = False  # PostgREST has no session to LISTEN on: callers poll

    def __init__(self, settings: Settings) -> None:
        if settings.supabase_url is None or settings.supabase_key is None:
            raise ValueError("PostgrestTransport needs SUPABASE_URL and a service key (use Settings.validated())")
        # postgrest-py's APIError carries no HTTP status, and a decoding failure loses the body: remember
        # this thread's last response to tell 5xx from 4xx and to decode a too-deep body again.
        self._last = threading.local()
        self._http = httpx.Client(
            timeout=httpx.Timeout(settings.timeout, connect=settings.connect_timeout),
            event_hooks={"response": [self._remember_response]},
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

    def _remember_response(self, response: httpx.Response) -> None:
        self._last.response = response

    def call(self, function: str, params: Mapping[str, Any]) -> Any:
        self._last.response = None
        try:
            data = self._client.rpc(function, dict(params)).execute().data
            response = self._last.response
            if response is not None and jsonsafe.could_be_too_deep(response.content) and jsonsafe.too_deep(data):
                data = jsonsafe.loads(response.content)
        except RecursionError:
            response = self._last.response
            if response is None:
                raise  # from encoding too-deep arguments, before any answer
            data = jsonsafe.loads(response.content)  # read in full: supabase-py was decoding it
        except APIError as error:
            response = self._last.response
            raise self._map(error, None if response is None else response.status_code) from None
        except httpx.TimeoutException:
            raise TransportError(f"{function}: timed out waiting for PostgREST") from None
        except httpx.HTTPError as error:
            raise TransportError(f"{function}: {type(error).__name__} talking to PostgREST") from None
        finally:
            self._last.response = None  # the body is not kept past the call
        return data

    def listening(self, channel: str) -> AbstractContextManager[Poll]:
        raise NotImplementedError(f"LISTEN {channel} needs a direct database connection, not PostgREST")

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
