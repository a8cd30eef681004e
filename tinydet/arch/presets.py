"""Built-in architecture presets.

``mbv2-*`` reproduce torchvision's MobileNetV2 exactly (layer shapes, MACs, params), classifier
included, so figures compare with the literature; detectors use the blocks up to ``head_from``.
"""
from __future__ import annotations

from tinydet.arch.registry import register
from tinydet.arch.spec import ArchSpec, BlockSpec

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


# MCUNetV2 detection backbones. The paper (Lin et al., NeurIPS 2021, Table 5) gives their budgets and
# cost: M4 fits 256 kB SRAM / 1 MB Flash at 172M MACs, H7 fits 512 kB SRAM / 2 MB Flash at ~343M MACs,
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
