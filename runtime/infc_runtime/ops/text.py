"""Text into token ids with a `tokenizers` tokenizer.json shipped in the bundle.

Imported only by bundles whose spec tokenizes text (`tokenizers` is pinned into those).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import tokenizers

__all__ = ["load_tokenizer", "padded_length", "tokenize"]

Array = npt.NDArray[Any]


def load_tokenizer(path: str | Path, max_length: int, truncation: str) -> Any:
    """The tokenizer in `path`, without padding (the kernel pads rows to `max_length`), truncating to
    `max_length` on the `truncation` side (special tokens stay), or not at all for "error"."""
    tok = tokenizers.Tokenizer.from_file(str(path))
    tok.no_padding()
    if truncation == "error":
        tok.no_truncation()  # over-long text fails its request
    else:
        tok.enable_truncation(max_length, direction=truncation)
    return tok


def padded_length(longest: int, max_length: int, multiple: int) -> int:
    """Tokens per row for rows of at most `longest` tokens: `max_length` when `multiple` is 0, else
    `longest` rounded up to a multiple of `multiple` (at least one), never more than `max_length`."""
    if multiple <= 0:
        return max_length
    return min(max_length, -(-max(longest, 1) // multiple) * multiple)


def tokenize(tok: Any, texts: Array, field: str, max_length: int, pad_id: int, dtype: type,
             special: bool, error: bool, multiple: int = 0) -> tuple[Array, Array, Array]:
    """One text per row (bytes as UTF-8, else str) -> input ids, attention mask and token types,
    [N, L] each of `dtype`, padded with `pad_id`: L is `max_length`, or with `multiple` the longest
    row rounded up to a multiple of it (`padded_length`; the batch pads further to its longest
    request). Not UTF-8, or (with `error`) more than `max_length` tokens, fails with a ValueError
    naming the field and the row."""
    rows = []
    for r, value in enumerate(texts.ravel()):
        if isinstance(value, bytes):
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(f"input {field!r} row {r}: not UTF-8 text ({e.reason} at byte {e.start})") from None
        rows.append(str(value))
    encodings = tok.encode_batch(rows, add_special_tokens=special)
    for r, encoding in enumerate(encodings):
        n = len(encoding.ids)
        if error and n > max_length:
            raise ValueError(f"input {field!r} row {r}: {n} tokens, more than max_length {max_length}")
    length = padded_length(max((len(e.ids) for e in encodings), default=0), max_length, multiple)
    ids: Array = np.full((len(rows), length), pad_id, dtype=dtype)
    mask: Array = np.zeros((len(rows), length), dtype=dtype)
    types: Array = np.zeros((len(rows), length), dtype=dtype)
    for r, encoding in enumerate(encodings):
        n = len(encoding.ids)
        ids[r, :n] = encoding.ids
        mask[r, :n] = encoding.attention_mask
        types[r, :n] = encoding.type_ids
    return ids, mask, types
