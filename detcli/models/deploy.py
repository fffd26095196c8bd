"""Export graphs of the dense detectors: the network plus post-processing in standard ONNX ops.

:class:`DeployDetector` wraps a trained :class:`SingleStageDetector` (RetinaNet, FCOS, ATSS, any detector
whose head is on the dense-head template :class:`~detcli.models.dense_head.BaseDenseHead`) for
``torch.onnx.export`` (TorchScript tracing). Input: ``images (B, 3, H, W)`` float32, the
preprocessed (normalised, padded) tensor. Outputs:

- ``dets (B, N, 5)``: ``(x1, y1, x2, y2, score)`` in input pixels, clipped to ``image_sizes``, sorted by
  score; ``N = max_per_img``; unused rows are zeros.
- ``labels (B, N)`` int64: class index ``0..C-1``; ``-1`` on unused rows.

A second input ``image_sizes (B, 2)`` float32 gives each image's valid ``(h, w)`` in the padded
batch; boxes are clipped to it before NMS, as eager post-processing does, so a batch of images of
different sizes gives each image the detections eager mode gives it.

Post-processing is the head's own, the template's export form (:meth:`BaseDenseHead.export
<detcli.models.dense_head.BaseDenseHead.export>`, the same steps as ``predict``): per level the top
``nms_pre`` (``deploy_nms_pre`` when set) (prior, class) pairs, the score threshold, score factors,
box decoding, then ``NonMaxSuppression`` per class (``max_output_boxes_per_class``) and the top
``max_per_img``. Priors are computed inside the graph from the feature-map shapes, so a graph
exported with dynamic axes accepts other batch sizes and image sizes.

Faster / Mask R-CNN are exported by :class:`detcli.models.deploy_two_stage.DeployTwoStage` (built
on :mod:`detcli.models.export_ops`); :func:`deploy_model` picks the wrapper and :func:`min_opset` its opset.
"""

from __future__ import annotations

from torch import Tensor, nn

from detcli.errors import ConfigError
from detcli.models.atss import ATSS
from detcli.models.cascade import CascadeRCNN
from detcli.models.dense_head import BaseDenseHead
from detcli.models.detector import SingleStageDetector
from detcli.models.fcos import FCOS
from detcli.models.gfl import GFL
from detcli.models.retinanet import RetinaNet
from detcli.models.two_stage import FasterRCNN, MaskRCNN, TwoStageDetector
from detcli.models.yolox import YOLOX

#: the built-in detectors ONNX export supports, by config ``type`` (two-stage ones by
#: :class:`detcli.models.deploy_two_stage.DeployTwoStage`); any single-stage detector whose head is a
#: :class:`~detcli.models.dense_head.BaseDenseHead` is exportable too (:func:`exportable`)
SUPPORTED_DETECTORS = {"RetinaNet": RetinaNet, "FCOS": FCOS, "ATSS": ATSS, "GFL": GFL, "YOLOX": YOLOX,
                       "FasterRCNN": FasterRCNN, "MaskRCNN": MaskRCNN, "CascadeRCNN": CascadeRCNN}
#: lowest ONNX opset of every op the dense graph uses (NonMaxSuppression 10, TopK with a K input
#: 10, ScatterND 11)
MIN_OPSET = 11
#: lowest opset of the two-stage graph: RoiAlign with ``coordinate_transformation_mode`` (aligned) is 16
MIN_OPSET_TWO_STAGE = 16


class DeployDetector(nn.Module):
    """A single-stage detector with ONNX-exportable post-processing (see the module doc).

    Args:
        detector: a trained :class:`SingleStageDetector` whose head is a
            :class:`~detcli.models.dense_head.BaseDenseHead` (eval mode).
        postprocess: False exports the raw head outputs (``{kind}_{level}`` for the head's
            ``output_kinds``, e.g. class logits, box regressions, centerness) instead of ``dets``/``labels``.
        nms_pre: candidates per level before NMS (None: ``test_cfg.deploy_nms_pre`` if set, else
            ``test_cfg.nms_pre``; ``<= 0``: all).
        max_output_boxes_per_class: ``NonMaxSuppression``'s cap per class and image.

    Raises:
        ConfigError: another detector type, or ``max_per_img <= 0``.
    """

    def __init__(self, detector: nn.Module, postprocess: bool = True, nms_pre: int | None = None,
                 max_output_boxes_per_class: int | None = None) -> None:
        super().__init__()
        check_exportable(detector)
        if not isinstance(detector, SingleStageDetector):
            raise ConfigError(f"model.type: {type(detector).__name__} is exported by deploy_model(), not DeployDetector")
        self.detector = detector
        self.postprocess = postprocess
        cfg = detector.test_settings
        self.nms_pre = int(nms_pre if nms_pre is not None else (cfg.deploy_nms_pre if cfg.deploy_nms_pre > 0 else cfg.nms_pre))
        self.max_output = int(max_output_boxes_per_class or cfg.max_output_boxes_per_class)
        self.cfg = cfg
        if cfg.max_per_img <= 0:
            raise ConfigError("model.test_cfg.max_per_img must be > 0 to export (the graph has a fixed number of output rows)")
        if self.max_output <= 0:
            raise ConfigError(f"max_output_boxes_per_class must be > 0, got {self.max_output}")

    @property
    def max_per_img(self) -> int:
        return self.cfg.max_per_img

    @property
    def output_names(self) -> list[str]:
        if self.postprocess:
            return ["dets", "labels"]
        head = self.detector.bbox_head
        return [f"{k}_{i}" for k in head.output_kinds for i in range(head.num_levels)]  # type: ignore[arg-type, union-attr]

    @property
    def input_names(self) -> list[str]:
        """Graph inputs: ``input``, and with post-processing ``image_sizes (B, 2)`` (each image's valid
        ``(h, w)`` in the padded batch, which boxes are clipped to before NMS as in eager mode)."""
        return ["input", "image_sizes"] if self.postprocess else ["input"]

    def forward(self, images: Tensor, image_sizes: Tensor | None = None) -> tuple[Tensor, ...]:
        feats = self.detector.extract_feat(images)
        head = self.detector.bbox_head
        outs = head(feats)
        if not self.postprocess:
            return tuple(t.contiguous() for group in outs for t in group)
        return head.export(outs, images, self.cfg, self.nms_pre, self.max_output, image_sizes)  # type: ignore[operator]


def exportable(detector: nn.Module) -> bool:
    """Whether ``detector`` has an export graph: a two-stage detector, or a single-stage one whose
    head is on the dense-head template (:class:`~detcli.models.dense_head.BaseDenseHead`)."""
    if isinstance(detector, TwoStageDetector):
        return True
    return isinstance(detector, SingleStageDetector) and isinstance(detector.bbox_head, BaseDenseHead)


def check_exportable(detector: nn.Module) -> None:
    """Raise :class:`ConfigError` unless :func:`exportable` (the message lists :data:`SUPPORTED_DETECTORS`)."""
    if not exportable(detector):
        raise ConfigError(
            f"model.type: ONNX export supports {', '.join(SUPPORTED_DETECTORS)}; got {type(detector).__name__}")


def min_opset(detector: nn.Module) -> int:
    """The lowest ONNX opset the export graph of ``detector`` needs."""
    return MIN_OPSET_TWO_STAGE if isinstance(detector, TwoStageDetector) else MIN_OPSET


def deploy_model(detector: nn.Module, postprocess: bool = True) -> nn.Module:
    """The export wrapper of ``detector``: :class:`DeployDetector` (RetinaNet, FCOS, YOLOX) or
    :class:`~detcli.models.deploy_two_stage.DeployTwoStage` (Faster / Mask R-CNN), in eval mode.

    Raises:
        ConfigError: an unsupported detector, or ``postprocess=False`` for a two-stage detector.
    """
    check_exportable(detector)
    if isinstance(detector, TwoStageDetector):
        from detcli.models.deploy_two_stage import DeployTwoStage

        if not postprocess:
            raise ConfigError(f"--skip-postprocess: {type(detector).__name__} has no raw-head-output graph (its "
                              "second stage runs on the proposals the RPN post-processing selects); export "
                              "without it")
        return DeployTwoStage(detector).eval()
    return DeployDetector(detector, postprocess=postprocess).eval()
