"""The board protocol (tinydet/board, docs/board_protocol.md): pure framing, and the serve firmware
end to end on QEMU mps2-an500 through its UART (a local unix socket) with images and malformed frames."""
import json
import shutil
import struct

import numpy as np
import pytest

from tinydet.board import protocol as proto
from tinydet.errors import TinydetError

from fixtures import calib_images, make_export

needs_arm = pytest.mark.skipif(not shutil.which("arm-none-eabi-gcc"), reason="arm-none-eabi-gcc not installed")
needs_qemu = pytest.mark.skipif(not (shutil.which("arm-none-eabi-gcc") and shutil.which("qemu-system-arm")),
                                reason="arm-none-eabi-gcc / qemu-system-arm not installed")


def test_crc_is_crc32_iso_hdlc():
    assert proto.crc32(b"123456789") == 0xCBF43926  # the CRC catalogue's check value


def test_frame_round_trip_and_layout():
    frame = proto.encode_frame(proto.IMAGE, b"\x01\x02\x03")
    assert frame[:2] == b"TD" and frame[2] == proto.IMAGE and struct.unpack_from("<I", frame, 3)[0] == 3
    assert struct.unpack_from("<I", frame, 10)[0] == proto.crc32(frame[2:10])
    assert proto.decode_frame(frame) == proto.Frame(proto.IMAGE, b"\x01\x02\x03")


def test_parser_skips_noise_handles_split_input_and_survives_a_bad_crc():
    good = proto.encode_frame(proto.HELLO) + proto.encode_frame(proto.INFO, b"xyz")
    bad = bytearray(proto.encode_frame(proto.RESULT, b"abcd"))
    bad[9] ^= 0x40
    stream = b"boot T\n" + good[:5] + good[5:] + bytes(bad) + proto.encode_frame(proto.HELLO, b"T")
    parser = proto.FrameParser()
    frames = []
    for i in range(0, len(good) + 7):  # byte by byte through the good part
        frames += parser.feed(stream[i:i + 1])
    assert [f.type for f in frames] == [proto.HELLO, proto.INFO] and frames[1].payload == b"xyz"
    with pytest.raises(proto.ProtocolError, match="CRC"):
        parser.feed(stream[len(good) + 7:])
    assert parser.feed(b"") == [proto.Frame(proto.HELLO, b"T")]


def test_decoders_refuse_inconsistent_payloads():
    with pytest.raises(proto.ProtocolError, match="RESULT"):
        proto.decode_result(struct.pack("<7I2H", 1, 0, 0, 0, 0, 0, 0, 2, 0))  # 2 layers announced, none sent
    with pytest.raises(proto.ProtocolError, match="INFO"):
        proto.decode_info(struct.pack("<4H4I", 8, 8, 3, 2, 0, 0, 0, 192) + b"ctr\0mode\0only-one\0")
    with pytest.raises(TinydetError, match="int8"):
        proto.encode_image(np.zeros((4, 4, 3), np.uint8))


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A tiny quantized export and its serve firmware for QEMU."""
    from tinydet.deploy.build import build_serve_firmware
    from tinydet.pipeline.quantize import quantize_export
    from tinydet.quant.calibrate import calibrate

    root = tmp_path_factory.mktemp("board")
    export = root / "tiny"
    make_export(export)
    quantize_export(export, calibrate(str(export / "full.onnx"), calib_images(), "minmax"),
                    {"kind": "ptq", "method": "minmax", "images": 6})
    info = build_serve_firmware(export, "qemu-mps2-an500", root / "serve", conf=0.1)
    return export, info, root


@needs_qemu
def test_serve_firmware_on_qemu_answers_images_and_error_frames(served, tmp_path):
    from tinydet.board.link import BoardClient, DeviceError, open_link
    from tinydet.deploy import deploy
    from tinydet.deploy.run import quantize_images

    export, info, _ = served
    images = np.random.default_rng(5).random((3, 3, 48, 64), dtype=np.float32)
    q = quantize_images(images, info["input"])
    # the same images through the file-based firmware (host build): the detections to expect
    expected = deploy(export, "host", tmp_path / "host", run=True, images=images, conf=0.1)["_detections"]
    with BoardClient(open_link(f"qemu:{info['elf']}"), timeout_s=60) as client:
        hello = client.hello()
        assert (hello.input_h, hello.input_w, hello.input_c) == (48, 64, 3)
        assert list(hello.layers) == info["layers"] and hello.arena_bytes == info["sram_arena_bytes"]
        assert hello.counter == "cmsdk-timer0@25MHz" and hello.instructions_per_tick == 40.0
        results = []
        for k, img in enumerate(q):
            if k == 1:
                # malformed frames between the images: each gets an error frame, serving goes on
                bad = bytearray(proto.encode_image(img))
                bad[100] ^= 0x01
                answer = client.exchange(bytes(bad))
                assert answer.type == proto.ERROR and proto.decode_error(answer.payload).name == "bad-crc"
                with pytest.raises(DeviceError, match="bad-length"):
                    client.infer(img[:-1])
                err = proto.decode_error(client.exchange(proto.encode_frame(0x33, b"?")).payload)
                assert (err.name, err.frame_type) == ("unknown-type", 0x33)
                too_long = proto.decode_error(client.exchange(b"TD\x02" + struct.pack("<I", 1 << 30)).payload)
                assert too_long.name == "too-long"
            results.append(client.infer(img))
        again = client.infer(q[0])
    for r, (boxes, scores, labels) in zip(results, expected):
        np.testing.assert_allclose(r.boxes, boxes, atol=1e-4)
        np.testing.assert_allclose(r.scores, scores, atol=1e-6)
        np.testing.assert_array_equal(r.labels, labels)
        assert len(r.layer_ticks) == len(info["layers"]) and all(t > 0 for t in r.layer_ticks)
        assert r.input_ticks + sum(r.layer_ticks) <= r.ticks and r.detect_ticks > 0
        assert 0 < r.stack_used_bytes < r.stack_size_bytes
        assert r.sram_high_water_bytes == info["sram_arena_bytes"] + 48 * 64 * 3 + r.stack_used_bytes
    assert sum(len(s) for _, s, _ in expected) > 0, "the test images should give detections at conf 0.1"
    # the first image again after everything: the same answer (the device state survived the errors)
    assert np.array_equal(again.boxes, results[0].boxes) and np.array_equal(again.scores, results[0].scores)


@needs_qemu
def test_serve_firmware_through_a_pty_and_pyserial(served):
    """QEMU's -serial pty: the path a real board's /dev/ttyACM0 takes (pyserial's SerialLink)."""
    from tinydet.board.link import BoardClient, SerialLink, open_link
    from tinydet.board.qemu import start_serve_pty
    from tinydet.deploy.run import quantize_images

    export, info, _ = served
    qemu, pty = start_serve_pty(info["elf"])
    try:
        link = open_link(pty)
        assert isinstance(link, SerialLink)
        with BoardClient(link, timeout_s=60) as client:
            assert client.hello().layers == tuple(info["layers"])
            img = quantize_images(np.random.default_rng(2).random((1, 3, 48, 64), dtype=np.float32), info["input"])[0]
            garbage = client.exchange(b"TD\x02\x01\x00\x00\x00\x00\xde\xad\xbe\xef")  # a 1-byte image, bad CRC
            assert proto.decode_error(garbage.payload).name == "bad-crc"
            r = client.infer(img)
            assert len(r.layer_ticks) == len(info["layers"]) and r.ticks > 0
    finally:
        qemu.close()


@needs_qemu
def test_board_run_cli_streams_a_folder_through_qemu(served, tmp_path, capsys):
    from PIL import Image

    from tinydet.cli import main

    export, info, _ = served
    build = tmp_path / "serve"
    assert main(["deploy", str(export), "--target", "qemu-mps2-an500", "--app", "serve", "--out", str(build),
                 "--conf", "0.1", "--json"]) == 0
    built = json.loads(capsys.readouterr().out)
    assert built["elf"] == str(build / "firmware.elf") and built["sram_arena_bytes"] == info["sram_arena_bytes"]
    src = tmp_path / "images"
    src.mkdir()
    rng = np.random.default_rng(1)
    for k in range(3):
        Image.fromarray(rng.integers(0, 256, (60 + 10 * k, 80, 3), dtype=np.uint8)).save(src / f"{k}.png")
    (src / "notes.txt").write_text("not an image")
    out = tmp_path / "drawn"
    assert main(["board", "run", "--port", f"qemu:{built['elf']}", "--export", str(export), "--images", str(src),
                 "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["frames"] == 3 and report["fps"] > 0 and report["latency_ms"]["mean"] > 0
    assert report["device"]["layers"] == len(info["layers"]) and report["device"]["ticks_mean"] > 0
    assert sorted(p.name for p in out.iterdir()) == ["0.png", "1.png", "2.png"]
    assert Image.open(out / "1.png").size == (80, 70)  # drawn on the original image
    assert [f["name"] for f in report["per_frame"]] == ["0", "1", "2"]
    # the text summary names FPS and latency
    assert main(["board", "run", "--port", f"qemu:{built['elf']}", "--export", str(export), "--images", str(src),
                 "--out", str(tmp_path / "again"), "--frames", "2"]) == 0
    text = capsys.readouterr()
    assert "fps" in text.out and "latency_ms mean/p50/max" in text.out and "frames                       2" in text.out
    assert text.err.count("latency") == 2


@needs_arm
@pytest.mark.parametrize("target", ["stm32f746", "stm32h743"])
def test_serve_firmware_builds_for_the_stm32_boards(served, tmp_path, target):
    from tinydet.deploy.build import build_serve_firmware, symbol_size

    export, _, _ = served
    info = build_serve_firmware(export, target, tmp_path / target)
    elf = info["elf"]
    # the serve loop and the UART receive path are linked in (not garbage-collected away)
    assert symbol_size(elf, "tinydet_board_serial_read") > 0 and symbol_size(elf, "tinydet_serial_read_frame") > 0
    assert info["bin"] and (tmp_path / target / "firmware.bin").stat().st_size > 0


def test_serve_firmware_refuses_the_host_target(tmp_path):
    from tinydet.deploy.build import build_serve_firmware

    with pytest.raises(TinydetError, match="serial link"):
        build_serve_firmware(tmp_path, "host", tmp_path / "h")


def test_board_run_refuses_bad_arguments(tmp_path, monkeypatch, capsys):
    import builtins

    from tinydet.board.run import WindowSink, camera_frames
    from tinydet.cli import main

    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    if __import__("sys").platform.startswith("linux"):
        with pytest.raises(TinydetError, match="--out DIR"):
            WindowSink([])
    real_import = builtins.__import__

    def no_cv2(name, *a, **kw):
        if name == "cv2":
            raise ImportError(name)
        return real_import(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_cv2)
    with pytest.raises(TinydetError, match="pip install opencv-python"):
        camera_frames(0)  # at the call, before any frame is asked for
    monkeypatch.setattr(builtins, "__import__", real_import)
    empty = tmp_path / "empty"
    empty.mkdir()
    from tinydet.board.run import folder_frames

    with pytest.raises(TinydetError, match="--images .*no image files"):
        folder_frames(empty)

    with pytest.raises(SystemExit):
        main(["board", "run", "--port", "unix:/nonexistent", "--export", str(tmp_path)])  # neither source
    with pytest.raises(TinydetError, match="cannot connect"):
        from tinydet.board.link import open_link

        open_link(f"unix:{tmp_path / 'no.sock'}")
