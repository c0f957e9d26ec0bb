"""The JSON Schema (draft 2020-12) of a spec, v1.

The schema is the one description of what a spec may say: the loader validates
against it, its `default`s are the defaults the loader applies, and `infc
schema` prints it. Pre/post step items are built from the step registry, so
every step's parameters are checked when a spec loads. Rules that tie several
fields together (fp16 needs cuda, static needs calibration data, ...) are
stated in descriptions here and checked in `infc.spec`, where they get clearer
messages than a schema could give.
"""

from __future__ import annotations

import copy
from dataclasses import fields
from typing import Any

from infc_runtime.types import CacheConfig, ServingConfig

from .. import accuracy as metrics
from ..instances import INSTANCES, PRICES_SOURCE
from ..isa import ISAS, NATIVE
from ..kernels import registry

__all__ = [
    "DTYPES", "HARDWARE", "METRICS", "QUANTIZE", "NAME_PATTERN", "SEMVER_PATTERN",
    "PATTERN_NAMES", "STEP_SECTIONS", "schema",
]

HARDWARE = ("x86", "arm", "cuda")
DTYPES = ("bool", "uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64",
          "float16", "float32", "float64", "bytes")
QUANTIZE = ("none", "dynamic", "static", "fp16", "auto")
METRICS = tuple(metrics.METRICS)
"""The metric names a budget may use: the registry's (infc.accuracy), listed nowhere else."""
NAME_PATTERN = r"^[a-z][a-z0-9-]*$"
SEMVER_PATTERN = (  # https://semver.org, the suggested regular expression
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)
IMAGE_DIGEST_PATTERN = r"^[a-z0-9][a-z0-9._/:-]*@sha256:[0-9a-f]{64}$"
QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$"
PATTERN_NAMES = {
    NAME_PATTERN: "lowercase letters, digits and dashes, starting with a letter",
    SEMVER_PATTERN: "a semantic version such as 1.0.0",
    "^[NCHWD]+$": "axis letters (N, C, H, W, D) such as HWC",
    IMAGE_DIGEST_PATTERN: "an image pinned by digest, NAME[:TAG]@sha256: and 64 hex digits",
    QUANTITY_PATTERN: "a Kubernetes quantity such as 512Mi or 1Gi",
}
"""What each pattern means, in words, for error messages."""

STEP_SECTIONS = {"preprocess": "pre", "postprocess": "post"}
MAX_STEPS = 256
"""Steps per section at most: real pipelines have a handful; a thousand-step list is an attack on the checks."""

_SERVING = {  # name: (JSON type, bounds, description); defaults come from ServingConfig
    "max_batch_size": ("integer", {"minimum": 1}, "largest batch the server forms"),
    "max_queue_delay_ms": ("number", {"minimum": 0},
                           "how long a request may wait for others to batch with, in ms"),
    "max_queue": ("integer", {"minimum": 1}, "requests waiting at most; beyond, the server answers 429"),
    "timeout_ms": ("number", {"exclusiveMinimum": 0},
                   "a request not answered by then is dropped (504), in ms"),
    "max_body_bytes": ("integer", {"minimum": 1024},
                       "largest request body accepted, as received (413); default: from the model's input sizes"),
    "max_decompressed_bytes": ("integer", {"minimum": 1024},
                               "largest request body after gzip/deflate decoding (413)"),
    "max_rows": ("integer", {"minimum": 1}, "most rows one request may carry (413); default: from max_batch_size"),
    "max_elements": ("integer", {"minimum": 1},
                     "most tensor elements one request may carry, all inputs (413); default: max_rows x a row's"),
    "max_pixels": ("integer", {"minimum": 1}, "most decoded image pixels one request may carry, all images (413)"),
    "allow_non_finite": ("boolean", {}, "let NaN and infinities reach the model (else a 400 naming row and input)"),
    "instances": ("integer", {"minimum": 1, "maximum": 64},
                  "batches run at once, each on its own onnxruntime session and thread, the compute threads "
                  "split between them (for hosts with more cores than one batch uses; memory: a model per instance)"),
}


_CACHE = {  # name: (JSON type, bounds, description); defaults come from CacheConfig
    "max_entries": ("integer", {"minimum": 1, "maximum": 1 << 24}, "answers kept at most (least recently used "
                                                                   "dropped first)"),
    "ttl_s": ("number", {"exclusiveMinimum": 0}, "seconds an answer is kept"),
    "max_bytes": ("integer", {"minimum": 1024}, "bytes of all kept answers together, at most"),
    "max_entry_bytes": ("integer", {"minimum": 1}, "an answer larger than this (its output tensors) is not kept"),
}


def _serving() -> dict[str, Any]:
    defaults = {f.name: f.default for f in fields(ServingConfig)}
    cache_defaults = {f.name: f.default for f in fields(CacheConfig)}
    return {
        "type": "object",
        "description": "dynamic batching and bounds of the server",
        "additionalProperties": False,
        "default": {},
        "properties": {
            **{name: {"type": kind, **bounds, "default": defaults[name], "description": doc}
               for name, (kind, bounds, doc) in _SERVING.items()},
            "cache": {
                "type": "object",
                "description": (
                    "a response cache, off unless given: an identical request (same input names, types, shapes "
                    "and bytes) to the same loaded version is answered from memory, without queueing or running "
                    "the model. For repeated inputs (popular texts, repeated images); not for unique inputs or "
                    "models with randomness. Not part of the lock (it changes no measured decision)"),
                "additionalProperties": False,
                "properties": {name: {"type": kind, **bounds, "default": cache_defaults[name], "description": doc}
                               for name, (kind, bounds, doc) in _CACHE.items()},
            },
        },
    }


def _deploy() -> dict[str, Any]:
    integer = {"type": "integer", "minimum": 1}
    return {
        "type": "object",
        "description": "how the bundle ships: its wheelhouse, its image and its Kubernetes files",
        "additionalProperties": False,
        "default": {},
        "properties": {
            "wheelhouse": {"type": "boolean", "default": False, "description": (
                "put every run-time wheel, for the target's platform and the build's Python, into the bundle "
                "(wheels/), pinned with --hash, so install.sh and the image install with no network; "
                "`infc build --wheelhouse` does the same")},
            "base_image": {"type": "string", "pattern": IMAGE_DIGEST_PATTERN, "maxLength": 512, "description": (
                "the Dockerfile's base image, pinned by digest (NAME[:TAG]@sha256:DIGEST); default: "
                "infc's python:3.11-slim-bookworm (x86, arm) or CUDA 12 + cuDNN 9 runtime (cuda) image, pinned in "
                "infc/deploy.py; for cuda, the image Python 3.11 is copied onto")},
            "image": {"type": "string", "minLength": 1, "maxLength": 512,
                      "description": "the image the Kubernetes files run (default NAME:VERSION)"},
            "replicas": {
                "type": "object",
                "description": "pods the HorizontalPodAutoscaler keeps (min <= max)",
                "additionalProperties": False,
                "default": {},
                "properties": {"min": {**integer, "default": 1}, "max": {**integer, "default": 4}},
            },
            "cpu_percent": {"type": "integer", "minimum": 1, "maximum": 100, "default": 70, "description": (
                "average CPU use, in percent of the requested CPUs, above which the autoscaler adds pods")},
            "memory": {"type": "string", "pattern": QUANTITY_PATTERN, "default": "1Gi", "description": (
                "memory each pod requests and is limited to, a Kubernetes quantity such as 1Gi")},
            "usd_per_hour": {"type": "number", "exclusiveMinimum": 0, "maximum": 10000, "description": (
                "the on-demand price of the host a server runs on, in USD per hour: the report's cost per 1,000 "
                "requests (not with `instance`)")},
            "vcpus": {"type": "integer", "minimum": 1, "maximum": 1024, "description": (
                "the vCPUs `usd_per_hour` buys (default: the vCPUs the server uses, so the whole price is "
                "charged to it)")},
            "instance": {"type": "string", "enum": sorted(INSTANCES, key=str.lower), "description": (
                "a cloud instance type whose vCPUs and price are in infc's table (" + PRICES_SOURCE
                + "), instead of `usd_per_hour`")},
        },
    }


def _monitor() -> dict[str, Any]:
    share = {"type": "number", "exclusiveMinimum": 0, "maximum": 1}
    psi = {"type": "number", "exclusiveMinimum": 0, "maximum": 10}
    return {
        "type": "object",
        "description": (
            "drift indicators: the bundle carries a reference of its calibration data (after pre-processing) and "
            "of its validation outputs (monitor/reference.json); the server compares sampled rows with it over a "
            "sliding window (population stability index per feature, NaN and out-of-range rates, prediction "
            "shift) at /v2/models/NAME/drift and as infc_drift_* metrics"),
        "additionalProperties": False,
        "default": {},
        "properties": {
            "enabled": {"type": "boolean", "default": True, "description": (
                "false: no reference in the bundle, nothing sampled. The reference is made of "
                "optimize.calibration (else validation) for the inputs and of optimize.validation for the "
                "predictions; a spec with neither has no drift indicators")},
            "inputs": {"type": "array", "minItems": 1, "maxItems": 256,
                       "items": {"type": "string", "minLength": 1, "maxLength": 256}, "description": (
                           "the model inputs watched (default: all): a 2-D input per column, an image per "
                           "channel, a token sequence by its length")},
            "window": {"type": "integer", "minimum": 100, "maximum": 10_000_000, "default": 10_000,
                       "description": "sampled rows the indicators cover (a sliding window, in 10 steps)"},
            "sample_rate": {**share, "default": 0.1, "description": (
                "share of rows sampled: every round(1 / sample_rate)-th row, counted (not drawn at random)")},
            "bins": {"type": "integer", "minimum": 2, "maximum": 100, "default": 10,
                     "description": "bins per feature, at the reference's quantiles (open at both ends)"},
            "psi_warn": {**psi, "default": 0.1,
                         "description": "PSI from which a feature is `warn` (0.1: a moderate shift, by convention)"},
            "psi_alert": {**psi, "default": 0.25,
                          "description": "PSI from which a feature is `alert` (0.25: a major shift, by convention)"},
        },
    }


def _target() -> dict[str, Any]:
    isas = [isa for hardware in HARDWARE for isa in ISAS[hardware]] + [NATIVE]
    listed = "; ".join(f"{h}: {', '.join(ISAS[h])}" for h in HARDWARE if ISAS[h])
    return {
        "title": "x86, arm or cuda, or a mapping {hardware, threads, isa, fp16}",
        "description": "where the bundle runs",
        "oneOf": [
            {"type": "string", "enum": list(HARDWARE)},
            {
                "type": "object",
                "required": ["hardware"],
                "additionalProperties": False,
                "properties": {
                    "hardware": {"type": "string", "enum": list(HARDWARE)},
                    "threads": {"type": "integer", "minimum": 1,
                                "description": "compute threads (default: what the plan picks)"},
                    "isa": {"type": "string", "enum": isas, "description": (
                        f"CPU instruction set the bundle may use ({listed}; native: the build "
                        "host's). Default: avx2 on x86, arm64 on arm. Not for cuda.")},
                    "fp16": {"type": "boolean", "description": (
                        "cuda only: whether the GPU runs fp16 (default true); false keeps fp32")},
                },
            },
        ],
    }


def _accuracy() -> dict[str, Any]:
    names = list(metrics.METRICS)
    takes = {p: [m for m in names if p in metrics.METRICS[m].params] for p in metrics.PARAMS}
    params = {p: {**copy.deepcopy(dict(param.schema)), "description": param.description}
              for p, param in metrics.PARAMS.items()}
    explained = "; ".join(
        f"{m.name}: {m.description}" + (" (needs labels)" if m.labels and "labels" not in m.description else "")
        for m in metrics.METRICS.values())
    one = {
        "type": "object",
        "description": (
            "one metric of the optimized model against the original, on optimize.validation. "
            + explained + ". Every metric takes `min` except max_abs_error (`max`); parameters "
            + "; ".join(f"{p}: {', '.join(ms) if len(ms) < len(names) else 'all'}" for p, ms in takes.items())),
        "additionalProperties": False,
        "required": ["metric"],
        "properties": {
            "metric": {"type": "string", "enum": names},
            "min": {"type": "number", "description": "lowest acceptable value"},
            "max": {"type": "number", "description": "highest acceptable value (max_abs_error)"},
            **params,
        },
    }
    return {
        "title": "an accuracy budget {metric, min or max, parameters}, or a list of them",
        "description": "every budget listed must hold; needs optimize.validation",
        "oneOf": [one, {"type": "array", "minItems": 1, "items": one}],
    }


def _steps(stage: registry.Stage) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for name in registry.names(stage):
        p = registry.params_schema(name)
        if not registry.get(name).required:
            p["type"] = ["object", "null"]  # `- softmax:` with nothing after it is fine
        params[name] = p
    bare = [n for n in registry.names(stage) if not registry.get(n).required]
    where = "before" if stage == "pre" else "after"
    return {
        "type": "array",
        "description": f"steps run {where} the model, in order",
        "maxItems": MAX_STEPS,
        "default": [],
        "items": {
            "title": "a step name, or a mapping of one step name to its parameters",
            "oneOf": [
                {"type": "string", "enum": bare, "description": "a step that needs no parameters"},
                {
                    "type": "object",
                    "description": "`name: {parameters}`",
                    "properties": params,
                    "additionalProperties": False,
                    "minProperties": 1,
                    "maxProperties": 1,
                },
            ],
        },
    }


def schema() -> dict[str, Any]:
    """The JSON Schema of a spec (draft 2020-12); a fresh copy on every call."""
    number_gt0 = {"type": "number", "exclusiveMinimum": 0}
    data_file = {"type": "string", "minLength": 1}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "infc spec v1",
        "description": "A model, where it runs, its budgets and the processing around it.",
        "type": "object",
        "required": ["name", "version", "model", "target"],
        "additionalProperties": False,
        "properties": {
            "name": {"type": "string", "pattern": NAME_PATTERN, "maxLength": 64,
                     "description": "name of the service and bundle: " + PATTERN_NAMES[NAME_PATTERN]},
            "version": {"type": "string", "pattern": SEMVER_PATTERN,
                        "description": "semantic version of the service, e.g. 1.0.0"},
            "model": {"type": "string", "minLength": 1,
                      "description": "the ONNX model, a path relative to the spec file"},
            "target": _target(),
            "inputs": {
                "type": "array",
                "description": "request tensors, without the batch dimension (default: the model's inputs)",
                "minItems": 1,
                "items": {"$ref": "#/$defs/tensor"},
            },
            "budget": {
                "type": "object",
                "description": "what the build must meet; a missed budget fails the build",
                "additionalProperties": False,
                "default": {},
                "properties": {
                    "latency_ms": {
                        "type": "object",
                        "description": "latency percentiles at batch 1, in ms (p50 <= p95 <= p99)",
                        "additionalProperties": False,
                        "minProperties": 1,
                        "properties": {p: number_gt0 for p in ("p50", "p95", "p99")},
                    },
                    "accuracy": _accuracy(),
                },
            },
            "optimize": {
                "type": "object",
                "description": "graph optimizations to try",
                "additionalProperties": False,
                "default": {},
                "properties": {
                    "quantize": {
                        "type": "string", "enum": list(QUANTIZE), "default": "none",
                        "description": (
                            "none, dynamic (int8 weights), static (int8 weights and activations; "
                            "needs calibration), fp16 (cuda only) or auto (the fastest candidate "
                            "inside the accuracy budget; needs calibration and an accuracy budget)"
                        ),
                    },
                    "fuse": {"type": "boolean", "default": True, "description": "fuse operators"},
                    "calibration": {**data_file, "description": (
                        ".npz with one array [N, *shape] per request input, relative to the spec")},
                    "validation": {**data_file, "description": (
                        ".npz like calibration, plus optional integer `labels` [N]")},
                },
            },
            "preprocess": _steps("pre"),
            "postprocess": _steps("post"),
            "serving": _serving(),
            "deploy": _deploy(),
            "monitor": _monitor(),
        },
        "$defs": {
            "tensor": {
                "type": "object",
                "description": "a named request tensor",
                "required": ["name", "dtype", "shape"],
                "additionalProperties": False,
                "properties": {
                    "name": {"type": "string", "minLength": 1},
                    "dtype": {"type": "string", "enum": list(DTYPES)},
                    "shape": {"type": "array", "items": {"type": "integer", "minimum": -1},
                              "description": "sizes without the batch dimension; -1 means any size"},
                },
            },
        },
    }
