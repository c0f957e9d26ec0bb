"""infc_runtime.cpus: the affinity mask capped by the cgroup CPU quota, and the session threads taken from it."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from infc_runtime import cpus, pipeline
from infc_runtime.cpus import cpu_quota, usable_cpus
from infc_runtime.pipeline import make_session


@pytest.mark.parametrize(("files", "quota"), [
    ({"cpu.max": "max 100000\n"}, None),
    ({"cpu.max": "150000 100000\n"}, 2),
    ({"cpu.max": "50000 100000\n"}, 1),
    ({"cpu/cpu.cfs_quota_us": "300000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 3),
    ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
    ({"cpu.max": "garbage\n"}, None),
    ({}, None),
])
def test_the_cgroup_quota_is_read_from_v2_or_v1(tmp_path: Path, files: dict[str, str], quota: int | None) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert cpu_quota(tmp_path) == quota


def test_usable_cpus_is_the_affinity_mask_capped_by_the_quota(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpus, "affinity_cpus", lambda: 8)
    assert usable_cpus(tmp_path) == 8  # no quota
    (tmp_path / "cpu.max").write_text("200000 100000\n")
    assert usable_cpus(tmp_path) == 2
    monkeypatch.setattr(cpus, "affinity_cpus", lambda: 1)
    assert usable_cpus(tmp_path) == 1


def _model() -> bytes:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    return onnx.helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def test_a_session_left_to_choose_uses_the_cpus_this_process_has(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipeline.os, "cpu_count", lambda: 16)
    monkeypatch.setattr(pipeline, "usable_cpus", lambda: 3)  # e.g. taskset or a 3-CPU container quota
    assert make_session(_model(), {"intra_op_num_threads": 0}).get_session_options().intra_op_num_threads == 3
    # a number the spec set is kept
    assert make_session(_model(), {"intra_op_num_threads": 5}).get_session_options().intra_op_num_threads == 5
    # unrestricted: onnxruntime keeps its own default (0: the physical cores)
    monkeypatch.setattr(pipeline, "usable_cpus", lambda: 16)
    assert make_session(_model(), {"intra_op_num_threads": 0}).get_session_options().intra_op_num_threads == 0


def test_instances_split_the_threads_between_their_sessions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipeline.os, "cpu_count", lambda: 16)
    monkeypatch.setattr(pipeline, "usable_cpus", lambda: 8)

    def threads(settings: dict[str, int], instances: int) -> int:
        options = make_session(_model(), settings, instances=instances).get_session_options()
        return int(options.intra_op_num_threads)

    assert threads({"intra_op_num_threads": 0}, 2) == 4  # the CPUs this process has, halved
    assert threads({"intra_op_num_threads": 0}, 3) == 2
    assert threads({"intra_op_num_threads": 6}, 2) == 3  # what the spec set, halved
    assert threads({"intra_op_num_threads": 1}, 4) == 1  # never below one
    monkeypatch.setattr(pipeline, "usable_cpus", lambda: 16)
    assert threads({"intra_op_num_threads": 0}, 2) == 8  # the host's CPUs, not onnxruntime's default for one
