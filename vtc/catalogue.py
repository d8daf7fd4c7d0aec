"""What ``vtc list`` prints, stored beside the package so that listing imports no torch.

``catalogue.json`` is generated from the live registry, adapters and trained-compressor kinds
(``python -m vtc.catalogue`` rewrites it); tests/test_catalogue.py regenerates it and fails on any drift.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CATALOGUE = Path(__file__).resolve().with_name("catalogue.json")


def load() -> dict[str, Any]:
    """The stored catalogue: ``methods`` ([name, stage, summary]), ``model_types``, ``trained`` kinds."""
    return json.loads(CATALOGUE.read_text())


def generate() -> dict[str, Any]:
    """The catalogue as the code defines it now (imports the registry, hence torch)."""
    from .patches import supported_model_types
    from .support import method_rows
    from .trained.store import KINDS

    return {"methods": [list(row) for row in method_rows()], "model_types": supported_model_types(),
            "trained": sorted(KINDS)}


if __name__ == "__main__":
    CATALOGUE.write_text(json.dumps(generate(), indent=1) + "\n")
    print(f"wrote {CATALOGUE}")
