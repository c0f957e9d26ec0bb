"""The plan lock: what invalidates it (and the message saying so), where it is found, how it is written and read."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from examples import digits_copy

from infc.lock import Choices, Lock, LockError, changes, current_inputs, find_lock, read_lock, write_lock
from infc.spec import load_spec

TARGET = {"hardware": "x86", "isa": "avx2"}


def _lock(spec_file: Path) -> Lock:
    inputs = current_inputs(load_spec(spec_file).spec, TARGET)
    choices = Choices("dynamic+fp32x1", "dynamic", ("matmul0",), {"max_batch_size": 64, "max_queue_delay_ms": 1.0})
    return Lock(spec_file.name, inputs, choices, {"candidates": []})


def test_unchanged_inputs_hash_the_same_and_comments_do_not_count(tmp_path: Path) -> None:
    spec = digits_copy(tmp_path)
    before = current_inputs(load_spec(spec).spec, TARGET)
    spec.write_text("# a comment that changes no decision\n" + spec.read_text().replace("version: 1.0.0",
                                                                                          "version: 1.0.1"))
    assert changes(before, current_inputs(load_spec(spec).spec, TARGET)) == []


def test_a_price_and_a_response_cache_change_no_locked_decision(tmp_path: Path) -> None:
    spec = digits_copy(tmp_path)
    before = current_inputs(load_spec(spec).spec, TARGET)
    spec.write_text(spec.read_text().replace("  timeout_ms: 1000", "  timeout_ms: 1000\n  cache: {max_entries: 64}")
                    + "deploy: {instance: c6i.large}\n")
    assert load_spec(spec).spec.serving.cache is not None  # the edit took
    assert changes(before, current_inputs(load_spec(spec).spec, TARGET)) == []


def test_each_changed_input_is_named(tmp_path: Path) -> None:
    spec = digits_copy(tmp_path)
    before = current_inputs(load_spec(spec).spec, TARGET)
    spec.write_text(spec.read_text().replace("k: 3", "k: 2").replace("p99: 10", "p99: 8"))
    with np.load(tmp_path / "calib.npz") as data:
        arrays = {k: data[k][:-1] for k in data.files}
    np.savez(tmp_path / "calib.npz", **arrays)
    after = current_inputs(load_spec(spec).spec, {"hardware": "x86", "isa": "avx512_vnni"})
    after.versions["onnxruntime"] = "0.0.1"
    found = changes(before, after)
    assert found[0] == "spec changed (budget.latency_ms.p99, postprocess[1].topk.k)"
    assert found[1].startswith("optimize.calibration file changed (sha256 ")
    assert found[2] == 'target changed ({"hardware":"x86","isa":"avx2"} -> {"hardware":"x86","isa":"avx512_vnni"})'
    assert found[3].startswith("onnxruntime ") and found[3].endswith(" -> 0.0.1")
    assert len(found) == 4


def test_a_lock_round_trips_sorted_and_atomic(tmp_path: Path) -> None:
    spec = digits_copy(tmp_path)
    lock = _lock(spec)
    path = tmp_path / "digits.lock"
    write_lock(path, lock)
    text = path.read_text()
    assert text.endswith("}\n") and json.loads(text)["lock_version"] == 1
    assert list(json.loads(text)) == sorted(json.loads(text)), "keys sorted: a stable diff in review"
    again = read_lock(path)
    assert again.choices == lock.choices and changes(again.inputs, lock.inputs) == []
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".digits.lock")] == []  # no temp file left


@pytest.mark.parametrize("content, says", [
    (b"{not json", "not a valid infc lock"),
    (b'{"lock_version": 99}', "lock_version 99"),
    (b'{"lock_version": 1}', "missing key"),
    (b"[1, 2]", "not a valid infc lock"),
    (b"x" * (5 << 20), "larger than 4 MiB"),
])
def test_a_broken_lock_is_a_clear_input_error(tmp_path: Path, content: bytes, says: str) -> None:
    path = tmp_path / "digits.lock"
    path.write_bytes(content)
    with pytest.raises(LockError) as info:
        read_lock(path)
    assert says in str(info.value) and info.value.exit_code == 2


def test_find_lock_prefers_the_specs_own_then_an_infc_lock_naming_it(tmp_path: Path) -> None:
    spec = digits_copy(tmp_path)
    assert find_lock(spec) == tmp_path / "digits.lock"  # none yet: where a new one goes
    write_lock(tmp_path / "infc.lock", _lock(spec))
    assert find_lock(spec) == tmp_path / "infc.lock"
    other = digits_copy(tmp_path, name="other.yaml")
    assert find_lock(other) == tmp_path / "other.lock", "an infc.lock of another spec is not this spec's"
    write_lock(tmp_path / "digits.lock", _lock(spec))
    assert find_lock(spec) == tmp_path / "digits.lock"


@pytest.mark.parametrize("lock_file", sorted((Path(__file__).resolve().parents[2] / "specs").glob("*/*.lock")),
                         ids=lambda p: p.name)
def test_every_shipped_lock_matches_its_spec_and_files(lock_file: Path) -> None:
    """A change to the spec schema's defaults (a new key) or to an example invalidates its committed lock:
    `infc build --locked` then refuses it. Rebuild the example (`infc build SPEC`) and commit the new lock."""
    spec = lock_file.with_suffix(".yaml")
    lock = read_lock(lock_file)
    now = current_inputs(load_spec(spec).spec, lock.inputs.target)
    assert lock.inputs.spec == now.spec and lock.inputs.files == now.files, changes(lock.inputs, now)
