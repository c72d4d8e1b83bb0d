"""JSON nested too deeply for Python: the decoder, `Ops` over both transports, and the CLI views."""

from __future__ import annotations

import json
import math
from typing import Any

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent_ops import Ops, jsonsafe, step
from agent_ops.jsonsafe import MAX_DEPTH, TRUNCATED, Truncated
from tests.deep_json import deep_array, depth_of, plant
from tests.kit.settings import direct_settings
from tests.test_cli import cli

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=30,
)
LAYOUTS = st.sampled_from([{}, {"indent": 2}, {"separators": (",", ":")}, {"ensure_ascii": False}])


def nested(depth: int, innermost: Any) -> Any:
    value = innermost
    for _ in range(depth):
        value = [value]
    return value


def assert_renders(value: Any) -> None:
    """What the CLI and the console do with decoded JSON: encode it again, and walk it recursively."""
    json.dumps(value, indent=2, default=str)

    def walk(node: Any) -> None:
        for child in node.values() if isinstance(node, dict) else node if isinstance(node, list) else []:
            walk(child)

    walk(value)


@settings(max_examples=200, deadline=None)
@given(value=JSON, layout=LAYOUTS)
def test_ordinary_json_decodes_as_json_loads_does(value: Any, layout: dict[str, Any]) -> None:
    text = json.dumps(value, **layout)
    assert jsonsafe.loads(text) == json.loads(text)
    assert jsonsafe.loads(text.encode()) == json.loads(text)
    assert not jsonsafe.contains_truncated(jsonsafe.loads(text))


@settings(max_examples=200, deadline=None)
@given(value=JSON, layout=LAYOUTS)
def test_the_iterative_decoder_agrees_with_json_loads_next_to_a_deep_array(value: Any, layout: dict[str, Any]) -> None:
    # The deep sibling sends the whole document through the iterative decoder.
    text = json.dumps({"data": value, "deep": 0}, **layout).replace('"deep": 0', f'"deep": {deep_array()}', 1)
    text = text.replace('"deep":0', f'"deep":{deep_array()}', 1)
    decoded = jsonsafe.loads(text)
    assert decoded["data"] == value
    assert decoded["deep"] == nested(MAX_DEPTH - 1, TRUNCATED)


def test_json_nested_deeper_than_python_can_decode_is_cut_at_max_depth() -> None:
    with pytest.raises(RecursionError):
        json.loads(deep_array())
    for document in (deep_array(), deep_array().encode(), memoryview(deep_array().encode())):
        decoded = jsonsafe.loads(document)
        assert depth_of(decoded) == MAX_DEPTH
        assert decoded == nested(MAX_DEPTH, TRUNCATED)
        assert jsonsafe.contains_truncated(decoded)
        assert_renders(decoded)
    # Decodable by json.loads but too deep for what comes after it: cut just the same.
    assert jsonsafe.loads(deep_array(500)) == nested(MAX_DEPTH, TRUNCATED)
    assert jsonsafe.loads(deep_array(MAX_DEPTH)) == nested(MAX_DEPTH - 1, [])
    mixed = jsonsafe.loads('{"a": ' + deep_array() + ', "b": "kept", "c": {"d": [1, 2.5e3, null, true, "\\u00e9"]}}')
    assert mixed["b"] == "kept"
    assert mixed["c"] == {"d": [1, 2500.0, None, True, "é"]}
    assert isinstance(TRUNCATED, Truncated)
    assert not jsonsafe.contains_truncated(json.loads(json.dumps({"s": str(TRUNCATED)}))), "only the marker counts"


@pytest.mark.parametrize(
    "broken",
    ["[" * 3000 + "]" * 2999, "[" * 3000 + "}" + "]" * 2999, "[" * 3000 + "]" * 3000 + "x", '[1, 2 3, ' + deep_array()
     + "]", '{"a" 1, "b": ' + deep_array() + "}", '{"a": 1,}' + deep_array(), "[" * 3000 + '"open'],
)  # fmt: skip
def test_broken_deep_json_is_refused_like_json_loads_refuses_broken_json(broken: str) -> None:
    with pytest.raises(json.JSONDecodeError):
        jsonsafe.loads(broken)


def test_nan_and_infinity_decode_as_json_loads_decodes_them() -> None:
    decoded = jsonsafe.loads("[NaN, Infinity, -Infinity, " + deep_array() + "]")
    assert math.isnan(decoded[0])
    assert decoded[1:3] == [math.inf, -math.inf]


# -- through the transports -----------------------------------------------------------------------------------


def deep_everywhere(ops: Ops, conn: psycopg.Connection) -> tuple[int, int, int]:
    """A mission whose proposal, step payload, step output and an event all hold 3,000-deep JSON."""
    result = ops.propose("brain", "deep", [step("crawl"), step("analyze", depends_on=[])])
    first, second = (row[0] for row in conn.execute("select id from ops_mission_steps order by position"))
    event = ops.emit_event("deep:planted", "brain", payload={"x": 1}).event_id
    proposed = '[{"kind": "crawl", "payload": {"deep": DEEP}}, {"kind": "analyze"}]'
    plant(conn, "ops_mission_proposals", "proposed_steps", result.proposal_id, proposed)
    plant(conn, "ops_mission_proposals", "metadata", result.proposal_id)
    plant(conn, "ops_mission_steps", "payload", first)
    plant(conn, "ops_mission_steps", "output", second)
    plant(conn, "ops_agent_events", "payload", event)
    return int(result.mission_id or 0), first, second


def test_ops_reads_rows_nested_too_deeply_for_python_over_both_transports(ops: Ops, conn: psycopg.Connection) -> None:
    mission, first, second = deep_everywhere(ops, conn)
    steps = {s.id: s for s in ops.steps()}
    assert jsonsafe.contains_truncated(steps[first].payload)
    assert jsonsafe.contains_truncated(steps[second].output)
    detail = ops.mission(mission)
    assert jsonsafe.contains_truncated(detail.steps[0].payload)
    proposal = ops.proposals()[0]
    assert jsonsafe.contains_truncated(proposal.steps)
    assert jsonsafe.contains_truncated(proposal.metadata)
    event = ops.events(type="deep:planted")[0]
    assert jsonsafe.contains_truncated(event.payload)
    assert event.payload["deep"] == nested(MAX_DEPTH - 3, TRUNCATED), "list, event, payload, then the arrays"
    claimed = {s.id: s for s in ops.claim("w", ["crawl", "analyze"], max_steps=2)}
    assert jsonsafe.contains_truncated(claimed[first].payload)
    assert not jsonsafe.contains_truncated(claimed[second].payload)
    for value in (steps[first].payload, steps[second].output, proposal.steps, event.payload, claimed[first].payload):
        assert_renders(value)


@pytest.mark.parametrize(
    "command",
    [["proposals", "--json"], ["proposals"], ["steps", "--json"], ["steps"], ["events", "--json"], ["missions"]],
    ids=" ".join,
)
def test_cli_views_render_rows_nested_too_deeply_for_python(
    db_url: str, conn: psycopg.Connection, command: list[str]
) -> None:
    with Ops(direct_settings(db_url)) as ops:
        deep_everywhere(ops, conn)
    result = cli(*command, db_url=db_url)
    assert result.returncode == 0, result.stderr[-2000:]
    if "--json" in command:
        assert str(TRUNCATED) in json.dumps(json.loads(result.stdout))


def test_cli_mission_detail_renders_a_mission_with_deep_rows(db_url: str, conn: psycopg.Connection) -> None:
    with Ops(direct_settings(db_url)) as ops:
        mission, _, _ = deep_everywhere(ops, conn)
    for extra in ([], ["--json"]):
        result = cli("missions", str(mission), *extra, db_url=db_url)
        assert result.returncode == 0, result.stderr[-2000:]
    assert str(TRUNCATED) in json.dumps(json.loads(result.stdout))
