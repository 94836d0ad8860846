"""What a user sees with trained weights: copies of a picture rank first for it, a copy finds its original among
the shared photos, and the int8 server setting keeps the top-10 that the docs claim for it.

Random weights cannot show any of this (every pair scores about 0.998), so these tests take the trained ResNet-50
from the `trained_extractor` fixture and skip, saying why, where there is none. The copies are the ones the
calibration plants (`imgsim.calibration.COPY_KINDS`: half size, JPEG quality 40, a 5 % crop), made in memory.
The drawn pictures need nothing shared; the rest needs the shared photos.
"""

import io
import sys

import numpy as np
import pytest
import qdrant_edge as edge
import torch
from conftest import ROOT, SHARED_PHOTOS, draw_picture, jpeg_bytes
from PIL import Image
from qdrant_client import QdrantClient, models

from imgsim.calibration import COPY_KINDS
from imgsim.embedding import embed_images
from imgsim.files import find_images, relative_key, spread_sample
from imgsim.reading import decode_image, load_image
from imgsim.store import SERVER_COLLECTION, SERVER_SEARCH, image_points

sys.path.insert(0, str(ROOT / "benchmarks"))
import server_settings  # noqa: E402

CPU = torch.device("cpu")
PHOTOS = 60  # shared photos indexed, spread over the ten labels
ORIGINALS = 12  # of them, each copied three ways and used as queries
# A few 5 % crops fall off a cliff with these weights: on one coat photo the original scores 0.97 raw cosine with
# its 1.5 % crop and 0.51 with its 2 % crop, below every other photo. Measured on the benchmark's 250 photos
# (server_settings.py --quick), 81 of 83 cropped copies found their original first, every resized and re-encoded
# copy did; the test allows one crop in ORIGINALS to miss.
CROPS_MISSING_AT_MOST = 1
VIEWS = 4  # feature-map windows per photo (the benchmark's views): more vectors for the int8 check
# What store.py and the notebook claim for the server default, int8 rescored at INT8_SEARCH's oversampling: the
# same top 10 as exact search (1.0000 on 1,750 trained vectors, benchmarks/server_settings.py --quick --weights
# <the AugNet file>). On this test's 336 vectors it found 1.0000; not rescored, or at oversampling 1, 0.9952.
INT8_RESCORED_TOP10_CLAIM = 0.999

needs_photos = pytest.mark.skipif(not SHARED_PHOTOS.is_dir(), reason=f"no shared photos at {SHARED_PHOTOS}")


def copies_of(image: Image.Image) -> list[tuple[str, bytes]]:
    """(kind, JPEG bytes) of the three mild copies the calibration plants."""
    made = []
    for kind, (edit, quality) in COPY_KINDS.items():
        out = io.BytesIO()
        edit(image).save(out, "JPEG", quality=quality)
        made.append((kind, out.getvalue()))
    return made


def embed_bytes(extractor, named_bytes: list[tuple[str, bytes]]) -> np.ndarray:
    model, preprocess, _, _ = extractor
    loaded = [decode_image(data, name, preprocess) for name, data in named_bytes]
    assert not [image.error for image in loaded if image.error]
    return embed_images(model, loaded, preprocess, CPU)


def test_drawn_pictures_copies_rank_above_every_other_picture(trained_extractor):
    pictures = [draw_picture(seed) for seed in range(24)]
    vectors = embed_bytes(trained_extractor, [(f"{seed}.jpg", jpeg_bytes(p, 90)) for seed, p in enumerate(pictures)])
    for seed in (0, 7, 15):
        copies = embed_bytes(trained_extractor, copies_of(pictures[seed]))
        scores = copies @ vectors.T  # each copy against every picture, as a DOT collection scores it
        others = np.delete(scores, seed, axis=1)
        assert (scores[:, seed] > others.max(axis=1)).all(), f"picture {seed}: a copy found another picture first"


@pytest.fixture(scope="module")
def shared(trained_extractor):
    """Vectors of PHOTOS shared photos (the notebook's reading and model), their feature-map views, and the three
    copies of ORIGINALS of them: (keys, photo vectors, view vectors, {original key: copy vectors})."""
    if not SHARED_PHOTOS.is_dir():
        pytest.skip(f"no shared photos at {SHARED_PHOTOS}")
    model, preprocess, _, _ = trained_extractor
    paths = spread_sample(find_images(SHARED_PHOTOS), SHARED_PHOTOS, PHOTOS)
    keys = [relative_key(path, SHARED_PHOTOS) for path in paths]
    photos, views = [], []
    for start in range(0, len(paths), 24):
        loaded = [load_image(path, preprocess) for path in paths[start : start + 24]]
        maps = server_settings.feature_maps(model, loaded, preprocess, CPU)
        photos.append(server_settings.pooled(maps))  # equal to embed_images' vectors (the benchmark checks it)
        windows = server_settings.view_windows(maps.shape[-1])
        for number, photo_maps in enumerate(maps, start):
            for i in np.random.default_rng(number).permutation(len(windows))[:VIEWS]:
                top, left, h, w = windows[i]
                views.append(server_settings.pooled(photo_maps[None, :, top : top + h, left : left + w]))
    originals = paths[:: PHOTOS // ORIGINALS][:ORIGINALS]
    copies = {}
    for path in originals:
        with Image.open(path) as image:
            copies[relative_key(path, SHARED_PHOTOS)] = embed_bytes(trained_extractor, copies_of(image.convert("RGB")))
    return keys, np.concatenate(photos), np.concatenate(views), copies


@needs_photos
def test_shared_photos_copies_rank_above_every_other_photo(shared):
    keys, photos, _, copies = shared
    missed = {kind: [] for kind in server_settings.MILD_COPIES}
    for key, copy_vectors in copies.items():
        scores = copy_vectors @ photos.T
        own = keys.index(key)
        best_other = np.delete(scores, own, axis=1).max(axis=1)
        for kind, own_score, other in zip(missed, scores[:, own], best_other, strict=True):
            if own_score <= other:
                missed[kind].append(f"{key} ({own_score:.3f}, another photo {other:.3f})")
    assert missed["resized"] == [] and missed["reencoded"] == [], missed
    assert len(missed["cropped"]) <= CROPS_MISSING_AT_MOST, missed["cropped"]


@needs_photos
def test_a_copy_finds_its_original_first_among_the_shared_photos(shared, tmp_path):
    keys, photos, _, copies = shared
    client = QdrantClient(path=str(tmp_path / "qdrant"))
    client.create_collection("images", vectors_config=models.VectorParams(size=2048, distance=models.Distance.DOT))
    client.upsert("images", points=image_points(photos, [{"path": key} for key in keys]))
    for key, copy_vectors in copies.items():
        for copy_vector in copy_vectors:
            hits = client.query_points("images", query=copy_vector.tolist(), limit=5, with_payload=True).points
            assert hits[0].payload["path"] == key
    client.close()


@needs_photos
def test_int8_with_rescoring_keeps_the_top_10_the_docs_claim(shared, tmp_path):
    """Qdrant's engine (qdrant-edge, the stand-in for a server) with store.py's server settings (int8), indexed, and
    queried as the notebook's server client queries; top-10 against exact search."""
    keys, photos, views, copies = shared
    vectors = np.concatenate([photos, views, *copies.values()])
    int8 = server_settings.edge_config(vectors.shape[1], SERVER_COLLECTION)  # the server default: int8
    hnsw = int8.hnsw_config  # small as it is, the shard is searched through its HNSW graph, as at scale
    config = edge.EdgeConfig(
        vectors=int8.vectors[""],
        hnsw_config=edge.HnswIndexConfig(m=hnsw.m, ef_construct=hnsw.ef_construct, full_scan_threshold=1),
        quantization_config=int8.quantization_config,
        optimizers=edge.EdgeOptimizersConfig(indexing_threshold=1),
    )
    shard = edge.EdgeShard.create(str(tmp_path / "shard"), config)
    points = [edge.Point(row, vector.tolist(), {}) for row, vector in enumerate(vectors)]
    shard.update(edge.UpdateOperation.upsert_points(points))
    shard.optimize()
    assert shard.info().indexed_vectors_count == len(vectors)
    rows = np.arange(len(vectors))
    truth = server_settings.exact_top(vectors, rows, 10)

    params = server_settings.edge_search(SERVER_SEARCH)  # what a server client adds to every query
    found = server_settings.engine_answers(shard, vectors, params, 10, rows)
    shard.close()
    rescored = server_settings.agreement(vectors, rows, truth, found)["top10_agreement"]
    assert rescored >= INT8_RESCORED_TOP10_CLAIM, f"int8 rescored found {rescored:.4f} of the exact top-10"
    owner = [*range(len(photos)), *np.arange(len(views)) // VIEWS]  # the photo each row shows (views: parts of it)
    owner += [keys.index(key) for key in copies for _ in range(3)]
    for row in range(len(photos) + len(views), len(vectors)):  # each copy finds its original before other photos
        answers = [found_row for found_row, _ in found[row]]
        first_other = next((i for i, found_row in enumerate(answers) if owner[found_row] != owner[row]), 10)
        assert owner[row] in answers[:first_other], f"int8: a copy of {keys[owner[row]]} found another photo first"
