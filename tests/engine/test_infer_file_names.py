"""`det infer` on an image whose file name is not valid UTF-8: cv2.imread segfaulted on the surrogate-escaped
path (exit 139); det opens files with Python and decodes the bytes with OpenCV."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

import detcli.engine.inference as inference
from detcli.errors import DatasetError
from detcli.fileio import read_image_file

from fake_predictor import FakePredictor

HERE = Path(__file__).resolve().parent
BAD_NAME = b"bad\xff\xfe name.jpg"  # not UTF-8


def _bad_image(folder: Path) -> str:
    image = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    path = os.fsencode(folder) + b"/" + BAD_NAME
    with open(path, "wb") as f:
        f.write(cv2.imencode(".png", image)[1].tobytes())
    return os.fsdecode(path)  # surrogate escapes, as Python gives argv and listdir names


def test_read_image_file_takes_any_path(tmp_path: Path) -> None:
    path = _bad_image(tmp_path)
    assert read_image_file(path).shape == (48, 64, 3)
    (tmp_path / "empty.jpg").write_bytes(b"")
    assert read_image_file(tmp_path / "empty.jpg") is None
    (tmp_path / "junk.jpg").write_bytes(b"not an image")
    assert read_image_file(tmp_path / "junk.jpg") is None


def test_cli_infer_on_a_non_utf8_file_name(tmp_path: Path) -> None:
    path = _bad_image(tmp_path)
    out = tmp_path / "out"
    code = ("import sys; sys.path.insert(0, sys.argv.pop(1)); import fake_predictor; fake_predictor.install(); "
            "sys.argv[0] = 'det'; from detcli.cli import main; main()")
    env = {**os.environ, "PYTHONPATH": str(HERE.parents[1])}
    # argv as bytes: the OS hands the process the raw name, exactly as a shell would
    proc = subprocess.run(
        [sys.executable, "-c", code, str(HERE), "infer", "c.pth", os.fsencode(path), "--out-dir", str(out)],
        capture_output=True, env=env, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    record = json.loads(proc.stdout.decode())
    assert record["file"] == path and (record["width"], record["height"]) == (64, 48)
    assert os.listdir(os.fsencode(out)) == [BAD_NAME]  # the annotated image, under the same raw name


def test_folder_scan_and_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inference, "Predictor", FakePredictor)
    _bad_image(tmp_path)
    records = list(inference.infer("c.pth", [str(tmp_path)], out_dir=None))
    assert [os.fsencode(r.file).endswith(BAD_NAME) for r in records] == [True]
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(DatasetError, match=r"broken\.jpg: truncated JPEG: the file ends before its end-of-image marker"):
        list(inference.infer("c.pth", [str(tmp_path / "broken.jpg")], out_dir=None))
    (tmp_path / "broken.jpg").write_bytes(b"not an image at all")
    with pytest.raises(DatasetError, match=r"broken\.jpg: cannot decode the image \(corrupted or not an image\)"):
        list(inference.infer("c.pth", [str(tmp_path / "broken.jpg")], out_dir=None))
