"""Property-based tests of the record reader: whatever JSON a record file holds, reading, checking,
listing and building the pages report problems and never raise anything else (issue 15)."""

from __future__ import annotations

import json
import shutil

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_records import reported_record

from harness import leaderboard as lb
from harness import records as rec
from harness.errors import HarnessError

_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
json_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=30)

# Records close to valid ones reach the checks past the schema: a good record with one field replaced.
_FIELDS = ("kind", "benchmark", "suite", "detector", "weights", "protocol", "metrics", "source", "assets",
           "integrity", "provenance", "tde")


@st.composite
def near_records(draw):
    record = reported_record()
    body = {k: v for k, v in record.items() if k != "integrity"}
    body[draw(st.sampled_from(_FIELDS))] = draw(json_values)
    return rec.seal(body) if draw(st.booleans()) else body


@given(value=json_values | near_records())
@settings(max_examples=150, deadline=None)
def test_check_record_returns_problems_for_any_json(value):
    problems = rec.check_record(value, file_name="x.json")
    assert isinstance(problems, list) and all(isinstance(p, str) for p in problems)


_SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@given(value=json_values | near_records(), raw=st.booleans())
@_SETTINGS
def test_any_record_file_is_read_checked_and_built_without_a_traceback(tmp_path_factory, value, raw):
    root = tmp_path_factory.mktemp("lb")
    records = root / "mini" / "records"
    records.mkdir(parents=True)
    path = records / "candidate.json"
    path.write_text(value if raw and isinstance(value, str) else json.dumps(value))
    try:
        rec.load_record(path)
    except HarnessError:
        pass  # a reported problem: the one allowed outcome besides a value
    entries = lb.load_entries(root / "mini")
    assert [e.path for e in entries] == [path]
    assert entries[0].record is None or entries[0].problems == []
    assert isinstance(lb.validate(root), list)
    lb.build(root)
    assert (root / "mini" / "README.md").is_file()
    shutil.rmtree(root)


@given(depth=st.integers(min_value=1, max_value=200_000))
@settings(max_examples=15, deadline=None)
def test_nesting_of_any_depth_is_read_or_refused_in_one_line(tmp_path_factory, depth):
    path = tmp_path_factory.mktemp("deep") / "r.json"
    path.write_text("[" * depth + "]" * depth)
    try:
        value = rec.load_record(path)
    except HarnessError as exc:
        assert depth > rec.MAX_JSON_DEPTH and "nest deeper than" in str(exc)
    else:
        assert depth <= rec.MAX_JSON_DEPTH and rec.nesting_depth(value) == depth
        assert rec.check_record(value) != []
