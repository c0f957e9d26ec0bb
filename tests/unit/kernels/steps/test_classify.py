"""log_softmax: the generated module calls the ops library and matches the numpy reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from kernelcheck import compile_steps, spec_of

from infc.kernels.graph import StepIssue, resolve
from infc.kernels.reference import run_reference
from infc_runtime.types import TensorSpec


@pytest.mark.parametrize("shape", [(1, 10), (4, 3), (2, 3, 5)])
def test_log_softmax_matches_the_reference(tmp_path: Path, shape: tuple[int, ...]) -> None:
    x = {"logits": (np.random.default_rng(3).normal(size=shape) * 30).astype(np.float32)}
    steps = [("log_softmax", {"output": "log_probs"})]
    module = compile_steps(tmp_path, "post", steps, [spec_of("logits", x["logits"])])
    assert "log_softmax(t.pop('logits'))" in Path(module.__file__).read_text()
    got, want = module.run(x), run_reference(steps, x)
    assert sorted(got) == ["log_probs"] and got["log_probs"].dtype == np.float32
    np.testing.assert_allclose(got["log_probs"], want["log_probs"], rtol=1e-6, atol=1e-6)


def test_log_softmax_needs_a_class_axis() -> None:
    issues: list[StepIssue] = []
    resolve([("log_softmax", {})], [TensorSpec("score", "float32", ())], lambda i, issue: issues.append(issue))
    assert [str(i) for i in issues] == ["tensor 'score' is a scalar per row; log_softmax needs a class axis"]
