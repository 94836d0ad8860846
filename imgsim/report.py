"""Step 10, the run report: one JSON file that says what a run found, stored, skipped, measured and drew.

Tests and the benchmark read it instead of the notebook's outputs. `write_run_report` reads the run's
results from the notebook's variables, by the names the notebook gives them (see `run_report`); its
timings are what the package's steps measured of themselves (`imgsim.timing`), started again once written.
"""

import json

from imgsim.runtime import runtime_of
from imgsim.timing import timings


def run_report(run: dict) -> dict:
    """The report's content, from the notebook's variables (`run` is its `globals()`).

    `calibration`, the near-duplicate `findings` (`near_duplicates.Findings`) and `tidy` make the
    `duplicates` section; `ignored` says how many files of the image folder were left out for each extension
    that is not an image's; `embedding` is the indexing's embedding run, which timed itself.
    """
    settings, sync, hits = run["settings"], run["sync_result"], run["hits"]
    steps = timings | {"embed": run["embedding"].seconds, "calibration": run["calibration"].seconds}
    return {
        "image_dir": str(settings.image_dir.resolve()),
        "images_found": len(run["all_image_paths"]),
        "images_selected": len(run["image_paths"]),
        "ignored_extensions": run["ignored"],
        **{name: sync.counts[name] for name in ("embedded", "new", "updated", "unchanged", "removed")},
        "skipped": sync.skipped,
        "exact_duplicates": run["exact_duplicates"],
        "points_in_collection": run["client"].count(settings.collection).count,
        "collection": settings.collection,
        "qdrant": settings.qdrant_url or str(settings.qdrant_path.resolve()),
        "vector_size": run["vector_size"],
        "model": settings.model,
        "weights": run["weights_id"],
        "device": str(run["device"]),
        "precision": settings.precision,
        "runtime": runtime_of(run["model"]),
        "batch_size": run["batch_size"],
        "workers": settings.workers,
        "timings_s": {name: round(seconds, 3) for name, seconds in steps.items()},
        "duplicates": duplicates_report(run["calibration"], run["findings"])
        | {"tidy": run["tidy"].report(run["table"], run["moves"])},
        "neighbour_source": settings.neighbour_source,
        "metrics": run["metrics"],
        "query": {
            "image": run["query_key"] or str(run["query_path"]),
            "results": [{"path": h.payload["path"], "label": h.payload["label"], "score": h.score} for h in hits],
        },
        "figures": {name: str(path) for name, path in run["figures"].saved.items()},
    }


def write_run_report(run: dict) -> None:
    """Write the run's report (`run` is the notebook's `globals()`) where IMGSIM_REPORT says, print its summary,
    and start the timings again for the next run."""
    report, path = run_report(run), run["settings"].report
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))
    timings.clear()
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
