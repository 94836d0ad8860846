"""Neighbours from Qdrant agree with the exact matrix products, and the server-only settings are requested as intended.

No Qdrant server runs here: the `qdrant` source and the server settings make the same client calls against
local mode, which accepts the server settings and ignores them (its search is exact).
"""

import warnings

import numpy as np
import pytest
from conftest import SHARED_PHOTOS, index_with_random_weights, save_picture
from PIL import Image
from qdrant_client import QdrantClient, models

from imgsim.duplicates import duplicate_groups
from imgsim.files import find_images, spread_sample
from imgsim.neighbours import ExactNeighbours, QdrantNeighbours
from imgsim.store import PAYLOAD_INDEXES, SERVER_COLLECTION, SERVER_UPLOAD, image_points


def compare_sources(client: QdrantClient) -> tuple[ExactNeighbours, QdrantNeighbours]:
    exact, asked = ExactNeighbours(client, "images"), QdrantNeighbours(client, "images")
    assert sorted(asked.keys) == sorted(exact.keys)
    np.testing.assert_allclose(asked.mean, exact.mean, rtol=1e-4, atol=1e-6)
    return exact, asked


@pytest.fixture(scope="module")
def drawn_collection(tmp_path_factory):
    """40 drawn pictures in two labels, and a half-size and a quality-40 copy of five of them."""
    folder = tmp_path_factory.mktemp("neighbours") / "images"
    for seed in range(40):
        save_picture(folder / ("warm" if seed % 2 else "cool") / f"shot {seed}.jpg", seed)
    (folder / "copies").mkdir()
    for seed in range(0, 25, 5):
        picture = Image.open(folder / ("warm" if seed % 2 else "cool") / f"shot {seed}.jpg")
        picture.resize((160, 120)).save(folder / "copies" / f"smaller {seed}.jpg")
        picture.save(folder / "copies" / f"resaved {seed}.jpg", quality=40)
    client = QdrantClient(":memory:")
    index_with_random_weights(client, folder, find_images(folder))
    yield client
    client.close()


@pytest.mark.parametrize("source", [ExactNeighbours, QdrantNeighbours])
def test_a_higher_threshold_filters_the_calibrations_scan_and_gets_what_a_scan_of_its_own_gets(
    drawn_collection, source
):
    calibrated = source(drawn_collection, "images")
    calibrated.pairs_above(0.5)  # the calibration's scan, at its lowest threshold
    for threshold in (0.9, 0.95, None):  # the grouping's (None: not separable)
        filtered_pairs, filtered_nearest = calibrated.pairs_above(threshold)
        own_pairs, own_nearest = source(drawn_collection, "images").pairs_above(threshold)
        assert filtered_pairs == own_pairs and (threshold is None or len(own_pairs) >= 10)
        np.testing.assert_array_equal(filtered_nearest, own_nearest)
    assert calibrated.lowest_scan[0] == 0.5, "the vectors were scanned once"


def test_both_sources_find_the_same_duplicate_groups_and_nearest_scores(drawn_collection):
    exact, asked = compare_sources(drawn_collection)

    exact_pairs, exact_nearest = exact.pairs_above(0.9)
    asked_pairs, asked_nearest = asked.pairs_above(0.9)

    assert len(exact_pairs) >= 10, "the copies give pairs to compare"
    assert duplicate_groups(asked.keys, asked_pairs, []) == duplicate_groups(exact.keys, exact_pairs, [])
    by_key = dict(zip(exact.keys, exact_nearest, strict=True))
    exact_nearest = np.array([by_key[key] for key in asked.keys])
    same = np.isclose(asked_nearest, exact_nearest, atol=1e-4)
    assert np.all(asked_nearest <= exact_nearest + 1e-4), "Qdrant's candidates are some of all the images"
    assert same[exact_nearest >= 0.8].all(), "close neighbours, the ones duplicates need, are never missed"
    assert same.mean() >= 0.9, "a far nearest neighbour may fall outside Qdrant's candidates"


def test_both_sources_measure_the_same_retrieval_quality(drawn_collection):
    exact, asked = compare_sources(drawn_collection)
    labels = {key: key.split("/")[0] for key in exact.keys}

    exact_metrics, asked_metrics = exact.metrics(labels, 5), asked.metrics(labels, 5)

    assert asked_metrics["queries"] == exact_metrics["queries"] == 50, "under 2,000 images, every image queries"
    assert asked_metrics["precision_at_k"] == pytest.approx(exact_metrics["precision_at_k"], abs=0.02)
    assert asked_metrics["map_at_k"] == pytest.approx(exact_metrics["map_at_k"], abs=0.02)


def test_both_sources_give_the_same_nearest_images_and_samples(drawn_collection):
    exact, asked = compare_sources(drawn_collection)
    some = [key for key in exact.keys if key.startswith("copies/")][:4] + exact.keys[:3]

    closest_found = 0
    for exact_found, asked_found in zip(
        exact.nearest_to_stored(some, 3), asked.nearest_to_stored(some, 3), strict=True
    ):
        assert asked_found[0][1] <= exact_found[0][1] + 1e-4
        close = {key for key, score in exact_found if score >= 0.8}
        assert close <= {key for key, _ in asked_found}, "a far neighbour may fall outside Qdrant's candidates"
        closest_found += len(close)
    assert closest_found >= 4, "each copy's original is close"
    np.testing.assert_allclose(asked.centred_of(some), exact.centred_of(some), atol=1e-5)
    keys, vectors = asked.sample(10)
    assert len(set(keys)) == 10 and vectors.shape == (10, 512)
    map_keys, coordinates = asked.map_coordinates()
    assert sorted(map_keys) == sorted(exact.keys) and coordinates.shape == (50, 2), "50 images: all on the map"


@pytest.mark.skipif(not SHARED_PHOTOS.is_dir(), reason=f"{SHARED_PHOTOS} is not there")
def test_both_sources_agree_on_300_clothing_photos():
    client = QdrantClient(":memory:")
    index_with_random_weights(client, SHARED_PHOTOS, spread_sample(find_images(SHARED_PHOTOS), SHARED_PHOTOS, 300))
    exact, asked = compare_sources(client)
    labels = {key: key.split("/")[0] for key in exact.keys}

    exact_pairs, _ = exact.pairs_above(0.95)
    asked_pairs, _ = asked.pairs_above(0.95)

    assert duplicate_groups(asked.keys, asked_pairs, []) == duplicate_groups(exact.keys, exact_pairs, [])
    assert asked.metrics(labels, 5)["precision_at_k"] == pytest.approx(
        exact.metrics(labels, 5)["precision_at_k"], abs=0.01
    )
    client.close()


def test_the_server_settings_are_requested_as_intended_and_accepted_by_local_mode(tmp_path):
    client = QdrantClient(path=str(tmp_path / "qdrant"))
    try:
        vectors = models.VectorParams(size=4, distance=models.Distance.DOT, on_disk=True)
        client.create_collection("images", vectors_config=vectors, **SERVER_COLLECTION)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # local mode: payload indexes and search params have no effect
            for field in PAYLOAD_INDEXES:
                client.create_payload_index("images", field, field_schema=models.PayloadSchemaType.KEYWORD)
            vectors, payloads = np.array([[1.0, i, 0, 0] for i in range(300)]), [{"path": f"p{i}"} for i in range(300)]
            client.upload_points("images", points=image_points(vectors, payloads), **SERVER_UPLOAD)
            hits = client.query_points("images", query=[1.0, 0, 0, 0], limit=3).points
        assert client.count("images").count == 300 and len(hits) == 3
        assert client.get_collection("images").config.params.vectors.on_disk is True
    finally:
        client.close()
