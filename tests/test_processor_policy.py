"""Each family's processor gets the policy its adapter names; the default covers the rest."""
from __future__ import annotations

import copy

import pytest

from tests.builders import FAMILIES, tiny
from vtc.patches import ADAPTERS, ProcessorPolicy, adapter_for, processor_policy_for
from vtc.runner import build_inputs

RESIZING = {"qwen2_vl", "qwen2_5_vl", "qwen3_vl"}


@pytest.mark.parametrize("family", FAMILIES)
def test_each_processor_gets_its_adapters_policy(family: str) -> None:
    tm = tiny(family)
    policy = processor_policy_for(tm.processor, tm.model)
    named = adapter_for(tm.model).processor_policies
    assert isinstance(policy, named) if named else type(policy) is ProcessorPolicy
    assert policy.resizes_frames == (family in RESIZING)
    handling = {p for a in ADAPTERS for p in a.processor_policies if p.handles(tm.processor)}
    assert len(handling) == (1 if named else 0)  # never two policies for one processor


def test_a_qwen_processor_without_template_falls_back_to_its_familys_format() -> None:
    processor = copy.copy(tiny("qwen2_vl").processor)
    processor.chat_template = None
    (prompt,) = processor_policy_for(processor).prompts(["Why?"])
    assert prompt.startswith("<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>Why?")


def test_other_processors_without_template_are_refused_clearly() -> None:
    processor = copy.copy(tiny("llava_onevision").processor)
    processor.chat_template = None
    with pytest.raises(ValueError, match="has no chat template"):
        build_inputs(processor, [], ["Why?"])
