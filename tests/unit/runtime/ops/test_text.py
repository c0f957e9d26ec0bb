"""tokenize against the step's numpy reference (the `tokenizers` library on the test tokenizer)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from infc.kernels.registry import get
from infc_runtime.ops.text import load_tokenizer, tokenize

TOKENIZER = Path(__file__).resolve().parents[3] / "models" / "tiny_tokenizer.json"


@pytest.mark.parametrize("mode", ["right", "left"])
def test_tokenize_matches_the_reference(mode: str) -> None:
    texts = np.array(["hello world", "", b"a much longer text than eight tokens, surely, by far"],
                     dtype=object)
    params = {"tokenizer": str(TOKENIZER), "max_length": 8, "truncation": mode}
    pad_id = 0
    tok = load_tokenizer(TOKENIZER, 8, mode)
    got = tokenize(tok, texts, "text", 8, pad_id, np.int64, True, False)
    want = get("tokenize").reference(texts, params)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)


def test_not_utf8_and_too_long_name_the_row() -> None:
    tok = load_tokenizer(TOKENIZER, 4, "error")
    with pytest.raises(ValueError, match="input 'text' row 1: not UTF-8"):
        tokenize(tok, np.array([b"ok", b"\xff"], dtype=object), "text", 4, 0, np.int64, True, False)
    with pytest.raises(ValueError, match="input 'text' row 0: .* tokens, more than max_length 4"):
        tokenize(tok, np.array(["one two three four five"], dtype=object), "text", 4, 0, np.int64, True, True)
