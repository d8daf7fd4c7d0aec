"""eval/device_oracles.py (the oracles a session lent a GPU runs) works end to end; here on the CPU in bfloat16."""
from __future__ import annotations

import json

from eval.device_oracles import main


def test_device_oracles_run_and_report_every_oracle_in_bfloat16(tmp_path) -> None:
    main(["--device", "cpu", "--families", "qwen2_5_vl", "--dtypes", "bfloat16", "--first", "2",
          "--out", str(tmp_path / "rows")])
    main(["--device", "cpu", "--merge", str(tmp_path / "rows"), "--out", str(tmp_path / "report")])
    rows = json.loads((tmp_path / "report.json").read_text())["rows"]
    assert sorted({r["oracle"] for r in rows}) == ["batch", "masked", "retain-1"]
    assert len(rows) == 6 and all(r["dtype"] == "bfloat16" for r in rows)
    failed = [(r["oracle"], r["spec"], r.get("error", "")) for r in rows if not r["passed"]]
    assert not failed, failed
    masked = [r for r in rows if r["oracle"] == "masked"]
    assert all(r["pruned_vs_fp32"] > 0 and r["masked_vs_fp32"] > 0 for r in masked), "bfloat16 must round somewhere"
    assert "| qwen2_5_vl | bfloat16 | 2/2 | 2/2 | 2/2 |" in (tmp_path / "report.md").read_text()
