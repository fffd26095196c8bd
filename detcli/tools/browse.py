"""``det browse-dataset``: the training images as the model sees them, with their ground truth drawn.

Each image runs through ``data.train``'s pipeline (augmentations included, sample ``i`` of epoch 0,
so a run is reproducible). Steps named in ``skip_types`` are removed from the pipeline first,
except the three that only package the result (``DefaultFormatBundle``, ``Collect``) or scale the
pixels (``Normalize``): those always run, and skipping ``Normalize`` means undoing it, so the
colours are right. Images are written atomically to ``output_dir`` and, on a machine with a
display, shown in a window for ``show_interval`` seconds each.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detcli.errors import ConfigError, did_you_mean

logger = logging.getLogger(__name__)

DEFAULT_SKIP_TYPES = ("DefaultFormatBundle", "Normalize", "Collect")
#: steps that always run (they produce the Sample); Normalize is undone instead of skipped
_KEPT = ("DefaultFormatBundle", "Collect", "Normalize")


@dataclass
class BrowseResult:
    """Images drawn by :func:`browse_dataset`: ``files`` written (empty without an output dir),
    ``num_images`` drawn, ``shown`` whether a window showed them (False when headless)."""

    num_images: int
    files: list[Path] = field(default_factory=list)
    shown: bool = False
    output_dir: Path | None = None


def display_available() -> bool:
    """Whether a GUI window can be opened (an X11/Wayland display on Linux; assumed elsewhere)."""
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def _filter_pipelines(node: Any, skip: set[str], removed: set[str]) -> Any:
    """A copy of a dataset node (wrappers included) whose pipelines lack the steps in ``skip``."""
    if isinstance(node, Mapping):
        out = {}
        for key, value in node.items():
            if key == "pipeline" and isinstance(value, Sequence):
                kept = []
                for step in value:
                    kind = step.get("type") if isinstance(step, Mapping) else None
                    if kind in skip and kind not in _KEPT:
                        removed.add(str(kind))
                        continue
                    kept.append(_filter_pipelines(step, skip, removed))
                out[key] = kept
            else:
                out[key] = _filter_pipelines(value, skip, removed)
        return out
    if isinstance(node, list):
        return [_filter_pipelines(v, skip, removed) for v in node]
    return node


def _find_normalize(node: Any) -> dict[str, Any] | None:
    if isinstance(node, Mapping):
        if node.get("type") == "Normalize":
            return dict(node)
        for value in node.values():
            found = _find_normalize(value)
            if found is not None:
                return found
    elif isinstance(node, list):
        for value in node:
            found = _find_normalize(value)
            if found is not None:
                return found
    return None


class Viewer:
    """Shows images in one OpenCV window; a no-op (with one warning) when no display or GUI is available."""

    def __init__(self, enabled: bool, interval: float) -> None:
        self.interval = interval
        self.enabled = enabled and display_available()
        if enabled and not self.enabled:
            logger.warning("no display ($DISPLAY/$WAYLAND_DISPLAY unset): not showing images; they are only written")

    def show(self, image: Any, title: str) -> None:
        if not self.enabled:
            return
        import cv2

        try:
            cv2.imshow("det", image)
            cv2.setWindowTitle("det", title)
            cv2.waitKey(max(1, int(self.interval * 1000)))
        except cv2.error as e:  # a headless OpenCV build has no GUI
            logger.warning("cannot open a window (%s): not showing images", str(e).strip().splitlines()[-1])
            self.enabled = False

    def close(self) -> None:
        if self.enabled:
            import cv2

            try:
                cv2.destroyAllWindows()
            except cv2.error:
                pass


def browse_dataset(
    cfg: Mapping[str, Any],
    output_dir: str | os.PathLike[str] | None,
    *,
    skip_types: Sequence[str] = DEFAULT_SKIP_TYPES,
    show: bool = True,
    show_interval: float = 2.0,
    max_images: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> BrowseResult:
    """Draw ``data.train`` after its pipeline (see the module doc).

    Args:
        output_dir: folder of the drawn images (None: only show them).
        skip_types: transform type names left out of the pipeline.
        show: show each image in a window when a display exists.
        show_interval: seconds each image is shown.
        max_images: draw only the first N images.
        progress: called with ``(done, total)`` after each image.

    Raises:
        ConfigError: an unknown transform name in ``skip_types``; nothing to do (no output dir and no
            display); ``max_images < 1``.
    """
    import detcli.data  # noqa: F401  (registers the transforms)
    from detcli.engine.builders import build_split
    from detcli.registry import TRANSFORMS
    from detcli.visualization import denormalize, draw_ground_truth, output_name, save_image

    for name in skip_types:
        if name not in TRANSFORMS:
            raise ConfigError(f"--skip-type {name!r}: not a transform{did_you_mean(name, TRANSFORMS.names())}")
    if max_images is not None and max_images < 1:
        raise ConfigError(f"--max-images {max_images}: must be >= 1")
    viewer = Viewer(show, show_interval)
    if output_dir is None and not viewer.enabled:
        raise ConfigError("nothing to do: no --output-dir and no display to show the images on; pass --output-dir DIR")
    removed: set[str] = set()
    data = dict(cfg.get("data") or {})
    data["train"] = _filter_pipelines(data.get("train"), set(skip_types), removed)
    for name in set(skip_types) - removed - set(_KEPT):
        logger.warning("--skip-type %s: the training pipeline has no such step", name)
    norm = _find_normalize(data["train"])
    undo = norm is not None and "Normalize" in skip_types
    dataset, _, _ = build_split({**cfg, "data": data}, "train", test_mode=False)
    out = Path(output_dir) if output_dir is not None else None
    total = len(dataset) if max_images is None else min(len(dataset), max_images)
    files: list[Path] = []
    used: set[str] = set()
    try:
        for i in range(total):
            sample = dataset[i]
            if undo:
                image = denormalize(sample.image, norm.get("mean"), norm.get("std"), bool(norm.get("to_rgb", True)))  # type: ignore[union-attr]
            else:  # Normalize kept (or absent): look at the values as they are, stretched to 0..255
                image = denormalize(_stretch(sample.image), None, None)
                if norm is not None and norm.get("to_rgb", True):
                    image = image[..., ::-1]
            if sample.gt is not None:
                image = draw_ground_truth(image, sample.gt, dataset.classes)
            name = output_name(sample.meta.filename, f"{i:06d}.jpg")
            if name in used:  # the same file again (a repeated or concatenated dataset): keep both
                name = f"{i:06d}_{name}"
            used.add(name)
            if out is not None:
                files.append(save_image(image, out / name))
            viewer.show(image, name)
            if progress is not None:
                progress(i + 1, total)
    finally:
        viewer.close()
    return BrowseResult(total, files, viewer.enabled, out)


def _stretch(image: Any) -> Any:
    """Min-max scale a still-normalised image to 0..255 so it can be looked at."""
    lo, hi = float(image.min()), float(image.max())
    return (image - lo) * (255.0 / max(hi - lo, 1e-6))
