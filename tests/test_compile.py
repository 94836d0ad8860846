"""Compiling the model when it pays: the IMGSIM_COMPILE setting, the decision rule, and vectors equal to eager."""

import warnings

import numpy as np
import torch
from conftest import save_picture

from imgsim.embedding import embed_in_batches
from imgsim.model import COMPILE_PAYS_FROM, compile_decision, compile_model, feature_extractor

CPU = torch.device("cpu")


def test_auto_compiles_on_a_cpu_from_the_measured_number_of_images_and_on_off_decide_alone():
    assert compile_decision("auto", COMPILE_PAYS_FROM, CPU)[0]
    compiles, why = compile_decision("auto", COMPILE_PAYS_FROM - 1, CPU)
    assert not compiles and f"{COMPILE_PAYS_FROM - 1} images to embed" in why and str(COMPILE_PAYS_FROM) in why
    assert not compile_decision("auto", 100_000, torch.device("cuda"))[0]  # measured on CPUs only
    assert compile_decision("on", 1, CPU) == (True, "IMGSIM_COMPILE=on: the model runs compiled")
    assert not compile_decision("off", 100_000, CPU)[0]


def test_the_compiled_model_ranks_drawn_images_as_the_eager_one_for_every_batch_size(tmp_path):
    paths = [save_picture(tmp_path / f"{seed}.png", seed) for seed in range(12)]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="IMGSIM_WEIGHTS=none")  # random weights on purpose
        model, preprocess, _, _ = feature_extractor("resnet18", "none", CPU)
    compiled = compile_model(model, preprocess.crop_size[0], CPU)
    assert compile_model(compiled, preprocess.crop_size[0], CPU) is compiled  # compiled once, never again

    def vectors(run_model) -> np.ndarray:  # batches of 5: 5, 5 and a last one of 2
        return np.concatenate([v for _, v in embed_in_batches(paths, run_model, preprocess, CPU, 5, 2, None)])

    eager, fast = vectors(model), vectors(compiled)
    assert np.abs(fast - eager).max() < 1e-3
    eager_scores, fast_scores = eager @ eager.T, fast @ fast.T
    np.fill_diagonal(eager_scores, -np.inf)
    np.fill_diagonal(fast_scores, -np.inf)
    top3 = [[set(row) for row in np.argsort(-scores, axis=1)[:, :3]] for scores in (eager_scores, fast_scores)]
    assert top3[0] == top3[1]
