"""The server-settings benchmark measures the notebook's settings: its shard and queries are set from imgsim/store.py.

The benchmark itself (benchmarks/server_settings.py) is not run here; these checks create an empty shard, and
one small one that shows a query's search ef coming from the collection.
"""

import json
import re
import sys

import numpy as np
import qdrant_edge as edge
from conftest import NOTEBOOK, ROOT
from qdrant_client import QdrantClient, models

from imgsim.store import (
    INT8_QUANTIZATION,
    INT8_SEARCH,
    PAYLOAD_INDEXES,
    SERVER_COLLECTION,
    SERVER_SEARCH,
    ServerClient,
    connect,
)

sys.path.insert(0, str(ROOT / "benchmarks"))
import server_settings  # noqa: E402


def created_config(path, **options) -> dict:
    edge.EdgeShard.create(str(path), server_settings.edge_config(4, **options)).close()
    return json.loads((path / "edge_config.json").read_text())


def test_the_benchmarks_float32_shard_has_the_notebooks_hnsw_settings_and_no_quantization(tmp_path):
    saved = created_config(tmp_path / "shard")
    hnsw = SERVER_COLLECTION["hnsw_config"]
    assert (saved["hnsw_config"]["m"], saved["hnsw_config"]["ef_construct"]) == (hnsw.m, hnsw.ef_construct)
    assert saved.get("quantization_config") is None
    assert saved["vectors"][""] == {"size": 4, "distance": "Dot", "on_disk": True}


def test_the_benchmarks_int8_shard_is_the_server_default_of_store_py(tmp_path):
    assert server_settings.INT8_COLLECTION == SERVER_COLLECTION, "int8 is the server default (trained vectors)"
    assert server_settings.INT8_PARAMS == SERVER_SEARCH
    saved = created_config(tmp_path / "shard", collection=server_settings.INT8_COLLECTION)
    scalar = INT8_QUANTIZATION.scalar
    assert saved["quantization_config"] == {
        "scalar": {"type": scalar.type.value, "quantile": scalar.quantile, "always_ram": scalar.always_ram}
    }
    asked = server_settings.edge_search(server_settings.INT8_PARAMS)
    assert (asked.hnsw_ef, asked.quantization.rescore, asked.quantization.oversampling) == (
        None,
        INT8_SEARCH.rescore,
        INT8_SEARCH.oversampling,
    )


def test_a_changed_store_setting_reaches_the_benchmark_shard(tmp_path):
    other = {
        "hnsw_config": models.HnswConfigDiff(m=8, ef_construct=64),
        "quantization_config": models.ScalarQuantization(
            scalar=models.ScalarQuantizationConfig(type=models.ScalarType.INT8, quantile=0.9)
        ),
    }
    saved = created_config(tmp_path / "shard", collection=other)
    assert (saved["hnsw_config"]["m"], saved["hnsw_config"]["ef_construct"]) == (8, 64)
    assert saved["quantization_config"] == {"scalar": {"type": "int8", "quantile": 0.9}}


def test_the_scaling_page_reports_measurements_of_the_settings_a_server_gets():
    page = (ROOT / "docs" / "scaling.md").read_text()
    row = r"\| HNSW `m=(\d+)`, `ef_construct=(\d+)`, `hnsw_ef=\d+`, float32 \(the notebook's settings when measured"
    measured = re.search(row, page)
    hnsw = SERVER_COLLECTION["hnsw_config"]
    assert measured, "docs/scaling.md's recall table has a row for the notebook's settings"
    assert tuple(map(int, measured.groups())) == (hnsw.m, hnsw.ef_construct)
    indexed = re.search(r"keyword payload indexes on `(\w+)`, `(\w+)` and `(\w+)`", page)
    assert indexed and set(indexed.groups()) == set(PAYLOAD_INDEXES)


def test_the_benchmark_queries_with_the_notebooks_search_settings():
    asked = server_settings.edge_search()
    assert asked.hnsw_ef is None and not asked.exact and asked.quantization is None, "float32: none"
    asked = server_settings.edge_search(SERVER_SEARCH)
    assert asked.hnsw_ef is None and (asked.quantization.rescore, asked.quantization.oversampling) == (
        INT8_SEARCH.rescore,
        INT8_SEARCH.oversampling,
    ), "int8: what a server client adds to every query"
    assert server_settings.NOTEBOOK_EF == SERVER_COLLECTION["hnsw_config"].ef_construct
    changed = server_settings.edge_search(models.SearchParams(hnsw_ef=77), rescore=False)
    assert (changed.hnsw_ef, changed.quantization.rescore) == (77, False)


def test_a_query_without_search_params_searches_with_the_collections_ef_construct(tmp_path):
    """Why no query of the notebook passes `hnsw_ef`: on Qdrant's engine, the collection's `ef_construct` is the
    search ef of a query that sets none, so the collection carries its search settings."""
    hnsw = SERVER_COLLECTION["hnsw_config"]
    vectors = np.random.default_rng(0).standard_normal((3_000, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    config = edge.EdgeConfig(
        vectors=edge.EdgeVectorParams(size=16, distance=edge.Distance.Dot),
        hnsw_config=edge.HnswIndexConfig(m=hnsw.m, ef_construct=hnsw.ef_construct, full_scan_threshold=1),
        optimizers=edge.EdgeOptimizersConfig(indexing_threshold=1),
    )
    shard = edge.EdgeShard.create(str(tmp_path / "shard"), config)
    shard.update(edge.UpdateOperation.upsert_points([edge.Point(i, v.tolist(), {}) for i, v in enumerate(vectors)]))
    shard.optimize()
    assert shard.info().indexed_vectors_count == len(vectors), "searched through the HNSW graph"
    queries = vectors[:200] + 0.3 * np.random.default_rng(1).standard_normal((200, 16)).astype(np.float32)

    def found(params) -> list[list[int]]:
        requests = [edge.QueryRequest(limit=10, query=edge.Query.Nearest(q.tolist()), params=params) for q in queries]
        return [[point.id for point in points] for points in shard.query_batch(edge.QueryBatchRequest(requests))]

    asking_nothing = found(None)
    at_ef_construct, at_10 = found(edge.SearchParams(hnsw_ef=hnsw.ef_construct)), found(edge.SearchParams(hnsw_ef=10))
    shard.close()
    assert asking_nothing == at_ef_construct
    assert asking_nothing != at_10, "a smaller ef finds other points: the search ef is not left to chance"


def test_a_server_client_creates_collections_like_the_benchmark(monkeypatch):
    """The notebook's create_collection call is the same on a server: ServerClient adds the server settings."""
    created, indexed = [], []
    monkeypatch.setattr(QdrantClient, "create_collection", lambda self, name, **kw: created.append(kw) or True)
    monkeypatch.setattr(QdrantClient, "create_payload_index", lambda self, name, field, **kw: indexed.append(field))
    client = ServerClient(location=":memory:")  # a server client's class; no server needed for what it sends
    notebooks = models.VectorParams(size=512, distance=models.Distance.DOT)
    client.create_collection("images", vectors_config=notebooks)
    client.close()
    [sent] = created
    assert sent["vectors_config"].model_dump(include={"distance", "on_disk"}) == server_settings.NOTEBOOK_VECTORS
    assert {name: sent[name] for name in SERVER_COLLECTION} == SERVER_COLLECTION
    assert indexed == list(PAYLOAD_INDEXES), "keyword indexes, made before any upload"
    assert notebooks.on_disk is None, "the caller's vectors config is left as it was"
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    source = "".join("".join(cell["source"]) for cell in cells if cell["cell_type"] == "code")
    assert "models.VectorParams(size=vector_size, distance=models.Distance.DOT)" in source


def test_a_server_client_adds_the_int8_search_settings_to_every_query_that_sets_none(monkeypatch):
    """The notebook, neighbours.py, panel.py and tidy.py query without search params; on a server, connect's
    client adds SERVER_SEARCH (rescored, oversampled) to each, and keeps any a query sets itself."""
    asked = []
    monkeypatch.setattr(QdrantClient, "query_points", lambda self, name, **kw: asked.append(kw["search_params"]))
    monkeypatch.setattr(
        QdrantClient, "query_points_groups", lambda self, name, by, **kw: asked.append(kw["search_params"])
    )
    monkeypatch.setattr(
        QdrantClient, "query_batch_points", lambda self, name, requests, **kw: asked.extend(r.params for r in requests)
    )
    client = ServerClient(location=":memory:")  # a server client's class; no server needed for what it sends
    own = models.SearchParams(exact=True)
    client.query_points("images", query=[1.0, 0.0])
    client.query_points("images", query=[1.0, 0.0], search_params=own)
    client.query_points_groups("images", "label", query=[1.0, 0.0])
    requests = [models.QueryRequest(query=[1.0, 0.0]), models.QueryRequest(query=[0.0, 1.0], params=own)]
    client.query_batch_points("images", requests=requests)
    client.close()
    assert asked == [SERVER_SEARCH, own, SERVER_SEARCH, SERVER_SEARCH, own]
    assert requests[0].params is None, "the caller's requests are left as they were"


def test_connect_gives_a_plain_client_in_local_mode(tmp_path):
    """Local mode ignores search params (with a warning each query), so it gets none."""
    client = connect(None, None, tmp_path / "qdrant")
    assert not isinstance(client, ServerClient)
    client.close()


def test_the_docs_say_the_oversampling_the_server_queries_use_and_the_notebook_links_there():
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    text = " ".join(" ".join("".join(cell["source"]).split()) for cell in cells if cell["cell_type"] == "markdown")
    assert "(docs/scaling.md#server-settings)" in text
    scaling = " ".join((ROOT / "docs" / "scaling.md").read_text().split("## Server settings", 1)[1].split())
    assert f"`{INT8_SEARCH.oversampling:g} × limit` candidates then rescored" in scaling
