"""The served pipeline: pre kernel -> ONNX Runtime session -> post kernel.

A `Pipeline` is what the server runs. `Pipeline.load(bundle_dir)` builds one
from a bundle's `manifest.json` (read as an `abi.Manifest`) and its kernel
modules (read through `abi.kernel_module`); the compiler builds the same object in process
to measure what it is about to ship, so the numbers in a build report come from
the code that serves.

On the request path (`run_batch`) each request is pre-processed on its own, with
the serving limits visible to the kernels through `abi.request_limits()` (the decode
step reads `max_pixels` there); then, unless `serving.allow_non_finite`, its
float model inputs must be finite: a NaN or infinity fails that request (400
naming the row, the model input and, when the kernel module names its columns in
`COLUMNS = {input: (field, ...)}`, the field), not the batch.

Token sequences are padded per batch, not to a fixed length: model inputs the
pre kernel module names in `PADDING = {input: pad value}` (the tokenize step's)
may differ on axis 1 between requests, and a batch pads them to its longest
request. `length_bucket` gives the batcher a cheap estimate of a request's
length class (before tokenizing), so that it can group similar lengths;
`warmup` runs the planned lengths (powers of two up to the longest seen).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from . import providers
from .abi import KernelInfo, Manifest, RequestError, kernel_module, limits_for
from .cpus import usable_cpus
from .drift import DriftMonitor, load_reference
from .types import ServingConfig, Tensors, TensorSpec, numpy_dtype

__all__ = ["Pipeline", "load_kernel_module", "make_session"]

Kernel = Callable[[Tensors], Tensors]

_OPT_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


def make_session(model: str | bytes | Path, settings: dict[str, Any] | None = None, *,
                 instances: int = 1, allow_cpu_fallback: bool = False) -> ort.InferenceSession:
    """An ONNX Runtime session configured from a bundle's `session` settings.

    With `instances` sessions running at once, each gets that share of the
    compute threads: of `intra_op_num_threads` when the bundle sets it, else of
    the CPUs this process may use (`cpus.usable_cpus`).

    A provider the settings name (other than CPU) that onnxruntime does not
    offer, or that the made session does not use (onnxruntime-gpu drops CUDA
    when its libraries do not load), is a `providers.ProviderError` unless
    `allow_cpu_fallback`: then the session runs on what is left
    (`session.get_providers()` says what).
    """
    settings = settings or {}
    opts = ort.SessionOptions()
    opts.graph_optimization_level = _OPT_LEVELS[settings.get("graph_optimization_level", "all")]
    threads = int(settings.get("intra_op_num_threads", 0))
    usable = usable_cpus()
    if threads == 0 and (instances > 1 or usable < (os.cpu_count() or 1)):
        # 0 lets onnxruntime use the host's physical cores; pinned or under a CPU quota, use what this process has
        threads = usable
    if instances > 1:
        threads = max(1, threads // instances)
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = int(settings.get("inter_op_num_threads", 0))
    opts.log_severity_level = 3
    opts.enable_cpu_mem_arena = bool(settings.get("enable_cpu_mem_arena", True))
    if settings.get("execution_mode") == "parallel":
        opts.execution_mode = ort.ExecutionMode.ORT_PARALLEL
    wanted = providers.requested(settings)
    available = ort.get_available_providers()
    # checked before the model is read: a refused bundle costs no session
    providers.check(wanted, available, None, allow_cpu_fallback=allow_cpu_fallback)
    offered = [p for p in wanted if p in available] or [providers.CPU]
    source = str(model) if isinstance(model, Path) else model
    session = ort.InferenceSession(source, sess_options=opts, providers=offered)
    providers.check(wanted, available, session.get_providers(), allow_cpu_fallback=allow_cpu_fallback)
    return session


def load_kernel_module(path: Path) -> ModuleType:
    """Import a generated kernel module (`kernels/pre.py`) from a file path.

    The module's name is derived from the file's content, not from `hash()`
    (randomized per process) or its location: Numba's on-disk cache
    (`cache=True`) records it and re-imports it by that name when another
    process (a server restart, a moved bundle) loads the cached machine code.
    """
    stem = re.sub(r"\W", "_", path.stem)
    name = f"infc_kernels_{stem}_{hashlib.sha256(path.read_bytes()).hexdigest()[:16]}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import kernel module {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


class Pipeline:
    """Request tensors in, response tensors out; every stage batched on axis 0."""

    def __init__(
        self,
        *,
        name: str,
        version: str,
        inputs: Sequence[TensorSpec],
        outputs: Sequence[TensorSpec],
        session: ort.InferenceSession,
        pre: KernelInfo | Kernel,
        post: KernelInfo | Kernel,
        serving: ServingConfig | None = None,
        more_sessions: Sequence[ort.InferenceSession] = (),
        requested_providers: Sequence[str] | None = None,
        drift: DriftMonitor | None = None,
    ) -> None:
        """`pre` / `post`: a kernel module's interface (`abi.kernel_module`), or a bare function (no tables).

        `more_sessions`: further sessions of the same model, one per further
        instance (`serving.instances`); `run_batch(..., instance=i)` runs on the i-th.
        `requested_providers`: the execution providers the bundle was built for
        (its manifest's `session.providers`; None: those the session uses).
        `providers` are those the session uses, `cpu_fallback` those it was built
        for and does without (allowed by `make_session(allow_cpu_fallback=True)`).
        """
        self.name = name
        self.version = version
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        self.session = session
        self.sessions = [session, *more_sessions]
        self.serving = serving or ServingConfig()
        self.providers: list[str] = list(session.get_providers())
        self.requested_providers = list(self.providers if requested_providers is None else requested_providers)
        self.cpu_fallback = providers.missing(self.requested_providers, self.providers)
        self.drift = drift
        pre_info = pre if isinstance(pre, KernelInfo) else KernelInfo(run=pre)
        self._pre: Kernel = pre_info.run
        self._post: Kernel = post.run if isinstance(post, KernelInfo) else post
        self._model_inputs = [i.name for i in session.get_inputs()]
        # the fields behind each column of a tabular model input, when the pre kernel module names them
        self._columns = pre_info.columns
        self._examples = pre_info.examples
        # model inputs padded per batch on axis 1 (token sequences), and their pad values
        self._padding = dict(pre_info.padding)
        self._texts = [i.name for i in self.inputs if i.dtype == "bytes"] if self._padding else []
        self.manifest: Manifest | None = None
        """The bundle's manifest (`load` sets it; None for a pipeline made in process)."""

    @classmethod
    def load(cls, bundle_dir: str | Path, *, allow_cpu_fallback: bool = False) -> Pipeline:
        """Build the pipeline a bundle describes (its `manifest.json`); ManifestError when it cannot be read,
        `providers.ProviderError` when it needs an execution provider this host lacks (see `make_session`)."""
        root = Path(bundle_dir)
        manifest = Manifest.from_dict(json.loads((root / "manifest.json").read_text()))
        instances = manifest.serving.instances
        reference = load_reference(root, manifest.files)
        sessions = [make_session(root / manifest.model.path, dict(manifest.session), instances=instances,
                                 allow_cpu_fallback=allow_cpu_fallback)
                    for _ in range(instances)]
        pipeline = cls(
            name=manifest.name,
            version=manifest.version,
            inputs=manifest.inputs,
            outputs=manifest.outputs,
            session=sessions[0],
            pre=kernel_module(load_kernel_module(root / manifest.kernels.pre)),
            post=kernel_module(load_kernel_module(root / manifest.kernels.post)),
            serving=manifest.serving,
            more_sessions=sessions[1:],
            requested_providers=providers.requested(manifest.session),
            drift=None if reference is None else DriftMonitor(reference, manifest.name, manifest.version),
        )
        pipeline.manifest = manifest
        return pipeline

    # -- stages ------------------------------------------------------------
    def preprocess(self, request: Tensors) -> Tensors:
        """Request tensors -> model inputs (one request; may raise RequestError)."""
        with limits_for(self.serving):
            return self._pre(request)

    def check_finite(self, model_inputs: Tensors) -> None:
        """RequestError naming the first row and model input holding NaN or an infinity (one request's inputs)."""
        for name in self._model_inputs:
            array = model_inputs.get(name)
            if array is None or array.dtype.kind not in "fc" or np.isfinite(array).all():
                continue
            flat = array.reshape(len(array), -1)
            bad = ~np.isfinite(flat)
            row = int(bad.any(axis=1).argmax())
            column = int(bad[row].argmax())
            value = flat[row, column]
            at = f"column {column}" if array.ndim == 2 else f"index {list(np.unravel_index(column, array.shape[1:]))}"
            fields = self._columns.get(name, ())
            if array.ndim == 2 and column < len(fields):
                at += f" (field {fields[column]!r})"
            raise RequestError(f"row {row}: model input {name!r} holds {value} at {at} after pre-processing; the "
                               "model takes finite values only (serving.allow_non_finite is false; a fill_missing "
                               "or clip step in preprocess maps such values)")

    def infer(self, model_inputs: Tensors, instance: int = 0) -> Tensors:
        """Model inputs -> model outputs, with ONNX Runtime (the session of `instance`)."""
        session = self.sessions[instance]
        feed = {name: model_inputs[name] for name in self._model_inputs}
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(names, feed), strict=True))

    def postprocess(self, model_outputs: Tensors, model_inputs: Tensors | None = None) -> Tensors:
        """Model outputs -> response tensors.

        Post steps may also read the model inputs (e.g. `mean_pool` reads the
        attention mask); an output of the model wins over an input of the same name.
        """
        return self._post({**(model_inputs or {}), **model_outputs})

    def run(self, request: Tensors) -> Tensors:
        """All three stages for one request (or one pre-stacked batch)."""
        model_inputs = self.preprocess(request)
        return self.postprocess(self.infer(model_inputs), model_inputs)

    def run_batch(
        self, requests: Sequence[Tensors], *, timings: dict[str, float] | None = None, instance: int = 0,
        intervals: list[tuple[str, int, int]] | None = None, observed: list[tuple[Tensors, Tensors]] | None = None,
    ) -> list[Tensors | Exception]:
        """Run many requests as one batch; a request whose data is bad fails alone.

        Pre-processing runs per request (inputs may differ in size before it),
        the model and post-processing run once over the concatenated batch,
        and the results are split back by each request's row count. Requests
        whose model inputs cannot be concatenated (different trailing shapes)
        run as separate sub-batches, so one odd shape never fails the others.
        When `timings` is given, the seconds spent in each stage are added to
        its `pre`, `infer` and `post` keys; when `intervals` is given, each
        stage's run is appended to it as (stage, start, end) in wall-clock ns
        (for trace spans). The model runs on the session of `instance`; batches
        on different instances may run at once. When `observed` is given, each sub-batch's model inputs and its
        model outputs with its response tensors (whole, before the split) are appended to it (for
        `DriftMonitor.observe`).
        """
        clock = _StageClock(timings, intervals)
        results: list[Tensors | Exception] = [RuntimeError("not run")] * len(requests)
        groups: dict[tuple[Any, ...], list[tuple[int, Tensors]]] = {}
        with clock("pre"):
            for i, req in enumerate(requests):
                try:
                    prepared = self.preprocess(req)
                    if not self.serving.allow_non_finite:
                        self.check_finite(prepared)
                except Exception as exc:  # a bad request fails alone
                    results[i] = exc if isinstance(exc, RequestError) else RequestError(str(exc))
                    continue
                groups.setdefault(_concat_key(prepared, self._padding), []).append((i, prepared))
        for group in groups.values():
            self._run_group(group, results, clock, instance, observed)
        return results

    def _run_group(
        self, group: list[tuple[int, Tensors]], results: list[Tensors | Exception], clock: _StageClock,
        instance: int, observed: list[tuple[Tensors, Tensors]] | None = None,
    ) -> None:
        """Model and post-processing over requests whose model inputs concatenate."""
        counts = [len(next(iter(t.values()))) for _, t in group]
        names = list(group[0][1])
        batch = {n: self._concat([t[n] for _, t in group], self._padding.get(n)) for n in names}
        try:
            with clock("infer"):
                model_out = self.infer(batch, instance)
            with clock("post"):
                out = self.postprocess(model_out, batch)
        except Exception as exc:  # the batch failed: only its own requests fail
            for i, _ in group:
                results[i] = exc
            return
        if observed is not None:
            observed.append((batch, {**model_out, **out}))
        offsets = np.cumsum([0, *counts])
        for (i, _), start, stop in zip(group, offsets[:-1], offsets[1:], strict=True):
            results[i] = {k: v[start:stop] for k, v in out.items()}

    @staticmethod
    def _concat(arrays: list[npt.NDArray[Any]], pad: int | None) -> npt.NDArray[Any]:
        """Requests' arrays as one batch; with `pad`, each first padded on axis 1 to the longest."""
        if pad is not None:
            width = max(a.shape[1] for a in arrays)
            arrays = [_pad_to(a, width, pad) for a in arrays]
        return np.concatenate(arrays) if len(arrays) > 1 else arrays[0]

    def length_bucket(self, request: Tensors) -> int:
        """A request's length class, cheap and before pre-processing: 0 without padded inputs, else
        one more per doubling of its longest text's UTF-8 bytes (about four per token)."""
        longest = 0
        for name in self._texts:
            texts = request.get(name)
            if texts is not None and texts.size:
                longest = max(longest, max(len(t) if isinstance(t, bytes | str) else 0 for t in texts.ravel()))
        return (longest // 32).bit_length()

    def example_request(self, batch: int = 1) -> Tensors:
        """Zero-filled request tensors of the declared shapes (for warm-up).

        A BYTES input is filled with the pre kernel module's `EXAMPLES[name]` when
        it has one (a JSON row that parses, say), else with empty strings.
        """
        examples = self._examples
        req: Tensors = {}
        for spec in self.inputs:
            shape = (batch, *(1 if s < 0 else s for s in spec.shape))
            dtype = numpy_dtype(spec.dtype)
            fill = examples.get(spec.name, b"")
            req[spec.name] = np.full(shape, fill, dtype=object) if dtype.kind == "O" else np.zeros(shape, dtype)
        return req

    def warmup(self, max_length: int | None = None, instance: int = 0) -> None:
        """Run batch 1 and the largest batch once on the session of `instance`: compiles kernels, sizes arenas.

        With padded inputs (token sequences), each planned length runs too: powers of two from the
        example's up to `max_length` (default: the longest the pre kernel makes, `_longest`).
        """
        for batch in sorted({1, self.serving.max_batch_size}):
            result = self.run_batch([self.example_request(batch)], instance=instance)[0]
            if isinstance(result, Exception):
                raise result
        if not self._padding:
            return
        inputs = self.preprocess(self.example_request(1))
        width = next(inputs[n].shape[1] for n in self._padding if n in inputs)
        longest = max_length or self._longest()
        if longest <= width:
            return
        lengths = sorted({*(1 << k for k in range(width.bit_length(), longest.bit_length()) if 1 << k > width),
                          longest} - {width})
        for length in lengths:
            for batch in sorted({1, self.serving.max_batch_size}):
                feed = {n: np.repeat(_pad_to(a, length, self._padding[n]) if n in self._padding else a, batch, 0)
                        for n, a in inputs.items()}
                self.postprocess(self.infer(feed, instance), feed)

    def _longest(self) -> int:
        """The most tokens a request's row can have: the pre kernel's width for ever longer texts (8 to
        2048 words) until it stops growing (truncated to max_length) or refuses one (`truncation: error`)."""
        longest = 0
        for k in range(3, 12):
            text = np.full(1, b"a " * (1 << k), dtype=object)
            try:
                prepared = self.preprocess({**self.example_request(1), **{n: text for n in self._texts}})
            except Exception:  # over max_length with truncation: error
                break
            width = max(prepared[n].shape[1] for n in self._padding if n in prepared)
            if width <= longest:
                break
            longest = width
        return longest


def _concat_key(tensors: Tensors, padding: dict[str, int]) -> tuple[Any, ...]:
    """What must match for two requests' tensors to be concatenated on axis 0 (axis 1 of a padded one may differ)."""
    return tuple((name, arr.dtype.str, arr.shape[2:] if name in padding and arr.ndim >= 2 else arr.shape[1:])
                 for name, arr in sorted(tensors.items()))


def _pad_to(array: npt.NDArray[Any], width: int, value: int) -> npt.NDArray[Any]:
    """`array` padded on axis 1 with `value` to `width` (itself when it is that wide)."""
    if array.shape[1] >= width:
        return array
    out = np.full((array.shape[0], width, *array.shape[2:]), value, dtype=array.dtype)
    out[:, :array.shape[1]] = array
    return out


class _StageClock:
    """Adds the seconds spent inside `with clock(stage):` to a timings dict, and, when given an intervals list,
    appends (stage, start, end) in wall-clock ns to it."""

    def __init__(self, timings: dict[str, float] | None, intervals: list[tuple[str, int, int]] | None = None) -> None:
        self._timings = timings
        self._intervals = intervals
        self._stage = ""
        self._start = 0.0
        self._start_ns = 0

    def __call__(self, stage: str) -> _StageClock:
        self._stage = stage
        return self

    def __enter__(self) -> None:
        self._start = time.perf_counter()
        if self._intervals is not None:
            self._start_ns = time.time_ns()

    def __exit__(self, *exc: object) -> None:
        if self._intervals is not None:
            self._intervals.append((self._stage, self._start_ns, time.time_ns()))
        if self._timings is not None:
            elapsed = time.perf_counter() - self._start
            self._timings[self._stage] = self._timings.get(self._stage, 0.0) + elapsed
