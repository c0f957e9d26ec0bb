"""Runs ONNX models for a build, under an emulator: the target's numerics (see infc.target_numerics).

A standalone script (it imports only numpy and onnxruntime: the target's wheels, not infc). One JSON request
per stdin line, one JSON reply per stdout line; tensors travel in .npz files:

    started                        -> {"ready": true, "machine": ..., "onnxruntime": ...}
    {"load": "MODEL.onnx"}         -> {"ok": true}
    {"run": "IN.npz", "out": "OUT.npz"} -> {"ok": true}  (OUT.npz: every model output, by name)
    anything that fails            -> {"error": "..."}
"""

import json
import platform
import sys

import numpy as np
import onnxruntime as ort


def main() -> None:
    def reply(**fields: object) -> None:
        sys.stdout.write(json.dumps(fields) + "\n")
        sys.stdout.flush()

    session = None
    reply(ready=True, machine=platform.machine(), onnxruntime=ort.__version__)
    for line in sys.stdin:
        try:
            request = json.loads(line)
            if "load" in request:
                options = ort.SessionOptions()
                options.intra_op_num_threads = 1  # numerics do not depend on it; emulated threads only cost
                options.inter_op_num_threads = 1
                options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL  # as served
                session = ort.InferenceSession(request["load"], options, providers=["CPUExecutionProvider"])
                reply(ok=True)
            elif "run" in request and session is not None:
                with np.load(request["run"], allow_pickle=False) as f:
                    feeds = {i.name: f[i.name] for i in session.get_inputs()}
                names = [o.name for o in session.get_outputs()]
                np.savez(request["out"], **dict(zip(names, session.run(names, feeds), strict=True)))
                reply(ok=True)
            else:
                reply(error=f"unknown request (or no model loaded): {line[:200]}")
        except Exception as e:  # noqa: BLE001 - every failure goes back to the build as a message
            reply(error=f"{type(e).__name__}: {e}")


if __name__ == "__main__":
    main()
