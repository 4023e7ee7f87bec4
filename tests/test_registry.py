from __future__ import annotations

import pytest

from spbench import backbones, methods
from spbench.registry import Registry, RegistryError


def test_duplicate_registration_raises() -> None:
    reg: Registry[int] = Registry("thing")
    reg.register("a")(1)
    with pytest.raises(RegistryError, match="already registered"):
        reg.register("a")(2)
    assert reg.get("a") == 1


def test_unknown_name_suggests_and_lists() -> None:
    with pytest.raises(RegistryError) as info:
        methods.get("lroa")
    text = str(info.value)
    assert "Unknown method 'lroa'" in text
    assert "Did you mean: lora" in text
    assert "Available:" in text and "full_ft" in text and "side_lora" in text


def test_unknown_backbone_and_bad_names() -> None:
    with pytest.raises(RegistryError, match="Did you mean: roberta-base"):
        backbones.resolve("roberta-bsae")
    with pytest.raises(FileNotFoundError):
        backbones.resolve("./no/such/checkpoint")
    with pytest.raises(RegistryError, match="lowercase"):
        Registry("x").register("Bad Name")


def test_registry_key_is_module_name() -> None:
    # STYLE rule 2: key = module name (a family module may register variants, e.g. lst.py -> klst).
    import importlib

    for name in methods.names():
        cls = methods.get(name)
        assert cls.name == name
        assert cls.__module__.startswith("spbench.methods.")
        importlib.import_module(cls.__module__)


@pytest.mark.parametrize("name", ["full_ft", "lora", "side_lora"])
def test_core_methods_registered(name: str) -> None:
    assert name in methods.METHODS
