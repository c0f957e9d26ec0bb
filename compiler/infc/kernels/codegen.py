"""Generate a readable Numba module for one stage (pre or post) from its dataflow.

Consecutive per-element steps where each reads the previous one's result are
fused into ONE `@numba.njit` loop over the batch: the value of each element is
carried through every step in a register and written once, to its final index
(so `to_float -> normalize -> layout` makes no intermediate arrays). Other
steps get a kernel each. The module's `run(tensors)` calls them in order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib.resources import files
from typing import Any

import jinja2

from .. import __version__
from .graph import Dataflow, ResolvedStep
from .registry import get

__all__ = ["generate", "ModuleText"]


@cache
def _env() -> jinja2.Environment:
    root = files("infc.templates").joinpath("kernels")
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(root)),
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=False,
        undefined=jinja2.StrictUndefined, autoescape=False,
    )


def _render(template: str, **values: Any) -> str:
    return _env().get_template(template).render(**values).rstrip("\n")


def _num(x: float) -> str:
    """A float literal that round-trips exactly."""
    return repr(float(x))


@dataclass
class ModuleText:
    """The pieces of a generated module before they are joined."""

    constants: list[str] = field(default_factory=list)
    functions: list[str] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    step_lines: list[str] = field(default_factory=list)


def _where(stage: str, first: int, last: int | None = None) -> str:
    """`preprocess[0]` or `preprocess[0..2]`."""
    span = f"{first}..{last}" if last is not None and last != first else str(first)
    return f"{stage}process[{span}]"


def _describe(step: ResolvedStep, stage: str) -> str:
    params = {k: v for k, v in step.params.items() if k not in ("input", "output", "keep")}
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


def _fused(group: list[ResolvedStep], g: int, text: ModuleText, stage: str) -> None:
    """One njit loop for a chain of per-element steps."""
    first, last = group[0], group[-1]
    rank = len(first.input.shape)
    axes: list[str] = [f"i{i}" for i in range(rank)]  # index expression of each current axis
    src_axes: list[int | None] = list(range(rank))     # request axis behind each current axis
    body: list[str] = []
    args: list[str] = []
    for s, step in enumerate(group):
        p = step.params
        if step.name == "to_float":
            body.append(_render("steps/to_float.j2", scale=_num(p["scale"]) if "scale" in p else None))
        elif step.name == "normalize":
            chan = axes[int(step.extra["axis"])]
            vals = {}
            for key in ("mean", "std"):
                if len(p[key]) == 1:
                    vals[key] = f"np.float32({_num(p[key][0])})"
                else:
                    const = f"{key}_{g}_{s}"
                    text.constants.append(f"{const.upper()} = np.array({[float(v) for v in p[key]]!r}, "
                                          f"dtype=np.float32)")
                    args.append(const)
                    vals[key] = f"{const}[{chan}]"
            body.append(_render("steps/normalize.j2", **vals))
        elif step.name == "layout":
            perm = step.extra["perm"]
            axes = [axes[a] if a is not None else "0" for a in perm]
            src_axes = [src_axes[a] if a is not None else None for a in perm]
        else:  # pragma: no cover - registry and this function must agree
            raise AssertionError(f"step {step.name} is marked elementwise but has no fused form")
    fn = f"{stage}_group{g}"
    doc = " + ".join(s.name for s in group) + f" ({_where(stage, first.index, last.index)})"
    text.functions.append(_render("fused.py.j2", fn=fn, args=args, rank=rank, body=body,
                                  out_index=axes, doc=doc))
    out_shape = [f"x.shape[{a + 1}]" if a is not None else "1" for a in src_axes]
    text.calls.append(_render("fused_call.py.j2", doc=doc, fn=fn, args=args, src=first.input.name,
                              keep=first.keep, dst=last.outputs[0].name, out_shape=out_shape,
                              out_dtype=last.outputs[0].dtype))


def _single(step: ResolvedStep, g: int, text: ModuleText, stage: str) -> None:
    fn = f"{stage}_{step.name}{g}"
    doc = f"{step.name} ({_where(stage, step.index)})"
    common = {"fn": fn, "doc": doc, "src": step.input.name, "keep": step.keep}
    if step.name == "softmax":
        text.functions.append(_render("softmax.py.j2", fn=fn))
        text.calls.append(_render("rowwise_call.py.j2", dst=step.outputs[0].name, **common))
    elif step.name == "l2_normalize":
        text.functions.append(_render("l2_normalize.py.j2", fn=fn))
        text.calls.append(_render("rowwise_call.py.j2", dst=step.outputs[0].name, **common))
    elif step.name == "mean_pool":
        text.functions.append(_render("mean_pool.py.j2", fn=fn))
        text.calls.append(_render("mean_pool_call.py.j2", dst=step.outputs[0].name, mask=step.params["mask"],
                                  **common))
    elif step.name == "topk":
        text.functions.append(_render("topk.py.j2", fn=fn))
        text.calls.append(_render("topk_call.py.j2", k=int(step.params["k"]), scores=step.outputs[0].name,
                                  indices=step.outputs[1].name, **common))
    elif step.name == "labels":
        const = f"NAMES_{g}"
        names = [n.encode() for n in step.params["names"]]
        text.constants.append(f"{const} = np.array({names!r}, dtype=object)")
        text.calls.append(_render("labels_call.py.j2", const=const, dst=step.outputs[0].name, **common))
    else:  # pragma: no cover
        raise AssertionError(f"no kernel template for step {step.name}")


def generate(stage: str, flow: Dataflow, *, name: str, version: str, renames: Mapping[str, str] | None = None) -> str:
    """The source of `kernels/<stage>.py` for a resolved stage."""
    text = ModuleText()
    for g, group in enumerate(_groups(flow.steps)):
        text.step_lines.extend(_describe(s, stage) for s in group)
        if len(group) > 1 or get(group[0].name).elementwise:
            _fused(group, g, text, stage)
        else:
            _single(group[0], g, text, stage)
    if not flow.steps:
        text.step_lines.append("(none: tensors pass through unchanged)")
    for old, new in (renames or {}).items():
        text.calls.append(f"    t[{new!r}] = t.pop({old!r})")
    title = {"pre": "Pre-processing", "post": "Post-processing"}[stage]
    return _render("module.py.j2", stage_title=title, name=name, version=version, infc_version=__version__,
                   step_lines=text.step_lines, constants=text.constants, functions=text.functions,
                   calls=text.calls, results=[t.name for t in flow.end]) + "\n"
