"""R6 — property-based fuzzing (hypothesis) of every RPC's input.

The RPCs are read from the catalog — every `public.ops_*` function `service_role` may execute — so a new
RPC is fuzzed without being listed here, and an argument type the fuzzer cannot generate fails the run.
Each example calls one RPC as `service_role` with named arguments, some omitted when they have defaults,
drawn from: SQL NULL; arbitrary JSON; near-valid documents (the real keys with good, wrong-typed and
random values: proposals, steps, events, every policy key, step reports and the usage they carry); domain
words (statuses, kinds, policy keys); arbitrary text; ids of rows that exist and of rows that do not; the
whole range of the argument's integer type; and, inside any JSON value, documents nested 60 to 3,000 levels
deep. Trigger rules get near-valid rule documents for every checker (templates with good and bad
placeholders, a custom checker function that exists) and the names of rules that exist. Reports of steps
that may be running carry valid usage and near misses, with a budget, prices and kind limits in force (so
the spend bookkeeping and the limited claim path run, not only the argument checks). The property: a JSON
result, or an error with SQLSTATE PT400 (invalid input), PT404 (not found) or PT409 (conflict), and after an
error the row count of every ops_* table exactly as before. After the run no JSON column of any ops_* table
holds anything nested deeper than the documented 64 levels.

Not generated: NUL characters and lone surrogates in text, and integers outside the declared type. Postgres
refuses those while decoding the call, before any function runs (PostgREST answers 400 for them).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import psycopg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg.types.json import Jsonb

from bench.chaos import ChaosFailure, verdict
from bench.common import progress
from tests.kit.database import OPS_TABLES, migrate_and_seed, scratch_database

ALLOWED = {"PT400", "PT404", "PT409"}
COUNTS = "select " + ", ".join(f"(select count(*) from public.{t})" for t in OPS_TABLES)  # noqa: S608 - constants

RPCS = """
select p.proname, p.proargnames, p.pronargdefaults,
       array(select pg_catalog.format_type(a.t, null) from unnest(p.proargtypes) with ordinality a(t, n) order by a.n)
  from pg_proc p join pg_namespace n on n.oid = p.pronamespace
 where n.nspname = 'public' and p.proname like 'ops\\_%' and has_function_privilege('service_role', p.oid, 'execute')
 order by p.proname
"""

WORDS = ["", " ", "brain", "growth", "system", "noop", "crawl", "analyze", "write_content", "deploy", "post_tweet",
         "pending", "accepted", "rejected", "approved", "queued", "running", "succeeded", "failed", "cancelled",
         "auto_approve", "worker_policy", "daily_proposal_limit", "step_kind_gates", "max_active_missions",
         "reaction_matrix", "retention", "heartbeat", "worker:crawl", "tweet:posted", "mission:failed", "x" * 65,
         "Brain", "a b", "-1", "null", "{}", "[]", "'; drop table ops_missions; --", "mission_failed",
         "proactive_research"]  # fmt: skip

text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=80)
texts = st.one_of(st.sampled_from(WORDS), text, st.from_regex(r"[a-z][a-z0-9_:.-]{0,70}", fullmatch=True),
                  st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=180,
                          max_size=5000))  # fmt: skip
ids = st.one_of(st.integers(-3, 60), st.integers(-(2**63), 2**63 - 1))
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), texts,
                         st.floats(allow_nan=False, allow_infinity=False), ids)  # fmt: skip


# Python's json module cannot write (or read) thousands of levels, so a deep document travels as a marker
# string that `dumps` replaces with its text.
DEEP_MARKER = re.compile(r'"\\u0001deep:(\d+):([ao])\\u0001"')


def nested(levels: int, objects: bool) -> str:
    return f"\x01deep:{levels}:{'o' if objects else 'a'}\x01"


def dumps(value: Any) -> str:
    def deep(match: re.Match[str]) -> str:
        levels = int(match.group(1))
        opening, closing = ('{"k": ', "}") if match.group(2) == "o" else ("[", "]")
        return opening * levels + "0" + closing * levels

    return DEEP_MARKER.sub(deep, json.dumps(value))


def as_jsonb(value: Any) -> Jsonb:
    return Jsonb(value, dumps=dumps)


# Around the limit, and the 12 KiB payload of 3,000 arrays that once broke every Python reader.
deep_json = st.builds(nested, st.sampled_from([60, 63, 64, 65, 66, 200, 3000]) | st.integers(60, 3000), st.booleans())
json_values = st.recursive(
    json_scalars | deep_json,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)


def shaped(keys: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """Documents with the real keys (each present or not, good or any JSON) and now and then a foreign key."""
    optional = {key: st.one_of(good, json_values) for key, good in keys.items()}
    return st.fixed_dictionaries({}, optional=optional) | st.builds(
        lambda doc, extra: {**doc, **extra},
        st.fixed_dictionaries({}, optional=optional),
        st.dictionaries(texts, json_values, max_size=2),
    )


def near(valid: st.SearchStrategy[dict[str, Any]], keys: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """Valid documents, valid ones with one key changed or dropped, and documents merely shaped like them."""
    names = st.sampled_from(sorted(keys))
    changed = st.builds(lambda doc, key, value: {**doc, key: value}, valid, names | texts, json_values)
    dropped = st.builds(lambda doc, key: {k: v for k, v in doc.items() if k != key}, valid, names)
    return st.one_of(valid, valid, changed, dropped, shaped(keys))


def objects(values: st.SearchStrategy[Any] = json_values, size: int = 3) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(texts, values, max_size=size)


agent_ids = st.from_regex(r"[a-z0-9][a-z0-9_.:-]{0,20}", fullmatch=True)
titles = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=200)
good_kinds = st.sampled_from(["noop", "crawl", "analyze", "write_content", "draft_tweet"])
kinds = good_kinds | st.sampled_from(["deploy", "post_tweet", "Bad Kind", ""]) | texts
STEP_KEYS = {"kind": kinds, "payload": objects(), "depends_on": st.lists(st.integers(-2, 60), max_size=4)}
steps = st.lists(
    near(st.fixed_dictionaries({"kind": good_kinds}, optional={"payload": objects()}), STEP_KEYS),
    min_size=0,
    max_size=55,
)
PROPOSAL_KEYS = {
    "agent_id": agent_ids | texts, "title": titles | texts, "steps": steps,
    "source": st.sampled_from(["api", "agent", "human", "trigger", "bad"]), "description": texts,
    "dedupe_key": texts, "metadata": objects(),
}  # fmt: skip
proposals = near(
    st.fixed_dictionaries(
        {"agent_id": agent_ids, "title": titles,
         "steps": st.lists(st.fixed_dictionaries({"kind": good_kinds}, optional={"payload": objects()}),
                           min_size=1, max_size=4)},
        optional={"description": titles, "dedupe_key": agent_ids, "metadata": objects(size=2)},
    ),
    PROPOSAL_KEYS,
)  # fmt: skip
EVENT_KEYS = {
    "type": st.sampled_from(["tweet:posted", "content:published", "mission:failed", "bad", "x:"]) | texts,
    "agent_id": agent_ids | texts, "source": agent_ids | texts, "tags": st.lists(agent_ids | texts, max_size=25),
    "title": titles | texts, "summary": texts, "payload": objects(), "proposal_id": ids, "mission_id": ids,
    "step_id": ids,
}  # fmt: skip
events = near(
    st.fixed_dictionaries(
        {"type": st.sampled_from(["tweet:posted", "content:published", "insight:promoted"]), "agent_id": agent_ids},
        optional={"tags": st.lists(agent_ids, max_size=5), "title": titles, "payload": objects(size=2),
                  "mission_id": st.integers(1, 30)},
    ),
    EVENT_KEYS,
)  # fmt: skip
counts = st.integers(0, 1000)
limits = st.one_of(st.integers(-5, 1000), json_values)
# Spend: usage reports, prices and budgets (valid values; near() and the near misses below break them).
spending_kinds = good_kinds | st.just("llm")
models = st.sampled_from(["claude-sonnet-4-5", "gpt-4o-mini", "local/llama3:8b", "m@v1+beta", "a" * 200])
bad_models = st.sampled_from(["", " ", "a" * 201, "bad model", "-leading", "модель", "x\ny"])
tokens = st.integers(0, 10**9)
usd = st.integers(0, 1_000_000) | st.floats(0, 1_000_000, allow_nan=False)
NEAR_TOKENS = [-1, 10**9 + 1, 1.5, "100", True, None, 2**63, 1e20]
NEAR_USD = [-0.01, 1_000_000.01, "0.10", True, None, 1e300, -1e-9, 5e-324]
USAGE_KEYS = {
    "tokens_in": tokens | st.sampled_from(NEAR_TOKENS), "tokens_out": tokens | st.sampled_from(NEAR_TOKENS),
    "cost_usd": usd | st.sampled_from(NEAR_USD), "model": models | bad_models | texts,
}  # fmt: skip
valid_usage = st.fixed_dictionaries(
    {}, optional={"tokens_in": tokens, "tokens_out": tokens, "cost_usd": usd, "model": models}
)
# A report's usage: valid ones, near misses (one field out of range, of the wrong type, a bad model, a foreign
# key), and now and then something that is not an object at all.
usage_documents = st.one_of(near(valid_usage, USAGE_KEYS), st.sampled_from([[], "usage", 0.1, {}]))
prices = st.fixed_dictionaries({"input_per_million": usd, "output_per_million": usd})
budget_limits = {"daily_usd": usd, "daily_tokens": st.integers(0, 10**12)}
kind_limits = st.dictionaries(
    spending_kinds,
    st.fixed_dictionaries({}, optional={"max_running": st.integers(0, 50), "per_minute": st.integers(0, 600),
                                        "lease_seconds": st.integers(1, 86400), "max_attempts": st.integers(1, 100),
                                        "timeout_seconds": st.integers(1, 604800)}),
    max_size=3,
)  # fmt: skip
# Each policy key with valid values and, through near(), broken ones.
POLICIES: dict[str, tuple[dict[str, st.SearchStrategy[Any]], dict[str, st.SearchStrategy[Any]]]] = {
    "system": ({"enabled": st.booleans()}, {"reason": texts}),
    "auto_approve": ({"enabled": st.booleans(), "allowed_step_kinds": st.lists(good_kinds, max_size=4)},
                     {"allowed_sources": st.lists(st.sampled_from(["api", "agent", "trigger"]))}),
    "daily_proposal_limit": ({"limit": counts}, {"per_agent": st.dictionaries(agent_ids, counts, max_size=2)}),
    "max_active_missions": ({"limit": counts}, {}),
    "worker_policy": ({}, {"lease_seconds": st.integers(1, 86400), "max_attempts": st.integers(1, 100),
                           "backoff_base_seconds": counts, "backoff_max_seconds": counts,
                           "circuit_breaker_threshold": st.integers(1, 100), "enabled": st.just(False),
                           "kinds": kind_limits}),
    "budgets": ({}, {"daily_usd": usd, "daily_tokens": st.integers(0, 10**12), "agent_daily_usd": usd,
                     "agent_daily_tokens": st.integers(0, 10**12),
                     "per_agent": st.dictionaries(agent_ids, st.fixed_dictionaries({}, optional=budget_limits),
                                                  max_size=2),
                     "kinds": st.lists(spending_kinds, max_size=3)}),
    "model_prices": ({}, {"claude-sonnet-4-5": prices, "gpt-4o-mini": prices, "local/llama3:8b": prices}),
    "x_daily_quota": ({"limit": counts}, {}),
    "x_autopost": ({"enabled": st.booleans()}, {}),
    "content_policy": ({"enabled": st.booleans()}, {"max_drafts_per_day": counts}),
    "retention": ({}, {"events_days": st.integers(1, 3650), "missions_days": st.integers(1, 3650),
                       "batch_size": st.integers(1, 100000)}),
    "heartbeat": ({}, {"triggers_budget_ms": st.integers(1, 60000), "reactions_batch": st.integers(1, 1000)}),
    "reaction_matrix": ({"enabled": st.booleans()}, {"patterns": st.lists(st.fixed_dictionaries({
        "source": st.just("*"), "tags": st.lists(agent_ids, max_size=2), "target": agent_ids, "type": agent_ids,
        "probability": st.floats(0, 1), "cooldown": counts}), max_size=2)}),
    "worker:crawl": ({"enabled": st.booleans()}, {"reason": titles}),
}  # fmt: skip
policy_values = st.one_of(
    *(near(st.fixed_dictionaries(required, optional=optional), {**required, **optional})
      for required, optional in POLICIES.values()),
    st.dictionaries(kinds, shaped({"daily_limit": limits, "enabled": st.booleans()}), max_size=3),
    json_values,
)  # fmt: skip
# ops_set_policy's key and value only make sense together: valid pairs besides the independent draws.
policy_pairs = st.one_of(
    *(st.fixed_dictionaries({
        "key": st.just(key), "value": near(st.fixed_dictionaries(required, optional=optional),
                                           {**required, **optional}).map(as_jsonb),
        "updated_by": agent_ids})
      for key, (required, optional) in POLICIES.items()),
)  # fmt: skip

# Trigger rules (ops_set_trigger_rule, and drafts for ops_preview_trigger_rule): every checker with conditions,
# templates whose placeholders the checker may or may not provide, and the names of rules that exist (the seed's,
# and one seed_rows adds with a custom checker function).
CUSTOM_FUNCTION = "public.fuzz_trigger_check"
existing_rules = st.sampled_from(
    ["tweet_high_engagement", "content_published", "proactive_scan_signals", "fuzz-custom"]
)
rule_names = st.one_of(
    existing_rules,
    existing_rules,
    st.sampled_from(["fuzz.rule:1", "Not A Name"]),
    st.from_regex(r"[a-z0-9][a-z0-9_.:-]{0,20}", fullmatch=True),
)
event_types = st.sampled_from(["tweet:posted", "mission:failed", "content:published", "tweet:metrics"])
template_titles = titles | st.sampled_from(
    [
        "Look at {{event.title}}",
        "Mission #{{event.mission_id}}",
        "Scan {{topic}}",
        "{{rule.name}} at {{now}}",
        "{{value}}",
        "{{evnt.id}}",
        "{{event.nope}}",
        "{{event_type}} quiet for {{lookback_minutes}} min",
    ]
)
templates = st.fixed_dictionaries(
    {
        "agent_id": agent_ids | st.just("{{event.agent_id}}"),
        "title": template_titles,
        "steps": st.lists(
            st.fixed_dictionaries(
                {"kind": good_kinds | st.just("{{topic}}")},
                optional={"payload": objects() | st.just({"x": "{{event.payload.x}}"})},
            ),
            min_size=1,
            max_size=3,
        ),
    },
    optional={"description": titles, "metadata": objects(size=2)},
)
minutes = st.integers(1, 1440)
CONDITIONS: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "event": st.fixed_dictionaries(
        {"event_type": event_types},
        optional={"tags": st.lists(agent_ids, max_size=3), "agent_id": agent_ids, "lookback_minutes": minutes},
    ),
    "schedule": st.fixed_dictionaries(
        {}, optional={"topics": st.lists(st.sampled_from(["crawl", "analyze", "news"]) | titles, max_size=3)}
    ),
    "threshold": st.fixed_dictionaries(
        {
            "event_type": event_types,
            "field": st.sampled_from(["engagement_rate", "a.b"]),
            "op": st.sampled_from([">", ">=", "<", "<="]),
            "value": st.integers(-5, 5) | st.floats(-1, 1),
        },
        optional={"lookback_minutes": minutes},
    ),
    "absence": st.fixed_dictionaries({"event_type": event_types, "lookback_minutes": minutes}),
    "custom": st.fixed_dictionaries(
        {
            "function": st.sampled_from(
                [CUSTOM_FUNCTION, "public.nope", "public.ops_create_proposal", "pg_catalog.jsonb_strip_nulls"]
            )
        },
        optional={"mode": st.sampled_from(["template", "null", "raise"])},
    ),
}
valid_rules = st.one_of(
    *(
        st.fixed_dictionaries(
            {
                "name": rule_names,
                "trigger_event": st.just(checker),
                "conditions": conditions,
                "action_config": templates,
            },
            optional={
                "cooldown_minutes": minutes,
                "jitter_minutes": st.integers(0, 60),
                "enabled": st.booleans(),
                **({"skip_probability": st.floats(0, 1)} if checker == "schedule" else {}),
            },
        )
        for checker, conditions in CONDITIONS.items()
    )
)
RULE_KEYS = {
    "name": rule_names | texts,
    "trigger_event": st.sampled_from([*CONDITIONS, "cron"]) | texts,
    "conditions": st.one_of(*CONDITIONS.values()) | objects(),
    "action_config": templates | proposals | objects(),
    "cooldown_minutes": limits,
    "skip_probability": st.floats(allow_nan=False, allow_infinity=False) | json_values,
    "jitter_minutes": limits,
    "enabled": st.booleans(),
}
trigger_rules = near(valid_rules, RULE_KEYS)
rule_calls = st.fixed_dictionaries({"rule": trigger_rules.map(as_jsonb), "updated_by": agent_ids})
switch_calls = st.fixed_dictionaries({"name": rule_names, "enabled": st.booleans(), "updated_by": agent_ids})
preview_calls = st.fixed_dictionaries({"name": rule_names}) | st.fixed_dictionaries(
    {"rule": trigger_rules.map(as_jsonb)}
)

# Step reports with usage for steps that may be running (the claims fuzzed before them leave many so): the
# budgets' bookkeeping (ops_spend_daily, budget:exhausted) is reached, not only the argument checks.
report_ids = {"step_id": st.integers(1, 70), "attempt": st.integers(0, 3)}
complete_calls = st.fixed_dictionaries(
    report_ids, optional={"output": objects().map(as_jsonb), "usage": usage_documents.map(as_jsonb)}
)
fail_calls = st.fixed_dictionaries(
    {**report_ids, "error": titles},
    optional={"retryable": st.booleans(), "usage": usage_documents.map(as_jsonb)},
)

# Batch reports (ops_report_steps, ops_report_and_claim): lists of such reports, successes and failures alike.
batch_reports = st.lists(
    near(
        st.fixed_dictionaries(report_ids, optional={"output": objects(), "usage": usage_documents})
        | st.fixed_dictionaries({**report_ids, "error": titles},
                                optional={"retryable": st.booleans(), "usage": usage_documents}),
        {**report_ids, "output": objects(), "error": titles, "retryable": st.booleans(), "usage": usage_documents},
    ),
    max_size=6,
)  # fmt: skip

# JSON arguments by name; any other jsonb argument gets arbitrary JSON.
JSON_ARGUMENTS: dict[str, st.SearchStrategy[Any]] = {
    "proposal": proposals, "event": events, "value": policy_values, "rule": trigger_rules, "usage": usage_documents,
    "reports": batch_reports,
}  # fmt: skip
# Whole argument sets for RPCs whose arguments only make sense together.
WHOLE_CALLS: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "ops_set_policy": policy_pairs, "ops_set_trigger_rule": rule_calls, "ops_set_trigger_enabled": switch_calls,
    "ops_get_trigger_rule": st.fixed_dictionaries({"name": rule_names}), "ops_preview_trigger_rule": preview_calls,
    "ops_complete_step": complete_calls, "ops_fail_step": fail_calls,
}  # fmt: skip
INT_RANGES = {"integer": (-(2**31), 2**31 - 1), "bigint": (-(2**63), 2**63 - 1)}


def strategy(name: str, sql_type: str) -> st.SearchStrategy[Any]:
    """Values for one argument; None is SQL NULL."""
    if sql_type == "jsonb":
        document = st.one_of(JSON_ARGUMENTS.get(name, json_values), json_values)
        return st.none() | document.map(as_jsonb)
    if sql_type in INT_RANGES:
        low, high = INT_RANGES[sql_type]
        return st.none() | st.integers(-3, 60) | st.integers(low, high)
    if sql_type == "text":
        return st.none() | texts
    if sql_type == "text[]":
        return st.none() | st.lists(st.none() | texts, max_size=20)
    if sql_type == "boolean":
        return st.none() | st.booleans()
    raise TypeError(f"the fuzzer cannot generate {sql_type} (argument {name}): add a strategy for it")


@dataclass
class Rpc:
    name: str
    arguments: list[tuple[str, str]]
    defaults: int

    def calls(self) -> st.SearchStrategy[dict[str, Any]]:
        required = len(self.arguments) - self.defaults
        fixed = {n: strategy(n, t) for n, t in self.arguments[:required]}
        optional = {n: strategy(n, t) for n, t in self.arguments[required:]}
        independent = st.fixed_dictionaries(fixed, optional=optional)
        return st.one_of(independent, WHOLE_CALLS[self.name]) if self.name in WHOLE_CALLS else independent

    def sql(self, given_args: dict[str, Any]) -> bytes:
        types = dict(self.arguments)
        named = ", ".join(f"{name} => %({name})s::{types[name]}" for name in given_args)
        return f"select public.{self.name}({named})".encode()


# A budget the seeded agent's reports soon exhaust (crawl spends), and a priced model.
SEED_POLICY = {
    "budgets": {"agent_daily_usd": 0.5, "daily_tokens": 100_000_000, "kinds": ["crawl", "llm"]},
    "model_prices": {"gpt-4o-mini": {"input_per_million": 0.15, "output_per_million": 0.6}},
}


def seed_rows(url: str) -> None:
    """Rows for the fuzzed ids to hit: accepted and pending proposals, running and queued steps; and limits,
    prices and a budget in force, so claims take the limited path and reports with usage reach the budget."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "select public.ops_set_policy('worker_policy', value || %s, 'fuzz') from public.ops_policy"
            " where key = 'worker_policy'",
            [Jsonb({"kinds": {"crawl": {"max_running": 40}, "analyze": {"per_minute": 600}}})],
        )
        for key, value in SEED_POLICY.items():
            conn.execute("select public.ops_set_policy(%s, %s, 'fuzz')", [key, Jsonb(value)])
        conn.execute(
            "select public.ops_create_proposal(jsonb_build_object('agent_id', 'fuzz', 'title', 'seed ' || g,"
            " 'steps', case when g % 3 = 0 then '[{\"kind\": \"deploy_site\"}]'::jsonb"
            ' else \'[{"kind": "crawl"}, {"kind": "analyze"}]\'::jsonb end)) from generate_series(1, 20) g'
        )
        conn.execute("select public.ops_claim_next_step('fuzz-worker', null, 5)")
        # A custom checker function, and a rule that uses it, for the trigger-rule RPCs to reach.
        conn.execute(
            f"create function {CUSTOM_FUNCTION}(rule jsonb) returns jsonb language plpgsql as $$ begin"
            " if rule -> 'conditions' ->> 'mode' = 'raise' then raise exception 'custom check failed'; end if;"
            " if rule -> 'conditions' ->> 'mode' = 'null' then return null; end if;"
            " return jsonb_build_object('agent_id', 'fuzz', 'title', 'custom',"
            " 'steps', jsonb_build_array(jsonb_build_object('kind', 'noop')));"
            " end $$"
        )
        conn.execute(f"grant execute on function {CUSTOM_FUNCTION}(jsonb) to service_role")
        conn.execute(
            "select public.ops_set_trigger_rule(jsonb_build_object('name', 'fuzz-custom', 'trigger_event', 'custom',"
            f" 'conditions', jsonb_build_object('function', '{CUSTOM_FUNCTION}'), 'enabled', true), 'fuzz')"
        )


def fuzz(rpc: Rpc, conn: psycopg.Connection, examples: int, derandomize: bool, tally: dict[str, int]) -> None:
    @settings(max_examples=examples, deadline=None, database=None, derandomize=derandomize,
              suppress_health_check=list(HealthCheck), print_blob=True)  # fmt: skip
    @given(rpc.calls())
    def property_holds(arguments: dict[str, Any]) -> None:
        before = conn.execute(COUNTS.encode()).fetchone()
        try:
            row = conn.execute(rpc.sql(arguments), arguments).fetchone()
        except psycopg.Error as error:
            state = error.sqlstate or "none"
            tally[state] = tally.get(state, 0) + 1
            if "levels deep" in str(error):
                tally["too_deep"] = tally.get("too_deep", 0) + 1  # of the PT400s: refused for their nesting
            if state not in ALLOWED:
                raise ChaosFailure(f"{rpc.name} raised {state}: {error}") from error
            if not str(error).strip():
                raise ChaosFailure(f"{rpc.name} raised {state} without a message") from error
            after = conn.execute(COUNTS.encode()).fetchone()
            if before != after:
                raise ChaosFailure(
                    f"{rpc.name} failed with {state} but left rows behind: {before} -> {after}"
                ) from error
            return
        tally["ok"] = tally.get("ok", 0) + 1
        if row is None or not isinstance(row[0], (dict, list)):
            raise ChaosFailure(f"{rpc.name} returned {row!r}")
        json.dumps(row[0])

    property_holds()


JSON_COLUMNS = """
select c.relname, a.attname from pg_attribute a join pg_class c on c.oid = a.attrelid
 where c.relnamespace = 'public'::regnamespace and c.relkind = 'r' and c.relname like 'ops\\_%'
   and a.atttypid = 'jsonb'::regtype and a.attnum > 0 and not a.attisdropped
"""


def stored_too_deep(conn: psycopg.Connection) -> dict[str, int]:
    """Rows per `table.column` whose JSON nests deeper than ops_internal.max_json_depth()."""
    found: dict[str, int] = {}
    for table, column in conn.execute(JSON_COLUMNS.encode()).fetchall():
        query = f'select count(*) from public."{table}" where ops_internal.json_too_deep("{column}")'  # noqa: S608
        count = conn.execute(query.encode()).fetchone()
        if count and count[0]:
            found[f"{table}.{column}"] = int(count[0])
    return found


def run(examples: int, derandomize: bool = True) -> dict[str, object]:
    failures: list[str] = []
    tallies: dict[str, dict[str, int]] = {}
    with scratch_database("chaos_r6") as url:
        migrate_and_seed(url)
        seed_rows(url)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(b"set role service_role")
            conn.execute(b"set statement_timeout = '15s'")
            found = [Rpc(name, list(zip(names or [], types, strict=True)), defaults)
                     for name, names, defaults, types in conn.execute(RPCS.encode()).fetchall()]  # fmt: skip
            progress(f"R6: fuzzing {len(found)} RPCs, {examples} examples each")
            for rpc in found:
                tally = tallies[rpc.name] = {}
                try:
                    fuzz(rpc, conn, examples, derandomize, tally)
                except ChaosFailure as error:
                    failures.append(str(error).splitlines()[0])
        with psycopg.connect(url, autocommit=True) as owner:
            too_deep = stored_too_deep(owner)
    totals: dict[str, int] = {}
    for tally in tallies.values():
        for state, count in tally.items():
            totals[state] = totals.get(state, 0) + count
    if len(tallies) < 20:
        failures.append(f"only {len(tallies)} RPCs found")
    if too_deep:
        failures.append(f"JSON nested deeper than the limit was stored: {too_deep}")
    calls = sum(count for outcome, count in totals.items() if outcome != "too_deep")
    figures = {"rpcs": len(tallies), "calls": calls, "outcomes": totals}
    verdict("R6", failures)
    return figures
