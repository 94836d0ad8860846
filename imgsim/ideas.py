"""The ideas behind the calls, drawn: vectors and how close two of them are, and how Qdrant's HNSW graph
finds a query's nearest vector by walking a few links instead of comparing it with every stored vector.

Both pictures are made from small synthetic point sets, not from the model: they show the ideas, and need
no weights.
"""

import heapq
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.collections import LineCollection

# A query and three other images as 2-D arrows, scaled to length 1 as the notebook's vectors are.
ARROWS = {"query": (1.0, 0.35), "close": (0.75, 0.75), "unrelated": (-0.35, 1.0), "opposite": (-1.0, -0.35)}


def unit(vectors) -> np.ndarray:
    """Each row scaled to length 1."""
    vectors = np.asarray(vectors, dtype=float)
    return vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)


def plot_similarity(arrows: dict[str, tuple[float, float]] = ARROWS, dimensions: int = 2048, seed: int = 0):
    """Left: unit arrows in 2-D, each with its cosine and distance to the first. Right: the same in `dimensions`."""
    fig, (flat, high) = plt.subplots(1, 2, figsize=(11, 4.4), layout="constrained", width_ratios=(1.1, 1.3))
    names, vectors = list(arrows), unit(list(arrows.values()))
    flat.add_patch(plt.Circle((0, 0), 1, fill=False, color="lightgray"))
    for name, vector in zip(names, vectors, strict=True):
        cosine = float(vector @ vectors[0])
        colour = "tab:red" if name == names[0] else "tab:blue"
        flat.annotate("", vector, (0, 0), arrowprops={"arrowstyle": "-|>", "color": colour, "lw": 2})
        label = name if name == names[0] else f"{name}\ncos {cosine:.2f}, distance {np.sqrt(2 - 2 * cosine):.2f}"
        side = "left" if vector[0] > 0.3 else "right" if vector[0] < -0.3 else "center"
        flat.text(*(vector * 1.1), label, ha=side, va="center", fontsize=8, color=colour)
    flat.set(xlim=(-2.1, 2.1), ylim=(-1.3, 1.3), aspect="equal", xticks=[], yticks=[])
    flat.set_title(
        "2 dimensions: each vector is an arrow of length 1\ncosine = dot product of unit vectors;"
        " distance² = 2 - 2 cos",
        fontsize=9,
    )
    plot_cosines_in_many_dimensions(high, dimensions, np.random.default_rng(seed))
    return fig


def plot_cosines_in_many_dimensions(ax, dimensions: int, rng, unrelated: int = 1000) -> None:
    """The cosines of a random unit vector with unrelated random ones, and with noisy copies of itself."""
    query = unit(rng.standard_normal(dimensions))
    others = unit(rng.standard_normal((unrelated, dimensions)))
    ax.hist(others @ query, bins=40, color="tab:gray", label=f"{unrelated:,} unrelated random vectors")
    for noise, colour in zip((0.5, 1.0, 2.0), ("tab:green", "tab:olive", "tab:orange"), strict=True):
        copy = unit(query + noise * unit(rng.standard_normal(dimensions)))
        ax.axvline(copy @ query, color=colour, lw=2, label=f"the query + {noise} x noise: cos {copy @ query:.2f}")
    numbers = " ".join(f"{x:+.3f}" for x in query[:5])
    ax.set(xlim=(-0.2, 1.0), xlabel="cosine with the query vector", ylabel="vectors")
    ax.legend(fontsize=8, loc="upper right")
    ax.set_title(
        f"{dimensions:,} dimensions (synthetic vectors): the query is [{numbers} ...]\n"
        "unrelated vectors are almost perpendicular (cos near 0); copies stand out",
        fontsize=9,
    )


@dataclass
class Graph:
    """An HNSW-like graph over `points`: `layers[0]` links every point, each higher layer fewer of them."""

    points: np.ndarray
    layers: list[list[set[int]]]  # for each layer, each point's linked points (none when not on that layer)
    entry: int  # a point of the top layer, where every search starts


@dataclass
class Walk:
    """A search on a graph: where it stopped, the links it followed to get there, and every point it compared."""

    nearest: int
    path: list[tuple[int, int, int]]  # (layer, from point, to point), from the entry point to `nearest`
    compared: set[int]


def layered_graph(points: np.ndarray, links: int, seed: int = 0) -> Graph:
    """Layer 0 links every point to its `links` nearest, both ways; each higher layer holds about one point
    in `links` of the layer below (a random level per point, as HNSW draws it), linked the same way."""
    rng = np.random.default_rng(seed)
    levels = np.floor(-np.log(1 - rng.random(len(points))) / np.log(links)).astype(int)
    layers = []
    for level in range(levels.max() + 1):
        members = np.flatnonzero(levels >= level)
        graph = [set() for _ in points]
        distances = np.linalg.norm(points[members, None] - points[None, members], axis=-1)
        for row, point in zip(np.argsort(distances, axis=1)[:, 1 : links + 1], members, strict=True):
            for neighbour in members[row]:
                graph[point].add(int(neighbour))
                graph[int(neighbour)].add(int(point))
        layers.append(graph)
    return Graph(points, layers, int(np.argmax(levels)))


def walk_graph(graph: Graph, query: np.ndarray, ef: int = 4) -> Walk:
    """HNSW's search: from the entry point, a greedy walk on each layer to the point nearest the query, where
    the layer below is entered; on layer 0, a best-first search that keeps the `ef` nearest points found."""
    distances: dict[int, float] = {}  # every point compared with the query, each compared once

    def distance(point: int) -> float:
        if point not in distances:
            distances[point] = float(np.linalg.norm(graph.points[point] - query))
        return distances[point]

    entry, path = graph.entry, []
    for layer in range(len(graph.layers) - 1, -1, -1):
        width = ef if layer == 0 else 1
        candidates, found, reached_from = [(distance(entry), entry)], [(-distance(entry), entry)], {entry: None}
        while candidates:
            gap, point = heapq.heappop(candidates)
            if gap > -found[0][0]:
                break  # every candidate left is further than the furthest of the nearest found
            for neighbour in graph.layers[layer][point] - reached_from.keys():
                reached_from[neighbour] = point
                if len(found) < width or distance(neighbour) < -found[0][0]:
                    heapq.heappush(candidates, (distance(neighbour), neighbour))
                    heapq.heappush(found, (-distance(neighbour), neighbour))
                    if len(found) > width:
                        heapq.heappop(found)
        nearest = max(found)[1]
        steps, point = [], nearest
        while reached_from[point] is not None:
            steps.insert(0, (layer, reached_from[point], point))
            point = reached_from[point]
        path += steps
        entry = nearest
    return Walk(entry, path, set(distances))


def plot_graph_search(points: int = 300, links: int = 6, ef: int = 4, seed: int = 0):
    """A query's nearest point among random 2-D points, found by comparing with all of them (local mode) and
    by walking an HNSW-like graph (a Qdrant server past its indexing threshold), with the vectors each compares."""
    rng = np.random.default_rng(seed)
    graph = layered_graph(rng.random((points, 2)), links, seed)
    query = 1 - graph.points[graph.entry]  # across the square from where the walk starts
    walk = walk_graph(graph, query, ef)
    nearest = int(np.argmin(np.linalg.norm(graph.points - query, axis=1)))
    fig, (brute, hnsw) = plt.subplots(1, 2, figsize=(11, 5.8), layout="constrained")
    for ax in (brute, hnsw):
        ax.set(xlim=(-0.02, 1.02), ylim=(-0.02, 1.02), aspect="equal", xticks=[], yticks=[])
    brute.scatter(*graph.points.T, s=14, color="tab:orange", label="compared with the query")
    for layer, links_of in enumerate(graph.layers):
        lines = [
            graph.points[[point, other]] for point, linked in enumerate(links_of) for other in linked if point < other
        ]
        colour, alpha = ("tab:blue", 0.3) if layer else ("lightgray", 0.6)
        hnsw.add_collection(LineCollection(lines, colors=colour, linewidths=0.6, alpha=alpha, zorder=1))
    hnsw.scatter(*graph.points.T, s=10, color="darkgray", zorder=2, label="not compared")
    hnsw.scatter(
        *graph.points[sorted(walk.compared)].T, s=18, color="tab:orange", zorder=3, label="compared with the query"
    )
    for layer, start, end in walk.path:
        hnsw.annotate(
            "",
            graph.points[end],
            graph.points[start],
            zorder=4,
            arrowprops={"arrowstyle": "-|>", "color": "tab:red", "lw": 1.8, "linestyle": "-" if layer == 0 else "--"},
        )
    hnsw.scatter(*graph.points[graph.entry], s=60, marker="s", color="tab:blue", zorder=5, label="entry point")
    hnsw.plot([], [], color="tab:blue", label="links of the upper layers")
    hnsw.plot([], [], color="tab:red", label="the walk (dashed on upper layers)")
    for ax, found, title in (
        (brute, nearest, f"local mode: the query is compared with all {points} vectors"),
        (
            hnsw,
            walk.nearest,
            f"HNSW graph ({links} links a point, ef={ef}): a walk of {len(walk.path)} links"
            f" compares {len(walk.compared)} of the {points} vectors",
        ),
    ):
        ax.scatter(*query, s=160, marker="*", color="tab:red", zorder=6, label="query")
        ax.scatter(
            *graph.points[found],
            s=150,
            facecolors="none",
            edgecolors="black",
            lw=1.5,
            zorder=6,
            label="nearest found: " + ("the true nearest" if found == nearest else "NOT the true nearest"),
        )
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.01), ncols=2, frameon=False)
    return fig
