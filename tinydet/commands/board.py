"""``tinydet board run``: the live board loop over the serial protocol (docs/board_protocol.md).

    tinydet board run --port PORT --export out/NAME (--images DIR | --camera N) [--out DIR] [--frames K] [--json]

PORT: a serial device (``/dev/ttyACM0``, ``COM3``; needs pyserial), ``unix:PATH`` / ``tcp:HOST:PORT``
(QEMU's ``-serial``), or ``qemu:ELF`` to start the serve firmware under QEMU. The device runs the
serve firmware (``tinydet deploy out/NAME --target T --app serve``). Boxes are drawn live in an OpenCV
window, or written as PNGs with ``--out``; each frame's latency and the running FPS go to stderr,
the summary (FPS, latency, the device's ticks, stack and SRAM high-water marks) to stdout.
"""
from __future__ import annotations

import argparse

from tinydet.commands.common import add_json_argument, declare_inputs, positive_number


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="<action>")
    sub.required = True
    p = sub.add_parser("run", help="stream images or a webcam to the device, draw its boxes, print FPS and latency")
    p.add_argument("--port", required=True,
                   help="serial device, unix:PATH, tcp:HOST:PORT, or qemu:ELF (start the serve firmware in QEMU)")
    p.add_argument("--export", required=True, help="the export folder the device's firmware was built from")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", metavar="DIR", help="stream the image files of DIR (sorted by name)")
    src.add_argument("--camera", type=int, metavar="N", help="stream webcam N (OpenCV)")
    p.add_argument("--out", metavar="DIR", help="write each frame with its boxes as DIR/<name>.png (no window)")
    p.add_argument("--frames", type=int, metavar="K", help="stop after K frames")
    p.add_argument("--timeout", type=positive_number, default=60.0, metavar="S",
                   help="seconds to wait for each answer (default 60)")
    add_json_argument(p)
    declare_inputs(p, export="dir", images="dir")


def run(args: argparse.Namespace):
    from tinydet.board.link import BoardClient, open_link
    from tinydet.board.run import PngSink, WindowSink, camera_frames, folder_frames, stream
    from tinydet.errors import TinydetError
    from tinydet.export.schedule_file import load_export

    if args.frames is not None and args.frames < 1:
        raise TinydetError(f"--frames: expected a positive integer, got {args.frames}")
    if args.timeout <= 0:
        raise TinydetError(f"--timeout: expected a positive number of seconds, got {args.timeout}")
    export = load_export(args.export)
    names = (export.schedule.get("detector") or {}).get("class_names") or []
    frames = folder_frames(args.images) if args.images is not None else camera_frames(args.camera)
    sink = PngSink(args.out, names) if args.out else WindowSink(names)
    try:
        with BoardClient(open_link(args.port), timeout_s=args.timeout) as client:
            summary = stream(client, export, frames, sink, limit=args.frames)
    finally:
        sink.close()
    result = summary.to_dict()
    if not args.json:
        result.pop("per_frame")
    return result


def render(result: dict) -> None:
    """The summary as text (``--json`` prints it as one JSON object, with every frame)."""
    lat, dev = result["latency_ms"], result["device"]
    print(f"  {'port':<28} {result['port']}")
    print(f"  {'frames':<28} {result['frames']} ({result['detections']} detections)")
    print(f"  {'fps':<28} {result['fps']}")
    print(f"  {'latency_ms mean/p50/max':<28} {lat['mean']} / {lat['p50']} / {lat['max']}")
    for key in ("counter", "mode", "ticks_mean", "detect_ticks_mean", "instructions_per_inference_mean",
                "arena_bytes", "stack_used_bytes_max", "sram_high_water_bytes_max"):
        if dev.get(key) is not None:
            print(f"  {key:<28} {dev[key]}")
    if result.get("out"):
        print(f"  {'drawn':<28} {result['out']}")
