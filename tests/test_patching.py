"""Attribute patches stack and restore; a model keeps the patches its user made before wrapping."""
from __future__ import annotations

import pytest
import torch

import vtc
from vtc.patching import patch_attribute

from .builders import tiny, video


class _Owner:
    value = "class"


def test_patches_restore_in_reverse_order_down_to_the_class_attribute() -> None:
    owner = _Owner()
    first = patch_attribute(owner, "value", "first")
    second = patch_attribute(owner, "value", "second")
    assert owner.value == "second"
    second()
    assert owner.value == "first"
    first()
    assert owner.value == "class" and "value" not in vars(owner)


def test_a_patch_covered_by_a_later_one_refuses_to_be_removed_first() -> None:
    owner = _Owner()
    first = patch_attribute(owner, "value", "first")
    patch_attribute(owner, "value", "second")
    with pytest.raises(RuntimeError, match="patched again over vtc's patch"):
        first()


def test_wrap_and_unwrap_keep_the_users_own_encoder_patch() -> None:
    """The select stage and the engine's recorder both wrap the video encoder; unwrap restores the user's."""
    tm = tiny("qwen2_5_vl")
    base = tm.model.model
    calls = []
    original = base.get_video_features

    def users_encoder(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    base.get_video_features = users_encoder
    try:
        with vtc.compressed(tm.model, "keyframes:0.5>dtd:0.5"), torch.no_grad():
            tm.model(**tm.inputs([video(8)]))
        assert calls == [1], "the user's encoder ran under vtc's wrappers"
        assert vars(base)["get_video_features"] is users_encoder
    finally:
        del base.get_video_features  # the tiny model is shared by other tests
