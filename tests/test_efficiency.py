"""The efficiency benchmark runs end to end on a tiny config and writes every field (no timing is checked)."""
from __future__ import annotations

import json
import math
from pathlib import Path

from eval.efficiency.__main__ import main

PREFILL = {"method", "retain", "visual_tokens", "kept_tokens", "last_layer_tokens", "stage_ms", "stage_ms_total",
           "vision_ms", "vision_cpu_ms", "llm_ms", "llm_cpu_ms", "ttft_ms", "ttft_cpu_ms", "peak_mib", "kv_mib",
           "llm_gflop", "speedup", "speedup_wall", "ideal_speedup", "measured_over_ideal", "ttft_speedup",
           "stage_share_of_prefill", "repeats"}


def test_benchmark_writes_every_field(tmp_path: Path) -> None:
    out = tmp_path / "eff"
    main(["--model", "tiny", "--frames", "16", "--size", "56", "--methods", "dtd", "fastv@2", "divprune",
          "--retains", "0.5", "0.25", "--extra", "random:1.0", "--repeats", "1", "--warmup", "calls",
          "--decode-tokens", "3", "--decode-retains", "0.1", "--batches", "1", "2",
          "--throughput-frames", "16", "--throughput-size", "56", "--throughput-methods", "dtd:0.25",
          "--note", "a note", "--scaling-frames", "8", "16",
          "--scaling-dim", "16", "--divprune-tokens", "196", "--out", str(out)])
    result = json.loads(out.with_suffix(".json").read_text())
    assert out.with_suffix(".md").is_file() and out.with_suffix(".png").stat().st_size > 0
    rows = result["prefill"]
    assert [(r["method"], r["retain"]) for r in rows] == [("none", 1.0), ("dtd", 0.5), ("dtd", 0.25), ("fastv@2", 0.5),
                                                         ("fastv@2", 0.25), ("divprune", 0.5), ("divprune", 0.25),
                                                         ("random", 1.0)]
    for row in rows:
        assert PREFILL <= set(row)
        assert all(not math.isnan(v) for v in row.values() if isinstance(v, float))
    fastv = rows[3]
    assert fastv["kept_tokens"] == fastv["visual_tokens"] > fastv["last_layer_tokens"] and fastv["ideal_speedup"] > 1
    assert rows[2]["kept_tokens"] < rows[1]["kept_tokens"] < rows[0]["kept_tokens"]
    assert rows[2]["kv_mib"] < rows[0]["kv_mib"]
    assert {(r["method"], r["decode_tokens"]) for r in result["decode"]} == {("none", 3), ("random", 3)}
    assert all(r["decode_ms_per_token"] > 0 and r["decode_median_ms"] > 0 and r["kv_tokens_last_layer"] > 0
               for r in result["decode"])
    assert {(r["batch"], r["method"]) for r in result["throughput"]} == {(b, m) for b in (1, 2) for m in ("none", "dtd")}
    assert set(result["scaling"]) == {"dtd", "divprune"}
    assert all(len(s["points"]) == 2 and not math.isnan(s["exponent"]) for s in result["scaling"].values())
    assert {"share_of_prefill", "prefill_ms_estimate", "gemm_gflops"} <= set(result["divprune"][0])
    assert "a note" in out.with_suffix(".md").read_text()
    assert result["meta"]["load_start"] and result["meta"]["command"].startswith("python -m eval.efficiency")


def test_decode_reports_the_entries_a_cache_stage_attends_to_and_the_bytes_it_holds(tmp_path: Path) -> None:
    """dycoke-kv's last layer attends to fewer entries than the uncompressed one, and its cache holds more bytes
    (the whole prompt stays beside the compact copy): both read before unwrap restores the cache."""
    out = tmp_path / "decode"
    result = main(["--model", "tiny", "--frames", "16", "--size", "56", "--parts", "decode", "--repeats", "1",
                   "--decode-tokens", "3", "--decode-methods", "dycoke-kv(layer=1)", "--decode-retains", "0.3",
                   "--out", str(out)])
    none, dycoke = result["decode"]
    assert (none["method"], dycoke["method"]) == ("none", "dycoke-kv(layer=1)")
    assert none["kv_attended_last_layer"] == none["kv_tokens_last_layer"] + 3
    assert dycoke["kv_attended_last_layer"] < none["kv_attended_last_layer"]
    assert dycoke["kv_mib_end"] > none["kv_mib_end"]
