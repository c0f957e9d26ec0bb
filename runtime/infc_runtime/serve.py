"""The command line that serves a bundle: `python -m infc_runtime serve BUNDLE_DIR`.

    python -m infc_runtime serve BUNDLE_DIR [--host 127.0.0.1] [--port 8000] [--log-level info]
    python -m infc_runtime measure BUNDLE_DIR [--requests FILE.npz] [--budget p99=10] [--batches 1,2,4,8]
        [--stop-above-ms X] [--min-samples N] [--max-samples N] [--min-seconds S] [--max-seconds S]
        [--no-gc-freeze] [--no-single]

`measure` times the bundle where it runs, as the server runs it (see
`infc_runtime.measure_cli`): it loads the bundle as `serve` does, warms it up,
freezes the heap as the server does after warm-up (unless `--no-gc-freeze`),
times batches of the `--batches` sizes, then single requests (row `i % n` of
`--requests`, else zeros) until each `--budget` has a verdict: `pass` (the
percentile's 95% confidence interval is wholly within it), `fail` (wholly
above) or `inconclusive` (at `--max-samples` / `--max-seconds`). It prints one
JSON document on stdout: `latency.Measurement.to_dict()` plus `"format": 1`
(verdict, stopped, samples, rounds, seconds, confidence, percentiles with
value/low/high/bound/verdict, noise, gc, batches). Exit codes: 0 measured
(whatever the verdict), 1 a request failed, 2 usage error or an unusable bundle
or requests file (one line on stderr).

Entry points for other code:

- `main(argv: list[str] | None = None) -> int`: this command line; `argv`
  excludes the program name (`["serve", "build/digits-1.0.0", "--port", "9000"]`).
- `serve_bundle(bundle_dir, argv) -> int`: what a bundle's own `serve.py` calls,
  `sys.exit(serve_bundle(Path(__file__).parent, sys.argv[1:]))`; `argv` holds
  only the options.

One process, one event loop (uvicorn). SIGTERM or SIGINT stops taking new
connections, finishes every accepted request, then exits 0.

Exit codes of `serve`: 0 stopped cleanly; 1 the server could not start (e.g.
the port is in use); 2 usage error, or the bundle does not load (one line on
stderr).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from . import measure_cli
from .pipeline import Pipeline

__all__ = ["BundleError", "load_bundle", "main", "serve_bundle"]

EXIT_OK, EXIT_START_FAILED, EXIT_USAGE = 0, 1, 2


class BundleError(Exception):
    """A bundle directory cannot be loaded; the message says why, for people."""


def load_bundle(bundle_dir: str | Path) -> Pipeline:
    """`Pipeline.load`, with every failure turned into one clear `BundleError`."""
    root = Path(bundle_dir)
    if not root.is_dir():
        raise BundleError(f"{root}: not a directory")
    manifest = root / "manifest.json"
    if not manifest.is_file():
        raise BundleError(f"{root}: no manifest.json (is this an infc bundle?)")
    try:
        return Pipeline.load(root)
    except json.JSONDecodeError as exc:
        raise BundleError(f"{manifest}: invalid JSON ({exc})") from None
    except KeyError as exc:
        raise BundleError(f"{manifest}: missing key {exc}") from None
    except FileNotFoundError as exc:
        raise BundleError(f"{root}: missing file {exc.filename}") from None
    except Exception as exc:  # ORT, kernel imports: anything that makes the bundle unusable
        raise BundleError(f"{root}: cannot load the bundle: {type(exc).__name__}: {exc}") from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m infc_runtime", description="Serve or measure an infc bundle.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser("serve", help="serve a bundle over HTTP (KServe V2)")
    serve.add_argument("bundle_dir", metavar="BUNDLE_DIR", help="the bundle directory (holds manifest.json)")
    _add_options(serve)
    measure = commands.add_parser("measure", help="measure a bundle's latency here; one JSON document on stdout")
    measure_cli.add_options(measure)
    return parser


def _add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8000, help="port to bind (default: %(default)s)")
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug"],
        help="log level (default: %(default)s)",
    )
    parser.add_argument("--no-warmup", action="store_true", help="be ready at once, without warming up")


def main(argv: list[str] | None = None) -> int:
    """Run the command line with `argv` (default: `sys.argv[1:]`); return the exit code."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse printed the usage error
        return EXIT_OK if exc.code == 0 else EXIT_USAGE
    return measure_cli.run(args) if args.command == "measure" else _serve(args)


def serve_bundle(bundle_dir: str | Path, argv: Sequence[str] | None = None) -> int:
    """Serve `bundle_dir` with the options in `argv` (`--port 9000`); return the exit code."""
    parser = argparse.ArgumentParser(prog="serve.py", description=f"Serve the infc bundle in {bundle_dir}.")
    _add_options(parser)
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:
        return EXIT_OK if exc.code == 0 else EXIT_USAGE
    args.bundle_dir = str(bundle_dir)
    return _serve(args)


def _serve(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s:     %(name)s: %(message)s")
    try:
        pipeline = load_bundle(args.bundle_dir)
    except BundleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    import uvicorn  # here: loading a bundle (and `--help`) should not wait for the server stack

    from .app import create_app

    config = uvicorn.Config(
        create_app(pipeline, warmup=not args.no_warmup),
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        lifespan="on",
    )
    server = uvicorn.Server(config)

    # Until uvicorn installs its own handlers, a signal asks it to stop at once;
    # once it has shut down gracefully it re-raises the signal, which then lands
    # here harmlessly instead of killing the process: the exit code stays ours.
    def stop(signum: int, frame: object) -> None:
        server.should_exit = True

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.run()
    except SystemExit as exc:  # uvicorn exits this way when it cannot bind
        return EXIT_START_FAILED if exc.code else EXIT_OK
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return EXIT_OK if server.started else EXIT_START_FAILED
