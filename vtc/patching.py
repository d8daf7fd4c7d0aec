"""Instance-attribute patches that stack and restore: every attribute vtc puts on a model goes through here."""
from __future__ import annotations

from typing import Any, Callable

_ABSENT = object()


def patch_attribute(owner: Any, name: str, value: Any) -> Callable[[], None]:
    """Set ``owner.<name>`` to ``value`` as an instance attribute; the returned function puts back what was
    there before (an earlier patch, the user's own instance attribute, or nothing, so the class attribute
    shows again). Patches stack: removing them in reverse order restores each layer; removing one that a
    later patch covers raises instead of silently dropping the later one."""
    previous = vars(owner).get(name, _ABSENT)
    setattr(owner, name, value)

    def restore() -> None:
        if vars(owner).get(name, _ABSENT) != value:  # equality: a config may be re-set to an equal string
            raise RuntimeError(f"{type(owner).__name__}.{name} was patched again over vtc's patch; remove that first")
        if previous is _ABSENT:
            delattr(owner, name)
        else:
            setattr(owner, name, previous)

    return restore
