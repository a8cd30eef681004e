"""Calibration: real ranges of every activation of a float ONNX model, from sample images.

The float ``full.onnx`` runs in onnxruntime with every intermediate activation exposed as an
output; per tensor a range is chosen by one of three methods:

* ``minmax``: the smallest and largest value seen;
* ``percentile``: the ``p``-th and ``(100 - p)``-th percentiles of all values (default p = 99.99),
  from a 4096-bin histogram over the min/max range (a second pass), so memory does not grow
  with the number of images;
* ``entropy``: TensorRT's KL-divergence calibration, per side of zero (activations are
  asymmetric): a 2048-bin histogram of the positive values and one of the negated negative values
  (exact zeros left out: the zero point represents them under any threshold) and, for each
  candidate threshold, the KL divergence between the clipped distribution and its quantized
  version (256 levels for a one-signed tensor, 128 per side otherwise); the threshold with the
  smallest divergence wins.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np

from tinydet.errors import TinydetError
from tinydet.io.onnxrt import session as onnx_session

if TYPE_CHECKING:
    import onnx

METHODS = ("minmax", "percentile", "entropy")
RANGE_OPS = ("Conv", "Clip", "Relu", "Add", "GlobalAveragePool", "Gemm", "Concat")
PERCENTILE_BINS = 4096
ENTROPY_BINS = 2048


def range_tensors(model: "onnx.ModelProto") -> list[str]:
    """The activations of ``model`` that get a range: the outputs of its ``RANGE_OPS`` nodes."""
    return [node.output[0] for node in model.graph.node if node.op_type in RANGE_OPS]


def _run_all(session, input_name: str, names: Sequence[str], images: Sequence[np.ndarray]):
    for image in images:
        x = np.asarray(image, dtype=np.float32)
        if x.ndim == 3:
            x = x[None]
        values = session.run(list(names), {input_name: x})
        yield dict(zip(names, values))


def _percentile_range(hist: np.ndarray, lo: float, hi: float, p: float) -> tuple[float, float]:
    edges = np.linspace(lo, hi, len(hist) + 1)
    cdf = np.cumsum(hist) / max(1, hist.sum())
    q_lo, q_hi = (100.0 - p) / 100.0, p / 100.0
    i_lo = int(np.searchsorted(cdf, q_lo, side="left"))
    i_hi = int(np.searchsorted(cdf, q_hi, side="left"))
    return float(edges[min(i_lo, len(hist) - 1)]), float(edges[min(i_hi + 1, len(hist))])


def kl_threshold(hist: np.ndarray, bin_width: float, levels: int = 128, max_clipped: float = 0.01) -> float:
    """TensorRT's entropy calibration on a histogram of ``|x|``: the clipping threshold that
    minimises KL(P || Q) between the clipped reference distribution and its ``levels``-level
    quantization.

    Candidates clip at most ``max_clipped`` of the values: the normalised KL cannot see mass that
    is clipped wholesale into the last bin, so a distribution with no mass near zero would
    otherwise pick a threshold below all of its values."""
    hist = np.asarray(hist, dtype=np.float64)
    n = len(hist)
    if n <= levels or hist.sum() == 0:
        return n * bin_width
    clipped = np.concatenate([np.cumsum(hist[::-1])[::-1], [0.0]])  # clipped[i] = hist[i:].sum()
    best_i, best_kl = n, np.inf
    for i in range(levels, n + 1):
        if clipped[i] > max_clipped * clipped[0]:
            continue
        p = hist[:i].copy()
        p[i - 1] += hist[i:].sum()  # outliers clipped into the last bin
        # quantize hist[:i] into `levels` chunks, spreading each chunk's mass over its nonzero bins
        edges = np.linspace(0, i, levels + 1).astype(np.int64)
        src = hist[:i]
        nonzero = (src > 0).astype(np.float64)
        chunk_sum = np.add.reduceat(src, edges[:-1])
        chunk_cnt = np.add.reduceat(nonzero, edges[:-1])
        per = np.divide(chunk_sum, chunk_cnt, out=np.zeros_like(chunk_sum), where=chunk_cnt > 0)
        q = np.repeat(per, np.diff(edges)) * nonzero
        p_sum, q_sum = p.sum(), q.sum()
        if q_sum == 0:
            continue
        pn, qn = p / p_sum, q / q_sum
        mask = pn > 0
        # a bin with P > 0 but Q == 0 (only the clipped last bin can be) is smoothed as TensorRT does
        qn = np.where(mask & (qn == 0), 1e-12, qn)
        kl = float(np.sum(pn[mask] * np.log(pn[mask] / qn[mask])))
        if kl < best_kl:
            best_kl, best_i = kl, i
    return (best_i + 0.5) * bin_width


def calibrate(model: "onnx.ModelProto | str", images: Iterable[np.ndarray], method: str = "minmax",
              percentile: float = 99.99, input_name: str = "input", threads: int = 1,
              where: str = "calibration") -> dict[str, tuple[float, float]]:
    """Ranges ``{tensor: (lo, hi)}`` of every activation of a float model over ``images``.

    ``images`` are ``[3, H, W]`` or ``[1, 3, H, W]`` float arrays in [0, 1] (letterboxed to the
    model's input size). An empty set raises a :class:`TinydetError`.
    """
    if method not in METHODS:
        raise TinydetError(f"{where}: method: expected one of {', '.join(METHODS)}, got {method!r}")
    if not 50.0 < percentile <= 100.0:
        raise TinydetError(f"{where}: percentile: expected a number in (50, 100], got {percentile}")
    if isinstance(model, str):
        import onnx  # here, not at import: the CLI reads METHODS without loading onnx

        model = onnx.load(model)
    images = list(images)
    if not images:
        raise TinydetError(f"{where}: the calibration set is empty; expected at least one image "
                           f"(check the config's data.train split and --calib)")
    names = range_tensors(model)
    session = onnx_session(model, threads, expose=names, where=where)
    lo = {n: np.inf for n in names}
    hi = {n: -np.inf for n in names}
    for values in _run_all(session, input_name, names, images):
        for n in names:
            v = values[n]
            lo[n] = min(lo[n], float(v.min()))
            hi[n] = max(hi[n], float(v.max()))
    if method == "minmax":
        return {n: (lo[n], hi[n]) for n in names}
    if method == "percentile":
        hists = {n: np.zeros(PERCENTILE_BINS, np.int64) for n in names}
        for values in _run_all(session, input_name, names, images):
            for n in names:
                if hi[n] > lo[n]:
                    hists[n] += np.histogram(values[n], bins=PERCENTILE_BINS, range=(lo[n], hi[n]))[0]
        return {n: (_percentile_range(hists[n], lo[n], hi[n], percentile) if hi[n] > lo[n] else (lo[n], hi[n]))
                for n in names}
    # entropy: one KL threshold per side, so an asymmetric tensor keeps an asymmetric range
    pos = {n: np.zeros(ENTROPY_BINS, np.int64) for n in names}
    neg = {n: np.zeros(ENTROPY_BINS, np.int64) for n in names}
    for values in _run_all(session, input_name, names, images):
        for n in names:
            # exact zeros (ReLU's floor, padding) are exact under any threshold (the zero
            # point): left in, their spike makes the KL prefer tiny thresholds
            v = values[n]
            if hi[n] > 0:
                pos[n] += np.histogram(v[v > 0], bins=ENTROPY_BINS, range=(0.0, hi[n]))[0]
            if lo[n] < 0:
                neg[n] += np.histogram(-v[v < 0], bins=ENTROPY_BINS, range=(0.0, -lo[n]))[0]
    ranges = {}
    for n in names:
        # the levels a side gets: all 256 for a one-signed tensor, about half each otherwise
        levels = 256 if lo[n] >= 0 or hi[n] <= 0 else 128
        t_hi = kl_threshold(pos[n], hi[n] / ENTROPY_BINS, levels) if hi[n] > 0 else 0.0
        t_lo = kl_threshold(neg[n], -lo[n] / ENTROPY_BINS, levels) if lo[n] < 0 else 0.0
        ranges[n] = (max(lo[n], -t_lo), min(hi[n], t_hi))
    return ranges
