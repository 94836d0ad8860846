"""The collection mirrors the folder across re-runs: nothing duplicated, nothing lost, nothing stale."""

import os
import signal
import sqlite3
import threading
import time
from pathlib import Path

import nbformat
import pytest
from conftest import NOTEBOOK, ROOT, save_picture
from nbclient import NotebookClient
from qdrant_client import QdrantClient, models

from imgsim.store import FolderSync


def make_folder(folder: Path, count: int) -> None:
    for seed in range(count):
        save_picture(folder / ("even" if seed % 2 == 0 else "odd") / f"picture {seed}.jpg", seed)


def folder_keys(folder: Path) -> list[str]:
    return sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*.jpg"))


def counts(report: dict) -> dict:
    names = ("embedded", "new", "updated", "unchanged", "removed", "points_in_collection")
    return {name: report[name] for name in names}


def test_a_file_is_keyed_by_its_path_in_the_folder_and_a_file_outside_it_has_no_key(tmp_path):
    client = QdrantClient(":memory:")
    client.create_collection("images", vectors_config=models.VectorParams(size=2, distance=models.Distance.DOT))
    sync = FolderSync(client, "images", tmp_path / "images", "resnet18/none")
    assert sync.key_of(tmp_path / "images" / "cats" / "a.jpg") == "cats/a.jpg"
    assert sync.key_of(tmp_path / "a query from elsewhere.jpg") is None, "a query image outside IMAGE_DIR"


def test_rerun_scenarios_keep_the_collection_an_exact_mirror(tmp_path, notebook):
    folder = tmp_path / "images"
    make_folder(folder, 8)
    notebook.set(IMAGE_DIR=str(folder))

    first = notebook.run_ok()
    assert counts(first) == dict(embedded=8, new=8, updated=0, unchanged=0, removed=0, points_in_collection=8)
    first_payloads = notebook.stored_payloads()
    (exported,) = (notebook.report_path.parent / "models").glob("resnet18-*-224px.onnx")  # beside the report
    written = exported.stat().st_mtime_ns

    unchanged = notebook.run_ok()
    assert counts(unchanged) == dict(embedded=0, new=0, updated=0, unchanged=8, removed=0, points_in_collection=8)
    assert unchanged["runtime"] == "onnxruntime" and exported.stat().st_mtime_ns == written, "not exported again"
    assert [run["duplicates"]["calibration"]["reused"] for run in (first, unchanged)] == [False, True]

    modified = folder / "even" / "picture 2.jpg"
    save_picture(modified, 100)
    after_edit = notebook.run_ok()
    assert counts(after_edit) == dict(embedded=1, new=0, updated=1, unchanged=7, removed=0, points_in_collection=8)
    assert notebook.stored_payloads()["even/picture 2.jpg"]["sha256"] != first_payloads["even/picture 2.jpg"]["sha256"]
    assert after_edit["duplicates"]["calibration"]["reused"] is False, "a changed file calibrates again"

    (folder / "odd" / "picture 3.jpg").unlink()
    after_delete = notebook.run_ok()
    assert counts(after_delete) == dict(embedded=0, new=0, updated=0, unchanged=7, removed=1, points_in_collection=7)

    save_picture(folder / "odd" / "new arrival.jpg", 200)
    after_add = notebook.run_ok()
    assert counts(after_add) == dict(embedded=1, new=1, updated=0, unchanged=7, removed=0, points_in_collection=8)

    (folder / "even" / "picture 4.jpg").rename(folder / "odd" / "renamed.jpg")
    after_rename = notebook.run_ok()
    assert counts(after_rename) == dict(embedded=1, new=1, updated=0, unchanged=7, removed=1, points_in_collection=8)
    stored = notebook.stored_payloads()
    assert sorted(stored) == folder_keys(folder)
    assert stored["odd/renamed.jpg"]["label"] == "odd"


def test_a_file_that_turns_bad_loses_its_stale_point(tmp_path, notebook):
    folder = tmp_path / "images"
    make_folder(folder, 4)
    notebook.set(IMAGE_DIR=str(folder))
    notebook.run_ok()

    (folder / "even" / "picture 0.jpg").write_bytes(b"")
    report = notebook.run_ok()

    assert report["skipped"] == [{"path": "even/picture 0.jpg", "reason": "empty file (0 bytes)"}]
    assert report["removed"] == 1 and report["points_in_collection"] == 3
    assert "even/picture 0.jpg" not in notebook.stored_payloads()


def test_another_model_never_mixes_into_the_same_collection(tmp_path, notebook):
    folder = tmp_path / "images"
    make_folder(folder, 3)
    notebook.set(IMAGE_DIR=str(folder))
    notebook.run_ok()

    for model, message in (("resnet34", "vectors of two models must never be compared"), ("resnet50", "512-d")):
        notebook.set(MODEL=model)
        report, _, error = notebook.run()
        assert report is None and error is not None
        assert message in error.trace and "IMGSIM_COLLECTION" in error.trace

    notebook.set(MODEL="resnet34", COLLECTION="images_resnet34")
    report = notebook.run_ok()
    assert report["new"] == 3 and report["collection"] == "images_resnet34"
    assert {p["model"] for p in notebook.stored_payloads("images").values()} == {"resnet18/none (random, seed 0)"}


def stored_point_count(qdrant_path: Path, collection: str = "images") -> int:
    """Points written so far, read from local mode's SQLite file while the kernel holds the folder."""
    database = qdrant_path / "collection" / collection / "storage.sqlite"
    if not database.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=1) as connection:
            return connection.execute("SELECT COUNT(*) FROM points").fetchone()[0]
    except sqlite3.OperationalError:  # the table is created a moment after the file
        return 0


def test_a_run_killed_while_embedding_resumes_without_duplicates_or_gaps(tmp_path, notebook):
    folder = tmp_path / "images"
    total = 40
    make_folder(folder, total)
    notebook.set(IMAGE_DIR=str(folder), MODEL="resnet50", BATCH_SIZE="4")

    executed_until_kill = kill_kernel_while_indexing(notebook.qdrant_path, kill_after_points=8, total=total)

    assert 8 <= executed_until_kill < total, "the kernel must die part-way through the embedding"
    report = notebook.run_ok()
    assert report["unchanged"] == executed_until_kill, "batches uploaded before the kill are kept"
    assert report["new"] == total - executed_until_kill
    assert report["points_in_collection"] == total
    assert sorted(notebook.stored_payloads()) == folder_keys(folder)


def kill_kernel_while_indexing(qdrant_path: Path, kill_after_points: int, total: int) -> int:
    """Run the whole notebook, and SIGKILL its kernel once `kill_after_points` points are stored."""
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(notebook, timeout=600, resources={"metadata": {"path": str(ROOT)}})
    errors = []
    running = threading.Thread(target=lambda: errors.append(capture_error(client.execute)))
    running.start()
    deadline = time.monotonic() + 300
    while stored_point_count(qdrant_path) < kill_after_points:
        assert running.is_alive(), f"the notebook ended before the kill: {errors}"
        assert time.monotonic() < deadline, "indexing never started"
        time.sleep(0.02)
    kernel = client.km.provisioner.process
    os.kill(kernel.pid, signal.SIGKILL)
    running.join(timeout=120)
    assert not running.is_alive() and errors[0] is not None, "the notebook must stop when its kernel dies"
    count = stored_point_count(qdrant_path)
    if count >= total:
        pytest.fail("the embedding finished before the kernel was killed; use more images")
    return count


def capture_error(run) -> Exception | None:
    try:
        run()
    except Exception as error:  # a dead kernel surfaces as nbclient's DeadKernelError, or a cell's error
        return error
    return None
