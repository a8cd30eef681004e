"""int8 quantization parameters: the value range, the rule that turns a real range into
``(scale, zero_point)``, and the network input's fixed parameters. The one definition, used by
post-training quantization (:mod:`tinydet.quant.qdq`), QAT's fake quantization
(:mod:`tinydet.quant.qat`) and the int8 graph reader, so the range QAT trains with is exactly the
one the export writes.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

QMIN, QMAX = -128, 127  # int8 activations (TFLite int8 conventions)
WEIGHT_QMAX = 127  # symmetric weights in [-127, 127] (-128 unused, as TFLite)
INPUT_SCALE = 1.0 / 255.0
INPUT_ZERO_POINT = -128
#: the scale of a degenerate (all-zero) range: any positive value represents 0 exactly; QDQ
#: cannot hold TFLite's scale 0, so 1/255 stands in for it
DEGENERATE_SCALE = float(np.float32(1.0 / 255.0))


@dataclass(frozen=True)
class QParams:
    """Per-tensor int8 quantization: ``real = scale * (q - zero_point)``."""

    scale: float
    zero_point: int

    def to_dict(self) -> dict:
        return {"scale": self.scale, "zero_point": self.zero_point}


def params_from_range(lo: float, hi: float) -> QParams:
    """Asymmetric int8 parameters for a real range (TFLite's ``ChooseQuantizationParams``).

    The range is widened to contain 0 so that 0.0 (zero padding, ReLU floor) is exact; the scale
    is ``(hi - lo) / 255`` rounded to float32 and the zero point ``round(-128 - lo / scale)``
    (half to even) clamped into [-128, 127]. A degenerate range (``lo == hi == 0``, or a scale too
    small to invert) gets zero point 0, as TFLite's special case, and the scale
    :data:`DEGENERATE_SCALE`.
    """
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError(f"range [{lo}, {hi}] is not finite")
    scale = np.float32((hi - lo) / (QMAX - QMIN))
    if scale <= 0 or not np.isfinite(1.0 / float(scale)):
        return QParams(DEGENERATE_SCALE, 0)
    zp_real = QMIN - lo / float(scale)
    zp = int(np.clip(np.round(zp_real), QMIN, QMAX))
    return QParams(float(scale), zp)


def input_params() -> QParams:
    """The network input's fixed parameters: pixels in [0, 1] -> scale 1/255, zero point -128."""
    return QParams(float(np.float32(INPUT_SCALE)), INPUT_ZERO_POINT)
