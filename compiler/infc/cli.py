"""The `infc` command line: a thin click layer over the compiler.

Domain errors are turned into a message on stderr and a documented exit code
in ONE place (`main`), never a traceback (set INFC_DEBUG=1 to see one for an
internal error). Exit codes: see `infc.errors`. With `--json`, stdout holds
exactly one JSON document (see `infc.results`), whatever happens; progress and
messages go to stderr.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from . import __version__
from .errors import InfcError, SpecError, SpecErrors

if TYPE_CHECKING:
    from .outcome import BuildOutcome

__all__ = ["main", "cli"]

_JSON = click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout (nothing else there).")


class _Done(Exception):
    """A command printed its own output (a JSON document) and ends with this exit code."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def _emit(doc: dict[str, Any]) -> None:
    click.echo(json.dumps(doc, indent=2, sort_keys=False, default=str))
    if doc["exit_code"]:
        raise _Done(int(doc["exit_code"]))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="infc")
def cli() -> None:
    """infc: compile a YAML inference spec into a self-serving bundle."""


@cli.command()
@click.argument("spec", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--outdir", type=click.Path(file_okay=False, path_type=Path), default=Path("build"),
              show_default=True, help="Folder the bundle directory is written into.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the build report (markdown) here, pass or fail (e.g. $GITHUB_STEP_SUMMARY).")
@click.option("--iterations", type=click.IntRange(20, 100_000), default=300, show_default=True,
              help="At least this many timed requests for the latency gate (more while a percentile is "
                   "undecided).")
@click.option("--latency-gate", "latency_gate", type=click.Choice(["strict", "lenient", "off"]), default="lenient",
              show_default=True,
              help="When a latency percentile's confidence interval straddles its budget: strict fails the build, "
                   "lenient warns and passes; off never fails on latency. A wholly-over interval fails under "
                   "strict and lenient; latency is enforced only on a build host that is the target.")
@click.option("--no-latency-gate", "no_gate", is_flag=True, hidden=True, help="Same as --latency-gate=off.")
@click.option("--relock", is_flag=True, help="Search again and rewrite the lock even when it is valid.")
@click.option("--locked", is_flag=True, help="Fail (exit 2) instead of searching when the lock is missing or "
                                             "out of date (CI).")
@click.option("--no-lock", is_flag=True, help="Neither read nor write a lock (search every time).")
@click.option("--wheelhouse", is_flag=True,
              help="Put every run-time wheel for the target's platform into the bundle's wheels/ (install.sh "
                   "then installs with no network); also the spec's deploy.wheelhouse. Exit 5 when a wheel "
                   "cannot be fetched.")
@click.option("--archive", is_flag=True, help="Also write NAME-VERSION-PLATFORM.tar.gz beside the bundle folder "
                                               "(reproducible).")
@click.option("-q", "--quiet", is_flag=True, help="No progress lines on stderr.")
@_JSON
def build(spec: Path, outdir: Path, report_path: Path | None, iterations: int, latency_gate: str, no_gate: bool,
          relock: bool, locked: bool, no_lock: bool, wheelhouse: bool, archive: bool, quiet: bool,
          as_json: bool) -> None:
    """Validate SPEC, optimize its model, check its budgets and write the bundle."""
    from .build import build as run_build
    from .cost import usd
    from .progress import Progress
    from .results import build_document

    if sum((relock, locked, no_lock)) > 1:
        raise click.UsageError("--relock, --locked and --no-lock exclude each other")
    lock = "relock" if relock else "locked" if locked else "ignore" if no_lock else "auto"
    progress = Progress(quiet=quiet)

    def run() -> BuildOutcome:
        return run_build(spec, outdir, iterations=iterations, report_path=report_path, progress=progress,
                         latency_gate="off" if no_gate else latency_gate, lock=lock, wheelhouse=wheelhouse or None,
                         archive=archive)

    if as_json:  # every outcome is a document (internal errors: exit 1)
        outcome, error = None, None
        try:
            outcome = run()
        except Exception as exc:
            error, outcome = exc, getattr(exc, "result", None)
        finally:
            progress.close()
        _emit(build_document(spec, outcome, error))
        return
    try:
        result = run()
    finally:
        progress.close()
    written = Path(outdir) / result.bundle.dirname
    lat = result.latency
    click.echo(f"built {written}  ({result.bundle.size() / 1e6:.2f} MB, content {result.bundle.content_hash[:16]})")
    wheels = sum(len(d) for p, d in result.bundle.files.items() if p.startswith("wheels/"))
    if wheels:
        click.echo(f"  wheels    {wheels / 1e6:.2f} MB in wheels/ (install offline: ./install.sh)")
    if result.archive is not None:
        click.echo(f"  archive   {result.archive} ({result.archive.stat().st_size / 1e6:.2f} MB)")
    for a in result.accuracy:
        budget = f" (budget {a.op} {a.bound:g})" if a.bound is not None else ""
        click.echo(f"  accuracy  {a.name} = {a.value:.4f}{budget}")
    shown = "  ".join(f"{p.name} {p.value_ms:.3f} ms {p.interval()}" for p in lat.percentiles)
    on = f", on {', '.join(lat.providers)}, not {', '.join(lat.cpu_fallback)}" if lat.cpu_fallback else ""
    click.echo(f"  latency   {shown} (batch 1, {lat.samples} requests{on}): {lat.state}")
    if lat.noise:
        load = lat.noise.get("loadavg")
        click.echo(f"  host      {'quiet' if lat.noise.get('quiet') else 'busy'}: reference workload p99/p50 "
                   f"{lat.noise.get('spread') or float('nan'):.2f}, load average "
                   f"{'-' if load is None else f'{load:.2f}'} on {lat.noise.get('cpus')} CPUs")
    click.echo(f"  serving   max_batch_size {result.serving.max_batch_size}, "
               f"max_queue_delay_ms {result.serving.max_queue_delay_ms:g}")
    shipped = result.cost.shipped
    if shipped is not None:  # report.md's `## Cost`, in one line
        priced = (f"USD {usd(shipped.usd_per_1000_requests)} per 1,000 requests ({shipped.vcpu_seconds_per_1000:.3g} "
                  "vCPU-s)" if shipped.usd_per_1000_requests is not None else
                  f"{shipped.vcpu_seconds_per_1000:.3g} vCPU-s per 1,000 requests (no price: deploy.usd_per_hour)")
        click.echo(f"  cost      {priced} at {shipped.rows_per_s:.0f} rows/s, batch {shipped.batch}")
    click.echo(f"  {result.lock.describe()}")
    for warning in result.warnings:
        click.echo(f"infc: warning: {warning}", err=True)
    click.echo(f"  serve it: {_shown(Path(sys.executable))} {_shown(written / 'serve.py')} "
               "--host 127.0.0.1 --port 8000")
    if lat.cpu_fallback:  # a bundle built for CUDA refuses to serve where CUDA cannot be used, unless told to
        click.echo(f"            (here, without {', '.join(lat.cpu_fallback)}, it exits 3 unless given "
                   "--allow-cpu-fallback: then it serves on CPU and says so)")


def _shown(path: Path) -> str:
    """A path relative to the working directory when it is below it (shorter to copy)."""
    try:
        return str(path.absolute().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


@cli.command()
@click.argument("specs", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["text", "github"]), default="text", show_default=True,
              help="github: one `::error file=,line=,col=::` workflow command per problem (annotations on the "
                   "pull request's diff).")
@_JSON
def validate(specs: tuple[Path, ...], fmt: str, as_json: bool) -> None:
    """Check specs (schema, files, steps against the model) without building."""
    from .annotations import github_annotation
    from .results import validate_document
    from .spec import load_spec

    outcomes: list[tuple[Path, BaseException | None]] = []
    for path in specs:
        try:
            load_spec(path)
            outcomes.append((path, None))
        except SpecErrors as exc:
            outcomes.append((path, exc))
    if as_json:
        _emit(validate_document(outcomes))
        return
    errors: list[SpecError] = [e for _, exc in outcomes if isinstance(exc, SpecErrors) for e in exc.errors]
    for path, failure in outcomes:
        if failure is None:
            click.echo(f"{path}: ok")
    if fmt == "github":
        for e in errors:
            click.echo(github_annotation(e))
        if errors:
            raise _Done(2)
    elif errors:
        raise SpecErrors(errors)


@cli.command()
@click.option("--results", is_flag=True, help="The schema of the --json documents instead of the spec's.")
def schema(results: bool) -> None:
    """Print the spec's JSON Schema (for editors: see the README), or with --results that of --json output."""
    if results:
        from .results import results_schema

        click.echo(json.dumps(results_schema(), indent=2))
        return
    from .spec import schema as spec_schema

    click.echo(json.dumps(spec_schema(), indent=2))


@cli.command()
@click.argument("spec", type=click.Path(dir_okay=False, path_type=Path))
@_JSON
def plan(spec: Path, as_json: bool) -> None:
    """Print the plan for SPEC's target without building: passes, candidates, batching and why."""
    from .plan import make_plan, render_plan
    from .results import error_records, plan_document
    from .spec import load_spec

    try:
        loaded = load_spec(spec).spec
    except InfcError as exc:
        if not as_json:
            raise
        _emit({"command": "plan", "infc_version": __version__, "ok": False, "exit_code": exc.exit_code,
               "errors": error_records(exc)})
        return
    the_plan = make_plan(loaded)
    batching = _batching(loaded, the_plan)
    if as_json:
        _emit(plan_document(the_plan, batching))
        return
    click.echo(render_plan(loaded, the_plan, batching))


def _batching(spec: Any, the_plan: Any) -> dict[str, Any]:
    """How the build will set max_batch_size and max_queue_delay_ms (and the lock it would reuse)."""
    from .lock import LockError, changes, current_inputs, find_lock, read_lock

    path = find_lock(spec.file)
    inputs = current_inputs(spec, {"hardware": the_plan.target, "isa": the_plan.isa})
    out: dict[str, Any] = {"lock": str(path), "lock_state": "none", "lock_changes": []}
    if path.is_file():
        try:
            lock = read_lock(path)
            changed = changes(lock.inputs, inputs)
            out["lock_state"] = "out of date" if changed else "valid"
            out["lock_changes"] = changed
            if not changed:
                out.update(lock.choices.serving, candidate=lock.choices.candidate, exclude=list(lock.choices.exclude),
                           why="from the lock (measured when it was written)")
                return out
        except LockError as exc:
            out["lock_state"], out["lock_changes"] = "unreadable", [str(exc)]
    pinned = {"max_batch_size", "max_queue_delay_ms"} <= spec.serving_pinned
    if pinned:
        why = "pinned by the spec"
    elif not the_plan.host_matches_target:
        why = "the spec's values: the build host is not the target, so batching cannot be measured here"
    else:
        lb = spec.budget.latency_ms
        limit = (lb.p99 or lb.p95 or lb.p50) if lb else None
        why = ("measured at build: the largest batch whose worst case (window + 2 x batch p99) fits the "
               f"{limit:g} ms budget" if limit is not None else "measured at build: the batch with the most rows/s")
    out.update(max_batch_size=spec.serving.max_batch_size, max_queue_delay_ms=spec.serving.max_queue_delay_ms,
               why=why)
    return out


@cli.command()
@click.argument("old", type=click.Path(path_type=Path))
@click.argument("new", type=click.Path(path_type=Path))
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Build cache for specs (default: $INFC_CACHE_DIR or ~/.cache/infc); safe to share between jobs.")
@click.option("--latency-gate", "latency_gate", type=click.Choice(["strict", "lenient", "off"]), default="lenient",
              show_default=True, help="Gate mode for specs that are built.")
@click.option("--all", "all_rows", is_flag=True, help="Show unchanged rows too.")
@click.option("-q", "--quiet", is_flag=True, help="No progress lines on stderr.")
@_JSON
def diff(old: Path, new: Path, cache_dir: Path | None, latency_gate: str, all_rows: bool, quiet: bool,
         as_json: bool) -> None:
    """Compare two specs (built, reusing locks and the build cache), two bundles or two lock files:
    a markdown table for a pull request, each change marked better, worse or changed."""
    from .build_cache import cached_build, default_cache_dir
    from .diff import DiffError, Side, compare, load_side, render_markdown
    from .progress import Progress
    from .results import diff_document

    progress = Progress(quiet=quiet)
    where = cache_dir or default_cache_dir()

    def build_spec(path: Path) -> Side:
        progress(f"building {path} (cache {where})")
        bundle, outcome = cached_build(path, where, latency_gate=latency_gate, progress=progress)
        side = load_side(bundle)
        side.label, side.kind, side.passed = str(path), "spec", bool(outcome["passed"])
        return side

    try:
        sides = [load_side(p, build_spec) for p in (old, new)]
    except (DiffError, InfcError) as exc:
        if as_json:
            _emit({"command": "diff", "infc_version": __version__, "ok": False,
                   "exit_code": getattr(exc, "exit_code", 2), "errors": [{"message": str(exc)}],
                   "old": None, "new": None, "rows": []})
        raise
    finally:
        progress.close()
    rows = compare(*sides)
    if as_json:
        _emit(diff_document(sides[0], sides[1], rows))
        return
    click.echo(render_markdown(sides[0], sides[1], rows, all_rows=all_rows), nl=False)


@cli.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("bundle", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, type=click.IntRange(0, 65535), show_default=True)
@click.option("--grpc-port", type=click.IntRange(0, 65535), default=None,
              help="Also serve KServe V2 over gRPC on this port (same host).")
@click.argument("options", nargs=-1, type=click.UNPROCESSED)
def serve(bundle: Path, host: str, port: int, grpc_port: int | None, options: tuple[str, ...]) -> None:
    """Serve a built BUNDLE directory over the KServe V2 protocol; several (BUNDLE BUNDLE...), or a model
    repository (REPO_DIR/NAME/VERSION/, with REPO_DIR/NAME/policy.yaml), in one server. The bundle's serve.py
    options pass through: --public-key PUB, --log-level, --no-verify, --allow-host, --max-body-bytes, ...;
    `python BUNDLE/serve.py --help` lists them."""
    from infc_runtime.serve import main as serve_main

    more = []  # the bundles after the first come before the first option
    while options and not options[0].startswith("-"):
        more.append(options[0])
        options = options[1:]
    grpc = [] if grpc_port is None else ["--grpc-port", str(grpc_port)]
    sys.exit(serve_main(["serve", str(bundle), *more, "--host", host, "--port", str(port), *grpc, *options]))


@cli.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("bundle", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.argument("options", nargs=-1, type=click.UNPROCESSED)
def measure(bundle: Path, options: tuple[str, ...]) -> None:
    """Measure a built BUNDLE's latency on this host; one JSON document on stdout (the options of `python -m
    infc_runtime measure` pass through: --budget p99=10, --requests FILE.npz, --public-key PUB,
    --allow-cpu-fallback, ...; exit 2 for a bundle that does not verify or is not signed by PUB's key, 3 for one
    built for CUDA where CUDA cannot be used)."""
    from infc_runtime.serve import main as runtime_main

    sys.exit(runtime_main(["measure", str(bundle), *options]))


@cli.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("bundle", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.argument("source", metavar="INPUT", type=click.Path(exists=True, path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="JSON lines (resumed when it exists), or .parquet (needs pyarrow).")
@click.argument("options", nargs=-1, type=click.UNPROCESSED)
def run(bundle: Path, source: Path, output: Path, options: tuple[str, ...]) -> None:
    """Run a built BUNDLE over INPUT (JSON lines, a .csv for tabular bundles, or a folder of images) without a
    server, writing one JSON line per input line to OUTPUT in input order. It runs in a fresh process with the
    bundle's own runtime (`python BUNDLE/serve.py run`: verified first). Options pass through: --public-key PUB,
    --max-line-bytes N, --max-files N, -q, ... Exit 0 every line answered, 2 unusable bundle/input/output, 3 no
    execution provider, 4 some lines failed (error lines in OUTPUT), 130 interrupted (re-run to resume)."""
    import signal
    import subprocess

    if not (bundle / "infc_runtime" / "batch_run.py").is_file():
        raise click.UsageError(f"{bundle}: this bundle's runtime has no batch runner (built before `infc run`): "
                               "rebuild it")
    cmd = [sys.executable, str((bundle / "serve.py").absolute()), "run", str(source.absolute()),
           "-o", str(output.absolute()), *options]
    child = subprocess.Popen(cmd, cwd=bundle)
    signal.signal(signal.SIGTERM, lambda *_: child.terminate())  # a stopped job stops its run (resumable)
    try:
        sys.exit(child.wait())
    except KeyboardInterrupt:  # the child got it too (same process group): it says how to resume
        sys.exit(child.wait())


@cli.command()
@click.option("--out", "prefix", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Write PREFIX.key (the private key, mode 0600: keep it secret) and PREFIX.pub.")
def keygen(prefix: Path) -> None:
    """Make an Ed25519 key pair for `infc sign` (private) and `serve --public-key` (public); never overwrites."""
    from .signing import keygen as make_keys

    keys = make_keys(prefix)
    click.echo(f"wrote {keys.private} (private: keep it secret, sign with it) and {keys.public} (public: "
               f"serve --public-key {keys.public}); key {keys.fingerprint}")


@cli.command()
@click.argument("bundle", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--key", "key", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The private key (PEM, e.g. PREFIX.key from `infc keygen`).")
def sign(bundle: Path, key: Path) -> None:
    """Sign a built BUNDLE: verify it, then write BUNDLE/manifest.sig (Ed25519 over manifest.json's bytes), which
    `serve --public-key PUB` (or INFC_PUBLIC_KEY) requires."""
    from .signing import sign_bundle

    signed = sign_bundle(bundle, key)
    click.echo(f"signed {bundle} (content {signed.content_hash[:16]}): wrote {signed.signature}; "
               f"key {signed.fingerprint}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `infc` console script; returns the exit code."""
    try:
        cli.main(args=argv, prog_name="infc", standalone_mode=False)
    except _Done as done:
        return done.code
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        return 2
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except InfcError as exc:
        label = "error" if not isinstance(exc, SpecErrors) else f"{len(exc.errors)} spec error(s)"
        click.echo(f"infc: {label}:", err=True)
        click.echo(str(exc), err=True)
        return exc.exit_code
    except Exception as exc:  # a bug in infc: one line, traceback on request
        if os.environ.get("INFC_DEBUG"):
            traceback.print_exc()
        click.echo(f"infc: internal error: {type(exc).__name__}: {exc} (set INFC_DEBUG=1 for the traceback)",
                   err=True)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
