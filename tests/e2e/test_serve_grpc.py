"""Build -> `infc serve BUNDLE --grpc-port` as a process on loopback -> tritonclient.grpc, on the digits example."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from examples import DIGITS_DIR
from servers import Server, dockerfile_command, free_port

from infc.deploy import VENV
from infc_runtime.pipeline import Pipeline


@pytest.fixture(scope="module")
def served(digits_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    grpc_port = free_port()
    command = [sys.executable, "-m", "infc", "serve", str(digits_bundle), "--port", "{port}",
               "--grpc-port", str(grpc_port)]
    server = Server(command, tmp_path_factory.mktemp("serve") / "server.log")
    try:
        server.wait_ready()
        yield server, f"127.0.0.1:{grpc_port}"
    finally:
        code = server.stop()
    assert code == 0, server.log.read_text()


def test_grpc_answers_as_http_and_the_pipeline(served: tuple[Server, str], digits_bundle: Path) -> None:
    server, address = served
    images = np.load(DIGITS_DIR / "val.npz")["image"][:16]
    with grpcclient.InferenceServerClient(address) as client:
        assert client.is_server_ready() and client.is_model_ready("digits")
        meta = client.get_model_metadata("digits", as_json=True)
        assert [(t["name"], t["datatype"], t["shape"]) for t in meta["inputs"]] == [("image", "UINT8",
                                                                                       ["-1", "8", "8"])]
        inp = grpcclient.InferInput("image", list(images.shape), "UINT8").set_data_from_numpy(images)
        result = client.infer("digits", [inp])
    http = httpclient.InferenceServerClient(server.url)
    try:
        expected = http.infer("digits", [httpclient.InferInput("image", list(images.shape), "UINT8")
                                         .set_data_from_numpy(images)])
    finally:
        http.close()
    for name in ("scores", "labels"):
        np.testing.assert_array_equal(result.as_numpy(name), expected.as_numpy(name))
    in_process = Pipeline.load(digits_bundle).run({"image": images})
    assert result.as_numpy("labels").tolist() == in_process["labels"].tolist()
    np.testing.assert_allclose(result.as_numpy("scores"), in_process["scores"], rtol=1e-6)


def test_the_dockerfile_command_serves_http_and_grpc(digits_bundle: Path, tmp_path: Path) -> None:
    # the image's CMD as the container runs it (in the bundle's folder), on free loopback ports
    command = dockerfile_command(digits_bundle)
    grpc_port = free_port()
    python = f"{VENV}/bin/python"  # the image's venv (install.sh); here, the test's interpreter
    swap = {python: sys.executable, "0.0.0.0": "127.0.0.1", "8000": "{port}", "8081": str(grpc_port)}
    server = Server([swap.get(part, part) for part in command], tmp_path / "server.log", cwd=digits_bundle)
    health = dockerfile_command(digits_bundle, "HEALTHCHECK")
    assert health[0] == python
    probe = [sys.executable, *[part.replace("127.0.0.1:8000", f"127.0.0.1:{server.port}") for part in health[1:]]]
    try:
        server.wait_ready()
        with grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}") as client:
            assert client.is_server_ready() and client.is_model_ready("digits")
        # the image's HEALTHCHECK, against the ready server: healthy
        done = subprocess.run(probe, capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
    finally:
        code = server.stop()
    assert code == 0, server.log.read_text()
