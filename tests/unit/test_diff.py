"""`infc diff`'s rows: which change is better, worse or only changed, and how the table reads."""

from __future__ import annotations

from typing import Any

from infc.diff import Row, Side, compare, render_markdown


def _p(name: str, value: float, low: float | None, high: float | None, bound: float | None = None) -> dict[str, Any]:
    return {"name": name, "value_ms": value, "low_ms": low, "high_ms": high, "bound_ms": bound,
            "verdict": None if bound is None else "pass"}


def _side(**kw: Any) -> Side:
    base: dict[str, Any] = {"label": "x", "kind": "bundle", "spec": {"name": "m", "optimize": {"quantize": "none"}},
                            "chosen": "fp32", "ops": {"MatMul": 3}, "quantized": {}, "fused": {}, "excluded": [],
                            "bundle_bytes": 400_000, "model_bytes": 200_000,
                            "accuracy": [{"metric": "max_abs_error", "params": {}, "value": 0.01, "bound": 0.1,
                                          "op": "<=", "passed": True}],
                            "latency": {"p99": _p("p99", 1.0, 0.9, 1.1, 10.0)},
                            "serving": {"max_batch_size": 32, "max_queue_delay_ms": 1.0}}
    base.update(kw)
    return Side(**base)


def _rows(old: Side, new: Side) -> dict[tuple[str, str], Row]:
    return {(r.section, r.item): r for r in compare(old, new)}


def test_identical_sides_have_no_changes() -> None:
    rows = compare(_side(), _side())
    assert {r.change for r in rows} == {"same"}
    assert "No differences." in render_markdown(_side(), _side(), rows)


def test_latency_is_better_or_worse_only_when_the_intervals_do_not_overlap() -> None:
    faster = _side(latency={"p99": _p("p99", 0.5, 0.45, 0.55, 10.0)})
    noisy = _side(latency={"p99": _p("p99", 0.95, 0.5, 1.5, 10.0)})
    unbounded = _side(latency={"p99": _p("p99", 0.5, 0.4, None, 10.0)})
    assert _rows(_side(), faster)["latency", "p99 (budget 10 ms)"].change == "better"
    assert _rows(faster, _side())["latency", "p99 (budget 10 ms)"].change == "worse"
    assert _rows(_side(), noisy)["latency", "p99 (budget 10 ms)"].change == "neutral"
    assert _rows(_side(), unbounded)["latency", "p99 (budget 10 ms)"].change == "neutral"


def test_accuracy_direction_follows_the_budget_and_sizes_need_one_percent() -> None:
    worse = _side(accuracy=[{"metric": "max_abs_error", "params": {}, "value": 0.05, "bound": 0.1, "op": "<=",
                             "passed": True}], model_bytes=100_000, bundle_bytes=401_000)
    rows = _rows(_side(), worse)
    assert rows["accuracy", "max_abs_error (budget <= 0.1)"].change == "worse"  # a larger error
    assert rows["size", "model"].change == "better" and rows["size", "bundle"].change == "neutral"
    higher = [{"metric": "top1_agreement", "params": {}, "value": v, "bound": 0.99, "op": ">=", "passed": True}
              for v in (0.995, 1.0)]
    up = _rows(_side(accuracy=[higher[0]]), _side(accuracy=[higher[1]]))
    assert up["accuracy", "top1_agreement (budget >= 0.99)"].change == "better"


def test_the_table_shows_spec_keys_and_ops_that_changed() -> None:
    new = _side(spec={"name": "m", "optimize": {"quantize": "dynamic"}}, chosen="dynamic",
                ops={"MatMulInteger": 3, "DynamicQuantizeLinear": 3}, quantized={"MatMulInteger": 3})
    text = render_markdown(_side(label="base"), _side(**{**vars(new), "label": "head"}), compare(_side(), new))
    assert "`base` -> `head`:" in text
    assert "| spec | `optimize.quantize` | none | dynamic | changed |" in text
    assert "| model | ops: MatMul | 3 | 0 | changed |" in text
    assert "| model | ops: MatMulInteger | 0 | 3 | changed |" in text
    assert "| serving |" not in text  # unchanged rows are left out unless asked
    assert "| serving |" in render_markdown(_side(), new, compare(_side(), new), all_rows=True)


def _provenance(**kw: Any) -> dict[str, Any]:
    return {"spec_sha256": "a" * 64, "model_sha256": "b" * 64, "lock_sha256": None, "infc_version": "0.1.0",
            "build_host": {"system": "Linux", "machine": "x86_64", "isa": "avx2"}, **kw}


def test_provenance_changes_are_rows() -> None:
    old = _side(provenance=_provenance())
    new = _side(provenance=_provenance(lock_sha256="c" * 64, infc_version="0.2.0",
                                       build_host={"system": "Linux", "machine": "aarch64", "isa": "arm64"}))
    rows = _rows(old, new)
    assert rows["provenance", "lock sha256"] == Row("provenance", "lock sha256", "none", "c" * 12, "neutral")
    assert rows["provenance", "infc version"].new == "0.2.0"
    assert rows["provenance", "build host"] == Row("provenance", "build host", "Linux x86_64 (avx2)",
                                                   "Linux aarch64 (arm64)", "neutral")
    assert rows["provenance", "spec sha256"].change == rows["provenance", "source model sha256"].change == "same"
    text = render_markdown(old, new, compare(old, new))
    assert "| provenance | build host | Linux x86_64 (avx2) | Linux aarch64 (arm64) | changed |" in text
    assert "| provenance | spec sha256 |" not in text
    assert not [r for r in compare(_side(), _side()) if r.section == "provenance"], "no rows without provenance"
    lock = _rows(_side(kind="lock"), new)["provenance", "infc version"]
    assert (lock.old, lock.new, lock.change) == ("-", "0.2.0", "neutral")


def _cost(usd: float | None, vcpu_s: float, rows_per_s: float, saving: float | None = None) -> dict[str, Any]:
    return {"price": None if usd is None else {"usd_per_hour": 0.085, "vcpus": 2, "instance": "c6i.large",
                                               "source": "table"},
            "shipped": {"usd_per_1000_requests": usd, "vcpu_seconds_per_1000_requests": vcpu_s,
                        "rows_per_s": rows_per_s},
            "saving": saving}


def test_the_cost_change_is_a_row_better_or_worse_past_ten_percent() -> None:
    rows = _rows(_side(cost=_cost(2e-6, 0.2, 10_000)), _side(cost=_cost(1e-6, 0.1, 20_000, 0.5)))
    assert rows["cost", "USD per 1,000 requests"] == Row("cost", "USD per 1,000 requests", "2e-06", "1e-06", "better")
    assert rows["cost", "vCPU-s per 1,000 requests"].change == "better"
    assert rows["cost", "rows/s at max_batch_size"].change == "better"
    assert rows["cost", "saving against fp32"].new == "50%"
    noise = _rows(_side(cost=_cost(2e-6, 0.2, 10_000)), _side(cost=_cost(2.1e-6, 0.21, 9_600)))
    assert noise["cost", "USD per 1,000 requests"].change == "neutral"
    worse = _rows(_side(cost=_cost(None, 0.1, 20_000)), _side(cost=_cost(None, 0.2, 10_000)))
    assert worse["cost", "vCPU-s per 1,000 requests"].change == "worse"
    assert ("cost", "USD per 1,000 requests") not in worse  # no price on either side: no USD row
    assert all(r.section != "cost" for r in compare(_side(), _side()))  # sides that predate it: no cost rows
