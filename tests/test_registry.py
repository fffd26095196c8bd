"""Registry lookups and build(): did-you-mean, signature checks, nested components."""

from __future__ import annotations

import pytest

from detcli.errors import ConfigError, did_you_mean
from detcli.registry import Registry, build, registry_for_key

PARTS = Registry("part")


@PARTS.register()
class Wheel:
    def __init__(self, radius: float, spokes: int = 8) -> None:
        self.radius, self.spokes = radius, spokes


@PARTS.register()
class Bike:
    def __init__(self, front: object, name: str = "bike", tags: tuple[str, ...] = ()) -> None:
        self.front, self.name, self.tags = front, name, tags


def test_unknown_type_suggests_closest() -> None:
    with pytest.raises(ConfigError, match=r"unknown part 'Wheeel' — did you mean 'Wheel'\? \(known: Bike, Wheel\)"):
        PARTS.get("Wheeel")


def test_did_you_mean_empty_when_nothing_close() -> None:
    assert did_you_mean("zzzz", ["Wheel"]) == ""


def test_build_checks_unknown_keys_with_path() -> None:
    with pytest.raises(ConfigError, match=r"model.front.radus: unknown key 'radus' for Wheel — did you mean 'radius'"):
        build({"type": "Wheel", "radus": 1.0}, PARTS, path="model.front")


def test_build_checks_missing_and_typed_values() -> None:
    with pytest.raises(ConfigError, match="needs the key 'radius'"):
        build({"type": "Wheel"}, PARTS)
    with pytest.raises(ConfigError, match=r"spokes: 'many' is not a valid value"):
        build({"type": "Wheel", "radius": 1.0, "spokes": "many"}, PARTS)
    with pytest.raises(ConfigError, match=r"spokes: True is not a valid value"):
        build({"type": "Wheel", "radius": 1.0, "spokes": True}, PARTS)


def test_build_given_kwargs_and_dry_run() -> None:
    wheel = build({"type": "Wheel"}, PARTS, radius=2.0)
    assert wheel.radius == 2.0 and wheel.spokes == 8
    assert build({"type": "Wheel", "radius": 1}, PARTS, dry_run=True) is None


def test_unknown_type_path_in_message() -> None:
    with pytest.raises(ConfigError, match=r"^model.type: unknown part"):
        build({"type": "Car"}, PARTS, path="model")


def test_component_keys() -> None:
    assert registry_for_key("loss_anything") is not None
    assert registry_for_key("nms") is None
    assert registry_for_key("backbone").kind == "backbone"


def test_non_component_dicts_stay_dicts() -> None:
    bike = build({"type": "Bike", "front": {"type": "Wheel", "radius": 1.0}}, PARTS)
    # 'front' is not a component key: the node is passed through as a plain dict
    assert bike.front == {"type": "Wheel", "radius": 1.0}
