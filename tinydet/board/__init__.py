"""The board loop: the serial protocol (protocol.py), links to a device (link.py, qemu.py) and the
streaming demo behind ``tinydet board run`` (run.py). Spec: docs/board_protocol.md."""
