"""Shared helpers of the export tests (tiny random networks), and tests of the tile pad arithmetic."""
import pytest
import torch

from tinydet.arch import build
from tinydet.arch.spec import ArchSpec, BlockSpec, HeadSpec
from tinydet.errors import TinydetError

HEAD = HeadSpec(num_classes=2, num_anchors=2, channels=16)


def tiny_spec(width: float = 1.0, num_classes: int = 0) -> ArchSpec:
    """6 blocks, residuals in blocks 1, 3 and 5 (block 1 without expansion), a 5x5 kernel, two head taps."""
    blocks = (BlockSpec("conv", 8, 3, 2), BlockSpec("mbconv", 8, 3, 1, 1), BlockSpec("mbconv", 16, 3, 2, 4),
              BlockSpec("mbconv", 16, 3, 1, 4), BlockSpec("mbconv", 24, 5, 2, 4), BlockSpec("mbconv", 24, 3, 1, 4))
    return ArchSpec("tiny", blocks, width_mult=width, head_from=(3, 5), num_classes=num_classes)


def random_network(spec: ArchSpec, head: HeadSpec | None = HEAD, seed: int = 0):
    """A built network with randomised BN statistics and affine parameters (so folding matters), in eval mode."""
    torch.manual_seed(seed)
    model = build(spec, head=head)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.3, 2.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
            elif isinstance(m, torch.nn.Conv2d) and m.bias is not None:
                m.bias.uniform_(-0.2, 0.2)
    return model.eval()
