"""Whose numerics a build measures accuracy on, and how it chooses when it cannot measure speed.

When the build host is not the target, an int8 candidate's accuracy on this host is not its accuracy on the
target (other int8 kernels: VNNI or the dot-product extension, other fp32 vector widths), and its speed here
says nothing about the target's. Where an emulator reproduces the target's instruction set
(`infc.emulate`: arm targets on x86 under qemu-aarch64; an `avx2` target on an AVX-512 host under
`qemu-x86_64 -cpu Haswell`), each candidate's model runs on the validation data under it: accuracy is
measured on the target's numerics. Latency under emulation means nothing and is never measured; the speed
choice is then a documented rule (`speed_rule`), and the report says so. With no emulator set up, or for a
target TCG cannot emulate (AVX-512, VNNI, AMX), the build keeps fp32 as before and the report says why.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import onnx

from .choice import Choice, Evaluation, Tried
from .emulate import CPU_MODELS, SETUP_COMMAND, EmulationError, Emulator, EmulatorNotSetUp, arm64, x86_64
from .plan import Plan

__all__ = ["INT8_RULE", "EmulatedRunner", "TargetNumerics", "choose_by_rule", "matmul_share", "speed_rule",
           "target_numerics"]

_WORKER = Path(__file__).with_name("_emulated_worker.py")
MATMUL_HEAVY = 0.5
"""A model is MatMul-heavy when at least this share of its weights (float initializer elements) feed MatMul or
Gemm nodes: dynamic int8 quantizes exactly those, and the int8 GEMM is where the gain is."""
INT8_RULE = {
    "arm64_dotprod": "its SDOT/UDOT instructions multiply int8 four to a lane (onnxruntime's int8 GEMM uses them)",
    "avx2": "dynamic per-channel int8 measured x1.55 over fp32 (batch 1) on all-MiniLM-L6-v2 on an AVX2 host "
            "(bench/RESULTS.md)",
}
"""The ISAs where the rule picks dynamic int8 for a MatMul-heavy model, and why. Elsewhere (arm64 without the
dot-product extension, Conv-heavy models) it keeps fp32: no int8 gain is known there."""
_CANNOT_EMULATE = ("avx512", "avx512_vnni", "amx")


@dataclass(frozen=True)
class TargetNumerics:
    """Where the candidates' accuracy is measured: `emulator` (the target's numerics) or this host (None)."""

    emulator: Emulator | None
    note: str
    """For the report: where accuracy was measured and, when not on the target's numerics, why and how to."""


def target_numerics(plan: Plan, site: Callable[[], Path | None]) -> TargetNumerics | None:
    """How this build measures accuracy; None when the build host is the target (nothing to say).

    `site` makes (or finds) the folder of the target's aarch64 wheels; it is called only for an arm target
    on an x86 host with the emulator set up.
    """
    if plan.host_matches_target or plan.target == "cuda":
        return None
    here = f"this host's numerics ({plan.host}/{plan.host_isa})"
    target = f"{plan.target}/{plan.isa}"
    if plan.target == "x86" and plan.host == "x86" and plan.isa in _CANNOT_EMULATE:
        return TargetNumerics(None, f"accuracy measured on {here}, not the target's ({target}): qemu (TCG) "
                              f"cannot emulate AVX-512, VNNI or AMX, so no emulator reproduces {plan.isa} here. "
                              "The numerics differ between these ISAs (int8: u8s8 products saturate on AVX2, not "
                              "with VNNI; fp32: other vector widths sum in another order): build on a target host "
                              "with `isa: native` to measure there; fp32 is kept.")
    try:
        if plan.target == "arm" and plan.host == "x86":
            emulator = arm64(CPU_MODELS[plan.isa], None)  # checks the set-up before the site is made
            emulator = arm64(CPU_MODELS[plan.isa], site())
        elif plan.target == "x86" and plan.host == "x86" and plan.isa == "avx2":
            emulator = x86_64(CPU_MODELS["avx2"])
        else:
            return TargetNumerics(None, f"accuracy measured on {here}, not the target's ({target}): no emulator "
                                  "for it here; fp32 is kept.")
    except EmulatorNotSetUp as e:
        return TargetNumerics(None, f"accuracy measured on {here}, not the target's ({target}), and fp32 kept: "
                              f"no emulator is set up ({e}). Run `{SETUP_COMMAND}` (about a minute, ~90 MB "
                              "of Debian packages) and build again to measure the int8 candidates on the "
                              "target's numerics.")
    except EmulationError as e:
        return TargetNumerics(None, f"accuracy measured on {here}, not the target's ({target}), and fp32 kept: "
                              f"the target's wheels could not be installed for the emulator ({e})")
    return TargetNumerics(emulator, f"accuracy measured on the target's numerics: every candidate ran on the "
                          f"validation data under `{emulator.name}`; latency under emulation is not measured "
                          "and the speed choice is a rule, not a measurement.")


def matmul_share(model: onnx.ModelProto) -> float:
    """The share of the model's float weights (initializer elements) that feed MatMul or Gemm nodes."""
    sizes = {init.name: int(np.prod(init.dims)) for init in model.graph.initializer
             if init.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)}
    total = sum(sizes.values())
    used = {name for node in model.graph.node if node.op_type in ("MatMul", "Gemm") for name in node.input}
    return sum(n for name, n in sizes.items() if name in used) / total if total else 0.0


def speed_rule(isa: str, model: onnx.ModelProto) -> tuple[str, str]:
    """The candidate family to ship when speed cannot be measured (`dynamic` or `fp32`), and why."""
    share = matmul_share(model)
    heavy = f"{share:.0%} of its weights feed MatMul/Gemm"
    if isa in INT8_RULE and share >= MATMUL_HEAVY:
        return "dynamic", f"rule, not a measurement: dynamic int8 for a MatMul-heavy model ({heavy}) on {isa}: " \
                          f"{INT8_RULE[isa]}"
    why = (f"no known int8 gain on {isa}" if isa not in INT8_RULE
           else f"not MatMul-heavy ({heavy}, under {MATMUL_HEAVY:.0%})")
    return "fp32", f"rule, not a measurement: fp32 ({why})"


def choose_by_rule(tried: Sequence[Tried], plan: Plan, source: onnx.ModelProto) -> Choice:
    """Among the candidates inside every accuracy budget (measured on the target's numerics), the family the
    speed rule names: of the dynamic int8 ones, the one keeping the fewest nodes in fp32 (then plan order);
    else the baseline. Nothing accurate: the closest candidate, to report."""
    family, why = speed_rule(plan.isa, source)
    ran = [t for t in tried if isinstance(t, Evaluation)]
    if not ran:
        raise ValueError("no candidate to choose from: every one failed")
    verdicts = {t.candidate.name: f"failed: {t.error}" if t.error else "misses the accuracy budget (target numerics)"
                for t in tried if not t.accurate}
    accurate = [ev for ev in ran if ev.accurate]
    order = [c.name for c in plan.candidates]

    def base(ev: Evaluation) -> str:
        return ev.candidate.name.split("+", 1)[0]

    def kept_fp32(ev: Evaluation) -> int:
        params = next((p for n, p in ev.candidate.passes if n.startswith("quantize_")), {})
        return len(params.get("exclude", ()))

    wanted = [ev for ev in accurate if base(ev).startswith("dynamic")] if family == "dynamic" else []
    wanted.sort(key=lambda ev: (kept_fp32(ev), order.index(base(ev)) if base(ev) in order else len(order)))
    baseline = next((ev for ev in accurate if ev.candidate.baseline), None)
    chosen = wanted[0] if wanted else baseline
    if chosen is None:
        closest = max(ran, key=lambda e: e.worst_margin)
        verdicts[closest.candidate.name] = "closest to the accuracy budget, still outside it"
        return Choice(closest, verdicts, tuple(tried))
    if family == "dynamic" and chosen is baseline:
        why += "; no dynamic int8 candidate is inside the accuracy budgets on the target's numerics"
    for ev in accurate:
        verdicts[ev.candidate.name] = (f"inside the accuracy budgets on the target's numerics; not chosen "
                                       f"(the speed rule, not a measurement: {chosen.candidate.name})")
    verdicts[chosen.candidate.name] = f"chosen: inside the accuracy budgets on the target's numerics; {why}"
    return Choice(chosen, verdicts, tuple(tried))


class EmulatedRunner:
    """One python under an emulator running models for the build (`_emulated_worker.py`), started once:
    `infer(model)` loads a model there and returns a function from model inputs to its outputs."""

    def __init__(self, emulator: Emulator, timeout: float = 600) -> None:
        self.emulator, self.timeout = emulator, timeout
        self._dir = tempfile.TemporaryDirectory(prefix="infc-emulated-")
        self._log = open(Path(self._dir.name) / "stderr.log", "w+b")  # noqa: SIM115 - closed in close()
        self._proc = subprocess.Popen(emulator.command(_WORKER), env=emulator.environ(), stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=self._log)
        self._buffer = b""
        self._calls = 0
        self.info = self._reply()

    def _reply(self) -> dict[str, Any]:
        assert self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        while b"\n" not in self._buffer:
            ready, _, _ = select.select([fd], [], [], self.timeout)
            chunk = os.read(fd, 1 << 16) if ready else b""
            if not chunk:
                self._log.seek(0)
                tail = self._log.read()[-2000:].decode(errors="replace").strip()
                self.close()
                raise EmulationError(f"{self.emulator.name}: the model runner "
                                     + ("stopped" if ready else f"gave no answer in {self.timeout:g} s")
                                     + (f": {tail}" if tail else ""))
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise EmulationError(f"{self.emulator.name}: {reply['error']}")
        return reply

    def _ask(self, **request: str) -> dict[str, Any]:
        assert self._proc.stdin is not None
        self._proc.stdin.write((json.dumps(request) + "\n").encode())
        self._proc.stdin.flush()
        return self._reply()

    def infer(self, model: onnx.ModelProto) -> Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]:
        path = Path(self._dir.name) / "model.onnx"
        path.write_bytes(model.SerializeToString())
        self._ask(load=str(path))

        def run(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            self._calls += 1
            feeds, out = Path(self._dir.name) / "in.npz", Path(self._dir.name) / "out.npz"
            np.savez(feeds, **cast(dict[str, Any], inputs))
            self._ask(run=str(feeds), out=str(out))
            with np.load(out, allow_pickle=False) as f:
                return {k: f[k] for k in f.files}

        return run

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        for stream in (self._proc.stdin, self._proc.stdout):
            if stream is not None:
                stream.close()
        self._log.close()
        self._dir.cleanup()
