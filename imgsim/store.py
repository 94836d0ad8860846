"""Step 5, the Qdrant store: connecting, server settings, checking a collection, mirroring the folder.

Qdrant runs in this process by default (local mode, stored in a folder), or as a server when a URL is
given; the notebook's calls are the same. Connecting again (a cell run twice) closes the earlier client
of the same storage first: local mode locks its folder. Each point's id is a UUID5 of the image's relative
path, so writing it again overwrites it. `FolderSync` decides what a run must embed (new and changed
files), what it can keep (unchanged size and modification time), and which points to delete (files gone,
renamed or now unreadable), and builds each embedded batch's points (`image_points`, the one way points are
built); the notebook upserts them itself batch by batch as they are embedded, so an interrupted run keeps
its work. On a server, `connect` gives a `ServerClient`: a collection it creates gets the server settings
below (docs/scaling.md#server-settings says why these numbers), and its queries carry SERVER_SEARCH. Every
client times its upserts and queries for the run report.
"""

import atexit
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from qdrant_client import QdrantClient, models

from imgsim.files import is_inside, label_of, relative_key
from imgsim.reading import LoadedImage, describe_failure
from imgsim.timing import timings

# Settings for a Qdrant server (local mode accepts and ignores them; docs/scaling.md says why these numbers).
# The collection carries its HNSW search width: a query that sets no `hnsw_ef` looks at `ef_construct`
# candidates (Qdrant's HNSW index: `params.hnsw_ef.unwrap_or(config.ef)`, with `ef = ef_construct`; checked
# on Qdrant's engine by tests/test_server_settings.py).
# Vectors: int8 scalar quantization in RAM (2 KiB a 2048-d vector instead of 8; the float32 originals stay on
# disk), every query rescored on the originals. Decided on trained vectors (benchmarks/server_settings.py
# --quick --weights resnet50-augnet-backbone.pth: 1,750 vectors of the AugNet ResNet-50 on Qdrant's engine,
# qdrant-edge 0.9): rescored at oversampling 2 it found all of the exact top 10 (1.0000, as float32 did; 0.9932
# at oversampling 1 or not rescored), and the near-duplicate pairs agreed with exact search at Jaccard 1.0; on
# 20,000 synthetic vectors of their mean and covariance, 1.0000 at oversampling 2 and 4 (0.9798 not rescored),
# in 134 MB resident against float32's 212 MB. Oversampling 4 keeps a margin for far larger collections.
# Random weights had decided float32 before: every pair of their vectors scores about 0.99, int8's worst case,
# and on the same run with --weights none int8 rescored found 0.94 of the top 10 at oversampling 4 and 0.985
# at 8 (pairs: Jaccard 0.99). Tables: docs/scaling.md.
INT8_QUANTIZATION = models.ScalarQuantization(
    scalar=models.ScalarQuantizationConfig(type=models.ScalarType.INT8, quantile=0.99, always_ram=True)
)
INT8_SEARCH = models.QuantizationSearchParams(rescore=True, oversampling=4.0)
SERVER_COLLECTION = {
    "hnsw_config": models.HnswConfigDiff(m=16, ef_construct=200),
    "quantization_config": INT8_QUANTIZATION,
}
# Rescoring and oversampling are query settings: Qdrant keeps no collection default for them, and its engine
# does not rescore int8 unless asked (measured: a query without them scores on the int8 copies, 0.9932). So
# `connect` gives a server client (ServerClient) that adds SERVER_SEARCH to every query that sets none: no query
# can forget them.
SERVER_SEARCH = models.SearchParams(quantization=INT8_SEARCH)
SERVER_VECTORS = {"on_disk": True}  # the float32 originals on disk, read through the system's cache
PAYLOAD_INDEXES = ("label", "path", "model")
SERVER_UPLOAD = {"batch_size": 256, "parallel": 2}


OPEN_CLIENTS: dict[str, QdrantClient] = {}  # the client connected to each server URL or storage folder


def connect(url: str | None, api_key: str | None, path: Path) -> "TimedClient":
    """A client for the Qdrant server at `url`, or for local mode stored in `path`, closed when Python exits.

    A client this function gave earlier for the same place is closed first (local mode locks its folder, and
    a notebook cell may run again). Closing at exit, not in a last cell, keeps the client open for the search
    panel after "run all".
    """
    place = url or str(path.resolve())
    if earlier := OPEN_CLIENTS.pop(place, None):
        earlier.close()
    if url:
        print(f"Qdrant server at {url}" + (" (with API key)" if api_key else ""))
        client = ServerClient(url=url, api_key=api_key)
    else:
        path.mkdir(parents=True, exist_ok=True)
        print(f"embedded Qdrant (local mode) stored in {path}")
        try:
            client = TimedClient(path=str(path))
        except RuntimeError as error:
            if "already accessed" not in str(error):
                raise
            raise StorageHeld(path) from None
    atexit.register(client.close)
    OPEN_CLIENTS[place] = client
    return client


class TimedClient(QdrantClient):
    """A client whose upserts and queries add their time to the run report's timings."""

    def upsert(self, *args, **kwargs):
        with timings("upsert"):
            return super().upsert(*args, **kwargs)

    def query_points(self, *args, **kwargs):
        with timings("query"):
            return super().query_points(*args, **kwargs)


class ServerClient(TimedClient):
    """A client for a Qdrant server. The collections it creates get the server settings (SERVER_COLLECTION, vectors
    on disk, keyword indexes on PAYLOAD_INDEXES made before any upload); its queries carry SERVER_SEARCH (int8
    rescored, oversampled) unless they set search params of their own. In local mode, which ignores these with a
    warning, the plain client is used."""

    def create_collection(self, collection_name: str, vectors_config: models.VectorParams, **kwargs) -> bool:
        on_disk = vectors_config.model_copy(update=SERVER_VECTORS)
        created = super().create_collection(collection_name, vectors_config=on_disk, **SERVER_COLLECTION | kwargs)
        for field_name in PAYLOAD_INDEXES:  # before the bulk upload, so that filters stay fast
            self.create_payload_index(collection_name, field_name, field_schema=models.PayloadSchemaType.KEYWORD)
        return created

    def query_points(self, collection_name: str, *args, search_params=None, **kwargs):
        return super().query_points(collection_name, *args, search_params=search_params or SERVER_SEARCH, **kwargs)

    def query_points_groups(self, collection_name: str, group_by: str, *args, search_params=None, **kwargs):
        searched = search_params or SERVER_SEARCH
        return super().query_points_groups(collection_name, group_by, *args, search_params=searched, **kwargs)

    def query_batch_points(self, collection_name: str, requests, *args, **kwargs):
        requests = [request.model_copy(update={"params": request.params or SERVER_SEARCH}) for request in requests]
        return super().query_batch_points(collection_name, requests, *args, **kwargs)


class StorageHeld(RuntimeError):
    """Local mode's storage folder is open in another client: only one at a time may use it."""

    def __init__(self, path: Path):
        super().__init__(
            f"IMGSIM_QDRANT_PATH: the Qdrant storage folder {path.resolve()} is open in another Qdrant client "
            "(another notebook's kernel, or a run from the shell), and local mode lets only one use it at a time. "
            "Shut down the other kernel that has it open, or point IMGSIM_QDRANT_PATH at another folder, "
            "or use a Qdrant server (QDRANT_URL) for concurrent access."
        )


def point_id(key: str) -> str:
    """The point id of an image: a UUID5 of its relative path, the same on every run."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, key))


def image_points(vectors: np.ndarray, payloads: list[dict]) -> list[models.PointStruct]:
    """One point per image: the id of its path (`payload["path"]`), its vector, and its payload."""
    return [
        models.PointStruct(id=point_id(payload["path"]), vector=vector.tolist(), payload=payload)
        for vector, payload in zip(vectors, payloads, strict=True)
    ]


def check_collection(client: QdrantClient, name: str, vector_size: int, model_id: str) -> None:
    """Refuse a collection that holds vectors of another size, distance or model: they must never be compared."""
    vectors = client.get_collection(name).config.params.vectors
    if vectors.size != vector_size or vectors.distance != models.Distance.DOT:
        raise ValueError(
            f"collection {name!r} holds {vectors.size}-d {vectors.distance} vectors, this run makes "
            f"{vector_size}-d DOT vectors: set IMGSIM_COLLECTION to another name"
        )
    other_model = models.FieldCondition(key="model", match=models.MatchValue(value=model_id))
    foreign, _ = client.scroll(
        name, scroll_filter=models.Filter(must_not=[other_model]), limit=1, with_payload=["model"]
    )
    if foreign:
        raise ValueError(
            f"collection {name!r} holds vectors made by {foreign[0].payload.get('model')!r}, and this run "
            f"uses {model_id!r}: vectors of two models must never be compared. Set IMGSIM_COLLECTION to "
            f"another name, or delete the old collection with client.delete_collection({name!r})."
        )


def all_points(client: QdrantClient, name: str, **options):
    """Every point of the collection, scrolled page by page (`options` go to `scroll`)."""
    offset = None
    while True:
        points, offset = client.scroll(name, limit=1000, offset=offset, **options)
        yield from points
        if offset is None:
            return


def stored_files(client: QdrantClient, name: str) -> dict[str, dict]:
    """Payload of every stored point, by relative path."""
    return {point.payload["path"]: point.payload for point in all_points(client, name, with_payload=True)}


def fetch_vectors(client: QdrantClient, collection: str) -> tuple[list[str], np.ndarray]:
    """Every stored path with its vector, scrolled out of Qdrant."""
    points = list(all_points(client, collection, with_payload=["path"], with_vectors=True))
    vectors = np.asarray([point.vector for point in points], dtype=np.float32).reshape(len(points), -1)
    return [point.payload["path"] for point in points], vectors


@dataclass
class SyncPlan:
    to_embed: list[Path]
    unchanged: list[str]
    skipped: list[dict]
    stale: list[str]

    def __str__(self) -> str:
        return f"{len(self.to_embed)} to embed, {len(self.unchanged)} unchanged, {len(self.stale)} stale points"


@dataclass
class SyncResult:
    counts: dict[str, int]
    skipped: list[dict]

    def __str__(self) -> str:
        lines = [", ".join(f"{name} {count}" for name, count in self.counts.items())]
        if self.skipped:
            lines += [f"\n{len(self.skipped)} file(s) skipped:", f"  {'file':<50}  reason"]
            lines += [f"  {item['path']:<50}  {item['reason']}" for item in self.skipped]
        return "\n".join(lines)


@dataclass
class FolderSync:
    """Keeps `collection` an exact mirror of the images in `folder`, run after run."""

    client: QdrantClient
    collection: str
    folder: Path
    model_id: str
    stored: dict[str, dict] = field(init=False)
    plan: SyncPlan | None = field(init=False, default=None)
    counts: dict[str, int] = field(init=False, default_factory=lambda: {"new": 0, "updated": 0, "embedded": 0})

    def __post_init__(self):
        self.reread()

    def reread(self) -> dict[str, dict]:
        """What the collection stores now, by path: read again after points were deleted (here or elsewhere)."""
        self.stored = stored_files(self.client, self.collection)
        return self.stored

    def make_plan(self, selected: list[Path], everything: list[Path]) -> SyncPlan:
        """Which selected files need embedding, which are unchanged, and which stored points are stale."""
        self.plan = SyncPlan([], [], [], [])
        for path in selected:
            key = relative_key(path, self.folder)
            try:
                stat = path.stat()
            except OSError as error:
                self.plan.skipped.append({"path": key, "reason": describe_failure(error)})
                continue
            old = self.stored.get(key)
            if old and (old.get("size"), old.get("mtime_ns")) == (stat.st_size, stat.st_mtime_ns):
                self.plan.unchanged.append(key)
            else:
                self.plan.to_embed.append(path)
        present = {relative_key(path, self.folder) for path in everything}
        self.plan.stale = sorted(set(self.stored) - present)
        return self.plan

    def key_of(self, path: Path) -> str | None:
        """A file's key, its path relative to the folder; None for a file outside the folder (never stored)."""
        return relative_key(path, self.folder) if is_inside(self.folder, path) else None

    def payload(self, image: LoadedImage) -> dict:
        """What a point stores besides its vector: where the file is, its label and size, and what made it."""
        key = relative_key(image.path, self.folder)
        stat = image.path.stat()
        return {
            "path": key,
            "label": label_of(key),
            "width": image.width,
            "height": image.height,
            "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
            "sha256": image.sha256,
            "model": self.model_id,
        }

    def points(self, images: list[LoadedImage], vectors: np.ndarray) -> list[models.PointStruct]:
        """The points of a batch of embedded images, counted as new or updated for the run's result."""
        payloads = [self.payload(image) for image in images]
        for payload in payloads:
            self.counts["updated" if payload["path"] in self.stored else "new"] += 1
        self.counts["embedded"] += len(payloads)
        return image_points(vectors, payloads)

    def finish(self, failed: list[LoadedImage]) -> SyncResult:
        """Delete the points of files that are gone or could not be read; the run's counts and skipped files."""
        failed_keys = [relative_key(image.path, self.folder) for image in failed]
        skipped = self.plan.skipped + [
            {"path": k, "reason": image.error} for k, image in zip(failed_keys, failed, strict=True)
        ]
        to_remove = self.plan.stale + [
            key for key in failed_keys + [s["path"] for s in self.plan.skipped] if key in self.stored
        ]
        if to_remove:
            self.client.delete(
                self.collection, points_selector=models.PointIdsList(points=[point_id(k) for k in to_remove])
            )
        self.reread()
        return SyncResult({**self.counts, "unchanged": len(self.plan.unchanged), "removed": len(to_remove)}, skipped)
