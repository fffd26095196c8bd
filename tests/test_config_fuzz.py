"""Property-based fuzzing of the config loader and the ``--cfg-options`` parser (hypothesis).

Whatever the bytes, YAML structure or KEY=VALUE string, loading ends in a dict or in one
:class:`ConfigError`, never in another exception. Seeded (``derandomize``) and bounded so CI
runs the same few hundred cases each time; ``benchmarks/fuzz_config.py`` runs longer.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detcli.config import (
    SECTION_KEYS,
    TOP_LEVEL_KEYS,
    VALUE_TYPES,
    apply_overrides,
    dump_config,
    load_config,
    parse_override_value,
)
from detcli.errors import ConfigError
from detcli.resources import find_preset

FUZZ = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)

#: Pieces that make YAML parsers and the loader take their odd paths.
YAML_PIECES = [
    "\n", "  ", ": ", "- ", "[", "]", "{", "}", ",", "&a ", "*a", "&b ", "*b", "<<: ", "!!python/object:os.system ",
    "!!binary ", "!!int ", "!!float ", "!!timestamp ", "!!set ", "!!omap ", "? ", "|", ">", "'", '"', "#", "%YAML 1.1\n",
    "---\n", "...\n", "_base_: ", "_delete_: true", "x-a: ", "model", "data", "optimizer", "lr", "type", "null", "~",
    "true", "1e-3", ".inf", ".nan", "0x1F", "0o7", "2021-02-30", "1_000", "-1", "9" * 30, "\t", "\\", "\\x00", "\x00",
    "\ufeff", "é", "\udcff", "samples_per_gpu", "train", "pipeline", "/dev/zero", "quickstart", "../", "x" * 300,
]

yaml_texts = st.lists(st.sampled_from(YAML_PIECES) | st.text(max_size=8), max_size=40).map("".join)

KEYS = sorted(TOP_LEVEL_KEYS) + sorted({k for keys in SECTION_KEYS.values() if keys for k in keys}) + [
    "_base_", "_delete_", "type", "x-a", "lr", "pipeline", "ann_file", "data_root", "img_prefix",
]
scalars = (
    st.none() | st.booleans() | st.integers(-(10**20), 10**20) | st.floats(allow_nan=False)
    | st.text(max_size=12) | st.sampled_from(["quickstart", "/dev/zero", "x" * 5000, "1e-3", "", "abc"])
)
structures = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), inner, max_size=5),
    max_leaves=30,
)
sections = st.sampled_from(sorted(k for k, v in SECTION_KEYS.items() if v)).flatmap(
    lambda name: st.tuples(st.just(name), st.dictionaries(st.sampled_from(sorted(SECTION_KEYS[name] or ())), scalars, max_size=4))
)
configs = (
    st.dictionaries(st.sampled_from(KEYS), structures, max_size=6)
    | st.lists(sections, max_size=4).map(dict)  # schema-shaped: exercises the typed-value checks
)

PATH_PIECES = sorted({p for pattern in VALUE_TYPES for p in pattern.split(".")} | set(KEYS)) + [
    "0", "1", "-1", "99", "²", "--1", "*", "", " ", "model", "backbone", "bbox_head", "neck", "num_classes",
]
key_paths = st.lists(st.sampled_from(PATH_PIECES) | st.text(max_size=5), min_size=1, max_size=6).map(".".join)
values = st.sampled_from(YAML_PIECES) | st.text(max_size=20) | yaml_texts
TYPED_PATHS = sorted(p for p in VALUE_TYPES if "*" not in p)
numbers = st.integers(-3, 10**6) | st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from(["1e-3", "0x10", "2.7", "[8, 11]", "null", "abc", "True"])
options = (
    st.tuples(key_paths, values).map(lambda kv: f"{kv[0]}={kv[1]}")
    | st.tuples(st.sampled_from(TYPED_PATHS), numbers).map(lambda kv: f"{kv[0]}={kv[1]}")
    | st.text(max_size=30)
)


def load_or_config_error(path: Path, cfg_options: list[str] | None = None) -> dict[str, Any] | None:
    try:
        return load_config(path, cfg_options)
    except ConfigError as e:
        assert str(e).strip() and "\n" not in str(e).strip("\n").splitlines()[0]
        return None


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@FUZZ
@given(data=st.binary(max_size=300))
def test_random_bytes_load_or_config_error(scratch: Path, data: bytes) -> None:
    path = scratch / "bytes.yaml"
    path.write_bytes(data)
    load_or_config_error(path)


@FUZZ
@given(text=yaml_texts)
def test_random_yaml_text_loads_or_config_error(scratch: Path, text: str) -> None:
    path = scratch / "text.yaml"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    load_or_config_error(path)


@FUZZ
@given(cfg=configs, reroot=st.booleans())
def test_random_structures_load_or_config_error_and_round_trip(scratch: Path, cfg: dict[str, Any], reroot: bool) -> None:
    path = scratch / "struct.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {"DET_DATASETS": str(scratch / "datasets")} if reroot else {}
    with mock.patch.dict(os.environ, env):
        if not reroot:
            os.environ.pop("DET_DATASETS", None)
        loaded = load_or_config_error(path)
    if loaded is not None:
        again = scratch / "again.yaml"
        again.write_text(dump_config(loaded))
        with mock.patch.dict(os.environ, {}):
            os.environ.pop("DET_DATASETS", None)
            assert load_config(again) == loaded


QUICKSTART = find_preset("quickstart")


@FUZZ
@given(opts=st.lists(options, min_size=1, max_size=3))
def test_random_cfg_options_apply_or_config_error(opts: list[str]) -> None:
    assert QUICKSTART is not None
    load_or_config_error(QUICKSTART, opts)


@FUZZ
@given(opts=st.lists(options, min_size=1, max_size=3), cfg=configs)
def test_apply_overrides_on_random_configs_only_raises_config_error(opts: list[str], cfg: dict[str, Any]) -> None:
    try:
        apply_overrides(cfg, opts)
    except ConfigError:
        pass


@FUZZ
@given(text=values)
def test_parse_override_value_only_raises_config_error(text: str) -> None:
    try:
        parse_override_value(text)
    except ConfigError:
        pass
