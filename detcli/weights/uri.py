"""Where weights come from: a local path, ``torchvision://NAME``, ``open-mmlab://NAME`` or ``http(s)://URL``.

Remote files are downloaded once into torch's own cache (``$TORCH_HOME/hub/checkpoints``, the folder
``torch.hub`` and torchvision use), with a progress bar on stderr; a file name carrying a hash prefix
(``resnet50-0676ba61.pth``) is checked against the sha256 of what arrived, as ``torch.hub`` does. A failed
download names the URL and the exact path where the file can be put by hand.
"""

from __future__ import annotations

import os
import re
import urllib.error
import urllib.parse
from pathlib import Path

from detcli.errors import CheckpointError

#: Schemes :func:`resolve_uri` knows besides local paths.
SCHEMES: tuple[str, ...] = ("torchvision://", "open-mmlab://", "http://", "https://")

#: ``open-mmlab://NAME`` as MMCV's model-zoo table defines it (the ImageNet backbones mmdet configs use).
OPEN_MMLAB_URLS: dict[str, str] = {
    "detectron/resnet50_caffe": "https://download.openmmlab.com/pretrain/third_party/resnet50_caffe-788b5fa3.pth",
    "detectron2/resnet50_caffe": "https://download.openmmlab.com/pretrain/third_party/resnet50_msra-5891d200.pth",
    "detectron/resnet101_caffe": "https://download.openmmlab.com/pretrain/third_party/resnet101_caffe-3ad79236.pth",
    "detectron2/resnet101_caffe": "https://download.openmmlab.com/pretrain/third_party/resnet101_msra-6cc46731.pth",
    "detectron2/resnext101_32x8d": "https://download.openmmlab.com/pretrain/third_party/resnext101_32x8d-1516f1aa.pth",
    "resnext50_32x4d": "https://download.openmmlab.com/pretrain/third_party/resnext50-32x4d-0ab1a123.pth",
    "resnext101_32x4d": "https://download.openmmlab.com/pretrain/third_party/resnext101_32x4d-a5af3160.pth",
    "resnext101_64x4d": "https://download.openmmlab.com/pretrain/third_party/resnext101_64x4d-ee2c6f71.pth",
    # deep-stem ResNets (ResNetV1c: ``type: ResNet, deep_stem: true``)
    "resnet18_v1c": "https://download.openmmlab.com/pretrain/third_party/resnet18_v1c-b5776b93.pth",
    "resnet50_v1c": "https://download.openmmlab.com/pretrain/third_party/resnet50_v1c-2cccc1ad.pth",
    "resnet101_v1c": "https://download.openmmlab.com/pretrain/third_party/resnet101_v1c-e67eebb6.pth",
    # older names of the detectron files
    "resnet50_caffe": "https://download.openmmlab.com/pretrain/third_party/resnet50_caffe-788b5fa3.pth",
    "resnet101_caffe": "https://download.openmmlab.com/pretrain/third_party/resnet101_caffe-3ad79236.pth",
}

HASH_REGEX = re.compile(r"-([a-f0-9]*)\.")


def cache_dir() -> Path:
    """torch's checkpoint cache: ``$TORCH_HOME/hub/checkpoints`` (default ``~/.cache/torch/hub/checkpoints``)."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def is_uri(text: str) -> bool:
    """True for ``scheme://...`` strings (known or not), False for local paths."""
    return bool(re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", str(text)))


def torchvision_weights_url(name: str) -> str:
    """The URL of torchvision's ImageNet weights for model ``name`` (``IMAGENET1K_V1``, as mmdet's
    ``torchvision://`` used; the first published weights where a model has no V1).

    Raises:
        CheckpointError: torchvision has no such model or it has no weights.
    """
    import torchvision.models as tvm

    known = sorted(tvm.list_models(module=tvm))
    if name not in known:
        from detcli.errors import did_you_mean

        raise CheckpointError(
            f"torchvision://{name}: torchvision has no classification model '{name}'{did_you_mean(name, known)} "
            "(e.g. resnet18, resnet50, resnet101, resnext50_32x4d, wide_resnet50_2)"
        )
    weights = tvm.get_model_weights(name)
    members = list(weights)
    if not members:
        raise CheckpointError(f"torchvision://{name}: torchvision publishes no weights for this model")
    chosen = getattr(weights, "IMAGENET1K_V1", None) or members[0]
    return str(chosen.url)


def url_of(uri: str) -> str:
    """The http(s) URL a ``torchvision://`` / ``open-mmlab://`` / ``http(s)://`` URI stands for."""
    if uri.startswith(("http://", "https://")):
        return uri
    if uri.startswith("torchvision://"):
        return torchvision_weights_url(uri[len("torchvision://"):])
    if uri.startswith("open-mmlab://"):
        name = uri[len("open-mmlab://"):]
        if name not in OPEN_MMLAB_URLS:
            from detcli.errors import did_you_mean

            raise CheckpointError(
                f"{uri}: unknown open-mmlab model '{name}'{did_you_mean(name, OPEN_MMLAB_URLS)} "
                f"(known: {', '.join(sorted(OPEN_MMLAB_URLS))}); give its http(s) URL instead"
            )
        return OPEN_MMLAB_URLS[name]
    raise CheckpointError(
        f"{uri}: unknown weights URI scheme '{uri.split('://', 1)[0]}://' (det reads local paths, "
        f"{', '.join(SCHEMES)})"
    )


def resolve_uri(uri: str | os.PathLike[str], *, progress: bool = True) -> Path:
    """Return a local file holding the weights ``uri`` names, downloading it into the cache if needed.

    Args:
        uri: a local path (``~`` expanded), ``torchvision://resnet50``, ``open-mmlab://NAME`` or an http(s) URL.
        progress: show a download progress bar on stderr.

    Raises:
        CheckpointError: a missing local file, an unknown scheme or model name, a failed download (the
            message names the URL and the path to put the file at by hand), or a hash mismatch.
    """
    text = os.fspath(uri)
    if not is_uri(text):
        path = Path(text).expanduser()
        if not path.exists():
            raise CheckpointError(f"{path}: no such checkpoint file")
        if path.is_dir():
            raise CheckpointError(f"{path}: is a folder, not a checkpoint file")
        return path
    url = url_of(text)
    name = Path(urllib.parse.urlparse(url).path).name
    if not name:
        raise CheckpointError(f"{url}: the URL names no file (expected .../NAME.pth)")
    dest = cache_dir() / name
    if dest.is_file():
        return dest
    download(url, dest, progress=progress)
    return dest


def download(url: str, dest: Path, *, progress: bool = True) -> None:
    """Download ``url`` to ``dest`` atomically (temporary file, then rename), checking a hash prefix in the name.

    Raises:
        CheckpointError: the server failed or was unreachable, the folder is not writable, or the sha256 of
            the file does not start with the prefix in its name (nothing is left at ``dest``).
    """
    import torch.hub

    match = HASH_REGEX.search(dest.name)
    hash_prefix = match.group(1) if match else None
    by_hand = f"download it by hand and put it at {dest} (e.g. curl -L -o {dest} {url})"
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CheckpointError(f"cannot create the weights cache {dest.parent}: {e.strerror} (set $TORCH_HOME to a writable folder)") from e
    try:
        torch.hub.download_url_to_file(url, str(dest), hash_prefix=hash_prefix, progress=progress)
    except urllib.error.HTTPError as e:
        raise CheckpointError(f"{url}: download failed: HTTP {e.code} {e.reason}; {by_hand}") from e
    except urllib.error.URLError as e:
        raise CheckpointError(f"{url}: download failed ({e.reason}; offline?); {by_hand}") from e
    except RuntimeError as e:
        if "invalid hash value" in str(e):
            raise CheckpointError(
                f"{url}: the downloaded file is corrupt ({e}); its sha256 must start with {hash_prefix}. "
                f"Try again, or {by_hand}"
            ) from e
        raise CheckpointError(f"{url}: download failed ({e}); {by_hand}") from e
    except OSError as e:
        raise CheckpointError(f"{url}: download failed ({e.strerror or e}); {by_hand}") from e
