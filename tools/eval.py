#!/usr/bin/env python
"""Thin wrapper: `python tools/eval.py ARGS` == `tinydet eval ARGS`."""
import sys

from tinydet.cli import main

sys.exit(main(["eval", *sys.argv[1:]]))
