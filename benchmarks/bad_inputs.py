"""A catalogue of bad inputs over every ``det`` subcommand, each run as a subprocess and classified.

Usage: OMP_NUM_THREADS=1 python benchmarks/bad_inputs.py [--det "CMD"] [--fork] [--all] [--jobs 2] [--timeout 60]
       [--only SUBSTRING ...] [--json FILE] [--label TEXT] [--list]

The default set has 147 cases (``--all``: 242). With ``--fork`` every case runs in a child forked from a
server that imported det and torch once (about 1 s a case instead of 10-50 s on a loaded 2-core machine;
the whole ``--all`` run takes about 4 minutes); without it each case is a fresh ``python -m detcli``
subprocess. Both give the same classification (checked on the segfault, usage, payload and traceback cases
of an old checkout). Every run is capped at 4 GB of address space (``--mem-limit-gb``), so an input that
makes det allocate without end is a MemoryError, not the OOM killer on a shared machine.

Measured (``--fork --all``): commit 5666d15, before the issue-16 work: 146 of 242 handled with one line,
76 tracebacks/crashes (one segfault), 20 accepted or wrongly refused; main 9b94bba: 236 handled, 5
tracebacks, 1 accepted; with the fixes of branch badinputs: 242 handled.

``--det`` is the command that runs det, split like a shell line; leading ``NAME=VALUE`` words are
environment variables, e.g. ``--det "PYTHONPATH=/work/wt-before /work/main/.venv/bin/python -m detcli"``
(default: this interpreter with ``-m detcli`` and this checkout on ``PYTHONPATH``). That det also builds
the shared fixtures once: a 4-image shapes dataset (``det convert-dataset shapes``), a tiny FCOS preset
over it (``max_iters: 1``), a checkpoint trained from it and a COCO results file.

Each case gets its own temporary folder (the working directory of its run), writes its bad input there
and runs one det command with ``--timeout`` seconds. Classification:

- ``one-line``: exit code 1, no ``Traceback`` on stderr, and stderr holds exactly one line besides det's
  log lines (``HH:MM:SS LEVEL ...``); for cases marked ``warn_ok`` (inputs det may accept if it says so:
  NaN scores, negative-width training boxes) exit 0 with a warning on stderr also counts here;
- ``traceback/crash``: a Python traceback, an exit code other than 0 and 1 (2 for usage errors, signals),
  or a malicious pickle whose payload ran;
- ``multi-line``: exit 1 without a traceback but with more than one non-log line on stderr;
- ``accepted``: exit 0 on a case that should fail;
- ``hang``: the timeout passed;
- ``refused``: exit 1 on a valid input (cases marked ``should_fail=False``, e.g. ``_base_`` by preset name).

Cases that should succeed (``should_fail=False``) count as ``ok`` on exit 0. Prints the table
(subcommand group, cases, one-line, traceback/crash, multi-line, accepted, hang) and every case that is not
one-line / ok with its last stderr line. Exit code 0 always (it is a survey, not a gate).
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import re
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = [""]  # presets/quickstart.yaml of the det under test (older checkouts resolve _base_ only by path)
READ_ONLY = "/sys/det_bad_inputs"  # /sys is mounted read-only (root ignores file modes, so chmod is no test)
LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d (DEBUG|INFO|WARNING|WARN)\b")

Setup = Callable[[Path, Path], None]  # (case dir, fixtures dir)


@dataclass
class Case:
    """One bad input: ``args`` may hold ``{T}`` (the case folder) and ``{F}`` (the fixtures folder)."""

    group: str
    name: str
    args: list[str | bytes]
    setup: Setup | None = None
    should_fail: bool = True
    warn_ok: bool = False
    stdin: bytes | None = None
    payload: bool = False  # a malicious pickle: its payload would create {T}/PWNED


@dataclass
class Outcome:
    case: Case
    kind: str
    code: int | None
    seconds: float
    last: str
    notes: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------- fixtures

TINY_PRESET = """\
# A tiny FCOS (ResNet-18) on the 4-image shapes dataset of this folder: one iteration, 128 px.
_base_: [{quickstart}]
model:
  backbone: {{depth: 18}}
x-norm: &norm {{mean: [123.675, 116.28, 103.53], std: [58.395, 57.12, 57.375], to_rgb: true}}
x-ds: &ds
  _delete_: true
  type: CocoDataset
  ann_file: {ann}
  img_prefix: {img}
  classes: [rectangle, ellipse, triangle, star]
x-test: &test
  <<: *ds
  pipeline:
    - {{type: LoadImageFromFile}}
    - type: MultiScaleFlipAug
      img_scale: [128, 128]
      flip: false
      transforms:
        - {{type: Resize, keep_ratio: true}}
        - {{type: RandomFlip}}
        - {{type: Normalize, <<: *norm}}
        - {{type: Pad, size_divisor: 32}}
        - {{type: DefaultFormatBundle}}
        - {{type: Collect, keys: [img]}}
data:
  samples_per_gpu: 2
  workers_per_gpu: 0
  train:
    <<: *ds
    pipeline:
      - {{type: LoadImageFromFile}}
      - {{type: LoadAnnotations, with_bbox: true}}
      - {{type: Resize, img_scale: [128, 128], keep_ratio: true}}
      - {{type: Normalize, <<: *norm}}
      - {{type: Pad, size_divisor: 32}}
      - {{type: DefaultFormatBundle}}
      - {{type: Collect, keys: [img, gt_bboxes, gt_labels]}}
  val: *test
  test: *test
runner: {{type: IterBasedRunner, max_iters: 1}}
checkpoint_config: {{interval: 1}}
evaluation: {{interval: 1000, metric: bbox}}
log_config: {{interval: 1}}
lr_config: {{_delete_: true, policy: fixed}}
"""


def build_fixtures(runner: "Runner", fx: Path, timeout: float) -> list[str]:
    """Dataset, preset, checkpoint and results file in ``fx``; returns what could not be built."""
    missing: list[str] = []
    run = lambda *a: runner.run(list(a), fx, None, timeout * 3)  # noqa: E731
    _, err = run("convert-dataset", "shapes", "ds", "--num-images", "4")
    ann = fx / "ds/annotations/instances_train.json"
    if not ann.exists():
        return [f"dataset: {err[-300:]}"]
    (fx / "tiny.yaml").write_text(TINY_PRESET.format(ann=ann, img=fx / "ds/images/train", quickstart=QUICKSTART[0]))
    # a second copy of the data whose images can be broken by cases without touching the shared one
    _, err = run("train", "tiny.yaml", "--work-dir", "wd", "--no-validate")
    ckpt = fx / "wd/latest.pth"
    if ckpt.exists():
        shutil.copyfile(ckpt.resolve(), fx / "model.pth")
    else:
        missing.append(f"checkpoint: {err[-300:]}")
    data = json.loads(ann.read_text())
    results = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9}
               for a in data["annotations"]]
    (fx / "results.json").write_text(json.dumps(results))
    from PIL import Image  # noqa: PLC0415  (only the benchmark needs it)

    Image.new("RGB", (32, 32), (200, 30, 30)).save(fx / "red.png")
    log = [{"env_info": "", "config": ""}]
    log += [{"mode": "train", "epoch": 1, "iter": i, "lr": 0.01, "time": 0.5, "data_time": 0.1, "loss": 1.0 / i}
            for i in range(1, 6)]
    (fx / "run.log.json").write_text("\n".join(json.dumps(x) for x in log) + "\n")
    return missing


# ----------------------------------------------------------------------------------------------- builders


def write(name: str, data: bytes | str, encoding: str = "utf-8") -> Setup:
    def setup(t: Path, fx: Path) -> None:
        p = t / name
        p.parent.mkdir(parents=True, exist_ok=True)
        text = data.replace("{T}", str(t)).replace("{F}", str(fx)).replace("{Q}", QUICKSTART[0]) if isinstance(data, str) else data
        p.write_bytes(text.encode(encoding) if isinstance(text, str) else text)
    return setup


def chain(*setups: Setup) -> Setup:
    def setup(t: Path, fx: Path) -> None:
        for s in setups:
            s(t, fx)
    return setup


def blocker(t: Path, fx: Path) -> None:
    """``{T}/img.jpg``: a regular file that paths like ``img.jpg/sub`` run into."""
    (t / "img.jpg").write_bytes(b"a file, not a folder")


def copy_data(t: Path, fx: Path) -> None:
    """A private copy of the dataset and a preset over it (``{T}/tiny.yaml``) that a case may break."""
    shutil.copytree(fx / "ds", t / "ds")
    (t / "tiny.yaml").write_text(TINY_PRESET.format(ann=t / "ds/annotations/instances_train.json",
                                                    img=t / "ds/images/train", quickstart=QUICKSTART[0]))


def truncate_image(t: Path, fx: Path) -> None:
    p = t / "ds/images/train/000000.jpg"
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def empty_image(t: Path, fx: Path) -> None:
    (t / "ds/images/train/000001.jpg").write_bytes(b"")


def edit_ann(fn: Callable[[dict], None]) -> Setup:
    def setup(t: Path, fx: Path) -> None:
        p = t / "ds/annotations/instances_train.json"
        data = json.loads(p.read_text())
        fn(data)
        p.write_text(json.dumps(data))
    return setup


def neg_width(d: dict) -> None:
    d["annotations"][0]["bbox"][2] = -5.0


def list_ids(d: dict) -> None:
    d["images"][0]["id"] = [1]
    d["annotations"][0]["image_id"] = [1]


def dict_ids(d: dict) -> None:
    d["annotations"][0]["id"] = {"a": 1}
    d["categories"][0]["id"] = {"b": 2}


def gt_copy(t: Path, fx: Path) -> None:
    shutil.copyfile(fx / "ds/annotations/instances_train.json", t / "gt.json")


def results(edit: Callable[[list], None] | None = None, raw: str | None = None, name: str = "dt.json") -> Setup:
    def setup(t: Path, fx: Path) -> None:
        if raw is not None:
            (t / name).write_text(raw)
            return
        data = json.loads((fx / "results.json").read_text())
        if edit:
            edit(data)
        (t / name).write_text(json.dumps(data, allow_nan=True))
    return setup


def set0(key: str, value: object) -> Callable[[list], None]:
    def edit(rs: list) -> None:
        rs[0][key] = value
    return edit


def malicious(name: str = "evil.pth") -> Setup:
    """A checkpoint whose unpickling would run ``touch {T}/PWNED``."""
    def setup(t: Path, fx: Path) -> None:
        class Payload:
            def __reduce__(self) -> tuple:
                return (os.system, (f"touch {shlex.quote(str(t / 'PWNED'))}",))

        import torch  # noqa: PLC0415

        torch.save({"state_dict": {"w": Payload()}, "meta": {}}, t / name)
    return setup


def truncated_ckpt(t: Path, fx: Path) -> None:
    data = (fx / "model.pth").read_bytes()
    (t / "trunc.pth").write_bytes(data[: len(data) // 2])


def png_as(name: str) -> Setup:
    def setup(t: Path, fx: Path) -> None:
        shutil.copyfile(fx / "red.png", t / name)
    return setup


def ckpt_as(name: str) -> Setup:
    def setup(t: Path, fx: Path) -> None:
        shutil.copyfile(fx / "model.pth", t / name)
    return setup


def preset_with(text: str, name: str = "p.yaml") -> Setup:
    return write(name, text)


LATIN1_PRESET = "# r\xe9glage fran\xe7ais\n_base_: [{Q}]\n"
RECURSIVE_ALIAS = "_base_: [{Q}]\nx-loop: &a [*a]\n"
DEEP_LIST = "_base_: [{Q}]\nx-deep: " + "[" * 5000 + "]" * 5000 + "\n"
ALIAS_BOMB = "_base_: [{Q}]\nx0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"x{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]\n" for i in range(1, 10))
LONG_BASE = "_base_: [" + "a" * 5000 + ".yaml]\n"
DEEP_JSON = "[" * 100_000 + "]" * 100_000
NON_UTF8_NAME = b"\xff\xfeimg.jpg"


def non_utf8_image(t: Path, fx: Path) -> None:
    shutil.copyfile(fx / "ds/images/train/000000.jpg", os.fsencode(t) + b"/" + NON_UTF8_NAME)


def half_jpeg(name: str) -> Setup:
    def setup(t: Path, fx: Path) -> None:
        data = (fx / "ds/images/train/000000.jpg").read_bytes()
        (t / name).parent.mkdir(parents=True, exist_ok=True)
        (t / name).write_bytes(data[: len(data) // 2])
    return setup


# --- dataset-converter trees


def voc_tree(xml: bytes | str | None = None) -> Setup:
    good = ("<annotation><size><width>256</width><height>256</height><depth>3</depth></size>"
            "<object><name>dog</name><difficult>0</difficult><bndbox><xmin>1</xmin><ymin>1</ymin>"
            "<xmax>50</xmax><ymax>60</ymax></bndbox></object></annotation>")

    def setup(t: Path, fx: Path) -> None:
        root = t / "VOCdevkit/VOC2007"
        (root / "ImageSets/Main").mkdir(parents=True)
        (root / "Annotations").mkdir()
        (root / "JPEGImages").mkdir()
        (root / "ImageSets/Main/train.txt").write_text("000001\n")
        body = good if xml is None else xml
        (root / "Annotations/000001.xml").write_bytes(body.encode() if isinstance(body, str) else body)
        shutil.copyfile(fx / "ds/images/train/000000.jpg", root / "JPEGImages/000001.jpg")
    return setup


def yolo_tree(label: bytes | str = "0 0.5 0.5 0.2 0.2\n", names: str | None = "a\nb\n") -> Setup:
    def setup(t: Path, fx: Path) -> None:
        (t / "y/images").mkdir(parents=True)
        (t / "y/labels").mkdir()
        shutil.copyfile(fx / "ds/images/train/000000.jpg", t / "y/images/0.jpg")
        (t / "y/labels/0.txt").write_bytes(label.encode() if isinstance(label, str) else label)
        if names is not None:
            (t / "names.txt").write_text(names)
    return setup


def labelme_tree(doc: str | None) -> Setup:
    def setup(t: Path, fx: Path) -> None:
        (t / "lm").mkdir()
        shutil.copyfile(fx / "ds/images/train/000000.jpg", t / "lm/0.jpg")
        if doc is not None:
            (t / "lm/0.json").write_text(doc)
    return setup


LABELME_OK = json.dumps({"imagePath": "0.jpg", "imageHeight": 256, "imageWidth": 256,
                         "shapes": [{"label": "dog", "points": [[1, 1], [40, 50]], "shape_type": "rectangle"}]})


def classes_file(t: Path, fx: Path) -> None:
    (t / "classes.txt").write_text("rectangle\nellipse\n")


# ----------------------------------------------------------------------------------------------- catalogue


def catalogue() -> list[Case]:
    C = Case
    tiny, ck, gt, res = "{F}/tiny.yaml", "{F}/model.pth", "{F}/ds/annotations/instances_train.json", "{F}/results.json"
    cases: list[Case] = []
    add = cases.append

    # --- train
    g = "train"
    add(C(g, "no arguments (usage)", ["train"]))
    add(C(g, "unknown option (usage)", ["train", tiny, "--no-such-option"]))
    add(C(g, "--seed abc (usage)", ["train", tiny, "--seed", "abc"]))
    add(C(g, "missing preset file", ["train", "{T}/nope.yaml"]))
    add(C(g, "unknown preset name", ["train", "no_such_preset_xyz"]))
    add(C(g, "preset is a folder", ["train", "{T}"]))
    add(C(g, "empty preset file", ["train", "{T}/p.yaml", "--work-dir", "{T}/wd"], preset_with("")))
    add(C(g, "preset not UTF-8 (Latin-1 comment)", ["train", "{T}/p.yaml", "--work-dir", "{T}/wd"], write("p.yaml", LATIN1_PRESET, "latin-1")))
    add(C(g, "YAML syntax error", ["train", "{T}/p.yaml"], preset_with("model: {type: [\n")))
    add(C(g, "YAML top level is a list", ["train", "{T}/p.yaml"], preset_with("- a\n- b\n")))
    add(C(g, "recursive YAML alias", ["train", "{T}/p.yaml"], preset_with(RECURSIVE_ALIAS)))
    add(C(g, "5000-deep list", ["train", "{T}/p.yaml"], preset_with(DEEP_LIST)))
    add(C(g, "alias bomb", ["train", "{T}/p.yaml"], preset_with(ALIAS_BOMB)))
    add(C(g, "_base_: /dev/zero", ["train", "{T}/p.yaml"], preset_with("_base_: /dev/zero\n")))
    add(C(g, "5000-char _base_ name", ["train", "{T}/p.yaml"], preset_with(LONG_BASE)))
    add(C(g, "_base_ missing file", ["train", "{T}/p.yaml"], preset_with("_base_: [nope/missing.yaml]\n")))
    add(C(g, "_base_ includes itself", ["train", "{T}/p.yaml"], preset_with("_base_: [p.yaml]\n")))
    add(C(g, "a PNG as the preset", ["train", "{T}/p.yaml"], png_as("p.yaml")))
    add(C(g, "--cfg-options optimizer.lr=abc", ["train", tiny, "--work-dir", "{T}/wd", "--cfg-options", "optimizer.lr=abc"]))
    add(C(g, "--cfg-options optimizer.lr=[0.1]", ["train", tiny, "--work-dir", "{T}/wd", "--cfg-options", "optimizer.lr=[0.1]"]))
    add(C(g, "lr: null in the preset", ["train", "{T}/p.yaml", "--work-dir", "{T}/wd"],
          preset_with("_base_: [{F}/tiny.yaml]\noptimizer: {lr: null}\n")))
    add(C(g, "data.samples_per_gpu=abc", ["train", tiny, "--work-dir", "{T}/wd", "--cfg-options", "data.samples_per_gpu=abc"]))
    add(C(g, "data.train_dataloader.samples_per_gpu=abc", ["train", tiny, "--work-dir", "{T}/wd", "--cfg-options",
                                                            "data.train_dataloader.samples_per_gpu=abc"]))
    add(C(g, "runner.max_iters=abc", ["train", tiny, "--work-dir", "{T}/wd", "--cfg-options", "runner.max_iters=abc"]))
    add(C(g, "checkpoint_config.interval=0", ["train", tiny, "--work-dir", "{T}/wd", "--cfg-options", "checkpoint_config.interval=0"]))
    add(C(g, "--cfg-options without '='", ["train", tiny, "--work-dir", "{T}/wd", "--cfg-options", "optimizer.lr"]))
    add(C(g, "--cfg-options unknown model key", ["train", tiny, "--work-dir", "{T}/wd", "--cfg-options", "model.no_such_key=1"]))
    add(C(g, "--cfg-options unknown type name", ["train", tiny, "--work-dir", "{T}/wd", "--cfg-options", "optimizer.type=NoSuchOpt"]))
    add(C(g, "--work-dir under a file", ["train", tiny, "--work-dir", "{T}/img.jpg/sub"], blocker))
    add(C(g, "--work-dir read-only", ["train", tiny, "--work-dir", READ_ONLY]))
    add(C(g, "--resume in an empty work dir", ["train", tiny, "--work-dir", "{T}/wd", "--resume"], lambda t, f: (t / "wd").mkdir()))
    add(C(g, "--resume missing file", ["train", tiny, "--work-dir", "{T}/wd", "--resume", "{T}/nope.pth"]))
    add(C(g, "--resume a PNG", ["train", tiny, "--work-dir", "{T}/wd", "--resume", "{T}/x.pth"], png_as("x.pth")))
    add(C(g, "--resume PATH without .pth", ["train", tiny, "--work-dir", "{T}/wd", "--resume", "{T}/ckpt.bin"],
          ckpt_as("ckpt.bin"), should_fail=False))
    add(C(g, "--resume truncated checkpoint", ["train", tiny, "--work-dir", "{T}/wd", "--resume", "{T}/trunc.pth"], truncated_ckpt))
    add(C(g, "--load-from missing", ["train", tiny, "--work-dir", "{T}/wd", "--load-from", "{T}/nope.pth"]))
    add(C(g, "--load-from truncated checkpoint", ["train", tiny, "--work-dir", "{T}/wd", "--load-from", "{T}/trunc.pth"], truncated_ckpt))
    add(C(g, "--load-from malicious pickle", ["train", tiny, "--work-dir", "{T}/wd", "--load-from", "{T}/evil.pth"],
          malicious(), payload=True))
    add(C(g, "init_cfg Pretrained malicious pickle", ["train", tiny, "--work-dir", "{T}/wd", "--cfg-options",
                                                     "model.backbone.init_cfg={type: Pretrained, checkpoint: {T}/evil.pth}"],
          malicious(), payload=True))
    add(C(g, "--load-from a PNG", ["train", tiny, "--work-dir", "{T}/wd", "--load-from", "{T}/x.pth"], png_as("x.pth")))
    add(C(g, "--device cuda without a GPU", ["train", tiny, "--work-dir", "{T}/wd", "--device", "cuda"]))
    add(C(g, "--ops nope", ["train", tiny, "--work-dir", "{T}/wd", "--ops", "nope"]))
    add(C(g, "--launcher nope", ["train", tiny, "--work-dir", "{T}/wd", "--launcher", "nope"]))
    add(C(g, "truncated JPEG in the training set", ["train", "{T}/tiny.yaml", "--work-dir", "{T}/wd"], chain(copy_data, truncate_image)))
    add(C(g, "0-byte image in the training set", ["train", "{T}/tiny.yaml", "--work-dir", "{T}/wd"], chain(copy_data, empty_image)))
    add(C(g, "negative-width training box", ["train", "{T}/tiny.yaml", "--work-dir", "{T}/wd"],
          chain(copy_data, edit_ann(neg_width)), warn_ok=True))
    add(C(g, "ann_file missing", ["train", "{T}/tiny.yaml", "--work-dir", "{T}/wd"],
          chain(copy_data, lambda t, f: (t / "ds/annotations/instances_train.json").unlink())))
    add(C(g, "ann_file is a JPEG", ["train", "{T}/tiny.yaml", "--work-dir", "{T}/wd"],
          chain(copy_data, lambda t, f: shutil.copyfile(t / "ds/images/train/000000.jpg", t / "ds/annotations/instances_train.json"))))
    add(C(g, "ann_file ids are lists", ["train", "{T}/tiny.yaml", "--work-dir", "{T}/wd"], chain(copy_data, edit_ann(list_ids))))
    add(C(g, "img_prefix missing folder", ["train", "{T}/tiny.yaml", "--work-dir", "{T}/wd"],
          chain(copy_data, lambda t, f: shutil.rmtree(t / "ds/images/train"))))

    # --- test
    g = "test"
    add(C(g, "no arguments (usage)", ["test"]))
    add(C(g, "three positionals (usage)", ["test", tiny, ck, ck]))
    add(C(g, "missing checkpoint", ["test", "{T}/nope.pth"]))
    add(C(g, "a PNG as the checkpoint", ["test", "{T}/x.pth"], png_as("x.pth")))
    add(C(g, "0-byte checkpoint", ["test", "{T}/x.pth"], write("x.pth", b"")))
    add(C(g, "text file as the checkpoint", ["test", "{T}/x.pth"], write("x.pth", "hello\n")))
    add(C(g, "truncated checkpoint", ["test", "{T}/trunc.pth"], truncated_ckpt))
    add(C(g, "malicious pickle", ["test", "{T}/evil.pth"], malicious(), payload=True))
    add(C(g, "malicious pickle with a preset", ["test", tiny, "{T}/evil.pth"], malicious(), payload=True))
    add(C(g, "preset and checkpoint swapped", ["test", ck, tiny]))
    add(C(g, "--out under a file", ["test", ck, "--out", "{T}/img.jpg/r.json"], blocker))
    add(C(g, "--out read-only", ["test", ck, "--out", READ_ONLY + "/r.json"]))
    add(C(g, "--show-dir under a file", ["test", ck, "--show-dir", "{T}/img.jpg/show"], blocker))
    add(C(g, "--metric nope", ["test", ck, "--metric", "nope"]))
    add(C(g, "--eval-options garbage", ["test", ck, "--eval-options", "iou_thrs=[[["]))
    add(C(g, "--backend nope", ["test", ck, "--backend", "nope"]))
    add(C(g, "--format-only without --out", ["test", ck, "--format-only"]))
    add(C(g, "--cfg-options data.samples_per_gpu=abc", ["test", ck, "--cfg-options", "data.samples_per_gpu=abc"]))
    add(C(g, "onnxruntime backend with a .pth", ["test", ck, "--backend", "onnxruntime"]))

    # --- eval --gt --dt
    g = "eval --gt --dt"
    ev = lambda *extra: ["eval", "--gt", gt, "--dt", "{T}/dt.json", *extra]  # noqa: E731
    add(C(g, "--gt without --dt", ["eval", "--gt", gt]))
    add(C(g, "missing --gt", ["eval", "--gt", "{T}/nope.json", "--dt", res]))
    add(C(g, "missing --dt", ["eval", "--gt", gt, "--dt", "{T}/nope.json"]))
    for engine in ("det", "pycocotools"):
        add(C(g, f"string score ({engine})", ev("--engine", engine), results(set0("score", "high"))))
        add(C(g, f"null score ({engine})", ev("--engine", engine), results(set0("score", None))))
    add(C(g, "NaN score", ev(), results(set0("score", float("nan"))), warn_ok=True))
    add(C(g, "inf box", ev(), results(set0("bbox", [1.0, 1.0, float("inf"), 4.0])), warn_ok=True))
    add(C(g, "negative-width result box", ev(), results(set0("bbox", [10.0, 10.0, -4.0, 4.0])), warn_ok=True))
    add(C(g, "bbox of 3 numbers", ev(), results(set0("bbox", [1, 2, 3]))))
    add(C(g, "bbox a string", ev(), results(set0("bbox", "1 2 3 4"))))
    add(C(g, "unknown image_id", ev(), results(set0("image_id", 999))))
    add(C(g, "unknown category_id", ev(), results(set0("category_id", 999))))
    add(C(g, "image_id a list", ev(), results(set0("image_id", [1]))))
    add(C(g, "results a dict", ev(), results(raw='{"a": 1}')))
    add(C(g, "results empty file", ev(), results(raw="")))
    add(C(g, "results truncated JSON", ev(), results(raw='[{"image_id": 1, "category_id": 1, "bbox": [1,')))
    add(C(g, "results not UTF-8", ev(), write("dt.json", b'[{"image_id": 1, "x": "\xff\xfe"}]')))
    add(C(g, "results 100000-deep JSON", ev(), results(raw=DEEP_JSON)))
    add(C(g, "gt ids are lists", ["eval", "--gt", "{T}/gt.json", "--dt", res],
          lambda t, f: (t / "gt.json").write_text(json.dumps(_edited(f, list_ids)))))
    add(C(g, "gt 100000-deep JSON", ["eval", "--gt", "{T}/gt.json", "--dt", res], write("gt.json", DEEP_JSON)))
    add(C(g, "gt is a JPEG", ["eval", "--gt", "{F}/ds/images/train/000000.jpg", "--dt", res]))
    add(C(g, "--engine nope", ["eval", "--gt", gt, "--dt", res, "--engine", "nope"]))
    add(C(g, "--metric segm without masks", ["eval", "--gt", gt, "--dt", res, "--metric", "segm"]))
    add(C(g, "--plot-dir under a file", ["eval", "--gt", gt, "--dt", res, "--plot-dir", "{T}/img.jpg/pr"], blocker))
    add(C(g, "--dt - with garbage on stdin", ["eval", "--gt", gt, "--dt", "-"], stdin=b"\x00\x01garbage"))

    # --- infer
    g = "infer"
    add(C(g, "no arguments (usage)", ["infer"]))
    add(C(g, "image name not UTF-8", ["infer", ck, os.fsencode("{T}/") + NON_UTF8_NAME, "--out-dir", "{T}/out"], non_utf8_image,
          should_fail=False))
    add(C(g, "truncated JPEG", ["infer", ck, "{T}/half.jpg", "--out-dir", "{T}/out"], half_jpeg("half.jpg")))
    add(C(g, "0-byte image", ["infer", ck, "{T}/e.jpg", "--out-dir", "{T}/out"], write("e.jpg", b"")))
    add(C(g, "text file as an image", ["infer", ck, "{T}/t.jpg", "--out-dir", "{T}/out"], write("t.jpg", "not an image\n")))
    add(C(g, "a checkpoint as the image", ["infer", ck, ck, "--out-dir", "{T}/out"]))
    add(C(g, "a PNG as the checkpoint", ["infer", "{T}/x.pth", "{F}/red.png", "--out-dir", "{T}/out"], png_as("x.pth")))
    add(C(g, "missing checkpoint", ["infer", "{T}/nope.pth", "{F}/red.png", "--out-dir", "{T}/out"]))
    add(C(g, "truncated checkpoint", ["infer", "{T}/trunc.pth", "{F}/red.png", "--out-dir", "{T}/out"], truncated_ckpt))
    add(C(g, "malicious pickle", ["infer", "{T}/evil.pth", "{F}/red.png", "--out-dir", "{T}/out"], malicious(), payload=True))
    add(C(g, "missing image", ["infer", ck, "{T}/nope.jpg", "--out-dir", "{T}/out"]))
    add(C(g, "empty folder", ["infer", ck, "{T}/empty", "--out-dir", "{T}/out"], lambda t, f: (t / "empty").mkdir()))
    add(C(g, "unknown zoo preset", ["infer", "zoo:no_such_preset", "{F}/red.png", "--out-dir", "{T}/out"]))
    add(C(g, "--out-dir under a file", ["infer", ck, "{F}/red.png", "--out-dir", "{T}/img.jpg/sub"], blocker))
    add(C(g, "--out-dir read-only", ["infer", ck, "{F}/red.png", "--out-dir", READ_ONLY]))
    add(C(g, "--score-thr abc (usage)", ["infer", ck, "{F}/red.png", "--score-thr", "abc"]))
    add(C(g, "--config missing", ["infer", ck, "{F}/red.png", "--config", "{T}/nope.yaml", "--out-dir", "{T}/out"]))
    add(C(g, "paths on stdin, one missing", ["infer", ck, "-", "--out-dir", "{T}/out"], stdin=b"/no/such/file.jpg\n"))

    # --- export onnx
    g = "export onnx"
    add(C(g, "no arguments (usage)", ["export", "onnx"]))
    add(C(g, "missing checkpoint", ["export", "onnx", "{T}/nope.pth", "-o", "{T}/m.onnx"]))
    add(C(g, "a PNG as the checkpoint", ["export", "onnx", "{T}/x.pth", "-o", "{T}/m.onnx"], png_as("x.pth")))
    add(C(g, "truncated checkpoint", ["export", "onnx", "{T}/trunc.pth", "-o", "{T}/m.onnx"], truncated_ckpt))
    add(C(g, "malicious pickle", ["export", "onnx", "{T}/evil.pth", "-o", "{T}/m.onnx"], malicious(), payload=True))
    add(C(g, "-o under a file", ["export", "onnx", ck, "-o", "{T}/img.jpg/m.onnx"], blocker))
    add(C(g, "-o read-only", ["export", "onnx", ck, "-o", READ_ONLY + "/m.onnx"]))
    add(C(g, "--shape abc (usage)", ["export", "onnx", ck, "--shape", "abc", "1"]))
    add(C(g, "--input-img truncated JPEG", ["export", "onnx", ck, "-o", "{T}/m.onnx", "--input-img", "{T}/half.jpg"], half_jpeg("half.jpg")))
    add(C(g, "--input-img missing", ["export", "onnx", ck, "-o", "{T}/m.onnx", "--input-img", "{T}/nope.jpg"]))

    # --- convert-dataset
    g = "convert-dataset"
    add(C(g, "voc: missing devkit", ["convert-dataset", "voc", "{T}/nope", "-o", "{T}/out"]))
    add(C(g, "voc: empty folder", ["convert-dataset", "voc", "{T}/e", "-o", "{T}/out"], lambda t, f: (t / "e").mkdir()))
    add(C(g, "voc: malformed XML", ["convert-dataset", "voc", "{T}/VOCdevkit", "-o", "{T}/out"], voc_tree("<annotation><size>")))
    add(C(g, "voc: XML not UTF-8", ["convert-dataset", "voc", "{T}/VOCdevkit", "-o", "{T}/out"],
          voc_tree(b"<?xml version='1.0' encoding='utf-8'?><annotation><name>\xff\xfe</name></annotation>")))
    add(C(g, "voc: box with text coordinates", ["convert-dataset", "voc", "{T}/VOCdevkit", "-o", "{T}/out"],
          voc_tree("<annotation><size><width>256</width><height>256</height></size><object><name>dog</name>"
                   "<bndbox><xmin>a</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax></bndbox></object></annotation>")))
    add(C(g, "voc: --out-dir under a file", ["convert-dataset", "voc", "{T}/VOCdevkit", "-o", "{T}/img.jpg/out"], chain(voc_tree(), blocker)))
    add(C(g, "voc: --classes missing", ["convert-dataset", "voc", "{T}/VOCdevkit", "-o", "{T}/out", "--classes", "{T}/nope.txt"], voc_tree()))
    add(C(g, "yolo: missing root", ["convert-dataset", "yolo", "{T}/nope", "--names", "{T}/names.txt", "-o", "{T}/out"]))
    add(C(g, "yolo: empty folder", ["convert-dataset", "yolo", "{T}/e", "--names", "{T}/names.txt", "-o", "{T}/out"],
          chain(lambda t, f: (t / "e").mkdir(), write("names.txt", "a\n"))))
    add(C(g, "yolo: text in a label line", ["convert-dataset", "yolo", "{T}/y", "--names", "{T}/names.txt", "-o", "{T}/out"],
          yolo_tree("0 abc 0.5 0.2 0.2\n")))
    add(C(g, "yolo: class index out of range", ["convert-dataset", "yolo", "{T}/y", "--names", "{T}/names.txt", "-o", "{T}/out"],
          yolo_tree("7 0.5 0.5 0.2 0.2\n")))
    add(C(g, "yolo: label not UTF-8", ["convert-dataset", "yolo", "{T}/y", "--names", "{T}/names.txt", "-o", "{T}/out"],
          yolo_tree(b"0 0.5 0.5 0.2 0.2 \xff\xfe\n")))
    add(C(g, "yolo: NaN coordinate", ["convert-dataset", "yolo", "{T}/y", "--names", "{T}/names.txt", "-o", "{T}/out"],
          yolo_tree("0 nan 0.5 0.2 0.2\n")))
    add(C(g, "yolo: --names missing", ["convert-dataset", "yolo", "{T}/y", "--names", "{T}/nope.txt", "-o", "{T}/out"], yolo_tree(names=None)))
    add(C(g, "yolo: --names a PNG", ["convert-dataset", "yolo", "{T}/y", "--names", "{T}/n.png", "-o", "{T}/out"],
          chain(yolo_tree(), png_as("n.png"))))
    add(C(g, "labelme: empty folder", ["convert-dataset", "labelme", "{T}/lm", "-o", "{T}/out.json"], labelme_tree(None)))
    add(C(g, "labelme: malformed JSON", ["convert-dataset", "labelme", "{T}/lm", "-o", "{T}/out.json"], labelme_tree("{\"shapes\": [")))
    add(C(g, "labelme: shapes not a list", ["convert-dataset", "labelme", "{T}/lm", "-o", "{T}/out.json"],
          labelme_tree(json.dumps({"imagePath": "0.jpg", "imageHeight": 256, "imageWidth": 256, "shapes": 5}))))
    add(C(g, "labelme: points are strings", ["convert-dataset", "labelme", "{T}/lm", "-o", "{T}/out.json"],
          labelme_tree(json.dumps({"imagePath": "0.jpg", "imageHeight": 256, "imageWidth": 256,
                                   "shapes": [{"label": "a", "points": "x", "shape_type": "polygon"}]}))))
    add(C(g, "labelme: -o under a file", ["convert-dataset", "labelme", "{T}/lm", "-o", "{T}/img.jpg/out.json"],
          chain(labelme_tree(LABELME_OK), blocker)))
    add(C(g, "images2coco: empty folder", ["convert-dataset", "images2coco", "{T}/e", "{T}/classes.txt", "{T}/o.json"],
          chain(lambda t, f: (t / "e").mkdir(), classes_file)))
    add(C(g, "images2coco: classes missing", ["convert-dataset", "images2coco", "{F}/ds/images/train", "{T}/nope.txt", "{T}/o.json"]))
    add(C(g, "images2coco: out under a file", ["convert-dataset", "images2coco", "{F}/ds/images/train", "{T}/classes.txt",
                                                "{T}/img.jpg/o.json"], chain(classes_file, blocker)))
    add(C(g, "images2coco: truncated image", ["convert-dataset", "images2coco", "{T}/imgs", "{T}/classes.txt", "{T}/o.json"],
          chain(classes_file, lambda t, f: (t / "imgs").mkdir(), lambda t, f: half_jpeg("imgs/h.jpg")(t, f))))
    add(C(g, "cityscapes: missing root", ["convert-dataset", "cityscapes", "{T}/nope", "-o", "{T}/out"]))
    add(C(g, "cityscapes: empty root", ["convert-dataset", "cityscapes", "{T}/e", "-o", "{T}/out"], lambda t, f: (t / "e").mkdir()))
    add(C(g, "cityscapes: polygon JSON malformed", ["convert-dataset", "cityscapes", "{T}/cs", "-o", "{T}/out"],
          chain(write("cs/gtFine/train/x/x_000000_000000_gtFine_polygons.json", "{\"objects\": ["),
                half_jpeg("cs/leftImg8bit/train/x/x_000000_000000_leftImg8bit.png"))))
    add(C(g, "shapes: --num-images 0 (usage)", ["convert-dataset", "shapes", "{T}/o", "--num-images", "0"]))
    add(C(g, "shapes: out under a file", ["convert-dataset", "shapes", "{T}/img.jpg/o", "--num-images", "2"], blocker))
    add(C(g, "shapes: out read-only", ["convert-dataset", "shapes", READ_ONLY, "--num-images", "2"]))
    add(C(g, "shapes: --split nope", ["convert-dataset", "shapes", "{T}/o", "--num-images", "2", "--split", "nope"]))
    ck_ = lambda *a: ["convert-dataset", "check", *a]  # noqa: E731
    add(C(g, "check: missing file", ck_("{T}/nope.json")))
    add(C(g, "check: not JSON", ck_("{F}/ds/images/train/000000.jpg")))
    add(C(g, "check: empty file", ck_("{T}/a.json"), write("a.json", b"")))
    add(C(g, "check: not UTF-8", ck_("{T}/a.json"), write("a.json", b'{"images": "\xff\xfe"}')))
    add(C(g, "check: ids are lists", ck_("{T}/gt.json"), lambda t, f: (t / "gt.json").write_text(json.dumps(_edited(f, list_ids)))))
    add(C(g, "check: ids are dicts", ck_("{T}/gt.json"), lambda t, f: (t / "gt.json").write_text(json.dumps(_edited(f, dict_ids)))))
    add(C(g, "check: 100000-deep JSON", ck_("{T}/a.json"), write("a.json", DEEP_JSON)))
    add(C(g, "check: top level a list", ck_("{T}/a.json"), write("a.json", "[1, 2]")))
    add(C(g, "check: negative-width box", ck_("{T}/ds/annotations/instances_train.json"), chain(copy_data, edit_ann(neg_width))))
    add(C(g, "check --img-dir: 0-byte image", ck_("{T}/ds/annotations/instances_train.json", "--img-dir", "{T}/ds/images/train"),
          chain(copy_data, empty_image)))
    add(C(g, "check --img-dir: truncated image", ck_("{T}/ds/annotations/instances_train.json", "--img-dir", "{T}/ds/images/train"),
          chain(copy_data, truncate_image)))
    add(C(g, "check --img-dir: size differs from JSON", ck_("{T}/ds/annotations/instances_train.json", "--img-dir", "{T}/ds/images/train"),
          chain(copy_data, lambda t, f: shutil.copyfile(f / "red.png", t / "ds/images/train/000002.jpg"))))
    add(C(g, "check: garbage on stdin", ck_("-"), stdin=b"\xff\x00garbage"))

    # --- confusion-matrix
    g = "confusion-matrix"
    add(C(g, "string score", ["confusion-matrix", tiny, "{T}/dt.json", "{T}/cm"], results(set0("score", "high"))))
    add(C(g, "null score", ["confusion-matrix", tiny, "{T}/dt.json", "{T}/cm"], results(set0("score", None))))
    add(C(g, "NaN score", ["confusion-matrix", tiny, "{T}/dt.json", "{T}/cm"], results(set0("score", float("nan"))), warn_ok=True))
    add(C(g, "bbox a string", ["confusion-matrix", tiny, "{T}/dt.json", "{T}/cm"], results(set0("bbox", "1 2 3 4"))))
    add(C(g, "missing results", ["confusion-matrix", tiny, "{T}/nope.json", "{T}/cm"]))
    add(C(g, "results a dict", ["confusion-matrix", tiny, "{T}/dt.json", "{T}/cm"], results(raw='{"a": 1}')))
    add(C(g, "out dir under a file", ["confusion-matrix", tiny, res, "{T}/img.jpg/cm"], blocker))
    add(C(g, "out dir read-only", ["confusion-matrix", tiny, res, READ_ONLY]))
    add(C(g, "missing preset", ["confusion-matrix", "{T}/nope.yaml", res, "{T}/cm"]))
    add(C(g, "--tp-iou-thr abc (usage)", ["confusion-matrix", tiny, res, "{T}/cm", "--tp-iou-thr", "abc"]))

    # --- analyze-logs
    g = "analyze-logs"
    add(C(g, "plot-curve: missing log", ["analyze-logs", "plot-curve", "{T}/nope.log.json", "--out", "{T}/c.png"]))
    add(C(g, "plot-curve: empty log", ["analyze-logs", "plot-curve", "{T}/a.log.json", "--out", "{T}/c.png"], write("a.log.json", "")))
    add(C(g, "plot-curve: not JSON lines", ["analyze-logs", "plot-curve", "{T}/a.log.json", "--out", "{T}/c.png"],
          write("a.log.json", "hello\nworld\n")))
    add(C(g, "plot-curve: a PNG as the log", ["analyze-logs", "plot-curve", "{F}/red.png", "--out", "{T}/c.png"]))
    add(C(g, "plot-curve: unknown key", ["analyze-logs", "plot-curve", "{F}/run.log.json", "--keys", "nope", "--out", "{T}/c.png"]))
    add(C(g, "plot-curve: --out .xyz", ["analyze-logs", "plot-curve", "{F}/run.log.json", "--keys", "loss", "--out", "{T}/c.xyz"]))
    add(C(g, "plot-curve: --out under a file", ["analyze-logs", "plot-curve", "{F}/run.log.json", "--keys", "loss",
                                                "--out", "{T}/img.jpg/c.png"], blocker))
    add(C(g, "plot-curve: --out read-only", ["analyze-logs", "plot-curve", "{F}/run.log.json", "--keys", "loss",
                                             "--out", READ_ONLY + "/c.png"]))
    add(C(g, "plot-curve: --style nope", ["analyze-logs", "plot-curve", "{F}/run.log.json", "--keys", "loss",
                                          "--out", "{T}/c.png", "--style", "nope"]))
    add(C(g, "cal-train-time: missing log", ["analyze-logs", "cal-train-time", "{T}/nope.log.json"]))
    add(C(g, "cal-train-time: empty log", ["analyze-logs", "cal-train-time", "{T}/a.log.json"], write("a.log.json", "")))
    add(C(g, "cal-train-time: time a string", ["analyze-logs", "cal-train-time", "{T}/a.log.json"],
          write("a.log.json", '{"mode": "train", "epoch": 1, "iter": 1, "time": "slow"}\n'
                              '{"mode": "train", "epoch": 1, "iter": 2, "time": "slow"}\n')))
    add(C(g, "cal-train-time: not UTF-8", ["analyze-logs", "cal-train-time", "{T}/a.log.json"], write("a.log.json", b"\xff\xfe{}\n")))

    # --- analyze-results
    g = "analyze-results"
    add(C(g, "string score", ["analyze-results", tiny, "{T}/dt.json", "{T}/show"], results(set0("score", "high"))))
    add(C(g, "null score", ["analyze-results", tiny, "{T}/dt.json", "{T}/show"], results(set0("score", None))))
    add(C(g, "NaN score", ["analyze-results", tiny, "{T}/dt.json", "{T}/show"], results(set0("score", float("nan"))), warn_ok=True))
    add(C(g, "missing results", ["analyze-results", tiny, "{T}/nope.json", "{T}/show"]))
    add(C(g, "show dir under a file", ["analyze-results", tiny, res, "{T}/img.jpg/show"], blocker))
    add(C(g, "show dir read-only", ["analyze-results", tiny, res, READ_ONLY]))
    add(C(g, "--topk 0 (usage)", ["analyze-results", tiny, res, "{T}/show", "--topk", "0"]))

    # --- browse-dataset
    g = "browse-dataset"
    add(C(g, "missing preset", ["browse-dataset", "{T}/nope.yaml", "--output-dir", "{T}/b"]))
    add(C(g, "--output-dir under a file", ["browse-dataset", tiny, "--output-dir", "{T}/img.jpg/b"], blocker))
    add(C(g, "--output-dir read-only", ["browse-dataset", tiny, "--output-dir", READ_ONLY]))
    add(C(g, "--skip-type NoSuchStep", ["browse-dataset", tiny, "--output-dir", "{T}/b", "--skip-type", "NoSuchStep"]))
    add(C(g, "truncated image in the dataset", ["browse-dataset", "{T}/tiny.yaml", "--output-dir", "{T}/b"], chain(copy_data, truncate_image)))

    # --- optimize-anchors
    g = "optimize-anchors"
    add(C(g, "anchor-free preset", ["optimize-anchors", tiny, "--input-shape", "128", "128", "--output-dir", "{T}/a"]))
    add(C(g, "--input-shape abc (usage)", ["optimize-anchors", tiny, "--input-shape", "abc", "1"]))
    add(C(g, "--output-dir under a file", ["optimize-anchors", tiny, "--input-shape", "128", "128", "--output-dir", "{T}/img.jpg/a"], blocker))
    add(C(g, "--algorithm nope", ["optimize-anchors", tiny, "--input-shape", "128", "128", "--algorithm", "nope"]))
    add(C(g, "missing preset", ["optimize-anchors", "{T}/nope.yaml", "--input-shape", "128", "128"]))

    # --- benchmark
    g = "benchmark"
    add(C(g, "model: missing preset", ["benchmark", "model", "{T}/nope.yaml", "--max-iter", "2"]))
    add(C(g, "model: a PNG as the checkpoint", ["benchmark", "model", tiny, "{T}/x.pth", "--max-iter", "2", "--num-warmup", "0"], png_as("x.pth")))
    add(C(g, "model: malicious pickle", ["benchmark", "model", tiny, "{T}/evil.pth", "--max-iter", "2", "--num-warmup", "0"], malicious(), payload=True))
    add(C(g, "model: --task nope", ["benchmark", "model", tiny, "--task", "nope", "--max-iter", "2", "--num-warmup", "0"]))
    add(C(g, "model: --max-iter 0 (usage)", ["benchmark", "model", tiny, "--max-iter", "0"]))

    # --- convert-checkpoint
    g = "convert-checkpoint"
    add(C(g, "missing input", ["convert-checkpoint", "mmdet", "{T}/nope.pth", "{T}/o.pth"]))
    add(C(g, "a PNG as input", ["convert-checkpoint", "mmdet", "{T}/x.pth", "{T}/o.pth"], png_as("x.pth")))
    add(C(g, "truncated input", ["convert-checkpoint", "mmdet", "{T}/trunc.pth", "{T}/o.pth"], truncated_ckpt))
    add(C(g, "malicious pickle", ["convert-checkpoint", "mmdet", "{T}/evil.pth", "{T}/o.pth"], malicious(), payload=True))
    add(C(g, "a det checkpoint as mmdet", ["convert-checkpoint", "mmdet", ck, "{T}/o.pth"]))
    add(C(g, "unknown source (usage)", ["convert-checkpoint", "nope", ck, "{T}/o.pth"]))
    add(C(g, "torchvision: a PNG as input", ["convert-checkpoint", "torchvision", "{T}/x.pth", "{T}/o.pth"], png_as("x.pth")))

    # --- publish
    g = "publish"
    add(C(g, "missing checkpoint", ["publish", "{T}/nope.pth", "{T}/pub"]))
    add(C(g, "a PNG as the checkpoint", ["publish", "{T}/x.pth", "{T}/pub"], png_as("x.pth")))
    add(C(g, "truncated checkpoint", ["publish", "{T}/trunc.pth", "{T}/pub"], truncated_ckpt))
    add(C(g, "malicious pickle", ["publish", "{T}/evil.pth", "{T}/pub"], malicious(), payload=True))
    add(C(g, "out dir under a file", ["publish", ck, "{T}/img.jpg/pub"], blocker))
    add(C(g, "out dir read-only", ["publish", ck, READ_ONLY]))

    # --- config
    g = "config"
    add(C(g, "show: unknown preset name", ["config", "show", "no_such_preset_xyz"]))
    add(C(g, "show: preset not UTF-8", ["config", "show", "{T}/p.yaml"], write("p.yaml", LATIN1_PRESET, "latin-1")))
    add(C(g, "show: _base_ by preset name", ["config", "show", "{T}/p.yaml"], preset_with("_base_: quickstart\n"), should_fail=False))
    add(C(g, "show: --cfg-options without '='", ["config", "show", "quickstart", "--cfg-options", "model"]))
    add(C(g, "show: --cfg-options unbalanced bracket", ["config", "show", "quickstart", "--cfg-options", "optimizer.lr=[1,2"]))
    add(C(g, "check: lr null", ["config", "check", "quickstart", "--cfg-options", "optimizer.lr=null"]))
    add(C(g, "check: lr abc", ["config", "check", "quickstart", "--cfg-options", "optimizer.lr=abc"]))
    add(C(g, "check: lr [0.1]", ["config", "check", "quickstart", "--cfg-options", "optimizer.lr=[0.1]"]))
    add(C(g, "check: samples_per_gpu abc", ["config", "check", "quickstart", "--cfg-options", "data.samples_per_gpu=abc"]))
    add(C(g, "check: max_iters -5", ["config", "check", "quickstart", "--cfg-options", "runner.max_iters=-5"]))
    add(C(g, "check: recursive alias", ["config", "check", "{T}/p.yaml"], preset_with(RECURSIVE_ALIAS)))
    add(C(g, "check: alias bomb", ["config", "check", "{T}/p.yaml"], preset_with(ALIAS_BOMB)))
    add(C(g, "check: 5000-deep list", ["config", "check", "{T}/p.yaml"], preset_with(DEEP_LIST)))
    add(C(g, "check: _base_ /dev/zero", ["config", "check", "{T}/p.yaml"], preset_with("_base_: /dev/zero\n")))
    add(C(g, "check: unknown model type", ["config", "check", "quickstart", "--cfg-options", "model.type=NoSuchDetector"]))
    add(C(g, "check: 50 MB preset", ["config", "check", "{T}/p.yaml"], preset_with("_base_: [{Q}]\n# " + "x" * 50_000_000 + "\n")))
    add(C(g, "import: __import__('os') in a config", ["config", "import", "{T}/c.py"],
          write("c.py", "seed = __import__('os').system('touch {T}/PWNED')\n")))
    add(C(g, "import: a YAML preset as a .py", ["config", "import", "{T}/c.py"], write("c.py", "_base_: [{Q}]\n")))
    add(C(g, "import: unknown head type", ["config", "import", "{T}/c.py"],
          write("c.py", "model = dict(type='RetinaNet', bbox_head=dict(type='RetinaHaed'))\n")))
    return cases


# Cases run only with --all (the default set keeps ~150 cases so a run stays moderate on a shared 2-core box).
EXTENDED: set[tuple[str, str]] = {
    ('train', 'YAML top level is a list'),
    ('train', 'a PNG as the preset'),
    ('train', 'checkpoint_config.interval=0'),
    ('train', '--cfg-options unknown type name'),
    ('train', '--launcher nope'),
    ('train', '--ops nope'),
    ('train', 'img_prefix missing folder'),
    ('train', 'ann_file is a JPEG'),
    ('train', '--load-from a PNG'),
    ('train', '--resume truncated checkpoint'),
    ('train', '_base_ missing file'),
    ('train', 'data.train_dataloader.samples_per_gpu=abc'),
    ('train', '--seed abc (usage)'),
    ('train', 'preset is a folder'),
    ('train', '_base_ includes itself'),
    ('train', '--cfg-options unknown model key'),
    ('train', '--device cuda without a GPU'),
    ('train', 'ann_file missing'),
    ('test', 'three positionals (usage)'),
    ('test', 'text file as the checkpoint'),
    ('test', 'preset and checkpoint swapped'),
    ('test', '--eval-options garbage'),
    ('test', '--backend nope'),
    ('test', 'onnxruntime backend with a .pth'),
    ('test', '0-byte checkpoint'),
    ('test', '--show-dir under a file'),
    ('test', '--metric nope'),
    ('eval --gt --dt', 'bbox a string'),
    ('eval --gt --dt', 'image_id a list'),
    ('eval --gt --dt', 'results empty file'),
    ('eval --gt --dt', 'gt is a JPEG'),
    ('eval --gt --dt', '--engine nope'),
    ('eval --gt --dt', '--dt - with garbage on stdin'),
    ('eval --gt --dt', 'unknown category_id'),
    ('eval --gt --dt', 'bbox of 3 numbers'),
    ('eval --gt --dt', 'results truncated JSON'),
    ('eval --gt --dt', '--metric segm without masks'),
    ('eval --gt --dt', '--plot-dir under a file'),
    ('infer', 'text file as an image'),
    ('infer', '--score-thr abc (usage)'),
    ('infer', '--config missing'),
    ('infer', 'paths on stdin, one missing'),
    ('infer', 'missing checkpoint'),
    ('infer', 'empty folder'),
    ('infer', 'missing image'),
    ('export onnx', '--shape abc (usage)'),
    ('export onnx', '--input-img missing'),
    ('export onnx', 'no arguments (usage)'),
    ('convert-dataset', 'voc: box with text coordinates'),
    ('convert-dataset', 'voc: --classes missing'),
    ('convert-dataset', 'yolo: NaN coordinate'),
    ('convert-dataset', 'yolo: --names a PNG'),
    ('convert-dataset', 'yolo: empty folder'),
    ('convert-dataset', 'labelme: shapes not a list'),
    ('convert-dataset', 'images2coco: out under a file'),
    ('convert-dataset', 'cityscapes: polygon JSON malformed'),
    ('convert-dataset', 'shapes: --split nope'),
    ('convert-dataset', 'check: top level a list'),
    ('convert-dataset', 'check: garbage on stdin'),
    ('convert-dataset', 'check: empty file'),
    ('convert-dataset', 'yolo: --names missing'),
    ('convert-dataset', 'voc: empty folder'),
    ('convert-dataset', 'cityscapes: missing root'),
    ('convert-dataset', 'labelme: points are strings'),
    ('convert-dataset', 'voc: XML not UTF-8'),
    ('convert-dataset', 'yolo: missing root'),
    ('convert-dataset', 'labelme: empty folder'),
    ('convert-dataset', 'shapes: --num-images 0 (usage)'),
    ('convert-dataset', 'check: not JSON'),
    ('confusion-matrix', 'bbox a string'),
    ('confusion-matrix', 'results a dict'),
    ('confusion-matrix', '--tp-iou-thr abc (usage)'),
    ('confusion-matrix', 'missing preset'),
    ('analyze-logs', 'plot-curve: --style nope'),
    ('analyze-logs', 'plot-curve: a PNG as the log'),
    ('analyze-logs', 'cal-train-time: not UTF-8'),
    ('analyze-logs', 'plot-curve: --out read-only'),
    ('analyze-logs', 'plot-curve: empty log'),
    ('analyze-logs', 'cal-train-time: empty log'),
    ('analyze-results', '--topk 0 (usage)'),
    ('analyze-results', 'show dir read-only'),
    ('browse-dataset', '--skip-type NoSuchStep'),
    ('browse-dataset', 'missing preset'),
    ('optimize-anchors', '--algorithm nope'),
    ('benchmark', 'model: --task nope'),
    ('benchmark', 'model: missing preset'),
    ('convert-checkpoint', 'unknown source (usage)'),
    ('convert-checkpoint', 'missing input'),
    ('publish', 'out dir read-only'),
    ('publish', 'missing checkpoint'),
    ('config', 'show: --cfg-options unbalanced bracket'),
    ('config', 'check: max_iters -5'),
    ('config', 'check: unknown model type'),
    ('config', "show: --cfg-options without '='"),
    ('config', 'check: lr [0.1]'),
}

def _edited(fx: Path, fn: Callable[[dict], None]) -> dict:
    data = json.loads((fx / "ds/annotations/instances_train.json").read_text())
    fn(data)
    return data


# ----------------------------------------------------------------------------------------------- running


def substitute(arg: str | bytes, t: Path, fx: Path) -> str | bytes:
    if isinstance(arg, bytes):
        return arg.replace(b"{T}", os.fsencode(t)).replace(b"{F}", os.fsencode(fx))
    return arg.replace("{T}", str(t)).replace("{F}", str(fx))


def classify(case: Case, code: int | None, stderr: str, payload_ran: bool) -> tuple[str, str]:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    last = lines[-1].strip() if lines else ""
    if code is None:
        return "hang", last
    if payload_ran:
        return "traceback/crash", "PAYLOAD RAN: " + last
    if "Traceback (most recent call last)" in stderr or code not in (0, 1):
        return "traceback/crash", last
    if code == 0:
        if not case.should_fail:
            return "ok", last
        if case.warn_ok and re.search(r"warn", stderr, re.IGNORECASE):
            return "one-line", last
        return "accepted", last
    errors = [ln for ln in lines if not LOG_LINE.match(ln)]
    if not case.should_fail:  # a valid input that det refused
        return "refused", last
    return ("one-line" if len(errors) == 1 else "multi-line"), last


MEM_LIMIT = [4 << 30]


def limit_memory() -> None:
    """Cap a run's address space: an input that makes det read or allocate without end fails with
    MemoryError (a crash) instead of calling the OOM killer on a shared machine."""
    resource.setrlimit(resource.RLIMIT_AS, (MEM_LIMIT[0], MEM_LIMIT[0]))


class Runner:
    """Runs ``det ARGS`` in a folder: a fresh subprocess each time, or (``--fork``) a child forked from a
    server process that imported det (and torch) once, which saves the import time of every run while
    keeping what a subprocess gives: its own process, exit code, signals, file descriptors 0-2."""

    def __init__(self, det: list[str], env: dict[str, str], jobs: int, fork: bool) -> None:
        self.det, self.env = det, env
        self.servers: queue.Queue[subprocess.Popen[bytes]] | None = None
        if fork:
            if det[-2:] != ["-m", "detcli"]:
                raise SystemExit("--fork needs a --det command ending in '-m detcli'")
            self.servers = queue.Queue()
            for _ in range(jobs):
                self.servers.put(subprocess.Popen([*det[:-2], str(Path(__file__).resolve()), "--serve"], env=env,
                                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE))

    def run(self, args: list[str | bytes], cwd: Path, stdin: bytes | None, timeout: float) -> tuple[int | None, str]:
        """Exit code (negative: signal; None: timeout) and stderr."""
        if self.servers is None:
            try:
                proc = subprocess.run([*self.det, *args], cwd=cwd, env=self.env, input=stdin or b"", capture_output=True,
                                      timeout=timeout, preexec_fn=limit_memory)
                return proc.returncode, proc.stderr.decode("utf-8", errors="replace")
            except subprocess.TimeoutExpired as e:
                return None, (e.stderr or b"").decode("utf-8", errors="replace")
        io_dir = Path(tempfile.mkdtemp(prefix="io-", dir=cwd.parent))
        (io_dir / "stdin").write_bytes(stdin or b"")
        request = {"argv": [os.fsdecode(a) for a in args], "cwd": str(cwd), "io": str(io_dir), "timeout": timeout,
                   "mem": MEM_LIMIT[0]}
        server = self.servers.get()
        try:
            assert server.stdin is not None and server.stdout is not None
            server.stdin.write(json.dumps(request).encode() + b"\n")
            server.stdin.flush()
            reply = json.loads(server.stdout.readline())
        finally:
            self.servers.put(server)
        stderr = (io_dir / "stderr").read_bytes().decode("utf-8", errors="replace")
        shutil.rmtree(io_dir, ignore_errors=True)
        return reply["code"], stderr

    def close(self) -> None:
        while self.servers is not None and not self.servers.empty():
            server = self.servers.get()
            assert server.stdin is not None
            server.stdin.close()
            server.wait(timeout=30)


def serve() -> None:
    """The fork server: import det once, then per request line fork a child that runs ``det ARGV``."""
    import runpy  # noqa: PLC0415

    for name in ("torch", "torchvision", "numpy", "PIL.Image", "cv2", "detcli.cli", "detcli.engine"):
        try:
            __import__(name)
        except Exception:  # an optional module, or one that this checkout does not have
            pass
    out = os.fdopen(os.dup(1), "w")
    for line in sys.stdin:
        req = json.loads(line)
        io_dir = Path(req["io"])
        pid = os.fork()
        if pid == 0:  # the child: becomes `det ARGV` with fds 0-2 on files
            code = 1
            try:
                os.setsid()
                resource.setrlimit(resource.RLIMIT_AS, (req["mem"], req["mem"]))
                os.chdir(req["cwd"])
                for fd, name, mode in ((0, "stdin", os.O_RDONLY), (1, "stdout", os.O_WRONLY | os.O_CREAT),
                                       (2, "stderr", os.O_WRONLY | os.O_CREAT)):
                    f = os.open(io_dir / name, mode, 0o644)
                    os.dup2(f, fd)
                    os.close(f)
                sys.stdin = open(0, closefd=False)  # noqa: SIM115
                sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
                sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
                sys.argv = ["det", *req["argv"]]
                try:
                    runpy.run_module("detcli", run_name="__main__", alter_sys=True)
                    code = 0
                except SystemExit as e:
                    if e.code is None or isinstance(e.code, int):
                        code = e.code or 0
                    else:
                        print(e.code, file=sys.stderr)
                except BaseException:  # noqa: BLE001  (what the interpreter would print)
                    import traceback  # noqa: PLC0415

                    traceback.print_exc()
            finally:
                try:
                    sys.stdout.flush()
                    sys.stderr.flush()
                finally:
                    os._exit(code)
        deadline = time.monotonic() + req["timeout"]
        code: int | None = None
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                code = os.waitstatus_to_exitcode(status)
                break
            if time.monotonic() > deadline:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                os.waitpid(pid, 0)
                break
            time.sleep(0.02)
        out.write(json.dumps({"code": code}) + "\n")
        out.flush()


def run_case(case: Case, runner: Runner, fx: Path, base: Path, index: int, timeout: float) -> Outcome:
    t = base / f"case{index:03d}"
    t.mkdir()
    notes: list[str] = []
    try:
        if case.setup:
            case.setup(t, fx)
    except Exception as e:  # a fixture the det under test could not build (e.g. no checkpoint)
        notes.append(f"setup failed: {type(e).__name__}: {e}")
    args = [substitute(a, t, fx) for a in case.args]
    start = time.monotonic()
    code, stderr = runner.run(args, t, case.stdin, timeout)
    seconds = time.monotonic() - start
    kind, last = classify(case, code, stderr, case.payload and (t / "PWNED").exists())
    shutil.rmtree(t, ignore_errors=True)
    return Outcome(case, kind, code, seconds, last[:240], notes)


KINDS = ["one-line", "traceback/crash", "multi-line", "accepted", "hang", "refused"]


def report(outcomes: list[Outcome], label: str) -> str:
    by_group: dict[str, list[Outcome]] = defaultdict(list)
    for o in outcomes:
        by_group[o.case.group].append(o)
    head = ["group", "cases", "one-line", "ok", *KINDS[1:]]
    rows = []
    for group, os_ in by_group.items():
        rows.append([group, str(len(os_)), *(str(sum(o.kind == k for o in os_)) for k in ["one-line", "ok", *KINDS[1:]])])
    rows.append(["total", str(len(outcomes)), *(str(sum(o.kind == k for o in outcomes)) for k in ["one-line", "ok", *KINDS[1:]])])
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    fmt = lambda r: "| " + " | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) + " |"  # noqa: E731
    out = [f"## {label}", "", fmt(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(fmt, rows), ""]
    bad = [o for o in outcomes if o.kind not in ("one-line", "ok")]
    if bad:
        out.append(f"Not one line ({len(bad)}):")
        for o in bad:
            code = "timeout" if o.code is None else f"exit {o.code}"
            out.append(f"- [{o.kind}] {o.case.group}: {o.case.name} ({code}, {o.seconds:.1f} s): {o.last}"
                       + (f" [{'; '.join(o.notes)}]" if o.notes else ""))
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--det", default=None, help="command running det (leading NAME=VALUE words set the environment)")
    ap.add_argument("--label", default=None, help="title of the table (default: the --det command)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--only", nargs="*", default=None, help="run only cases whose 'group: name' contains one of these")
    ap.add_argument("--fork", action="store_true",
                    help="fork every run from a server that imported det once (much faster; --det must end in '-m detcli')")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--all", action="store_true", help="also run the extended cases")
    ap.add_argument("--mem-limit-gb", type=float, default=4.0, help="address-space limit of each run (RLIMIT_AS)")
    ap.add_argument("--list", action="store_true", help="list the cases and exit")
    ap.add_argument("--json", default=None, help="also write every outcome to this JSON file")
    args = ap.parse_args()

    if args.serve:
        serve()
        return 0
    everything = catalogue()
    known = {(c.group, c.name) for c in everything}
    assert EXTENDED <= known, EXTENDED - known
    cases = everything if args.all else [c for c in everything if (c.group, c.name) not in EXTENDED]
    if args.only:
        cases = [c for c in cases if any(s in f"{c.group}: {c.name}" for s in args.only)]
    if args.list:
        for c in cases:
            print(f"{c.group}: {c.name}")
        print(f"{len(cases)} cases")
        return 0

    MEM_LIMIT[0] = int(args.mem_limit_gb * (1 << 30))
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"), COLUMNS="120", NO_COLOR="1")
    if args.det:
        words = shlex.split(args.det)
        while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):
            k, v = words.pop(0).split("=", 1)
            env[k] = v
        det = words
    else:
        det = [sys.executable, "-m", "detcli"]
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    checkout = Path(env.get("PYTHONPATH", "").split(os.pathsep)[0] or ROOT)
    QUICKSTART[0] = str((checkout / "presets/quickstart.yaml").resolve())
    label = args.label or (args.det or f"{sys.executable} -m detcli ({ROOT})")

    with tempfile.TemporaryDirectory(prefix="det-bad-inputs-") as tmp:
        base = Path(tmp)
        fx = base / "fixtures"
        fx.mkdir()
        start = time.monotonic()
        runner = Runner(det, env, args.jobs, args.fork)
        missing = build_fixtures(runner, fx, args.timeout)
        for m in missing:
            print(f"fixture not built: {m}", file=sys.stderr)
        print(f"fixtures built in {time.monotonic() - start:.0f} s; running {len(cases)} cases with {args.jobs} jobs",
              file=sys.stderr)
        with ThreadPoolExecutor(args.jobs) as pool:
            futures = [pool.submit(run_case, c, runner, fx, base, i, args.timeout) for i, c in enumerate(cases)]
            outcomes = []
            for i, f in enumerate(futures):
                o = f.result()
                outcomes.append(o)
                print(f"[{i + 1}/{len(cases)}] {o.kind:16s} {o.case.group}: {o.case.name} ({o.seconds:.1f} s)", file=sys.stderr)
        runner.close()
        print(f"total {time.monotonic() - start:.0f} s", file=sys.stderr)
    print(report(outcomes, label))
    if args.json:
        Path(args.json).write_text(json.dumps(
            [{"group": o.case.group, "name": o.case.name, "kind": o.kind, "exit": o.code, "seconds": round(o.seconds, 2),
              "last_line": o.last, "notes": o.notes} for o in outcomes], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
