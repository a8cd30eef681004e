"""Training: config loading (``config``), the LightningModule (``module``), the runner (``run``),
checkpoints and ``load_detector`` (``checkpoint``), and the prediction API (``predict``).

Import the submodules directly; only ``module`` and ``run`` import Lightning.
"""
