"""``search --resume`` over a damaged supernet.ckpt (issue 17, point 11): a one-line error naming
the file, not torch's traceback."""
from __future__ import annotations

import pytest

from tinydet.arch import HeadSpec
from tinydet.errors import TinydetError
from tinydet.nas.estimator import load_supernet, save_supernet
from tinydet.nas.space import SearchSpace, StageSpace
from tinydet.nas.supernet import Supernet

SPACE = SearchSpace(
    stages=(StageSpace(8, 1, (1,), kernels=(3,), expands=(1,)), StageSpace(16, 2, (1, 2))),
    kernels=(3,), expands=(3,), widths=(1.0,), resolutions=(64,), grids=(1, 2),
    stem_out=8, head_stages=(1,), max_split_stage=1)
HEAD = HeadSpec(num_classes=2, num_anchors=2, channels=8)


def test_truncated_supernet_checkpoint_is_a_one_line_error(tmp_path):
    supernet, path, meta = Supernet(SPACE, HEAD), tmp_path / "supernet.ckpt", {"epochs": 1}
    save_supernet(supernet, path, meta)
    assert load_supernet(Supernet(SPACE, HEAD), path, meta) is True
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # a copy cut short
    with pytest.raises(TinydetError, match=r"supernet\.ckpt: not a readable supernet checkpoint \(delete it to "
                                           r"train the supernet again\)") as info:
        load_supernet(Supernet(SPACE, HEAD), path, meta)
    assert "\n" not in str(info.value)
