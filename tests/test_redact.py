"""What the worker masks in step errors and outputs before reporting them."""

from __future__ import annotations

import json

from agent_ops.config import Secret, Settings
from tests.deep_json import DEPTH
from vps_worker.config import WorkerSettings
from vps_worker.redact import MASK, Redactor


def worker_redactor() -> Redactor:
    settings = Settings(
        database_url=Secret("postgresql://ops:db%40pass-1234@db.example.com:5432/postgres"),
        supabase_key=Secret("sb-service-role-key-0000"),
        ops_key=Secret("ops-key-1111"),
        environ={"TWITTER_TOKEN": "tw-token-22222222", "WORKER_KINDS": "alpha,beta", "FEATURE_KEY": "on"},
    )
    return Redactor.for_worker(settings, WorkerSettings(llm_api_key=Secret("sk-llm-33333333")))


def test_configured_secrets_are_masked_wherever_they_appear() -> None:
    redact = worker_redactor().text
    message = (
        "failed: postgresql://ops:db%40pass-1234@db.example.com:5432/postgres; password db@pass-1234 "
        "keys sb-service-role-key-0000 ops-key-1111 sk-llm-33333333 tw-token-22222222"
    )
    masked = redact(message)
    for secret in ("db%40pass-1234", "db@pass-1234", "sb-service", "ops-key-1111", "sk-llm", "tw-token"):
        assert secret not in masked
    assert masked == f"failed: {MASK}; password {MASK} keys {MASK} {MASK} {MASK} {MASK}"
    assert redact("kinds alpha,beta with the feature on") == "kinds alpha,beta with the feature on", "no flags"


def test_passwords_in_any_url_or_connection_string_are_masked() -> None:
    redact = Redactor().text
    assert redact("cannot reach postgresql://u:pw@h/db") == "cannot reach postgresql://u:********@h/db"
    assert redact("redis://:s3cret@cache:6379/0 down") == "redis://:********@cache:6379/0 down"
    assert redact("https://bot:p@ss@api.example.com/x") == "https://bot:********@api.example.com/x"
    assert redact("host=db user=ops password=hunter22 dbname=x") == "host=db user=ops password=******** dbname=x"
    assert redact("dsn password='a b c' sslmode=require") == "dsn password=******** sslmode=require"
    assert redact("GET https://api.example.com:8443/v1?a=b@c") == "GET https://api.example.com:8443/v1?a=b@c"
    assert redact("mailto user@example.com at 10:30@home") == "mailto user@example.com at 10:30@home"


def test_outputs_are_masked_in_every_string_and_key_at_any_depth() -> None:
    redact = worker_redactor()
    deep: object = "sk-llm-33333333"
    for _ in range(DEPTH):
        deep = [deep]
    output = {"said": "sk-llm-33333333", "sk-llm-33333333": 1, "list": [None, 2.5, True, "postgresql://u:pw@h/d"]}
    masked = redact.json({**output, "deep": deep})
    assert masked["said"] == MASK
    assert masked[MASK] == 1
    assert masked["list"] == [None, 2.5, True, f"postgresql://u:{MASK}@h/d"]
    assert "sk-llm" not in json.dumps({k: v for k, v in masked.items() if k != "deep"})
    innermost = masked["deep"]
    while isinstance(innermost, list):
        innermost = innermost[0]
    assert innermost == MASK
    assert output["said"] == "sk-llm-33333333", "the executor's value is not modified in place"
