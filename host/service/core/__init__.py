"""The service layer: plain values in, dataclasses out; the CLI and the API both call it.

Nothing here knows HTTP or argparse, prints, or prompts.
"""
