"""Built-in methods; importing this package registers them. One file per method."""
from . import dtd, evad, fastv, fastvid, pool, random, uniform  # noqa: F401
