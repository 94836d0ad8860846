"""Measure the notebook's Qdrant server settings on Qdrant's own engine, against exact search.

    python benchmarks/server_settings.py --quick --json out.json   # 1,750 vectors and 20,000 synthetic ones
    python benchmarks/server_settings.py --json results.json       # 10,500 vectors and 100,000 synthetic ones
    python benchmarks/server_settings.py --quick --weights ../shared/weights/resnet50-augnet-backbone.pth

No Qdrant server runs on this project's machines, and local mode ignores HNSW and quantization (its search
is exact). `qdrant-edge-py` runs Qdrant's shard engine in this process: the same HNSW index, int8 scalar
quantization and rescoring as a server. Its classes are not qdrant-client's, so the settings in
`imgsim/store.py` (SERVER_COLLECTION, whose `ef_construct` is also the notebook's search ef, with int8
quantization, INT8_QUANTIZATION, and the queries' SERVER_SEARCH, INT8_SEARCH; and the same HNSW settings with
float32 vectors, the alternative) are translated field by field, never copied.

The vectors come from the notebook's own pipeline, with `--weights` (anything IMGSIM_WEIGHTS takes: random,
`none`, by default; decide settings on trained weights, since random ones crowd every pair near 0.998 raw
cosine, int8's worst case, and the tables name the weights that made them): each photo of the shared folder
read and embedded as the notebook does it; a mild copy of it made in memory (half size, JPEG quality 40 or a
5 % crop, the edits the calibration plants: a near-duplicate), read and embedded the same way; and several
views of it, other pictures for this purpose: each the pooled vector of a window of 3 to 5 by 3 to 5 cells of
the photo's 7 x 7 last feature map, which is what the model makes of that part of the photo, without the cost
of another forward pass (embedding 10,000 images takes hours on this shared machine). They go into an
EdgeShard with float32 vectors and into one with int8, are indexed, and are measured against exact numpy search:

- HNSW recall@10 at the notebook's HNSW settings with float32 vectors, and at other hnsw_ef values;
- int8 with rescoring (at several oversampling factors) and without: top-10 agreement with exact search
  and the error of the scores;
- the near-duplicate pairs found the way the `qdrant` neighbour source finds them (the engine's candidates
  re-scored centred), with float32 vectors and with int8 (rescored at each oversampling, and not
  rescored), against the exact all-pairs path, at a threshold chosen from the exact path's answers, and the
  threshold that the same choice makes from each engine's answers;
- index build time, and per-query latency against qdrant-client local mode on the same vectors;
- load time and resident memory of the shards and of local mode, each opened in a fresh process, with the
  real vectors and with synthetic ones of the same mean and covariance at 100,000 (20,000 with --quick),
  where int8's top-10 agreement is measured again at each oversampling.

The threshold is not chosen by `imgsim.calibration.calibrate` (which needs files, a client and a scratch
collection) but by its criterion, applied to every planted copy: the cut where the smaller of precision
and recall on the planted pairs is largest.
"""

import argparse
import hashlib
import io
import json
import multiprocessing
import shutil
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from importlib.metadata import version
from pathlib import Path

import numpy as np
import qdrant_edge as edge
import torch
from PIL import ImageOps
from qdrant_client import QdrantClient, models
from run import (
    DEFAULT_IMAGES,
    ROOT,
    benchmark_model,
    describe_machine,
    log,
    machine_info,
    parsed_weights,
    print_table,
    select_photos,
    weights_argument,
)

from imgsim.duplicates import similar_pairs
from imgsim.embedding import default_workers, embed_images
from imgsim.files import relative_key
from imgsim.model import RESNETS, default_batch_size, pick_device
from imgsim.neighbours import CANDIDATES, NEAREST_LOOKED_AT_FOR_PAIRS, QUERY_BATCH
from imgsim.reading import LoadedImage, decode_image, load_image, normalise_pixels, open_image
from imgsim.scoring import centre, score_blocks, top_columns
from imgsim.store import (
    INT8_QUANTIZATION,
    INT8_SEARCH,
    SERVER_COLLECTION,
    SERVER_UPLOAD,
    SERVER_VECTORS,
    image_points,
)

CACHE_DIR = ROOT / "data" / "benchmark_cache"
TOP_K = 10
# The notebook's collection on a server: DOT on unit vectors, and what ServerClient adds (vectors on disk).
NOTEBOOK_VECTORS = {"distance": models.Distance.DOT} | SERVER_VECTORS
# Server defaults that the edge classes need spelled out (qdrant-client leaves them to the server).
SERVER_DEFAULTS = {"hnsw_config": {"full_scan_threshold": 10_000}}  # KB, Qdrant's default
# store.py's server default: int8 scalar quantization in RAM, every query rescored (SERVER_SEARCH).
INT8_COLLECTION = SERVER_COLLECTION | {"quantization_config": INT8_QUANTIZATION}
# The float32 alternative: the server's HNSW settings, vectors unquantized (the "notebook" results in the JSON).
FLOAT32_COLLECTION = {name: value for name, value in SERVER_COLLECTION.items() if name != "quantization_config"}
INT8_PARAMS = models.SearchParams(quantization=INT8_SEARCH)
# float32 queries set no search params: the engine searches with the collection's ef_construct. (On a server the
# notebook's queries carry store.py's SERVER_SEARCH, INT8_PARAMS here, which sets no hnsw_ef either.)
NOTEBOOK_SEARCH = models.SearchParams()
NOTEBOOK_EF = SERVER_COLLECTION["hnsw_config"].ef_construct
HNSW_EF_CURVE = (16, 32, 64, 128, 256, 512)
OVERSAMPLING_CURVE = (1.0, 2.0, 4.0, 8.0, 16.0)
OVERSAMPLINGS = sorted({*OVERSAMPLING_CURVE, INT8_SEARCH.oversampling})  # int8 rescored at each
# photos, views of each, a mild copy of every `copy_every`-th photo; queries for accuracy and for latency
QUICK = {"photos": 250, "views": 5, "copy_every": 1, "queries": 500, "latency_queries": 100, "synthetic": 20_000}
FULL = {"photos": 1_000, "views": 9, "copy_every": 2, "queries": 1_000, "latency_queries": 200, "synthetic": 100_000}
VIEW_SIDES = (3, 4, 5)  # a view pools a window of 3 to 5 by 3 to 5 cells of the 7 x 7 feature map
# Local mode held about 115 KB per 2048-d point once loaded (2.3 GB at 20,000, quick run): 100,000 would take
# 11 GB of this machine's 24 GB, shared with four other sessions, so it is measured on 20,000 at most.
LOCAL_MODE_MAX_POINTS = 20_000
# Local mode commits each point to SQLite on its own (one fsync each, about 50 points/s on this VM's disk):
# it is built on a RAM disk where there is one, so that its build time is qdrant-client's, not the disk's.
RAM_DISK = "/dev/shm" if Path("/dev/shm").is_dir() else None


# --- the server settings, translated to qdrant-edge ---------------------------------------------------


def edge_enum(enum_type, client_value):
    """The qdrant-edge member named like a qdrant-client enum value (DOT -> Dot, int8 -> Int8)."""
    return getattr(enum_type, str(client_value.value if hasattr(client_value, "value") else client_value).title())


def edge_config(size: int, collection: dict = FLOAT32_COLLECTION, vectors: dict = NOTEBOOK_VECTORS) -> edge.EdgeConfig:
    """An EdgeConfig with the same settings as a server collection created with `collection` and `vectors`.

    Every field that qdrant-client sets is passed on under the same name (the edge classes keep the client's
    on_disk and always_ram flags), so a setting added to store.py reaches the shard or fails here loudly.
    """
    if unknown := set(collection) - {"hnsw_config", "quantization_config"}:
        raise ValueError(f"no translation to qdrant-edge for the server setting(s) {sorted(unknown)}")
    hnsw = SERVER_DEFAULTS["hnsw_config"] | collection["hnsw_config"].model_dump(exclude_none=True)
    quantization = None
    if "quantization_config" in collection:
        scalar = collection["quantization_config"].scalar.model_dump(exclude_none=True)
        quantization = edge.ScalarQuantizationConfig(**scalar | {"type": edge_enum(edge.ScalarType, scalar["type"])})
    return edge.EdgeConfig(
        vectors=edge.EdgeVectorParams(
            size=size, distance=edge_enum(edge.Distance, vectors["distance"]), on_disk=vectors["on_disk"]
        ),
        hnsw_config=edge.HnswIndexConfig(**hnsw),
        quantization_config=quantization,
    )


def edge_search(params: models.SearchParams = NOTEBOOK_SEARCH, **changes) -> edge.SearchParams:
    """Edge SearchParams equal to qdrant-client's `params`, with `changes` (e.g. hnsw_ef=64, rescore=False)."""
    fields = params.model_dump(exclude_none=True)
    quantization = fields.pop("quantization", None)
    for name in ("rescore", "oversampling", "ignore"):
        if name in changes:
            quantization = (quantization or {}) | {name: changes.pop(name)}
    fields |= changes
    return edge.SearchParams(**fields, quantization=quantization and edge.QuantizationSearchParams(**quantization))


# --- vectors from the notebook's pipeline -------------------------------------------------------------------


def view_windows(side: int) -> list[tuple[int, int, int, int]]:
    """(top, left, height, width) of every window of VIEW_SIDES cells in a side x side feature map."""
    sides = [length for length in VIEW_SIDES if length < side]
    return [
        (top, left, h, w) for h in sides for w in sides for top in range(side - h + 1) for left in range(side - w + 1)
    ]


@torch.inference_mode()
def feature_maps(model, images, preprocess, device) -> torch.Tensor:
    """The batch's last feature maps (B x C x 7 x 7 at 224 x 224): what the ResNet's average pool reduces to
    the notebook's vectors, computed with the notebook's normalisation and memory layout."""
    pixels = torch.stack([image.pixels for image in images]).to(device)
    features = normalise_pixels(pixels, preprocess).contiguous(memory_format=torch.channels_last)
    for layer in list(model.children())[:-2]:  # torchvision ResNet: conv1 ... layer4, then avgpool and fc
        features = layer(features)
    return features.float()


def pooled(maps: torch.Tensor) -> np.ndarray:
    """Unit vectors from feature maps, as the model's average pool and the notebook's normalisation make them."""
    return torch.nn.functional.normalize(maps.mean(dim=(2, 3)), dim=1).cpu().numpy()


MILD_COPIES = {  # the edits imgsim/calibration.py plants: (edit, JPEG quality)
    "resized": (lambda image: image.resize((max(1, image.width // 2), max(1, image.height // 2))), 90),
    "reencoded": (lambda image: image, 40),
    "cropped": (lambda image: ImageOps.crop(image, (round(image.width * 0.025), round(image.height * 0.025))), 90),
}


def mild_copy(number: int, path: Path, folder: Path, preprocess) -> LoadedImage:
    """A near-duplicate of the photo, made in memory (the kinds in turn) and read as the notebook reads a file."""
    image, _ = open_image(path.read_bytes())
    kind = list(MILD_COPIES)[number % len(MILD_COPIES)]
    edit, quality = MILD_COPIES[kind]
    out = io.BytesIO()
    edit(image).save(out, "JPEG", quality=quality)
    return decode_image(out.getvalue(), Path(f"{relative_key(path, folder)}#copy-{kind}"), preprocess)


def embed_families(args, counts: dict, device, extractor) -> tuple[list[str], np.ndarray]:
    """Keys and unit vectors of each photo, its views and its mild copy; cached on disk for later runs.

    Photos and copies are read and embedded as the notebook reads and embeds files (the first batch is
    checked against `embed_images`); a view is the pooled vector of a window of its photo's feature map.
    """
    photos = select_photos(args.images, counts["photos"])
    model, preprocess, _, weights_id = extractor
    recipe = [str(args.images.resolve()), args.model, counts, VIEW_SIDES, list(MILD_COPIES), "v2"]
    recipe = json.dumps(recipe + [weights_id] * (args.weights != "none"))  # random: the caches made before
    cache = CACHE_DIR / f"server_settings-{args.model}-{hashlib.sha256(recipe.encode()).hexdigest()[:12]}.npz"
    if cache.exists():
        saved = np.load(cache)
        log(f"vectors read from {cache}")
        return saved["keys"].tolist(), saved["vectors"]
    keys, vectors, started = [], [], time.perf_counter()
    with ThreadPoolExecutor(args.workers) as pool:
        for start in range(0, len(photos), args.batch_size):
            batch = list(enumerate(photos[start : start + args.batch_size], start))
            loaded = list(pool.map(lambda item: load_image(item[1], preprocess), batch))
            copies = list(
                pool.map(lambda item: mild_copy(*item, args.images, preprocess), batch[:: counts["copy_every"]])
            )
            if failed := [image for image in loaded + copies if image.error]:
                raise SystemExit(f"could not read {failed[0].path}: {failed[0].error}")
            maps = feature_maps(model, loaded, preprocess, device)
            if start == 0 and not np.allclose(pooled(maps), embed_images(model, loaded, preprocess, device), atol=1e-5):
                raise SystemExit("pooled feature maps differ from the notebook's vectors: the model is not a ResNet")
            windows = view_windows(maps.shape[-1])
            for (number, path), photo_maps in zip(batch, maps, strict=True):
                chosen = np.random.default_rng(number).permutation(len(windows))[: counts["views"]]
                views = [
                    photo_maps[:, top : top + h, left : left + w] for top, left, h, w in (windows[i] for i in chosen)
                ]
                key = relative_key(path, args.images)
                keys += [key] + [f"{key}#view{view}" for view in range(1, len(views) + 1)]
                vectors += [pooled(photo_maps[None]), *(pooled(view[None]) for view in views)]
            keys += [str(image.path) for image in copies]
            vectors.append(embed_images(model, copies, preprocess, device))
            if (start // args.batch_size) % 25 == 0:
                rate = (start + len(batch)) / (time.perf_counter() - started)
                log(f"embedded {start + len(batch):,} of {len(photos):,} photos and their copies ({rate:.1f} photos/s)")
    vectors = np.concatenate(vectors)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, keys=np.array(keys), vectors=vectors)
    log(f"{len(keys):,} vectors cached in {cache}")
    return keys, vectors


def planted_pairs(keys: list[str]) -> set[tuple[int, int]]:
    """(photo row, its mild copy's row) for every photo."""
    rows = {key: row for row, key in enumerate(keys)}
    return {tuple(sorted((rows[key.split("#")[0]], row))) for row, key in enumerate(keys) if "#copy-" in key}


def synthetic_like(vectors: np.ndarray, count: int, seed: int = 0) -> np.ndarray:
    """`count` unit vectors drawn from a Gaussian with the mean and covariance of `vectors`, normalised."""
    mean = vectors.mean(axis=0, dtype=np.float64)
    spread = np.cov(vectors, rowvar=False, dtype=np.float64)
    values, axes = np.linalg.eigh(spread)
    scale = (axes * np.sqrt(np.clip(values, 0, None))).T.astype(np.float32)
    rng, made = np.random.default_rng(seed), []
    for start in range(0, count, 10_000):
        block = rng.standard_normal((min(10_000, count - start), len(mean)), dtype=np.float32) @ scale + mean
        made.append((block / np.linalg.norm(block, axis=1, keepdims=True)).astype(np.float32))
    return np.concatenate(made)


def spread_of(vectors: np.ndarray, sample: int = 1_000) -> dict:
    """How tightly the vectors crowd: raw scores with the mean direction, with the nearest and with any other."""
    pool = vectors[:20_000]
    rows = np.random.default_rng(1).permutation(len(pool))[:sample]
    scores = pool[rows] @ pool.T
    scores[np.arange(len(rows)), rows] = -np.inf
    mean = vectors.mean(axis=0)
    return {
        "score_with_mean_direction": float(np.mean(pool[rows] @ (mean / np.linalg.norm(mean)))),
        "nearest_raw_score_median": float(np.median(scores.max(axis=1))),
        "raw_score_median": float(np.median(scores[np.isfinite(scores)])),
    }


# --- the engine and local mode ------------------------------------------------------------------------------


def build_shard(path: Path, vectors: np.ndarray, keys=None, collection: dict = FLOAT32_COLLECTION):
    """An EdgeShard at `path` with a server collection's settings, filled in upload-sized batches and indexed."""
    shard = edge.EdgeShard.create(str(path), edge_config(vectors.shape[1], collection))
    batch_size, upserted = SERVER_UPLOAD["batch_size"], 0.0
    for start in range(0, len(vectors), batch_size):
        rows = range(start, min(start + batch_size, len(vectors)))
        points = [edge.Point(row, vectors[row].tolist(), {"path": keys[row] if keys else str(row)}) for row in rows]
        started = time.perf_counter()
        shard.update(edge.UpdateOperation.upsert_points(points))
        upserted += time.perf_counter() - started
    started = time.perf_counter()
    shard.optimize()
    indexed = time.perf_counter() - started
    info = shard.info()
    return shard, {
        "upsert_s": upserted,
        "index_s": indexed,
        "segments": info.segments_count,
        "indexed_vectors": info.indexed_vectors_count,
        "points": info.points_count,
    }


def build_local(path: Path, vectors: np.ndarray) -> dict:
    """A local-mode collection at `path` filled as the notebook fills it (upsert, batch by batch)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Local mode is not recommended")
        client = QdrantClient(path=str(path))
        size = vectors.shape[1]
        params = models.VectorParams(size=size, distance=NOTEBOOK_VECTORS["distance"], on_disk=False)
        client.create_collection("images", vectors_config=params)
        started = time.perf_counter()
        for start in range(0, len(vectors), 256):
            rows = range(start, min(start + 256, len(vectors)))
            payloads = [{"path": str(row)} for row in rows]
            client.upsert("images", points=image_points(vectors[rows.start : rows.stop], payloads))
        upserted = time.perf_counter() - started
        client.close()
    return {"upsert_s": upserted}


def engine_answers(shard, queries: np.ndarray, params, limit: int, leave_out=None) -> list[list[tuple[int, float]]]:
    """(row, engine score) of each query's `limit` best, asked in batches; a query's own row is left out."""
    found = []
    for start in range(0, len(queries), QUERY_BATCH):
        requests = [
            edge.QueryRequest(
                limit=limit + (leave_out is not None),
                query=edge.Query.Nearest(query.tolist()),
                params=params,
                with_payload=False,
                with_vector=False,
            )
            for query in queries[start : start + QUERY_BATCH]
        ]
        for number, points in enumerate(shard.query_batch(edge.QueryBatchRequest(requests)), start):
            own = None if leave_out is None else int(leave_out[number])
            found.append([(int(point.id), point.score) for point in points if point.id != own][:limit])
    return found


def exact_top(vectors: np.ndarray, rows: np.ndarray, count: int) -> np.ndarray:
    scores = vectors[rows] @ vectors.T
    scores[np.arange(len(rows)), rows] = -np.inf
    return top_columns(scores, count)


def agreement(vectors: np.ndarray, rows: np.ndarray, truth: np.ndarray, found) -> dict:
    """Share of the exact top-10 that the engine returned, and how far its scores are from exact ones."""
    hits, errors, spreads = [], [], []
    for query, exact, answers in zip(rows, truth, found, strict=True):
        hits.append(len(set(exact.tolist()) & {row for row, _ in answers}) / len(exact))
        ids = np.array([row for row, _ in answers], dtype=int)
        errors += np.abs(np.array([score for _, score in answers]) - vectors[ids] @ vectors[query]).tolist()
        exact_scores = vectors[exact] @ vectors[query]
        spreads.append(exact_scores[0] - exact_scores[-1])
    errors = np.array(errors)
    return {
        "top10_agreement": float(np.mean(hits)),
        "score_error_mean": float(errors.mean()),
        "score_error_max": float(errors.max()),
        "top10_score_spread_median": float(np.median(spreads)),
    }


def latencies_ms(ask, queries: np.ndarray) -> dict:
    for query in queries[:3]:
        ask(query)
    spent = []
    for query in queries:
        started = time.perf_counter()
        ask(query)
        spent.append(time.perf_counter() - started)
    spent = np.array(spent) * 1000
    return {"query_p50_ms": float(np.percentile(spent, 50)), "query_p95_ms": float(np.percentile(spent, 95))}


def memory_kb() -> dict:
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return {name: int(fields[name].split()[0]) for name in ("VmRSS", "RssAnon", "RssFile", "VmHWM")}


def open_and_query(kind: str, path: str, queries_file: str) -> dict:
    """Open the store at `path` and query it; load time, latency, and what that added to memory (MB)."""
    queries = np.load(queries_file)
    before = memory_kb()
    started = time.perf_counter()
    if kind == "edge":
        shard, params = edge.EdgeShard.load(path), edge_search(INT8_PARAMS if "int8" in path else NOTEBOOK_SEARCH)

        def ask(query):
            return shard.query(edge.QueryRequest(limit=TOP_K, query=edge.Query.Nearest(query.tolist()), params=params))
    else:
        warnings.filterwarnings("ignore", message="Local mode is not recommended")
        client = QdrantClient(path=path)

        def ask(query):
            return client.query_points("images", query=query.tolist(), limit=TOP_K).points

    loaded_s = time.perf_counter() - started
    loaded = memory_kb()
    timed = latencies_ms(ask, queries)
    after = memory_kb()
    return {
        "load_s": loaded_s,
        **timed,
        "rss_after_load_mb": (loaded["VmRSS"] - before["VmRSS"]) / 1024,
        "rss_after_queries_mb": (after["VmRSS"] - before["VmRSS"]) / 1024,
        "anon_after_queries_mb": (after["RssAnon"] - before["RssAnon"]) / 1024,
        "file_after_queries_mb": (after["RssFile"] - before["RssFile"]) / 1024,
        "peak_mb": (after["VmHWM"] - before["VmRSS"]) / 1024,
    }


def in_fresh_process(kind: str, path: Path, queries: np.ndarray) -> dict:
    """`open_and_query` in a new Python process, so that what it adds to memory is the store's alone."""
    queries_file = path.parent / f"{path.name}-queries.npy"
    np.save(queries_file, queries)
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        measured = pool.submit(open_and_query, kind, str(path), str(queries_file)).result()
    return measured | {"disk_mb": disk_bytes(path) / 2**20}


def disk_bytes(path: Path) -> int:
    """Bytes the store takes on disk, its write-ahead log (preallocated, emptied as it goes) left out."""
    files = (f for f in path.rglob("*") if f.is_file() and "wal" not in f.relative_to(path).parts)
    return sum(f.stat().st_blocks * 512 for f in files)


# --- near-duplicates -----------------------------------------------------------------------------------------


def exact_links(centred: np.ndarray) -> dict[tuple[int, int], float]:
    """Each image's NEAREST_LOOKED_AT_FOR_PAIRS nearest others by centred score, as the exact path sees them."""
    links = {}
    for rows, scores in score_blocks(centred, block_rows=512):
        for row, columns in zip(rows, top_columns(scores, NEAREST_LOOKED_AT_FOR_PAIRS), strict=True):
            links |= {tuple(sorted((int(row), int(col)))): float(scores[row - rows[0], col]) for col in columns}
    return links


def engine_links(shard, params, vectors: np.ndarray, centred: np.ndarray) -> tuple[dict, float]:
    """The `qdrant` neighbour source's method: the engine's NEAREST_LOOKED_AT_FOR_PAIRS x CANDIDATES candidates per
    image, re-scored centred, the best NEAREST_LOOKED_AT_FOR_PAIRS kept. The candidates' vectors are the stored
    float32 ones (checked in `run`), so they are taken from `vectors` rather than sent back by the engine."""
    started, links = time.perf_counter(), {}
    rows = np.arange(len(vectors))
    answers = engine_answers(shard, vectors, params, NEAREST_LOOKED_AT_FOR_PAIRS * CANDIDATES, leave_out=rows)
    for row, found in zip(rows, answers, strict=True):
        ids = np.array([other for other, _ in found], dtype=int)
        scores = centred[ids] @ centred[row]
        for i in np.argsort(-scores)[:NEAREST_LOOKED_AT_FOR_PAIRS]:
            links[tuple(sorted((int(row), int(ids[i]))))] = float(scores[i])
    return links, time.perf_counter() - started


def best_threshold(links: dict[tuple[int, int], float], planted: set[tuple[int, int]]) -> dict:
    """The calibration's criterion on every planted copy: the cut where min(precision, recall) is largest
    (ties: the middle of the best run), precision and recall counted on the planted pairs among `links`."""
    pairs = sorted(links, key=links.get, reverse=True)
    scores = np.array([links[pair] for pair in pairs])
    right = np.cumsum([pair in planted for pair in pairs])  # planted pairs among the best 1, 2, ... links
    precision, recall = right / np.arange(1, len(pairs) + 1), right / len(planted)
    quality = np.round(np.minimum(precision, recall), 6)
    best = np.flatnonzero(quality == quality.max())
    cut = best[len(best) // 2]  # the best `cut + 1` links are kept
    below = scores[cut + 1] if cut + 1 < len(scores) else scores[cut] - 1e-3
    return {
        "threshold": float((scores[cut] + below) / 2),
        "precision": float(precision[cut]),
        "recall": float(recall[cut]),
    }


def pairs_at(links: dict[tuple[int, int], float], threshold: float) -> set[tuple[int, int]]:
    return {pair for pair, score in links.items() if score >= threshold}


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a | b else 1.0


def duplicates(vectors: np.ndarray, planted: set, engines: dict) -> dict:
    """Pairs at the threshold chosen from exact answers: the exact all-pairs path, and each engine's
    (name: (shard, search params)) candidates re-scored centred; and the threshold each one's answers choose."""
    centred = centre(vectors, vectors.mean(axis=0))
    exact_choice = best_threshold(exact_links(centred), planted)
    threshold = exact_choice["threshold"]
    exact_pairs = {(i, j) for i, j, _ in similar_pairs(centred, threshold)[0]}  # ExactNeighbours.pairs_above
    result = {
        "threshold_from_exact": exact_choice,
        "exact_pairs": len(exact_pairs),
        "planted_pairs": len(planted),
        "planted_found_exact": len(exact_pairs & planted),
    }
    for name, (shard, params) in engines.items():
        links, engine_s = engine_links(shard, params, vectors, centred)
        engine_choice = best_threshold(links, planted)
        engine_pairs = pairs_at(links, threshold)
        result[name] = {
            "threshold_from_engine": engine_choice,
            "engine_pairs": len(engine_pairs),
            "pairs_jaccard": jaccard(exact_pairs, engine_pairs),
            "pairs_jaccard_each_own_threshold": jaccard(exact_pairs, pairs_at(links, engine_choice["threshold"])),
            "planted_found_engine": len(engine_pairs & planted),
            "engine_scan_s": engine_s,
        }
    return result


# --- the run -----------------------------------------------------------------------------------------------


def accuracy(shard, int8_shard, vectors: np.ndarray, rows: np.ndarray) -> dict:
    """Top-10 agreement and score error against exact search: float32 HNSW, and int8 quantization."""
    truth = exact_top(vectors, rows, TOP_K)
    queries = vectors[rows]

    def measure(on, params, **changes) -> dict:
        return agreement(vectors, rows, truth, engine_answers(on, queries, edge_search(params, **changes), TOP_K, rows))

    def timed(on, params, **changes) -> dict:
        started = time.perf_counter()
        measured = measure(on, params, **changes)
        return measured | {"batched_ms_per_query": (time.perf_counter() - started) * 1000 / len(rows)}

    efs = sorted({*HNSW_EF_CURVE, NOTEBOOK_EF})
    return {
        "curve": {ef: measure(shard, NOTEBOOK_SEARCH, hnsw_ef=ef)["top10_agreement"] for ef in efs},
        "notebook": timed(shard, NOTEBOOK_SEARCH),
        "exact": measure(shard, NOTEBOOK_SEARCH, exact=True),
        "int8_rescored": measure(int8_shard, INT8_PARAMS),
        "int8_unrescored": measure(int8_shard, INT8_PARAMS, rescore=False),
        "int8_quantization_ignored": measure(int8_shard, INT8_PARAMS, ignore=True),
        "int8_oversampling_curve": {x: timed(int8_shard, INT8_PARAMS, oversampling=x) for x in OVERSAMPLINGS},
    }


def stores(folders: tuple[Path, Path], name: str, built: dict, vectors, queries: np.ndarray, int8_built=None) -> dict:
    """The closed shard folders[0]/name (and name-int8) opened in a fresh process; the same for local mode, built
    in folders[1] with at most LOCAL_MODE_MAX_POINTS of the vectors."""
    shard_folder, local_folder = folders
    result = {"points": len(vectors), "edge_build": built}
    result["edge"] = in_fresh_process("edge", shard_folder / name, queries)
    if int8_built:
        result["int8_build"] = int8_built
        result["int8"] = in_fresh_process("edge", shard_folder / f"{name}-int8", queries)
    result["local_points"] = min(len(vectors), LOCAL_MODE_MAX_POINTS)
    result["local_build"] = build_local(local_folder / name, vectors[:LOCAL_MODE_MAX_POINTS])
    result["local"] = in_fresh_process("local", local_folder / name, queries)
    shutil.rmtree(local_folder / name)
    return result


def run(args, device) -> dict:
    counts = QUICK if args.quick else FULL
    extractor = benchmark_model(args.model, args.weights, device)
    keys, vectors = embed_families(args, counts, device, extractor)
    rng = np.random.default_rng(0)
    rows = np.sort(rng.permutation(len(vectors))[: counts["queries"]])
    latency_queries = vectors[rng.permutation(len(vectors))[: counts["latency_queries"]]]
    copies = sum("#copy-" in key for key in keys)
    results = {
        "weights": extractor[3],
        "points": len(vectors),
        "photos": counts["photos"],
        "views_per_photo": counts["views"],
        "copies": copies,
    }
    with (
        tempfile.TemporaryDirectory(prefix="server_settings-") as scratch,
        tempfile.TemporaryDirectory(prefix="server_settings-", dir=RAM_DISK) as ram_scratch,
    ):
        folder, folders = Path(scratch), (Path(scratch), Path(ram_scratch))
        log(f"engine: {len(vectors):,} vectors into an EdgeShard with the server's HNSW settings, float32")
        shard, built = build_shard(folder / "real", vectors, keys)
        log(f"engine: the same into an EdgeShard with int8 quantization ({INT8_SEARCH})")
        int8_shard, int8_built = build_shard(folder / "real-int8", vectors, keys, INT8_COLLECTION)
        returned = shard.retrieve(rows[:20].tolist(), with_payload=False, with_vector=True)
        results["returned_vector_max_difference"] = float(
            max(np.abs(np.array(record.vector) - vectors[int(record.id)]).max() for record in returned)
        )
        log(f"accuracy against exact search on {len(rows):,} queries, setting by setting")
        results["accuracy"] = accuracy(shard, int8_shard, vectors, rows)
        log(f"near-duplicates: the qdrant neighbour method over all {len(vectors):,} images against exact pairs")
        engines = {"notebook": (shard, edge_search()), "int8": (int8_shard, edge_search(INT8_PARAMS))}
        engines |= {
            f"int8 oversampling={x}": (int8_shard, edge_search(INT8_PARAMS, oversampling=x)) for x in OVERSAMPLINGS
        }
        engines["int8 not rescored"] = (int8_shard, edge_search(INT8_PARAMS, rescore=False))
        results["duplicates"] = duplicates(vectors, planted_pairs(keys), engines)
        shard.close()
        int8_shard.close()
        log("load time, latency and memory of the shards and of local mode, each opened in a fresh process")
        results["stores"] = {"real": stores(folders, "real", built, vectors, latency_queries, int8_built)}
        shutil.rmtree(folder / "real")
        shutil.rmtree(folder / "real-int8")
        synthetic = synthetic_like(vectors, counts["synthetic"])
        results["spread"] = {"real": spread_of(vectors), "synthetic": spread_of(synthetic)}
        log(f"synthetic: {len(synthetic):,} vectors of the same mean and covariance into an EdgeShard")
        shard, built = build_shard(folder / "synthetic", synthetic)
        synthetic_rows = np.sort(rng.permutation(len(synthetic))[: counts["queries"]])
        truth = exact_top(synthetic, synthetic_rows, TOP_K)
        found = engine_answers(shard, synthetic[synthetic_rows], edge_search(), TOP_K, synthetic_rows)
        results["synthetic_accuracy"] = agreement(synthetic, synthetic_rows, truth, found)
        shard.close()
        log("synthetic: the same into an EdgeShard with int8 quantization, rescored at each oversampling and not")
        int8_shard, int8_built = build_shard(folder / "synthetic-int8", synthetic, collection=INT8_COLLECTION)

        def int8_agreement(**changes) -> float:
            asked = edge_search(INT8_PARAMS, **changes)
            found = engine_answers(int8_shard, synthetic[synthetic_rows], asked, TOP_K, synthetic_rows)
            return agreement(synthetic, synthetic_rows, truth, found)["top10_agreement"]

        results["synthetic_int8_top10_agreement"] = {
            "not rescored": int8_agreement(rescore=False),
            **{f"rescored, oversampling={x}": int8_agreement(oversampling=x) for x in OVERSAMPLINGS},
        }
        int8_shard.close()
        log("synthetic: load time, latency and memory of the shards and of local mode")
        queries = synthetic[rng.permutation(len(synthetic))[: counts["latency_queries"]]]
        results["stores"]["synthetic"] = stores(folders, "synthetic", built, synthetic, queries, int8_built)
    results |= {
        "hnsw_recall_at_10": results["accuracy"]["notebook"]["top10_agreement"],
        "rescored_top10_agreement": results["accuracy"]["int8_rescored"]["top10_agreement"],
        "unrescored_top10_agreement": results["accuracy"]["int8_unrescored"]["top10_agreement"],
        "duplicate_pairs_jaccard": results["duplicates"]["notebook"]["pairs_jaccard"],
        "int8_duplicate_pairs_jaccard": results["duplicates"]["int8"]["pairs_jaccard"],
    }
    return results


def report(args, machine: dict, results: dict) -> None:
    print(describe_machine(machine))
    print(
        f"Engine: {results['engine']}; model {args.model}, weights {results['weights']}, {results['points']:,} vectors "
        f"({results['photos']} photos, {results['views_per_photo']} views of each, {results['copies']} mild copies)"
    )
    build = results["stores"]["real"]["edge_build"]
    unindexed = " (the rest lie in segments below the indexing threshold: searched exactly, as on a server)"
    print(
        f"Shard: {build['segments']} segments, {build['indexed_vectors']:,} of {build['points']:,} vectors in HNSW "
        f"graphs{unindexed * (build['indexed_vectors'] < build['points'])}; returned vectors differ from the stored "
        f"ones by at most {results['returned_vector_max_difference']:.1e}\n"
    )
    accuracy_, ef = results["accuracy"], NOTEBOOK_EF
    rows = [[f"float32 HNSW, hnsw_ef={value}", f"{agreed:.4f}", "", ""] for value, agreed in accuracy_["curve"].items()]
    for name, label in (
        ("notebook", f"float32 vectors (no hnsw_ef: ef_construct={ef})"),
        ("exact", "exact=True (the engine scans every vector)"),
        (
            "int8_rescored",
            f"int8, rescored (oversampling={INT8_SEARCH.oversampling}: the server default; hnsw_ef={ef})",
        ),
        ("int8_unrescored", f"int8 quantization, not rescored (hnsw_ef={ef})"),
        ("int8_quantization_ignored", f"int8 collection, quantization ignored at query time (hnsw_ef={ef})"),
    ):
        measured = accuracy_[name]
        agreed, mean, most = measured["top10_agreement"], measured["score_error_mean"], measured["score_error_max"]
        rows.append([label, f"{agreed:.4f}", f"{mean:.2e}", f"{most:.2e}"])
    print_table(["top-10 against exact search", "agreement", "score error mean", "max"], rows)
    print()
    rows = [
        [
            f"float32 (ef_construct={ef})",
            f"{accuracy_['notebook']['top10_agreement']:.4f}",
            f"{accuracy_['notebook']['batched_ms_per_query']:.2f}",
        ]
    ]
    rows += [
        [f"int8, rescored, oversampling={x}", f"{m['top10_agreement']:.4f}", f"{m['batched_ms_per_query']:.2f}"]
        for x, m in accuracy_["int8_oversampling_curve"].items()
    ]
    print_table(["", "top-10 agreement", "ms per query (in batches)"], rows)
    spread = accuracy_["notebook"]["top10_score_spread_median"]
    print(f"(exact scores of a query's 1st and 10th neighbours differ by {spread:.2e}, median)\n")
    dup = results["duplicates"]
    exact_t = dup["threshold_from_exact"]
    print(
        f"Near-duplicates at the threshold chosen from exact answers, {exact_t['threshold']:.4f} (planted pairs: "
        f"precision {exact_t['precision']:.3f}, recall {exact_t['recall']:.3f}); exact all-pairs: "
        f"{dup['exact_pairs']:,} pairs, {dup['planted_found_exact']} of {dup['planted_pairs']} planted"
    )
    for name in [name for name in dup if isinstance(dup[name], dict) and "pairs_jaccard" in dup[name]]:
        engine, chosen = dup[name], dup[name]["threshold_from_engine"]
        print(
            f"  {name}: engine + centred re-scoring {engine['engine_pairs']:,} pairs, {engine['planted_found_engine']} "
            f"planted; Jaccard {engine['pairs_jaccard']:.4f}; threshold from its answers {chosen['threshold']:.4f} "
            f"(precision {chosen['precision']:.3f}, recall {chosen['recall']:.3f}), Jaccard at each path's own "
            f"threshold {engine['pairs_jaccard_each_own_threshold']:.4f}; scan {engine['engine_scan_s']:.1f} s"
        )
    print()
    rows = []
    kinds = (("edge", "Qdrant Edge, float32"), ("int8", "Qdrant Edge, int8 (rescored)"), ("local", "local mode"))
    for name, store_set in results["stores"].items():
        for kind, label in kinds:
            if kind not in store_set:
                continue
            measured, built = store_set[kind], store_set.get(f"{kind}_build", store_set["edge_build"])
            points = f"{store_set['local_points' if kind == 'local' else 'points']:,} {name}"
            index = f" (index {built['index_s']:.1f})" if "index_s" in built else ""
            rows.append(
                [
                    points,
                    label,
                    f"{built['upsert_s'] + built.get('index_s', 0):.1f}{index}",
                    f"{measured['load_s']:.2f}",
                    f"{measured['query_p50_ms']:.2f}",
                    f"{measured['query_p95_ms']:.2f}",
                    f"{measured['anon_after_queries_mb']:.0f} + {measured['file_after_queries_mb']:.0f}",
                    f"{measured['disk_mb']:.0f}",
                ]
            )
    print_table(
        ["vectors", "store", "build s", "load s", "top-10 p50 ms", "p95 ms", "RSS MB (anon + file)", "disk MB"], rows
    )
    print(f"\nspread (raw scores): {json.dumps(results['spread'])}")
    print(f"synthetic recall@10, float32 HNSW: {results['synthetic_accuracy']['top10_agreement']:.4f}")
    int8_curve = ", ".join(f"{name} {agreed:.4f}" for name, agreed in results["synthetic_int8_top10_agreement"].items())
    print(f"synthetic recall@10, int8: {int8_curve}")
    print(f"\nwall time {results['wall_s']:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer photos, views and synthetic vectors")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results to this JSON file")
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help="folder of photos")
    parser.add_argument("--model", default="resnet50", choices=RESNETS)
    parser.add_argument("--workers", type=int, default=default_workers(), help="image reading threads")
    weights_argument(parser)
    args = parser.parse_args()
    args.weights = parsed_weights(parser, args)
    device = pick_device("auto")
    args.batch_size = default_batch_size(device)
    machine = machine_info(device)
    started = time.perf_counter()
    results = {"engine": f"qdrant-edge-py {version('qdrant-edge-py')} (Qdrant's shard engine, in-process)"}
    results |= run(args, device)
    results["wall_s"] = time.perf_counter() - started
    report(args, machine, results)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        config = {"model": args.model, "weights": str(args.weights), "quick": args.quick}
        config |= {"torch_threads": torch.get_num_threads()}
        args.json.write_text(json.dumps({"machine": machine, "config": config, **results}, indent=2))
        print(f"results written to {args.json}")


if __name__ == "__main__":
    main()
