"""One fused group of steps as ONE Numba loop over its output, and the driver that runs it.

The steps of a group each add to a `FuseState` (see `types.FuseState`): value
statements (`to_float`, `normalize`), index moves (`layout`, `center_crop`,
`channel_order`) or samplers (`resize`, `pad`). The loop is then written
backward from the output: for each output element, the stages say which input
element(s) it needs and how its value is computed; the value is carried in a
register through every step and written once. No intermediate array exists.

Layout of the loop:
- loops nest in the order of the group input's axes (H, W, C for an image), so
  reads stay local and a layout step only changes where a value is written;
  added size-1 axes get no loop;
- a statement that depends only on outer loop variables (a resize's source
  row and weight for an output row) is placed in the outermost loop where it
  can run (`Line.deps`), not recomputed for every element;
- sizes that depend on the request (a `shorter` resize, a crop offset) are
  computed by the driver, a plain Python function that also checks the request
  (an image smaller than a crop fails that request with RequestError) and
  allocates the output; the loop takes them as arguments;
- `parallel`: a loop that reads its input at positions it looks up (a resize's
  tables, a pad's clamped index: `FuseState.gathers`) is a `numba.prange` over
  images and their outermost axis (`parallel=True`) when its output per row has
  at least `PARALLEL_MIN_ELEMENTS` elements or a size known only at run time.
  Numba compiles a prange body knowing that its arrays do not overlap, and only
  then can LLVM vectorize reads at looked-up positions: on one core a 224x224
  resize chain runs twice as fast; below 4,096 elements the prange's fixed cost
  (about 3 us) eats the gain. A loop that reads in order vectorizes as a plain
  loop and stays one. A prange loop uses the module's `THREADS` threads, from
  the environment variable INFC_KERNEL_THREADS, default 1: on a small machine
  the server's other threads need the cores, and a parallel loop that waits for
  a descheduled thread stalls for a scheduler quantum (2 busy cores, 2 threads:
  the median halved, 1 call in 100 took 8 ms; bench/RESULTS.md). Give it more
  threads where cores are to spare.
"""

from __future__ import annotations

from dataclasses import dataclass

from infc_runtime import abi

from .types import OPS, FuseState, Inner, Ix, Line, ResolvedStep, render

__all__ = ["FusedGroup", "PARALLEL_MIN_ELEMENTS", "REQUEST_ERROR", "start_state", "lay_out", "use_parallel"]

PARALLEL_MIN_ELEMENTS = 1 << 12
"""Output elements per row from which a gathering loop is a prange loop (see `parallel` above)."""

REQUEST_ERROR = "from infc_runtime.abi import RequestError"
"""The import a module needs when a driver checks the request's data."""

THREADS = (f'{abi.THREADS} = max(1, min(int(os.environ.get("{abi.THREADS_ENV}", "1")), '
           'numba.config.NUMBA_NUM_THREADS))  # threads of each parallel loop')
"""The module constant parallel loops take their thread count from (see `parallel` above)."""


@dataclass(frozen=True)
class FusedGroup:
    """The generated text of one group: the loop function and its driver, and what they need."""

    functions: str
    constants: list[str]
    imports: list[str]


def start_state(group: int, first: ResolvedStep) -> FuseState:
    """The state before the group's first step: the input array `x` as it is."""
    shape = first.input.shape
    return FuseState(group=group, sizes=[str(s) if s >= 0 else f"x.shape[{i + 1}]" for i, s in enumerate(shape)],
                     order=[float(i) for i in range(len(shape))])


def use_parallel(state: FuseState) -> bool:
    """Whether a prange loop pays: it gathers, and its output per row is large or of unknown size."""
    if not state.gathers:
        return False
    total = 1
    for size in state.sizes:
        if not size.isdigit():
            return True
        total *= int(size)
    return total >= PARALLEL_MIN_ELEMENTS


def _emit(state: FuseState, idx: list[Ix]) -> list[Line]:
    """Statements leaving in `v` the group's output at `idx` (the stages, last to first)."""

    def at(k: int) -> Inner:
        if k < 0:  # the group's input array
            return lambda i: [Line(f"v = x[n{''.join(f', {a.text}' for a in i)}]")]
        return lambda i: state.stages[k](i, at(k - 1))

    return at(len(state.stages) - 1)(idx)


def _levels(state: FuseState, lines: list[Line], loops: list[str], parallel: bool) -> list[dict[str, object]]:
    """Loop headers with the statements that belong right inside each."""
    depth = {var: k + 1 for k, var in enumerate(loops)}
    sizes = {f"i{k}": size for k, size in enumerate(state.sizes)}
    merged = parallel and bool(loops)  # images and the outermost axis: one prange
    headers = ["for n in range(x.shape[0]):"] + [f"for {v} in range({sizes[v]}):" for v in loops]
    if merged:
        headers[:2] = [f"for r in numba.prange(x.shape[0] * {sizes[loops[0]]}):"]
    elif parallel:
        headers[0] = "for n in numba.prange(x.shape[0]):"
    body: list[list[str]] = [[] for _ in headers]
    if merged:
        body[0] += [f"n = r // {sizes[loops[0]]}", f"{loops[0]} = r % {sizes[loops[0]]}"]
    for line in lines:
        d = len(loops) if line.deps is None else max((depth.get(v, 0) for v in line.deps), default=0)
        if merged:
            d = max(d - 1, 0)
        body[d].append(line.text)
    return [{"header": h, "lines": b} for h, b in zip(headers, body, strict=True)]


def lay_out(state: FuseState, fn: str, doc: str, out_dtype: str, parallel: bool | None = None) -> FusedGroup:
    """The loop function `{fn}_loop` and the driver `{fn}` for a state every step has added to."""
    if parallel is None:
        parallel = use_parallel(state)
    rank = len(state.sizes)
    idx = [Ix("0") if state.order[k] is None else Ix(f"i{k}", frozenset({f"i{k}"})) for k in range(rank)]
    keyed = sorted((state.order[k], k) for k in range(rank) if state.order[k] is not None)
    loops = [f"i{k}" for _, k in keyed]
    lines = _emit(state, idx)
    write = "".join(f", {i.text}" for i in idx)
    functions = render("fused.py.j2", fn=fn, doc=doc, parallel=parallel, args=[*state.size_args, *state.tables],
                       prologue=state.prologue, levels=_levels(state, lines, loops, parallel),
                       write=f"out[n{write}] = v", size_lines=state.size_lines, out_shape=state.sizes,
                       out_dtype=out_dtype, threads=abi.THREADS,
                       call_args=[*state.size_args, *(a.upper() for a in state.tables)])
    imports = [f"from {OPS} import {op}" for op in sorted(state.imports)]
    if parallel:
        imports.append("import os")
    if any("RequestError" in line for line in state.size_lines):
        imports.append(REQUEST_ERROR)
    constants = [f"{name.upper()} = {expr}" for name, expr in state.tables.items()]
    return FusedGroup(functions, [*constants, *([THREADS] if parallel else [])], imports)
