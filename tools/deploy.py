#!/usr/bin/env python
"""Thin wrapper: `python tools/deploy.py ARGS` == `tinydet deploy ARGS`."""
import sys

from tinydet.cli import main

sys.exit(main(["deploy", *sys.argv[1:]]))
