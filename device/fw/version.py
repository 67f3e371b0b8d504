"""Firmware version, announced in HELLO."""

VERSION = "1.0.0"
