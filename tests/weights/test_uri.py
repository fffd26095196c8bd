"""resolve_uri: local paths, torchvision://, open-mmlab://, http(s) downloads into torch's cache (local server only)."""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path

import pytest
import torch

from detcli.errors import CheckpointError
from detcli.weights import cache_dir, is_uri, resolve_uri, torchvision_weights_url


def test_local_paths(tmp_path: Path) -> None:
    f = tmp_path / "w.pth"
    f.write_bytes(b"x")
    assert resolve_uri(str(f)) == f
    with pytest.raises(CheckpointError, match="nope.pth: no such checkpoint file"):
        resolve_uri(str(tmp_path / "nope.pth"))
    with pytest.raises(CheckpointError, match="is a folder"):
        resolve_uri(str(tmp_path))
    assert is_uri("torchvision://resnet50") and is_uri("s3://b/k") and not is_uri("/a/b.pth") and not is_uri("c:x")


def test_unknown_scheme_names_the_known_ones() -> None:
    with pytest.raises(CheckpointError, match=r"s3://bucket/w.pth: unknown weights URI scheme 's3://' .*torchvision://.*https://"):
        resolve_uri("s3://bucket/w.pth")


def test_torchvision_uri_uses_the_seeded_cache(torch_home: Path) -> None:
    url = torchvision_weights_url("resnet18")
    assert url.startswith("https://") and url.endswith(".pth")
    name = url.rsplit("/", 1)[1]
    assert cache_dir() == torch_home
    (torch_home / name).write_bytes(b"cached")
    assert resolve_uri("torchvision://resnet18") == torch_home / name  # no download: the file is there


def test_torchvision_uri_unknown_model() -> None:
    with pytest.raises(CheckpointError, match=r"torchvision://resnett50: torchvision has no classification model 'resnett50' — did you mean 'resnet50'\?"):
        resolve_uri("torchvision://resnett50")


def test_open_mmlab_uri_unknown_name_lists_known(torch_home: Path) -> None:
    with pytest.raises(CheckpointError, match=r"open-mmlab://nope: unknown open-mmlab model 'nope' .*detectron2/resnet50_caffe"):
        resolve_uri("open-mmlab://nope")


def _publishable(root: Path, stem: str, data: bytes) -> str:
    sha = hashlib.sha256(data).hexdigest()
    name = f"{stem}-{sha[:8]}.pth"
    (root / name).write_bytes(data)
    return name


def test_http_download_once_into_cache(torch_home: Path, http_root) -> None:
    name = _publishable(http_root.root, "weights", b"0123456789" * 1000)
    url = f"{http_root.url}/{name}"
    got = resolve_uri(url, progress=False)
    assert got == torch_home / name and got.read_bytes() == b"0123456789" * 1000
    http_root.close()  # the second call needs no server: the cache holds the file
    assert resolve_uri(url, progress=False) == got


def test_http_hash_mismatch_leaves_nothing(torch_home: Path, http_root) -> None:
    (http_root.root / "weights-deadbeef.pth").write_bytes(b"not what the name promises")
    with pytest.raises(CheckpointError, match=r"weights-deadbeef.pth: the downloaded file is corrupt .*must start with deadbeef"):
        resolve_uri(f"{http_root.url}/weights-deadbeef.pth", progress=False)
    assert list(torch_home.iterdir()) == []


def test_http_404_names_url_and_cache_path(torch_home: Path, http_root) -> None:
    url = f"{http_root.url}/missing-0123abcd.pth"
    with pytest.raises(CheckpointError) as info:
        resolve_uri(url, progress=False)
    text = str(info.value)
    assert "HTTP 404" in text and url in text and str(torch_home / "missing-0123abcd.pth") in text
    assert list(torch_home.iterdir()) == []


def test_offline_names_url_and_where_to_put_the_file(torch_home: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/r-01234567.pth"
    with pytest.raises(CheckpointError, match=r"download failed .*offline\?.*put it at .*r-01234567.pth"):
        resolve_uri(url, progress=False)
    assert not any(torch_home.iterdir())


def test_torch_save_roundtrip_through_server(torch_home: Path, http_root) -> None:
    import io

    buf = io.BytesIO()
    torch.save({"w": torch.arange(3.0)}, buf)
    name = _publishable(http_root.root, "sd", buf.getvalue())
    from detcli.weights import read_checkpoint

    ck = read_checkpoint(resolve_uri(f"{http_root.url}/{name}", progress=False))
    assert ck.source == "state_dict" and torch.equal(ck.state_dict["w"], torch.arange(3.0))
