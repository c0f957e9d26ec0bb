"""A bundle built for CUDA never runs silently on CPU: the rule, and a real session on this (CPU) host."""

from __future__ import annotations

from pathlib import Path

import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from infc_runtime import providers
from infc_runtime.pipeline import Pipeline, make_session
from infc_runtime.providers import ALLOW_CPU_FALLBACK_ENV, CPU, ProviderError, allow_cpu_fallback_env, check

CUDA = "CUDAExecutionProvider"
BUILT_FOR_CUDA = {"providers": [CUDA, CPU]}


def _model(path: Path) -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_what_a_bundle_asks_for_and_does_without() -> None:
    assert providers.requested(BUILT_FOR_CUDA) == [CUDA, CPU]
    assert providers.requested({}) == providers.requested(None) == providers.requested({"providers": []}) == [CPU]
    assert providers.missing([CUDA, CPU], [CPU]) == (CUDA,)
    assert providers.missing([CPU], [CPU]) == () and providers.missing([CUDA, CPU], [CUDA, CPU]) == ()


def test_a_provider_onnxruntime_does_not_offer_is_refused_with_the_way_out() -> None:
    with pytest.raises(ProviderError) as refused:
        check([CUDA, CPU], ["AzureExecutionProvider", CPU], None, allow_cpu_fallback=False)
    message = str(refused.value)
    assert f"built for {CUDA}" in message
    assert "offers AzureExecutionProvider, CPUExecutionProvider" in message
    assert "onnxruntime-gpu" in message and "--allow-cpu-fallback" in message
    assert f"{ALLOW_CPU_FALLBACK_ENV}=1" in message
    assert check([CUDA, CPU], [CPU], None, allow_cpu_fallback=True) == (CUDA,)
    assert check([CPU], [CPU], None, allow_cpu_fallback=False) == ()


def test_a_provider_the_session_dropped_is_refused_too() -> None:
    # onnxruntime-gpu lists CUDA, then makes a CPU session when the CUDA libraries do not load
    with pytest.raises(ProviderError, match="the session did not load it and runs on CPUExecutionProvider"):
        check([CUDA, CPU], [CUDA, CPU], [CPU], allow_cpu_fallback=False)
    assert check([CUDA, CPU], [CUDA, CPU], [CUDA, CPU], allow_cpu_fallback=False) == ()


@pytest.mark.parametrize(("value", "allowed"), [("1", True), ("true", True), ("YES", True), ("0", False),
                                                ("", False), ("off", False)])
def test_the_environment_variable(value: str, allowed: bool) -> None:
    assert allow_cpu_fallback_env({ALLOW_CPU_FALLBACK_ENV: value}) is allowed
    assert allow_cpu_fallback_env({}) is False


def test_an_unclear_environment_value_is_an_error_naming_the_variable() -> None:
    with pytest.raises(ValueError, match=f"{ALLOW_CPU_FALLBACK_ENV}='maybe': expected 1"):
        allow_cpu_fallback_env({ALLOW_CPU_FALLBACK_ENV: "maybe"})


@pytest.mark.skipif(CUDA in ort.get_available_providers(), reason="this host's onnxruntime offers CUDA")
def test_a_session_for_cuda_on_this_host_is_refused_unless_fallback_is_allowed(tmp_path: Path) -> None:
    model = _model(tmp_path / "relu.onnx")
    with pytest.raises(ProviderError, match=CUDA):
        make_session(model, dict(BUILT_FOR_CUDA))
    session = make_session(model, dict(BUILT_FOR_CUDA), allow_cpu_fallback=True)
    assert session.get_providers() == [CPU]
    pipeline = Pipeline(name="m", version="1", inputs=[], outputs=[], session=session, pre=dict, post=dict,
                        requested_providers=[CUDA, CPU])
    assert (pipeline.providers, pipeline.cpu_fallback) == ([CPU], (CUDA,))
    plain = Pipeline(name="m", version="1", inputs=[], outputs=[], session=make_session(model), pre=dict, post=dict)
    assert (plain.providers, plain.cpu_fallback) == ([CPU], ())
