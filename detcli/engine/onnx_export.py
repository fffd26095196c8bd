"""ONNX export of RetinaNet / FCOS / Faster R-CNN / Mask R-CNN with post-processing in the graph,
the parity gate, and an ONNX Runtime predictor for ``det test MODEL.onnx --backend onnxruntime``.

:func:`export_onnx` traces the wrapper of :func:`detcli.models.deploy.deploy_model`
(:class:`~detcli.models.deploy.DeployDetector` for the dense detectors,
:class:`~detcli.models.deploy_two_stage.DeployTwoStage` for the two-stage ones) with the TorchScript
exporter (``torch.onnx.export(dynamo=False)``: it exports ``NonMaxSuppression`` from a symbolic and
keeps shapes dynamic through tracing), checks the file with ``onnx.checker``, stores the resolved
config and class names in the model's metadata, and (``verify``) compares ONNX Runtime with PyTorch
on the test images: :class:`ParityError` past the tolerance.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from detcli.errors import CheckpointError, ConfigError, DetError
from detcli.fileio import atomic_output
from detcli.structures import Boxes, Detections, ImageBatch, box_overlaps

logger = logging.getLogger(__name__)

#: highest opset the TorchScript exporter of this torch writes
MAX_OPSET = 20
#: metadata keys of an exported model
META_CONFIG, META_CLASSES, META_POSTPROCESS = "det_config", "det_classes", "det_postprocess"


class ParityError(DetError):
    """ONNX Runtime and PyTorch disagree past the tolerance (``report`` has the table)."""

    def __init__(self, message: str, report: ParityReport) -> None:
        super().__init__(message)
        self.report = report


@dataclass
class ParityRow:
    """Comparison of one image: detection counts, matched pairs, largest differences."""

    image: str
    shape: tuple[int, int]
    torch_dets: int
    onnx_dets: int
    matched: int
    max_box_diff: float
    max_score_diff: float
    ok: bool
    max_mask_diff: float | None = None


@dataclass
class ParityReport:
    """Per-image :class:`ParityRow` s and the tolerances they were checked against."""

    rows: list[ParityRow]
    box_tol: float
    score_tol: float
    mask_tol: float | None = None

    @property
    def passed(self) -> bool:
        return all(r.ok for r in self.rows)

    def table(self) -> str:
        masks = self.mask_tol is not None
        head = f"{'image':<28} {'shape':>9} {'torch':>6} {'onnx':>6} {'matched':>8} {'box diff':>9} {'score diff':>10}"
        lines = [head + (f" {'mask diff':>9}" if masks else "") + "  ok"]
        for r in self.rows:
            mask = f" {r.max_mask_diff or 0.0:>9.2e}" if masks else ""
            lines.append(f"{r.image[-28:]:<28} {r.shape[0]:>4}x{r.shape[1]:<4} {r.torch_dets:>6} {r.onnx_dets:>6} "
                         f"{r.matched:>8} {r.max_box_diff:>9.2e} {r.max_score_diff:>10.2e}{mask}  {'yes' if r.ok else 'NO'}")
        mask_text = (f", mask {self.mask_tol:g} (pixels that differ / union of the two masks, per matched "
                     "detection)") if masks else ""
        lines.append(f"tolerance: box {self.box_tol:g} px, score {self.score_tol:g}{mask_text}; every detection above "
                     "the lowest-score 1% and the max_per_img cut-off must be matched (same label, IoU >= 0.9); "
                     "zero-area boxes are exempt (ONNX Runtime's NonMaxSuppression drops them)")
        return "\n".join(lines)


@dataclass
class ExportResult:
    """What :func:`export_onnx` wrote."""

    output_file: Path
    model_type: str
    opset_version: int
    input_shape: tuple[int, int, int, int]
    dynamic: bool
    postprocess: bool
    outputs: list[str]
    seconds: float
    verify: ParityReport | None = None
    simplified: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- inputs


def _load_inputs(cfg: Mapping[str, Any], images: Sequence[str | None]) -> list[tuple[str, ImageBatch]]:
    """Preprocess each image path (None: the first image of ``data.test``) with the test pipeline."""
    from detcli.data import build_test_pipeline, collate, prepare_image
    from detcli.engine.inference import read_image

    out = []
    pipeline = None
    for path in images:
        if path is None:
            from detcli.engine.builders import build_split

            dataset = build_split(cfg, "test", test_mode=True)[0]
            batch = collate(dataset[0][:1])
            out.append(("data.test[0]", batch.images))
            continue
        if pipeline is None:
            node = (cfg.get("data") or {}).get("test") or {}
            if not node.get("pipeline"):
                raise ConfigError("data.test.pipeline: the config has no test pipeline to preprocess --input-img with")
            pipeline = build_test_pipeline(node["pipeline"])
        samples = prepare_image(read_image(Path(path)), pipeline, filename=str(path))
        out.append((str(path), collate(samples[:1]).images))
    return out


def _resize(batch: ImageBatch, shape: tuple[int, int]) -> ImageBatch:
    """The padded tensor resized to ``shape`` (the valid region scaled with it)."""
    h, w = batch.tensor.shape[-2:]
    if (h, w) == tuple(shape):
        return batch
    tensor = torch.nn.functional.interpolate(batch.tensor, size=shape, mode="bilinear", align_corners=False)
    sizes = [(min(shape[0], round(ih * shape[0] / h)), min(shape[1], round(iw * shape[1] / w))) for ih, iw in batch.image_sizes]
    return ImageBatch(tensor, sizes)


# --------------------------------------------------------------------------- export


def export_onnx(
    cfg: Mapping[str, Any] | None,
    checkpoint: str | os.PathLike[str],
    *,
    output_file: str | os.PathLike[str] | None = None,
    shape: tuple[int, int] | None = None,
    opset_version: int | None = None,
    dynamic_export: bool = False,
    skip_postprocess: bool = False,
    input_img: str | None = None,
    test_img: str | None = None,
    verify: bool = True,
    simplify: bool = False,
    box_tol: float = 0.05,
    score_tol: float = 1e-3,
    mask_tol: float = 0.01,
) -> ExportResult:
    """Export a RetinaNet / FCOS / Faster R-CNN / Mask R-CNN checkpoint to ONNX.

    Args:
        cfg: the resolved config (None: the checkpoint's).
        checkpoint: a det checkpoint.
        output_file: where to write (default ``<checkpoint stem>.onnx`` next to the checkpoint).
        shape: ``(H, W)`` of the traced input (default: the preprocessed ``input_img``'s padded size).
        opset_version: ONNX opset (default and minimum: the model's
            :func:`~detcli.models.deploy.min_opset`, 11 dense, 16 two-stage).
        dynamic_export: batch, height and width are dynamic axes.
        skip_postprocess: export the raw head outputs instead of ``dets`` / ``labels`` (dense
            detectors only).
        input_img: image to trace with and verify on (default: the first image of ``data.test``).
        test_img: another image to verify on (at its own size when ``dynamic_export``).
        verify: compare ONNX Runtime with PyTorch; raise :class:`ParityError` past the tolerance.
        simplify: run onnxslim on the graph (needs the ``onnxslim`` package).
        box_tol, score_tol, mask_tol: parity tolerances (pixels, score, fraction of mask pixels).

    Raises:
        ConfigError: unsupported model or opset; CheckpointError: bad checkpoint; ParityError.
    """
    import onnx

    from detcli.engine.builders import load_model
    from detcli.fileio import check_writable_file
    from detcli.models.deploy import check_exportable, deploy_model, min_opset
    from detcli.ops import use_backend

    start = time.perf_counter()
    check_writable_file(Path(output_file) if output_file else Path(checkpoint).with_suffix(".onnx"),
                        "ONNX file (--output-file)")
    loaded = load_model(checkpoint, cfg, "cpu")
    check_exportable(loaded.model)
    model_type = type(loaded.model).__name__
    lowest = min_opset(loaded.model)
    opset = lowest if opset_version is None else int(opset_version)
    if not lowest <= opset <= MAX_OPSET:
        ops = "NonMaxSuppression, TopK, ScatterND" + (", RoiAlign with half_pixel" if lowest > 11 else "")
        raise ConfigError(f"--opset-version {opset}: the {model_type} graph needs opset >= {lowest} ({ops}) and "
                          f"this exporter writes at most {MAX_OPSET}; pick {lowest}..{MAX_OPSET}")
    wrapper = deploy_model(loaded.model, postprocess=not skip_postprocess)
    inputs = _load_inputs(loaded.cfg, [input_img])
    export_batch = inputs[0][1]
    if shape is not None:
        if len(shape) != 2 or min(shape) < 32:
            raise ConfigError(f"--shape {shape}: give H W of at least 32 pixels each")
        export_batch = _resize(export_batch, (int(shape[0]), int(shape[1])))
    tensor = export_batch.tensor.contiguous()
    out = Path(output_file) if output_file else Path(checkpoint).with_suffix(".onnx")
    names = wrapper.output_names
    dynamic_axes = None
    if dynamic_export:
        dynamic_axes = {"input": {0: "batch", 2: "height", 3: "width"}}
        for name in names:  # type: ignore[union-attr]
            dynamic_axes[name] = {0: "batch"} if not skip_postprocess else {0: "batch", 2: f"{name}_h", 3: f"{name}_w"}
    with use_backend("torchvision"), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with atomic_output(out) as tmp:
            trace_to_onnx(wrapper, tensor, tmp, opset, dynamic_axes)
            proto = onnx.load(str(tmp))
            onnx.checker.check_model(proto)
            simplified = False
            if simplify:
                proto = _simplify(proto)
                simplified = True
            meta = {META_CONFIG: json.dumps(loaded.cfg, default=str), META_CLASSES: json.dumps(list(loaded.classes)),
                    META_POSTPROCESS: json.dumps(not skip_postprocess)}
            del proto.metadata_props[:]
            for key, value in meta.items():
                entry = proto.metadata_props.add()
                entry.key, entry.value = key, value
            onnx.save(proto, str(tmp))
            report = None
            if verify:
                checks = [(inputs[0][0], export_batch)]
                if test_img is not None:
                    name, batch = _load_inputs(loaded.cfg, [test_img])[0]
                    checks.append((name, batch if dynamic_export else _resize(batch, tuple(tensor.shape[-2:]))))  # type: ignore[arg-type]
                if dynamic_export and "image_sizes" in getattr(wrapper, "input_names", []):
                    # two images of different sizes in one batch: each must get its eager detections
                    checks.append((f"{inputs[0][0]} + 3/4 crop (batch)", mixed_size_batch(export_batch)))
                report = verify_parity(wrapper, str(tmp), checks, box_tol=box_tol, score_tol=score_tol,
                                       mask_tol=mask_tol)
                if not report.passed:
                    bad = sum(not r.ok for r in report.rows)
                    raise ParityError(f"{out}: ONNX Runtime and PyTorch disagree past the tolerance on {bad} of "
                                      f"{len(report.rows)} image(s) (file not written); see the table above, or "
                                      "export with --no-verify to keep the file anyway", report)
    logger.info("exported %s to %s (opset %d)", model_type, out, opset)
    return ExportResult(out, model_type, opset, tuple(tensor.shape), dynamic_export, not skip_postprocess, names,  # type: ignore[arg-type]
                        time.perf_counter() - start, report, simplified)


def trace_to_onnx(wrapper: torch.nn.Module, tensor: torch.Tensor, path: str | os.PathLike[str], opset_version: int,
                  dynamic_axes: Mapping[str, Mapping[int, str]] | None = None) -> None:
    """Trace a :class:`~detcli.models.deploy.DeployDetector` on ``tensor`` into ``path`` (not atomic;
    ops forced to torchvision). ``dynamic_axes`` as in ``torch.onnx.export`` (input name ``input``)."""
    from detcli.ops import use_backend

    input_names = list(getattr(wrapper, "input_names", ["input"]))
    args: tuple[torch.Tensor, ...] = (tensor,)
    axes = dict(dynamic_axes) if dynamic_axes else None
    if "image_sizes" in input_names:  # each image's valid (h, w): boxes are clipped to it before NMS
        args = (tensor, image_sizes_tensor([tuple(tensor.shape[-2:])] * tensor.shape[0]))  # type: ignore[list-item]
        if axes is not None:
            axes["image_sizes"] = {0: "batch"}
    with use_backend("torchvision"), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper, args, str(path), dynamo=False, opset_version=opset_version,
                          input_names=input_names, output_names=wrapper.output_names,  # type: ignore[arg-type]
                          dynamic_axes=axes, do_constant_folding=True)


def image_sizes_tensor(sizes: Sequence[tuple[int, int]]) -> torch.Tensor:
    """``(B, 2)`` float32 ``(h, w)`` per image: the ``image_sizes`` input of an export graph."""
    return torch.tensor([[float(h), float(w)] for h, w in sizes], dtype=torch.float32).reshape(-1, 2)


def graph_feed(input_names: Sequence[str], batch: ImageBatch) -> dict[str, np.ndarray]:
    """The ONNX Runtime inputs of ``batch``: the padded tensor, and the image sizes when the graph takes them
    (graphs exported before the image_sizes input existed take the tensor alone and clip to it)."""
    feed = {"input": batch.tensor.detach().cpu().contiguous().numpy()}
    if "image_sizes" in input_names:
        feed["image_sizes"] = image_sizes_tensor(batch.image_sizes).numpy()
    return feed


def mixed_size_batch(batch: ImageBatch) -> ImageBatch:
    """A batch of 2 from one preprocessed image: the image, and a copy cropped to 3/4 of its valid height
    and width and zero-padded to the same tensor (two images of different sizes in one padded batch,
    the case where per-image clipping matters)."""
    x = batch.tensor[:1]
    h, w = batch.image_sizes[0]
    sh, sw = max(1, h * 3 // 4), max(1, w * 3 // 4)
    small = torch.zeros_like(x)
    small[..., :sh, :sw] = x[..., :sh, :sw]
    return ImageBatch(torch.cat([x, small]), [(h, w), (sh, sw)])


def _simplify(proto: Any) -> Any:
    try:
        import onnxslim
    except ImportError as e:
        raise ConfigError("--simplify needs the onnxslim package: pip install onnxslim") from e
    return onnxslim.slim(proto)


# --------------------------------------------------------------------------- parity


def _session(path: str) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def _match(ref: Detections, got: Detections, max_per_img: int) -> tuple[int, float, float, int, float]:
    """Greedy score-order matching of PyTorch (``ref``) and ONNX Runtime (``got``) detections (same
    label, IoU >= 0.9).

    Returns:
        (matched, max box diff, max score diff, serious unmatched, max mask diff; see
        :func:`_mask_diff`, 0 without masks). An unmatched detection is not
        serious when it is a zero-area box (ONNX Runtime's NonMaxSuppression may drop those; on either
        side they match nothing, IoU being 0: boxes clipped flat at an image border), when the
        other side holds ``max_per_img`` detections all scoring above it (the cut-off moved), or
        when it is within the lowest-score 1% (near-ties at the score threshold).
    """
    if len(ref) == 0 or len(got) == 0:
        return 0, 0.0, 0.0, max(len(ref), len(got)), 0.0
    iou = box_overlaps(ref.boxes.tensor, got.boxes.tensor)  # (R, G)
    iou[ref.labels[:, None] != got.labels[None, :]] = -1
    used = torch.zeros(len(got), dtype=torch.bool)
    box_diff = score_diff = mask_diff = 0.0
    matched = 0
    missing = []
    for i in range(len(ref)):
        row = iou[i].masked_fill(used, -1)
        j = int(row.argmax())
        if row[j] >= 0.9:
            used[j] = True
            matched += 1
            box_diff = max(box_diff, float((ref.boxes.tensor[i] - got.boxes.tensor[j]).abs().max()))
            score_diff = max(score_diff, float((ref.scores[i] - got.scores[j]).abs()))
            if ref.masks is not None and got.masks is not None:
                mask_diff = max(mask_diff, _mask_diff(ref.masks[i], got.masks[j]))
        else:
            missing.append(i)
    floor = float(torch.cat([ref.scores, got.scores]).quantile(0.01)) + 1e-3
    ref_cut = float(ref.scores.min()) if len(ref) >= max_per_img else -1.0
    got_cut = float(got.scores.min()) if len(got) >= max_per_img else -1.0
    ref_area = ref.boxes.tensor[:, 2:].sub(ref.boxes.tensor[:, :2]).prod(dim=1)
    serious = sum(1 for i in missing if ref_area[i] > 0 and float(ref.scores[i]) > max(floor, got_cut))
    got_area = got.boxes.tensor[:, 2:].sub(got.boxes.tensor[:, :2]).prod(dim=1)  # flat boxes never match (IoU 0)
    serious += sum(1 for s, a in zip(got.scores[~used].tolist(), got_area[~used].tolist()) if a > 0 and s > max(floor, ref_cut))
    return matched, box_diff, score_diff, serious, mask_diff


def _mask_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """Pixels where bool masks differ over the pixels of their union (0 for two empty masks); for float
    probability masks the largest absolute difference."""
    if a.dtype != torch.bool or b.dtype != torch.bool:
        return float((a.float() - b.float()).abs().max()) if a.numel() else 0.0
    union = int((a | b).sum())
    return int((a ^ b).sum()) / union if union else 0.0


def onnx_detections(dets: np.ndarray, labels: np.ndarray, image_sizes: Sequence[tuple[int, int]],
                    masks: np.ndarray | None = None) -> list[Detections]:
    """``dets (B, N, 5)`` / ``labels (B, N)`` (/ ``masks (B, N, H, W)``) of the graph -> one
    :class:`Detections` per image, boxes clipped to its valid region and masks cropped to it (bool, or
    float probabilities when the graph outputs them)."""
    out = []
    for i, size in enumerate(image_sizes):
        keep = labels[i] >= 0
        boxes = torch.from_numpy(np.ascontiguousarray(dets[i, keep, :4])).float()
        h, w = size
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
        inst_masks = None
        if masks is not None:
            inst_masks = torch.from_numpy(np.ascontiguousarray(masks[i, keep, :h, :w]))
        out.append(Detections(tuple(size), Boxes(boxes), torch.from_numpy(np.ascontiguousarray(dets[i, keep, 4])).float(),  # type: ignore[arg-type]
                              torch.from_numpy(np.ascontiguousarray(labels[i, keep])).long(), inst_masks))
    return out


def verify_parity(wrapper: torch.nn.Module, onnx_path: str, checks: Sequence[tuple[str, ImageBatch]],
                  box_tol: float = 0.05, score_tol: float = 1e-3, mask_tol: float = 0.01) -> ParityReport:
    """Run ONNX Runtime and PyTorch (``wrapper.detector.predict``, or the raw head outputs with
    ``postprocess`` off) on each ``(name, batch)`` and compare (masks too when the graph has them)."""
    sess = _session(onnx_path)
    input_names = [i.name for i in sess.get_inputs()]
    with_masks = "masks" in getattr(wrapper, "output_names", [])
    rows = []
    for name, batch in checks:
        x = batch.tensor.contiguous()
        outs = sess.run(None, graph_feed(input_names, batch))
        shape = tuple(x.shape[-2:])
        if not wrapper.postprocess:
            with torch.no_grad():
                ref = [t.numpy() for t in wrapper(x)]
            diff = max(float(np.abs(a - b).max()) if a.size else 0.0 for a, b in zip(ref, outs))
            rows.append(ParityRow(name, shape, 0, 0, 0, 0.0, diff, diff <= score_tol * 10))  # type: ignore[arg-type]
            continue
        # a graph with an image_sizes input clips each image to its valid region, as eager mode does;
        # one without clips to the input
        ref_batch = batch if "image_sizes" in input_names else ImageBatch(x, [shape] * x.shape[0])  # type: ignore[list-item]
        refs = wrapper.detector.predict(ref_batch)  # type: ignore[operator, union-attr]
        for ref in refs:  # as onnx_detections does (heads that do not clip, e.g. YOLOX, leave boxes outside)
            ref.boxes.clip_(ref.image_size)
        gots = onnx_detections(outs[0], outs[1], ref_batch.image_sizes, outs[2] if with_masks else None)
        for ref, got in zip(refs, gots):
            matched, box_diff, score_diff, serious, mask_diff = _match(ref, got, wrapper.max_per_img)  # type: ignore[arg-type]
            ok = box_diff <= box_tol and score_diff <= score_tol and serious == 0 and mask_diff <= mask_tol
            rows.append(ParityRow(name, shape, len(ref), len(got), matched, box_diff, score_diff, ok,  # type: ignore[arg-type]
                                  mask_diff if with_masks else None))
    return ParityReport(rows, box_tol, score_tol, mask_tol if with_masks else None)


# --------------------------------------------------------------------------- ONNX Runtime predictor


class OnnxPredictor:
    """An exported model behind the ``predict(ImageBatch) -> list[Detections]`` interface of a
    detector, so :func:`detcli.engine.tester.run_inference` runs it unchanged."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        import onnx

        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"{path}: no such ONNX file")
        try:
            proto = onnx.load(str(path), load_external_data=False)
        except Exception as e:  # noqa: BLE001  (protobuf raises several types)
            raise CheckpointError(f"{path}: not an ONNX model ({e})") from e
        meta = {p.key: p.value for p in proto.metadata_props}
        if META_CONFIG not in meta:
            raise CheckpointError(f"{path}: not exported by det export-onnx (no {META_CONFIG} metadata); re-export it")
        if not json.loads(meta.get(META_POSTPROCESS, "true")):
            raise CheckpointError(f"{path}: exported with --skip-postprocess (raw head outputs); re-export without "
                                  "it to evaluate the model")
        self.path = path
        self.cfg: dict[str, Any] = json.loads(meta[META_CONFIG])
        self.classes: tuple[str, ...] = tuple(json.loads(meta.get(META_CLASSES, "[]")))
        dims = proto.graph.input[0].type.tensor_type.shape.dim
        self.static_shape = None if any(d.dim_param or not d.dim_value for d in dims[2:]) else (dims[2].dim_value, dims[3].dim_value)
        self.static_batch = dims[0].dim_value if dims[0].dim_value and not dims[0].dim_param else None
        self.session = _session(str(path))
        self.input_names = [i.name for i in self.session.get_inputs()]
        model = self.cfg["model"]
        head = model["roi_head"]["bbox_head"] if "roi_head" in model else model["bbox_head"]
        if isinstance(head, list):  # a cascade's per-stage heads
            head = head[-1]
        self.num_classes = int(head["num_classes"])
        #: the graph has a ``masks`` output (Mask R-CNN), so ``det test --metric segm`` works
        self.with_mask = any(o.name == "masks" for o in proto.graph.output)
        #: called right after each session run (``det benchmark`` splits graph time from the rest with it)
        self.after_run: Callable[[], None] | None = None

    def predict(self, images: ImageBatch) -> list[Detections]:
        x = images.tensor.contiguous()
        if self.static_shape is not None and tuple(x.shape[-2:]) != self.static_shape:
            raise ConfigError(f"{self.path}: exported for inputs of {self.static_shape[0]}x{self.static_shape[1]} but "
                              f"the test pipeline gives {x.shape[-2]}x{x.shape[-1]}; re-export with --dynamic-export "
                              "or --shape matching the pipeline")
        if self.static_batch is not None and x.shape[0] != self.static_batch:
            return [d for i in range(x.shape[0]) for d in self.predict(ImageBatch(x[i:i + 1], [images.image_sizes[i]]))]
        outs = self.session.run(None, graph_feed(self.input_names, ImageBatch(x, images.image_sizes)))
        if self.after_run is not None:
            self.after_run()
        return onnx_detections(outs[0], outs[1], images.image_sizes, outs[2] if len(outs) > 2 else None)

    def parameters(self):  # noqa: ANN201  (run_inference asks for the device)
        yield torch.zeros(())


def load_onnx_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The resolved config stored in an exported model."""
    return copy.deepcopy(OnnxPredictor(path).cfg)
