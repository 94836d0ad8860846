"""Half precision: the vectors it gives, and features that overflowed stopping the embedding."""

import warnings

import numpy as np
import pytest
import torch
from conftest import save_picture

from imgsim.embedding import embed_in_batches
from imgsim.model import feature_extractor, in_precision

CPU = torch.device("cpu")


def drawn_images_and_model(folder):
    paths = [save_picture(folder / f"{seed}.png", seed) for seed in range(12)]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="IMGSIM_WEIGHTS=none")  # random weights on purpose
        model, preprocess, _, _ = feature_extractor("resnet18", "none", CPU)
    return paths, model, preprocess


def embed_all(paths, model, preprocess) -> np.ndarray:  # batches of 5: 5, 5 and a last one of 2
    return np.concatenate([v for _, v in embed_in_batches(paths, model, preprocess, CPU, 5, 2, None)])


def test_half_precision_gives_unit_float32_vectors_near_float32s_and_wraps_the_model_once(tmp_path):
    paths, model, preprocess = drawn_images_and_model(tmp_path)
    half = in_precision(model, "bfloat16")
    assert in_precision(model, "float32") is model
    assert in_precision(half, "bfloat16").model is model  # a rerun of the cell wraps it once, not twice
    assert in_precision(half, "float32") is model
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
