"""The report's `## Cost`: every figure recomputed from the measurements the manifest records (no price in the
example spec's price, and none: vCPU-seconds only), the `--json` document's `cost`, and `infc diff`'s cost rows."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from infc.build import BuildOutcome
from infc.cost import usd
from infc.diff import compare, load_side, render_markdown
from infc.report import build_report
from infc.results import build_document, results_schema


def cost_table(report: str) -> list[dict[str, str]]:
    """The rows of the report's `## Cost` table, by column name."""
    section = report.split("## Cost", 1)[1].split("\n## ", 1)[0]
    lines = [ln for ln in section.splitlines() if ln.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(header, (c.strip() for c in ln.strip("|").split("|")), strict=True)) for ln in lines[2:]]


def measured(manifest: dict[str, Any]) -> tuple[float, list[float], float]:
    """From the manifest: the gate's rows/s at the served batch size, the candidates' rows/s in the search (the
    shipped plan's, then fp32's), and the vCPUs the measured session used."""
    batch = manifest["serving"]["max_batch_size"]
    gate = next(b["rows_per_s"] for b in manifest["measurements"]["results"]["latency"]["batches"]
                if b["batch"] == batch)
    by_name = {c["name"]: c for c in manifest["measurements"]["candidates"]}
    chosen = manifest["choice"]["candidate"]
    side = [by_name[name]["latency"]["throughput_rps"] for name in (chosen, "fp32")]
    return gate, side, manifest["measurements"]["cost"]["vcpus"]


def test_cost_lines_are_the_measured_throughput_at_the_batch_size(digits_build: BuildOutcome) -> None:
    assert digits_build.path is not None
    manifest = json.loads((digits_build.path / "manifest.json").read_text())
    report = (digits_build.path / "report.md").read_text()
    assert "per 1,000 requests" in report and "the spec's deploy.usd_per_hour" in report
    gate, side, vcpus = measured(manifest)
    rows = cost_table(report)
    chosen = manifest["choice"]["candidate"]
    assert rows[0]["plan"] == f"{chosen} (shipped)" and rows[0]["batch"] == str(manifest["serving"]["max_batch_size"])
    assert rows[0]["rows/s"] == f"{gate:.0f}"
    assert rows[0]["vCPU-s per 1,000 requests"] == f"{1000 * vcpus / gate:.4g}"
    deploy = digits_build.spec.deploy  # the example's price: USD per hour for its vCPUs
    assert deploy.usd_per_hour and deploy.vcpus
    assert rows[0]["USD per 1,000 requests"] == usd(1000 * vcpus / gate * deploy.usd_per_hour / deploy.vcpus / 3600)
    assert rows[1]["rows/s"] == f"{side[0]:.0f}"  # the shipped plan, side by side with fp32
    if chosen == "fp32":
        assert len(rows) == 2 and "no quantization saving" in report
    else:
        assert rows[2]["plan"] == "fp32" and rows[2]["rows/s"] == f"{side[1]:.0f}"
        assert f"**{abs(1 - side[1] / side[0]):.0%}** of the cost per request" in report


def test_with_a_price_the_usd_lines_follow_from_the_same_figures(digits_build: BuildOutcome) -> None:
    spec = digits_build.spec
    priced = replace(digits_build, spec=replace(spec, deploy=replace(spec.deploy, instance="c6i.large",
                                                                     usd_per_hour=None, vcpus=None)))
    priced = replace(priced, report=build_report(priced))
    per_vcpu_second = 0.085 / 2 / 3600  # c6i.large in the table: USD 0.085 an hour, 2 vCPUs
    for row in cost_table(priced.report):  # USD printed to 3 significant digits, vCPU-s to 4: within 0.6%
        vcpu_s = float(row["vCPU-s per 1,000 requests"])
        assert float(row["USD per 1,000 requests"]) == pytest.approx(vcpu_s * per_vcpu_second, rel=6e-3)
        assert float(row["USD per 1,000,000 rows"]) == pytest.approx(1000 * vcpu_s * per_vcpu_second, rel=6e-3)
    assert "c6i.large" in priced.report and "2024-06" in priced.report
    unpriced = replace(digits_build, spec=replace(spec, deploy=replace(spec.deploy, usd_per_hour=None, vcpus=None)))
    unpriced_report = build_report(unpriced)
    assert "No price given" in unpriced_report
    assert {row["USD per 1,000 requests"] for row in cost_table(unpriced_report)} == {"-"}
    doc = build_document(spec.file, priced, None)
    jsonschema.validate(doc, results_schema())
    shipped = doc["cost"]["shipped"]
    assert shipped["usd_per_1000_requests"] == pytest.approx(
        1000 * shipped["vcpus"] / shipped["rows_per_s"] * per_vcpu_second)
    assert usd(shipped["usd_per_1000_requests"]) == cost_table(priced.report)[0]["USD per 1,000 requests"]


def test_diff_shows_the_cost_change_between_two_bundles(digits_bundle: Path, tmp_path: Path) -> None:
    slower = shutil.copytree(digits_bundle, tmp_path / "slower")
    manifest = json.loads((slower / "manifest.json").read_text())
    shipped = manifest["measurements"]["cost"]["shipped"]
    shipped["rows_per_s"] /= 2
    shipped["vcpu_seconds_per_1000_requests"] *= 2
    (slower / "manifest.json").write_text(json.dumps(manifest))
    done = subprocess.run([sys.executable, "-m", "infc", "diff", str(digits_bundle), str(slower), "--json"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    jsonschema.validate(doc, results_schema())
    rows = {r["item"]: r for r in doc["rows"] if r["section"] == "cost"}
    assert rows["vCPU-s per 1,000 requests"]["change"] == "worse"
    assert rows["rows/s at max_batch_size"]["change"] == "worse"
    old, new = load_side(digits_bundle), load_side(slower)  # the markdown table, from the same sides
    assert "| cost | vCPU-s per 1,000 requests |" in render_markdown(old, new, compare(old, new))
