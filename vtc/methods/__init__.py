"""Built-in methods; importing this package registers them. One file per method."""
from . import divprune, dtd, dycoke, evad, fastv, fastvid, pool, random, uniform, vidcom2  # noqa: F401
