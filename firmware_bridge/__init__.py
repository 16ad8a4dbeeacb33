"""Firmware sources for int8 ids-edge models in TensorFlow Lite Micro: ``ids-edge firmware``."""

from firmware_bridge.generate import DEFAULT_ARENA_MARGIN, FirmwareResult, generate_firmware

__all__ = ["DEFAULT_ARENA_MARGIN", "FirmwareResult", "generate_firmware"]
