"""Why two images match: each heat map sums to the score it explains (plain and centred, torch and ONNX Runtime),
and a picture pasted into a larger one is where the larger one's map puts its agreement."""

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import draw_picture, jpeg_bytes, save_picture
from PIL import Image

from imgsim.embedding import embed_file, embed_images
from imgsim.explain import Explainer, upsampled
from imgsim.model import feature_extractor
from imgsim.plots import Figures
from imgsim.reading import decode_image
from imgsim.runtime import OnnxRuntimeModel, onnx_file, onnx_runtime_model
from imgsim.scoring import centre

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def random_resnet18():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="IMGSIM_WEIGHTS=none")  # random weights: the arithmetic only
        return feature_extractor("resnet18", "none", CPU)


@pytest.mark.parametrize("runtime", ["torch", "onnxruntime"])
def test_each_map_sums_to_the_score_search_and_near_duplicates_use(runtime, random_resnet18, tmp_path):
    model, preprocess, weights_id, _ = random_resnet18
    if runtime == "onnxruntime":
        model, why = onnx_runtime_model(model, 224, onnx_file(tmp_path, "resnet18", weights_id, 224))
        assert isinstance(model, OnnxRuntimeModel), why
    paths = [save_picture(tmp_path / f"picture_{seed}.jpg", seed) for seed in range(6)]
    vectors = np.stack([embed_file(path, model, preprocess, CPU) for path in paths])  # as stored in Qdrant
    mean = vectors.mean(axis=0)
    plain_scores = vectors[1:] @ vectors[0]
    centred = centre(vectors, mean)
    centred_scores = centred[1:] @ centred[0]

    explainer = Explainer(model, preprocess, CPU)
    _, plain = explainer.explain_files(paths[0], paths[1:])
    _, centred_explanations = explainer.explain_files(paths[0], paths[1:], mean)

    for explanations, scores in ((plain, plain_scores), (centred_explanations, centred_scores)):
        for explanation, score in zip(explanations, scores, strict=True):
            assert explanation.grid == (7, 7)
            assert explanation.first_map.sum() == pytest.approx(score, abs=1e-4)
            assert explanation.second_map.sum() == pytest.approx(score, abs=1e-4)
    assert all(explanation.first_map.min() >= 0 for explanation in plain), "after a ReLU, plain terms never hurt"
    assert any(explanation.first_map.min() < 0 for explanation in centred_explanations), "centring brings negatives"


def test_a_place_finds_its_partners_among_the_terms_of_its_map(random_resnet18, tmp_path):
    model, preprocess, _, _ = random_resnet18
    paths = [save_picture(tmp_path / f"picture_{seed}.jpg", seed) for seed in range(2)]
    (explanation,) = Explainer(model, preprocess, CPU).explain_files(paths[0], paths[1:])[1]
    partners = [explanation.partners_of((row, column)) for row in range(7) for column in range(7)]
    assert np.allclose(sum(partners), explanation.second_map)
    assert np.allclose([map_.sum() for map_ in partners], explanation.first_map.ravel())


def test_the_pasted_picture_is_where_the_larger_image_agrees_with_it(trained_extractor):
    """A picture pasted into the corner of a grey canvas twice its side, as a crop's original is: centred on the
    collection's mean (near-duplicates' score), at least 70 % of the canvas map's positive mass lies on the paste."""
    model, preprocess, _, _ = trained_extractor
    side, canvas_side = 300, 448
    pictures = [draw_picture(seed, (side, side)) for seed in range(8)]
    canvases = []
    for picture in pictures:
        canvases.append(Image.new("RGB", (canvas_side, canvas_side), (128, 128, 128)))
        canvases[-1].paste(picture, (0, 0))
    drawn = pictures + canvases
    images = [decode_image(jpeg_bytes(image), Path(f"{n}.jpg"), preprocess) for n, image in enumerate(drawn)]
    mean = embed_images(model, images, preprocess, CPU).mean(axis=0)  # the collection: pictures and canvases
    # the canvas as the model sees it: resized to 232 pixels, centre-cropped to 224 (4 pixels off each side)
    inside = round(side * preprocess.resize_size[0] / canvas_side) - 4
    pasted = np.zeros((224, 224), dtype=bool)
    pasted[:inside, :inside] = True

    explainer = Explainer(model, preprocess, CPU)
    shares = {"plain": [], "centred": []}
    for picture, canvas in zip(images[:8], images[8:], strict=True):
        for kind, centred_on in (("plain", None), ("centred", mean)):
            (explanation,) = explainer.explain(picture, [canvas], centred_on)
            positive = np.clip(upsampled(explanation.second_map, 224), 0, None)
            shares[kind].append(positive[pasted].sum() / positive.sum())
    assert min(shares["centred"]) >= 0.7, shares
    assert np.median(shares["plain"]) > pasted.mean(), "plain cosine leans to the paste too, less clearly"


def test_the_groups_picture_shows_each_member_beside_the_kept_image_under_their_maps(random_resnet18, tmp_path):
    model, preprocess, _, _ = random_resnet18
    keys = [save_picture(tmp_path / f"picture_{seed}.jpg", seed).name for seed in range(5)]
    figures = Figures(tmp_path / "figures", image_dir=tmp_path)
    explainer = Explainer(model, preprocess, CPU)
    vectors = np.stack([embed_file(tmp_path / key, model, preprocess, CPU) for key in keys])
    figures.duplicate_groups([keys[:3], keys[3:]], centred_of=None, explainer=explainer, mean=vectors.mean(axis=0))
    width, height = Image.open(figures.saved["duplicate_groups"]).size
    assert width > height, "two rows: the larger group's two members, each beside the kept image, make 4 columns"
