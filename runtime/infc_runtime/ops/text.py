"""Text into token ids with a `tokenizers` tokenizer.json shipped in the bundle.

Imported only by bundles whose spec tokenizes text (`tokenizers` is pinned into those).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import tokenizers

__all__ = ["load_tokenizer", "tokenize"]

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


def tokenize(tok: Any, texts: Array, field: str, max_length: int, pad_id: int, dtype: type,
             special: bool, error: bool) -> tuple[Array, Array, Array]:
    """One text per row (bytes as UTF-8, else str) -> input ids, attention mask and token types,
    [N, max_length] each of `dtype`, padded with `pad_id`. Not UTF-8, or (with `error`) more than
    `max_length` tokens, fails with a ValueError naming the field and the row."""
    rows = []
    for r, value in enumerate(texts.ravel()):
        if isinstance(value, bytes):
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(f"input {field!r} row {r}: not UTF-8 text ({e.reason} at byte {e.start})") from None
        rows.append(str(value))
    ids: Array = np.full((len(rows), max_length), pad_id, dtype=dtype)
    mask: Array = np.zeros((len(rows), max_length), dtype=dtype)
    types: Array = np.zeros((len(rows), max_length), dtype=dtype)
    for r, encoding in enumerate(tok.encode_batch(rows, add_special_tokens=special)):
        n = len(encoding.ids)
        if error and n > max_length:
            raise ValueError(f"input {field!r} row {r}: {n} tokens, more than max_length {max_length}")
        ids[r, :n] = encoding.ids
        mask[r, :n] = encoding.attention_mask
        types[r, :n] = encoding.type_ids
    return ids, mask, types
