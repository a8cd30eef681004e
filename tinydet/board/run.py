"""``tinydet board run``: stream images to a device over the board protocol, draw its boxes, measure.

    frames = folder_frames("held_out/")                 # or camera_frames(0) (OpenCV)
    with BoardClient(open_link("/dev/ttyACM0")) as client:
        summary = stream(client, load_export("out/face"), frames, PngSink("drawn/", names))

Each frame is letterboxed and quantized exactly as the validation firmware's input
(:func:`tinydet.deploy.run.quantize_images` with the export's input scale and zero point), sent as
one IMAGE frame, and the RESULT's boxes (network-input pixels) are mapped back to the frame's
pixels. Latency is the host's send-to-answer time of one frame (transfer + inference + answer);
FPS counts the whole loop (capture, transfer, drawing).
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from tinydet.board.link import BoardClient
from tinydet.board.protocol import BoardInfo, BoardResult
from tinydet.errors import TinydetError

OPENCV_PACKAGE = "opencv-python"


@dataclass(frozen=True)
class FrameIn:
    name: str  # file stem or "camera<N>-<k>"
    rgb: np.ndarray  # uint8 [H, W, 3]


@dataclass
class Summary:
    """What ``tinydet board run`` reports."""

    port: str
    frames: int
    fps: float
    latency_ms: dict  # mean, p50, max (host round trip per frame)
    device: dict  # the device's own figures (INFO + RESULT means)
    detections: int
    out: str | None = None
    per_frame: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "per_frame"} | {"per_frame": self.per_frame}


def _cv2(what: str):
    try:
        import cv2
    except ImportError:
        raise TinydetError(f"{what} needs OpenCV: pip install {OPENCV_PACKAGE}") from None
    return cv2


def folder_frames(folder: "str | Path") -> Iterator[FrameIn]:
    """The image files of ``folder``, sorted by name (other files are ignored); the folder is listed
    at the call, each image read when its frame is asked for."""
    from tinydet.deploy import images_in_dir, read_rgb

    files = images_in_dir(folder, None, option="--images")
    return (FrameIn(p.stem, read_rgb(p)) for p in files)


def camera_frames(index: int) -> Iterator[FrameIn]:
    """Frames of webcam ``index`` through OpenCV, until the camera stops (checked at once: a missing
    OpenCV or camera is reported before anything connects to the device)."""
    cv2 = _cv2(f"--camera {index}")
    cap = cv2.VideoCapture(index)
    if not cap.isOpened():
        raise TinydetError(f"--camera {index}: OpenCV cannot open this camera")
    return _camera_loop(cap, index)


def _camera_loop(cap, index: int) -> Iterator[FrameIn]:
    try:
        k = 0
        while True:
            ok, bgr = cap.read()
            if not ok:
                if k == 0:
                    raise TinydetError(f"--camera {index}: the camera gave no frame")
                return
            yield FrameIn(f"camera{index}-{k:05d}", np.ascontiguousarray(bgr[:, :, ::-1]))
            k += 1
    finally:
        cap.release()


class PngSink:
    """Writes each frame with its boxes as ``<out>/<name>.png``."""

    def __init__(self, out: "str | Path", class_names: Sequence[str]):
        self.out, self.class_names = Path(out), list(class_names)
        self.out.mkdir(parents=True, exist_ok=True)

    def show(self, frame: FrameIn, boxes, scores, labels) -> bool:
        from PIL import Image

        from tinydet.eval.draw import annotate
        from tinydet.io.atomic import atomic_open

        image = annotate(Image.fromarray(frame.rgb), boxes, scores, labels, self.class_names, min_score=0.0)
        with atomic_open(self.out / f"{frame.name}.png", "wb") as fh:
            image.save(fh, format="PNG")
        return True

    def close(self) -> None:
        pass


class WindowSink:
    """A live OpenCV window; ``q`` or Esc stops the loop."""

    TITLE = "tinydet board"

    def __init__(self, class_names: Sequence[str]):
        if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            raise TinydetError("no display to draw on (DISPLAY is not set): pass --out DIR to write PNGs instead")
        self.cv2 = _cv2("drawing live")
        self.class_names = list(class_names)

    def show(self, frame: FrameIn, boxes, scores, labels) -> bool:
        from PIL import Image

        from tinydet.eval.draw import annotate

        rgb = np.asarray(annotate(Image.fromarray(frame.rgb), boxes, scores, labels, self.class_names, min_score=0.0))
        self.cv2.imshow(self.TITLE, rgb[:, :, ::-1])
        return (self.cv2.waitKey(1) & 0xFF) not in (ord("q"), 27)

    def close(self) -> None:
        self.cv2.destroyAllWindows()


def check_device(info: BoardInfo, export) -> None:
    """Refuse a device running another model shape than the export's (the frames would be garbage)."""
    c, h, w = export.input_shape
    if (info.input_c, info.input_h, info.input_w) != (c, h, w):
        raise TinydetError(f"device runs a {info.input_w}x{info.input_h}x{info.input_c} model, export {export.root} "
                           f"expects {w}x{h}x{c}: flash the serve firmware built from this export")


def _device_figures(info: BoardInfo, results: list[BoardResult]) -> dict:
    ticks = [r.ticks for r in results]
    fig = {"counter": info.counter, "mode": info.mode, "layers": len(info.layers),
           "arena_bytes": info.arena_bytes, "ticks_mean": float(np.mean(ticks)) if ticks else None,
           "detect_ticks_mean": float(np.mean([r.detect_ticks for r in results])) if results else None,
           "stack_used_bytes_max": max((r.stack_used_bytes for r in results), default=None),
           "sram_high_water_bytes_max": max((r.sram_high_water_bytes for r in results), default=None)}
    if info.instructions_per_tick and ticks:
        fig["instructions_per_inference_mean"] = float(np.mean(ticks)) * info.instructions_per_tick
    if results:
        fig["layer_ticks_mean"] = {name: float(np.mean([r.layer_ticks[k] for r in results]))
                                   for k, name in enumerate(info.layers)}
    return fig


def stream(client: BoardClient, export, frames: Iterable[FrameIn], sink=None, limit: int | None = None,
           log=sys.stderr) -> Summary:
    """Send ``frames`` one by one (at most ``limit``), draw each answer on ``sink``, return the figures."""
    from tinydet.data.transforms import letterbox_image, unletterbox
    from tinydet.deploy.build import input_params
    from tinydet.deploy.run import quantize_images

    info = client.hello()
    check_device(info, export)
    c, h, w = export.input_shape
    inp = {"c": c, "h": h, "w": w, **input_params(export)}
    latencies, results, per_frame = [], [], []
    start = time.perf_counter()
    for frame in frames:
        x, meta = letterbox_image(frame.rgb, (h, w))
        q = quantize_images(x[None], inp)[0]
        t0 = time.perf_counter()
        r = client.infer(q)
        latencies.append((time.perf_counter() - t0) * 1000.0)
        results.append(r)
        boxes = unletterbox(r.boxes, meta)
        per_frame.append({"name": frame.name, "latency_ms": round(latencies[-1], 3), "ticks": r.ticks,
                          "boxes": boxes.tolist(), "scores": r.scores.tolist(), "labels": r.labels.tolist()})
        print(f"{frame.name}: {len(r.scores)} detections, latency {latencies[-1]:.1f} ms, device {r.ticks} ticks, "
              f"fps {len(results) / (time.perf_counter() - start):.2f}", file=log)
        if sink is not None and not sink.show(frame, boxes, r.scores, r.labels):
            break
        if limit is not None and len(results) >= limit:
            break  # before taking the next frame: a camera is not read once more
    elapsed = time.perf_counter() - start
    if not results:
        raise TinydetError("board run: no frame was sent")
    lat = np.asarray(latencies)
    return Summary(port=client.link.name, frames=len(results), fps=round(len(results) / elapsed, 3),
                   latency_ms={"mean": round(float(lat.mean()), 3), "p50": round(float(np.median(lat)), 3),
                               "max": round(float(lat.max()), 3)},
                   device=_device_figures(info, results), detections=int(sum(len(r.scores) for r in results)),
                   out=str(sink.out) if isinstance(sink, PngSink) else None, per_frame=per_frame)
