"""Step 11, the run report: one JSON file that says what a run found, stored, skipped, measured and drew.

Tests and the benchmark read it instead of the notebook's outputs. `Timings` measures the steps.
"""

import json
import time
from contextlib import contextmanager
from pathlib import Path


class Timings(dict):
    """Seconds per step; `with timings("embed"):` adds the block's time to that step."""

    @contextmanager
    def __call__(self, name: str):
        started = time.perf_counter()
        try:
            yield
        finally:
            self[name] = self.get(name, 0.0) + time.perf_counter() - started


def run_report(
    settings,
    *,
    found,
    selected,
    ignored_extensions,
    sync,
    exact_duplicates,
    points,
    vector_size,
    weights_id,
    device,
    batch_size,
    timings,
    duplicates,
    neighbours,
    metrics,
    query,
    figures,
) -> dict:
    """The report's content; `query` is (the query image's name, its hits), `duplicates` its section,
    `neighbours` where the analyses' neighbours came from ("numpy" or "qdrant"), `ignored_extensions` how
    many files of the image folder were left out for each extension that is not an image's."""
    query_image, hits = query
    return {
        "image_dir": str(settings.image_dir.resolve()),
        "images_found": found,
        "images_selected": selected,
        "ignored_extensions": ignored_extensions,
        **{name: sync.counts[name] for name in ("embedded", "new", "updated", "unchanged", "removed")},
        "skipped": sync.skipped,
        "exact_duplicates": exact_duplicates,
        "points_in_collection": points,
        "collection": settings.collection,
        "qdrant": settings.qdrant_url or str(settings.qdrant_path.resolve()),
        "vector_size": vector_size,
        "model": settings.model,
        "weights": weights_id,
        "device": str(device),
        "batch_size": batch_size,
        "workers": settings.workers,
        "timings_s": {name: round(seconds, 3) for name, seconds in timings.items()},
        "duplicates": duplicates,
        "neighbours": neighbours,
        "metrics": metrics,
        "query": {
            "image": query_image,
            "results": [{"path": h.payload["path"], "label": h.payload["label"], "score": h.score} for h in hits],
        },
        "figures": {name: str(path) for name, path in figures.items()},
    }


def write_report(path: Path, report: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))
    summary = {key: report[key] for key in ("images_found", "embedded", "points_in_collection", "timings_s")}
    print(f"report written to {path}\n{json.dumps(summary, indent=2)}")
