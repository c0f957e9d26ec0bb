"""Generated kernels match their numpy references (exact for integer work)."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from infc.kernels.codegen import generate
from infc.kernels.graph import StepIssue, resolve
from infc.kernels.reference import run_reference
from infc_runtime.pipeline import load_kernel_module
from infc_runtime.types import TensorSpec

Steps = list[tuple[str, dict[str, Any]]]


def _spec(name: str, arr: np.ndarray) -> TensorSpec:
    return TensorSpec(name, "bytes" if arr.dtype == object else str(arr.dtype), arr.shape[1:])


def _compile(tmp_path: Path, stage: str, steps: Steps, tensors: dict[str, np.ndarray], tag: str = "k") -> Any:
    def fail(i: int, issue: StepIssue) -> None:
        raise AssertionError(f"step {i}: {issue}")

    flow = resolve(steps, [_spec(k, v) for k, v in tensors.items()], fail)
    source = generate(stage, flow, name="t", version="0")
    ast.parse(source)  # plain, valid Python
    path = tmp_path / f"{tag}_{stage}.py"
    path.write_text(source)
    return load_kernel_module(path)


def _assert_same(got: dict[str, np.ndarray], want: dict[str, np.ndarray], atol: float = 0.0) -> None:
    assert list(got) == list(want)
    for name in want:
        assert got[name].shape == want[name].shape, name
        assert got[name].dtype == want[name].dtype, name
        if want[name].dtype == object or atol == 0.0:
            np.testing.assert_array_equal(got[name], want[name], err_msg=name)
        else:
            np.testing.assert_allclose(got[name], want[name], rtol=1e-6, atol=atol, err_msg=name)


IMAGE_STEPS: Steps = [
    ("to_float", {"scale": 1 / 255}),
    ("normalize", {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}),
    ("layout", {"from": "HWC", "to": "CHW"}),
]


def test_image_group_is_one_fused_loop_and_exact(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = {"image": rng.integers(0, 256, (4, 7, 5, 3), dtype=np.uint8)}
    module = _compile(tmp_path, "pre", IMAGE_STEPS, x)
    source = Path(module.__file__).read_text()
    assert source.count("@numba.njit") == 1, "three per-element steps must fuse into one kernel"
    _assert_same(module.run(x), run_reference(IMAGE_STEPS, x))


def test_a_module_imports_numba_only_when_it_has_numba_code(tmp_path: Path) -> None:
    fused = generate("pre", _resolve(IMAGE_STEPS, {"image": np.zeros((1, 7, 5, 3), np.uint8)}), name="t", version="0")
    assert "\nimport numba\n" in fused
    labels: Steps = [("labels", {"names": ["a", "b"]})]
    plain = generate("post", _resolve(labels, {"label": np.zeros(1, np.int64)}), name="t", version="0")
    assert "import numba" not in plain and "numba." not in plain  # a server of it never imports Numba
    x = {"label": np.array([1, 0])}
    _assert_same(_compile(tmp_path, "post", labels, x).run(x), run_reference(labels, x))


def _resolve(steps: Steps, tensors: dict[str, np.ndarray]) -> Any:
    def fail(i: int, issue: StepIssue) -> None:
        raise AssertionError(f"step {i}: {issue}")

    return resolve(steps, [_spec(k, v) for k, v in tensors.items()], fail)


@settings(max_examples=25, deadline=None)
@given(h=st.integers(1, 9), w=st.integers(1, 9), n=st.integers(1, 4), seed=st.integers(0, 2**31))
def test_image_group_matches_reference_on_any_size(tmp_path_factory: pytest.TempPathFactory, h: int, w: int,
                                                   n: int, seed: int) -> None:
    module = _cached_image_module(tmp_path_factory)
    x = {"image": np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)}
    _assert_same(module.run(x), run_reference(IMAGE_STEPS, x))


_MODULES: dict[str, Any] = {}


def _cached_image_module(factory: pytest.TempPathFactory) -> Any:
    if "image" not in _MODULES:
        # variable spatial size (-1): one kernel serves every image size
        def fail(i: int, issue: StepIssue) -> None:
            raise AssertionError(str(issue))

        flow = resolve(IMAGE_STEPS, [TensorSpec("image", "uint8", (-1, -1, 3))], fail)
        path = factory.mktemp("img") / "pre.py"
        path.write_text(generate("pre", flow, name="t", version="0"))
        _MODULES["image"] = load_kernel_module(path)
    return _MODULES["image"]


def test_grayscale_gets_a_channel_axis(tmp_path: Path) -> None:
    steps: Steps = [("to_float", {"scale": 0.5}), ("normalize", {"mean": [0.5], "std": [0.25]}),
                    ("layout", {"from": "HW", "to": "CHW"})]
    x = {"image": np.arange(2 * 8 * 8, dtype=np.uint8).reshape(2, 8, 8)}
    got = _compile(tmp_path, "pre", steps, x).run(x)
    assert got["image"].shape == (2, 1, 8, 8)
    _assert_same(got, run_reference(steps, x))


POST_STEPS: Steps = [("softmax", {"output": "probabilities"}), ("topk", {"k": 3}),
                     ("labels", {"names": [f"c{i}" for i in range(10)], "keep": True})]


@pytest.mark.parametrize("shape", [(1, 10), (5, 10), (3, 2, 10)])
def test_post_chain_matches_reference(tmp_path: Path, shape: tuple[int, ...]) -> None:
    x = {"logits": np.random.default_rng(1).normal(size=shape).astype(np.float32) * 4}
    got = _compile(tmp_path, "post", POST_STEPS, x, tag=str(len(shape))).run(x)
    want = run_reference(POST_STEPS, x)
    assert sorted(got) == ["indices", "labels", "scores"]
    np.testing.assert_array_equal(got["indices"], want["indices"])
    np.testing.assert_array_equal(got["labels"], want["labels"])
    np.testing.assert_allclose(got["scores"], want["scores"], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(got["scores"].sum(-1) <= 1.0 + 1e-6, True)


def test_topk_ties_keep_the_lower_index(tmp_path: Path) -> None:
    x = {"s": np.array([[1.0, 3.0, 3.0, 2.0, 3.0]], dtype=np.float32)}
    got = _compile(tmp_path, "post", [("topk", {"k": 3})], x).run(x)
    assert got["indices"].tolist() == [[1, 2, 4]]


@pytest.mark.parametrize(
    ("steps", "start", "reason"),
    [
        ([("layout", {"from": "HWC", "to": "CHW"})], TensorSpec("x", "uint8", (8, 8)),
         "'HWC' names 3 axes, but tensor 'x' has shape [8, 8] (2 axes)"),
        ([("normalize", {"mean": [0.1, 0.2], "std": [1.0]})], TensorSpec("x", "float32", (4, 4, 3)),
         "expected 1 value or one per channel (axis 2 is of size 3), got 2"),
        ([("topk", {"k": 20})], TensorSpec("x", "float32", (10,)), "k=20 is larger than the 10 classes of 'x'"),
        ([("topk", {"k": 2}), ("labels", {"names": ["a", "b"]})], TensorSpec("x", "float32", (10,)),
         "expected at least 10 names (one per class of 'indices'), got 2"),
        ([("labels", {"names": ["a"]})], TensorSpec("x", "float32", (10,)),
         "expected an integer index tensor, got float32 tensor 'x'"),
        ([("softmax", {"input": "nope"})], TensorSpec("x", "float32", (10,)), "no tensor named 'nope' here"),
    ],
)
def test_bad_steps_report_their_reason(steps: Steps, start: TensorSpec, reason: str) -> None:
    issues: list[tuple[int, str]] = []
    resolve(steps, [start], lambda i, issue: issues.append((i, str(issue))))
    assert len(issues) == 1
    assert reason in issues[0][1]


def test_several_inputs_need_an_explicit_input() -> None:
    issues: list[str] = []
    resolve([("to_float", {})], [TensorSpec("a", "uint8", (2,)), TensorSpec("b", "uint8", (2,))],
            lambda i, issue: issues.append(str(issue)))
    assert issues and "say which with `input:`" in issues[0]


EMBED_STEPS: Steps = [("mean_pool", {"mask": "attention_mask"}), ("l2_normalize", {"output": "embedding"})]


def test_embedding_post_reads_the_mask_from_the_model_inputs(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    hidden = rng.normal(size=(4, 6, 8)).astype(np.float32)
    mask = np.array([[1, 1, 1, 0, 0, 0], [1] * 6, [1, 0, 0, 0, 0, 0], [0] * 6], dtype=np.int64)

    def fail(i: int, issue: StepIssue) -> None:
        raise AssertionError(str(issue))

    flow = resolve(EMBED_STEPS, [TensorSpec("last_hidden_state", "float32", (6, 8))], fail,
                   side=[TensorSpec("attention_mask", "int64", (6,)), TensorSpec("input_ids", "int64", (6,))])
    path = tmp_path / "post.py"
    path.write_text(generate("post", flow, name="t", version="0"))
    got = load_kernel_module(path).run({"last_hidden_state": hidden, "attention_mask": mask, "input_ids": mask})
    assert list(got) == ["embedding"], "side tensors are read, never returned"
    want = run_reference(EMBED_STEPS, {"last_hidden_state": hidden}, side={"attention_mask": mask})
    np.testing.assert_allclose(got["embedding"], want["embedding"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(got["embedding"][:3], axis=1), 1.0, rtol=1e-6)
    assert np.all(got["embedding"][3] == 0), "a fully masked row pools to zeros, not NaN"
    # pooling only the unmasked rows: row 2 is exactly its first token, normalized
    first = hidden[2, 0] / np.linalg.norm(hidden[2, 0])
    np.testing.assert_allclose(got["embedding"][2], first, rtol=1e-5)


def test_mean_pool_mask_must_fit() -> None:
    issues: list[str] = []
    resolve([("mean_pool", {"mask": "attention_mask"})], [TensorSpec("h", "float32", (6, 8))],
            lambda i, issue: issues.append(str(issue)), side=[TensorSpec("attention_mask", "int64", (5,))])
    assert issues == ["mask 'attention_mask' has shape [5], expected [6] (the shape of 'h' without its last axis)"]


@settings(max_examples=20, deadline=None)
@given(rows=st.integers(1, 4), classes=st.integers(1, 12), data=st.data())
def test_topk_matches_a_stable_sort_with_ties_inf_and_nan(tmp_path_factory: pytest.TempPathFactory, rows: int,
                                                         classes: int, data: st.DataObject) -> None:
    k = data.draw(st.integers(1, classes))
    values = data.draw(st.lists(st.sampled_from([0.0, 1.0, -1.0, 2.5, np.inf, -np.inf, np.nan]),
                                min_size=rows * classes, max_size=rows * classes))
    x = {"s": np.array(values, dtype=np.float32).reshape(rows, classes)}
    module = _compile(tmp_path_factory.mktemp("topk"), "post", [("topk", {"k": k})], x, tag=f"k{k}")
    got, want = module.run(x), run_reference([("topk", {"k": k})], x)
    np.testing.assert_array_equal(got["indices"], want["indices"])
    np.testing.assert_array_equal(got["scores"], want["scores"])
