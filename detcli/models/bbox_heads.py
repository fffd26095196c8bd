"""Second-stage box heads on pooled RoI features (mmdet 2.x ``ConvFCBBoxHead`` / ``Shared2FCBBoxHead``).

A head maps RoI features ``(K, C, S, S)`` to class logits ``(K, num_classes + 1 + E)`` (softmax; the
background is the LAST of the first ``num_classes + 1``; ``E = num_extra_cls_logits`` rows after it take
part in the softmax and are dropped afterwards) and box deltas ``(K, 4 * num_classes)`` (one set per class) or
``(K, 4)`` with ``reg_class_agnostic``. Deltas are relative to the RoI, encoded with
:class:`DeltaXYWHBBoxCoder` (default stds 0.1, 0.1, 0.2, 0.2).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from detcli.errors import ConfigError
from detcli.models.coders import DeltaXYWHBBoxCoder
from detcli.models.losses import CrossEntropyLoss, SmoothL1Loss
from detcli.models.necks.fpn import conv_module
from detcli.ops import multiclass_nms
from detcli.registry import HEADS
from detcli.structures import Boxes, Detections


def accuracy(logits: Tensor, labels: Tensor) -> Tensor:
    """Top-1 accuracy in percent (``0`` for no rows), as a detached scalar."""
    if labels.numel() == 0:
        return logits.new_zeros(())
    # mmdet's float32 order of operations (count * (100 / n)), so the logged value is bit-identical
    return (logits.detach().argmax(dim=1) == labels).float().sum() * (100.0 / labels.numel())


@HEADS.register()
class ConvFCBBoxHead(nn.Module):
    """Shared convs -> shared fcs -> {cls convs -> cls fcs -> cls, reg convs -> reg fcs -> reg}.

    Args:
        num_shared_convs, num_shared_fcs, num_cls_convs, num_cls_fcs, num_reg_convs, num_reg_fcs:
            layer counts of each part (convs are 3x3 + ReLU, fcs Linear + ReLU).
        conv_out_channels: channels of the convs; fc_out_channels: width of the fcs.
        conv_cfg: must be None (plain convs); norm_cfg: norm of the convs (None, GN or BN).
        with_avg_pool: average-pool the RoI features before the fcs.
        with_cls, with_reg: must be True (both branches are needed by the RoI head).
        roi_feat_size: side ``S`` of the pooled features; in_channels: their channels ``C``.
        num_classes: foreground classes.
        bbox_coder: built coder (default: means 0, stds 0.1, 0.1, 0.2, 0.2).
        reg_class_agnostic: one set of deltas for all classes.
        reg_decoded_bbox: apply ``loss_bbox`` to decoded boxes (IoU-type losses).
        reg_predictor_cfg, cls_predictor_cfg: ``{type: Linear}`` only.
        loss_cls: built loss (default: softmax CrossEntropyLoss); loss_bbox: built loss (default SmoothL1Loss(1.0)).
        num_extra_cls_logits: classifier rows after the background that are never a target: they take
            part in the softmax, so they lower the other probabilities, and are then dropped. Reproduces
            classifiers trained with more classes than det predicts (torchvision's 91-way COCO head with
            its 10 unused "N/A" ids: ``num_classes: 80, num_extra_cls_logits: 10``).
        init_cfg: accepted for mmdet compatibility (fcs Xavier-uniform, cls Normal(0, 0.01), reg Normal(0, 0.001)).
    """

    def __init__(
        self,
        num_shared_convs: int = 0,
        num_shared_fcs: int = 0,
        num_cls_convs: int = 0,
        num_cls_fcs: int = 0,
        num_reg_convs: int = 0,
        num_reg_fcs: int = 0,
        conv_out_channels: int = 256,
        fc_out_channels: int = 1024,
        conv_cfg: Mapping[str, Any] | None = None,
        norm_cfg: Mapping[str, Any] | None = None,
        init_cfg: Mapping[str, Any] | None = None,
        with_avg_pool: bool = False,
        with_cls: bool = True,
        with_reg: bool = True,
        roi_feat_size: int = 7,
        in_channels: int = 256,
        num_classes: int = 80,
        bbox_coder: DeltaXYWHBBoxCoder | None = None,
        reg_class_agnostic: bool = False,
        reg_decoded_bbox: bool = False,
        reg_predictor_cfg: Mapping[str, Any] | None = None,
        cls_predictor_cfg: Mapping[str, Any] | None = None,
        loss_cls: nn.Module | None = None,
        loss_bbox: nn.Module | None = None,
        num_extra_cls_logits: int = 0,
    ) -> None:
        super().__init__()
        if num_extra_cls_logits < 0:
            raise ConfigError(f"bbox_head num_extra_cls_logits must be >= 0, got {num_extra_cls_logits}")
        if num_classes < 1:
            raise ConfigError(f"bbox_head num_classes must be >= 1, got {num_classes}")
        if not (with_cls and with_reg):
            raise ConfigError("bbox_head: with_cls and with_reg must both be true")
        if conv_cfg is not None:
            raise ConfigError("bbox_head.conv_cfg: only plain convolutions are supported (set null)")
        for name, pred_cfg in (("reg_predictor_cfg", reg_predictor_cfg), ("cls_predictor_cfg", cls_predictor_cfg)):
            if pred_cfg is not None and dict(pred_cfg).get("type", "Linear") != "Linear":
                raise ConfigError(f"bbox_head.{name}.type: only 'Linear' is supported")
        self.num_classes = num_classes
        self.num_extra_cls_logits = num_extra_cls_logits
        self.in_channels = in_channels
        self.roi_feat_size = roi_feat_size
        self.reg_class_agnostic = reg_class_agnostic
        self.reg_decoded_bbox = reg_decoded_bbox
        self.bbox_coder = bbox_coder or DeltaXYWHBBoxCoder(target_stds=(0.1, 0.1, 0.2, 0.2))
        self.loss_cls = loss_cls if loss_cls is not None else CrossEntropyLoss()
        self.loss_bbox = loss_bbox if loss_bbox is not None else SmoothL1Loss(beta=1.0)
        if getattr(self.loss_cls, "use_sigmoid", False):
            raise ConfigError("bbox_head.loss_cls: the box head needs a softmax loss (use_sigmoid: false)")
        self.avg_pool = nn.AvgPool2d(roi_feat_size) if with_avg_pool else None

        def branch(num_convs: int, num_fcs: int, channels: int, flat: int) -> tuple[nn.Sequential, nn.Sequential, int]:
            convs = nn.Sequential(*[conv_module(channels if i == 0 else conv_out_channels, conv_out_channels, 3,
                                                norm_cfg=norm_cfg, act=True) for i in range(num_convs)])
            if num_convs:
                channels = conv_out_channels
            dim = channels if with_avg_pool else channels * flat
            layers: list[nn.Module] = []
            for i in range(num_fcs):
                layers += [nn.Linear(dim if i == 0 else fc_out_channels, fc_out_channels), nn.ReLU(inplace=True)]
            return convs, nn.Sequential(*layers), (fc_out_channels if num_fcs else dim)

        area = roi_feat_size * roi_feat_size
        self.shared_convs, self.shared_fcs, shared_out = branch(num_shared_convs, num_shared_fcs, in_channels, area)
        # the branches start from the shared output: maps when there are no shared fcs, vectors otherwise
        branch_channels = conv_out_channels if num_shared_convs else in_channels
        if num_shared_fcs:
            if num_cls_convs or num_reg_convs:
                raise ConfigError("bbox_head: branch convs need num_shared_fcs: 0")
            branch_channels, area_b = shared_out, 1
        else:
            area_b = area
        self.cls_convs, self.cls_fcs, cls_dim = branch(num_cls_convs, num_cls_fcs, branch_channels, area_b)
        self.reg_convs, self.reg_fcs, reg_dim = branch(num_reg_convs, num_reg_fcs, branch_channels, area_b)
        self.fc_cls = nn.Linear(cls_dim, num_classes + 1 + num_extra_cls_logits)
        self.fc_reg = nn.Linear(reg_dim, 4 if reg_class_agnostic else 4 * num_classes)
        for m in [*self.shared_fcs, *self.cls_fcs, *self.reg_fcs]:
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.fc_cls.weight, std=0.01)
        nn.init.normal_(self.fc_reg.weight, std=0.001)
        nn.init.zeros_(self.fc_cls.bias)
        nn.init.zeros_(self.fc_reg.bias)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """RoI features ``(K, C, S, S)`` -> class logits ``(K, C + 1 + E)`` and deltas ``(K, 4 C)`` (or ``(K, 4)``)."""
        x = self.shared_convs(x)
        if len(self.shared_fcs):
            if self.avg_pool is not None:
                x = self.avg_pool(x)
            x = self.shared_fcs(x.flatten(1))
        x_cls = self.cls_convs(x) if x.dim() == 4 else x
        x_reg = self.reg_convs(x) if x.dim() == 4 else x
        if x_cls.dim() == 4:
            x_cls = (self.avg_pool(x_cls) if self.avg_pool is not None else x_cls).flatten(1)
            x_reg = (self.avg_pool(x_reg) if self.avg_pool is not None else x_reg).flatten(1)
        return self.fc_cls(self.cls_fcs(x_cls)), self.fc_reg(self.reg_fcs(x_reg))

    def loss(self, cls_score: Tensor, bbox_pred: Tensor, rois: Tensor, labels: Tensor, gt_boxes: Tensor,
             pos_weight: float = -1) -> dict[str, Tensor]:
        """Classification over all sampled RoIs and regression of the positives, both averaged over
        the number of sampled RoIs ``K`` (mmdet 2.x); ``acc`` is logged only.

        Args:
            cls_score (Tensor[K, C + 1 + E]), bbox_pred (Tensor[K, 4 C] or [K, 4]): head outputs.
            rois (Tensor[K, 5]): the sampled RoIs (batch index, x1, y1, x2, y2).
            labels (Tensor[K]): int64 targets, ``C`` for background.
            gt_boxes (Tensor[K, 4]): matched GT of each RoI (read for positives only).
            pos_weight: classification weight of positives (``<= 0``: 1).
        """
        k = labels.shape[0]
        avg_factor = float(max(k, 1))
        weight = None
        pos = (labels >= 0) & (labels < self.num_classes)
        if pos_weight > 0:
            weight = torch.where(pos, pos_weight, 1.0).to(cls_score.dtype)
        loss_cls = self.loss_cls(cls_score, labels, weight, avg_factor=avg_factor)
        pos_inds = pos.nonzero(as_tuple=True)[0]
        if self.reg_class_agnostic:
            pos_pred = bbox_pred[pos_inds]
        else:
            pos_pred = bbox_pred.view(k, bbox_pred.shape[1] // 4, 4)[pos_inds, labels[pos_inds]]  # (P, 4)
        pos_rois = rois[pos_inds, 1:]
        with torch.no_grad():
            pos_gt = gt_boxes[pos_inds]
            target = pos_gt if self.reg_decoded_bbox else self.bbox_coder.encode(pos_rois, pos_gt)
        if self.reg_decoded_bbox:
            pos_pred = self.bbox_coder.decode(pos_rois, pos_pred)
        loss_bbox = self.loss_bbox(pos_pred, target, avg_factor=avg_factor)
        return {"loss_cls": loss_cls, "loss_bbox": loss_bbox, "acc": accuracy(cls_score, labels)}

    def regress(self, boxes: Tensor, labels: Tensor, bbox_pred: Tensor, max_shape: Sequence[int]) -> Tensor:
        """Boxes ``(k, 4)`` moved by their deltas of class ``labels (k,)`` (the only set when
        class-agnostic), clipped to ``max_shape = (h, w)`` (mmdet ``regress_by_class``)."""
        if not self.reg_class_agnostic and bbox_pred.shape[1] != 4:
            rows = torch.arange(bbox_pred.shape[0], device=bbox_pred.device)
            bbox_pred = bbox_pred.view(bbox_pred.shape[0], -1, 4)[rows, labels]
        return self.bbox_coder.decode(boxes, bbox_pred, max_shape=max_shape)

    def predict(self, rois: Tensor, cls_score: Tensor, bbox_pred: Tensor, image_sizes: Sequence[tuple[int, int]],
                score_thr: float, nms_cfg: Mapping[str, Any], max_per_img: int,
                min_bbox_size: float = -1) -> list[Detections]:
        """Softmax scores, decoded class-specific boxes clipped to each image, then class-aware NMS.

        Args:
            rois (Tensor[K, 5]): RoIs of the batch (batch index first), grouped by image.
            cls_score (Tensor[K, C + 1 + E]): logits; the softmax runs over all of them, the ``E`` extra
                ones are dropped after it.
            image_sizes: ``(h, w)`` per image.
            min_bbox_size: when ``>= 0``, (box, class) candidates whose clipped width or height is
                ``<= min_bbox_size`` are dropped before NMS (torchvision removes sides ``< 0.01``).
        """
        scores = cls_score.softmax(dim=1)[:, :self.num_classes + 1]  # (K, C + 1): extra logits dropped
        results = []
        img_ids = rois[:, 0].long()
        for i, size in enumerate(image_sizes):
            sel = (img_ids == i).nonzero(as_tuple=True)[0]
            if sel.numel() == 0:
                results.append(Detections.empty(size, device=rois.device))
                continue
            boxes = self.bbox_coder.decode(rois[sel, 1:], bbox_pred[sel], max_shape=size)
            scores_i = scores[sel]
            if min_bbox_size >= 0:
                # remove small boxes: their scores can never pass the threshold
                wh = boxes.view(boxes.shape[0], -1, 4)
                wh = wh[..., 2:] - wh[..., :2]  # (k, C or 1, 2)
                small = (wh <= min_bbox_size).any(dim=-1)  # (k, C or 1)
                fg = scores_i[:, :-1].masked_fill(small, float("-inf"))
                scores_i = torch.cat([fg, scores_i[:, -1:]], dim=1)
            dets, labels = multiclass_nms(boxes, scores_i, score_thr, nms_cfg, max_per_img)
            results.append(Detections(size, Boxes(dets[:, :4]), dets[:, 4], labels))
        return results


@HEADS.register()
class Shared2FCBBoxHead(ConvFCBBoxHead):
    """:class:`ConvFCBBoxHead` with two shared fcs and nothing else (the Faster R-CNN box head).

    Args: as :class:`ConvFCBBoxHead` without the layer counts.
    """

    def __init__(
        self,
        fc_out_channels: int = 1024,
        conv_out_channels: int = 256,
        conv_cfg: Mapping[str, Any] | None = None,
        norm_cfg: Mapping[str, Any] | None = None,
        init_cfg: Mapping[str, Any] | None = None,
        with_avg_pool: bool = False,
        with_cls: bool = True,
        with_reg: bool = True,
        roi_feat_size: int = 7,
        in_channels: int = 256,
        num_classes: int = 80,
        bbox_coder: DeltaXYWHBBoxCoder | None = None,
        reg_class_agnostic: bool = False,
        reg_decoded_bbox: bool = False,
        reg_predictor_cfg: Mapping[str, Any] | None = None,
        cls_predictor_cfg: Mapping[str, Any] | None = None,
        loss_cls: nn.Module | None = None,
        loss_bbox: nn.Module | None = None,
        num_extra_cls_logits: int = 0,
    ) -> None:
        super().__init__(
            num_shared_fcs=2, conv_out_channels=conv_out_channels, fc_out_channels=fc_out_channels,
            conv_cfg=conv_cfg, norm_cfg=norm_cfg, init_cfg=init_cfg, with_avg_pool=with_avg_pool,
            with_cls=with_cls, with_reg=with_reg, roi_feat_size=roi_feat_size, in_channels=in_channels,
            num_classes=num_classes, bbox_coder=bbox_coder, reg_class_agnostic=reg_class_agnostic,
            reg_decoded_bbox=reg_decoded_bbox, reg_predictor_cfg=reg_predictor_cfg,
            cls_predictor_cfg=cls_predictor_cfg, loss_cls=loss_cls, loss_bbox=loss_bbox,
            num_extra_cls_logits=num_extra_cls_logits)
