"""How a bundle ships: its Dockerfile and its Kubernetes files, from the spec's `deploy` section and the base
images infc pins by default.

The default images are pinned by the digest of their multi-architecture index (linux/amd64 and linux/arm64),
so one Dockerfile builds for x86 and ARM hosts alike. Each was read from public repositories that pin it and
record where they resolved it; none was typed in. Update them deliberately, with the digest that
`docker buildx imagetools inspect IMAGE:TAG` prints (the index's, not one platform's), and say where and when.
"""

from __future__ import annotations

from typing import Any

from .bundle import render
from .spec import Spec

__all__ = ["PYTHON_IMAGE", "CUDA_IMAGE", "VENV", "PRE_STOP_S", "GRACE_S", "base_image", "image", "deploy_files"]

PYTHON_IMAGE = ("python:3.11-slim-bookworm"
                "@sha256:a36c24f9cbdf4fd0f52d67f0823eeac19c2028c637cecc392d97f980d4fec56b")
"""The Python the bundles run on (x86 and arm: the base image; cuda: copied onto `CUDA_IMAGE`). Python 3.11.16 on
Debian 12 (glibc 2.36). The OCI index digest of python:3.11-slim-bookworm, as public repositories pinned it in
September 2026: one records it from Docker Hub's tag API on 2026-09-21, another cross-checked it on 2026-09-22
against the Docker Official Images repo-info snapshot at commit 40cdaf34215d6a292f2c62798b194d67d4b1ad55."""

CUDA_IMAGE = ("nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04"
              "@sha256:8aef630a54bc5c5146ae5ce68e6af5caa3df0fb690bb91544175c91f307e4356")
"""The cuda target's base: the CUDA 12 runtime libraries and cuDNN 9 that onnxruntime-gpu 1.2x loads (a build
for any CUDA 12.x runs on any 12.x runtime), on Ubuntu 24.04 (glibc 2.39, newer than the Python's 2.36). The
multi-platform index digest, as a public Dockerfile pinned it ("inspected on 2026-07-18") and others since."""

VENV = "/opt/venv"
"""Where the image's `install.sh` puts the bundle's run-time dependencies; the CMD runs this venv's python."""

PRE_STOP_S = 5
"""The preStop sleep: time for the Service (or Knative) to stop routing to a pod before it gets SIGTERM."""

GRACE_S = 30
"""terminationGracePeriodSeconds: the preStop sleep, then the server's drain after SIGTERM (about
HANDSHAKE_WAIT_S + uvicorn's tick + SHUTDOWN_TIMEOUT_S = 8.3 s in infc_runtime/http_server.py) plus the batch
running at that moment, with a margin (a test holds this against the runtime's numbers)."""


def base_image(spec: Spec, target: str) -> str:
    """The image the Dockerfile builds on: the spec's `deploy.base_image`, else infc's pinned default."""
    if spec.deploy.base_image:
        return spec.deploy.base_image
    return CUDA_IMAGE if target == "cuda" else PYTHON_IMAGE


def image(spec: Spec) -> str:
    """The image the Kubernetes files run: the spec's `deploy.image`, else NAME:VERSION."""
    return spec.deploy.image or f"{spec.name}:{spec.version}"


def deploy_files(spec: Spec, target: str, threads: int) -> dict[str, bytes]:
    """The bundle's Dockerfile, .dockerignore and k8s/ files (bundle path -> bytes); `threads`: the CPUs a pod
    requests."""
    d = spec.deploy
    values: dict[str, Any] = {
        "name": spec.name, "version": spec.version, "target": target, "gpu": target == "cuda",
        "base_image": base_image(spec, target), "python_image": PYTHON_IMAGE, "venv": VENV, "image": image(spec),
        "threads": threads, "memory": d.memory, "min_replicas": d.min_replicas, "max_replicas": d.max_replicas,
        "cpu_percent": d.cpu_percent, "pre_stop_s": PRE_STOP_S, "grace_s": GRACE_S,
    }
    templates = {"Dockerfile": "Dockerfile.j2", ".dockerignore": "dockerignore.j2"} | {
        f"k8s/{name}.yaml": f"k8s/{name}.yaml.j2" for name in ("deployment", "hpa", "pdb", "inferenceservice")}
    return {name: render(template, **values).encode() for name, template in templates.items()}
