"""The options of every command that loads a bundle (`serve`, `measure`, `run`): how its files are checked, and
whether it may run on CPU when built for CUDA. One wording for all three; each says what its fallback does."""

from __future__ import annotations

import argparse

from .providers import ALLOW_CPU_FALLBACK_ENV, FALLBACK_OPTION

__all__ = ["NO_VERIFY_WITH_KEY", "PUBLIC_KEY_ENV", "add_bundle_options"]

PUBLIC_KEY_ENV = "INFC_PUBLIC_KEY"
"""The path of a PEM public key whose signature a loaded bundle must carry, when `--public-key` is not given
(the bundle's serve.py reads the same variable)."""

NO_VERIFY_WITH_KEY = (f"--no-verify cannot be used with a public key (--public-key or {PUBLIC_KEY_ENV}): "
                      "signatures are required")
"""The usage error of `--no-verify` given with a key (exit 2 in every command)."""


def add_bundle_options(parser: argparse.ArgumentParser, *, verb: str, exits: str, says: str = "") -> None:
    """`--no-verify`, `--public-key PUB` and `--allow-cpu-fallback`; the last one's help: `verb` on CPU ...`says`;
    without it such a bundle `exits`."""
    parser.add_argument("--no-verify", action="store_true",
                        help="do not check the bundle's files against manifest.json (development only)")
    parser.add_argument("--public-key", metavar="PUB", default=None,
                        help=f"require manifest.sig, a signature by this PEM public key's private key (infc sign); "
                             f"default: ${PUBLIC_KEY_ENV} when set (needs the cryptography package)")
    parser.add_argument(FALLBACK_OPTION, dest="allow_cpu_fallback", action="store_true",
                        help=f"{verb} on CPU when the execution provider the bundle was built for (CUDA) cannot be "
                             f"used{says}; without it such a bundle {exits} (default: ${ALLOW_CPU_FALLBACK_ENV}=1)")
