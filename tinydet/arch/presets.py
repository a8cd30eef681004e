"""Built-in architecture presets, and which of them are published and which reconstructed.

Published (the block list is a public network's, figures match its source):

* ``mbv2-*``: torchvision's MobileNetV2, exactly (layer shapes, MACs, params), classifier included.
* ``mcunet-in0`` .. ``mcunet-in4``, ``mcunet-mbv2-w0.35``, ``mcunet-proxyless-w0.3``: the MCUNet
  model zoo's ImageNet networks, transcribed from their net_config JSON files
  (mit-han-lab/tinyml @ e899b1b, mcunet/assets/configs/); MACs and params equal the mcunet README.
* ``mcunet-vww1``: transcribed from the official int8 model (mit-han-lab/tinyengine assets/vww.tflite).
* ``mcunet-person-det``: MIT's person-detection demo (backbone, neck and heads), transcribed from
  the official int8 model (tinyengine assets/detection.tflite); 18.3M MACs at 128x160.

Reconstructed (no public block-level source; the values are ours):

* ``mcunet-vww0``, ``mcunet-vww2``: block lists from a third-party Keras transcription
  (harvard-edge/Wake_Vision); MACs agree with the mcunet README to its rounding. None of the VWW
  sources marks shortcuts, so blocks take one wherever the shapes allow (MCUNet's rule), and
  their BatchNorm eps (1e-5) is assumed from the ImageNet MCUNets.
* ``mbv2-w1.0-rd``, ``mcunetv2-m4``, ``mcunetv2-h7``: the MCUNetV2 paper's receptive-field
  redistribution and detector backbones, whose block lists were never published.

All MCUNet-zoo presets take MCUNet's input normalisation (mean 0.5, std 0.5 per channel) and use
absolute channel counts. Detectors built on any preset use the blocks up to ``head_from``: the
last stride-16 block and the last stride-32 block before the classifier's 1x1 mix conv.
"""
from __future__ import annotations

from tinydet.arch.registry import register
from tinydet.arch.spec import ArchSpec, BlockSpec, HeadLayout, NeckNode, NeckSpec, feature_taps

# torchvision's inverted_residual_setting: expand t, channels c, repeats n, stride s
MBV2_SETTING = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


def stages(setting, kernel: int = 3) -> list[BlockSpec]:
    """Expand (t, c, n, s[, k]) rows into mbconv blocks, stride on the first of each row."""
    blocks = []
    for row in setting:
        t, c, n, s = row[:4]
        k = row[4] if len(row) > 4 else kernel
        for i in range(n):
            blocks.append(BlockSpec("mbconv", c, kernel=k, stride=s if i == 0 else 1, expand=t))
    return blocks


def mobilenet_v2(width_mult: float, name: str) -> ArchSpec:
    blocks = [BlockSpec("conv", 32, kernel=3, stride=2)] + stages(MBV2_SETTING)
    blocks.append(BlockSpec("conv", 1280, kernel=1, fixed_width=True))
    # detection taps: last 96-channel block (stride 16) and the 320-channel block (stride 32)
    return ArchSpec(name=name, blocks=tuple(blocks), width_mult=width_mult, head_from=(13, 17),
                    num_classes=1000, description=f"torchvision MobileNetV2, width {width_mult}")


@register("mbv2-w1.0")
def mbv2_w100() -> ArchSpec:
    return mobilenet_v2(1.0, "mbv2-w1.0")


@register("mbv2-w0.35")
def mbv2_w035() -> ArchSpec:
    return mobilenet_v2(0.35, "mbv2-w0.35")


@register("mbv2-w1.0-rd")
def mbv2_w100_rd() -> ArchSpec:
    """MobileNetV2 with its receptive field redistributed (MCUNetV2 Sec. 3.2).

    The per-patch stage (stem up to the first 32-channel block) loses its two stride-1 blocks and
    the stem writes 16 channels directly, so a 7x7 output tile at 28x28 needs a 63x63 input tile
    (MobileNetV2: 75x75). The removed capacity goes to the per-layer stage: one more block in the
    32- and 64-channel stages and 5x5 kernels from the 32-channel stage on.
    """
    setting = [(6, 24, 1, 2, 3), (6, 32, 4, 2, 5), (6, 64, 5, 2, 5), (6, 96, 3, 1, 5), (6, 160, 3, 2, 5), (6, 320, 1, 1, 5)]
    blocks = [BlockSpec("conv", 16, kernel=3, stride=2)] + stages(setting)
    # the first 32-channel block stays 3x3: it belongs to the per-patch stage
    blocks[2] = BlockSpec("mbconv", 32, kernel=3, stride=2, expand=6)
    blocks.append(BlockSpec("conv", 1280, kernel=1, fixed_width=True))
    return ArchSpec(name="mbv2-w1.0-rd", blocks=tuple(blocks), width_mult=1.0, head_from=(13, 17),
                    num_classes=1000, description="MobileNetV2 w1.0, receptive field redistributed (MCUNetV2)")


def _mb(out: int, kernel: int, expand: int, stride: int = 1) -> BlockSpec:
    return BlockSpec("mbconv", out, kernel=kernel, stride=stride, expand=expand)


# MCUNetV2 detection backbones. The paper (Lin et al., NeurIPS 2021, Pascal VOC in Table 3) gives
# their budgets and cost: MCUNetV2-M4 fits the STM32F412's 256 kB SRAM / 1 MB Flash at 172M MACs,
# MCUNetV2-H7 the STM32H743's 512 kB SRAM / 2 MB Flash at 343M MACs,
# both YOLOv3-style detectors found by the joint search with small kernels in the per-patch stage and
# larger kernels/expansions later. The searched block-level configs were published only as
# downloadable JSON files, not in any public source we could read, so these specs are
# reconstructions in the MCUNet search space (kernels 3/5/7, expand 3/4/6) that match the published
# budgets and MACs at the stated resolutions: M4 at 320x320 -> 165M MACs, 0.60M params; H7 at
# 288x288 -> 356M MACs, 1.60M params (20 VOC classes, 3 anchors, head width 64).
@register("mcunetv2-m4")
def mcunetv2_m4() -> ArchSpec:
    blocks = (
        BlockSpec("conv", 16, kernel=3, stride=2), _mb(8, 3, 1),
        _mb(16, 3, 3, 2), _mb(16, 3, 3),
        _mb(24, 3, 4, 2), _mb(24, 5, 3), _mb(24, 3, 3),
        _mb(40, 5, 4, 2), _mb(40, 5, 4), _mb(40, 7, 3),
        _mb(48, 5, 6), _mb(48, 5, 4), _mb(48, 5, 4),
        _mb(96, 7, 6, 2), _mb(96, 5, 4), _mb(96, 5, 6),
        _mb(160, 5, 6),
    )
    return ArchSpec(name="mcunetv2-m4", blocks=blocks, head_from=(12, 16),
                    description="MCUNetV2-M4 detector backbone (reconstruction), 320x320, 256 kB SRAM / 1 MB Flash")


@register("mcunetv2-h7")
def mcunetv2_h7() -> ArchSpec:
    blocks = (
        BlockSpec("conv", 24, kernel=3, stride=2), _mb(16, 3, 1),
        _mb(24, 3, 3, 2), _mb(24, 3, 3),
        _mb(40, 3, 4, 2), _mb(40, 5, 3), _mb(40, 5, 4),
        _mb(64, 5, 4, 2), _mb(64, 5, 4), _mb(64, 7, 3),
        _mb(96, 5, 6), _mb(96, 5, 4), _mb(96, 7, 4),
        _mb(160, 7, 6, 2), _mb(160, 5, 4), _mb(160, 5, 6),
        _mb(256, 5, 6),
    )
    return ArchSpec(name="mcunetv2-h7", blocks=blocks, head_from=(12, 16),
                    description="MCUNetV2-H7 detector backbone (reconstruction), 288x288, 512 kB SRAM / 2 MB Flash")


# ---- MCUNet model zoo --------------------------------------------------------------------------
MCUNET_MEAN = (0.5, 0.5, 0.5)
MCUNET_STD = (0.5, 0.5, 0.5)

# Rows are (kernel, expand, out, stride), one per block, as in the published lists; the
# proxyless lists' two "skip" (zero) blocks are identities and are left out.
MCUNET_ZOO: dict[str, dict] = {
    "mcunet-in0": dict(stem=24, mix=None, eps=1e-5, classes=1000, source="mcunet-10fps_imagenet", rows=[
        (3, 1, 16, 1), (5, 4, 16, 2), (3, 3, 16, 1), (3, 4, 16, 1), (7, 5, 24, 2), (5, 4, 24, 1),
        (5, 5, 24, 1), (7, 5, 48, 2), (5, 4, 48, 1), (3, 5, 56, 1), (5, 4, 56, 1), (3, 5, 56, 1),
        (3, 6, 112, 2), (5, 4, 112, 1), (3, 6, 192, 1)]),
    "mcunet-in1": dict(stem=16, mix=None, eps=1e-5, classes=1000, source="mcunet-5fps_imagenet", rows=[
        (3, 1, 8, 1), (3, 4, 16, 2), (3, 3, 16, 1), (7, 3, 24, 2), (3, 5, 24, 1), (3, 5, 40, 2),
        (7, 4, 40, 1), (5, 4, 48, 1), (3, 3, 48, 1), (3, 4, 48, 1), (7, 5, 96, 2), (5, 4, 96, 1),
        (5, 4, 96, 1), (3, 6, 160, 1)]),
    "mcunet-in2": dict(stem=16, mix=None, eps=1e-5, classes=1000, source="mcunet-256kb-1mb_imagenet", rows=[
        (3, 1, 8, 1), (5, 3, 16, 2), (7, 6, 16, 1), (3, 5, 16, 1), (5, 5, 16, 1), (3, 5, 24, 2),
        (7, 6, 24, 1), (5, 6, 24, 1), (7, 4, 40, 2), (5, 5, 40, 1), (3, 5, 48, 1), (5, 5, 48, 1),
        (3, 4, 48, 1), (5, 6, 96, 2), (5, 4, 96, 1), (5, 3, 96, 1), (3, 4, 96, 1), (5, 5, 160, 1)]),
    "mcunet-in3": dict(stem=16, mix=None, eps=1e-5, classes=1000, source="mcunet-320kb-1mb_imagenet", rows=[
        (3, 1, 8, 1), (7, 3, 16, 2), (3, 5, 16, 1), (7, 5, 16, 1), (5, 4, 16, 1), (5, 5, 24, 2),
        (5, 5, 24, 1), (5, 5, 24, 1), (3, 5, 40, 2), (7, 6, 40, 1), (5, 4, 40, 1), (5, 5, 48, 1),
        (7, 5, 48, 1), (3, 5, 48, 1), (3, 6, 96, 2), (7, 5, 96, 1), (3, 4, 96, 1), (7, 5, 160, 1)]),
    "mcunet-in4": dict(stem=32, mix=None, eps=1e-5, classes=1000, source="mcunet-512kb-2mb_imagenet", rows=[
        (3, 1, 16, 1), (7, 3, 24, 2), (3, 5, 24, 1), (5, 4, 24, 1), (7, 5, 40, 2), (3, 4, 40, 1),
        (7, 4, 40, 1), (7, 3, 80, 2), (3, 3, 80, 1), (7, 3, 80, 1), (3, 4, 96, 1), (5, 3, 96, 1),
        (5, 3, 96, 1), (7, 4, 192, 2), (7, 3, 192, 1), (5, 3, 192, 1), (5, 4, 320, 1)]),
    "mcunet-vww0": dict(stem=16, mix=None, eps=1e-5, classes=2, source="mcunet-10fps_vww", rows=[
        (3, 1, 8, 1), (5, 6, 16, 2), (3, 4, 16, 1), (3, 5, 24, 2), (3, 4, 24, 1), (3, 4, 24, 1),
        (3, 5, 40, 2), (3, 4, 40, 1), (7, 3, 40, 1), (3, 3, 48, 1), (3, 4, 48, 1), (7, 5, 96, 2),
        (5, 5, 96, 1), (7, 4, 160, 1)]),
    "mcunet-vww1": dict(stem=16, mix=None, eps=1e-5, classes=2, source="mcunet-5fps_vww", rows=[
        (3, 1, 8, 1), (3, 6, 16, 2), (3, 3, 16, 1), (3, 3, 16, 1), (7, 3, 24, 2), (3, 6, 24, 1),
        (5, 5, 24, 1), (7, 6, 40, 2), (7, 6, 40, 1), (3, 6, 48, 1), (3, 4, 48, 1), (5, 5, 96, 2),
        (3, 5, 96, 1), (3, 4, 96, 1), (7, 3, 160, 1)]),
    "mcunet-vww2": dict(stem=16, mix=None, eps=1e-5, classes=2, source="mcunet-320kb-1mb_vww", rows=[
        (3, 1, 8, 1), (3, 3, 16, 2), (3, 5, 16, 1), (5, 6, 16, 1), (3, 3, 16, 1), (7, 5, 24, 2),
        (5, 4, 24, 1), (3, 4, 24, 1), (7, 6, 24, 1), (3, 6, 40, 2), (7, 6, 40, 1), (5, 4, 40, 1),
        (3, 5, 40, 1), (5, 5, 48, 1), (5, 3, 48, 1), (3, 4, 48, 1), (5, 3, 48, 1), (3, 4, 96, 2),
        (5, 5, 96, 1), (5, 4, 96, 1), (3, 4, 96, 1), (3, 5, 160, 1)]),
    "mcunet-mbv2-w0.35": dict(stem=16, mix=448, eps=1e-3, classes=1000, source="mbv2-w0.35-r144_imagenet", rows=[
        (3, 1, 8, 1), (3, 6, 8, 2), (3, 6, 8, 1), (3, 6, 16, 2), (3, 6, 16, 1), (3, 6, 16, 1),
        (3, 6, 24, 2), (3, 6, 24, 1), (3, 6, 24, 1), (3, 6, 24, 1), (3, 6, 32, 1), (3, 6, 32, 1),
        (3, 6, 32, 1), (3, 6, 56, 2), (3, 6, 56, 1), (3, 6, 56, 1), (3, 6, 112, 1)]),
    "mcunet-proxyless-w0.3": dict(stem=16, mix=384, eps=1e-3, classes=1000, source="proxyless-w0.3-r176_imagenet", rows=[
        (3, 1, 8, 1), (5, 3, 16, 2), (3, 3, 16, 1), (7, 3, 16, 2), (3, 3, 16, 1), (5, 3, 16, 1),
        (5, 3, 16, 1), (7, 6, 24, 2), (5, 3, 24, 1), (5, 3, 24, 1), (5, 3, 24, 1), (5, 6, 32, 1),
        (5, 3, 32, 1), (5, 3, 32, 1), (5, 3, 32, 1), (7, 6, 64, 2), (7, 6, 64, 1), (7, 3, 64, 1),
        (7, 3, 64, 1), (7, 6, 96, 1)]),
}


def detection_taps(blocks: "tuple[BlockSpec, ...] | list[BlockSpec]", last: int) -> tuple[int, ...]:
    """The last block at total stride 16 and block ``last`` (stride 32): the detector's taps."""
    at16 = feature_taps(blocks[: last + 1]).get("stride16")
    return (at16, last) if at16 is not None else (last,)


def mcunet_zoo(name: str) -> ArchSpec:
    """The spec of one MCUNet-zoo network (see :data:`MCUNET_ZOO`)."""
    entry = MCUNET_ZOO[name]
    blocks = [BlockSpec("conv", entry["stem"], kernel=3, stride=2)]
    blocks += [BlockSpec("mbconv", out, kernel=k, stride=s, expand=e) for k, e, out, s in entry["rows"]]
    taps = detection_taps(blocks, len(blocks) - 1)
    if entry["mix"]:
        blocks.append(BlockSpec("conv", entry["mix"], kernel=1))
    return ArchSpec(name=name, blocks=tuple(blocks), head_from=taps, num_classes=entry["classes"],
                    absolute_channels=True, bn_eps=entry["eps"], input_mean=MCUNET_MEAN, input_std=MCUNET_STD,
                    description=f"MCUNet zoo {entry['source']}; detector taps: blocks {list(taps)} (stride 16, 32)")


for _name in MCUNET_ZOO:
    register(_name)(lambda _name=_name: mcunet_zoo(_name))


# ---- MIT's person-detection demo model ------------------------------------------------------
# Transcribed from the official int8 model (mit-han-lab/tinyengine @ 47bb283 assets/detection.tflite,
# decode parameters in assets/detection_config.json): every conv's shape, every ADD's two inputs
# and every fused activation read from the file. Input 128x160 (HxW), preprocessing (x/255)*2-1
# (mean 0.5, std 0.5 on the [0, 1] scale), YOLOv3 outputs at strides 8/16/32, one class (person).
PERSON_DET_ANCHORS = (((10, 13), (16, 30), (33, 23)),       # stride 8
                      ((30, 61), (62, 45), (59, 119)),      # stride 16
                      ((116, 90), (156, 198), (373, 326)))  # stride 32
PERSON_DET_RESOLUTION = (128, 160)


def _neck(name: str, type: str, *inputs: str, **kw) -> "NeckNode":
    return NeckNode(name=name, type=type, inputs=tuple(inputs), **kw)


@register("mcunet-person-det")
def mcunet_person_det() -> ArchSpec:
    """MCUNet person-det: 10-block backbone, PAN-style neck (top-down with nearest x2 and adds,
    bottom-up with 2x2 max-pools and adds, small inverted residuals), person-det heads."""
    blocks = (
        BlockSpec("conv", 16, kernel=3, stride=2),
        BlockSpec("mbconv", 16, kernel=3, expand=1, residual=False),
        _mb(16, 3, 2, 2), _mb(16, 3, 4, 2), _mb(16, 3, 3),   # block 4: stride8 (P3)
        _mb(32, 3, 3, 2), BlockSpec("mbconv", 32, kernel=3, expand=6, residual=False),  # block 6: stride16 (P4)
        _mb(48, 3, 4, 2), _mb(48, 3, 4), _mb(48, 3, 4),      # block 9: stride32 (P5)
    )
    neck = NeckSpec(nodes=(
        # top-down
        _neck("p5_lat", "conv", "stride32", out=32),
        _neck("p5_up", "upsample", "p5_lat"),
        _neck("p4_sum", "add", "p5_up", "stride16"),
        _neck("p4_td", "mbconv", "p4_sum", out=32, expand=3, kernel=3),
        _neck("p4_lat", "conv", "p4_td", out=16),
        _neck("p4_up", "upsample", "p4_lat"),
        _neck("p3_sum", "add", "p4_up", "stride8"),
        _neck("n3", "mbconv", "p3_sum", out=16, expand=2, kernel=3),
        # bottom-up
        _neck("n3_down", "maxpool", "n3"),
        _neck("n3_lat", "conv", "n3_down", out=32),
        _neck("n4_sum", "add", "n3_lat", "p4_td"),
        _neck("n4", "mbconv", "n4_sum", out=32, expand=2, kernel=3),
        _neck("n4_down", "maxpool", "n4"),
        _neck("n4_lat", "conv", "n4_down", out=48),
        _neck("n5_sum", "add", "n4_lat", "stride32"),
        _neck("n5", "mbconv", "n5_sum", out=48, expand=2, kernel=3),
    ), outputs=("n3", "n4", "n5"))
    head = HeadLayout(template="expand", kernel=3, expand=(64, 64, 192), channels=(48, 96, 144))
    return ArchSpec(name="mcunet-person-det", blocks=blocks, head_from=(4, 6, 9), absolute_channels=True,
                    input_mean=MCUNET_MEAN, input_std=MCUNET_STD, neck=neck, head=head,
                    description="MIT MCUNet person-det demo (tinyengine assets/detection.tflite), 128x160, "
                                "PAN-style neck, YOLOv3 heads at strides 8/16/32")
