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
    runtime,
    batch_size,
    timings,
    calibration,
    findings,
    tidy,
    metrics,
    query,
    figures,
) -> dict:
    """The report's content. `query` is (the query image's name, its hits); `calibration`, the near-duplicate
    `findings` (`near_duplicates.Findings`) and `tidy` (its section) make the `duplicates` section;
    `ignored_extensions` says how many files of the image folder were left out for each extension that is not
    an image's. `neighbour_source` is the setting's: where the analyses' neighbours came from ("numpy" or
    "qdrant"); `runtime`, what ran the model ("onnxruntime" or "torch", `imgsim.runtime.runtime_of`)."""
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
        "precision": settings.precision,
        "runtime": runtime,
        "batch_size": batch_size,
        "workers": settings.workers,
        "timings_s": {name: round(seconds, 3) for name, seconds in timings.items()},
        "duplicates": duplicates_report(calibration, findings) | {"tidy": tidy},
        "neighbour_source": settings.neighbour_source,
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


def rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def calibration_report(calibration) -> dict:
    """The report's `duplicates.calibration`: the threshold, how it was chosen, how clear its valley is, the recall."""
    return {
        "threshold": rounded(calibration.threshold),
        "chosen": calibration.chosen,
        "images_looked_at": calibration.images_looked_at,
        "pairs_looked_at": calibration.pairs_looked_at,
        "bandwidth": rounded(calibration.bandwidth),
        "in_band": calibration.in_band,
        "valley_found": calibration.valley_found,
        "images_above": rounded(calibration.images_above),
        "planted_copies": len(calibration.copy_scores),
        "sample_images": calibration.sample_images,
        "recall": rounded(calibration.recall),
        "recall_interval": calibration.recall_interval and [rounded(bound) for bound in calibration.recall_interval],
        "recall_by_kind": {kind: round(value, 4) for kind, value in calibration.recall_by_kind.items()},
        "separable": calibration.separable,
        "closest_pairs": [[a, b, rounded(score)] for a, b, score in calibration.closest_pairs],
        "seconds": round(calibration.seconds, 3),
        "reused": calibration.reused,
    }


def duplicates_report(calibration, findings) -> dict:
    """The report's `duplicates` section: the threshold, the candidates and how the rule decided them, the groups,
    the calibration."""
    return {
        "threshold": rounded(calibration.grouping_threshold),
        "score": "centred cosine",
        "checked_from": rounded(calibration.candidate_floor),
        **findings.report(),
        "calibration": calibration_report(calibration),
    }
