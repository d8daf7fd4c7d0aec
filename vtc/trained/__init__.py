"""Trained compressors (learned scorer, query resampler, VQ codebook) and their PEFT LoRA glue.

``vtc train`` fits one with a LoRA adapter on the LLM; ``vtc.wrap(model, "trained:DIR")`` loads both.
"""
from .base import TrainedCompressor
from .resampler import QueryResampler
from .scorer import LearnedScorer
from .store import KINDS, attach, build, load_compressor
from .vq import VQCodebook

__all__ = ["KINDS", "LearnedScorer", "QueryResampler", "TrainedCompressor", "VQCodebook", "attach", "build",
           "load_compressor"]
