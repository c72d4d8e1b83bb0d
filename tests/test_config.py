"""Settings: arguments over environment over .env; clear messages naming the variable; no secret leaks."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent_ops.config import ConfigError, Secret, Settings, redact_url

PASSWORD = "s3cr3t-passw0rd"


def load(tmp_path: Path, environ: dict[str, str], dotenv: str = "", **overrides: object) -> Settings:
    env_file = tmp_path / ".env"
    env_file.write_text(dotenv)
    return Settings.load(env_file=env_file, environ=environ, **overrides)


def test_arguments_win_over_environment_which_wins_over_dotenv(tmp_path: Path) -> None:
    dotenv = "DATABASE_URL=postgresql://from-dotenv/db\nOPS_KEY=dotenv-key\nAGENT_OPS_TIMEOUT=3\n"
    from_file = load(tmp_path, {}, dotenv)
    assert from_file.database_url == Secret("postgresql://from-dotenv/db")
    assert from_file.ops_key == Secret("dotenv-key")
    assert from_file.timeout == 3
    from_env = load(tmp_path, {"DATABASE_URL": "postgresql://from-env/db"}, dotenv)
    assert from_env.database_url == Secret("postgresql://from-env/db")
    from_args = load(tmp_path, {"DATABASE_URL": "postgresql://from-env/db"}, dotenv, database_url="postgresql://arg/db")
    assert from_args.database_url == Secret("postgresql://arg/db")


def test_the_transport_follows_the_configuration(tmp_path: Path) -> None:
    supabase = {"SUPABASE_URL": "https://abc.supabase.co", "SUPABASE_SERVICE_ROLE_KEY": "k"}
    assert load(tmp_path, {"DATABASE_URL": "postgresql://h/db"}).chosen_transport == "direct"
    assert load(tmp_path, supabase).chosen_transport == "postgrest"
    both = {**supabase, "DATABASE_URL": "postgresql://h/db"}
    assert load(tmp_path, both).chosen_transport == "direct"
    assert load(tmp_path, {**both, "AGENT_OPS_TRANSPORT": "postgrest"}).chosen_transport == "postgrest"
    assert load(
        tmp_path, {"SUPABASE_URL": "https://abc.supabase.co", "SUPABASE_SECRET_KEY": "sb_secret_x"}
    ).supabase_key


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({}, "no database configured: set DATABASE_URL"),
        ({"DATABASE_URL": "mysql://x"}, "DATABASE_URL must be a postgresql:// URL"),
        ({"SUPABASE_URL": "abc.supabase.co"}, "SUPABASE_URL must be an http(s) URL"),
        ({"SUPABASE_URL": "https://abc.supabase.co"}, "SUPABASE_SERVICE_ROLE_KEY (or SUPABASE_SECRET_KEY) is required"),
        ({"DATABASE_URL": "postgresql://h/db", "AGENT_OPS_TRANSPORT": "grpc"}, "AGENT_OPS_TRANSPORT must be one of"),
        ({"DATABASE_URL": "postgresql://h/db", "AGENT_OPS_TIMEOUT": "soon"}, "AGENT_OPS_TIMEOUT must be a number"),
        ({"DATABASE_URL": "postgresql://h/db", "AGENT_OPS_RETRIES": "-1"}, "AGENT_OPS_RETRIES must be at least 0"),
        (
            {"DATABASE_URL": "postgresql://h/db", "AGENT_OPS_TRANSPORT": "postgrest"},
            "SUPABASE_URL is required for the PostgREST transport",
        ),
    ],
)
def test_missing_or_malformed_values_name_the_variable(tmp_path: Path, environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load(tmp_path, environ).validated()
    assert message in str(raised.value)


def test_secrets_never_show_in_reprs_or_messages(tmp_path: Path) -> None:
    settings = load(
        tmp_path,
        {
            "DATABASE_URL": f"postgresql://postgres:{PASSWORD}@db.example.com/postgres",
            "SUPABASE_SERVICE_ROLE_KEY": PASSWORD,
            "OPS_KEY": PASSWORD,
        },
    )
    assert PASSWORD not in repr(settings)
    assert PASSWORD not in str(settings.database_url)
    assert settings.ops_key is not None
    assert settings.ops_key.reveal() == PASSWORD
    assert redact_url(f"postgresql://postgres:{PASSWORD}@db.example.com:5432/postgres") == (
        "postgresql://postgres:********@db.example.com:5432/postgres"
    )
    with pytest.raises(ConfigError) as raised:
        load(tmp_path, {"DATABASE_URL": f"mysql://root:{PASSWORD}@h/x"})
    assert PASSWORD not in str(raised.value)


def test_a_dotenv_others_can_read_is_loaded_with_one_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("OPS_KEY=from-a-shared-file\n")
    env_file.chmod(0o644)
    assert Settings.load(env_file=env_file, environ={}).ops_key == Secret("from-a-shared-file")
    Settings.load(env_file=env_file, environ={})
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, "once per file, not per load"
    assert str(env_file) in warnings[0]
    assert "chmod 600" in warnings[0]
    assert "from-a-shared-file" not in warnings[0]


def test_a_private_dotenv_loads_silently(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("OPS_KEY=private\n")
    env_file.chmod(0o600)
    assert Settings.load(env_file=env_file, environ={}).ops_key == Secret("private")
    assert capsys.readouterr().err == ""
