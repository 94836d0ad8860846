"""Step 10, the run report: one JSON file that says what a run found, stored, skipped, measured and drew.

Tests and the benchmark read it instead of the notebook's outputs. `write_run_report` reads the run's
results from the notebook's variables, by the names the notebook gives them (see `run_report`); its
timings are what the package's steps measured of themselves (`imgsim.timing`), started again once written.
The near-duplicate calibration is told here (its text and its report section) and saved beside the report,
to be reused while the collection and the settings are unchanged; what earlier versions of it left behind
is removed.
"""

import hashlib
import json
import shutil
from pathlib import Path

from imgsim.runtime import runtime_of
from imgsim.timing import timings


def run_report(run: dict) -> dict:
    """The report's content, from the notebook's variables (`run` is its `globals()`).

    `calibration`, the keypoint `check` of the candidate pairs, the duplicate `groups` and `tidy` make the
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
        "duplicates": duplicates_report(run["calibration"], run["check"], run["groups"])
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


def duplicates_report(calibration, check, groups: list[list[str]]) -> dict:
    """The report's `duplicates` section: the threshold, the candidates' keypoint check, the groups, the calibration."""
    threshold = rounded(calibration.grouping_threshold)
    return {
        "threshold": threshold,
        "score": "centred cosine",
        "checked_from": rounded(calibration.candidate_floor),
        "keypoint_check": dict(check.verdicts) | {"split_at": rounded(check.split_at), "told_above": check.told_above},
        "groups": groups,
        "calibration": calibration_report(calibration),
    }


def collection_fingerprint(stored: dict[str, dict], recipe: list) -> str:
    """Changes when any file or the model changes (from the stored payloads), or anything in `recipe`."""
    contents = sorted((key, payload.get("sha256"), payload.get("model")) for key, payload in stored.items())
    return hashlib.sha256(json.dumps([contents, recipe]).encode()).hexdigest()


def save_result(path: Path, result: dict) -> None:
    """Save a result with its `fingerprint` (without `reused`, which only a later run can say)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({name: value for name, value in result.items() if name != "reused"}))


def load_saved(path: Path, fingerprint: str) -> dict | None:
    """The result saved at `path` if it was made for this fingerprint, else None (also for a file that
    cannot be read: the result is then made again)."""
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return saved if isinstance(saved, dict) and saved.get("fingerprint") == fingerprint else None


def remove_leftovers(client, collection: str, workdir: Path, kinds) -> None:
    """Remove what earlier calibrations left: a scratch collection, and a folder of copies (one sub-folder
    per kind of copy in `kinds`, .jpg files only) beside the report."""
    scratch_collection, scratch_folder = f"{collection}_planted", workdir / "planted_copies"
    if client.collection_exists(scratch_collection):
        client.delete_collection(scratch_collection)
        print(f"removed the collection {scratch_collection!r} of planted copies that an earlier version left behind")
    ours = scratch_folder.is_dir() and {folder.name for folder in scratch_folder.iterdir()} <= set(kinds)
    if ours and all(path.suffix == ".jpg" for path in scratch_folder.rglob("*") if path.is_file()):
        shutil.rmtree(scratch_folder)
        print(f"removed the folder {scratch_folder} of planted copies that an earlier version left behind")
