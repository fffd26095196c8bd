"""Mask head of Mask R-CNN (mmdet 2.x ``FCNMaskHead`` semantics) and pasting masks into images."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from detcli.errors import ConfigError
from detcli.models.losses import CrossEntropyLoss
from detcli.models.necks.fpn import conv_module
from detcli.registry import HEADS
from detcli.structures.masks import BitmapMasks, PolygonMasks

UPSAMPLE_TYPES = ("deconv", "nearest", "bilinear")
#: How :meth:`FCNMaskHead.predict` pastes masks: :func:`paste_masks` (mmdet) or :func:`paste_masks_torchvision`.
PASTE_MODES = ("mmdet", "torchvision")

#: Upper bound of the float elements of one chunk of pasted masks (about 64 MB of float32).
PASTE_CHUNK_ELEMENTS = 1 << 24


def _check_conv_cfg(conv_cfg: Mapping[str, Any] | None) -> None:
    if conv_cfg is not None and conv_cfg.get("type") not in ("Conv", "Conv2d"):
        raise ConfigError(f"mask_head.conv_cfg: only plain convolutions (type Conv2d) are supported, got {dict(conv_cfg)}")


def _parse_upsample(upsample_cfg: Mapping[str, Any] | None) -> tuple[str | None, int]:
    cfg = {"type": "deconv", "scale_factor": 2} if upsample_cfg is None else dict(upsample_cfg)
    kind = cfg.pop("type", None)
    scale = cfg.pop("scale_factor", 2)
    cfg.pop("align_corners", None)  # bilinear always uses align_corners=False (mmdet's default)
    if cfg:
        raise ConfigError(f"mask_head.upsample_cfg: unknown keys {sorted(cfg)} (allowed: type, scale_factor)")
    if kind is not None and kind not in UPSAMPLE_TYPES:
        raise ConfigError(f"mask_head.upsample_cfg.type must be one of {', '.join(UPSAMPLE_TYPES)} or null, got {kind!r}")
    if int(scale) != scale or scale < 1:  # type: ignore[arg-type]
        raise ConfigError(f"mask_head.upsample_cfg.scale_factor must be a positive integer, got {scale!r}")
    return kind, int(scale)


@HEADS.register()
class FCNMaskHead(nn.Module):
    """``num_convs`` 3x3 conv + ReLU blocks on the RoI features, a 2x upsampling and a 1x1 conv to
    one mask logit map per class (or one map with ``class_agnostic``).

    Args:
        num_convs: convs before the upsampling.
        roi_feat_size: side of the input RoI features (14 in Mask R-CNN).
        in_channels: channels of the RoI features.
        conv_kernel_size: kernel of the convs (odd; same padding).
        conv_out_channels: channels of the convs and of the upsampling.
        num_classes: foreground classes ``C``.
        class_agnostic: one mask per RoI instead of one per class.
        upsample_cfg: ``{type: deconv | nearest | bilinear, scale_factor: 2}`` (default deconv x2);
            ``null`` type keeps the input size.
        conv_cfg: None or ``{type: Conv2d}``.
        norm_cfg: norm after each conv (``GN``/``BN``) or None.
        loss_mask: built loss (default ``CrossEntropyLoss(use_mask=True, loss_weight=1.0)``).
        paste_mode: ``mmdet`` (:func:`paste_masks`, bilinear sampling of the box at every image pixel)
            or ``torchvision`` (:func:`paste_masks_torchvision`: the mask padded by one cell and resized
            to the integer box, as torchvision's ``paste_masks_in_image``).
        init_cfg: must be None (the head initialises itself like mmdet: Kaiming normal, fan_out).

    Shapes: ``forward(Tensor[K, in_channels, s, s]) -> Tensor[K, C or 1, s * scale, s * scale]``.
    """

    def __init__(
        self,
        num_convs: int = 4,
        roi_feat_size: int = 14,
        in_channels: int = 256,
        conv_kernel_size: int = 3,
        conv_out_channels: int = 256,
        num_classes: int = 80,
        class_agnostic: bool = False,
        upsample_cfg: Mapping[str, Any] | None = None,
        conv_cfg: Mapping[str, Any] | None = None,
        norm_cfg: Mapping[str, Any] | None = None,
        loss_mask: nn.Module | None = None,
        paste_mode: str = "mmdet",
        init_cfg: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ConfigError(f"mask_head.num_classes must be >= 1, got {num_classes}")
        if paste_mode not in PASTE_MODES:
            raise ConfigError(f"mask_head.paste_mode must be one of {', '.join(PASTE_MODES)}, got {paste_mode!r}")
        self.paste_mode = paste_mode
        if conv_kernel_size % 2 != 1:
            raise ConfigError(f"mask_head.conv_kernel_size must be odd, got {conv_kernel_size}")
        if init_cfg is not None:
            raise ConfigError("mask_head.init_cfg must be null: FCNMaskHead initialises its own weights")
        _check_conv_cfg(conv_cfg)
        self.num_convs = num_convs
        self.roi_feat_size = roi_feat_size
        self.in_channels = in_channels
        self.conv_out_channels = conv_out_channels
        self.num_classes = num_classes
        self.class_agnostic = class_agnostic
        self.upsample_method, self.scale_factor = _parse_upsample(upsample_cfg)
        self.loss_mask = loss_mask if loss_mask is not None else CrossEntropyLoss(use_mask=True, loss_weight=1.0)
        self.convs = nn.Sequential(*[
            conv_module(in_channels if i == 0 else conv_out_channels, conv_out_channels, conv_kernel_size,
                        norm_cfg=norm_cfg, act=True)
            for i in range(num_convs)])
        up_in = conv_out_channels if num_convs > 0 else in_channels
        self.upsample: nn.Module | None
        if self.upsample_method == "deconv":
            self.upsample = nn.ConvTranspose2d(up_in, conv_out_channels, self.scale_factor, stride=self.scale_factor)
            logits_in = conv_out_channels
        elif self.upsample_method is not None:
            align = False if self.upsample_method == "bilinear" else None
            self.upsample = nn.Upsample(scale_factor=self.scale_factor, mode=self.upsample_method, align_corners=align)
            logits_in = up_in
        else:
            self.upsample = None
            logits_in = up_in
        self.relu = nn.ReLU(inplace=True)
        self.conv_logits = nn.Conv2d(logits_in, 1 if class_agnostic else num_classes, 1)
        self.init_weights()

    @property
    def mask_size(self) -> int:
        """Side of the predicted masks (``roi_feat_size * scale_factor``, 28 by default)."""
        return self.roi_feat_size * (self.scale_factor if self.upsample_method is not None else 1)

    def init_weights(self) -> None:
        """Kaiming normal (fan_out, ReLU) for every conv/deconv weight, zero biases."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, mask_feats: Tensor) -> Tensor:
        """``Tensor[K, C_in, s, s]`` RoI features -> ``Tensor[K, C or 1, 2s, 2s]`` mask logits."""
        x = self.convs(mask_feats)
        if self.upsample is not None:
            x = self.upsample(x)
            if self.upsample_method == "deconv":
                x = self.relu(x)
        return self.conv_logits(x)

    def get_targets(self, pos_proposals: Sequence[Tensor], pos_assigned_gt_inds: Sequence[Tensor],
                    gt_masks: Sequence[BitmapMasks | PolygonMasks], mask_size: int) -> Tensor:
        """Binary target of each positive: its GT mask cropped to the proposal and resized.

        Args:
            pos_proposals: per image ``Tensor[k_i, 4]`` xyxy positive proposals.
            pos_assigned_gt_inds: per image ``Tensor[k_i]`` index of the matched GT.
            gt_masks: per image the GT masks (in the same coordinates as the proposals).
            mask_size: side of the targets.

        Returns:
            ``Tensor[sum k_i, mask_size, mask_size]`` float32 of 0/1 on the proposals' device.
        """
        if not (len(pos_proposals) == len(pos_assigned_gt_inds) == len(gt_masks)):
            raise ValueError(f"get_targets: {len(pos_proposals)} proposal sets, {len(pos_assigned_gt_inds)} "
                             f"index sets and {len(gt_masks)} mask sets (one of each per image)")
        device = pos_proposals[0].device if len(pos_proposals) else torch.device("cpu")
        parts = []
        for boxes, inds, masks in zip(pos_proposals, pos_assigned_gt_inds, gt_masks):
            if boxes.shape[0] == 0:
                continue
            cropped = masks.crop_and_resize(boxes, (mask_size, mask_size), inds=inds, device=boxes.device)
            parts.append(torch.from_numpy(cropped.to_ndarray()))
        if not parts:
            return torch.zeros(0, mask_size, mask_size, device=device)
        return torch.cat(parts).to(device=device, dtype=torch.float32)

    def loss(self, mask_logits: Tensor, mask_targets: Tensor, labels: Tensor) -> dict[str, Tensor]:
        """``{"loss_mask"}``: binary cross-entropy of each RoI on its label's channel (channel 0
        when class-agnostic); no RoI gives a zero loss connected to ``mask_logits``."""
        if mask_logits.shape[0] == 0:
            return {"loss_mask": mask_logits.sum() * 0}
        if self.class_agnostic:
            labels = torch.zeros_like(labels)
        return {"loss_mask": self.loss_mask(mask_logits, mask_targets, labels)}

    def predict(self, mask_logits: Tensor, boxes: Tensor, labels: Tensor, image_size: tuple[int, int],
                mask_thr_binary: float = 0.5) -> Tensor:
        """Image-sized masks of the detections.

        Args:
            mask_logits: ``Tensor[n, C or 1, M, M]``.
            boxes: ``Tensor[n, 4]`` xyxy in the coordinates of ``image_size``.
            labels: ``Tensor[n]`` classes (picks the channel; ignored when class-agnostic).
            image_size: ``(h, w)`` of the output masks.
            mask_thr_binary: probabilities ``>=`` it are foreground; a negative value returns the
                pasted probabilities (float32) instead of a bool mask.

        Returns:
            ``Tensor[n, h, w]`` bool (float32 probabilities when ``mask_thr_binary < 0``).
        """
        n = mask_logits.shape[0]
        if n and mask_logits.shape[1] > 1 and not self.class_agnostic:  # the label's channel only
            mask_logits = mask_logits[torch.arange(n, device=mask_logits.device), labels.long()][:, None]
        return self.paste_probs(mask_logits[:, :1].sigmoid(), boxes, labels, image_size, mask_thr_binary)

    def paste_probs(self, mask_probs: Tensor, boxes: Tensor, labels: Tensor, image_size: tuple[int, int],
                    mask_thr_binary: float = 0.5) -> Tensor:
        """:meth:`predict` from probabilities ``Tensor[n, C or 1, M, M]`` instead of logits (for
        probabilities merged from several heads, as Cascade Mask R-CNN's test does)."""
        n = mask_probs.shape[0]
        if n == 0:
            dtype = torch.bool if mask_thr_binary >= 0 else torch.float32
            return torch.zeros(0, int(image_size[0]), int(image_size[1]), dtype=dtype, device=mask_probs.device)
        if mask_probs.shape[1] == 1 or self.class_agnostic:
            probs = mask_probs[:, 0]
        else:
            probs = mask_probs[torch.arange(n, device=mask_probs.device), labels.long()]
        if self.paste_mode == "torchvision":
            return paste_masks_torchvision(probs, boxes, image_size, mask_thr_binary)
        return paste_masks(probs, boxes, image_size, mask_thr_binary)


def axis_weights(lo: Tensor, hi: Tensor, pixels: Tensor, size: int) -> Tensor:
    """Bilinear weights ``(n, L, size)`` of the output pixels ``pixels`` (``(L,)`` shared or ``(n, L)``
    per box; centres at ``pixels + 0.5``) over a mask of ``size`` cells stretched over ``[lo, hi]``
    (grid_sample, align_corners=False, zero padding). Torch ops on tensors only, so the export graph
    (:mod:`detcli.models.deploy_two_stage`) traces it with dynamic image sizes."""
    pos = (pixels + 0.5 - lo[:, None]) / (hi - lo).clamp(min=1e-6)[:, None] * size - 0.5  # (n, L) in mask cells
    cells = torch.arange(size, device=lo.device, dtype=lo.dtype)
    return (1 - (pos[:, :, None] - cells).abs()).clamp(min=0)


def paste_masks(masks: Tensor, boxes: Tensor, image_size: tuple[int, int], threshold: float = 0.5) -> Tensor:
    """Paste each ``M x M`` probability map into its box of an image (mmdet's "paste masks").

    Bilinear sampling of every image pixel centre, exactly like ``grid_sample`` over the whole image
    (``align_corners=False``, zeros outside the mask), but computed only in the window each box can
    reach and as two small matrix products per mask (bilinear weights are separable), in chunks of
    masks with similar window sizes to bound memory.

    Args:
        masks: ``Tensor[n, M, M]`` probabilities.
        boxes: ``Tensor[n, 4]`` xyxy in image pixels.
        image_size: ``(h, w)``.
        threshold: ``>= threshold`` is foreground; negative: return the float probabilities.

    Returns:
        ``Tensor[n, h, w]`` bool, or float32 when ``threshold < 0``.
    """
    h, w = int(image_size[0]), int(image_size[1])
    n, mh, mw = masks.shape
    binary = threshold >= 0
    out = torch.zeros(n, h, w, dtype=torch.bool if binary else torch.float32, device=masks.device)
    if n == 0 or h == 0 or w == 0:
        return out
    if binary and threshold <= 0:  # every probability is >= 0
        return out.fill_(True)
    masks = masks.float()
    boxes = boxes.float()
    x0, y0, x1, y1 = boxes.unbind(1)
    # A mask cell covers (box side / M); samples half a cell beyond the mask still get weight.
    mx = (x1 - x0).clamp(min=0) / mw
    my = (y1 - y0).clamp(min=0) / mh
    left = (x0 - mx - 1).floor().clamp(0, w).long()
    right = (x1 + mx + 1).ceil().clamp(0, w).long()
    top = (y0 - my - 1).floor().clamp(0, h).long()
    bottom = (y1 + my + 1).ceil().clamp(0, h).long()
    hs, ws = (bottom - top).tolist(), (right - left).tolist()
    tops, lefts = top.tolist(), left.tolist()
    chunks: list[tuple[list[int], int, int]] = []
    cur: list[int] = []
    ch = cw = used = 0
    for i in sorted(range(n), key=lambda k: hs[k] * ws[k]):  # similar windows share a chunk
        nh, nw = max(ch, hs[i]), max(cw, ws[i])
        padded = (len(cur) + 1) * nh * nw
        # a new chunk when memory would exceed the bound or padding would exceed half the work
        if cur and (padded > PASTE_CHUNK_ELEMENTS or padded > 1.5 * (used + hs[i] * ws[i])):
            chunks.append((cur, ch, cw))
            cur, nh, nw, used = [], hs[i], ws[i], 0
        cur.append(i)
        ch, cw, used = nh, nw, used + hs[i] * ws[i]
    chunks.append((cur, ch, cw))
    for members, ch, cw in chunks:
        if ch == 0 or cw == 0:
            continue
        idx = torch.tensor(members, device=masks.device)
        rows = top[idx].to(masks.dtype)[:, None] + torch.arange(ch, device=masks.device, dtype=masks.dtype)
        cols = left[idx].to(masks.dtype)[:, None] + torch.arange(cw, device=masks.device, dtype=masks.dtype)
        wy = axis_weights(y0[idx], y1[idx], rows, mh)  # (c, ch, M)
        wx = axis_weights(x0[idx], x1[idx], cols, mw)  # (c, cw, M)
        local = torch.bmm(torch.bmm(wy, masks[idx]), wx.transpose(1, 2))  # (c, ch, cw)
        values = local >= threshold if binary else local
        for j, i in enumerate(members):
            t, lf = tops[i], lefts[i]
            out[i, t:t + hs[i], lf:lf + ws[i]] = values[j, :hs[i], :ws[i]]
    return out


def paste_masks_torchvision(masks: Tensor, boxes: Tensor, image_size: tuple[int, int], threshold: float = 0.5,
                            padding: int = 1) -> Tensor:
    """Paste masks like torchvision's ``paste_masks_in_image`` (Mask R-CNN ``roi_heads.py``).

    Each ``M x M`` mask is zero-padded by ``padding`` cells, its box is grown by the same factor
    ``(M + 2 padding) / M`` about its centre and truncated to integers (towards zero), the padded
    mask is resized with bilinear ``interpolate`` (``align_corners=False``) to ``(y2 - y1 + 1, x2 - x1 + 1)``
    pixels and copied into the image at ``(x1, y1)``, cut to the image. Unlike :func:`paste_masks`
    the box is rounded to whole pixels and one pixel wider than its float size.

    Args:
        masks: ``Tensor[n, M, M]`` probabilities.
        boxes: ``Tensor[n, 4]`` xyxy in image pixels.
        image_size: ``(h, w)``.
        threshold: ``>= threshold`` is foreground; negative: return the probabilities (dtype of ``masks``).
        padding: cells of zeros around each mask (torchvision: 1).

    Returns:
        ``Tensor[n, h, w]`` bool, or ``masks.dtype`` probabilities when ``threshold < 0``.
    """
    import torch.nn.functional as F

    h, w = int(image_size[0]), int(image_size[1])
    n, m = masks.shape[0], masks.shape[-1]
    binary = threshold >= 0
    probs = masks.new_zeros((n, h, w))
    if n == 0 or h == 0 or w == 0:
        return probs.bool() if binary else probs
    scale = float(m + 2 * padding) / m
    padded = F.pad(masks, (padding,) * 4)  # (n, M + 2p, M + 2p)
    boxes = boxes.to(masks.dtype)
    w_half = (boxes[:, 2] - boxes[:, 0]) * 0.5 * scale
    h_half = (boxes[:, 3] - boxes[:, 1]) * 0.5 * scale
    x_c = (boxes[:, 2] + boxes[:, 0]) * 0.5
    y_c = (boxes[:, 3] + boxes[:, 1]) * 0.5
    grown = torch.stack([x_c - w_half, y_c - h_half, x_c + w_half, y_c + h_half], dim=1).to(torch.int64)  # (n, 4)
    for i, (bx0, by0, bx1, by1) in enumerate(grown.tolist()):
        bw, bh = max(bx1 - bx0 + 1, 1), max(by1 - by0 + 1, 1)
        resized = F.interpolate(padded[i][None, None], size=(bh, bw), mode="bilinear", align_corners=False)[0, 0]
        x0, x1, y0, y1 = max(bx0, 0), min(bx1 + 1, w), max(by0, 0), min(by1 + 1, h)
        if x1 <= x0 or y1 <= y0:
            continue
        probs[i, y0:y1, x0:x1] = resized[y0 - by0:y1 - by0, x0 - bx0:x1 - bx0]
    return probs >= threshold if binary else probs
