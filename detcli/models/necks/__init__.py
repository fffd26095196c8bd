"""Necks (registered in NECKS)."""

from detcli.models.necks.fpn import FPN

__all__ = ["FPN"]
