"""Registries: decorators, unknown names, and third-party entry points."""

from __future__ import annotations

from importlib.metadata import EntryPoint

import pytest

import benchmark.registry as registry_module
from benchmark.registry import Registry


class Base:
    description = "base"


def test_register_and_get():
    registry: Registry[Base] = Registry("widget", "poisonbench.test-widgets")

    @registry.register("alpha")
    class Alpha(Base):
        pass

    assert registry.get("alpha") is Alpha
    assert registry.names() == ["alpha"]
    assert "alpha" in registry
    with pytest.raises(KeyError, match="unknown widget 'beta'; known: alpha"):
        registry.get("beta")


def test_duplicate_name_rejected():
    registry: Registry[Base] = Registry("widget", "poisonbench.test-widgets")
    registry.register("alpha")(type("A", (Base,), {}))
    with pytest.raises(ValueError, match="already registered"):
        registry.register("alpha")(type("B", (Base,), {}))


def test_entry_point_plugins_loaded(monkeypatch):
    """A third-party package's entry point appears under its name."""
    plugin = EntryPoint(
        name="plugin-detector",
        value="detectors.transform_ensemble:TransformVarianceDetector",
        group="poisonbench.test-plugins",
    )
    broken = EntryPoint(
        name="broken", value="no_such_module:Thing", group="poisonbench.test-plugins"
    )

    def fake_entry_points(group):
        return [plugin, broken] if group == "poisonbench.test-plugins" else []

    monkeypatch.setattr(registry_module, "entry_points", fake_entry_points)
    registry: Registry[Base] = Registry("detector", "poisonbench.test-plugins")
    from detectors.transform_ensemble import TransformVarianceDetector

    assert registry.get("plugin-detector") is TransformVarianceDetector
    assert "broken" not in registry.names()
