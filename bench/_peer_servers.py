"""bench/peers.py's other model servers: Triton (PyTriton), MLServer and BentoML, each from its own interpreter.

They conflict with one another (and with infc's environment), so each runs from a virtual environment of its
own, named with `--peer-python triton=PATH,mlserver=PATH,bentoml=PATH`. Nothing here installs anything: a peer
whose interpreter is not given, or cannot import it, is skipped with a line saying why.

Each serves the same ONNX MLP as model `mlp` on the KServe V2 path `/v2/models/mlp/infer`, from one onnxruntime
session with one thread, with the batching its documentation recommends set as close as it allows to infc's
(`max_batch_size: 32, max_queue_delay_ms: 2`); `SETTINGS` says what each got.
"""

from __future__ import annotations

import json
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["PEERS", "SETTINGS", "Peer", "parse_peer_python", "prepare"]

PEERS = ("triton", "mlserver", "bentoml")
_MODULE = {"triton": "pytriton", "mlserver": "mlserver", "bentoml": "bentoml"}
_DISTRIBUTIONS = {"triton": ("nvidia-pytriton", "onnxruntime", "numpy"),
                  "mlserver": ("mlserver", "uvloop", "onnxruntime", "numpy"),
                  "bentoml": ("bentoml", "onnxruntime", "numpy")}

SETTINGS = {
    "triton": "PyTriton binds a Python function (`@batch`) to Triton's Python backend; Triton's dynamic batcher "
              "with `max_batch_size=32`, `max_queue_delay_microseconds=2000`; binary tensors: Triton's own",
    "mlserver": "a custom `MLModel` runtime; adaptive batching `max_batch_size: 32`, `max_batch_time: 0.002` s; "
                "MLServer's default `parallel_workers` (1: inference in one worker process beside the HTTP one)",
    "bentoml": "a `@bentoml.service` whose API has the route `/v2/models/mlp/infer` and takes the V2 JSON body "
               "(its `inputs` list is the API's argument); no batching: BentoML batches an API's array arguments "
               "along a batch dimension (`batchable=True`), which a V2 body is not; one worker; binary tensors n/a",
}

_SESSION = '''\
import onnxruntime as ort

options = ort.SessionOptions()
options.intra_op_num_threads = options.inter_op_num_threads = 1
session = ort.InferenceSession(MODEL, options, providers=["CPUExecutionProvider"])
'''

TRITON_SERVER = '''\
import sys
import numpy as np
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig

MODEL = sys.argv[1]
''' + _SESSION + '''

@batch
def infer(x):
    return {"y": session.run(None, {"x": x})[0]}


http, grpc, metrics = (int(p) for p in sys.argv[2:5])
config = TritonConfig(http_address="127.0.0.1", http_port=http, grpc_address="127.0.0.1", grpc_port=grpc,
                      metrics_address="127.0.0.1", metrics_port=metrics, log_verbose=0)
with Triton(config=config) as triton:
    triton.bind(model_name="mlp", infer_func=infer,
                inputs=[Tensor(name="x", dtype=np.float32, shape=(256,))],
                outputs=[Tensor(name="y", dtype=np.float32, shape=(10,))],
                config=ModelConfig(max_batch_size=32, batcher=DynamicBatcher(max_queue_delay_microseconds=2000)))
    triton.serve()
'''

MLSERVER_RUNTIME = '''\
import os
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse

MODEL = os.environ["BENCH_MODEL"]


class MLP(MLModel):
    async def load(self) -> bool:
        global session
''' + "".join("        " + line + "\n" for line in _SESSION.splitlines() if line) + '''\
        self.session = session
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = NumpyCodec.decode_input(payload.inputs[0])
        y = self.session.run(None, {"x": x})[0]
        return InferenceResponse(model_name=self.name, outputs=[NumpyCodec.encode_output("y", y)])
'''

BENTOML_SERVICE = '''\
import os
from typing import Any
import bentoml
import numpy as np

MODEL = os.environ["BENCH_MODEL"]


@bentoml.service(workers=1)
class MLP:
    def __init__(self) -> None:
''' + "".join("        " + line + "\n" for line in _SESSION.splitlines() if line) + '''\
        self.session = session

    @bentoml.api(route="/v2/models/mlp/infer")
    def infer(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        tensor = inputs[0]
        x = np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
        y = self.session.run(None, {"x": x})[0]
        return {"model_name": "mlp", "outputs": [{"name": "y", "datatype": "FP32", "shape": list(y.shape),
                                                   "data": y.ravel().tolist()}]}
'''


@dataclass
class Peer:
    """How to start one peer: `command` (with `{port}` for its HTTP port), where it says ready, its environment."""

    name: str
    command: list[str]
    ready_path: str
    env: dict[str, str]
    versions: str
    cwd: Path | None = None
    not_applicable: dict[str, str] = field(default_factory=dict)  # request format -> why the peer cannot take it


def parse_peer_python(text: str) -> dict[str, str]:
    """`triton=PATH,mlserver=PATH` -> {peer: interpreter}; an unknown peer name exits with a message."""
    out = {}
    for item in filter(None, text.split(",")):
        name, _, path = item.partition("=")
        if name not in PEERS or not path:
            raise SystemExit(f"--peer-python: expected NAME=PATH with NAME one of {', '.join(PEERS)}, got {item!r}")
        out[name] = path
    return out


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _inspect(python: str, name: str) -> dict[str, str]:
    """The peer interpreter's versions of what it serves with and its libdir; raises RuntimeError why not."""
    code = (f"import importlib.metadata as m, importlib.util, json, platform, sysconfig\n"
            f"assert importlib.util.find_spec({_MODULE[name]!r}), 'cannot import {_MODULE[name]}'\n"
            f"print(json.dumps({{'python': platform.python_version(), 'libdir': sysconfig.get_config_var('LIBDIR'),"
            f" **{{d: m.version(d) for d in {_DISTRIBUTIONS[name]!r}}}}}))")
    try:
        done = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60)
    except OSError as exc:
        raise RuntimeError(f"{python}: {exc.strerror}") from None
    if done.returncode != 0:
        raise RuntimeError(f"{python}: {(done.stderr.strip().splitlines() or ['failed'])[-1]}")
    info: dict[str, str] = json.loads(done.stdout)
    return info


def prepare(name: str, python: str, model: Path, work: Path, base_env: dict[str, str]) -> Peer:
    """Write the peer's server files under `work` and say how to start it; RuntimeError when it cannot run."""
    info = _inspect(python, name)
    libdir = info.pop("libdir")
    versions = ", ".join(f"{k} {v}" for k, v in info.items())
    env = {**base_env, "BENCH_MODEL": str(model)}
    folder = work / name
    folder.mkdir()
    if name == "triton":
        # Triton's Python backend stub links libpython: it must find the interpreter's
        env["LD_LIBRARY_PATH"] = ":".join(filter(None, [libdir, base_env.get("LD_LIBRARY_PATH", "")]))
        (folder / "server.py").write_text(TRITON_SERVER)
        command = [python, str(folder / "server.py"), str(model), "{port}", str(_free_port()), str(_free_port())]
        return Peer(name, command, "/v2/models/mlp/ready", env, versions)
    if name == "mlserver":
        (folder / "mlp_runtime.py").write_text(MLSERVER_RUNTIME)
        settings = {"host": "127.0.0.1", "http_port": "{port}", "grpc_port": _free_port(),
                    "metrics_port": _free_port(), "debug": False}
        model_settings = {"name": "mlp", "implementation": "mlp_runtime.MLP", "max_batch_size": 32,
                          "max_batch_time": 0.002}
        (folder / "model-settings.json").write_text(json.dumps(model_settings))
        # the HTTP port is known only when the server starts: settings.json is written by the command
        script = folder / "start.py"
        # (guarded: MLServer's worker processes are spawned, and so import this file again)
        script.write_text(f"import sys\nfrom mlserver.cli.main import main\n\nif __name__ == '__main__':\n"
                          f"    settings = {json.dumps(settings)!r}.replace('\"{{port}}\"', sys.argv[1])\n"
                          f"    open({str(folder / 'settings.json')!r}, 'w').write(settings)\n"
                          f"    sys.argv = ['mlserver', 'start', {str(folder)!r}]\n    main()\n")
        return Peer(name, [python, str(script), "{port}"], "/v2/models/mlp/ready", env, versions, cwd=folder)
    (folder / "service.py").write_text(BENTOML_SERVICE)
    bentoml = str(Path(python).parent / "bentoml")
    command = [bentoml, "serve", "service:MLP", "--host", "127.0.0.1", "--port", "{port}"]
    return Peer(name, command, "/readyz", env, versions, cwd=folder,
                not_applicable={"binary": "n/a: the route takes the V2 JSON body only"})
