"""The hostile-input suite's table: bad inputs a realistic user gives tinydet, each with the
one-line error it must produce (or the outcome that is accepted instead).

Adding a case is adding a :class:`Case` to :data:`CASES` (``tests/test_hostile.py`` runs them):

- ``argv``: the ``tinydet`` arguments. ``{name}`` fields are paths in the case's own scratch
  folder (a :class:`Workspace`): ``{voc}`` a generated VOC set, ``{config}`` the tiny training
  config on it, ``{dir}`` the scratch folder itself, or any file ``prepare`` wrote (``{dir}/x``).
- ``prepare(ws)``: writes the hostile input (a spec, a corrupted annotation, ...) into the scratch
  folder before the command runs; it may also rewrite the config (``ws.write_config(...)``).
- ``error``: a regex searched in the one line ``tinydet: error: ...`` (the last stderr line;
  ``one_line=True`` demands it is the only one). ``None`` = an accepted outcome, checked by
  ``accept(outcome, ws)``.
- ``code``: the expected exit status (2 for every user error; argparse refusals exit 2 too).
- ``subprocess``: run ``python -m tinydet`` in a child process, for cases where the exit status
  or what reaches the real stdout/stderr is the point (signals, pipes); else in process (fast).
- ``writes``: glob patterns (relative to the scratch folder) a case may create or change. Every
  other file must be byte-identical after the command, and no new file may appear: a refused
  command writes nothing, not even a temporary file.
- ``issue``: the issue point the case guards (``17.11``), so a failure says what regressed.
"""
from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import yaml

from train_helpers import make_voc, tiny_config


@dataclass
class Outcome:
    """What a command did: exit status and the text it printed."""

    code: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class Case:
    id: str
    issue: str
    argv: tuple
    error: Optional[str] = None
    prepare: Optional[Callable[["Workspace"], None]] = None
    accept: Optional[Callable[[Outcome, "Workspace"], None]] = None
    code: int = 2
    one_line: bool = True
    subprocess: bool = False
    stdout_closed: bool = False
    writes: tuple = ()


class Assets:
    """Inputs shared by every case, built once per test session on first use (copied into each
    case's scratch folder, so a case may damage its copy)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._built: dict[str, Path] = {}

    def get(self, name: str) -> Path:
        if name not in self._built:
            self._built[name] = getattr(self, f"_build_{name}")()
        return self._built[name]

    def _build_voc(self) -> Path:
        return make_voc(self.root / "voc")

    def _build_ckpt(self) -> Path:
        """A two-step training run of the tiny config (classes circle, square, triangle, star, cross)."""
        from tinydet.config import load_config
        from tinydet.train.run import train

        cfg = tiny_config(self.root, self.get("voc"), self.root / "runs", max_steps=2)
        return Path(train(load_config(cfg))["last_ckpt"])

    def _build_wider(self) -> Path:
        from tinydet.data.synth import synth_wider

        synth_wider(str(self.root / "wider"), 8, seed=1, size=96)
        return self.root / "wider"


@dataclass
class Workspace:
    """One case's scratch folder; ``{voc}``, ``{wider}``, ``{ckpt}`` and ``{config}`` are copied
    (or written) there on first use."""

    dir: Path
    assets: Assets

    def _copy(self, asset: str, name: str) -> Path:
        target = self.dir / name
        if not target.exists():
            source = self.assets.get(asset)
            (shutil.copytree if source.is_dir() else shutil.copyfile)(source, target)
        return target

    @property
    def voc(self) -> Path:
        return self._copy("voc", "voc")

    @property
    def wider(self) -> Path:
        return self._copy("wider", "wider")

    @property
    def ckpt(self) -> Path:
        return self._copy("ckpt", "model.ckpt")

    @property
    def config(self) -> Path:
        path = self.dir / "tiny.yaml"
        if not path.exists():
            self.write_config()
        return path

    def write_config(self, **sections) -> Path:
        """The tiny training config on this workspace's VOC copy, with ``sections`` merged in
        (``train={"lr": -1}`` sets one key of a section)."""
        path = tiny_config(self.dir, self.voc, self.dir / "runs")
        cfg = yaml.safe_load(path.read_text())
        for section, values in sections.items():
            if isinstance(values, dict) and isinstance(cfg.get(section), dict):
                cfg[section].update(values)
            else:
                cfg[section] = values
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        return path

    def fill(self, arg: str) -> str:
        """``arg`` with its ``{name}`` fields replaced by paths."""
        return re.sub(r"\{(\w+)\}", lambda m: str(getattr(self, m.group(1))), arg)


# ------------------------------------------------------------------------------ helpers for cases


def write_all(files: dict) -> Callable[[Workspace], None]:
    """A ``prepare`` writing each ``{relpath: text}`` under ``{dir}``."""
    def prepare(ws: Workspace) -> None:
        for relpath, text in files.items():
            write(relpath, text)(ws)
    return prepare


def write(relpath: str, text: str) -> Callable[[Workspace], None]:
    """A ``prepare`` writing ``text`` to ``{dir}/relpath``."""
    def prepare(ws: Workspace) -> None:
        path = ws.dir / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return prepare


def spec(**fields) -> Callable[[Workspace], None]:
    """A ``prepare`` writing ``{dir}/spec.yaml``: a two-block net with ``fields`` replaced."""
    data = {"name": "hostile", "blocks": [{"type": "conv", "out": 16, "stride": 2},
                                          {"type": "mbconv", "out": 24, "stride": 2, "expand": 4}]}
    data.update(fields)
    return write("spec.yaml", yaml.safe_dump(data, sort_keys=False))


def quiet(code: int) -> Callable[[Outcome, Workspace], None]:
    """Accept exit status ``code`` with nothing at all on stderr."""
    def accept(outcome: Outcome, ws: Workspace) -> None:
        assert outcome.code == code, (outcome.code, outcome.stderr)
        assert outcome.stderr == "", outcome.stderr
    return accept


def voc_train_ids(ws: Workspace) -> list[str]:
    text = (ws.voc / "VOC2007" / "ImageSets" / "Main" / "train.txt").read_text()
    return [line.split()[0] for line in text.splitlines() if line.strip()]


def voc_edit_first_box(field: str, value: str) -> Callable[[Workspace], None]:
    """A ``prepare`` setting ``field`` (xmin, ...) of the first object of a training image."""
    def prepare(ws: Workspace) -> None:
        import xml.etree.ElementTree as ET

        for image_id in voc_train_ids(ws):
            ann = ws.voc / "VOC2007" / "Annotations" / f"{image_id}.xml"
            tree = ET.parse(ann)
            obj = tree.getroot().find("object")
            if obj is not None:
                obj.find(f"bndbox/{field}").text = value
                tree.write(ann)
                return
        raise AssertionError("no training image with an object")
    return prepare


def voc_first_image(ws: Workspace) -> Path:
    return ws.voc / "VOC2007" / "JPEGImages" / f"{voc_train_ids(ws)[0]}.jpg"


def truncate_first_image(ws: Workspace) -> None:
    path = voc_first_image(ws)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])  # a download cut short: no EOI marker


def png_bomb_first_image(ws: Workspace) -> None:
    """Replace the first training image by a PNG whose header claims 20000 x 20000 pixels."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)
    voc_first_image(ws).write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


def bom_first_line(relpath_of: Callable[[Workspace], Path]) -> Callable[[Workspace], None]:
    def prepare(ws: Workspace) -> None:
        path = relpath_of(ws)
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    return prepare


def wider_edit_first_face(column: int, value: str) -> Callable[[Workspace], None]:
    """A ``prepare`` setting ``column`` (0 x, 1 y, 2 w, 3 h) of the first face in the train gt."""
    def prepare(ws: Workspace) -> None:
        gt = ws.wider / "wider_face_split" / "wider_face_train_bbx_gt.txt"
        lines = gt.read_text().splitlines()
        for i, line in enumerate(lines):
            if line.strip().endswith(".jpg") and int(lines[i + 1]) > 0:
                fields = lines[i + 2].split()
                fields[column] = value
                lines[i + 2] = " ".join(fields)
                gt.write_text("\n".join(lines) + "\n")
                return
        raise AssertionError("no training image with a face")
    return prepare


def wider_images(ws: Workspace, split: str) -> list[str]:
    """``event/stem`` of every image listed in ``split``'s ground truth."""
    text = (ws.wider / "wider_face_split" / f"wider_face_{split}_bbx_gt.txt").read_text()
    return [line.strip()[:-4] for line in text.splitlines() if line.strip().endswith(".jpg")]


def wider_submission(split: str, keep: slice = slice(None), extra: tuple = ()) -> Callable[[Workspace], None]:
    """A ``prepare`` writing ``{dir}/sub``: one box per image of ``split`` (those in ``keep``),
    plus files for the ``extra`` images (event/stem names the set does not have)."""
    def prepare(ws: Workspace) -> None:
        for name in wider_images(ws, split)[keep] + list(extra):
            path = ws.dir / "sub" / f"{name}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"{name.split('/')[1]}\n1\n10 10 20 20 0.9\n")
    return prepare


def warns(*patterns: str) -> Callable[[Outcome, "Workspace"], None]:
    """Accept exit 0 with each of ``patterns`` on a ``tinydet: warning:`` line of stderr."""
    def accept(outcome: Outcome, ws: Workspace) -> None:
        assert outcome.code == 0, outcome.stderr
        warnings = [line for line in outcome.stderr.splitlines() if line.startswith("tinydet: warning: ")]
        for pattern in patterns:
            assert any(re.search(pattern, w) for w in warnings), (pattern, outcome.stderr)
    return accept


NOT_UTF8 = b"\xff\xfe0\x00 \x00"  # UTF-16 with a BOM, as some Windows tools write


def write_bytes(relpath: str, data: bytes) -> Callable[[Workspace], None]:
    def prepare(ws: Workspace) -> None:
        path = ws.dir / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return prepare


TINY_CLASSES = ["circle", "square", "triangle", "star", "cross"]


def same_map_as_checkpoint_order(outcome: Outcome, ws: Workspace) -> None:
    """A config listing the checkpoint's classes in another order scores exactly as the
    checkpoint's own order, and says it remapped."""
    import json

    from tinydet.config import load_config
    from tinydet.pipeline.eval import evaluate_model

    assert outcome.code == 0, outcome.stderr
    assert re.search(r"tinydet: note: .*tiny\.yaml: data\.classes lists the classes of checkpoint .* in another "
                     r"order; scoring by name", outcome.stderr), outcome.stderr
    result = json.loads(outcome.stdout)
    own_order = load_config(ws.config, [f"data.classes={json.dumps(TINY_CLASSES)}"])
    truth = evaluate_model(own_order, ckpt=str(ws.ckpt))
    assert result["map50"] == truth["map50"] and result["per_class"] == truth["per_class"]


def exit_ok(outcome: Outcome, ws: Workspace) -> None:
    assert outcome.code == 0, outcome.stderr
    assert "Traceback" not in outcome.stderr


ANCHORS_VOC = ("data", "anchors", "--data-config", "{config}", "--k", "3", "--scales", "1", "--json")
ANCHORS_WIDER = ("data", "anchors", "--root", "{wider}", "--format", "wider", "--k", "3", "--scales", "1", "--json")


def _train_set(key: str, value: str, issue: str, error: str) -> Case:
    return Case(f"train-set-{key}={value}", issue, ("train", "-c", "{config}", "--set", f"{key}={value}"),
                error=rf"^--set {re.escape(key)}={re.escape(value)}: {re.escape(key)}: {error}")


CASES: list[Case] = [
    # ---- config values out of range (17.9, 17.11): one line, naming the override or the file
    _train_set("train.lr", "-0.01", "17.11", r"expected a number > 0, got -0\.01"),
    _train_set("train.check_val_every_n_epoch", "0", "17.11", r"expected an integer >= 1, got 0"),
    _train_set("train.precision", "banana", "17.11", r"expected one of .*32-true.*, got 'banana'"),
    _train_set("train.devices", "0", "17.11", r"expected auto, a device count >= 1"),
    _train_set("model.head.channels", "-8", "17.11", r"expected an integer >= 1, got -8"),
    _train_set("model.head.kernel", "4", "17.9", r"expected an odd kernel size"),
    _train_set("train.weight_decay", "-0.1", "17.9", r"expected a number >= 0"),
    _train_set("train.warmup_epochs", "-1", "17.9", r"expected a number >= 0"),
    _train_set("train.lr", ".nan", "17.8", r"expected a number > 0, got nan"),
    Case("config-file-value-names-file", "17.12", ("train", "-c", "{config}"),
         prepare=lambda ws: ws.write_config(train={"weight_decay": -0.5}),
         error=r"tiny\.yaml: train\.weight_decay: expected a number >= 0, got -0\.5"),
    # ---- spec values (17.9, 17.11)
    Case("spec-round_to-0", "17.11", ("profile", "--arch", "{dir}/spec.yaml", "--resolution", "64"),
         prepare=spec(round_to=0), error=r"spec\.yaml: round_to: expected a positive integer, got 0"),
    Case("spec-in_channels-0", "17.9", ("profile", "--arch", "{dir}/spec.yaml", "--resolution", "64"),
         prepare=spec(in_channels=0), error=r"spec\.yaml: in_channels: expected a positive integer, got 0"),
    Case("spec-num_classes-negative", "17.9", ("profile", "--arch", "{dir}/spec.yaml", "--resolution", "64"),
         prepare=spec(num_classes=-3), error=r"spec\.yaml: num_classes: expected an integer >= 0"),
    # ---- data (17.8, 17.11, 17.12)
    Case("voc-xmin-nan", "17.8", ANCHORS_VOC, prepare=voc_edit_first_box("xmin", "nan"),
         error=r"object\[0\]/bndbox: expected numeric xmin, ymin, xmax, ymax \(finite numbers\), got nan"),
    Case("voc-xmax-inf", "17.8", ANCHORS_VOC, prepare=voc_edit_first_box("xmax", "inf"),
         error=r"object\[0\]/bndbox: expected numeric .*got .*inf"),
    Case("wider-w-nan", "17.8", ANCHORS_WIDER, prepare=wider_edit_first_face(2, "nan"),
         error=r"wider_face_train_bbx_gt\.txt:\d+: expected 10 finite numbers"),
    Case("voc-truncated-jpeg", "17.8", ANCHORS_VOC, prepare=truncate_first_image,
         error=r"\.jpg: unreadable image \(image file is truncated"),
    Case("voc-png-decompression-bomb", "17.11", ANCHORS_VOC, prepare=png_bomb_first_image,
         error=r"\.jpg: unreadable image \(the header claims more pixels than PIL decodes safely"),
    Case("voc-imageset-bom", "17.12", ANCHORS_VOC, accept=exit_ok,
         prepare=bom_first_line(lambda ws: ws.voc / "VOC2007" / "ImageSets" / "Main" / "train.txt")),
    Case("wider-gt-bom", "17.12", ANCHORS_WIDER, accept=exit_ok,
         prepare=bom_first_line(lambda ws: ws.wider / "wider_face_split" / "wider_face_train_bbx_gt.txt")),
    # ---- detection files (17.10, 17.11)
    Case("wider-submission-wrong-split", "17.10", ("eval", "--dets", "{dir}/sub", "--data", "{wider}", "--json"),
         prepare=wider_submission("train"), error=r"sub: no prediction matched any image of the evaluated set "
                                                   r"\(2 images; the detections name 6 other images", one_line=False),
    Case("wider-submission-partial", "17.10", ("eval", "--dets", "{dir}/sub", "--data", "{wider}", "--json"),
         prepare=wider_submission("val", slice(0, 1), extra=("0--Parade/0_Parade_not_in_set",)),
         accept=warns(r"1 of 2 images of the evaluated set have no prediction",
                      r"predictions for 1 images that the evaluated set does not have were ignored")),
    Case("voc-dets-not-utf8", "17.11", ("eval", "--dets", "{dir}/dets", "--data", "{voc}", "--json"),
         prepare=write_bytes("dets/comp4_det_test_circle.txt", NOT_UTF8),
         error=r"comp4_det_test_circle\.txt: VOC detection file is not UTF-8 text \(byte 0", one_line=False),
    Case("wider-dets-not-utf8", "17.11", ("eval", "--dets", "{dir}/sub", "--data", "{wider}", "--json"),
         prepare=write_bytes("sub/4--Dancing/4_Dancing_dancing_4_4.txt", NOT_UTF8),
         error=r"4_Dancing_dancing_4_4\.txt: WIDER prediction file is not UTF-8 text \(byte 0", one_line=False),
    Case("coco-dets-not-utf8", "17.11", ("eval", "--dets", "{dir}/r.json", "--data", "{voc}", "--json"),
         prepare=write_bytes("r.json", NOT_UTF8), error=r"r\.json: COCO results file is not UTF-8 text", one_line=False),
    # ---- the checkpoint's classes are the truth (17.7)
    Case("eval-config-classes-reordered", "17.7", ("eval", "-c", "{config}", "--ckpt", "{ckpt}", "--json"),
         prepare=lambda ws: (ws.ckpt, ws.write_config(data={"classes": TINY_CLASSES[::-1]})),
         accept=same_map_as_checkpoint_order),
    Case("eval-config-classes-differ", "17.7", ("eval", "-c", "{config}", "--ckpt", "{ckpt}", "--json"),
         prepare=lambda ws: (ws.ckpt, ws.write_config(data={"classes": TINY_CLASSES[:4] + ["hexagon"]})),
         error=r"tiny\.yaml: data\.classes \['circle', 'square', 'triangle', 'star', 'hexagon'\] are not the classes "
               r"\['circle', 'square', 'triangle', 'star', 'cross'\] of checkpoint .*model\.ckpt", one_line=False),
    # ---- command line (17.12)
    Case("deploy-timeout-negative", "17.12", ("deploy", "{dir}", "--timeout", "-1"),
         error=r"argument --timeout: expected a number of seconds > 0, got '-1'", one_line=False),
    Case("train-missing-config", "17", ("train", "-c", "{dir}/missing.yaml"),
         error=r"--config .*missing\.yaml: no such file"),
    Case("eval-missing-checkpoint", "17", ("eval", "-c", "{config}", "--ckpt", "{dir}/none.ckpt"),
         error=r"--ckpt .*none\.ckpt: no such file"),
    # ---- a closed stdout pipe (17.11): quiet, like other Unix tools
    Case("profile-stdout-closed", "17.11", ("profile", "--arch", "mbv2-w0.35", "--resolution", "96"),
         subprocess=True, stdout_closed=True, accept=quiet(141)),
    # ---- never overwrite a run, never read an unchecked export folder (17.1, 17.6)
    Case("train-into-a-run-with-checkpoints", "17.1", ("train", "-c", "{config}"),
         prepare=write("runs/last.ckpt", "a previous run's checkpoint"),
         error=r"train\.out_dir .*runs: already holds a run \(last\.ckpt\); .* continue it with --resume auto, "
               r"start a fresh numbered run with --new, or set train\.out_dir to another folder"),
    Case("train-new-with-resume", "17.1", ("train", "-c", "{config}", "--new", "--resume", "auto"),
         error=r"--new starts a fresh run; it cannot be combined with --resume"),
    Case("quantize-manifest-edited", "17.6", ("quantize", "{dir}/exp", "--calib", "1"),
         prepare=write_all({"exp/schedule.json": "{}", "exp/manifest.json": '{"manifest_version": 1, "files": {}, '
                                                                           '"sha256": "0"}'}),
         error=r"exp/manifest\.json: sha256: the manifest was modified"),
]
