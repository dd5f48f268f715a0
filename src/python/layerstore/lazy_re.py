"""Regular expressions compiled (and ``re`` imported) on first use: compiling them all
costs a short CLI call more than a millisecond, and most calls need none of them."""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (slow to import)
if TYPE_CHECKING:
    import re
    from collections.abc import Callable


def lazy_re(pattern: str) -> Callable[[], re.Pattern[str]]:
    """A function returning ``re.compile(pattern)``, compiled on its first call."""
    compiled: list[re.Pattern[str]] = []

    def get() -> re.Pattern[str]:
        if not compiled:
            import re

            compiled.append(re.compile(pattern))
        return compiled[0]

    return get
