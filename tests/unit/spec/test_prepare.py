"""Build-time parameters from the calibration data: `standardize: {from: calibration}`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from infc.errors import SpecErrors, format_path
from infc.kernels.registry import get
from infc.spec import load_spec, prepare_spec

TABULAR = Path(__file__).resolve().parents[3] / "specs" / "tabular"


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    for name in ("tabular.onnx", "tabular.yaml", "calib.npz", "val.npz"):
        shutil.copy(TABULAR / name, tmp_path / name)
    return tmp_path


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def test_standardize_statistics_skip_nan_and_inf() -> None:
    prepare = get("standardize").prepare
    assert prepare is not None
    x = np.array([[1.0, np.nan, 5.0, np.nan],
                  [3.0, 2.0, 5.0, np.inf],
                  [np.inf, 4.0, 5.0, np.nan]], np.float32)
    got = prepare({"from": "calibration", "columns": None}, x)
    assert got["mean"] == [2.0, 3.0, 5.0, 0.0]
    assert got["std"] == [1.0, 1.0, 1.0, 1.0], "constant and all-missing columns are centred, not scaled by 0"
    sub = prepare({"from": "calibration", "columns": [1]}, x)
    assert sub["mean"] == [3.0] and sub["std"] == [1.0]


def test_the_tabular_example_gets_mean_and_std_of_its_calibration_rows(workdir: Path) -> None:
    checked = load_spec(workdir / "tabular.yaml")
    spec = checked.spec
    assert dict(spec.preprocess[1].params) == {"from": "calibration"}
    done, records = prepare_spec(checked)
    prepared = done.spec
    rows = np.load(workdir / "calib.npz")["rows"]
    names = spec.preprocess[0].params["fields"]
    x = np.array([[json.loads(r)[n] for n in names] for r in rows], np.float32).astype(np.float64)
    params = prepared.preprocess[1].params
    assert "from" not in params
    np.testing.assert_allclose(params["mean"], x.mean(axis=0), rtol=1e-7)
    np.testing.assert_allclose(params["std"], x.std(axis=0), rtol=1e-7)
    assert prepared.data["preprocess"][1] == {"standardize": dict(params)}, "the resolved spec says what it uses"
    assert records == [{"step": "preprocess[1]", "name": "standardize", "from": "calibration", "rows": len(rows),
                        "params": dict(params)}]
    assert done.pre.steps[1].params == dict(params), "the pre dataflow is resolved with them"
    assert prepare_spec(done) == (done, []), "nothing left to prepare"


def test_from_calibration_without_calibration_data_is_a_located_error(workdir: Path) -> None:
    spec = workdir / "tabular.yaml"
    _edit(spec, "  quantize: auto\n  calibration: calib.npz\n", "  quantize: dynamic\n")
    with pytest.raises(SpecErrors) as info:
        load_spec(spec)
    (error,) = info.value.errors
    assert format_path(error.path) == "preprocess[1].standardize.from"
    assert (error.line, error.col) == (21, 25)  # the value `calibration`
    assert "needs optimize.calibration" in error.message


def test_a_bad_calibration_row_is_a_located_error(workdir: Path) -> None:
    rows = np.load(workdir / "calib.npz")["rows"]
    row = json.loads(rows[3])
    row["mean area"] = "large"
    rows = rows.astype(object)
    rows[3] = json.dumps(row).encode()
    np.savez(workdir / "calib.npz", rows=rows.astype(bytes))
    checked = load_spec(workdir / "tabular.yaml")
    with pytest.raises(SpecErrors) as info:
        prepare_spec(checked)
    message = str(info.value)
    assert "preprocess[1].standardize.from: cannot compute standardize from the calibration data" in message
    assert "rows[3]: field 'mean area' must be a number" in message
