"""Inference on image files, folders, globs, videos and webcams (``det infer``).

:func:`infer` yields one :class:`InferenceRecord` per image or video frame, with detections in the
original image's pixels, and writes annotated copies (images, or a video per input video) to
``out_dir``. It does not print: the CLI turns each record into a JSON line.
"""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from detcli.errors import DatasetError, DetError
from detcli.fileio import IMAGE_EXTENSIONS, read_image_file
from detcli.structures import Detections

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")


@dataclass
class InferenceRecord:
    """Detections for one image or one video frame, in original image pixels."""

    file: str
    width: int
    height: int
    detections: Detections
    class_names: tuple[str, ...]
    frame: int | None = None
    output: str | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: boxes as xyxy lists, scores, labels and class names; for a model with
        masks also ``segmentations``, one COCO RLE ``{"size": [H, W], "counts": str}`` per box."""
        dets = self.detections
        record: dict[str, Any] = {"file": self.file}
        if self.frame is not None:
            record["frame"] = self.frame
        record.update(
            {
                "width": self.width,
                "height": self.height,
                "boxes": [[round(float(v), 2) for v in box] for box in dets.boxes.tensor.tolist()],
                "scores": [round(float(s), 4) for s in dets.scores.tolist()],
                "labels": [int(label) for label in dets.labels.tolist()],
                "class_names": [self.class_names[int(label)] for label in dets.labels.tolist()],
            }
        )
        if dets.masks is not None:
            from detcli.evaluation.rle import encode_masks

            record["segmentations"] = encode_masks(dets.masks)  # COCO RLE {size: [H, W], counts}, one per box
        if self.output is not None:
            record["output"] = self.output
        return record


@dataclass
class InferenceSummary:
    """What an inference run wrote."""

    out_dir: Path | None
    images: int = 0
    frames: int = 0
    videos: list[str] = field(default_factory=list)


def expand_inputs(inputs: Iterable[str]) -> list[Path]:
    """Expand files, folders (images and videos inside, sorted) and glob patterns into paths.

    Image files are checked here, before a model is loaded: a missing, empty or truncated image
    (:func:`~detcli.data.transforms.loading.image_file_problem`) fails the run instead of being drawn on
    half grey.

    Raises:
        DatasetError: an input that matches nothing, or an empty or truncated image file, naming it.
    """
    paths: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(
                q for q in p.iterdir() if q.suffix.lower() in IMAGE_EXTENSIONS + VIDEO_EXTENSIONS and q.is_file()
            )
            if not found:
                raise DatasetError(f"{item}: folder holds no images or videos ({', '.join(IMAGE_EXTENSIONS)})")
            paths.extend(found)
        elif p.is_file():
            paths.append(p)
        elif any(ch in item for ch in "*?["):
            matches = sorted(Path(m) for m in glob.glob(item, recursive=True) if Path(m).is_file())
            if not matches:
                raise DatasetError(f"{item}: the pattern matches no file")
            paths.extend(matches)
        else:
            raise DatasetError(f"{item}: no such file, folder or pattern")
    for path in paths:
        if path.suffix.lower() in IMAGE_EXTENSIONS:
            _check_image(path)
    return paths


def _check_image(path: Path) -> None:
    from detcli.data.transforms.loading import image_file_problem

    try:
        problem = image_file_problem(path)
    except OSError as e:
        raise DatasetError(f"{path}: cannot read the image ({e.strerror or e})") from e
    if problem is not None:
        raise DatasetError(f"{path}: {problem}; re-copy or re-download the file, or leave it out of the inputs")


def read_image(path: Path) -> np.ndarray:
    import cv2

    if not path.is_file():
        raise DatasetError(f"{path}: no such image file")
    _check_image(path)
    try:
        img = read_image_file(path, cv2.IMREAD_COLOR)
    except OSError as e:
        raise DatasetError(f"{path}: cannot read the image ({e.strerror or e})") from e
    if img is None:
        raise DatasetError(f"{path}: cannot decode the image (corrupted or not an image)")
    return img


class Predictor:
    """A loaded model plus its test pipeline: image (BGR ndarray) in, :class:`Detections` out."""

    def __init__(self, checkpoint: str, cfg: dict | None = None, device: str = "cpu") -> None:
        from detcli.data import build_test_pipeline
        from detcli.engine.builders import load_model

        loaded = load_model(checkpoint, cfg=cfg, device=device)
        self.model = loaded.model
        self.cfg = loaded.cfg
        self.class_names = tuple(loaded.classes)
        self.device = device
        test_cfg = self.cfg.get("data", {}).get("test") or self.cfg.get("data", {}).get("val") or {}
        pipeline = test_cfg.get("pipeline")
        if not pipeline:
            raise DetError("the config has no data.test.pipeline: pass --config PRESET with a test pipeline")
        self.pipeline = build_test_pipeline(pipeline)

    @torch.inference_mode()
    def __call__(self, image: np.ndarray, filename: str = "") -> Detections:
        from detcli.data import collate, prepare_image
        from detcli.engine.tester import postprocess_batch

        batch = collate(prepare_image(image, self.pipeline, filename=filename))
        preds = self.model(batch.images.to(self.device))
        return postprocess_batch(preds, batch, self.cfg)[0]  # test-time views merged as in det test


def infer(
    checkpoint: str,
    inputs: Iterable[str],
    *,
    cfg: dict | None = None,
    out_dir: str | os.PathLike[str] | None = "det_outputs/infer",
    score_thr: float = 0.3,
    device: str = "cpu",
    webcam: int | None = None,
    max_frames: int | None = None,
    summary: InferenceSummary | None = None,
) -> Iterator[InferenceRecord]:
    """Run a detector over images, folders, globs, videos or a webcam.

    Args:
        checkpoint: a det checkpoint (carries its config unless ``cfg`` is given).
        inputs: image files, folders, glob patterns and video files.
        cfg: a resolved config to use instead of the checkpoint's.
        out_dir: where annotated images (same names) and videos (``<stem>.mp4``) go; None writes nothing.
        score_thr: detections below this score are dropped from records and drawings.
        webcam: camera index to read frames from instead of ``inputs``.
        max_frames: stop a video or webcam after this many frames.
        summary: filled in with counts and output locations as the run goes.

    Yields:
        One record per image or frame.
    """
    from detcli.fileio import check_writable_dir
    from detcli.visualization import draw_detections, save_image

    if out_dir is not None:  # before the model is loaded
        check_writable_dir(out_dir, "output folder (--out-dir)")
    summary = summary if summary is not None else InferenceSummary(None)
    paths = [] if webcam is not None else expand_inputs(inputs)
    predictor = Predictor(checkpoint, cfg=cfg, device=device)
    out = Path(out_dir) if out_dir is not None else None
    summary.out_dir = out
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)

    def keep(dets: Detections) -> Detections:
        return dets[dets.scores >= score_thr]

    if webcam is not None:
        yield from _run_video(predictor, webcam, f"webcam{webcam}", out, keep, max_frames, summary, draw_detections)
        return
    for path in paths:
        if path.suffix.lower() in VIDEO_EXTENSIONS:
            yield from _run_video(predictor, str(path), str(path), out, keep, max_frames, summary, draw_detections)
            continue
        image = read_image(path)
        dets = keep(predictor(image, filename=str(path)))
        written = None
        if out is not None:
            target = out / path.name
            try:
                save_image(draw_detections(image, dets, predictor.class_names, score_thr=score_thr), target)
            except (ValueError, OSError) as e:
                raise DetError(f"{target}: could not write the annotated image") from e
            written = str(target)
        summary.images += 1
        yield InferenceRecord(str(path), image.shape[1], image.shape[0], dets, predictor.class_names, output=written)


def _run_video(predictor, source, name, out, keep, max_frames, summary, draw) -> Iterator[InferenceRecord]:  # type: ignore[no-untyped-def]
    import cv2

    if isinstance(source, str):
        try:
            source.encode("utf-8")
        except UnicodeEncodeError:  # cv2.VideoCapture would crash the process (segmentation fault)
            raise DatasetError(f"{name}: the file name is not valid UTF-8, which OpenCV cannot open as a video; "
                               "rename the file") from None
    cap = cv2.VideoCapture(source)
    if not cap.isOpened():
        raise DatasetError(f"{name}: cannot open the video or camera")
    writer = None
    tmp_path = target = None
    completed = False
    try:
        fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
        index = 0
        while max_frames is None or index < max_frames:
            ok, frame = cap.read()
            if not ok:
                break
            dets = keep(predictor(frame, filename=f"{name}#{index}"))
            if out is not None:
                if writer is None:
                    target = out / f"{Path(name).stem}.mp4"
                    tmp_path = out / f".{Path(name).stem}.partial.mp4"
                    fourcc = cv2.VideoWriter_fourcc(*"mp4v")  # type: ignore[attr-defined]
                    writer = cv2.VideoWriter(str(tmp_path), fourcc, fps, (frame.shape[1], frame.shape[0]))
                writer.write(draw(frame, dets, predictor.class_names, score_thr=0.0))
            summary.frames += 1
            yield InferenceRecord(name, frame.shape[1], frame.shape[0], dets, predictor.class_names, frame=index)
            index += 1
        if index == 0:
            raise DatasetError(f"{name}: the video has no readable frames")
        completed = True
    finally:
        cap.release()
        if writer is not None:
            writer.release()
        if not completed and tmp_path is not None and tmp_path.exists():
            tmp_path.unlink()  # nothing half-written
    if writer is not None and tmp_path is not None and target is not None:
        os.replace(tmp_path, target)
        summary.videos.append(str(target))
