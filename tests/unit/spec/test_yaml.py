"""infc.spec.yaml: plain data with marks; what a hostile file can cost is bounded; libyaml reads as PyYAML."""

from __future__ import annotations

import tracemalloc

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from infc.spec import yaml as spec_yaml
from infc.spec.yaml import MAX_ALIAS_DEPTH, MAX_ALIAS_VALUES, MAX_DEPTH, MAX_PROBLEMS, Document, parse

HEAD = "name: digits\nversion: 1.0.0\nmodel: digits.onnx\ntarget: x86\n"


def billion_laughs(levels: int) -> str:
    """The classic bomb: each level a list of 9 aliases of the level before (9**levels strings)."""
    lines = [HEAD.rstrip("\n"), 'a0: &a0 ["lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


def nested(depth: int, kind: str) -> str:
    """`serving` nested `depth` levels deep in flow mappings or lists."""
    opened, closed = ("{a: ", "}") if kind == "mapping" else ("[", "]")
    return HEAD + "serving: " + opened * depth + "1" + closed * depth + "\n"


# ---------------------------------------------------------------- aliases

def test_a_small_anchor_is_reused_as_copies_marked_where_written() -> None:
    doc = parse(b"unit: &unit {mean: [0.5], std: [0.5]}\nsteps:\n  - normalize: *unit\n  - normalize: *unit\n")
    assert doc.problems == []
    assert doc.data["steps"] == [{"normalize": {"mean": [0.5], "std": [0.5]}}] * 2
    assert doc.data["steps"][0]["normalize"] is not doc.data["steps"][1]["normalize"]
    assert doc.marks[("steps", 1, "normalize", "std", 0)] == doc.marks[("unit", "std", 0)] == (1, 33)


@pytest.mark.parametrize("levels", [7, 9])
def test_billion_laughs_stops_at_the_alias_limit_before_expanding(levels: int) -> None:
    tracemalloc.start()
    try:
        doc = parse(billion_laughs(levels).encode())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert doc.data is None
    (path, (line, col), message), = doc.problems
    assert message == (f"alias *a1: aliases may expand to {MAX_ALIAS_VALUES} values in all, these expand to more; "
                       "write the values out")
    assert path[0] == "a4" and (line, col) == (7, 10)  # the first *a1 in a2's list
    assert peak < 30 << 20, peak  # 9**levels strings would be gigabytes


def test_aliases_nest_at_most_five_deep() -> None:
    chain = "a0: &a0 [x]\n" + "".join(f"a{i}: &a{i} [*a{i - 1}]\n" for i in range(1, MAX_ALIAS_DEPTH + 2))
    assert parse(chain.rsplit("a6:", 1)[0].encode()).problems == []  # five deep reads
    (path, mark, message), = parse(chain.encode()).problems
    assert path == ("a6", 0, 0, 0, 0, 0, 0) and mark == (2, 10)
    assert message == ("alias *a0: aliases may nest 5 deep, here *a5 > *a4 > *a3 > *a2 > *a1 > *a0; "
                       "write the value out")


def test_many_aliases_of_a_long_list_reach_the_value_limit() -> None:
    text = "names: &n [" + ", ".join(["x"] * 1000) + "]\ncopies: [" + ", ".join(["*n"] * 20) + "]\n"
    (path, mark, message), = parse(text.encode()).problems
    assert path[:2] == ("copies", 9) and mark == (2, 46)  # the tenth *n: 9 copies of 1001 values fit
    assert "aliases may expand to 10000 values" in message


def test_an_alias_inside_its_own_value_is_a_problem_wherever_it_is_reached() -> None:
    doc = parse(b"x: &p [&q [*p]]\ny: *q\n")
    assert doc.data == {"x": [[None]], "y": [[None]]}
    # y is q, [p]; p is [q], which is being read: as PyYAML's composer and a walk of its nodes found it
    assert doc.problems == [(("x", 0, 0), (1, 4), "an alias refers to a value that contains it"),
                            (("y", 0, 0), (1, 8), "an alias refers to a value that contains it")]


def test_an_alias_nesting_values_past_the_depth_limit_is_named() -> None:
    deep = "[" * 60 + "1" + "]" * 60
    (path, mark, message), = parse(f"a: &a {deep}\nb: {'[' * 50}*a{']' * 50}\n".encode()).problems
    assert len(path) == MAX_DEPTH + 1 and mark == (2, 54)
    assert message == "alias *a: nests values more than 100 levels deep (a spec nests about 6)"


def test_aliases_as_keys_and_anchored_keys() -> None:
    doc = parse(b"k: &k key\n*k : 1\n&j other: 2\nl: *j\n")
    assert doc.problems == [] and doc.data == {"k": "key", "key": 1, "other": 2, "l": "other"}
    assert doc.key_marks[("key",)] == (1, 4)  # where the anchored scalar was written


# ---------------------------------------------------------------- nesting, problems

@pytest.mark.parametrize("kind", ["mapping", "list"])
def test_nesting_past_the_limit_is_one_problem_at_the_first_node_too_deep(kind: str) -> None:
    (path, (line, col), message), = parse(nested(10_000, kind).encode()).problems
    assert message == "nested more than 100 levels deep (a spec nests about 6)"
    assert len(path) == MAX_DEPTH + 1 and path[0] == "serving" and line == 5
    step = 4 if kind == "mapping" else 1  # `{a: ` or `[`
    assert col == len("serving: ") + 1 + step * MAX_DEPTH


@pytest.mark.parametrize("kind", ["mapping", "list"])
def test_nesting_up_to_the_limit_reads(kind: str) -> None:
    doc = parse(nested(MAX_DEPTH - 1, kind).encode())
    assert doc.problems == [] and max(len(p) for p in doc.marks) == MAX_DEPTH


def test_reading_stops_after_the_problems_it_lists() -> None:
    doc = parse(("serving:\n" + "  max_queue: 1\n" * (MAX_PROBLEMS + 500)).encode())
    assert doc.data is None and len(doc.problems) == MAX_PROBLEMS + 1
    assert doc.problems[0] == (("serving", "max_queue"), (3, 3), "duplicate key 'max_queue' (first written on line 2)")
    assert doc.problems[-1] == ((), (1, 1), f"more problems than the {MAX_PROBLEMS} listed: reading stops here")


@pytest.mark.parametrize(("value", "shown"), [
    ("!!float x", "'x' is not a valid !!float"),
    ("!!int x", "'x' is not a valid !!int"),
    ("!!bool x", "'x' is not a valid !!bool"),
    ("!!timestamp x", "'x' is not a valid !!timestamp"),
    ("!!float ''", "'' is not a valid !!float"),
])
def test_a_value_its_tag_cannot_read_is_a_problem(value: str, shown: str) -> None:
    doc = parse(f"a: {value}\n".encode())
    assert doc.problems == [(("a",), (1, 4), f"unsupported YAML value: {shown}")] and doc.unusable == {("a",)}


# ---------------------------------------------------------------- libyaml reads as PyYAML

needs_libyaml = pytest.mark.skipif(spec_yaml._FastLoader is None, reason="PyYAML without libyaml")


def read_by_pyyaml(text: bytes, monkeypatch: pytest.MonkeyPatch) -> Document:
    with monkeypatch.context() as m:
        m.setattr(spec_yaml, "_FastLoader", None)
        return parse(text)


TRICKY = [
    "a: {b: , c: 1}\n", "a: [b: ]\n", "---", "--- \n", "a:\n  b:\n  c: 1\n", "- a:\n- b\n", "a: &x\nb: *x\n",
    "{a, b}\n", "a: 1\n---\nb: 2\n", "a: *nowhere\n", "a: &x 1\nb: &x 2\n", "- &a : &a ]\n", "a: [1, 2\nb: 3\n",
    "a: 'x\n", "a:\n  b: 1\n c: 2\n", "a: b: c\n", "a: é\nb: [1,\n", "a: b\r\nc: [d,\r\n e]\r\n", "a: 1e400\n",
    "{a: 1, a: 2}\n", "[a, b]: c\n", "a: &a {b: 1}\nc: [*a, *a]\n", "a:\t1\n", "a: !x 1\n", "a: |\n  x\n",
]


@needs_libyaml
@pytest.mark.parametrize("text", TRICKY)
def test_libyaml_reads_what_pyyaml_reads(text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse(text.encode()) == read_by_pyyaml(text.encode(), monkeypatch)


SPEC = (HEAD + "inputs:\n  - {name: image, dtype: uint8, shape: [8, 8]}\nbudget:\n  latency_ms: {p95: 5, p99: 10}\n"
        "preprocess:\n  - normalize: &n {mean: [0.5], std: [0.5]}\n  - normalize: *n\npostprocess:\n  - softmax\n"
        "  - labels: {names: [zero, one, 'two', \"three\"]}\nserving:\n  max_batch_size: 16\n")
PIECES = ["", ":", "-", " ", "\n", "[", "]", "{", "}", ",", "'", '"', "&a ", "*a", "&b ", "*b", "#", "0", "x", "~",
          "\r\n", "...", "---", ": ", "- ", "  ", "é", ".inf", "<<: ", "1e9", "null", "\t", "!!str ", "? ", "|"]


@needs_libyaml
@settings(max_examples=150, deadline=None, database=None)
@given(st.data())
def test_mutated_specs_read_the_same_by_both_parsers(data: st.DataObject) -> None:
    text = SPEC
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(text) - 1))
        text = text[:i] + data.draw(st.sampled_from(PIECES)) + text[i + data.draw(st.integers(0, 3)):]
    raw = text.encode()
    with pytest.MonkeyPatch.context() as m:
        fast = parse(raw)
        m.setattr(spec_yaml, "_FastLoader", None)
        assert repr(fast) == repr(parse(raw)), text  # repr: a NaN equals itself, 1 differs from 1.0 and True


def test_without_libyaml_the_limits_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spec_yaml, "_FastLoader", None)
    assert "nested more than 100" in parse(nested(10_000, "list").encode()).problems[0][2]
    assert "aliases may expand" in parse(billion_laughs(9).encode()).problems[0][2]


def test_pyyaml_composes_as_before() -> None:
    """The data is what yaml.safe_load gives, for a document with none of our problems."""
    text = SPEC.replace("*n", "{mean: [0.5], std: [0.5]}").replace("&n ", "")
    assert parse(text.encode()).data == yaml.safe_load(text)
