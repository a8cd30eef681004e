"""Deployment: C code generation, builds for host / QEMU / boards, runs and validation.

Reads only an export folder (DESIGN.md); never imports torch or Lightning.
"""
