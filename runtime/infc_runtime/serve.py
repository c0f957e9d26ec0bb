"""The command line that serves a bundle: `python -m infc_runtime serve BUNDLE_DIR`.

    python -m infc_runtime serve BUNDLE_DIR [BUNDLE_DIR...] | REPO_DIR [--host 127.0.0.1] [--port 8000]
        [--grpc-port PORT] [--log-level info]
        [--no-warmup] [--no-verify | --public-key PUB] [--allow-cpu-fallback] [--allow-host NAME]... [--access-log]
        [--max-body-bytes N] [--max-decompressed-bytes N] [--max-rows N] [--max-elements N] [--max-pixels N]
        [--api-keys-file FILE] [--no-open-health] [--audit-log FILE] [--log-format text|json]
        [--request-log-level LEVEL] [--ssl-certfile PEM --ssl-keyfile PEM]
    python -m infc_runtime measure BUNDLE_DIR [--requests FILE.npz] [--budget p99=10] [--batches 1,2,4,8]
        [--stop-above-ms X] [--min-samples N] [--max-samples N] [--min-seconds S] [--max-seconds S]
        [--no-gc-freeze] [--no-single] [--no-verify | --public-key PUB] [--allow-cpu-fallback]
    python -m infc_runtime run BUNDLE_DIR INPUT -o OUTPUT [--max-line-bytes N] [--max-files N] [-q]
        [--no-verify | --public-key PUB] [--allow-cpu-fallback]

`run` runs the bundle over a file without a server (`infc_runtime.batch_run`;
a bundle's own `python serve.py run INPUT -o OUTPUT` too, after its own check).

Before anything of the bundle is imported or read, the commands check its
files against `manifest.json` (`infc_runtime.verify`): a changed, missing or
extra file, or a path outside the bundle, ends with exit 2 and one line on
stderr naming the file, before the server listens. `--no-verify` skips the
check, for development: the log says so at start (WARNING) and the metric
`infc_bundle_verified` is 0.

`--public-key PUB` (or, when the option is not given, the environment variable
INFC_PUBLIC_KEY, `PUBLIC_KEY_ENV`: the path of a PEM Ed25519 public key) also
requires `manifest.sig`, a good signature of manifest.json by the matching
private key (`infc sign`), checked before the manifest is parsed:
an unsigned or wrongly signed bundle ends with exit 2 and one line naming
manifest.sig. It needs the `cryptography` package (imported only then; exit 2
when it is missing); with `--no-verify` it is a usage error (exit 2). Only the
key's path and fingerprint are ever logged.

A bundle built for an accelerator (a cuda target: `session.providers` names
CUDAExecutionProvider) whose provider onnxruntime does not offer here, or does
not load into the session (onnxruntime-gpu drops CUDA when its libraries are
missing), never runs silently on CPU (`infc_runtime.providers`): the command
exits 3 before listening, with one line on stderr naming the provider, the
providers this onnxruntime offers and the way out. `--allow-cpu-fallback` (or
the environment variable INFC_ALLOW_CPU_FALLBACK=1, for images) serves on CPU
and says so: a WARNING at start, `parameters.cpu_fallback: true` in the model
metadata (`GET /v2/models/NAME`), the metric `infc_cpu_fallback` 1. The
providers in use are logged at start, listed in the model metadata's
`parameters.execution_providers` and in the metric `infc_execution_provider`.

The request limits of the manifest's `serving` section can be overridden:
`--max-body-bytes` (the body as received), `--max-decompressed-bytes` (after
Content-Encoding), `--max-rows` (rows of one request), `--max-elements`
(tensor elements of one request), `--max-pixels` (decoded image pixels of one
request). Requests must name this server in their Host header: bound to a
loopback address (`--host 127.0.0.1`, the default), the names `localhost`,
`127.0.0.1`, `::1` and the bound address are accepted, plus each `--allow-host
NAME`; bound elsewhere, any Host is accepted unless `--allow-host` is given,
then only those.

Security and logs (wrapped around the app as ASGI middleware, outermost
first: `logs.RequestLog`, then `auth.Auth`; neither is there unless asked
for): API keys from $INFC_API_KEYS and `--api-keys-file`, the admin key from
$INFC_ADMIN_KEY (`infc_runtime.auth`: 401/403; liveness and readiness open
unless `--no-open-health`); `--audit-log FILE` (`infc_runtime.audit`);
`--log-format json` (`infc_runtime.logs`: JSON log lines, one per request with
its id, echoed in `X-Request-ID`); `--ssl-certfile`/`--ssl-keyfile`: HTTPS
(checked before the bundle loads; not with `--grpc-port` yet). The gRPC
endpoint checks the same keys (`grpc_server`). Keys are never logged.

`measure` times the bundle where it runs (see `infc_runtime.measure_cli`): it
loads the bundle as `serve` does, warms it up, freezes the heap as the server
does after warm-up (unless `--no-gc-freeze`), times batches of the `--batches`
sizes, then single requests (row `i % n` of `--requests`, else zeros) until
each `--budget` has a verdict: `pass` (the percentile's 95% confidence interval
is wholly within it), `fail` (wholly above) or `inconclusive` (at
`--max-samples` / `--max-seconds`). It prints one JSON document on stdout:
`latency.Measurement.to_dict()` plus `"format": 1`. Exit codes: 0 measured
(whatever the verdict), 1 a request failed, 2 usage error or an unusable bundle
or requests file (one line on stderr).

Several bundles (`serve A B`), or one model repository (`serve REPO_DIR`:
`REPO_DIR/NAME/VERSION/` bundles, `REPO_DIR/NAME/policy.yaml`; see
`infc_runtime.repository`), are served by one server (`infc_runtime.routing`):
each version with its own batcher and metrics, a canary split, swaps without
downtime, Triton's repository API. Every bundle is verified before any of its
code is imported. Bundles named one by one must all load (exit 2, or 3, as for
one bundle); in a repository a version that does not verify or load is left
out and reported UNAVAILABLE with its reason by `/v2/repository/index` (exit 2
only when no model loads). `--grpc-port` serves one bundle only (exit 2).

Entry points for other code:

- `main(argv: list[str] | None = None) -> int`: this command line; `argv`
  excludes the program name (`["serve", "build/digits-1.0.0", "--port", "9000"]`).
- `serve_bundle(bundle_dir, argv, verified=None) -> int`: what a bundle's own
  `serve.py` calls, with only the options in `argv`, once it has verified the
  bundle itself (`verified`: the summary), before importing this package.
- `load_bundle(bundle_dir, verify=True, public_key=None) -> Pipeline`: verify (with the signature, when
  `public_key` names a PEM file), then load.

One process, one event loop (uvicorn, HTTP/1.1 with httptools on uvloop, or h11
on asyncio where those are not installed; `infc_runtime.http_server` holds the
timeouts). No line is logged per request unless `--access-log` is given (then
uvicorn's, logger `uvicorn.access`). A request head must arrive within `HEAD_TIMEOUT_S` (10 s)
of connecting or of the previous response, an idle connection is closed
`KEEP_ALIVE_S` (5 s) after its last response, and the app bounds each read of
a body (`app.BODY_TIMEOUT_S`, 408). SIGTERM or SIGINT stops accepting new
connections first (the handshakes under way and the accept queue are accepted,
so none is reset), gives each accepted connection `DRAIN_GRACE_S` (1 s) to
deliver a request, answers every request it has, closes the rest, then exits
0; whatever clients do, it exits within about `SHUTDOWN_TIMEOUT_S` (8 s,
uvicorn's `timeout_graceful_shutdown`) + 0.3 s + the batch running at that
moment: inside `docker stop`'s default 10 s, and the k8s template's
`terminationGracePeriodSeconds: 30` (a 5 s preStop sleep included).

`--grpc-port PORT` also serves KServe V2 over gRPC (`infc_runtime.grpc_server`,
`inference.GRPCInferenceService`; needs grpcio and protobuf, imported only
then) on the same host, with the same pipeline, batcher, limits and metrics;
on shutdown it stops after HTTP has drained (calls in progress are answered)
and before the batcher drains.

OpenTelemetry traces of infer requests (`infc_runtime.tracing`) are off
unless the standard `OTEL_*` variables turn them on (`OTEL_TRACES_EXPORTER`,
`OTEL_EXPORTER_OTLP_ENDPOINT`); then they need the `opentelemetry-sdk` and
`opentelemetry-exporter-otlp` packages (exit 2 without them).

Exit codes of `serve`: 0 stopped cleanly; 1 the server could not start (e.g.
the port is in use); 2 usage error, unusable keys, audit log or certificate, or
the bundle does not verify or load, or OTEL_* variables ask for traces that
cannot be made (one line on stderr); 3 the bundle needs an execution provider
this host cannot give it (CUDA) and CPU fallback was not allowed (one line on
stderr).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import ipaddress
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .abi import ManifestError
from .auth import ADMIN_KEY_ENV, API_KEYS_ENV, OPEN_PATHS, Auth, Keys, KeysError, load_keys
from .bundle_options import NO_VERIFY_WITH_KEY, PUBLIC_KEY_ENV, add_bundle_options
from .providers import ALLOW_CPU_FALLBACK_ENV, FALLBACK_OPTION, ProviderError, allow_cpu_fallback_env
from .tracing import Tracing, TracingError, from_environment
from .verify import MANIFEST, BundleError, verify_bundle

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.types import ASGIApp, Receive, Scope, Send

    from .pipeline import Pipeline

__all__ = ["BundleError", "LIMITS", "PUBLIC_KEY_ENV", "ProviderError", "allow_cpu_fallback", "load_bundle", "main",
           "public_key", "run_bundle", "serve_bundle"]

EXIT_OK, EXIT_START_FAILED, EXIT_USAGE, EXIT_NO_PROVIDER = 0, 1, 2, 3

LIMITS = ("max_body_bytes", "max_decompressed_bytes", "max_rows", "max_elements", "max_pixels")
"""The `serving` limits the command line can override (`--max-body-bytes`, ...)."""

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")

SIGNED = f"{MANIFEST} signed by key "
"""What `Verified.summary()` says when the signature was checked."""


log = logging.getLogger("infc_runtime")


def load_bundle(bundle_dir: str | Path, *, verify: bool = True, public_key: str | Path | None = None,
                allow_cpu_fallback: bool = False) -> Pipeline:
    """`verify_bundle` (with the signature by `public_key`'s private key, when given), then `Pipeline.load`, with
    every failure turned into one clear `BundleError`, except a missing execution provider: `ProviderError`
    (unless `allow_cpu_fallback`)."""
    root = Path(bundle_dir)
    if not root.is_dir():
        raise BundleError(f"{root}: not a directory")
    manifest = root / "manifest.json"
    if not manifest.is_file():
        raise BundleError(f"{root}: no manifest.json (is this an infc bundle?)")
    if verify:  # before any kernel module is imported and before the model is read
        verified = verify_bundle(root, public_key=public_key)
        log.info("bundle %s verified: %s", root, verified.summary())
        for path in verified.mismatched:
            log.warning("%s/%s: Numba cache file does not match the manifest: removed, the kernels compile "
                        "during warm-up", root, path)
    from .pipeline import Pipeline  # here: after the check, and `--help` imports no numpy or onnxruntime

    try:
        return Pipeline.load(root, allow_cpu_fallback=allow_cpu_fallback)
    except ProviderError:
        raise
    except json.JSONDecodeError as exc:
        raise BundleError(f"{manifest}: invalid JSON ({exc})") from None
    except ManifestError as exc:  # another major schema version, a key missing or mistyped
        raise BundleError(f"{manifest}: {exc}") from None
    except KeyError as exc:
        raise BundleError(f"{manifest}: missing key {exc}") from None
    except FileNotFoundError as exc:
        raise BundleError(f"{root}: missing file {exc.filename}") from None
    except Exception as exc:  # ORT, kernel imports: anything that makes the bundle unusable
        raise BundleError(f"{root}: cannot load the bundle: {type(exc).__name__}: {exc}") from None


def _parser() -> argparse.ArgumentParser:
    from . import batch_run, measure_cli

    parser = argparse.ArgumentParser(prog="python -m infc_runtime", description="Serve or measure an infc bundle.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser("serve", help="serve a bundle over HTTP (KServe V2)")
    serve.add_argument("bundle_dir", metavar="BUNDLE_DIR", nargs="+",
                       help="the bundle directory (holds manifest.json); several bundles, or one model repository "
                            "(REPO_DIR/NAME/VERSION/), are served together (infc_runtime.routing)")
    _add_options(serve)
    measure = commands.add_parser("measure", help="measure a bundle's latency here; one JSON document on stdout")
    measure_cli.add_options(measure)
    run = commands.add_parser("run", help="run a bundle over a file of requests (JSON lines, CSV, a folder of images)")
    batch_run.add_options(run)
    return parser


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8000, help="port to bind (default: %(default)s)")
    parser.add_argument("--grpc-port", type=int, default=None, metavar="PORT",
                        help="also serve KServe V2 over gRPC on this port, same host (needs grpcio and protobuf)")
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug"],
        help="log level (default: %(default)s)",
    )
    parser.add_argument("--no-warmup", action="store_true", help="be ready at once, without warming up")
    add_bundle_options(parser, verb="serve", says=", and say so (log, model metadata, metric infc_cpu_fallback)",
                       exits=f"exits {EXIT_NO_PROVIDER} before listening")
    parser.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                        help="accept requests whose Host header names NAME (repeatable)")
    parser.add_argument("--access-log", action="store_true",
                        help="log one line per request (off by default: it costs the request path)")
    security = parser.add_argument_group("security and logs")
    security.add_argument("--api-keys-file", metavar="FILE", default=None,
                          help=f"API keys, one id:key a line, besides ${API_KEYS_ENV} (id:key,id:key); with keys, "
                               f"requests need 'Authorization: Bearer KEY'; admin key: ${ADMIN_KEY_ENV}")
    security.add_argument("--no-open-health", dest="open_health", action="store_false",
                          help="liveness and readiness need a key too (default: open, for probes)")
    security.add_argument("--audit-log", metavar="FILE", default=None,
                          help="append one JSON line per request (time, key id, client, model, version, status; "
                               "admin actions) to FILE ('-': stderr)")
    security.add_argument("--log-format", choices=["text", "json"], default="text",
                          help="json: every log line is JSON, plus one line per request (request id, model, "
                               "version, status, rows, batch, stage times; logger infc_runtime.requests)")
    security.add_argument("--request-log-level", default="info", choices=["debug", "info", "warning"],
                          help="the level of the per-request lines of --log-format json (default: %(default)s)")
    security.add_argument("--ssl-certfile", metavar="PEM", default=None,
                          help="serve HTTPS with this certificate (chain) file; needs --ssl-keyfile")
    security.add_argument("--ssl-keyfile", metavar="PEM", default=None, help="the certificate's private key")
    for limit in LIMITS:
        parser.add_argument(f"--{limit.replace('_', '-')}", dest=limit, type=_positive, metavar="N",
                            help=f"override the manifest's serving.{limit}")


def main(argv: list[str] | None = None) -> int:
    """Run the command line with `argv` (default: `sys.argv[1:]`); return the exit code."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse printed the usage error
        return EXIT_OK if exc.code == 0 else EXIT_USAGE
    if args.command == "measure":
        from . import measure_cli

        args.public_key = public_key(args.public_key)
        return measure_cli.run(args, load_bundle)
    if args.command == "run":
        from . import batch_run

        args.public_key = public_key(args.public_key)
        return batch_run.run(args, load_bundle)
    return _serve(args)


def run_bundle(bundle_dir: str | Path, argv: Sequence[str], *, verified: str | None = None) -> int:
    """`run` on `bundle_dir` with the options in `argv` (`INPUT -o OUTPUT`); what a bundle's own serve.py calls
    for `python serve.py run ...`, once it has verified the bundle itself (`verified`: the summary)."""
    from . import batch_run

    parser = argparse.ArgumentParser(prog="serve.py run", description=f"Run the infc bundle in {bundle_dir} over "
                                                                       "a file of requests.")
    batch_run.add_options(parser, bundle=False)
    try:
        args = parser.parse_args(list(argv))
    except SystemExit as exc:
        return EXIT_OK if exc.code == 0 else EXIT_USAGE
    args.bundle_dir = str(bundle_dir)
    args.public_key = public_key(args.public_key)
    if verified is None:
        return batch_run.run(args, load_bundle)

    def load_verified(path: str | Path, **options: object) -> Pipeline:
        return load_bundle(path, **{**options, "verify": False})  # type: ignore[arg-type]

    return batch_run.run(args, load_verified)


def serve_bundle(bundle_dir: str | Path, argv: Sequence[str] | None = None, *, verified: str | None = None) -> int:
    """Serve `bundle_dir` with the options in `argv` (`--port 9000`); return the exit code.

    `verified`: the summary of the verification the caller already ran (the
    bundle's serve.py runs it before importing this package); it is not run again.
    """
    parser = argparse.ArgumentParser(prog="serve.py", description=f"Serve the infc bundle in {bundle_dir}.")
    _add_options(parser)
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:
        return EXIT_OK if exc.code == 0 else EXIT_USAGE
    args.bundle_dir, args.verified = str(bundle_dir), verified
    return _serve(args)


def allowed_hosts(host: str, allowed: Sequence[str]) -> list[str] | None:
    """The Host header names to accept when bound to `host` (None: any)."""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        return list(allowed) or None
    return list(dict.fromkeys([*LOOPBACK_NAMES, host, *allowed]))


def _serve(args: argparse.Namespace) -> int:
    from .logs import configure

    configure(args.log_level, args.log_format)
    collecting = gc.isenabled()
    # Loading makes ~10^5 objects that live as long as the process (modules, Numba's registries, the
    # session) and almost no garbage: collecting them over and over as they are made took a fifth of the
    # start (bench/RESULTS.md, issue 10). Once loaded they are frozen as they are, with the few hundred
    # garbage objects among them (gc docs: disable early, freeze, enable); the warm-up's heap is collected
    # and frozen after it (`latency.settle_heap`).
    gc.disable()
    try:
        made = _app(args)
        if isinstance(made, int):
            return made
        from .http_server import run_server

        gc.freeze()
    finally:
        if collecting:
            gc.enable()
    app, on_shutdown = made
    options = {} if args.ssl_certfile is None else {"ssl_certfile": args.ssl_certfile,
                                                    "ssl_keyfile": args.ssl_keyfile}
    if args.log_format == "json":
        options["log_config"] = None  # uvicorn's loggers propagate to the JSON handler instead of their own
    return run_server(_secured(app, args), host=args.host, port=args.port, log_level=args.log_level,
                      access_log=args.access_log, on_shutdown=on_shutdown, **options)


def _auth(args: argparse.Namespace) -> Auth | None:
    """The key check `args` asks for (None: no keys configured), for the gRPC endpoint."""
    return Auth(_no_app, args.keys, open_paths=OPEN_PATHS if args.open_health else ()) if args.keys.enabled else None


async def _no_app(scope: Scope, receive: Receive, send: Send) -> None:
    raise RuntimeError("the gRPC key check wraps no ASGI app")


def _secured(app: Starlette, args: argparse.Namespace) -> ASGIApp:
    """`app` behind the key check (when keys are configured), inside the request and audit logs (when asked
    for: they record the requests the key check refuses too)."""
    from .logs import RequestLog

    keys: Keys = args.keys
    served: ASGIApp = app
    if keys.enabled:
        log.info("%s; liveness and readiness %s", keys.describe(), "open" if args.open_health else "need a key")
        served = Auth(served, keys, open_paths=OPEN_PATHS if args.open_health else ())
    elif allowed_hosts(args.host, ()) is None:  # bound beyond loopback
        log.warning("serving on %s without API keys: anyone who can reach it may call every endpoint (set %s "
                    "or --api-keys-file, and %s)", args.host, API_KEYS_ENV, ADMIN_KEY_ENV)
    if args.log_format == "json" or args.audit is not None:
        served = RequestLog(served, log=args.log_format == "json", level=logging.getLevelName(
            args.request_log_level.upper()), audit=args.audit)
    return served


def public_key(option: str | None) -> str | None:
    """The public key file to check signatures with: `--public-key`'s, else $INFC_PUBLIC_KEY's, else None."""
    return option or os.environ.get(PUBLIC_KEY_ENV) or None


def allow_cpu_fallback(option: bool) -> bool:
    """Whether CPU fallback is allowed: `--allow-cpu-fallback`, else $INFC_ALLOW_CPU_FALLBACK (ValueError for a
    value that is neither 1 nor 0)."""
    return option or allow_cpu_fallback_env()


def _app(args: argparse.Namespace) -> tuple[Starlette, Callable[[], None] | None] | int:
    """The app serving the bundle `args` names (warm-up not run yet) and what to call when its shutdown begins
    (the gRPC endpoint's stop), or the exit code when it cannot."""
    verified = getattr(args, "verified", None)
    try:
        args.keys = load_keys(keys_file=args.api_keys_file)
    except KeysError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.ssl_certfile is not None and args.grpc_port is not None:
        print("error: --grpc-port cannot be used with --ssl-certfile yet (gRPC would be plaintext beside HTTPS)",
              file=sys.stderr)
        return EXIT_USAGE
    args.audit = None
    if args.audit_log is not None:
        from .audit import AuditLog

        try:
            args.audit = AuditLog(args.audit_log)
        except OSError as exc:
            print(f"error: --audit-log {args.audit_log}: cannot open it for appending ({exc.strerror})",
                  file=sys.stderr)
            return EXIT_USAGE
        log.info("audit log: %s", "stderr" if args.audit_log == "-" else args.audit_log)
    if (args.ssl_certfile is None) != (args.ssl_keyfile is None):
        print("error: --ssl-certfile and --ssl-keyfile go together", file=sys.stderr)
        return EXIT_USAGE
    if args.ssl_certfile is not None:
        import ssl

        try:  # as uvicorn will, so that a bad file ends here with one line, not a traceback after the load
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(args.ssl_certfile, args.ssl_keyfile)
        except (OSError, ssl.SSLError) as exc:
            print(f"error: --ssl-certfile {args.ssl_certfile} / --ssl-keyfile {args.ssl_keyfile}: cannot load the "
                  f"certificate and key ({exc})", file=sys.stderr)
            return EXIT_USAGE
    key = public_key(args.public_key)
    if key is not None and args.no_verify:
        print(f"error: {NO_VERIFY_WITH_KEY}", file=sys.stderr)
        return EXIT_USAGE
    if key is not None and verified is not None and SIGNED not in verified:
        # serve.py checked no signature: it saw no key, but argparse took an abbreviation (`--public PUB`)
        print(f"error: public key {key}: the bundle's signature was not checked (give the option in full: "
              "--public-key PUB)", file=sys.stderr)
        return EXIT_USAGE
    try:
        fallback = allow_cpu_fallback(args.allow_cpu_fallback)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        tracing = from_environment()  # None unless OTEL_* variables ask for traces
    except TracingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    dirs = [args.bundle_dir] if isinstance(args.bundle_dir, str) else list(args.bundle_dir)
    if len(dirs) > 1 or not (Path(dirs[0]) / MANIFEST).exists():
        return _repository_app(args, dirs, key, fallback, tracing)
    args.bundle_dir = dirs[0]
    if args.no_verify:
        log.warning("--no-verify: the bundle's files are NOT checked against manifest.json (development only)")
    elif verified is not None:
        log.info("bundle %s verified by its serve.py: %s", args.bundle_dir, verified)
    try:
        pipeline = load_bundle(args.bundle_dir, verify=not args.no_verify and verified is None, public_key=key,
                               allow_cpu_fallback=fallback)
    except BundleError as exc:
        print("error: " + " ".join(str(exc).split()), file=sys.stderr)
        return EXIT_USAGE
    except ProviderError as exc:
        # Exit before listening rather than live-but-never-ready: under Kubernetes a pod that never gets ready
        # sits there quietly (its reason only in a probe's 503 body), while an exit is a CrashLoopBackOff whose
        # log's last line says what is missing; under docker or systemd it stops the start at once. Either way
        # nothing ever routes a request to a bundle that would run on the wrong hardware.
        print(f"error: {args.bundle_dir}: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_NO_PROVIDER
    _log_providers(pipeline)
    overrides = {limit: getattr(args, limit) for limit in LIMITS if getattr(args, limit) is not None}
    pipeline.serving = dataclasses.replace(pipeline.serving, **overrides)
    from .app import create_app  # here: `measure` and `--help` need no server stack

    if tracing is not None:
        log.info("tracing on: spans of model %r exported as OTEL_* variables say (%s)", pipeline.name,
                 os.environ.get("OTEL_TRACES_EXPORTER", "otlp"))
    app = create_app(pipeline, warmup=not args.no_warmup, allowed_hosts=allowed_hosts(args.host, args.allow_host),
                     tracing=tracing)
    app.state.metrics.set_bundle_verified(not args.no_verify)
    on_shutdown = None
    if args.grpc_port is not None:
        try:
            from .grpc_server import attach  # only here: a server without gRPC never imports grpc
        except Exception as exc:  # not installed, or older than the generated code needs
            print(f"error: --grpc-port needs grpcio and protobuf ({type(exc).__name__}: {exc})", file=sys.stderr)
            return EXIT_USAGE
        on_shutdown = attach(app, host=args.host, port=args.grpc_port, auth=_auth(args), audit=args.audit,
                             log_level=logging.getLevelName(args.request_log_level.upper())
                             if args.log_format == "json" else None)
    return app, on_shutdown


def _repository_app(args: argparse.Namespace, dirs: list[str], key: str | None,
                    fallback: bool, tracing: Tracing | None = None) -> tuple[Starlette, None] | int:
    """The app serving several bundles, or the model repository in `dirs[0]`, or the exit code when it cannot.

    Every version is verified before any of its code is imported. Bundles named one by one must all load (exit 2
    naming the first that does not, 3 for a missing execution provider); in a repository, a version that does not
    verify or load is not served, and the repository index reports it UNAVAILABLE with the reason.
    """
    from .repository import PolicyError, Repository

    if args.grpc_port is not None:
        print("error: --grpc-port serves one bundle; it cannot be used with several models", file=sys.stderr)
        return EXIT_USAGE
    if args.no_verify:
        log.warning("--no-verify: the bundles' files are NOT checked against manifest.json (development only)")
    def loader(path: Path, cpu_fallback: bool) -> Pipeline:
        return load_bundle(path, verify=False, allow_cpu_fallback=cpu_fallback)  # the repository verified it

    verify = not args.no_verify
    try:
        if len(dirs) == 1:
            if not Path(dirs[0]).is_dir():
                raise BundleError(f"{dirs[0]}: not a directory")
            repository = Repository(Path(dirs[0]), verify=verify, public_key=key, allow_cpu_fallback=fallback,
                                    loader=loader)
            if not any(repository.versions(name) for name in repository.models()):
                raise BundleError(f"{dirs[0]}: no manifest.json (is this an infc bundle?), and no model repository "
                                  "folders NAME/VERSION/ either")
        else:
            repository = Repository.of_bundles([Path(d) for d in dirs], verify=verify, public_key=key,
                                               allow_cpu_fallback=fallback, loader=loader)
    except BundleError as exc:
        print("error: " + " ".join(str(exc).split()), file=sys.stderr)
        return EXIT_USAGE
    loaded: dict[str, dict[str, Pipeline]] = {}
    failed: dict[str, dict[str, str]] = {}
    for name in repository.models():
        try:
            wanted = repository.wanted(name, repository.policy(name))
        except PolicyError as exc:
            log.error("model %r not served: %s", name, exc)
            failed.setdefault(name, {})["*"] = str(exc)
            continue
        for version in wanted:
            try:
                pipeline = repository.load(name, version)
            except (BundleError, ProviderError) as exc:
                message = " ".join(str(exc).split())
                if repository.fixed:
                    print(f"error: {message}", file=sys.stderr)
                    return EXIT_NO_PROVIDER if isinstance(exc, ProviderError) else EXIT_USAGE
                log.error("model %r version %r not served: %s", name, version, message)
                failed.setdefault(name, {})[version] = message
                continue
            _log_providers(pipeline)
            loaded.setdefault(name, {})[version] = pipeline
    if not loaded:
        print(f"error: {dirs[0]}: no model could be loaded"
              + "".join(f"; {n} {v}: {why}" for n, versions in failed.items() for v, why in versions.items()),
              file=sys.stderr)
        return EXIT_USAGE
    from .routing import create_repository_app

    overrides = {limit: getattr(args, limit) for limit in LIMITS if getattr(args, limit) is not None}
    app = create_repository_app(repository, loaded, failed, warmup=not args.no_warmup,
                                allowed_hosts=allowed_hosts(args.host, args.allow_host),
                                verified=not args.no_verify, limits=overrides, tracing=tracing)
    return app, None


def _log_providers(pipeline: Pipeline) -> None:
    """The execution providers in use, at start; a WARNING when the bundle runs without the one it was built for."""
    log.info("model %r runs on execution providers %s (built for %s)", pipeline.name, ", ".join(pipeline.providers),
             ", ".join(pipeline.requested_providers))
    if pipeline.cpu_fallback:
        log.warning("CPU FALLBACK: model %r was built for %s, which cannot be used here; it is served on %s, as "
                    "allowed by %s or %s=1 (slower than the bundle was built and budgeted for)", pipeline.name,
                    ", ".join(pipeline.cpu_fallback), ", ".join(pipeline.providers), FALLBACK_OPTION,
                    ALLOW_CPU_FALLBACK_ENV)
