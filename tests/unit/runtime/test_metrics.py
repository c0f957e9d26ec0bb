"""Prometheus metrics: own registry, names, units and buckets."""

from __future__ import annotations

import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families

from infc_runtime.metrics import Metrics, batch_buckets, render_all


@pytest.mark.parametrize(
    ("max_batch_size", "buckets"),
    [(1, (1,)), (8, (1, 2, 4, 8)), (12, (1, 2, 4, 8, 12)), (32, (1, 2, 4, 8, 16, 32))],
)
def test_batch_buckets_are_powers_of_two_up_to_the_maximum(max_batch_size: int, buckets: tuple[int, ...]) -> None:
    assert batch_buckets(max_batch_size) == buckets


def test_metrics_live_in_their_own_registry() -> None:
    a = Metrics("a", max_batch_size=4)
    b = Metrics("b", max_batch_size=4)  # a second instance must not clash
    a.observe_request(200, 0.01)
    assert a.registry is not prometheus_client.REGISTRY
    assert prometheus_client.REGISTRY.get_sample_value("infc_requests_total", {"model": "a", "status": "200"}) is None
    assert b.registry.get_sample_value("infc_requests_total", {"model": "a", "status": "200"}) is None


def test_rendered_text_has_every_metric() -> None:
    m = Metrics("digits", max_batch_size=8)
    m.request_started()
    m.request_started()
    m.request_finished()
    m.observe_request(200, 0.004)
    m.observe_request(429, 0.0001)
    for stage in ("queue", "pre", "infer", "post"):
        m.observe_stage(stage, 0.001)
    m.observe_batch(3)
    m.set_queue_depth(5)

    families = {f.name: f for f in text_string_to_metric_families(m.render().decode())}
    assert {
        "infc_requests",
        "infc_request_duration_seconds",
        "infc_stage_duration_seconds",
        "infc_batch_size",
        "infc_queue_depth",
        "infc_inflight_requests",
    } <= set(families)
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
    assert samples[("infc_requests_total", (("model", "digits"), ("status", "429")))] == 1
    assert samples[("infc_inflight_requests", (("model", "digits"),))] == 1
    assert samples[("infc_queue_depth", (("model", "digits"),))] == 5
    assert samples[("infc_batch_size_bucket", (("le", "2.0"), ("model", "digits")))] == 0
    assert samples[("infc_batch_size_bucket", (("le", "4.0"), ("model", "digits")))] == 1
    assert samples[("infc_stage_duration_seconds_count", (("model", "digits"), ("stage", "infer")))] == 1
    assert families["infc_request_duration_seconds"].type == "histogram"


def test_disconnects_and_bundle_verification() -> None:
    m = Metrics("digits", max_batch_size=8)

    def value(name: str) -> float | None:
        return m.registry.get_sample_value(name, {"model": "digits"})

    assert value("infc_client_disconnects_total") == 0
    assert value("infc_bundle_verified") == 0, "not verified until the serve command says so"
    m.client_disconnected()
    m.client_disconnected()
    m.set_bundle_verified(True)
    assert value("infc_client_disconnects_total") == 2
    assert value("infc_bundle_verified") == 1
    m.set_bundle_verified(False)
    assert value("infc_bundle_verified") == 0
    assert m.registry.get_sample_value("infc_requests_total", {"model": "digits", "status": "500"}) is None


def test_execution_providers_and_cpu_fallback() -> None:
    m = Metrics("digits", max_batch_size=8)
    assert m.registry.get_sample_value("infc_cpu_fallback", {"model": "digits"}) == 0
    m.set_providers(["CPUExecutionProvider"], cpu_fallback=True)
    assert m.registry.get_sample_value("infc_cpu_fallback", {"model": "digits"}) == 1
    assert m.registry.get_sample_value("infc_execution_provider",
                                       {"model": "digits", "provider": "CPUExecutionProvider"}) == 1
    assert m.registry.get_sample_value("infc_execution_provider",
                                       {"model": "digits", "provider": "CUDAExecutionProvider"}) is None


def test_version_label_stats_and_several_models_in_one_exposition() -> None:
    one, two = Metrics("m", version="1", max_batch_size=4), Metrics("m", version="2", max_batch_size=4)
    one.observe_request(200, 0.5)
    one.observe_request(429, 0.25)
    one.observe_stage("infer", 0.125)
    one.observe_batch(3)
    two.observe_request(200, 1.0)
    stats = one.stats()
    assert (stats["name"], stats["version"], stats["inference_count"], stats["execution_count"]) == ("m", "1", 3, 1)
    assert stats["inference_stats"]["success"] == {"count": 1, "ns": 500_000_000}
    assert stats["inference_stats"]["fail"] == {"count": 1, "ns": 250_000_000}
    assert stats["inference_stats"]["compute_infer"] == {"count": 1, "ns": 125_000_000}
    assert stats["last_inference"] > 0
    text = render_all([one, two]).decode()
    assert text.count("# TYPE infc_requests_total counter") == 1
    families = {f.name: f for f in text_string_to_metric_families(text)}
    requests = {(s.labels["version"], s.labels["status"]): s.value for s in families["infc_requests"].samples
                if s.name == "infc_requests_total"}
    assert requests == {("1", "200"): 1, ("1", "429"): 1, ("2", "200"): 1}
