"""Built-in methods; importing this package registers them. One file per method."""
from . import (  # noqa: F401
    centerclip, divprune, dtd, dycoke, dycoke_kv, dymu, evad, fastv, fastvid, framefusion, holitom, pool, prunevid,
    pyramiddrop, random, uniform, vidcom2, visionzip,
)
