"""The ideas section's pictures: the numbers written on them are the vectors' own, and the graph search they
draw is a real search that finds the nearest point while comparing fewer vectors than brute force."""

import re
from itertools import pairwise

import matplotlib.pyplot as plt
import numpy as np
import pytest

from imgsim.ideas import ARROWS, layered_graph, plot_graph_search, plot_similarity, walk_graph
from imgsim.plots import Figures


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.mark.parametrize("arrows", [ARROWS, {"q": (3.0, 0.0), "a": (2.0, 2.0), "b": (0.0, -0.5), "c": (-1.0, 0.1)}])
def test_the_cosines_and_distances_on_the_2d_picture_are_the_arrows_own(arrows):
    fig = plot_similarity(arrows)
    written = {}
    for text in fig.axes[0].texts:
        found = re.fullmatch(r"(\w+)\ncos (-?\d\.\d\d), distance (\d\.\d\d)", text.get_text())
        if found:
            written[found[1]] = (float(found[2]), float(found[3]))
    query, *others = arrows
    assert set(written) == set(others), "every arrow but the query is labelled"
    q = np.array(arrows[query]) / np.linalg.norm(arrows[query])
    for name in others:
        v = np.array(arrows[name]) / np.linalg.norm(arrows[name])
        assert written[name] == (round(float(q @ v), 2), round(float(np.linalg.norm(q - v)), 2)), name


def test_in_2048_dimensions_random_vectors_are_almost_perpendicular_and_noisy_copies_stand_out():
    high = plot_similarity(dimensions=2048).axes[1]
    assert "2,048 dimensions" in high.get_title()
    bars = [bar for bar in high.patches if bar.get_height() > 0]
    assert sum(bar.get_height() for bar in bars) == 1000
    lowest, highest = bars[0].get_x(), bars[-1].get_x() + bars[-1].get_width()
    assert -0.15 < lowest < highest < 0.15, "unrelated directions: cosines near 0"
    copies = sorted(line.get_xdata()[0] for line in high.lines)
    assert len(copies) == 3 and copies[0] > highest + 0.2, "every noisy copy scores far above every unrelated one"
    written = [float(label.rsplit("cos ", 1)[1]) for label in high.get_legend_handles_labels()[1] if "cos " in label]
    assert [round(x, 2) for x in copies] == sorted(written), "each copy's line is where its label says"


def test_the_picture_of_the_graph_search_shows_both_finding_the_true_nearest_and_how_many_each_compares():
    brute, hnsw = plot_graph_search(points=300, links=6, ef=4).axes
    assert "compared with all 300 vectors" in brute.get_title()
    compared = int(re.search(r"compares (\d+) of the 300 vectors", hnsw.get_title())[1])
    assert compared < 300 / 4
    for ax in (brute, hnsw):
        assert "nearest found: the true nearest" in ax.get_legend_handles_labels()[1]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_graph_walk_finds_the_true_nearest_point_comparing_a_fraction_of_the_points(seed):
    rng = np.random.default_rng(seed)
    graph = layered_graph(rng.random((300, 2)), links=6, seed=seed)
    queries = rng.random((200, 2))
    walks = [walk_graph(graph, query, ef=4) for query in queries]
    true_nearest = np.argmin(np.linalg.norm(graph.points[None] - queries[:, None], axis=-1), axis=1)
    assert np.mean([walk.nearest == truth for walk, truth in zip(walks, true_nearest, strict=True)]) >= 0.95
    assert np.mean([len(walk.compared) for walk in walks]) < 300 / 4
    assert all(walk.nearest in walk.compared for walk in walks)


def test_the_walk_follows_links_from_the_entry_point_down_the_layers():
    rng = np.random.default_rng(3)
    graph = layered_graph(rng.random((300, 2)), links=6, seed=3)
    assert len(graph.layers) >= 2, "some points sit on an upper layer"
    on_layer = [{point for point, links in enumerate(layer) if links} for layer in graph.layers]
    assert len(on_layer[0]) == 300 and len(on_layer[1]) < 300 / 2, "every point on layer 0, fewer above"
    assert all(upper <= lower for lower, upper in pairwise(on_layer)), "a point of an upper layer is on those below"
    for query in rng.random((50, 2)):
        walk = walk_graph(graph, query)
        starts, ends = [start for _, start, _ in walk.path], [end for _, _, end in walk.path]
        assert starts + [walk.nearest] == [graph.entry] + ends, "one walk from the entry point to the nearest found"
        layers = [layer for layer, _, _ in walk.path]
        assert layers == sorted(layers, reverse=True), "from the top layer down"
        assert all(end in graph.layers[layer][start] for layer, start, end in walk.path), "every step is a link"


def test_the_ideas_pictures_are_saved_as_files(tmp_path):
    figures = Figures(tmp_path, image_dir=tmp_path)
    figures.similarity(dimensions=2048)
    figures.graph_search(points=300, links=6, ef=4)
    assert figures.saved == {"similarity": tmp_path / "similarity.png", "graph_search": tmp_path / "graph_search.png"}
    assert all(path.stat().st_size > 10_000 for path in figures.saved.values())
