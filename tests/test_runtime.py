"""The model through ONNX Runtime on a CPU: the setting's rule, the cached export, the fallback to torch."""

import importlib.util
import warnings

import numpy as np
import pytest
import torch
from conftest import SHARED_PHOTOS, save_picture

from imgsim.embedding import embed_in_batches
from imgsim.files import find_images
from imgsim.model import feature_extractor
from imgsim.runtime import OnnxRuntimeModel, export_onnx, onnx_file, onnx_runtime_model, runtime_decision, runtime_of

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def small_model():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="IMGSIM_WEIGHTS=none")  # random weights: mechanics only
        model, preprocess, weights_id, _ = feature_extractor("resnet18", "none", CPU)
    return model, preprocess, weights_id


def embed_all(paths, model, preprocess) -> np.ndarray:  # batches of 5: 5, 5 and a last one of 2
    return np.concatenate([v for _, v in embed_in_batches(paths, model, preprocess, CPU, 5, 2, None)])


def top_sets(vectors: np.ndarray, k: int) -> list[set]:
    scores = vectors @ vectors.T
    np.fill_diagonal(scores, -np.inf)
    return [set(row) for row in np.argsort(-scores, axis=1)[:, :k]]


def test_auto_picks_onnx_runtime_on_a_cpu_in_float32_and_torch_elsewhere(monkeypatch):
    assert runtime_decision("auto", CPU)[0] == "onnxruntime"
    runtime, why = runtime_decision("auto", torch.device("cuda"))
    assert runtime == "torch" and "cuda" in why
    runtime, why = runtime_decision("auto", CPU, "bfloat16")
    assert runtime == "torch" and "IMGSIM_PRECISION=bfloat16" in why
    assert runtime_decision("torch", CPU)[0] == "torch"
    assert runtime_decision("onnxruntime", CPU)[0] == "onnxruntime"
    found = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "onnxruntime" else found(name))
    runtime, why = runtime_decision("auto", CPU)
    assert runtime == "torch" and "pip install onnxruntime" in why  # said, not silent


def test_onnx_runtime_embeds_drawn_images_as_torch_does_and_a_second_call_reuses_the_export(tmp_path, small_model):
    model, preprocess, weights_id = small_model
    paths = [save_picture(tmp_path / "images" / f"{seed}.png", seed) for seed in range(12)]
    path = onnx_file(tmp_path / "models", "resnet18", weights_id, preprocess.crop_size[0])
    assert path.name == "resnet18-none-random-seed-0-with-map-224px.onnx"
    exports = []

    def counted_export(*args):
        exports.append(args)
        export_onnx(*args)

    fast, why = onnx_runtime_model(model, preprocess.crop_size[0], path, export=counted_export)
    assert isinstance(fast, OnnxRuntimeModel) and runtime_of(fast) == "onnxruntime" and "exported" in why
    eager, onnx = embed_all(paths, model, preprocess), embed_all(paths, fast, preprocess)
    assert np.abs(onnx - eager).max() < 1e-4  # batches of 5 and of 2 through one graph
    assert top_sets(onnx, 3) == top_sets(eager, 3)

    again, why = onnx_runtime_model(model, preprocess.crop_size[0], path, export=counted_export)
    assert len(exports) == 1 and "cached" in why, "the second call must reuse the exported file"
    assert np.abs(embed_all(paths[:2], again, preprocess) - eager[:2]).max() < 1e-4
    assert [p.name for p in path.parent.iterdir()] == [path.name], "no partial file left behind"


def test_a_failing_export_falls_back_to_torch_and_prints_why(tmp_path, small_model, capsys):
    model, preprocess, weights_id = small_model
    path = onnx_file(tmp_path, "resnet18", weights_id, preprocess.crop_size[0])

    def failing_export(*args):
        raise RuntimeError("Module onnx is not installed!\nmore detail")

    kept, why = onnx_runtime_model(model, preprocess.crop_size[0], path, export=failing_export)
    assert kept is model and runtime_of(kept) == "torch"
    printed = capsys.readouterr().out
    assert printed.count("\n") == 1 and printed.strip() == why
    assert "torch runs the model" in why and "RuntimeError: Module onnx is not installed!" in why
    assert not path.exists()


def test_a_broken_cached_file_falls_back_to_torch_and_names_the_file(tmp_path, small_model, capsys):
    model, preprocess, weights_id = small_model
    path = onnx_file(tmp_path, "resnet18", weights_id, preprocess.crop_size[0])
    path.write_bytes(b"not an onnx graph")
    kept, why = onnx_runtime_model(model, preprocess.crop_size[0], path)
    assert kept is model and str(path) in why and "cached" in why
    assert capsys.readouterr().out.strip() == why


def test_an_export_of_other_weights_is_refused_by_the_check_against_torch(tmp_path, small_model, capsys):
    model, preprocess, weights_id = small_model
    path = onnx_file(tmp_path, "resnet18", weights_id, preprocess.crop_size[0])
    other = feature_extractor("resnet18", "none", CPU)[0]
    with torch.no_grad():
        other.layer4[1].conv2.weight.mul_(2)  # a stale file: the weights changed under the same name
    export_onnx(other, preprocess.crop_size[0], path)
    kept, why = onnx_runtime_model(model, preprocess.crop_size[0], path)
    assert kept is model and "differ from torch's" in why


@pytest.mark.skipif(not SHARED_PHOTOS.is_dir(), reason=f"{SHARED_PHOTOS} is not there")
def test_on_trained_features_onnx_runtime_keeps_torchs_top_10(tmp_path, trained_extractor):
    model, preprocess, weights_id, _ = trained_extractor
    paths = sorted(find_images(SHARED_PHOTOS))[::40]  # 25 photos over all labels
    fast, _ = onnx_runtime_model(model, preprocess.crop_size[0], onnx_file(tmp_path, "resnet50", weights_id, 224))
    assert runtime_of(fast) == "onnxruntime"
    eager, onnx = embed_all(paths, model, preprocess), embed_all(paths, fast, preprocess)
    assert np.abs(onnx - eager).max() < 1e-4
    scores = eager @ eager.T
    assert np.percentile(scores[np.triu_indices(len(paths), 1)], 1) < 0.9, "trained features: scores spread"
    assert top_sets(onnx, 10) == top_sets(eager, 10)
