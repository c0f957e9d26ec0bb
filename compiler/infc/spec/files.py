"""Check the files a spec names: the ONNX model and the calibration/validation arrays.

Every function here returns problems as messages (the caller knows which spec
key named the file and points there); nothing raises for a bad user file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import onnx

from infc_runtime.types import TensorSpec, numpy_dtype

from .validate import suggest
from .yaml import KeyPath

__all__ = ["load_model", "compare_inputs", "check_arrays", "Arrays", "shown"]

_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_NPY_MAGIC = b"\x93NUMPY"


def shown(path: Path) -> str:
    """`path` relative to the working directory when it is under it, else absolute."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _missing(path: Path) -> str:
    return f"not a file: {shown(path)}" if path.exists() else f"file not found: {shown(path)}"


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0]


def load_model(path: Path) -> onnx.ModelProto | str:
    """The checked model at `path`, or a message saying why it is not one."""
    if not path.is_file():
        return _missing(path)
    try:
        # by path, so that models over 2 GB (external data) are checked too; full_check infers shapes
        onnx.checker.check_model(str(path), full_check=True)
        return onnx.load(str(path))
    except Exception as e:  # protobuf, checker and shape-inference errors all mean "not a valid model"
        return f"not a valid ONNX model ({shown(path)}): {_first_line(e)}"


def _shape(shape: Sequence[int], batch: str | None = None) -> str:
    dims = ([batch] if batch else []) + ["*" if d == -1 else str(d) for d in shape]
    return "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"


def compare_inputs(given: Sequence[TensorSpec], model: Sequence[TensorSpec]) -> list[tuple[KeyPath, str]]:
    """Without preprocess the request goes to the model as is: names, dtypes, shapes must agree."""
    out: list[tuple[KeyPath, str]] = []
    by_name = {t.name: t for t in model}
    for i, t in enumerate(given):
        m = by_name.get(t.name)
        if m is None:
            out.append((("inputs", i, "name"), f"the model has no input {t.name!r}"
                        + suggest(t.name, by_name, known="its inputs")
                        + "; without preprocess, request inputs are the model's"))
            continue
        if t.dtype != m.dtype:
            out.append((("inputs", i, "dtype"), f"the model takes {m.dtype} for {t.name!r}, got {t.dtype} "
                        "(without preprocess, requests go to the model as they are)"))
        if len(t.shape) != len(m.shape) or any(md not in (-1, td) for td, md in zip(t.shape, m.shape, strict=True)):
            out.append((("inputs", i, "shape"), f"the model takes {t.name!r} with shape {_shape(m.shape)} "
                        f"(batch dimension left out), got {_shape(t.shape)}"))
    missing = [m.name for m in model if m.name not in {t.name for t in given}]
    if missing:
        out.append((("inputs",), f"model input{'s' * (len(missing) > 1)} {', '.join(map(repr, missing))} "
                    "not listed; without preprocess every model input is a request input"))
    return out


def _casts(array: np.ndarray[Any, Any], dtype: str) -> bool:
    if dtype == "bytes":
        return array.dtype.kind in "SU"
    return bool(np.can_cast(array.dtype, numpy_dtype(dtype), casting="safe"))


class Arrays(NamedTuple):
    """What an .npz that could be read holds: samples N (None: unknown), `labels` (or None)
    and every array by name (kept: the build reads the file no more)."""

    samples: int | None
    labels: np.ndarray[Any, Any] | None
    arrays: dict[str, np.ndarray[Any, Any]]


def check_arrays(path: Path, inputs: Sequence[TensorSpec]) -> tuple[list[str], Arrays | None]:
    """Problems of the .npz at `path` as data for `inputs`; and what it holds (None when it
    cannot be read).

    Wanted: one array [N, *input.shape] per request input (-1 matches any size) of a dtype
    that casts safely to the input's, the same N for all, and optionally integer `labels` [N].
    """
    if not path.is_file():
        return [_missing(path)], None
    with path.open("rb") as f:
        magic = f.read(6)
    if magic.startswith(_NPY_MAGIC):
        return [f"{shown(path)} holds a single array (.npy); expected an .npz archive "
                "with one array per request input (np.savez)"], None
    if not magic.startswith(_ZIP_MAGIC):
        return [f"{shown(path)} is not an .npz archive (np.savez)"], None
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except ValueError as e:
        if "allow_pickle" in str(e):
            return [f"{shown(path)} holds Python objects (pickled arrays), which infc does not load"], None
        return [f"cannot read {shown(path)}: {_first_line(e)}"], None
    except Exception as e:  # a damaged archive: BadZipFile, zlib.error, EOFError, ...
        return [f"cannot read {shown(path)}: {_first_line(e)}"], None

    problems: list[str] = []
    lengths: dict[str, int] = {}
    names = {t.name for t in inputs}
    for t in inputs:
        a = arrays.get(t.name)
        if a is None:
            problems.append(f"{shown(path)} has no array {t.name!r}"
                            + suggest(t.name, arrays, known="it has")
                            + "; it needs one per request input")
            continue
        if a.ndim != len(t.shape) + 1 or any(w not in (-1, d) for w, d in zip(t.shape, a.shape[1:], strict=True)):
            problems.append(f"array {t.name!r} has shape {_shape(a.shape)}, "
                            f"expected {_shape(t.shape, batch='N')}")
        elif not _casts(a, t.dtype):
            problems.append(f"array {t.name!r} has dtype {a.dtype}, which does not cast safely "
                            f"to the input's {t.dtype}")
        if a.ndim:
            lengths[t.name] = a.shape[0]
    labels = arrays.get("labels") if "labels" not in names else None
    if labels is not None and labels.ndim != 1:
        problems.append(f"`labels` has shape {_shape(labels.shape)}, expected (N,): one class per sample")
    elif labels is not None and labels.dtype.kind not in "iu":
        problems.append(f"`labels` has dtype {labels.dtype}, expected integers (class indices)")
    if len(set(lengths.values())) > 1:
        listed = ", ".join(f"{k} {n}" for k, n in lengths.items())
        problems.append(f"arrays differ in length N (the first dimension): {listed}")
    elif 0 in lengths.values():
        problems.append(f"{shown(path)} holds no samples (N = 0)")
    elif labels is not None and labels.ndim == 1 and lengths and len(labels) not in lengths.values():
        problems.append(f"`labels` has {len(labels)} entries, expected N = {max(lengths.values())} "
                        "(one per sample)")
    samples = next(iter(lengths.values())) if len(set(lengths.values())) == 1 else None
    return problems, Arrays(samples, labels, arrays)
