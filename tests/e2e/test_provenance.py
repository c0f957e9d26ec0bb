"""A bundle's provenance (manifest.provenance) is shown in its report.md and compared by `infc diff`."""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
import sys
from pathlib import Path

import jsonschema
from examples import DIGITS_DIR, DIGITS_SPEC

from infc import __version__
from infc.build import BuildOutcome
from infc.results import results_schema


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_report_shows_what_the_bundle_was_built_from_and_on(digits_build: BuildOutcome,
                                                                 digits_bundle: Path) -> None:
    report = (digits_bundle / "report.md").read_text()
    assert (f"| built from | spec `{sha256(DIGITS_SPEC)[:16]}`, model `{sha256(DIGITS_DIR / 'digits.onnx')[:16]}`, "
            "lock none (sha256) |") in report
    assert (f"| built on | {platform.system()} {platform.machine()} ({digits_build.plan.host_isa}), "
            f"infc {__version__} |") in report


def test_infc_diff_shows_provenance_changes(digits_bundle: Path, cuda_bundle: Path) -> None:
    # the same model built from another spec (target: cuda) on the same host by the same infc, without a lock
    diff = [sys.executable, "-m", "infc", "diff", str(digits_bundle), str(cuda_bundle)]
    done = subprocess.run(diff, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    spec = cuda_bundle.parents[1] / "digits.yaml"
    assert f"| provenance | spec sha256 | {sha256(DIGITS_SPEC)[:12]} | {sha256(spec)[:12]} | changed |" in done.stdout
    for unchanged in ("source model sha256", "lock sha256", "infc version", "build host"):
        assert f"| provenance | {unchanged} |" not in done.stdout
    doc = json.loads(subprocess.run([*diff, "--json"], capture_output=True, text=True, timeout=300).stdout)
    jsonschema.validate(doc, results_schema())
    assert doc["new"]["provenance"]["spec_sha256"] == sha256(spec)
    assert doc["old"]["provenance"]["model_sha256"] == doc["new"]["provenance"]["model_sha256"]
    changed = {r["item"] for r in doc["rows"] if r["section"] == "provenance" and r["change"] != "same"}
    assert changed == {"spec sha256"}
