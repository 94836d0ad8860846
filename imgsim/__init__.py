"""The plumbing behind image-similarity-vector-db.ipynb, one module per step the data flows through.

    settings     the notebook's parameters, checked once at the top
    files        finding the images, their labels, a spread-out sample, the sample download
    reading      one file (or an upload's bytes) in, 224 x 224 pixels out, or the reason it was skipped
    model        the ResNet, its weights and its preprocessing; half precision when asked
    runtime      the model exported once to ONNX and run by ONNX Runtime on a CPU
    embedding    batches of files in, unit-length vectors out, read by a pool of threads
    store        the Qdrant connection, server settings, collection checks, points, incremental sync with the folder
    examples     which stored images the gallery and the recommend query start from
    scoring      centred scores, block by block, and each row's best columns
    neighbours   where the analyses' neighbours come from: matrix products, or queries to Qdrant
    duplicates   near-duplicate pairs and groups, exact duplicates
    calibration  planted copies, and the threshold where they are best told apart from unrelated images
    tidy         a keeper per duplicate group, duplicates.csv, the reversible move and its undo, a new image's check
    metrics      leave-one-out precision@k and mAP@k, and the principal components of the map
    plots        every picture the notebook shows
    timing       the seconds each step takes, measured by the steps themselves
    report       the JSON run report
    panel        the search panel: upload or pick a query, filter it by label, refine it (more / less like this)
    outputs      the committed notebook's outputs: remade by one command, checked by the tests

The notebook makes the calls that carry the lesson itself (the head swap, `create_collection`, `upsert`,
`query_points`, the recommend query, the payload filter, the centring); these modules do the rest, and the
tests and the benchmark import them.
"""

from pathlib import Path

# This project's name on PyPI. The notebook checks it: an unrelated PyPI package is also imported as `imgsim`.
DISTRIBUTION = "image-similarity-vector-db"


def where_from(package: str | None) -> str:
    """Where this package was imported from (relative to the working folder when inside it, as in a clone), and
    whether the notebook's first cell installed it, from `package`."""
    folder, here = Path(__file__).resolve().parent, Path.cwd().resolve()
    shown = f"./{folder.relative_to(here)}" if folder.is_relative_to(here) else folder
    return f"imgsim in {shown}: " + (f"installed from {package}" if package else "nothing installed")
