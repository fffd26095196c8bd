"""Turn outside checkpoints into det checkpoints, and det checkpoints into files fit to publish.

- :func:`convert_checkpoint`: an MMDetection 2.x/3.x or torchvision detector file plus a preset (given, or
  guessed from the file's layers) -> a det checkpoint holding the renamed weights, the resolved config, the
  class names and where it came from. Afterwards ``det test OUT.pth`` needs no preset.
- :func:`publish_checkpoint`: a det checkpoint minus optimizer, scheduler and RNG state, written as
  ``<name>-<sha256[:8]>.pth`` (the hash prefix ``torch.hub`` checks on download) with a JSON sidecar.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from detcli.engine.checkpoint import FORMAT, FORMAT_VERSION, atomic_save, load_checkpoint
from detcli.errors import CheckpointError, ConfigError
from detcli.fileio import write_json_atomic
from detcli.weights import LoadReport

#: (what the file looks like, source) -> the shipped preset of that architecture.
GUESSED_PRESETS: dict[tuple[str, str], str] = {
    ("Mask R-CNN", "mmdet"): "mask_rcnn_r50_fpn_1x_coco",
    ("Faster R-CNN", "mmdet"): "faster_rcnn_r50_fpn_1x_coco",
    ("FCOS", "mmdet"): "fcos_r50_fpn_gn-head_1x_coco",
    ("ATSS", "mmdet"): "atss_r50_fpn_1x_coco",
    ("RetinaNet", "mmdet"): "retinanet_r50_fpn_1x_coco",
    ("Mask R-CNN", "torchvision"): "mask_rcnn_r50_fpn_coco_tv",
    ("Faster R-CNN", "torchvision"): "faster_rcnn_r50_fpn_coco_tv",
    ("FCOS", "torchvision"): "fcos_r50_fpn_coco_tv",
    ("RetinaNet", "torchvision"): "retinanet_r50_fpn_coco_tv",
}


@dataclass(frozen=True)
class ConversionResult:
    """What :func:`convert_checkpoint` wrote: ``output``, the ``preset`` used, the file's ``format``, the
    ``classes`` recorded and the :class:`~detcli.weights.LoadReport` of the (exact) load."""

    output: Path
    preset: str
    format: str
    classes: tuple[str, ...]
    report: LoadReport


def guess_preset(state_dict: Mapping[str, Any], source: str) -> str:
    """The shipped preset whose architecture a ``source`` file's layer names show.

    Raises:
        ConfigError: the family cannot be told from the names (pass ``--preset``).
    """
    from detcli.models.weight_maps import describe_checkpoint

    described = describe_checkpoint(state_dict)
    for (family, src), preset in GUESSED_PRESETS.items():
        if src == source and family in described:
            return preset
    raise ConfigError(f"cannot tell which det preset fits this {source} file{described or ''}: pass --preset PRESET")


def convert_checkpoint(
    source: str,
    input_path: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    preset: str | None = None,
    cfg_options: list[str] | None = None,
) -> ConversionResult:
    """Convert an outside detector checkpoint into a det checkpoint (every det weight filled, nothing left over).

    Args:
        source: ``mmdet`` or ``torchvision`` (the file must be of that kind).
        input_path: the file, or a weights URI (downloaded into torch's cache).
        output: the det checkpoint to write (atomically).
        preset: the det preset of the same architecture; None guesses it from the file's layers.
        cfg_options: overrides applied to the preset.

    Raises:
        CheckpointError: unreadable file, another kind than ``source``, weights that do not fill the model
            exactly, a class count that differs from the preset's. Nothing is written then.
        ConfigError: unknown source, no preset given or guessed.
    """
    from detcli import __version__
    from detcli.config import load_config, resolve_preset_path
    from detcli.engine.builders import build_model
    from detcli.engine.zoo import config_classes
    from detcli.models.pretrained import detector_state_dict
    from detcli.models.weight_maps import SOURCES, describe_checkpoint
    from detcli.weights import load_weights, read_checkpoint, resolve_uri

    if source not in SOURCES:
        raise ConfigError(f"unknown checkpoint source '{source}' (det converts: {', '.join(SOURCES)})")
    path = resolve_uri(input_path)
    ckpt = read_checkpoint(path)
    if ckpt.source != source and not (source == "torchvision" and ckpt.source == "state_dict"):
        raise CheckpointError(f"{path}: {ckpt.version}, not a {source} checkpoint (convert it with the source it is, "
                              f"or use det's own file directly)")
    preset_name = preset or guess_preset(ckpt.state_dict, source)
    preset_path = resolve_preset_path(preset_name)
    cfg = load_config(preset_path, cfg_options)
    model = build_model(cfg)
    num_classes = int(getattr(model, "num_classes", 0))
    if ckpt.classes is not None and len(ckpt.classes) != num_classes:
        raise CheckpointError(
            f"{path}: class count mismatch: the file has {len(ckpt.classes)} classes, preset {preset_path.stem} "
            f"predicts {num_classes}; pass a preset with {len(ckpt.classes)} classes (or --cfg-options setting the "
            "head's num_classes)"
        )
    report = load_weights(model, detector_state_dict(ckpt, model), source=str(path), target=type(model).__name__,
                          hint=describe_checkpoint(ckpt.state_dict))
    if report.unexpected:
        raise CheckpointError(
            f"{path}: {len(report.unexpected)} tensors of the file have no place in preset {preset_path.stem} "
            f"(e.g. {', '.join(report.unexpected[:3])}): is it the same architecture?"
        )
    classes = tuple(ckpt.classes or config_classes(cfg, num_classes))
    sha = sha256_file(path)
    meta = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "det_version": __version__, "epoch": 0, "iter": 0,
        "config": cfg, "classes": list(classes),
        "converted_from": {"source": source, "format": ckpt.version, "file": str(input_path), "sha256": sha,
                           "preset": preset_path.stem},
    }
    state_dict = {k: v.detach().clone() for k, v in model.state_dict().items()}
    out = atomic_save({"meta": meta, "state_dict": state_dict, "optimizer": None, "scheduler": None, "rng": None},
                      output)
    return ConversionResult(out, preset_path.stem, ckpt.version, classes, report)


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class PublishResult:
    """The published ``checkpoint`` (``<name>-<sha8>.pth``), its ``sidecar`` JSON and full ``sha256``."""

    checkpoint: Path
    sidecar: Path
    sha256: str
    size_bytes: int


def publish_checkpoint(checkpoint: str | os.PathLike[str], out_dir: str | os.PathLike[str],
                       name: str | None = None) -> PublishResult:
    """Write ``checkpoint`` without optimizer/scheduler/RNG state as ``OUT_DIR/<name>-<sha256[:8]>.pth`` plus
    ``<name>-<sha256[:8]>.json`` (sha256, size, classes, epoch, iteration, det version, preset).

    Raises:
        CheckpointError: not a det checkpoint.
    """
    src = Path(checkpoint)
    ckpt = load_checkpoint(src)
    meta = dict(ckpt["meta"])
    stem = name or src.stem
    out_root = Path(out_dir)
    slim = {"meta": meta, "state_dict": {k: v.contiguous() for k, v in ckpt["state_dict"].items()}}
    # the name depends on the bytes: write beside the target, hash, then move into place
    staged = atomic_save(slim, out_root / f".{stem}.publish.pth")
    try:
        sha = sha256_file(staged)
        size = staged.stat().st_size
        final = out_root / f"{stem}-{sha[:8]}.pth"
        os.replace(staged, final)
    finally:
        staged.unlink(missing_ok=True)
    config = meta.get("config") or {}
    sidecar = write_json_atomic({
        "file": final.name, "sha256": sha, "size_bytes": size, "det_version": meta.get("det_version"),
        "epoch": meta.get("epoch"), "iter": meta.get("iter"), "classes": meta.get("classes"),
        "model": (config.get("model") or {}).get("type"), "source": str(src),
        "converted_from": meta.get("converted_from"),
    }, final.with_suffix(".json"), indent=2)
    return PublishResult(final, sidecar, sha, size)
