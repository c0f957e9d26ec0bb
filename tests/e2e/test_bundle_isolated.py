"""A bundle runs where the compiler is not installed: its own runtime, nothing else."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from examples import DIGITS_DIR

from infc_runtime.pipeline import Pipeline

SCRIPT = r"""
import json, sys
sys.modules["infc"] = None          # the compiler is not importable in this interpreter
sys.path.insert(0, sys.argv[1])     # the bundle's own infc_runtime comes first
try:
    import infc
except ImportError:
    pass
else:
    raise SystemExit("infc importable")
import numpy as np
import infc_runtime
from infc_runtime.pipeline import Pipeline
assert infc_runtime.__file__.startswith(sys.argv[1]), infc_runtime.__file__
images = np.load(sys.argv[2])["image"][:8]
out = Pipeline.load(sys.argv[1]).run({"image": images})
loaded = sorted(m for m, mod in sys.modules.items() if mod is not None and (m == "infc" or m.startswith("infc.")))
print(json.dumps({"labels": [[b.decode() for b in row] for row in out["labels"]],
                  "scores": out["scores"].tolist(), "compiler_modules": loaded}))
"""


def test_fresh_interpreter_without_the_compiler_runs_the_bundle(digits_bundle: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copied-bundle"
    shutil.copytree(digits_bundle, copy, ignore=shutil.ignore_patterns("__pycache__"))
    done = subprocess.run([sys.executable, "-I", "-c", SCRIPT, str(copy), str(DIGITS_DIR / "val.npz")],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["compiler_modules"] == []
    images = np.load(DIGITS_DIR / "val.npz")["image"][:8]
    expected = Pipeline.load(digits_bundle).run({"image": images})
    assert result["labels"] == [[b.decode() for b in row] for row in expected["labels"]]
    np.testing.assert_allclose(result["scores"], expected["scores"], rtol=1e-6)
