"""Steps 6 and 7, the examples searched with: which stored images the gallery and the recommend query start from.

The notebook makes the Qdrant calls itself (`query_points`, `query_batch_points`, a `RecommendQuery`,
a payload filter); this module picks the images those calls are shown with, by label. (The search
panel's own searching is in `panel.py`.)
"""

from collections import defaultdict


def keys_by_label(stored: dict[str, dict]) -> dict[str | None, list[str]]:
    """Stored paths grouped by label, both sorted (labels as text, so that None sorts too)."""
    groups = defaultdict(list)
    for key in sorted(stored):
        groups[stored[key]["label"]].append(key)
    return dict(sorted(groups.items(), key=lambda item: str(item[0])))


def first_image_per_label(stored: dict[str, dict], limit: int = 10) -> list[str]:
    return [keys[0] for keys in keys_by_label(stored).values()][:limit]


def recommend_examples(stored: dict[str, dict]) -> tuple[list[str], list[str]]:
    """Two images of the first label as positive examples, and one of the last label as the negative one."""
    groups = list(keys_by_label(stored).values())
    return groups[0][:2], [groups[-1][0]] if len(groups) > 1 else []
