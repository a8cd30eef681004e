"""Markers for tests that need a tool the project cannot install by itself.

ARM's CMSIS-NN is in no package registry (pip, apt, npm): the tests that build the firmware against
it run only when ``CMSIS_NN_ROOT`` names a source tree (github.com/ARM-software/CMSIS-NN).
"""
import os

import pytest

cmsis_nn = pytest.mark.skipif(
    not os.environ.get("CMSIS_NN_ROOT"),
    reason="ARM's CMSIS-NN is in no package registry: set CMSIS_NN_ROOT to its source tree "
           "(github.com/ARM-software/CMSIS-NN)")
