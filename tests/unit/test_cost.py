"""Cost per 1,000 requests: the spec's price, and the arithmetic from a measured throughput."""

from __future__ import annotations

import pytest

from infc.cost import PlanCost, price_of, usd
from infc.instances import INSTANCES, PRICES_AS_OF
from infc.spec.model import Deploy


def test_a_price_comes_from_the_spec_or_from_the_instance_table() -> None:
    assert price_of(Deploy()) is None
    own = price_of(Deploy(usd_per_hour=0.5, vcpus=4))
    assert own is not None and (own.usd_per_hour, own.vcpus, own.instance) == (0.5, 4, None)
    table = price_of(Deploy(instance="c6i.large"))
    assert table is not None and (table.usd_per_hour, table.vcpus) == (0.085, 2)
    assert PRICES_AS_OF in table.source and "c6i.large" in table.describe()


def test_the_instance_table_is_sane() -> None:
    assert len(INSTANCES) >= 20 and {"aws", "gcp", "azure"} == {i.cloud for i in INSTANCES.values()}
    assert any("GPU" in i.kind for i in INSTANCES.values())
    for row in INSTANCES.values():  # on-demand list prices: cents to a few dollars an hour per vCPU
        assert row.vcpus >= 1 and 0.01 < row.usd_per_hour / row.vcpus < 0.5, row


def test_cost_per_request_is_the_vcpu_seconds_at_the_price() -> None:
    plan = PlanCost("dynamic", "fresh process", 32, rows_per_s=20_000.0, vcpus=2.0,
                    usd_per_vcpu_second=0.085 / 2 / 3600)
    assert plan.vcpu_seconds_per_1000 == pytest.approx(0.1)  # 1,000 rows at 20,000 rows/s on 2 vCPUs
    assert plan.usd_per_1000_requests == pytest.approx(0.085 / 3600 * 1000 / 20_000)
    assert plan.usd_per_million_rows == pytest.approx(plan.usd_per_1000_requests * 1000)
    unpriced = PlanCost("fp32", "x", 32, 10_000.0, 2.0, None)
    assert unpriced.usd_per_1000_requests is None and unpriced.to_dict()["usd_per_1000000_rows"] is None


def test_small_amounts_read_plainly() -> None:
    assert [usd(None), usd(0.0), usd(0.0123), usd(1.18e-06), usd(12345.6)] == ["-", "0", "0.0123", "1.18e-06",
                                                                               "12,346"]
