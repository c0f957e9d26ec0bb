"""tokenize: the generated kernel against the reference and against the vocabulary itself.

Token ids are integers: every comparison is exact. The tokenizer is the tiny
committed WordPiece (tests/models/tiny_tokenizer.json, BERT-style, 1000 tokens).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kernelcheck import Steps, assert_same, compile_steps

from infc.kernels.codegen import generate_module
from infc.kernels.graph import resolve
from infc.kernels.reference import run_reference
from infc_runtime.pipeline import load_kernel_module
from infc_runtime.types import TensorSpec

TOKENIZER = Path(__file__).resolve().parents[3] / "models" / "tiny_tokenizer.json"
TEXT = TensorSpec("text", "bytes", ())
PAD, UNK, CLS, SEP = 0, 1, 2, 3


def _vocab() -> dict[str, int]:
    from tokenizers import Tokenizer

    return dict(Tokenizer.from_file(str(TOKENIZER)).get_vocab())


def _steps(**params: Any) -> Steps:
    return [("tokenize", {"tokenizer": str(TOKENIZER), "max_length": 8, **params})]


def _texts(*texts: str | bytes) -> dict[str, np.ndarray]:
    arr = np.empty(len(texts), dtype=object)
    arr[:] = [t.encode() if isinstance(t, str) else t for t in texts]
    return {"text": arr}


_MODULES: dict[str, Any] = {}


def _module(factory: pytest.TempPathFactory, key: str, steps: Steps) -> Any:
    if key not in _MODULES:
        _MODULES[key] = compile_steps(factory.mktemp(key), "pre", steps, [TEXT])
    return _MODULES[key]


def test_ids_are_the_vocabulary_words_between_cls_and_sep_then_padding(tmp_path: Path) -> None:
    vocab = _vocab()
    got = compile_steps(tmp_path, "pre", _steps(), [TEXT]).run(_texts("Return the path.", ""))
    words = [vocab[w] for w in ("return", "the", "path", ".")]
    assert got["input_ids"].tolist() == [[CLS, *words, SEP, PAD, PAD], [CLS, SEP] + [PAD] * 6]
    assert got["attention_mask"].tolist() == [[1] * 6 + [0] * 2, [1, 1] + [0] * 6]
    assert got["token_type_ids"].tolist() == [[0] * 8] * 2
    assert all(a.dtype == np.int64 and a.shape == (2, 8) for a in got.values())


WORDS = "return the path of file name value list"  # eight words, one token each


@pytest.mark.parametrize(("mode", "kept"), [("right", WORDS.split()[:6]), ("left", WORDS.split()[2:])])
def test_over_long_text_is_cut_and_keeps_its_special_tokens(tmp_path: Path, mode: str, kept: list[str]) -> None:
    vocab = _vocab()
    got = compile_steps(tmp_path, "pre", _steps(truncation=mode), [TEXT]).run(_texts(WORDS))
    assert got["input_ids"].tolist() == [[CLS, *[vocab[w] for w in kept], SEP]]
    assert got["attention_mask"].tolist() == [[1] * 8]


def test_truncation_error_fails_the_request_naming_field_and_row(tmp_path: Path) -> None:
    module = compile_steps(tmp_path, "pre", _steps(truncation="error"), [TEXT])
    assert module.run(_texts("a", "the path"))["attention_mask"].sum() == 3 + 4
    with pytest.raises(ValueError, match=r"input 'text' row 1: \d+ tokens, more than max_length 8"):
        module.run(_texts("path", WORDS))


def test_text_that_is_not_utf8_fails_naming_field_and_row(tmp_path: Path) -> None:
    module = compile_steps(tmp_path, "pre", _steps(), [TEXT])
    with pytest.raises(ValueError, match=r"input 'text' row 2: not UTF-8 text \(invalid start byte at byte 1\)"):
        module.run(_texts("ok", "fine", b"a\xffb"))
    # str elements (a JSON request's text) tokenize like their UTF-8 bytes
    as_str = np.array(["Return the path."], dtype=object)
    np.testing.assert_array_equal(module.run({"text": as_str})["input_ids"],
                                  module.run(_texts("Return the path."))["input_ids"])


_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=60)


@settings(max_examples=60, deadline=None)
@given(texts=st.lists(st.one_of(_text, st.sampled_from(["", " ", "Return the PATH of the file!", "ünïcödé 😀"])),
                      max_size=5),
       mode=st.sampled_from(["right", "left"]))
def test_kernel_equals_reference_on_any_text(tmp_path_factory: pytest.TempPathFactory, texts: list[str],
                                             mode: str) -> None:
    steps = _steps(truncation=mode)
    module = _module(tmp_path_factory, mode, steps)
    x = _texts(*texts)
    got, want = module.run(x), run_reference(steps, x)
    assert_same(got, want)
    lengths = got["attention_mask"].sum(axis=1)
    assert np.all((lengths >= 2) & (lengths <= 8)), "[CLS] and [SEP] always, never more than max_length"
    assert np.all(got["input_ids"][got["attention_mask"] == 0] == PAD)


@settings(max_examples=30, deadline=None)
@given(texts=st.lists(st.one_of(_text, st.sampled_from(["", "Return the PATH of the file!", WORDS])), max_size=4),
       padding=st.sampled_from(["longest", "max_length"]))
def test_rows_are_padded_to_the_longest_rounded_up_to_8_or_to_max_length(
        tmp_path_factory: pytest.TempPathFactory, texts: list[str], padding: str) -> None:
    steps = _steps(max_length=20, padding=padding)
    module = _module(tmp_path_factory, f"pad-{padding}", steps)
    x = _texts(*texts)
    got = module.run(x)
    assert_same(got, run_reference(steps, x))
    longest = int(got["attention_mask"].sum(axis=1).max(initial=1))
    width = 20 if padding == "max_length" else min(20, -(-longest // 8) * 8)
    assert got["input_ids"].shape == (len(texts), width)
    assert (getattr(module, "PADDING", None) is not None) == (padding == "longest")


def test_outputs_names_and_dtype(tmp_path: Path) -> None:
    steps = _steps(outputs={"input_ids": "ids", "attention_mask": "mask"}, dtype="int32", max_length=4)
    got = compile_steps(tmp_path, "pre", steps, [TEXT]).run(_texts("path"))
    assert sorted(got) == ["ids", "mask"]
    assert got["ids"].dtype == np.int32 and got["ids"].tolist() == [[CLS, _vocab()["path"], SEP, PAD]]
    assert_same(got, run_reference(steps, _texts("path")))


def test_the_tokenizer_ships_beside_the_module_and_is_found_from_it(tmp_path: Path) -> None:
    def fail(i: int, issue: Any) -> None:
        raise AssertionError(str(issue))

    module = generate_module("pre", resolve(_steps(), [TEXT], fail), name="t", version="0")
    assert module.assets == {"assets/pre_tokenize0.tokenizer.json": TOKENIZER.read_bytes()}
    assert str(TOKENIZER) not in module.source, "the module must not point at the build machine's file"
    module.write(tmp_path / "built")
    shutil.copytree(tmp_path / "built", tmp_path / "moved")
    shutil.rmtree(tmp_path / "built")
    moved = load_kernel_module(tmp_path / "moved" / "pre.py")
    assert moved.run(_texts("path"))["input_ids"][0, 1] == _vocab()["path"]


@pytest.mark.parametrize(
    ("params", "start", "reason"),
    [
        ({"tokenizer": "/nonexistent/tokenizer.json"}, TEXT, "file not found: /nonexistent/tokenizer.json"),
        ({"tokenizer": __file__}, TEXT, "not a tokenizer.json the `tokenizers` library reads"),
        ({"max_length": 2}, TEXT, "max_length 2 leaves no room for text beside the tokenizer's 2 special tokens"),
        ({"pad_token": "[NOPE]"}, TEXT, "the tokenizer has no token '[NOPE]'"),
        ({"output": "x"}, TEXT, "tokenize makes several tensors: name them with `outputs`"),
        ({"outputs": {"input_ids": "a", "attention_mask": "a"}}, TEXT, "each output needs its own name"),
        ({}, TensorSpec("text", "bytes", (2,)), "expected one text per row (a BYTES tensor of shape [])"),
        ({}, TensorSpec("text", "uint8", ()), "expected one text per row"),
    ],
)
def test_bad_tokenize_steps_report_their_reason(params: dict[str, Any], start: TensorSpec, reason: str) -> None:
    issues: list[str] = []
    resolve(_steps(**params), [start], lambda i, issue: issues.append(str(issue)))
    assert len(issues) == 1 and reason in issues[0], issues
