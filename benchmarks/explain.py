"""What the heat maps of why images match cost (docs/explaining-similarity.md), on this machine's CPU.

Measures, each the median of `--repeats` runs: the feature maps of a query and its top 5 from the torch model
and from the ONNX Runtime graph's second output; embedding a batch of photos with the two-output graph against
a graph of the features alone (what asking for the map costs a run that never does); the notebook's figure of
a query's top 5 with its maps; the search panel's "why?" view. Prints one JSON object.

    IMGSIM_WEIGHTS=path/to/resnet50.pth python benchmarks/explain.py --images path/to/photos
"""

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import matplotlib
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from qdrant_client import QdrantClient, models  # noqa: E402

from imgsim.embedding import embed_file, embed_images  # noqa: E402
from imgsim.explain import Explainer, read_for_model  # noqa: E402
from imgsim.files import find_images  # noqa: E402
from imgsim.model import feature_extractor  # noqa: E402
from imgsim.panel import SearchPanel  # noqa: E402
from imgsim.plots import Figures, weights_caption  # noqa: E402
from imgsim.runtime import OnnxRuntimeModel, onnx_file, onnx_runtime_model  # noqa: E402
from imgsim.store import point_id  # noqa: E402

CPU = torch.device("cpu")


def median_seconds(run, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def export_features_only(model, side: int, path: Path) -> None:
    """The graph as it was before it gave the feature map: one output, the features."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (torch.zeros(1, 3, side, side),), str(path), input_names=["pixels"], output_names=["features"],
            dynamic_axes={"pixels": {0: "batch"}, "features": {0: "batch"}}, dynamo=False,
        )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, required=True, help="a folder of photos (the first 64 are used)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    matplotlib.use("Agg")
    weights = os.environ.get("IMGSIM_WEIGHTS", "none")
    model, preprocess, weights_id, _ = feature_extractor(
        "resnet50", Path(weights) if weights != "none" else weights, CPU
    )
    paths = sorted(find_images(args.images))[:64]
    folder = Path(tempfile.mkdtemp())
    onnx, why = onnx_runtime_model(model, 224, onnx_file(folder, "resnet50", weights_id, 224))
    assert isinstance(onnx, OnnxRuntimeModel), why
    features_only_path = folder / "features-only.onnx"
    export_features_only(model, 224, features_only_path)
    features_only = OnnxRuntimeModel(features_only_path)

    six = [read_for_model(path, preprocess) for path in paths[:6]]
    batch = [read_for_model(path, preprocess) for path in paths[:64]]
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads "
        f"{torch.get_num_threads()}",
        "weights": weights_id,
        "feature maps of 6 images, torch eager (s)": median_seconds(
            lambda: Explainer(model, preprocess, CPU).feature_maps(six), args.repeats
        ),
        "feature maps of 6 images, ONNX Runtime second output (s)": median_seconds(
            lambda: Explainer(onnx, preprocess, CPU).feature_maps(six), args.repeats
        ),
    }
    for name, graph in (("two outputs", onnx), ("features only", features_only)):
        seconds = median_seconds(lambda graph=graph: embed_images(graph, batch, preprocess, CPU), args.repeats)
        result[f"embed 64 images, ONNX Runtime graph with {name} (images/s)"] = len(batch) / seconds

    client = QdrantClient(":memory:")
    client.create_collection("images", vectors_config=models.VectorParams(size=2048, distance=models.Distance.DOT))
    vectors = embed_images(onnx, batch, preprocess, CPU)
    keys = [path.relative_to(args.images).as_posix() for path in paths]
    client.upsert("images", [models.PointStruct(id=point_id(k), vector=v.tolist(), payload={"path": k, "label": None})
                             for k, v in zip(keys, vectors, strict=True)])  # fmt: skip
    hits = client.query_points("images", query=vectors[0].tolist(), limit=6, with_payload=True).points[1:]
    figures = Figures(folder / "figures", args.images)
    figures.caption = weights_caption("resnet50", weights_id)
    explainer = Explainer(onnx, preprocess, CPU)
    result["notebook figure, a query and its top 5 with their maps (s)"] = median_seconds(
        lambda: figures.why_they_match(explainer, (paths[0], keys[0], hits)), args.repeats
    )
    embed = lambda path, data=None: embed_file(path, onnx, preprocess, CPU, data)  # noqa: E731
    panel = SearchPanel(lambda: client, "images", args.images, embed, 5, figures.caption, explainer=explainer)
    panel.search_stored(keys[0])

    def why_view():
        panel.why.value = False
        panel.why.value = True

    result["panel, the why? view of 5 results (s)"] = median_seconds(why_view, args.repeats)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
