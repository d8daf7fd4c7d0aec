"""Every family vtc supports has a tiny builder, so every oracle and suite runs on it."""
from __future__ import annotations

import pytest

from vtc.patches import supported_model_types

from .builders import FAMILIES, fresh, tiny


def test_every_supported_model_type_has_a_registered_tiny_builder() -> None:
    assert sorted(FAMILIES) == supported_model_types()


def test_each_builder_makes_the_family_it_is_registered_for() -> None:
    for family in FAMILIES:
        assert tiny(family).model.config.model_type == family
        assert tiny(family).family == family


def test_an_unknown_family_names_the_registered_ones() -> None:
    with pytest.raises(ValueError, match="registered: "):
        fresh("no_such_family")
