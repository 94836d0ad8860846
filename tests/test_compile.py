"""Compiling the model when it pays, and half precision: the settings' rules, and the vectors they give."""

import warnings

import numpy as np
import pytest
import torch
from conftest import save_picture

from imgsim.embedding import embed_in_batches
from imgsim.model import (
    COMPILE_PAYS_FROM,
    Autocast,
    compile_decision,
    compile_model,
    feature_extractor,
    in_precision,
)

CPU = torch.device("cpu")


def drawn_images_and_model(folder):
    paths = [save_picture(folder / f"{seed}.png", seed) for seed in range(12)]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="IMGSIM_WEIGHTS=none")  # random weights on purpose
        model, preprocess, _, _ = feature_extractor("resnet18", "none", CPU)
    return paths, model, preprocess


def embed_all(paths, model, preprocess) -> np.ndarray:  # batches of 5: 5, 5 and a last one of 2
    return np.concatenate([v for _, v in embed_in_batches(paths, model, preprocess, CPU, 5, 2, None)])


def test_auto_compiles_on_a_cpu_from_the_measured_number_of_images_and_on_off_decide_alone():
    assert compile_decision("auto", COMPILE_PAYS_FROM, CPU)[0]
    compiles, why = compile_decision("auto", COMPILE_PAYS_FROM - 1, CPU)
    assert not compiles and f"{COMPILE_PAYS_FROM - 1} images to embed" in why and str(COMPILE_PAYS_FROM) in why
    assert not compile_decision("auto", 100_000, torch.device("cuda"))[0]  # on an H200 it changed top-10s
    assert compile_decision("on", 1, CPU) == (True, "IMGSIM_COMPILE=on: the model runs compiled")
    assert not compile_decision("off", 100_000, CPU)[0]


def test_the_compiled_model_ranks_drawn_images_as_the_eager_one_for_every_batch_size(tmp_path):
    paths, model, preprocess = drawn_images_and_model(tmp_path)
    compiled = compile_model(model, preprocess.crop_size[0], CPU)
    assert compile_model(compiled, preprocess.crop_size[0], CPU) is compiled  # compiled once, never again

    eager, fast = embed_all(paths, model, preprocess), embed_all(paths, compiled, preprocess)
    assert np.abs(fast - eager).max() < 1e-3
    eager_scores, fast_scores = eager @ eager.T, fast @ fast.T
    np.fill_diagonal(eager_scores, -np.inf)
    np.fill_diagonal(fast_scores, -np.inf)
    top3 = [[set(row) for row in np.argsort(-scores, axis=1)[:, :3]] for scores in (eager_scores, fast_scores)]
    assert top3[0] == top3[1]


def test_half_precision_gives_unit_float32_vectors_near_float32s_and_wraps_the_model_once(tmp_path):
    paths, model, preprocess = drawn_images_and_model(tmp_path)
    half = in_precision(model, "bfloat16")
    assert in_precision(model, "float32") is model
    assert in_precision(half, "bfloat16").model is model  # a rerun of the cell wraps it once, not twice
    assert in_precision(half, "float32") is model
    compiled_half = compile_model(half, preprocess.crop_size[0], CPU)  # COMPILE=on with PRECISION=bfloat16
    assert isinstance(compiled_half, Autocast) and isinstance(compiled_half.model, torch.jit.ScriptModule)
    full, reduced = embed_all(paths, model, preprocess), embed_all(paths, half, preprocess)
    assert reduced.dtype == np.float32 and np.allclose(np.linalg.norm(reduced, axis=1), 1, atol=1e-5)
    assert 1e-6 < np.abs(reduced - full).max() < 1e-2  # rounded in bfloat16, and only slightly


def test_features_that_overflowed_stop_the_embedding_and_say_which_setting_to_change(tmp_path):
    paths, _, preprocess = drawn_images_and_model(tmp_path)

    def overflowing(batch: torch.Tensor) -> torch.Tensor:  # what ResNet-152 did in float16 on a GPU
        features = torch.ones(len(batch), 4)
        features[1] = float("inf")
        return features

    with pytest.raises(FloatingPointError, match="for 1 of 5 images.*IMGSIM_PRECISION=float32"):
        embed_all(paths, overflowing, preprocess)
