"""Efficiency benchmark: speed-up against the FLOP-ideal, overhead, memory, scaling, TTFT and decode.

Run ``python -m eval.efficiency --help`` from the repository root; modules: ``config`` (models and
inputs), ``protocol`` (timing and memory), ``flops`` (the ideal), ``measure`` (one configuration),
``scaling`` (cost vs frames, DivPrune at the 7B shape), ``throughput`` (batches), ``report`` (files).
"""
