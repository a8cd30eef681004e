"""Training: the LightningModule (``module``) and the runner (``run``).
Checkpoints are read by :mod:`tinydet.io.checkpoint`; predictions are :mod:`tinydet.pipeline.predict`.

Import the submodules directly; only ``module`` and ``run`` import Lightning.
"""
