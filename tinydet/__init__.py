"""tinydet: object detection for microcontrollers, from YAML config to Cortex-M7 firmware."""

__version__ = "0.1.0"
