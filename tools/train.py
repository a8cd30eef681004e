#!/usr/bin/env python
"""Thin wrapper: `python tools/train.py ARGS` == `tinydet train ARGS`."""
import sys

from tinydet.cli import main

sys.exit(main(["train", *sys.argv[1:]]))
