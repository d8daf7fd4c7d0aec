"""A cheap identity of a checkpoint's weights, so a resumed sweep never mixes cells of two models at one path.

Retraining a checkpoint in place keeps its path and config, so the suite's own keys cannot tell the two
apart. Hashing every byte of a 15 GB checkpoint would cost more than some sweeps; instead each weight file
contributes its name, its size and either all its bytes (small files) or evenly spaced samples of them.
Training rewrites every tensor it touches, so a sample lands on changed bytes unless only a sliver of the
file moved; that residual risk is the price of reading at most ``SAMPLES * CHUNK`` bytes per file.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
WHOLE_FILE_LIMIT = 64 << 20  # files up to this size are hashed whole
CHUNK = 64 << 10
SAMPLES = 256  # 16 MiB read per larger file


def weights_digest(checkpoint: Path) -> str:
    """A short hex digest of the checkpoint's weight files (see the module docstring for what it covers)."""
    files = sorted(p for p in checkpoint.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"{checkpoint} holds no weight files ({', '.join(WEIGHT_SUFFIXES)})")
    digest = hashlib.blake2b(digest_size=8)
    for path in files:
        size = path.stat().st_size
        digest.update(f"{path.name}:{size};".encode())
        with path.open("rb") as stream:
            if size <= WHOLE_FILE_LIMIT:
                for block in iter(lambda: stream.read(1 << 20), b""):
                    digest.update(block)
                continue
            for i in range(SAMPLES):
                stream.seek((size - CHUNK) * i // (SAMPLES - 1))
                digest.update(stream.read(CHUNK))
    return digest.hexdigest()
