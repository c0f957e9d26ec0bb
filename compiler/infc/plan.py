"""From a spec and its target, decide the passes and the run-time settings.

`infc plan SPEC` prints this without building. The plan is recorded in the
bundle's manifest, so a reader can see exactly what was done and why.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import cache
from typing import Any

import onnx
import onnxruntime as ort

from .isa import host_hardware, host_isa, resolve_isa
from .spec import Spec

__all__ = ["Candidate", "Plan", "cuda_usable", "make_plan", "render_plan"]

_PROVIDERS = {"x86": "CPUExecutionProvider", "arm": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
# ISAs with integer dot-product instructions that take u8 x s8 without saturating
_U8S8_SAFE = {"avx512_vnni", "amx", "arm64_dotprod"}


@cache
def cuda_usable() -> bool:
    """Whether a session here really runs on CUDA: onnxruntime-gpu lists CUDAExecutionProvider even where its
    libraries do not load (then its sessions quietly run on CPU), so a one-node session is made to see."""
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return False
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])], "probe", [x],
                                   [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    try:
        session = ort.InferenceSession(model.SerializeToString(),
                                       providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    except Exception:  # onnxruntime's own errors (no device, a driver too old): CUDA is not usable here
        return False
    return "CUDAExecutionProvider" in session.get_providers()


def _host(target: str) -> tuple[str, bool, bool]:
    """The build host's ISA, whether it can run the target, and whether it is the target's ISA exactly."""
    if target == "cuda":
        ok = cuda_usable()
        return host_isa(), ok, ok
    return host_isa(), host_hardware() == target, False


PassList = tuple[tuple[str, dict[str, Any]], ...]


@dataclass(frozen=True)
class Candidate:
    """One way to optimize the model: a name and its passes, in order."""

    name: str
    passes: PassList
    baseline: bool = False
    """The plan's unoptimized candidate (fp32): every other one must beat it to be chosen."""
    unless_unchanged_by: tuple[str, ...] = ()
    """Passes the other candidates run and this one leaves out: when none of them changes the model,
    this candidate would repeat another one, and the search skips it."""


@dataclass(frozen=True)
class Plan:
    """The candidate pass lists (one, unless `quantize: auto`) and the session settings to ship."""

    target: str
    isa: str
    host: str
    host_isa: str
    host_matches_target: bool
    """The build host is the target (same hardware and ISA): its latency is the target's."""
    host_runs_target: bool
    """The build host can run the target's graph (same hardware), maybe on another ISA."""
    provider: str
    candidates: tuple[Candidate, ...]
    session: dict[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    shared: int = 0
    """How many leading passes the candidates share (normalize, the fusions): the search runs them once.
    An unfused candidate shares only the first (normalize)."""

    @property
    def passes(self) -> PassList:
        """The passes of the first (for a fixed `quantize`, the only) candidate."""
        return self.candidates[0].passes

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        del d["shared"]
        d["candidates"] = [{"name": c.name, "passes": [{"name": n, "params": p} for n, p in c.passes]}
                           for c in self.candidates]
        d["passes"] = d["candidates"][0]["passes"]
        return d


def _int8(isa: str) -> dict[str, PassList]:
    """The int8 candidates for an ISA: S8 weights per channel always; U8 activations only where safe."""
    static_act = "uint8" if isa in _U8S8_SAFE else "int8"
    return {
        "dynamic": (("quantize_dynamic", {"per_channel": True, "weight_type": "int8"}),),
        "static": (("quantize_static", {"method": "minmax", "per_channel": True, "activation_type": static_act}),),
    }


def _modes(quantize: str, target: str, fp16: bool, isa: str) -> dict[str, PassList]:
    """Candidate name -> the passes it adds between the graph fusions and fuse_graph."""
    if target == "cuda":
        every: dict[str, PassList] = {"fp32": (), "fp16": (("convert_fp16", {}),)}
        auto = ["fp32", "fp16"] if fp16 else ["fp32"]
    else:
        every = {"fp32": (), **_int8(isa)}
        auto = ["fp32", "dynamic", "static"]
    if quantize == "auto":  # fp32 first: the baseline every other candidate must beat
        return {name: every[name] for name in auto}
    name = "fp32" if quantize == "none" else quantize
    return {name: every[name]}


def make_plan(spec: Spec) -> Plan:
    """The plan for `spec` on its target (see ARCHITECTURE.md, step 2)."""
    target = spec.target.hardware
    isa = resolve_isa(spec.target)
    provider = _PROVIDERS[target]
    host_isa_name, runs_here, same_isa = _host(target)
    if target != "cuda":
        same_isa = runs_here and host_isa_name == isa
    notes: list[str] = []
    front: PassList = (("normalize", {}),)
    back: PassList = ()
    if spec.optimize.fuse:
        gpu = target == "cuda"
        front += (("fuse_transformer", {"use_gpu": gpu}), ("fuse_attention", {}))
        # layout-specific optimizations (ORT_ENABLE_ALL) only for the exact ISA they will run on
        level = "all" if same_isa else ("extended" if runs_here else "basic")
        back = (("fuse_graph", {"level": level, "provider": provider if runs_here else "CPUExecutionProvider"}),)
        if not same_isa:
            notes.append(f"build host is {host_hardware()}/{host_isa_name}, target is {target}/{isa}: "
                         f"{level} graph optimizations only (no layout-specific ones)")
    if target != "cuda" and isa not in _U8S8_SAFE:
        notes.append(f"{isa} has no VNNI/dot-product: int8 activations are S8 (U8S8 can saturate)")
    modes = _modes(spec.optimize.quantize, target, spec.target.fp16, isa)
    # the candidate that adds nothing between the fusions is the baseline
    candidates = [Candidate(name, (*front, *middle, *back), baseline=not middle) for name, middle in modes.items()]
    if spec.optimize.fuse and spec.optimize.quantize == "auto" and "dynamic" in modes:
        # quantized after the transformer fusions, a BERT keeps fewer nodes int8 inside the accuracy
        # budget than quantized before them (MiniLM on AVX2: x1.14 fused, x1.58 unfused, bench/RESULTS.md)
        fusions = tuple(name for name, _ in front[1:])
        unfused = Candidate("dynamic_unfused", (*front[:1], *modes["dynamic"], *back), unless_unchanged_by=fusions)
        candidates.insert([c.name for c in candidates].index("dynamic") + 1, unfused)
    # 0: onnxruntime uses the physical cores of whatever machine the bundle runs on
    threads = spec.target.threads or 0
    session = {
        "providers": [provider] + (["CPUExecutionProvider"] if provider != "CPUExecutionProvider" else []),
        "graph_optimization_level": "all",
        "intra_op_num_threads": threads,
        "inter_op_num_threads": 1,
        "execution_mode": "sequential",
        "enable_cpu_mem_arena": True,
    }
    if target == "cuda" and not runs_here:
        notes.append(f"this host cannot run {provider} (onnxruntime does not offer it, or its session does not "
                     "load it): the candidates' accuracy and every latency "
                     "figure are measured on CPU (CPUExecutionProvider), not on a GPU; the bundle still refuses "
                     "to serve on CPU unless started with --allow-cpu-fallback")
    if not same_isa:
        notes.append(f"latency on this host ({host_hardware()}/{host_isa_name}) is not the target's "
                     f"({target}/{isa}): reported, but the latency budget is not enforced and int8 or fp16 "
                     "candidates cannot be proven faster than fp32 here (use `isa: native` to build for this host)")
    return Plan(target=target, isa=isa, host=host_hardware(), host_isa=host_isa_name, host_matches_target=same_isa,
                host_runs_target=runs_here,
                provider=provider, candidates=tuple(candidates), session=session, notes=tuple(notes), shared=len(front))


def _params(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items()) or "-"


def render_plan(spec: Spec, plan: Plan, batching: dict[str, Any]) -> str:
    """`infc plan SPEC` for people: target, candidates with their passes, batching and why, notes."""
    lines = [f"plan for {spec.name} {spec.version}: target {plan.target}/{plan.isa} on {plan.provider}",
             f"  build host {plan.host}/{plan.host_isa}: "
             + ("is the target (latency measured and enforced)" if plan.host_matches_target
                else "not the target (latency reported, not enforced)"),
             "", "candidates" + (" (quantize: auto: the fastest inside the accuracy budgets wins, never one not "
                                 "faster than fp32)" if len(plan.candidates) > 1 else "") + ":"]
    for c in plan.candidates:
        lines.append(f"  {c.name}")
        lines += [f"    {i}. {name}({_params(params)})" for i, (name, params) in enumerate(c.passes, 1)]
    lines += ["", "session: " + _params({k: v for k, v in plan.session.items() if k != "providers"})]
    lock_line = f"lock: {batching['lock']} ({batching['lock_state']})"
    if batching.get("lock_changes"):
        lock_line += ": " + "; ".join(batching["lock_changes"])
    if batching.get("candidate"):
        exclude = f", fp32 kept for {', '.join(batching['exclude'])}" if batching.get("exclude") else ""
        lock_line += f"; locked choice {batching['candidate']}{exclude}"
    lines += [lock_line,
              f"batching: max_batch_size {batching['max_batch_size']}, max_queue_delay_ms "
              f"{batching['max_queue_delay_ms']:g}: {batching['why']}"]
    if plan.notes:
        lines += ["", "notes:", *(f"  - {n}" for n in plan.notes)]
    return "\n".join(lines)
