"""Data sets: VOC and WIDER Face loaders, the synthetic generator, letterbox/augmentation, DataModule.

Import the submodules directly (``tinydet.data.records``, ``.datamodule``, ``.transforms``,
``.synth``, ``.anchors``) so that light users do not pay for torch/Lightning imports.
"""
