#!/usr/bin/env python
"""Thin wrapper: `python tools/export.py ARGS` == `tinydet export ARGS`."""
import sys

from tinydet.cli import main

sys.exit(main(["export", *sys.argv[1:]]))
