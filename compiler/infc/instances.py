"""A small table of common cloud instance types: vCPUs and on-demand price, for `deploy: {instance: NAME}`.

The cost section of a build report (`infc.cost`) needs a price per hour and the
vCPUs it buys. A spec names its own price (`deploy: {usd_per_hour: 0.085,
vcpus: 2}`) or one of the instances below.

Source and date: the providers' public on-demand price lists, Linux, no
reservation or discount, in one region each (AWS us-east-1
https://aws.amazon.com/ec2/pricing/on-demand/, Google Cloud us-central1
https://cloud.google.com/compute/vm-instance-pricing, Azure East US
https://azure.microsoft.com/pricing/details/virtual-machines/linux/), as listed
in June 2024 (`PRICES_AS_OF`). They were transcribed, not fetched: infc never
reaches the network to price a build, and prices change; for a figure to rely
on, give your own `usd_per_hour` (with `vcpus`).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["INSTANCES", "PRICES_AS_OF", "PRICES_SOURCE", "Instance"]

PRICES_AS_OF = "2024-06"
PRICES_SOURCE = ("on-demand list prices, Linux: AWS us-east-1, Google Cloud us-central1, Azure East US "
                 f"(as listed {PRICES_AS_OF}; see infc/instances.py)")


@dataclass(frozen=True)
class Instance:
    """One instance type: who sells it, its vCPUs, its on-demand price, and what it is."""

    name: str
    cloud: str
    vcpus: int
    usd_per_hour: float
    kind: str


def _table(*rows: tuple[str, str, int, float, str]) -> dict[str, Instance]:
    return {name: Instance(name, cloud, vcpus, price, kind) for name, cloud, vcpus, price, kind in rows}


INSTANCES = _table(
    # AWS EC2, us-east-1
    ("c6i.large", "aws", 2, 0.085, "compute, x86 (Intel Ice Lake)"),
    ("c6i.xlarge", "aws", 4, 0.17, "compute, x86 (Intel Ice Lake)"),
    ("c6i.2xlarge", "aws", 8, 0.34, "compute, x86 (Intel Ice Lake)"),
    ("c6i.4xlarge", "aws", 16, 0.68, "compute, x86 (Intel Ice Lake)"),
    ("m6i.large", "aws", 2, 0.096, "general purpose, x86 (Intel Ice Lake)"),
    ("m6i.xlarge", "aws", 4, 0.192, "general purpose, x86 (Intel Ice Lake)"),
    ("m6i.2xlarge", "aws", 8, 0.384, "general purpose, x86 (Intel Ice Lake)"),
    ("c7g.large", "aws", 2, 0.0725, "compute, arm (Graviton3)"),
    ("c7g.xlarge", "aws", 4, 0.145, "compute, arm (Graviton3)"),
    ("c7g.2xlarge", "aws", 8, 0.29, "compute, arm (Graviton3)"),
    ("m7g.large", "aws", 2, 0.0816, "general purpose, arm (Graviton3)"),
    ("m7g.xlarge", "aws", 4, 0.1632, "general purpose, arm (Graviton3)"),
    ("g4dn.xlarge", "aws", 4, 0.526, "GPU: 1 NVIDIA T4"),
    ("g5.xlarge", "aws", 4, 1.006, "GPU: 1 NVIDIA A10G"),
    # Google Cloud Compute Engine, us-central1
    ("e2-standard-2", "gcp", 2, 0.067006, "general purpose, x86"),
    ("e2-standard-4", "gcp", 4, 0.134012, "general purpose, x86"),
    ("n2-standard-2", "gcp", 2, 0.097118, "general purpose, x86 (Intel)"),
    ("n2-standard-4", "gcp", 4, 0.194236, "general purpose, x86 (Intel)"),
    ("n2-standard-8", "gcp", 8, 0.388472, "general purpose, x86 (Intel)"),
    ("c2-standard-4", "gcp", 4, 0.2088, "compute, x86 (Intel Cascade Lake)"),
    ("c2-standard-8", "gcp", 8, 0.4176, "compute, x86 (Intel Cascade Lake)"),
    ("t2a-standard-2", "gcp", 2, 0.077, "general purpose, arm (Ampere Altra)"),
    ("t2a-standard-4", "gcp", 4, 0.154, "general purpose, arm (Ampere Altra)"),
    # Microsoft Azure, East US
    ("Standard_D2s_v5", "azure", 2, 0.096, "general purpose, x86"),
    ("Standard_D4s_v5", "azure", 4, 0.192, "general purpose, x86"),
    ("Standard_D8s_v5", "azure", 8, 0.384, "general purpose, x86"),
    ("Standard_F2s_v2", "azure", 2, 0.0846, "compute, x86"),
    ("Standard_F4s_v2", "azure", 4, 0.169, "compute, x86"),
    ("Standard_F8s_v2", "azure", 8, 0.338, "compute, x86"),
    ("Standard_D2ps_v5", "azure", 2, 0.077, "general purpose, arm (Ampere Altra)"),
    ("Standard_NC4as_T4_v3", "azure", 4, 0.526, "GPU: 1 NVIDIA T4"),
)
"""Instance name -> its row (names as each cloud spells them)."""
