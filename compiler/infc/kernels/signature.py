"""Check that the pre steps turn the request inputs into what the model takes.

(Filled in with the code generator; until then it accepts every pipeline.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import onnx

if TYPE_CHECKING:
    from ..errors import SpecError
    from ..spec import Spec

__all__ = ["check_pipeline"]


def check_pipeline(spec: Spec, model: onnx.ModelProto) -> list[SpecError]:
    """Every located problem of the spec's pre/post steps against the model."""
    return []
