"""The `infc` command line: a thin click layer over the compiler.

Domain errors are turned into a message on stderr and a documented exit code
in ONE place (`main`), never a traceback (set INFC_DEBUG=1 to see one for an
internal error). Exit codes: see `infc.errors`.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path

import click

from . import __version__
from .errors import InfcError, SpecErrors

__all__ = ["main", "cli"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="infc")
def cli() -> None:
    """infc: compile a YAML inference spec into a self-serving bundle."""


@cli.command()
@click.argument("spec", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--outdir", type=click.Path(file_okay=False, path_type=Path), default=Path("build"),
              show_default=True, help="Folder the bundle directory is written into.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the build report (markdown) here, pass or fail.")
@click.option("--iterations", type=click.IntRange(20, 100_000), default=300, show_default=True,
              help="Timed requests for the latency gate.")
@click.option("--latency-gate/--no-latency-gate", default=True, show_default=True,
              help="Fail the build when the latency budget is missed (only ever on a host that is the target); "
                   "--no-latency-gate measures and reports it without failing (e.g. on shared, noisy CI runners).")
def build(spec: Path, outdir: Path, report_path: Path | None, iterations: int, latency_gate: bool) -> None:
    """Validate SPEC, optimize its model, check its budgets and write the bundle."""
    from .build import build as run_build

    result = run_build(spec, outdir, iterations=iterations, report_path=report_path, latency_gate=latency_gate)
    assert result.path is not None
    lat, acc = result.latency, result.accuracy
    click.echo(f"built {result.path}  ({result.bundle.size() / 1e6:.2f} MB)")
    for a in acc:
        budget = f" (budget {a.op} {a.bound:g})" if a.bound is not None else ""
        click.echo(f"  accuracy  {a.name} = {a.value:.4f}{budget}")
    click.echo(f"  latency   p50 {lat.p50_ms:.3f} ms  p95 {lat.p95_ms:.3f} ms  p99 {lat.p99_ms:.3f} ms (batch 1)")
    click.echo(f"  serve it: {_shown(Path(sys.executable))} {_shown(result.path / 'serve.py')} "
               "--host 127.0.0.1 --port 8000")


def _shown(path: Path) -> str:
    """A path relative to the working directory when it is below it (shorter to copy)."""
    try:
        return str(path.absolute().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


@cli.command()
@click.argument("specs", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
def validate(specs: tuple[Path, ...]) -> None:
    """Check specs (schema, files, steps against the model) without building."""
    from .spec import load_spec

    errors = []
    for path in specs:
        try:
            load_spec(path)
            click.echo(f"{path}: ok")
        except SpecErrors as exc:
            errors.extend(exc.errors)
    if errors:
        raise SpecErrors(errors)


@cli.command()
def schema() -> None:
    """Print the spec's JSON Schema."""
    from .spec import schema as spec_schema

    click.echo(json.dumps(spec_schema(), indent=2))


@cli.command()
@click.argument("spec", type=click.Path(dir_okay=False, path_type=Path))
def plan(spec: Path) -> None:
    """Print the plan (passes, settings) for SPEC's target without building."""
    from .plan import make_plan
    from .spec import load_spec

    click.echo(json.dumps(make_plan(load_spec(spec)).to_dict(), indent=2))


@cli.command(context_settings={"ignore_unknown_options": True})
@click.argument("bundle", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, type=click.IntRange(0, 65535), show_default=True)
def serve(bundle: Path, host: str, port: int) -> None:
    """Serve a built BUNDLE directory over the KServe V2 protocol."""
    from infc_runtime.serve import main as serve_main

    sys.exit(serve_main(["serve", str(bundle), "--host", host, "--port", str(port)]))


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `infc` console script; returns the exit code."""
    try:
        cli.main(args=argv, prog_name="infc", standalone_mode=False)
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
