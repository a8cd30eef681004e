"""Training: config loading (``config``), the LightningModule (``module``), the runner (``run``),
and the prediction API (``predict``). Checkpoints are read by :mod:`tinydet.io.checkpoint`.

Import the submodules directly; only ``module`` and ``run`` import Lightning.
"""
