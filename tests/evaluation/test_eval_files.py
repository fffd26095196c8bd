"""`evaluate_files` / `det eval --gt --dt`: numbers equal pycocotools run directly, clear errors."""

from __future__ import annotations

import contextlib
import copy
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from typer.testing import CliRunner

from detcli.cli import app, normalize_argv
from detcli.errors import ConfigError, DatasetError
from detcli.evaluation import evaluate_files

BBOX_KEYS = ["bbox_mAP", "bbox_mAP_50", "bbox_mAP_75", "bbox_mAP_s", "bbox_mAP_m", "bbox_mAP_l"]
SEGM_KEYS = [k.replace("bbox", "segm") for k in BBOX_KEYS]


def make_gt(seed: int, crowd: bool = True, nimg: int = 20, ncat: int = 4) -> dict[str, Any]:
    """Random boxes with polygon masks; the last category has no GT; ~10% crowd when asked."""
    rng = np.random.default_rng(seed)
    images = [{"id": i + 3, "width": 320, "height": 240, "file_name": f"{i}.jpg"} for i in range(nimg)]
    cats = [{"id": c * 2 + 1, "name": f"class{c}"} for c in range(ncat)]
    anns, aid = [], 1
    for im in images:
        for _ in range(int(rng.integers(0, 7))):
            w, h = rng.uniform(4, 150, 2)
            x, y = rng.uniform(0, 320 - w), rng.uniform(0, 240 - h)
            poly = [x, y, x + w, y, x + w * 0.7, y + h, x, y + h * 0.8]
            anns.append({
                "id": aid, "image_id": im["id"], "category_id": int(rng.choice([c["id"] for c in cats[:-1]])),
                "bbox": [x, y, w, h], "area": float(w * h * 0.85), "iscrowd": int(crowd and rng.random() < 0.1),
                "segmentation": [[float(v) for v in poly]],
            })
            aid += 1
    return {"images": images, "categories": cats, "annotations": anns}


def make_results(gt: dict[str, Any], seed: int, segm: str | None = None, skip_cat: int | None = None) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed + 100)
    cat_ids = [c["id"] for c in gt["categories"]]
    res = []
    for a in gt["annotations"]:
        if rng.random() < 0.8:
            b = np.array(a["bbox"]) + rng.normal(0, 6, 4)
            b[2:] = np.abs(b[2:]) + 1
            cat = a["category_id"] if rng.random() < 0.85 else int(rng.choice(cat_ids))
            res.append({"image_id": a["image_id"], "category_id": cat, "bbox": [round(v, 2) for v in b.tolist()],
                        "score": round(float(rng.random()), 5)})
    for _ in range(80):
        w, h = rng.uniform(3, 120, 2)
        res.append({"image_id": int(rng.choice([i["id"] for i in gt["images"]])), "category_id": int(rng.choice(cat_ids[:-1])),
                    "bbox": [round(float(rng.uniform(0, 200)), 2), round(float(rng.uniform(0, 120)), 2), round(w, 2), round(h, 2)],
                    "score": round(float(rng.random()), 5)})
    if skip_cat is not None:
        res = [r for r in res if r["category_id"] != skip_cat]
    if segm:
        for r in res:
            x, y, w, h = r["bbox"]
            poly = [x, y, x + w, y, x + w, y + h * 0.9, x + w * 0.1, y + h]
            if segm == "polygon":
                r["segmentation"] = [poly]
            else:
                rle = mask_utils.merge(mask_utils.frPyObjects([poly], 240, 320))
                r["segmentation"] = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
    return res


def direct(gt: dict[str, Any], res: list[dict[str, Any]], iou: str = "bbox") -> COCOeval:
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = copy.deepcopy(gt)
        coco.createIndex()
        if iou == "segm":
            res = copy.deepcopy(res)
            for r in res:
                if isinstance(r["segmentation"], list):
                    rle = mask_utils.merge(mask_utils.frPyObjects(r["segmentation"], 240, 320))
                    r["segmentation"] = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
        dt = coco.loadRes(copy.deepcopy(res))
        ev = COCOeval(coco, dt, iou)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def write(tmp_path: Path, gt: Any, res: Any) -> tuple[Path, Path]:
    g, r = tmp_path / "gt.json", tmp_path / "res.json"
    g.write_text(json.dumps(gt))
    r.write_text(json.dumps(res))
    return g, r


@pytest.mark.parametrize("seed,crowd", [(0, True), (1, False), (2, True)])
def test_bbox_equals_pycocotools_exactly(tmp_path: Path, seed: int, crowd: bool) -> None:
    gt = make_gt(seed, crowd)
    res = make_results(gt, seed)
    g, r = write(tmp_path, gt, res)
    ours = evaluate_files(g, r, ["bbox"], classwise=True)
    ev = direct(gt, res)
    assert [ours.metrics[k] for k in BBOX_KEYS] == [float(s) for s in ev.stats[:6]]
    rows = ours.classwise["bbox"]
    for k, row in enumerate(rows):
        p = ev.eval["precision"][:, :, k, 0, -1]
        p = p[p > -1]
        assert row.ap == (float(np.mean(p)) if p.size else None)
    assert rows[-1].ap is None  # the last class has no ground truth: n/a, not NaN


@pytest.mark.parametrize("kind", ["polygon", "rle"])
def test_segm_equals_pycocotools_exactly(tmp_path: Path, kind: str) -> None:
    gt = make_gt(3)
    res = make_results(gt, 3, segm=kind)
    g, r = write(tmp_path, gt, res)
    ours = evaluate_files(g, r, ["bbox", "segm"])
    ev = direct(gt, res, "segm")
    assert [ours.metrics[k] for k in SEGM_KEYS] == [float(s) for s in ev.stats[:6]]
    assert [ours.metrics[k] for k in BBOX_KEYS] == [float(s) for s in direct(gt, res).stats[:6]]


def test_class_with_no_detections_and_empty_results(tmp_path: Path) -> None:
    gt = make_gt(4)
    res = make_results(gt, 4, skip_cat=3)
    g, r = write(tmp_path, gt, res)
    ours = evaluate_files(g, r, classwise=True)
    assert [ours.metrics[k] for k in BBOX_KEYS] == [float(s) for s in direct(gt, res).stats[:6]]
    assert {row.category_id: row.ap for row in ours.classwise["bbox"]}[3] == 0.0
    g, r = write(tmp_path, gt, [])
    empty = evaluate_files(g, r, ["bbox", "segm"], classwise=True)
    assert empty.metrics["bbox_mAP"] == 0.0 and empty.metrics["segm_mAP"] == 0.0
    assert empty.num_detections == 0


def test_faster_engine_agrees_within_float_noise(tmp_path: Path) -> None:
    gt = make_gt(5)
    res = make_results(gt, 5)
    g, r = write(tmp_path, gt, res)
    ref = evaluate_files(g, r, ["bbox"], classwise=True)
    fast = evaluate_files(g, r, ["bbox"], classwise=True, engine="faster-coco-eval")
    for k in BBOX_KEYS:
        assert fast.metrics[k] == pytest.approx(ref.metrics[k], abs=1e-12)
    assert [x.ap is None for x in fast.classwise["bbox"]] == [x.ap is None for x in ref.classwise["bbox"]]
    g, r = write(tmp_path, gt, [])
    assert evaluate_files(g, r, engine="faster-coco-eval").metrics["bbox_mAP"] == 0.0


def test_plot_dir_writes_one_png_per_class(tmp_path: Path) -> None:
    gt = make_gt(6)
    g, r = write(tmp_path, gt, make_results(gt, 6))
    ours = evaluate_files(g, r, plot_dir=tmp_path / "plots")
    pngs = sorted((tmp_path / "plots").glob("*.png"))
    assert len(pngs) == 4 and [str(p) for p in pngs] == sorted(ours.plots["bbox"])
    assert pngs[0].read_bytes()[:4] == b"\x89PNG"
    assert not list((tmp_path / "plots").glob(".*tmp*"))


@pytest.mark.parametrize(
    "gt_kind,res_kind,match",
    [
        ("text", "ok", r"--gt .*gt.json: not valid JSON"),
        ("ok", "text", r"--dt .*res.json: not valid JSON"),
        ("ok", "gt", r"--dt .*res.json: this is a COCO annotation file .*pass it as --gt"),
        ("res", "ok", r"--gt .*gt.json: this is a list, like a results file"),
        ("ok", "bad_image", r"entry 0: image_id 999 is not an image of the ground truth"),
        ("ok", "bad_cat", r"entry 0: category_id 42 is not a category of the ground truth"),
        ("ok", "no_score", r"entry 0 has no score"),
        ("nokeys", "ok", r"missing key\(s\) annotations, categories"),
    ],
)
def test_bad_files_name_the_file_and_the_fix(tmp_path: Path, gt_kind: str, res_kind: str, match: str) -> None:
    gt = make_gt(7)
    res = make_results(gt, 7)
    g, r = write(tmp_path, gt, res)
    if gt_kind == "text":
        g.write_text("not json {")
    elif gt_kind == "res":
        g.write_text(json.dumps(res))
    elif gt_kind == "nokeys":
        g.write_text(json.dumps({"images": []}))
    if res_kind == "text":
        r.write_text("\x00\x01 binary")
    elif res_kind == "gt":
        r.write_text(json.dumps(gt))
    elif res_kind == "bad_image":
        r.write_text(json.dumps([{**res[0], "image_id": 999}]))
    elif res_kind == "bad_cat":
        r.write_text(json.dumps([{**res[0], "category_id": 42}]))
    elif res_kind == "no_score":
        r.write_text(json.dumps([{k: v for k, v in res[0].items() if k != "score"}]))
    with pytest.raises(DatasetError, match=match):
        evaluate_files(g, r)


def test_missing_file_and_bad_metric_or_engine(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="--gt .*nope.json: no such file"):
        evaluate_files(tmp_path / "nope.json", tmp_path / "r.json")
    with pytest.raises(ConfigError, match="metric 'keypoints' is not supported.*bbox, segm, proposal"):
        evaluate_files(tmp_path / "g.json", tmp_path / "r.json", ["keypoints"])
    gt = make_gt(8)
    g, r = write(tmp_path, gt, [])
    with pytest.raises(ConfigError, match="engine 'fast' is unknown"):
        evaluate_files(g, r, engine="fast")


runner = CliRunner()


def invoke(*args: str, input: str | None = None) -> Any:
    return runner.invoke(app, normalize_argv(list(args)), input=input)


def test_cli_eval_from_files_json_and_stdin(tmp_path: Path) -> None:
    gt = make_gt(9)
    res = make_results(gt, 9, segm="rle")
    g, r = write(tmp_path, gt, res)
    result = invoke("eval", "--gt", str(g), "--dt", "-", "--metric", "bbox", "segm", "--json", "--classwise", input=r.read_text())
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["bbox_mAP"] == float(direct(gt, res).stats[0])
    assert data["segm_mAP"] == float(direct(gt, res, "segm").stats[0])
    assert data["classwise"]["bbox"]["class3"] is None


def test_cli_eval_text_output_and_plots(tmp_path: Path) -> None:
    gt = make_gt(10)
    g, r = write(tmp_path, gt, make_results(gt, 10))
    result = invoke("eval", "--gt", str(g), "--dt", str(r), "--classwise", "--plot-dir", str(tmp_path / "pr"))
    assert result.exit_code == 0, result.output
    assert "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]" in result.stdout
    assert "class3   | n/a" in result.stdout and "bbox_mAP:" in result.stdout
    assert len(list((tmp_path / "pr").glob("bbox_pr_*.png"))) == 4


def test_cli_eval_misuse(tmp_path: Path) -> None:
    gt = make_gt(11)
    g, r = write(tmp_path, gt, [])
    result = invoke("eval", "model.pth", "--gt", str(g), "--dt", str(r))
    assert result.exit_code == 1 and "drop the positional argument(s) model.pth" in result.output
    result = invoke("eval", "--gt", str(g))
    assert result.exit_code == 1 and "--gt and --dt go together" in result.output
    result = invoke("eval", "--gt", str(g), "--dt", str(r), "--out", "x.json")
    assert result.exit_code == 1 and "--out need a model" in result.output
    result = invoke("eval", "--gt", str(r), "--dt", str(g))
    assert result.exit_code == 1 and "this is a list, like a results file" in result.output
    result = invoke("eval", "--plot-dir", "x", "ckpt.pth")
    assert result.exit_code == 1 and "--plot-dir and --engine work with --gt" in result.output


@pytest.mark.parametrize("engine", ["pycocotools", "faster-coco-eval"])
def test_workers_split_by_category_give_the_same_arrays(tmp_path: Path, engine: str) -> None:
    gt = make_gt(12, nimg=30, ncat=5)
    res = make_results(gt, 12, segm="rle")
    g, r = write(tmp_path, gt, res)
    one = evaluate_files(g, r, ["bbox", "segm"], classwise=True, engine=engine, workers=1, plot_dir=tmp_path / "a")
    two = evaluate_files(g, r, ["bbox", "segm"], classwise=True, engine=engine, workers=3, plot_dir=tmp_path / "b")
    assert one.metrics == two.metrics and one.summaries == two.summaries
    assert one.classwise == two.classwise
    for name in ("bbox", "segm"):
        assert np.array_equal(one.precision[name], two.precision[name])
    if engine == "pycocotools":
        ev = direct(gt, res)
        assert np.array_equal(two.precision["bbox"], ev.eval["precision"])
        assert [two.metrics[k] for k in BBOX_KEYS] == [float(s) for s in ev.stats[:6]]


def test_two_process_parse_and_category_split_give_the_same_numbers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import detcli.evaluation.fast_coco as fast_coco
    import detcli.evaluation.files as files

    monkeypatch.setattr(files, "PARALLEL_JSON_CHARS", 0)
    monkeypatch.setattr(fast_coco, "MIN_PARALLEL_DETECTIONS", 0)
    gt = make_gt(8)
    res = make_results(gt, 8, segm="polygon")
    g, r = write(tmp_path, gt, res)
    two = evaluate_files(g, r, ["bbox", "segm"], classwise=True, workers=2)
    assert two.num_detections == len(res)
    assert two.stats["bbox"] == [float(s) for s in direct(gt, res).stats]
    assert two.stats["segm"] == [float(s) for s in direct(gt, res, "segm").stats]
    one = evaluate_files(g, r, ["bbox", "segm"], classwise=True, workers=1)
    assert one.stats == two.stats and one.classwise == two.classwise


def test_split_json_list_halves_and_a_cut_inside_a_string() -> None:
    from detcli.evaluation.files import split_json_list

    entries = [{"image_id": i, "note": "x}, {y" if i == 2 else "", "score": 0.5} for i in range(5)]
    text = json.dumps(entries)
    halves = split_json_list(text)
    assert halves is not None
    try:
        parsed = json.loads(halves[0]) + json.loads(halves[1])
    except json.JSONDecodeError:
        parsed = None  # cut inside the string: the caller falls back to one parse
    assert parsed is None or parsed == entries
    plain = json.dumps([{"a": i} for i in range(6)])
    first, second = split_json_list(plain)  # type: ignore[misc]
    assert json.loads(first) + json.loads(second) == [{"a": i} for i in range(6)]
    assert split_json_list('{"images": []}') is None
