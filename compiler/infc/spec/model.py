"""The typed spec: what `load_spec` returns, and the values it is made of.

`Spec` is the spec as written, resolved (defaults applied, paths absolute,
request inputs known). `CheckedSpec` is a `Spec` together with everything
loading checked it against (the model and its signature, the pre/post
dataflows, the calibration and validation arrays), so that nothing downstream
re-checks or re-reads a file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import onnx

from infc_runtime.types import ServingConfig, Tensors, TensorSpec

from ..errors import PathPart, SpecError
from ..kernels.types import Dataflow
from ..modelio import Signature
from .files import shown
from .yaml import KeyPath, Mark

__all__ = [
    "Target", "LatencyBudget", "AccuracyBudget", "Budget", "Optimize", "Monitor", "Step", "Spec",
    "RequestData", "CheckedSpec", "located", "nearest",
]


@dataclass(frozen=True)
class Target:
    """Where the bundle runs: `x86`, `arm` or `cuda`; `threads` None lets the plan choose.

    `isa`: the CPU instruction set (`infc.isa.ISAS`; `native` = the build host's, see
    `infc.isa.resolve_isa`), None for cuda. `fp16`: whether a cuda target runs fp16
    (always False on CPUs).
    """

    hardware: str
    threads: int | None = None
    isa: str | None = None
    fp16: bool = False


@dataclass(frozen=True)
class LatencyBudget:
    """Latency percentiles at batch 1 that the build must meet, in ms (None: not budgeted)."""

    p50: float | None = None
    p95: float | None = None
    p99: float | None = None


@dataclass(frozen=True)
class AccuracyBudget:
    """`metric` (a name in `infc.accuracy.METRICS`) of the optimized model against the original
    must stay >= `min` (or <= `max`, for an error metric).

    `params`: the metric's parameters, defaults applied (`output`, `k`, `threshold`,
    `column`; see `infc.accuracy.PARAMS`). `path`: where the spec wrote this budget.
    """

    metric: str
    min: float | None = None
    max: float | None = None
    params: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    path: tuple[PathPart, ...] = field(default=("budget", "accuracy"), compare=False)

    @property
    def bound(self) -> float | None:
        """The budgeted value: `max` for an error metric, else `min`."""
        return self.max if self.max is not None else self.min

    @property
    def output(self) -> str | int | None:
        """The tensor compared (a model output name or index, or a response tensor name);
        None: the model's first output."""
        value: str | int | None = self.params.get("output")
        return value


@dataclass(frozen=True)
class Budget:
    """What the build must meet; a missing part is not checked (no accuracy budget: `()`)."""

    latency_ms: LatencyBudget | None = None
    accuracy: tuple[AccuracyBudget, ...] = ()


@dataclass(frozen=True)
class Optimize:
    """Graph optimizations to try, and the data they need (absolute paths)."""

    quantize: str = "none"
    fuse: bool = True
    calibration: Path | None = None
    validation: Path | None = None


@dataclass(frozen=True)
class Deploy:
    """The `deploy` section: how the bundle ships (wheelhouse, image, Kubernetes values)."""

    wheelhouse: bool = False
    base_image: str | None = None
    """Pinned by digest; None: infc's documented default for the target (infc.deploy)."""
    image: str | None = None
    """None: NAME:VERSION."""
    min_replicas: int = 1
    max_replicas: int = 4
    cpu_percent: int = 70
    memory: str = "1Gi"
    usd_per_hour: float | None = None
    """The price of the host a server runs on (None: not given; see `instance`)."""
    vcpus: int | None = None
    """The vCPUs `usd_per_hour` buys (None: the vCPUs the server uses)."""
    instance: str | None = None
    """An instance type of `infc.instances.INSTANCES` (its vCPUs and price), instead of `usd_per_hour`."""


@dataclass(frozen=True)
class Monitor:
    """The `monitor` section: which model inputs the drift indicators watch, over how many sampled rows, and
    when a feature's PSI is `warn` or `alert` (see `infc.drift`)."""

    enabled: bool = True
    inputs: tuple[str, ...] | None = None
    """None: every model input."""
    window: int = 10_000
    sample_rate: float = 0.1
    bins: int = 10
    psi_warn: float = 0.1
    psi_alert: float = 0.25


@dataclass(frozen=True)
class Step:
    """One pre/post step: its registry name, its parameters, and where the spec wrote it."""

    name: str
    params: Mapping[str, Any]
    path: tuple[PathPart, ...]


@dataclass(frozen=True)
class Spec:
    """A loaded spec: typed fields, plus `data` (the resolved spec as plain data, defaults
    applied; written into bundles as spec.yaml) and `marks` (key path -> line, col)."""

    file: Path
    name: str
    version: str
    model: Path
    target: Target
    inputs: tuple[TensorSpec, ...]
    budget: Budget
    optimize: Optimize
    preprocess: tuple[Step, ...]
    postprocess: tuple[Step, ...]
    serving: ServingConfig
    deploy: Deploy
    data: Mapping[str, Any]
    marks: Mapping[KeyPath, Mark]
    serving_pinned: frozenset[str] = frozenset()
    """The `serving` keys the spec wrote; the build may choose the others (defaults fill `serving`)."""
    monitor: Monitor = field(default_factory=Monitor)

    def error(self, path: Sequence[PathPart], message: str) -> SpecError:
        """A `SpecError` about `path`, located where the nearest written part of it is."""
        return located(self.file, self.marks, path, message)


def nearest(marks: Mapping[KeyPath, Mark], path: KeyPath) -> Mark:
    """The mark of `path`, or of its nearest written parent ((1, 1): the file)."""
    for n in range(len(path), -1, -1):
        if path[:n] in marks:
            return marks[path[:n]]
    return (1, 1)


def located(file: Path, marks: Mapping[KeyPath, Mark], path: Sequence[PathPart], message: str) -> SpecError:
    """A `SpecError` about `path`, located where the nearest written part of it is."""
    line, col = nearest(marks, tuple(path))
    return SpecError(shown(file), line, col, tuple(path), message)


@dataclass(frozen=True)
class RequestData:
    """An .npz of requests that loading checked: the request tensors cast to the declared dtypes,
    and `labels` when it has them (read once, when the spec loads)."""

    path: Path
    requests: Tensors = field(repr=False)
    labels: np.ndarray[Any, Any] | None = field(repr=False)

    @property
    def samples(self) -> int:
        """N, the number of requests."""
        return len(next(iter(self.requests.values())))


@dataclass(frozen=True, eq=False)
class CheckedSpec:
    """A spec and what loading checked it against: the model (read and checked once), its signature,
    the pre/post dataflows (request inputs -> model inputs, model outputs -> response) and the data.

    Later stages take their inputs from here; none re-reads the model or the arrays, or re-resolves
    the steps (`infc.spec.prepare` makes a new one when it fills in parameters).
    """

    spec: Spec
    model: onnx.ModelProto = field(repr=False)
    signature: Signature
    pre: Dataflow
    post: Dataflow
    calibration: RequestData | None = None
    validation: RequestData | None = None
