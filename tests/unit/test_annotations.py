"""infc.annotations: spec errors as JSON objects and as GitHub workflow-command lines."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from infc.annotations import error_dict, escape_data, escape_property, github_annotation
from infc.errors import SpecError, SpecErrors
from infc.spec import load_spec

DIGITS = Path(__file__).resolve().parents[2] / "specs" / "digits"

BROKEN = """\
name: digits
version: 1.0.0
model: digits.onnx
target: x68
postprocess:
  - softmax
  - topk: {k: 0}
"""


@pytest.fixture
def broken(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[SpecError]:
    """The errors of a spec with a bad target (line 4) and a bad topk k (line 7), loaded from
    the folder above it, as `infc validate` is run from a repository root."""
    folder = tmp_path / "specs"
    folder.mkdir()
    shutil.copy(DIGITS / "digits.onnx", folder / "digits.onnx")
    (folder / "spec.yaml").write_text(BROKEN)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SpecErrors) as info:
        load_spec("specs/spec.yaml")
    return info.value.errors


def test_annotations_point_at_the_offending_lines(broken: list[SpecError]) -> None:
    assert [github_annotation(e) for e in broken] == [
        "::error file=specs/spec.yaml,line=4,col=9,title=infc spec::target: expected one of x86, arm, cuda, "
        "got 'x68' (did you mean 'x86'?)",
        "::error file=specs/spec.yaml,line=7,col=15,title=infc spec::postprocess[1].topk.k: "
        "expected an integer >= 1, got 0",
    ]
    lines = BROKEN.splitlines()
    # the column is where the offending value starts on that line
    assert [lines[e.line - 1][e.col - 1:] for e in broken] == ["x68", "0}"]
    assert github_annotation(broken[0], "warning").startswith("::warning file=specs/spec.yaml,line=4,")


def test_error_dicts_are_json(broken: list[SpecError]) -> None:
    assert json.loads(json.dumps([error_dict(e) for e in broken])) == [
        {"file": "specs/spec.yaml", "line": 4, "col": 9, "path": "target",
         "message": "expected one of x86, arm, cuda, got 'x68' (did you mean 'x86'?)"},
        {"file": "specs/spec.yaml", "line": 7, "col": 15, "path": "postprocess[1].topk.k",
         "message": "expected an integer >= 1, got 0"},
    ]


def test_an_error_about_the_whole_document_has_no_key_path() -> None:
    e = SpecError("a.yaml", 1, 1, (), "the spec is empty")
    assert error_dict(e)["path"] == ""
    assert github_annotation(e) == "::error file=a.yaml,line=1,col=1,title=infc spec::the spec is empty"


def test_escaping_follows_the_workflow_command_rules() -> None:
    e = SpecError("specs/a,b:c%.yaml", 3, 5, ("budget", "accuracy", 0, "min"),
                  "100% sure: a, b\r\nnext: line")
    assert github_annotation(e) == (
        "::error file=specs/a%2Cb%3Ac%25.yaml,line=3,col=5,title=infc spec::"
        "budget.accuracy[0].min: 100%25 sure: a, b%0D%0Anext: line")
    assert escape_data("%0A\n") == "%250A%0A"  # an escape already in the text stays literal
    assert escape_property("a:b,c%\n") == "a%3Ab%2Cc%25%0A"
    assert "\n" not in github_annotation(e)


def test_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError, match="expected one of error, warning, notice"):
        github_annotation(SpecError("a.yaml", 1, 1, (), "m"), "fatal")
