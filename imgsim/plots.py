"""The pictures: query results and why they match, galleries, score histograms, duplicate groups, metrics and
the PCA map.

Every figure is titled with the model and weights that made it, and with random weights it says that
its scores and rankings are not semantic. `Figures` draws each picture the notebook shows (one method per
picture, named as its file), saves it under the report's folder and shows it in the notebook at screen
size: a JPEG when it holds photos, so that the executed notebook stays light.
"""

import io
import textwrap
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from IPython import get_ipython
from IPython.display import Image, display
from matplotlib.offsetbox import AnnotationBbox, OffsetImage
from torchvision.transforms import functional as TF

from imgsim.calibration import NEIGHBOURS_LOOKED_AT
from imgsim.explain import upsampled
from imgsim.ideas import plot_graph_search, plot_similarity
from imgsim.reading import load_image, thumbnail

SCREEN_WIDTH = 1200  # pixels: about the widest a notebook shows a picture without scaling it down
SCREEN_DPI = 100  # matplotlib's own, for figures narrower than that


def on_screen(fig) -> Image:
    """The figure as the notebook shows it: at most SCREEN_WIDTH pixels wide, a JPEG when it holds photos (a
    fraction of a PNG's bytes), a PNG when it is only lines and text (sharper, and small anyway)."""
    dpi = min(SCREEN_DPI, SCREEN_WIDTH / fig.get_figwidth())  # the figure as its file shows it, smaller
    photos = any(ax.images or ax.artists for ax in fig.axes)  # imshow, or thumbnails placed on a map
    buffer = io.BytesIO()
    fig.savefig(buffer, format="jpeg" if photos else "png", dpi=dpi, pil_kwargs={"quality": 85} if photos else None)
    return Image(buffer.getvalue(), format="jpeg" if photos else "png")


class Figures:
    """Draws the notebook's pictures, saves them as PNG files in `folder` and shows them in a notebook; `saved`
    maps each name to its file. Stored images are read from `image_dir`; `caption` (the model and weights, set
    once they are known) titles every picture of results."""

    def __init__(self, folder: Path, image_dir: Path):
        self.folder, self.image_dir, self.caption = folder, image_dir, ""
        self.folder.mkdir(parents=True, exist_ok=True)
        self.saved: dict[str, Path] = {}

    def save(self, name: str, fig, dpi: int = 80, filename: str | None = None) -> None:
        if fig is None:
            return
        self.saved[name] = self.folder / (filename or f"{name}.png")
        fig.savefig(self.saved[name], dpi=dpi)
        if get_ipython() is not None:  # in a notebook
            display(on_screen(fig))
        plt.close(fig)

    def similarity(self, dimensions: int) -> None:
        self.save("similarity", plot_similarity(dimensions=dimensions))

    def graph_search(self, points: int, links: int, ef: int) -> None:
        self.save("graph_search", plot_graph_search(points, links, ef))

    def model_input(self, paths: list[Path], preprocess) -> None:
        self.save("model_input", plot_model_input(paths, preprocess, "what the model sees"))

    def results(self, name: str, rows, **save) -> None:
        """Query results, one row per query given as (query path, title, hits); `save`'s options go to `save`."""
        self.save(name, plot_result_rows(rows, self.image_dir, self.caption), **save)

    def why_they_match(self, explainer, row, name: str = "query_why") -> None:
        """The heat maps of one row of results, given as (query path, title, hits): see `plot_why`."""
        query_path, query_title, hits = row
        if not hits:
            print("no match to explain: the collection holds no other image")
            return
        match_paths = [self.image_dir / hit.payload["path"] for hit in hits]
        images, explanations = explainer.explain_files(query_path, match_paths)
        titles = [f"{hit.score:.3f} {hit.payload['label'] or ''}\n{shorten(hit.payload['path'], 24)}" for hit in hits]
        self.save(name, plot_why(images, explanations, shorten(query_title, 24), titles, self.caption))

    def duplicate_scores(self, nearest, calibration) -> None:
        self.save("duplicate_scores", plot_score_histogram(nearest, calibration, self.caption), dpi=90)

    def duplicate_groups(self, groups: list[list[str]], centred_of, explainer=None, mean=None) -> None:
        """The first groups, each keeper first, titled KEEP and the others remove; with an `explainer` and the
        collection's `mean`, drawn with where the kept image and each other one agree (`plot_groups_explained`)."""
        if explainer is None:
            fig = plot_groups(groups, self.image_dir, centred_of, self.caption, keeper_first=True)
        else:
            fig = plot_groups_explained(groups, self.image_dir, explainer, mean, self.caption)
        self.save("duplicate_groups", fig)

    def metrics(self, metrics: dict) -> None:
        self.save("metrics", plot_metrics(metrics, self.caption), dpi=90)

    def embedding_map(self, coordinates, keys: list[str], labels) -> None:
        self.save("embedding_map", plot_embedding_map(coordinates, keys, labels, self.image_dir, self.caption))


def weights_caption(model_name: str, weights_id: str) -> str:
    random_weights = weights_id.startswith("none")
    return f"{model_name}, weights: {weights_id}" + (
        "\nRANDOM WEIGHTS: scores and rankings are not semantic" if random_weights else ""
    )


def shorten(text: str, width: int = 30) -> str:
    """Each line of `text` cut to its last `width` characters: the end is what tells file names apart."""
    return "\n".join(line if len(line) <= width else "…" + line[-(width - 1) :] for line in text.splitlines())


def plot_thumbnail_rows(rows: list[list[tuple[Path, str]]], caption: str, title_size: int = 9):
    """A grid of thumbnails, one row per list of (image path, title)."""
    columns = max(len(cells) for cells in rows)
    fig, axes = plt.subplots(
        len(rows), columns, figsize=(2.6 * columns, 3.0 * len(rows) + 0.6), squeeze=False, layout="constrained"
    )
    for ax in axes.flat:
        ax.axis("off")
    for cells, row in zip(rows, axes, strict=True):
        for ax, (path, title) in zip(row, cells, strict=False):
            ax.imshow(thumbnail(path))
            ax.set_title(title, fontsize=title_size)
    fig.suptitle(wrapped(caption, 2.6 * columns), fontsize=10)
    return fig


def wrapped(caption: str, inches: float) -> str:
    """The caption's lines wrapped to a figure `inches` wide: a narrow figure would cut off a long weights name."""
    return "\n".join(textwrap.fill(line, width=int(13 * inches)) for line in caption.splitlines())


def plot_model_input(paths: list[Path], preprocess, caption: str):
    """Each image as stored, above the 224 x 224 pixels the model gets (upright, resized, centre-cropped)."""
    fig, axes = plt.subplots(2, len(paths), figsize=(2.6 * len(paths), 5.6), squeeze=False, layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    for (stored, model_input), path in zip(axes.T, paths, strict=True):
        loaded = load_image(path, preprocess)
        if loaded.error:
            stored.set_title(f"{shorten(path.name, 24)}\nskipped: {shorten(loaded.error, 24)}", fontsize=8)
            continue
        stored.imshow(thumbnail(path))
        stored.set_title(f"{shorten(path.name, 24)}\n{loaded.width} x {loaded.height}", fontsize=8)
        model_input.imshow(TF.to_pil_image(loaded.pixels))
        model_input.set_title("model input, 224 x 224", fontsize=8)
    fig.suptitle(caption, fontsize=10)
    return fig


def plot_result_rows(rows, folder: Path, caption: str):
    """One row per query, given as (query path, title, hits): the query image, then its matches."""
    return plot_thumbnail_rows(
        [
            [(query_path, f"QUERY\n{shorten(query_title)}")]
            + [(folder / hit.payload["path"], f"{hit.score:.3f}\n{hit.payload['label']}") for hit in hits]
            for query_path, query_title, hits in rows
        ],
        caption,
    )


def plot_score_histogram(nearest, calibration, caption: str):
    """Every image's nearest-neighbour centred score, the planted copies' scores, the threshold, and the score
    from which pairs are candidates, checked by their pixels."""
    nearest = nearest[np.isfinite(nearest)]  # an image alone in the collection has no neighbour
    copies = np.asarray(calibration.copy_scores)
    fig, ax = plt.subplots(figsize=(8, 3.4), layout="constrained")
    lowest = float(np.min(np.concatenate([nearest, copies]), initial=0.0))
    bins = np.linspace(max(-1.0, lowest - 0.02), 1.0, 60)
    ax.hist(nearest, bins=bins, color="tab:gray", label="each image vs its nearest other image")
    if len(copies):
        ax.hist(copies, bins=bins, color="tab:orange", alpha=0.8, label="planted copy vs its original")
    if calibration.threshold is not None:
        separates = calibration.grouping_threshold is not None
        line = f"threshold {calibration.threshold:.3f} ({calibration.chosen})" + (
            "" if separates else ": does not separate"
        )
        ax.axvline(calibration.threshold, color="tab:red", linestyle="--" if separates else ":", label=line)
    if calibration.candidate_floor is not None and calibration.candidate_floor < calibration.threshold:
        floor = f"candidates from {calibration.candidate_floor:.3f}"
        ax.axvline(calibration.candidate_floor, color="tab:blue", linestyle=":", label=floor)
    ax.set_xlabel("centred cosine similarity")
    ax.set_ylabel("images")
    ax.legend(loc="upper left", fontsize=8)
    found = ""
    if calibration.recall is not None and calibration.in_band is not None:
        found = (
            f"\n{calibration.in_band} of {calibration.pairs_looked_at} pairs (an image, one of its "
            f"{NEIGHBOURS_LOOKED_AT} nearest) within {calibration.bandwidth:.3f} of the threshold; "
            f"planted copies found: {calibration.recall:.2f}"
        )
    ax.set_title(caption + found, fontsize=9)
    return fig


def plot_groups(groups, folder: Path, centred_of, caption: str, max_rows: int = 6, keeper_first: bool = False):
    """One row per group: its images, each titled with its centred score against the group's first image.

    `centred_of(keys)` gives the centred vectors of stored images. With `keeper_first`, the first image of
    each group is titled KEEP and the others remove.
    """
    if not groups:
        print("no duplicate groups to show")
        return None
    rows = []
    for group in groups[:max_rows]:
        shown = group[:6]
        scores = centred_of(shown) @ centred_of(shown[:1])[0]
        marks = ["KEEP ", *["remove " for _ in shown[1:]]] if keeper_first else [""] * len(shown)
        titles = [f"{mark}{score:.3f}\n{shorten(key)}" for mark, score, key in zip(marks, scores, shown, strict=True)]
        rows.append([(folder / key, title) for key, title in zip(shown, titles, strict=True)])
    return plot_thumbnail_rows(rows, caption, title_size=7)


def plot_metrics(metrics: dict, caption: str):
    names = list(metrics["per_label"])
    x = np.arange(len(names))
    k = metrics["k"]
    fig, ax = plt.subplots(figsize=(max(6, 0.8 * len(names)), 3.4), layout="constrained")
    ax.bar(x - 0.2, [metrics["per_label"][n]["precision_at_k"] for n in names], 0.4, label=f"precision@{k}")
    ax.bar(x + 0.2, [metrics["per_label"][n]["map_at_k"] for n in names], 0.4, label=f"mAP@{k}")
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    ax.set_title(
        f"{caption}\noverall precision@{k} {metrics['precision_at_k']:.3f}, mAP@{k} {metrics['map_at_k']:.3f}",
        fontsize=9,
    )
    return fig


def plot_embedding_map(coordinates, keys, labels, folder: Path, caption: str, thumbnails: int = 30):
    """Every image as a point on the first two principal components, coloured by label, with some thumbnails."""
    fig, ax = plt.subplots(figsize=(10, 7.5), layout="constrained")
    names = sorted({str(label) for label in labels})
    colours = plt.colormaps["tab10" if len(names) <= 10 else "tab20"]
    for n, name in enumerate(names):
        mask = np.array([str(label) == name for label in labels])
        ax.scatter(*coordinates[mask].T, s=10, color=colours(n % colours.N), label=name, alpha=0.7)
    step = max(1, len(keys) // thumbnails)
    for i in range(0, len(keys), step):
        box = OffsetImage(np.asarray(thumbnail(folder / keys[i], 48)), zoom=0.7)
        ax.add_artist(AnnotationBbox(box, coordinates[i], frameon=True, pad=0.1))
    ax.legend(fontsize=8, markerscale=2, loc="best")
    ax.set_xlabel("first principal component")
    ax.set_ylabel("second principal component")
    ax.set_title(caption, fontsize=9)
    return fig


def heat_overlay(pixels, grid_map: np.ndarray, limit: float, centred: bool) -> np.ndarray:
    """The model's input (3 x side x side 8-bit pixels) under a heat map of its places, as side x side x 3 pixels.

    Plain maps (never negative) go from the picture itself, at zero, to bright yellow at `limit`; centred ones
    from blue (takes away from the score) through the picture to red (adds to it), at -`limit` and `limit`.
    """
    picture = pixels.permute(1, 2, 0).numpy().astype(np.float32) / 255
    values = upsampled(grid_map, picture.shape[0]) / limit
    if centred:
        colours = plt.colormaps["RdBu_r"]((np.clip(values, -1, 1) + 1) / 2)[..., :3]
    else:
        colours = plt.colormaps["inferno"](np.clip(values, 0, 1))[..., :3]
    weight = 0.8 * np.clip(np.abs(values), 0, 1)[..., None]
    return np.round(255 * ((1 - weight) * picture + weight * colours)).astype(np.uint8)


def shared_limit(maps) -> float:
    """One colour scale for maps drawn side by side, so that equal colours mean equal parts of a score."""
    return max(float(np.abs(grid_map).max()) for grid_map in maps) or 1.0


def strongest_place(maps) -> tuple[int, int]:
    """The place (row, column) that adds the most to the scores of all `maps` together."""
    total = np.sum(maps, axis=0)
    return tuple(int(i) for i in np.unravel_index(np.argmax(total), total.shape))


def plot_why(images, explanations, query_title: str, titles: list[str], caption: str):
    """Why each match matches the query: one column per match.

    Top row: the query as the model sees it, under its map for that match (what each of its places adds to the
    score); middle: the match under its own map; bottom: where in the match the query's strongest place (the
    ring) finds its partners. `images` are the query, then the matches (as `Explainer.explain_files` gives them).
    """
    query, matches = images[0], images[1:]
    limit = shared_limit([e.first_map for e in explanations] + [e.second_map for e in explanations])
    place = strongest_place([e.first_map for e in explanations])
    partners = [e.partners_of(place) for e in explanations]
    partners_limit = shared_limit(partners)
    side, grid = query.pixels.shape[-1], explanations[0].grid
    centre_of_place = ((place[1] + 0.5) * side / grid[1], (place[0] + 0.5) * side / grid[0])
    width = max(2.3 * len(matches), 6.0)  # room for the title above a single pair
    fig, axes = plt.subplots(3, len(matches), figsize=(width, 7.6), squeeze=False, layout="constrained")
    for column, (match, explanation, title) in enumerate(zip(matches, explanations, titles, strict=True)):
        top, middle, bottom = axes[:, column]
        centred = explanation.centred
        top.imshow(heat_overlay(query.pixels, explanation.first_map, limit, centred))
        top.add_patch(plt.Circle(centre_of_place, side / grid[0] / 2, fill=False, color="white", linewidth=1.5))
        top.set_title(f"QUERY {query_title}\nits part of {explanation.score:.3f}", fontsize=7)
        middle.imshow(heat_overlay(match.pixels, explanation.second_map, limit, centred))
        middle.set_title(title, fontsize=7)
        bottom.imshow(heat_overlay(match.pixels, partners[column], partners_limit, centred))
        bottom.set_title("partners of the ringed place", fontsize=7)
    for ax in axes.flat:
        ax.axis("off")
    kind = "centred cosine" if explanations[0].centred else "cosine"
    fig.suptitle(
        f"{caption}\nwhy they match: each map sums to the {kind} (brighter: more of it), 7 x 7 places",
        fontsize=9,
    )
    return fig


def plot_groups_explained(groups, folder: Path, explainer, mean, caption: str, max_rows: int = 4, members: int = 3):
    """One row per group: for each of its first `members` others, the kept image and that one, each under its map
    of their centred score (red: the places that agree; blue: those that pull the score down)."""
    if not groups:
        print("no duplicate groups to show")
        return None
    rows = []
    for group in groups[:max_rows]:
        shown = group[: members + 1]
        images, explanations = explainer.explain_files(folder / shown[0], [folder / key for key in shown[1:]], mean)
        rows.append((shown, images, explanations))
    limit = shared_limit([e.first_map for *_, es in rows for e in es] + [e.second_map for *_, es in rows for e in es])
    columns = 2 * max(len(explanations) for *_, explanations in rows)
    fig, axes = plt.subplots(
        len(rows), columns, figsize=(1.9 * columns, 2.4 * len(rows) + 0.7), squeeze=False, layout="constrained"
    )
    for ax in axes.flat:
        ax.axis("off")
    for (shown, images, explanations), row in zip(rows, axes, strict=True):
        for n, (key, image, explanation) in enumerate(zip(shown[1:], images[1:], explanations, strict=True)):
            row[2 * n].imshow(heat_overlay(images[0].pixels, explanation.first_map, limit, centred=True))
            row[2 * n].set_title(f"KEEP\n{shorten(shown[0], 22)}", fontsize=7)
            row[2 * n + 1].imshow(heat_overlay(image.pixels, explanation.second_map, limit, centred=True))
            row[2 * n + 1].set_title(f"remove {explanation.score:.3f}\n{shorten(key, 22)}", fontsize=7)
    title = f"{caption}\nwhere each pair agrees: its maps sum to its centred score (red adds, blue takes away)"
    fig.suptitle(wrapped(title, 1.9 * columns), fontsize=9)
    return fig
