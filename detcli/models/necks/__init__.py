"""Necks (registered in NECKS)."""

from detcli.models.necks.fpn import FPN
from detcli.models.necks.yolox_pafpn import YOLOXPAFPN

__all__ = ["FPN", "YOLOXPAFPN"]
