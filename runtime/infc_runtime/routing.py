"""The HTTP app of a server of many models and versions (`infc serve REPO_DIR`, `infc serve BUNDLE BUNDLE...`).

Each loaded version is an `app._Server` of its own (pipeline, batcher with its
worker thread and queue, metrics labelled model and version): one model's
overload (429) or failure (503) never reaches another. The endpoints of the
one-model app, per model, plus Triton's repository and statistics extensions:

| method | path                                                   | answer                                   |
|--------|--------------------------------------------------------|------------------------------------------|
| GET    | /v2/health/live, /v2/health/ready                      | live; ready once every loaded version    |
|        |                                                        | has warmed up (or failed to)             |
| GET    | /v2/models/{name}[/versions/{v}][/ready]               | metadata (`versions`: the loaded ones);  |
|        |                                                        | readiness                                |
| POST   | /v2/models/{name}[/versions/{v}]/infer                 | inference; the response's `model_version`|
|        |                                                        | names the version that answered          |
| POST   | /v2/models/{name}[/versions/{v}]/infer_stream          | JSON lines in, results streamed out      |
|        |                                                        | (`stream`); routed by key, else at random|
| GET    | /v2/models/{name}[/versions/{v}]/config                | Triton-shaped model configuration        |
| GET    | /v2/models[/{name}[/versions/{v}]]/stats               | Triton-shaped inference statistics       |
| GET    | /v2/models/{name}/policy                               | the traffic policy in force              |
| GET    | /v2/models/{name}[/versions/{v}]/drift                 | drift indicators of the version (current |
|        |                                                        | one by default; `drift` module)          |
| POST   | /v2/repository/index                                   | every version: READY, LOADING or         |
|        |                                                        | UNAVAILABLE with the reason              |
| POST   | /v2/repository/models/{name}/load                      | (re)load: read policy.yaml, load what it |
|        |                                                        | names, switch, unload the rest           |
| POST   | /v2/repository/models/{name}/unload                    | drain and unload every version           |
| POST   | /v2/repository/models/{name}/policy                    | set the policy (JSON `{"current": V,     |
|        |                                                        | "canary": {"version": V, "share": S}}`)  |
| GET    | /metrics                                               | every version's metrics                  |

Routing of the unversioned infer URL: the current version, or the canary with
probability `share`. A request carrying a key is routed by a hash of it, so the
same key always reaches the same version (a client sticks to one): the key is
the `X-Routing-Key` header, else `X-Request-ID`, else the V2 request's `id`
(read from the body only while a canary takes traffic, and only from a body
that is not compressed); without a key the choice is random. Rollback is
`share: 0` or another `current`.

Swaps keep every request: the new version is verified, loaded (on a thread:
the loop keeps serving) and warmed up first, then the route switches at once
(one assignment); a version no longer routed to stops taking new requests,
its requests in flight finish, then its batcher drains and it is unloaded.
A failed load leaves the route as it was. policy.yaml is polled every
`POLICY_POLL_S`; a change reloads the model as the load endpoint does.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import random
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from . import __version__, _json, metrics
from ._body import read_body
from .app import (
    BODY_TIMEOUT_S,
    EXTENSIONS,
    INLINE_BYTES,
    MODEL_PATH,
    SERVER_NAME,
    VERSIONED_PATH,
    HostCheck,
    _error,
    _error_answer,
    _host_allowed,
    _host_name,
    _http_error,
    _internal_error,
    _Server,
    body_headers,
    drift_answer,
    v2_routes,
)
from .latency import settle_heap
from .pipeline import Pipeline
from .protocol import ProtocolError, tensor_metadata
from .repository import Policy, PolicyError, Repository, policy_from, version_key
from .tracing import Tracing
from .verify import BundleError

__all__ = ["POLICY_POLL_S", "ROUTING_KEY_HEADER", "create_repository_app"]

POLICY_POLL_S = 1.0
"""How often each model's policy.yaml is checked for a change."""
ROUTING_KEY_HEADER = "x-routing-key"
RETIRE_TIMEOUT_S = 120.0
"""A retired version whose requests are still in flight after this long is drained anyway."""

log = logging.getLogger("infc_runtime")

_KEY_HEADERS = (ROUTING_KEY_HEADER.encode(), b"x-request-id")


@dataclass(frozen=True)
class _Route:
    """Where a model's unversioned requests go; replaced whole, never changed (the switch is one assignment)."""

    policy: Policy
    current: _Server
    canary: _Server | None

    @property
    def split(self) -> bool:
        """Whether the choice depends on the request (a canary takes some, not all, of the traffic)."""
        return self.canary is not None and 0.0 < self.policy.share < 1.0

    def pick(self, key: bytes | None) -> _Server:
        if self.canary is None or self.policy.share <= 0.0:
            return self.current
        if key is None:
            return self.canary if random.random() < self.policy.share else self.current
        return self.canary if _fraction(key) < self.policy.share else self.current


def _fraction(key: bytes) -> float:
    """A number in [0, 1) that depends on `key` alone (the same in every process)."""
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") / 2.0**64


@dataclass
class _Model:
    name: str
    versions: dict[str, _Server] = field(default_factory=dict)
    route: _Route | None = None
    unavailable: dict[str, str] = field(default_factory=dict)
    loading: set[str] = field(default_factory=set)
    stamp: tuple[int, int] | None = None
    unloaded: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def create_repository_app(repository: Repository, loaded: dict[str, dict[str, Pipeline]],
                          failed: dict[str, dict[str, str]], *, warmup: bool = True,
                          allowed_hosts: Sequence[str] | None = None, body_timeout_s: float = BODY_TIMEOUT_S,
                          verified: bool = True, limits: dict[str, int] | None = None,
                          tracing: Tracing | None = None) -> Starlette:
    """The app serving the `loaded` pipelines (by model and version) of `repository`; `failed`: the versions that
    could not be loaded, with the reason (reported in the index, never served). With `tracing`, every version's
    infer requests are traced (`tracing` module)."""
    hub = _Hub(repository, warmup=warmup, body_timeout_s=body_timeout_s, verified=verified, limits=limits or {},
               tracing=tracing)
    for name in sorted(set(loaded) | set(failed) | set(repository.models())):
        model = hub.models[name] = _Model(name, unavailable=dict(failed.get(name, {})))
        model.stamp = repository.policy_stamp(name)
        for version, pipeline in loaded.get(name, {}).items():
            model.versions[version] = hub.server(pipeline)
        try:
            policy = repository.policy(name)
        except PolicyError as exc:
            model.unavailable.setdefault("*", str(exc))
            continue
        missing = [v for v in policy.versions if v not in model.versions]
        if missing:
            model.unavailable.setdefault("*", f"version {missing[0]!r} of the policy could not be loaded: "
                                              f"{model.unavailable.get(missing[0], 'not loaded')}")
            continue
        hub.route(model, policy)
    model_path, versioned = MODEL_PATH, VERSIONED_PATH
    routes = [
        Route("/v2/models/stats", hub.stats),  # before the model routes: "stats" is no model's name here
        *v2_routes(hub),
        Route(model_path + "/config", hub.config),
        Route(versioned + "/config", hub.config),
        Route(model_path + "/stats", hub.stats),
        Route(versioned + "/stats", hub.stats),
        Route(model_path + "/policy", hub.get_policy),
        Route(model_path + "/drift", hub.drift),
        Route(versioned + "/drift", hub.drift),
        Route("/v2/repository/index", hub.index, methods=["GET", "POST"]),
        Route("/v2/repository/models/{name}/load", hub.load, methods=["POST"]),
        Route("/v2/repository/models/{name}/unload", hub.unload, methods=["POST"]),
        Route("/v2/repository/models/{name}/policy", hub.set_policy, methods=["POST"]),
        Route("/metrics", hub.prometheus),
    ]
    hosts = None if allowed_hosts is None else frozenset(_host_name(h) for h in allowed_hosts)
    app = _RepositoryApp(hub, hosts, routes=routes, lifespan=hub.lifespan,
                         exception_handlers={HTTPException: _http_error, Exception: _internal_error},  # type: ignore[dict-item]
                         middleware=[] if hosts is None else [Middleware(HostCheck, allowed_hosts=hosts)])
    app.state.hub = hub
    return app


class _RepositoryApp(Starlette):
    """Starlette, where every infer request goes straight to the routing handler (raw ASGI, as in `app._App`)."""

    def __init__(self, hub: _Hub, hosts: frozenset[str] | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.hub, self.hosts = hub, hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] == "http" and scope["method"] == "POST" and scope["path"].endswith("/infer")
                and scope["path"].startswith("/v2/models/")
                and (self.hosts is None or _host_allowed(scope, self.hosts))):
            await self.hub.infer(scope, receive, send)
            return
        if (scope["type"] == "http" and scope["method"] == "POST" and scope["path"].endswith("/infer_stream")
                and scope["path"].startswith("/v2/models/")
                and (self.hosts is None or _host_allowed(scope, self.hosts))):
            await self.hub.infer_stream(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


class _Hub:
    """The models, their routes, and the endpoints over them."""

    def __init__(self, repository: Repository, *, warmup: bool, body_timeout_s: float, verified: bool,
                 limits: dict[str, int], tracing: Tracing | None = None) -> None:
        self.repository = repository
        self.tracing = tracing
        self.warmup, self.body_timeout_s, self.verified, self.limits = warmup, body_timeout_s, verified, limits
        self.models: dict[str, _Model] = {}
        self.retiring: set[asyncio.Task[None]] = set()
        self.started = self.stopping = False

    def server(self, pipeline: Pipeline) -> _Server:
        """A version's server: its own batcher and metrics (labelled model and version)."""
        if self.limits:
            pipeline.serving = dataclasses.replace(pipeline.serving, **self.limits)  # type: ignore[arg-type]
        server = _Server(pipeline, warmup=self.warmup, body_timeout_s=self.body_timeout_s, tracing=self.tracing)
        server.metrics.set_bundle_verified(self.verified)
        return server

    def route(self, model: _Model, policy: Policy) -> None:
        """Point `model`'s unversioned URL at the versions `policy` names (all of them loaded)."""
        canary = None if policy.canary is None else model.versions[policy.canary]
        model.route = _Route(policy, model.versions[policy.current], canary)

    def servers(self) -> list[_Server]:
        return [s for m in self.models.values() for s in m.versions.values()]

    # -- lifecycle --------------------------------------------------------------------------------------------
    @asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        servers = self.servers()
        for server in servers:
            server.batcher.start()
        warming = asyncio.get_running_loop().create_task(self._warm_all(servers))
        watching = (None if self.repository.fixed
                    else asyncio.get_running_loop().create_task(self._watch_policies()))
        try:
            yield
        finally:
            self.stopping = True
            if watching is not None:
                watching.cancel()
            for server in self.servers():
                server.is_ready, server.not_ready_reason = False, "shutting down"
            await asyncio.gather(*(s.batcher.drain() for s in self.servers()))
            if self.retiring:
                await asyncio.wait(self.retiring)
            await warming

    async def _warm_all(self, servers: list[_Server]) -> None:
        if self.warmup:
            await asyncio.gather(*(self._warm(s, settle=False) for s in servers))
            settle_heap()
        self.started = True

    async def _warm(self, server: _Server, *, settle: bool) -> None:
        p = server.pipeline
        if not self.warmup:
            return
        started = time.perf_counter()
        try:
            await server.batcher.warm_up()
        except Exception as exc:
            server.broken, server.not_ready_reason = True, f"warm-up failed: {exc}"
            log.exception("warm-up of model %r version %r failed", p.name, p.version)
            return
        server.is_ready = True
        log.info("model %r version %r ready (warm-up took %.2f s)", p.name, p.version, time.perf_counter() - started)

    async def _watch_policies(self) -> None:
        while True:
            await asyncio.sleep(POLICY_POLL_S)
            for model in list(self.models.values()):
                stamp = self.repository.policy_stamp(model.name)
                if stamp != model.stamp and not model.unloaded:
                    model.stamp = stamp
                    log.info("model %r: %s changed; reloading", model.name, self.repository.policy_path(model.name))
                    try:
                        await self.reload(model.name)
                    except (PolicyError, BundleError) as exc:
                        log.error("model %r: policy change not applied: %s", model.name, exc)

    async def reload(self, name: str, policy: Policy | None = None) -> _Model:
        """Load what `policy` (default: the model's policy file) routes to, switch to it, retire the rest;
        PolicyError / BundleError (the route unchanged) when it cannot."""
        model = self.models.setdefault(name, _Model(name))
        async with model.lock:
            if policy is None:
                policy = self.repository.policy(name)
            else:
                self.repository.check(name, policy, f"model {name!r} policy")
            wanted = self.repository.wanted(name, policy)
            for version in wanted:
                if version not in model.versions:
                    model.versions[version] = await self._load(model, version)
            self.route(model, policy)  # the switch: new requests go to the new route from here on
            model.unloaded = False
            model.unavailable.pop("*", None)
            for version in [v for v in model.versions if v not in wanted]:
                self._retire(model, version, "not in the policy")
        log.info("model %r routes to %s", name, policy.to_dict())
        return model

    async def _load(self, model: _Model, version: str) -> _Server:
        model.loading.add(version)
        try:
            pipeline = await asyncio.to_thread(self.repository.load, model.name, version)
            server = self.server(pipeline)
            server.batcher.start()
            await self._warm(server, settle=False)
            if server.broken:
                await server.batcher.drain()
                raise BundleError(f"model {model.name!r} version {version!r}: {server.not_ready_reason}")
        except BundleError as exc:
            model.unavailable[version] = str(exc)
            raise
        except Exception as exc:  # ProviderError and the like
            model.unavailable[version] = f"{type(exc).__name__}: {exc}"
            raise BundleError(model.unavailable[version]) from None
        finally:
            model.loading.discard(version)
        model.unavailable.pop(version, None)
        return server

    def _retire(self, model: _Model, version: str, reason: str) -> None:
        """Take `version` out of `model` now (no new request reaches it); drain and drop it in the background."""
        server = model.versions.pop(version)
        model.unavailable[version] = reason
        if server.cache is not None:  # never answered from again; its memory goes now
            server.cache.clear()
        task = asyncio.get_running_loop().create_task(self._drain(server))
        self.retiring.add(task)
        task.add_done_callback(self.retiring.discard)

    async def _drain(self, server: _Server) -> None:
        deadline = time.monotonic() + RETIRE_TIMEOUT_S
        while server.metrics.inflight and time.monotonic() < deadline:  # requests routed to it before the switch
            await asyncio.sleep(0.01)
        server.is_ready, server.not_ready_reason = False, "unloaded"
        await server.batcher.drain()
        if server.cache is not None:  # what its last requests kept
            server.cache.clear()
        log.info("model %r version %r unloaded", server.pipeline.name, server.pipeline.version)

    # -- inference ----------------------------------------------------------------------------------------------
    async def infer(self, scope: Scope, receive: Receive, send: Send) -> None:
        parts = scope["path"].split("/")  # "", "v2", "models", name, ["versions", v,] "infer"
        model = self.models.get(parts[3]) if len(parts) in (5, 7) else None
        if model is None or (len(parts) == 7 and parts[4] != "versions"):
            await _error(404, f"unknown model {parts[3] if len(parts) > 3 else ''!r}")(scope, receive, send)
            return
        if len(parts) == 7:
            server = model.versions.get(parts[5])
            if server is None:
                await _error(404, self._no_version(model, parts[5]))(scope, receive, send)
                return
            await server.infer(scope, receive, send)
            return
        route = model.route
        if route is None or route.current.pipeline.version not in model.versions:
            await _error(503, f"model {model.name!r} is not available: "
                              f"{model.unavailable.get('*', 'unloaded')}")(scope, receive, send)
            return
        if not route.split:
            await route.current.infer(scope, receive, send)
            return
        key = next((v for k, v in scope["headers"] if k in _KEY_HEADERS), None)
        if key is not None:
            await route.pick(key).infer(scope, receive, send)
            return
        await self._infer_by_body_id(route, scope, receive, send)

    async def infer_stream(self, scope: Scope, receive: Receive, send: Send) -> None:
        """`/infer_stream` (`infc_runtime.stream`) on the version the path names, else on the route's pick: by
        the routing-key header, else at random (a stream's body is read as it comes: no request id to route by)."""
        from .stream import serve_stream

        parts = scope["path"].split("/")  # "", "v2", "models", name, ["versions", v,] "infer_stream"
        model = self.models.get(parts[3]) if len(parts) in (5, 7) else None
        if model is None or (len(parts) == 7 and parts[4] != "versions"):
            await _error(404, f"unknown model {parts[3] if len(parts) > 3 else ''!r}")(scope, receive, send)
            return
        route = model.route
        if len(parts) == 7:
            server = model.versions.get(parts[5])
            if server is None:
                await _error(404, self._no_version(model, parts[5]))(scope, receive, send)
                return
        elif route is None or route.current.pipeline.version not in model.versions:
            await _error(503, f"model {model.name!r} is not available: "
                              f"{model.unavailable.get('*', 'unloaded')}")(scope, receive, send)
            return
        else:
            server = route.pick(next((v for k, v in scope["headers"] if k in _KEY_HEADERS), None))
        await serve_stream(server, scope, receive, send, reject=_error)

    async def _infer_by_body_id(self, route: _Route, scope: Scope, receive: Receive, send: Send) -> None:
        """Read the body, route by the V2 request's `id` (random without one), then hand the body on."""
        _, length, encoding, header_length = body_headers(scope)
        try:
            body = await read_body(receive, length, max_bytes=route.current.pipeline.serving.max_body_bytes,
                                   timeout_s=self.body_timeout_s)
        except ClientDisconnect:
            return
        except ProtocolError as exc:
            status, content, headers = _error_answer(exc.status, exc.message,
                                                     ((b"connection", b"close"),) if exc.close else ())
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": content})
            return
        key = None
        if (encoding or "identity").strip().lower() == "identity":
            key = await _request_id(bytes(body), header_length)
        await route.pick(key).infer(scope, _Replay(bytes(body), receive), send)

    # -- health, metadata, statistics ------------------------------------------------------------------------------
    async def live(self, request: Request) -> Response:
        return JSONResponse({"live": True})

    async def ready(self, request: Request) -> Response:
        servers = self.servers()
        if self.stopping:
            return _error(503, "shutting down")
        if not self.started or any(not (s.is_ready or s.broken) for s in servers):
            return _error(503, "warming up")
        if not any(s.is_ready for s in servers):
            return _error(503, "no model is ready")
        return JSONResponse({"ready": True})

    async def server_metadata(self, request: Request) -> Response:
        return JSONResponse({"name": SERVER_NAME, "version": __version__,
                             "extensions": [*EXTENSIONS, "model_repository", "statistics"]})

    def _model(self, request: Request) -> _Model:
        model = self.models.get(request.path_params["name"])
        if model is None:
            raise HTTPException(404, f"unknown model {request.path_params['name']!r}; this server serves "
                                     f"{', '.join(sorted(self.models)) or 'none'}")
        return model

    def _server(self, request: Request) -> _Server:
        """The version a request names, else the current one."""
        model = self._model(request)
        version = request.path_params.get("version")
        if version is not None:
            server = model.versions.get(version)
            if server is None:
                raise HTTPException(404, self._no_version(model, version))
            return server
        if model.route is None or model.route.current.pipeline.version not in model.versions:
            raise HTTPException(503, f"model {model.name!r} is not available: {model.unavailable.get('*', 'unloaded')}")
        return model.route.current

    @staticmethod
    def _no_version(model: _Model, version: str) -> str:
        reason = model.unavailable.get(version)
        loaded = ", ".join(sorted(model.versions, key=version_key)) or "none"
        return (f"model {model.name!r} version {version!r} is not loaded" + (f" ({reason})" if reason else "")
                + f"; loaded: {loaded}")

    async def model_metadata(self, request: Request) -> Response:
        server = self._server(request)
        model, p = self._model(request), server.pipeline
        return JSONResponse({
            "name": p.name,
            "versions": sorted(model.versions, key=version_key),
            "platform": SERVER_NAME,
            "inputs": [tensor_metadata(s) for s in p.inputs],
            "outputs": [tensor_metadata(s) for s in p.outputs],
            "parameters": {"version": p.version, "execution_providers": list(p.providers),
                           "cpu_fallback": bool(p.cpu_fallback)},
        })

    async def model_ready(self, request: Request) -> Response:
        server = self._server(request)
        return JSONResponse({"ready": True}) if server.is_ready else _error(503, server.not_ready_reason)

    async def config(self, request: Request) -> Response:
        p = self._server(request).pipeline
        s = p.serving
        return JSONResponse({
            "name": p.name,
            "platform": "onnxruntime_onnx",
            "backend": "onnxruntime",
            "version_policy": {"specific": {"versions": sorted(self._model(request).versions, key=version_key)}},
            "max_batch_size": s.max_batch_size,
            "input": [_config_tensor(t) for t in p.inputs],
            "output": [_config_tensor(t) for t in p.outputs],
            "dynamic_batching": {"max_queue_delay_microseconds": int(s.max_queue_delay_ms * 1000),
                                 "default_queue_policy": {"max_queue_size": s.max_queue,
                                                          "default_timeout_microseconds": int(s.timeout_ms * 1000)}},
            "parameters": {"version": {"string_value": p.version},
                           "execution_providers": {"string_value": ",".join(p.providers)}},
        })

    async def stats(self, request: Request) -> Response:
        if "name" not in request.path_params:
            servers = self.servers()
        elif "version" in request.path_params:
            servers = [self._server(request)]
        else:
            servers = list(self._model(request).versions.values())
        return JSONResponse({"model_stats": [s.metrics.stats() for s in servers]})

    async def drift(self, request: Request) -> Response:
        return drift_answer(self._server(request))

    async def prometheus(self, request: Request) -> Response:
        return Response(metrics.render_all(s.metrics for s in self.servers()), media_type=metrics.content_type())

    # -- repository API ---------------------------------------------------------------------------------------
    async def index(self, request: Request) -> Response:
        entries = []
        for name in sorted(set(self.models) | set(self.repository.models())):
            model = self.models.get(name) or _Model(name)
            known = set(model.versions) | set(model.unavailable) | set(model.loading) | set(
                self.repository.versions(name))
            for version in sorted(known - {"*"}, key=version_key):
                server = model.versions.get(version)
                if server is not None and (server.is_ready or not self.warmup):
                    state, reason = "READY", ""
                elif server is not None and not server.broken or version in model.loading:
                    state, reason = "LOADING", ""
                else:
                    state = "UNAVAILABLE"
                    reason = server.not_ready_reason if server is not None else model.unavailable.get(
                        version, "not in the policy")
                entries.append({"name": name, "version": version, "state": state, "reason": reason})
            if "*" in model.unavailable:
                entries.append({"name": name, "version": "", "state": "UNAVAILABLE", "reason": model.unavailable["*"]})
        return JSONResponse(entries)

    async def get_policy(self, request: Request) -> Response:
        model = self._model(request)
        if model.route is None:
            raise HTTPException(503, f"model {model.name!r} is not available")
        return JSONResponse(model.route.policy.to_dict())

    async def load(self, request: Request) -> Response:
        name = request.path_params["name"]
        if not self.repository.versions(name):
            raise HTTPException(400, f"failed to load {name!r}: no such model in the repository")
        try:
            model = await self.reload(name)
        except (PolicyError, BundleError) as exc:
            raise HTTPException(400, f"failed to load {name!r}: {exc}") from None
        model.stamp = self.repository.policy_stamp(name)
        return JSONResponse({}, status_code=200)

    async def unload(self, request: Request) -> Response:
        model = self._model(request)
        async with model.lock:
            model.route, model.unloaded = None, True
            model.unavailable["*"] = "unloaded"
            for version in list(model.versions):
                self._retire(model, version, "unloaded")
        return JSONResponse({}, status_code=200)

    async def set_policy(self, request: Request) -> Response:
        model = self._model(request)
        body = await request.body()
        if len(body) > 64 << 10:
            raise HTTPException(413, "policy: larger than 64 KiB")
        try:
            doc = _json.loads(body)
            if not isinstance(doc, dict):
                raise PolicyError("policy: expected a JSON object")
            policy = policy_from(doc, "policy")
            await self.reload(model.name, policy)
        except ValueError as exc:
            raise HTTPException(400, f"policy: invalid JSON ({exc})") from None
        except (PolicyError, BundleError) as exc:
            raise HTTPException(400, str(exc)) from None
        return JSONResponse(policy.to_dict())


def _config_tensor(spec: Any) -> dict[str, Any]:
    meta = tensor_metadata(spec)
    datatype = "STRING" if meta["datatype"] == "BYTES" else meta["datatype"]
    return {"name": meta["name"], "data_type": f"TYPE_{datatype}", "dims": [int(d) for d in meta["shape"][1:]]}


async def _request_id(body: bytes, header_length: str | None) -> bytes | None:
    """The V2 request's `id` in an uncompressed `body` (its JSON part), or None."""
    try:
        head = body[:int(header_length)] if header_length is not None else body
        doc = _json.loads(head) if len(head) <= INLINE_BYTES else await asyncio.to_thread(_json.loads, head)
    except Exception:  # not ours to judge: the version that gets the request answers it
        return None
    value = doc.get("id") if isinstance(doc, dict) else None
    return value.encode() if isinstance(value, str) else None


class _Replay:
    """An ASGI `receive` that gives the body already read, then what the client sends (a disconnect)."""

    def __init__(self, body: bytes, receive: Receive) -> None:
        self.body: bytes | None = body
        self.receive = receive

    async def __call__(self) -> Message:
        if self.body is not None:
            body, self.body = self.body, None
            return {"type": "http.request", "body": body, "more_body": False}
        return await self.receive()
