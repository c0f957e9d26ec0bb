"""Text pre-processing: `tokenize` (one string per row -> token ids, attention mask, token types).

Tokenizing runs the `tokenizers` library (Hugging Face's Rust tokenizer) on a
`tokenizer.json` that ships in the bundle (`kernels/assets/`), not Numba: per
request, before batching. With `padding: longest` (the default) a request's rows
are padded to its longest one rounded up to a multiple of 8 (at most
`max_length`), and the server pads each batch to its longest request (the
kernel module's `PADDING` says which model inputs, with which value), so a batch
of short sentences costs what they need; with `padding: max_length` every row
has exactly `max_length` tokens. Padding is done here (pad id, mask 0, type 0), whatever the
file configures; over-long text is cut on the `truncation` side (the special
tokens such as [CLS] and [SEP] stay), or, with `truncation: error`, fails its
request with a 400 naming the field and the row. Text that is not UTF-8 fails
the same way. Empty text is fine: the special tokens alone.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from infc_runtime.abi import PADDING
from infc_runtime.types import TensorSpec

from ..registry import StepDef, register
from ..types import EmitContext, ModuleText, ResolvedStep, StepIssue

Array = npt.NDArray[Any]
Out = tuple[tuple[TensorSpec, ...], dict[str, Any]]

KINDS = ("input_ids", "attention_mask", "token_type_ids")
MULTIPLE = 8
"""With `padding: longest`, rows are padded to a multiple of this many tokens (fewer distinct shapes)."""
_OPS_TEXT = "infc_runtime.ops.text"


@functools.lru_cache(maxsize=16)
def _read(path: str, mtime_ns: int, size: int) -> tuple[Any, int | None]:
    from tokenizers import Tokenizer  # a run-time dependency only of bundles that tokenize

    tok = Tokenizer.from_file(path)
    pad_id = None if tok.padding is None else int(tok.padding["pad_id"])
    tok.no_padding()  # the step pads and truncates by its own parameters, whatever the file says
    tok.no_truncation()
    return tok, pad_id


def load_tokenizer(path: str | Path) -> tuple[Any, int | None]:
    """The `tokenizers.Tokenizer` in a tokenizer.json, without its padding and truncation, and the pad id
    it configured (None: none); a StepIssue about `tokenizer` if there is none."""
    file = Path(path)
    if not file.is_file():
        raise StepIssue(f"file not found: {file}" if not file.exists() else f"not a file: {file}", "tokenizer")
    stat = file.stat()
    try:
        return _read(str(file), stat.st_mtime_ns, stat.st_size)
    except Exception as e:  # the library's own parse errors
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise StepIssue(f"not a tokenizer.json the `tokenizers` library reads ({file}): {first}",
                        "tokenizer") from None


def _pad_id(tok: Any, configured: int | None, p: Mapping[str, Any]) -> int:
    if "pad_token" in p:
        pad = tok.token_to_id(p["pad_token"])
        if pad is None:
            raise StepIssue(f"the tokenizer has no token {p['pad_token']!r}", "pad_token")
        return int(pad)
    if configured is not None:
        return configured
    for token in ("[PAD]", "<pad>"):
        if tok.token_to_id(token) is not None:
            return int(tok.token_to_id(token))
    raise StepIssue("the tokenizer names no padding token; give one with `pad_token`", "pad_token")


def _outputs(p: Mapping[str, Any]) -> dict[str, str]:
    """Which of input_ids, attention_mask, token_type_ids to make, and their names."""
    return dict(p.get("outputs") or {k: k for k in KINDS})


def _tokenize_infer(t: TensorSpec, p: Mapping[str, Any], out: str, others: Mapping[str, TensorSpec]) -> Out:
    if t.dtype != "bytes" or t.shape:
        raise StepIssue(f"expected one text per row (a BYTES tensor of shape []), got {t.dtype} tensor {t.name!r} "
                        f"of shape {list(t.shape)}")
    if "output" in p:
        raise StepIssue("tokenize makes several tensors: name them with `outputs`", "output")
    tok, configured = load_tokenizer(p["tokenizer"])
    pad_id = _pad_id(tok, configured, p)
    length = int(p["max_length"])
    special = tok.num_special_tokens_to_add(False) if p.get("add_special_tokens", True) else 0
    if length <= special:
        raise StepIssue(f"max_length {length} leaves no room for text beside the tokenizer's {special} special "
                        "tokens", "max_length")
    dtype = str(p.get("dtype", "int64"))
    names = _outputs(p)
    if len(set(names.values())) != len(names):
        raise StepIssue(f"each output needs its own name, got {names}", "outputs")
    width = -1 if _multiple(p) else length
    return tuple(TensorSpec(names[k], dtype, (width,)) for k in KINDS if k in names), {"pad_id": pad_id}


def _multiple(p: Mapping[str, Any]) -> int:
    """Rows padded to a multiple of this many tokens; 0: to max_length."""
    return MULTIPLE if p.get("padding", "longest") == "longest" else 0


def _text(value: Any, field: str, row: int) -> str:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"input {field!r} row {row}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    return str(value)


def _tokenize_ref(x: Array, p: Mapping[str, Any]) -> tuple[Array, ...]:
    """Row by row: encode without special tokens, truncate, add them (`post_process`), pad."""
    tok, configured = load_tokenizer(p["tokenizer"])
    pad_id, length, mode = _pad_id(tok, configured, p), int(p["max_length"]), p.get("truncation", "right")
    special = bool(p.get("add_special_tokens", True))
    room = length - (tok.num_special_tokens_to_add(False) if special else 0)
    encodings = []
    for r, value in enumerate(x.ravel()):
        enc = tok.encode(_text(value, "text", r), add_special_tokens=False)
        if len(enc.ids) > room:
            if mode == "error":
                raise ValueError(f"row {r}: {len(enc.ids)} tokens, more than max_length {length}")
            enc.truncate(room, direction=mode)
        encodings.append(tok.post_process(enc, add_special_tokens=special))
    width = length
    if _multiple(p):  # the longest row, rounded up to a multiple, at most max_length
        longest = max([len(enc.ids) for enc in encodings] + [1])
        width = min(length, -(-longest // _multiple(p)) * _multiple(p))
    arrays = {k: np.zeros((len(x), width), dtype=p.get("dtype", "int64")) for k in KINDS}
    arrays["input_ids"][:] = pad_id
    for r, enc in enumerate(encodings):
        n = len(enc.ids)
        for kind, values in (("input_ids", enc.ids), ("attention_mask", enc.attention_mask),
                             ("token_type_ids", enc.type_ids)):
            arrays[kind][r, :n] = values
    names = _outputs(p)
    return tuple(arrays[k] for k in KINDS if k in names)


def _tokenize_emit(text: ModuleText, step: ResolvedStep, ctx: EmitContext) -> None:
    p = step.params
    path = text.asset(f"{ctx.fn}.tokenizer.json", Path(p["tokenizer"]).read_bytes())
    mode, length = str(p.get("truncation", "right")), int(p["max_length"])
    text.imports.append(f"from {_OPS_TEXT} import load_tokenizer")
    tok = text.constant(f"TOKENIZER_{ctx.group}", f"load_tokenizer({path}, {length}, {mode!r})")
    names = _outputs(p)
    pad_id = int(step.extra["pad_id"])
    extra = [str(_multiple(p))] if _multiple(p) else []
    text.call(ctx, "tokenize", repr(ctx.src), str(length), str(pad_id),
              f"np.{p.get('dtype', 'int64')}", repr(bool(p.get("add_special_tokens", True))), repr(mode == "error"),
              *extra, outputs=[names.get(k) for k in KINDS], module=_OPS_TEXT, first=tok)
    if extra:  # the server pads a batch of these on axis 1 to its longest request, with these values
        values = {"input_ids": pad_id, "attention_mask": 0, "token_type_ids": 0}
        text.constant(PADDING, repr({names[k]: values[k] for k in KINDS if k in names}))


register(StepDef(
    "tokenize", ("pre",), "text (BYTES, one string per row) -> input_ids, attention_mask, token_type_ids "
    "[max_length], with a tokenizer.json shipped in the bundle", _tokenize_infer, _tokenize_ref,
    emit=_tokenize_emit, files=("tokenizer",), requires=("tokenizers",), required=("tokenizer", "max_length"),
    params={
        "tokenizer": {"type": "string", "minLength": 1,
                      "description": "a tokenizer.json (Hugging Face `tokenizers`), relative to the spec"},
        "max_length": {"type": "integer", "minimum": 1, "maximum": 1000000,
                       "description": "tokens per row, special tokens included: shorter text is padded"},
        "truncation": {"enum": ["right", "left", "error"],
                       "description": "over-long text: cut its end (default), cut its start, or fail the request "
                                      "(400)"},
        "padding": {"enum": ["longest", "max_length"],
                    "description": "pad to the longest text of the batch, rounded up to a multiple of 8 "
                                   "(default; the server pads each batch to its longest request), or every row "
                                   "to max_length"},
        "pad_token": {"type": "string", "minLength": 1,
                      "description": "padding token (default: the file's, else [PAD] or <pad>)"},
        "add_special_tokens": {"type": "boolean", "description": "add [CLS], [SEP], ... as the file says; "
                                                                 "default true"},
        "dtype": {"enum": ["int64", "int32"], "description": "of the results; default int64"},
        "outputs": {"type": "object", "minProperties": 1, "additionalProperties": False,
                    "properties": {k: {"type": "string", "minLength": 1} for k in KINDS},
                    "description": "which results to make and their names (default: all three, named so), "
                                   "e.g. {input_ids: input_ids, attention_mask: attention_mask}"},
    }))
