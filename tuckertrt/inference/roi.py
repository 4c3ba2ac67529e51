"""``--roi-subset``: keep only some classes (by TotalSegmentator name) in labels, masks and statistics."""
from __future__ import annotations

import difflib
import re
from typing import Iterable

import numpy as np

from tuckertrt.errors import UsageError


def parse_roi_names(values: Iterable[str]) -> tuple[str, ...]:
    """Class names from command-line values, each holding one or more names separated by commas or spaces."""
    names = [n for v in values for n in re.split(r"[,\s]+", v) if n]
    return tuple(dict.fromkeys(names))


def check_roi_names(names: Iterable[str], available: Iterable[str]) -> tuple[str, ...]:
    """``names`` when every one is an available class; otherwise a usage error naming the close matches."""
    names, available = tuple(names), list(dict.fromkeys(available))
    if not names:
        raise UsageError("--roi-subset needs at least one class name")
    unknown = [n for n in names if n not in available]
    if unknown:
        hints = []
        for name in unknown:
            close = difflib.get_close_matches(name, available, n=3, cutoff=0.6)
            hints.append(f"{name!r} (did you mean {', '.join(close)}?)" if close else repr(name))
        raise UsageError(f"--roi-subset: unknown class {'; '.join(hints)}; the model's {len(available)} classes "
                         f"include {', '.join(available[:5])}, ...")
    return names


def restrict_labels(labels: np.ndarray, class_names: dict[int, str], keep: Iterable[str]
                    ) -> tuple[np.ndarray, dict[int, str]]:
    """``labels`` with every class not named in ``keep`` set to background, and the kept ``{id: name}``."""
    keep = set(keep)
    kept = {k: v for k, v in class_names.items() if v in keep}
    lookup = np.zeros(max(int(labels.max(initial=0)), max(class_names, default=0)) + 1, dtype=labels.dtype)
    lookup[list(kept)] = list(kept)
    return lookup[labels], kept
