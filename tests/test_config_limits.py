"""Config loading limits and typed values: hostile or malformed presets end in one ConfigError, fast.

Each case names the file (or key) and what to do, and the CLI turns it into one line, exit 1,
before a work dir exists.
"""

from __future__ import annotations

import os
import re
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from detcli.cli import app, normalize_argv
from detcli.config import (
    MAX_EXPANDED_NODES,
    MAX_NESTING,
    MAX_PRESET_BYTES,
    VALUE_TYPES,
    apply_overrides,
    check_values,
    dump_config,
    load_config,
    parse_override_value,
)
from detcli.errors import ConfigError
from detcli.resources import find_preset


def write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data)
    return path


def alias_bomb() -> str:
    """The classic "billion laughs": 9 levels of 9 aliases, 9**9 strings once expanded (~340 bytes)."""
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    prev = "a"
    for name in "bcdefghi":
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
        prev = name
    return "\n".join(lines) + "\n"


# --- the file itself ----------------------------------------------------------------------------


def test_latin1_comment_names_file_and_byte_offset(tmp_path: Path) -> None:
    path = write(tmp_path / "p.yaml", "model: {type: FCOS}\n# caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == (
        f"{path}: not UTF-8 text: byte 0xe9 at offset 25 (line 2) cannot be decoded; save the file as UTF-8"
    )


def test_dev_zero_as_base_is_refused_unread(tmp_path: Path) -> None:
    path = write(tmp_path / "p.yaml", "_base_: /dev/zero\n")
    with pytest.raises(ConfigError, match=r"p.yaml: _base_ '/dev/zero' is not a regular file"):
        load_config(path)


@pytest.mark.parametrize("target", ["/dev/zero", "dir"])
def test_non_regular_preset_is_refused(tmp_path: Path, target: str) -> None:
    path = Path(target) if target.startswith("/") else tmp_path
    with pytest.raises(ConfigError, match=r"is a directory|not a regular file"):
        load_config(path)


def test_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "p.yaml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match=r"p.yaml: not a regular file"):
        load_config(fifo)


def test_file_over_the_size_limit_is_refused_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    with open(path, "wb") as f:
        f.truncate(MAX_PRESET_BYTES + 1)  # sparse: nothing to read if the loader tried
    with pytest.raises(ConfigError, match=r"big.yaml: the file is larger than 1048576 bytes \(1 MiB\)"):
        load_config(path)


def test_file_at_the_size_limit_is_read(tmp_path: Path) -> None:
    text = "seed: 1\n"
    path = write(tmp_path / "p.yaml", text + "#" * (MAX_PRESET_BYTES - len(text) - 1) + "\n")
    assert os.path.getsize(path) == MAX_PRESET_BYTES
    assert load_config(path) == {"seed": 1}


# --- YAML structure -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,match",
    [
        ("model: &a [*a]\n", r"line 1, column 8: recursive alias"),
        ("model: &a {x: *a}\n", r"line 1, column 8: recursive alias"),
        ("model: " + "[" * 5000 + "]" * 5000 + "\n", rf"nested deeper than {MAX_NESTING} levels"),
        ("model:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 300)) + "  " * 300 + "v: 1\n",
         rf"nested deeper than {MAX_NESTING} levels"),
        # depth reached through a chain of aliases, each only two levels deep in the text
        ("".join(f"x-{i}: &a{i} [{'*a' + str(i - 1) if i else 1}]\n" for i in range(150)),
         rf"nested deeper than {MAX_NESTING} levels once aliases are expanded"),
    ],
)
def test_recursive_and_deep_yaml_are_errors(tmp_path: Path, text: str, match: str) -> None:
    path = write(tmp_path / "p.yaml", text)
    with pytest.raises(ConfigError, match=r"^" + str(path).replace(".", r"\.") + ": .*" + match):
        load_config(path)


def test_alias_bomb_is_refused_fast_and_small(tmp_path: Path) -> None:
    text = alias_bomb()
    assert len(text) < 700
    path = write(tmp_path / "bomb.yaml", text)
    tracemalloc.start()
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=rf"more than {MAX_EXPANDED_NODES} values once its aliases are expanded"):
        load_config(path)
    elapsed = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert elapsed < 2.0 and peak < 20 * 2**20, (elapsed, peak)


def test_shared_anchors_under_the_limit_still_load(tmp_path: Path) -> None:
    path = write(tmp_path / "p.yaml", "x-n: &n {mean: [1, 2, 3]}\nmodel: {type: A, a: *n, b: *n, c: {<<: *n, std: 1}}\n")
    cfg = load_config(path)
    assert cfg["model"]["c"] == {"mean": [1, 2, 3], "std": 1}


def test_bad_timestamp_is_a_config_error(tmp_path: Path) -> None:
    path = write(tmp_path / "p.yaml", "seed: 2021-02-30\n")
    with pytest.raises(ConfigError, match=r"p.yaml: invalid YAML: a value cannot be read: ValueError: day is out of range for month$"):
        load_config(path)


@pytest.mark.parametrize("text", ["seed: !!int ''\n", "seed: !!float 'x'\n", "seed: " + "9" * 5000 + "\n"])
def test_values_pyyaml_cannot_construct_are_config_errors(tmp_path: Path, text: str) -> None:
    path = write(tmp_path / "p.yaml", text)
    with pytest.raises(ConfigError, match=r"p.yaml: (invalid YAML|YAML syntax error)"):
        load_config(path)


def test_exponent_floats_are_numbers_and_round_trip(tmp_path: Path) -> None:
    path = write(tmp_path / "p.yaml", "optimizer: {type: SGD, lr: 1e-3, weight_decay: 5.0E-4}\nzoo: {source: '1e5'}\n")
    cfg = load_config(path)
    assert cfg["optimizer"] == {"type": "SGD", "lr": 0.001, "weight_decay": 0.0005}
    assert cfg["zoo"]["source"] == "1e5"
    again = write(tmp_path / "again.yaml", dump_config(cfg))
    assert load_config(again) == cfg
    assert parse_override_value("2e-4") == 0.0002


# --- _base_ -------------------------------------------------------------------------------------


def test_long_base_name_is_a_clear_error(tmp_path: Path) -> None:
    path = write(tmp_path / "p.yaml", "_base_: " + "x" * 5000 + "\n")
    with pytest.raises(ConfigError, match=r"p.yaml: _base_ 'xxx.*\.\.\. is too long \(5000 characters; a path may have at most 4096 bytes"):
        load_config(path)


@pytest.mark.parametrize("base", ["", "a\0b", "/nonexistent/dir/x.yaml"])
def test_odd_base_names_are_config_errors(tmp_path: Path, base: str) -> None:
    path = write(tmp_path / "p.yaml", yaml.safe_dump({"_base_": base}))
    with pytest.raises(ConfigError, match=r"p.yaml: _base_"):
        load_config(path)


@pytest.mark.parametrize("name", ["quickstart", "quickstart.yaml"])
def test_base_resolves_a_shipped_preset_by_name(tmp_path: Path, name: str) -> None:
    path = write(tmp_path / "mine.yaml", f"_base_: {name}\noptimizer: {{lr: 0.005}}\n")
    cfg = load_config(path)
    shipped = load_config(find_preset("quickstart"))
    assert cfg["optimizer"] == {**shipped["optimizer"], "lr": 0.005}
    assert cfg["model"] == shipped["model"]


def test_a_file_next_to_the_preset_wins_over_a_shipped_name(tmp_path: Path) -> None:
    write(tmp_path / "quickstart.yaml", "seed: 7\n")
    path = write(tmp_path / "mine.yaml", "_base_: quickstart.yaml\n")
    assert load_config(path) == {"seed": 7}


def test_missing_relative_base_with_a_directory_is_not_looked_up_by_name(tmp_path: Path) -> None:
    path = write(tmp_path / "mine.yaml", "_base_: sub/quickstart.yaml\n")
    with pytest.raises(ConfigError, match=r"mine.yaml: _base_ file 'sub/quickstart.yaml' not found \(looked at .*sub/quickstart.yaml\)$"):
        load_config(path)


def test_base_chain_depth_is_limited(tmp_path: Path) -> None:
    for i in range(40):
        write(tmp_path / f"b{i}.yaml", f"_base_: b{i + 1}.yaml\n" if i < 39 else "seed: 1\n")
    with pytest.raises(ConfigError, match=r"b0.yaml: _base_ chain deeper than 32 files"):
        load_config(tmp_path / "b0.yaml")


def test_long_preset_path_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match=r"the path is too long for a preset file"):
        load_config("y" * 5000)


# --- overrides ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "option,match",
    [
        ("model=" + "[" * 500 + "]" * 500, rf"--cfg-options value .*nested deeper than {MAX_NESTING} levels"),
        ("model=[&a [1,2,3,4,5,6,7,8,9,10], " + ", ".join(["*a"] * 10) + "]", None),
    ],
)
def test_override_limits(option: str, match: str | None) -> None:
    cfg = {"model": {"type": "A"}, "data": {"train": {"type": "D"}}}
    if match is None:
        assert len(apply_overrides(cfg, [option])["model"]) == 11
        return
    with pytest.raises(ConfigError, match=match):
        apply_overrides(cfg, [option])


def test_unicode_digit_list_index_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"'model.pipeline' is a list; use an index, not '²'"):
        apply_overrides({"model": {"pipeline": [1, 2]}}, ["model.pipeline.²=3"])
    with pytest.raises(ConfigError, match=r"is a list; use an index, not '--1'"):
        apply_overrides({"model": {"pipeline": [1, 2]}}, ["model.pipeline.--1=3"])


# --- typed values -------------------------------------------------------------------------------

TYPED_CFG: dict[str, Any] = {
    "optimizer": {"type": "SGD", "lr": 0.02, "momentum": 0.9, "weight_decay": 1e-4},
    "data": {"samples_per_gpu": 2, "workers_per_gpu": 0, "train": {"type": "D", "samples_per_gpu": 4}},
    "runner": {"type": "EpochBasedRunner", "max_epochs": 12},
    "checkpoint_config": {"interval": -1},
    "evaluation": {"interval": 1},
    "log_config": {"interval": 50},
    "lr_config": {"policy": "step", "warmup": "linear", "warmup_iters": 500, "warmup_ratio": 0.001, "step": [8, 11], "gamma": 0.1},
}


def with_value(path: str, value: Any) -> dict[str, Any]:
    cfg = yaml.safe_load(yaml.safe_dump(TYPED_CFG))
    node = cfg
    keys = path.split(".")
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = value
    return cfg


def test_typed_example_config_passes() -> None:
    check_values(TYPED_CFG, "x.yaml")


@pytest.mark.parametrize(
    "path,value,expected",
    [
        ("optimizer.lr", None, "a positive finite number"),
        ("optimizer.lr", "abc", "a positive finite number"),
        ("optimizer.lr", [0.1], "a positive finite number"),
        ("optimizer.lr", 0, "a positive finite number"),
        ("optimizer.lr", float("inf"), "a positive finite number"),
        ("optimizer.lr", float("nan"), "a positive finite number"),
        ("optimizer.lr", True, "a positive finite number"),
        ("optimizer.momentum", -0.1, "a finite number >= 0"),
        ("optimizer.weight_decay", "1e-4x", "a finite number >= 0"),
        ("data.samples_per_gpu", "abc", "a positive integer"),
        ("data.samples_per_gpu", 2.7, "a positive integer"),
        ("data.samples_per_gpu", 0, "a positive integer"),
        ("data.workers_per_gpu", -1, "an integer >= 0"),
        ("data.train.samples_per_gpu", "abc", "a positive integer"),
        ("data.train.workers_per_gpu", 2.7, "an integer >= 0"),
        ("data.val.samples_per_gpu", 1.0, "a positive integer"),
        ("runner.max_epochs", "12", "a positive integer"),
        ("runner.max_iters", 0, "a positive integer"),
        ("checkpoint_config.interval", 0, "a positive integer, or -1"),
        ("evaluation.interval", 0.5, "a positive integer"),
        ("log_config.interval", None, "a positive integer"),
        ("lr_config.warmup_iters", 2.5, "an integer >= 0"),
        ("lr_config.warmup_ratio", 0, r"a number in \(0, 1\]"),
        ("lr_config.warmup_ratio", 1.5, r"a number in \(0, 1\]"),
        ("lr_config.step", [8, "11"], "a positive integer or a list of them"),
        ("lr_config.step", 0, "a positive integer or a list of them"),
        ("lr_config.gamma", "x", "a positive finite number"),
        ("optimizer.paramwise_cfg.custom_keys.backbone.lr_mult", "abc", "a finite number >= 0"),
        ("auto_scale_lr.base_batch_size", 0, "a positive integer"),
    ],
)
def test_bad_typed_value_names_key_value_and_type(path: str, value: Any, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        check_values(with_value(path, value), "x.yaml")
    message = str(info.value)
    leaf = path.rsplit(".", 1)[-1]
    assert message.startswith(f"x.yaml: {path}: expected ")
    assert re.search(expected, message), message
    assert f"(e.g. {leaf}: " in message and f"got {value!r}" in message and f"(a {type(value).__name__})" in message


def test_every_typed_key_is_in_the_section_schema() -> None:
    from detcli.config import SECTION_KEYS, TOP_LEVEL_KEYS

    for pattern in VALUE_TYPES:
        section, *rest = pattern.split(".")
        assert section in TOP_LEVEL_KEYS, pattern
        allowed = SECTION_KEYS.get(section)
        if rest and allowed is not None:
            assert rest[0] in allowed, pattern


def test_override_of_wrong_type_fails_at_load(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"quickstart: optimizer.lr: expected a positive finite number \(e.g. lr: 0.02\), got 'abc' \(a str\)"):
        load_config("quickstart", ["optimizer.lr=abc"])
    with pytest.raises(ConfigError, match=r"data.train.samples_per_gpu: expected a positive integer .*got 'abc'"):
        load_config("quickstart", ["data.train.samples_per_gpu=abc"])
    assert load_config("quickstart", ["optimizer.lr=1e-3"])["optimizer"]["lr"] == 0.001


# --- through the CLI: one line, exit 1, nothing written -----------------------------------------

runner = CliRunner()


def one_error_line(*args: str) -> str:
    result = runner.invoke(app, normalize_argv(list(args)))
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 1, result.output
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    return lines[0]


@pytest.mark.parametrize(
    "option,expected",
    [
        ("optimizer.lr=abc", "optimizer.lr: expected a positive finite number"),
        ("optimizer.lr=null", "optimizer.lr: expected a positive finite number"),
        ("optimizer.lr=[0.1]", "optimizer.lr: expected a positive finite number"),
        ("data.samples_per_gpu=2.7", "data.samples_per_gpu: expected a positive integer"),
        ("lr_config.warmup_ratio=abc", "lr_config.warmup_ratio: expected a number in (0, 1]"),
    ],
)
def test_cli_check_and_train_refuse_wrong_types(tmp_path: Path, option: str, expected: str) -> None:
    assert expected in one_error_line("config", "check", "quickstart", "--cfg-options", option)
    work = tmp_path / "w"
    assert expected in one_error_line("train", "quickstart", "--work-dir", str(work), "--cfg-options", option)
    assert not work.exists()


@pytest.mark.parametrize(
    "text,expected",
    [
        ("model: {type: FCOS}\n# caf\xe9\n".encode("latin-1"), "not UTF-8 text: byte 0xe9 at offset 25"),
        (b"model: &a [*a]\n", "recursive alias"),
        (alias_bomb().encode(), "once its aliases are expanded"),
        (b"_base_: /dev/zero\n", "is not a regular file"),
    ],
)
def test_cli_hostile_presets_are_one_line(tmp_path: Path, text: bytes, expected: str) -> None:
    path = write(tmp_path / "p.yaml", text)
    work = tmp_path / "w"
    assert expected in one_error_line("train", str(path), "--work-dir", str(work))
    assert expected in one_error_line("config", "check", str(path))
    assert not work.exists()


def test_non_mapping_data_with_det_datasets_is_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DET_DATASETS", str(tmp_path / "datasets"))
    path = write(tmp_path / "p.yaml", "data: [1]\n")
    with pytest.raises(ConfigError, match=r"p.yaml: 'data' must be a mapping, got \[1\]"):
        load_config(path)
