"""Generate a readable Numba module for one stage (pre or post) from its dataflow.

Consecutive per-element steps where each reads the previous one's result are
fused into ONE `@numba.njit` loop over the batch: the value of each element is
carried through every step in a register and written once, to its final index
(so `to_float -> normalize -> layout` makes no intermediate arrays). Every
other step is one call into the runtime's ops library (`infc_runtime.ops`),
which is hand-written and tested on its own. The module's `run(tensors)` calls them in order.
How each step is written is the step's own business (`kernels/steps/`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from infc_runtime import abi

from .. import __version__
from .columns import Columns
from .fusion import lay_out, start_state
from .registry import get
from .types import Dataflow, EmitContext, ModuleText, ResolvedStep, render

__all__ = ["GeneratedModule", "generate", "generate_module"]


def _where(stage: str, first: int, last: int | None = None) -> str:
    """`preprocess[0]` or `preprocess[0..2]`."""
    span = f"{first}..{last}" if last is not None and last != first else str(first)
    return f"{stage}process[{span}]"


def _describe(step: ResolvedStep, stage: str) -> str:
    files = get(step.name).files  # by name only: the build machine's paths stay out of the bundle
    params = {k: Path(v).name if k in files else v
              for k, v in step.params.items() if k not in ("input", "output", "keep")}
    args = ", ".join(f"{k}={v}" for k, v in params.items())
    outs = ", ".join(o.name for o in step.outputs)
    return f"{_where(stage, step.index)} {step.name}({args}): {step.input.name} -> {outs}"


def _fusable(prev: ResolvedStep, step: ResolvedStep) -> bool:
    return (get(prev.name).elementwise and get(step.name).elementwise and not prev.keep
            and step.input.name == prev.outputs[0].name)


def _groups(steps: tuple[ResolvedStep, ...]) -> list[list[ResolvedStep]]:
    groups: list[list[ResolvedStep]] = []
    for step in steps:
        if groups and _fusable(groups[-1][-1], step):
            groups[-1].append(step)
        else:
            groups.append([step])
    return groups


def _fused(group: list[ResolvedStep], g: int, text: ModuleText, stage: str, ragged: bool = False) -> None:
    """One njit loop over the output of a chain of fused steps (see kernels/fusion.py)."""
    first, last = group[0], group[-1]
    state = start_state(g, first)
    for step in group:
        fuse = get(step.name).fuse
        assert fuse is not None
        fuse(state, step)
    fn = f"{stage}_group{g}"
    doc = " + ".join(s.name for s in group) + f" ({_where(stage, first.index, last.index)})"
    made = lay_out(state, fn, doc, last.outputs[0].dtype)
    text.constants.extend(c for c in made.constants if c not in text.constants)
    text.functions.append(made.functions)
    text.imports += made.imports
    ctx = EmitContext(fn, doc, first.input.name, first.keep, g)
    if ragged:  # decoded images of different sizes may come as a list: the loop runs image by image
        text.call(ctx, "per_image", repr(first.input.name), outputs=[last.outputs[0].name], first=fn)
    else:
        text.calls += [f"    # {doc}", f"    t[{last.outputs[0].name!r}] = {fn}({ctx.source})"]


def _single(step: ResolvedStep, g: int, text: ModuleText, stage: str,
            reader: list[ResolvedStep] | None = None) -> None:
    emit = get(step.name).emit
    assert emit is not None
    fn = f"{stage}_{step.name}{g}"
    doc = f"{step.name} ({_where(stage, step.index)})"
    emit(text, step, EmitContext(fn, doc, step.input.name, step.keep, g, tuple(reader or ())))


def _reader(step: ResolvedStep, groups: list[list[ResolvedStep]]) -> list[ResolvedStep] | None:
    """The fused group that reads `step`'s result next, if it is one (`decode` then hands it
    images of different sizes as a list, and makes its warm-up example fit it)."""
    name = step.outputs[0].name
    later = [group for group in groups if group[0].index > step.index and group[0].input.name == name]
    return later[0] if later and get(later[0][0].name).elementwise else None


@dataclass(frozen=True)
class GeneratedModule:
    """A generated kernel module: its source and the assets it reads (paths relative to it)."""

    stage: str
    source: str
    assets: Mapping[str, bytes] = field(default_factory=dict)

    def files(self) -> dict[str, str | bytes]:
        """Its files, by path relative to the kernels folder: `<stage>.py` and `assets/...`."""
        return {f"{self.stage}.py": self.source, **self.assets}

    def write(self, folder: Path) -> Path:
        """Write the module and its assets into `folder`; the module's path."""
        for rel, data in self.files().items():
            path = folder / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(data, str):
                path.write_text(data)
            else:
                path.write_bytes(data)
        return folder / f"{self.stage}.py"


def generate_module(stage: str, flow: Dataflow, *, name: str, version: str,
                    renames: Mapping[str, str] | None = None) -> GeneratedModule:
    """`kernels/<stage>.py` for a resolved stage, with the assets its steps ship."""
    text = ModuleText()
    source = generate(stage, flow, name=name, version=version, renames=renames, text=text)
    return GeneratedModule(stage, source, dict(sorted(text.assets.items())))


def generate(stage: str, flow: Dataflow, *, name: str, version: str, renames: Mapping[str, str] | None = None,
             text: ModuleText | None = None) -> str:
    """The source of `kernels/<stage>.py` for a resolved stage (`text` collects its pieces, assets included)."""
    text = ModuleText() if text is None else text
    groups = _groups(flow.steps)
    ragged = {s.outputs[0].name for s in flow.steps if s.extra.get("ragged")}  # decoded images, maybe a list
    for g, group in enumerate(groups):
        text.step_lines.extend(_describe(s, stage) for s in group)
        if get(group[0].name).elementwise:
            _fused(group, g, text, stage, ragged=group[0].input.name in ragged)
        else:
            _single(group[0], g, text, stage, _reader(group[0], groups))
    if not flow.steps:
        text.step_lines.append("(none: tensors pass through unchanged)")
    for old, new in (renames or {}).items():
        text.calls.append(f"    t[{new!r}] = t.pop({old!r})")
    title = {"pre": "Pre-processing", "post": "Post-processing"}[stage]
    # the field behind each column of a result, where the steps know it: the runtime's errors name it
    columns = {(renames or {}).get(t.name, t.name): tuple(t.fields) for t in flow.end
               if isinstance(t, Columns) and t.fields and all(t.fields)}
    # Numba costs a server ~110 MB and most of its start (bench/RESULTS.md): only a module with Numba code imports it
    uses_numba = any("numba." in chunk for chunk in [*text.functions, *text.constants])
    return render("module.py.j2", abi=abi, stage_title=title, name=name, version=version, infc_version=__version__,
                  columns=repr(columns) if columns else "", uses_numba=uses_numba,
                  step_lines=text.step_lines, imports=sorted(set(text.imports)),
                  examples={k: repr(v) for k, v in text.examples.items()}, constants=text.constants,
                  functions=text.functions, calls=text.calls, results=[t.name for t in flow.end]) + "\n"
