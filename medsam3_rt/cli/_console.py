"""Deprecated alias of `medsam3_rt.cli.console` (kept so older command code keeps importing)."""

from .console import STATE, err_console, out_console, say

__all__ = ["STATE", "err_console", "out_console", "say"]
