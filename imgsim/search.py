"""Step 7, searching: the filters and example choices around the notebook's `query_points` calls.

The notebook makes the Qdrant calls itself (`query_points`, `query_batch_points`, a `RecommendQuery`,
a payload filter); this module holds the small pieces those calls need.
"""

from collections import defaultdict

from qdrant_client import models

from imgsim.store import point_id


def exclude_point(key: str | None) -> models.Filter | None:
    """A filter that leaves out the point of `key` (a query image that is itself in the collection)."""
    return models.Filter(must_not=[models.HasIdCondition(has_id=[point_id(key)])]) if key else None


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
