"""Step 12, the search panel: upload a query or take one from the collection, refine it, filter it, in the notebook.

A panel of ipywidgets inside the notebook, where the kernel already holds the model and the Qdrant
client (a second process could not open local-mode storage: it is locked to one client). The panel
looks the client up at every search (`client_of()`), so re-running the notebook's connection cell is
picked up. The query is an upload, a random stored image, a stored image's name, or the path of any
image file on the kernel's machine: Colab delivers uploads of about 1 MB and more empty (ipywidgets
#3452), so a file put there with Colab's file browser is typed in by its path. An upload is decoded in
memory by the same robust reading as the folder's files and is never written anywhere: not to the
collection, not to disk, and its button is replaced once it is read, so its bytes do not linger in
widget state. "More like this" and "less like this" gather stored images as the examples of a recommend
query, with the query image as the first positive one. `Search` and `run_search` are the search itself,
without widgets, so tests can check it without a browser. With an `Explainer`, a "why?" toggle shows under
each result where the query and that result agree: their heat maps (`imgsim.explain`), which sum to the score.
"""

import functools
import hashlib
import io
from dataclasses import dataclass, field, replace
from html import escape
from pathlib import Path

import ipywidgets as widgets
from PIL import Image
from qdrant_client import QdrantClient, models

from imgsim.explain import Explainer
from imgsim.files import IMAGE_EXTENSIONS
from imgsim.near_duplicates import NearDuplicates
from imgsim.plots import heat_overlay, shared_limit
from imgsim.reading import describe_failure, thumbnail
from imgsim.store import point_id

# Jupyter's websocket drops messages over 10 MiB, so bigger uploads never reach the kernel; the panel
# refuses anything over 10 MB that does arrive (on hosts that carry more), so one rule holds everywhere.
MAX_UPLOAD_BYTES = 10_000_000
THUMBNAIL_SIZE = 150
COMPACT = {"style": {"description_width": "initial"}}  # a description as wide as its text
CARD = {"width": "160px", "margin": "0 6px 10px 0"}


@dataclass(frozen=True)
class Upload:
    name: str
    size: int
    content: bytes | memoryview


def uploaded_files(value) -> list[Upload]:
    """The files of a FileUpload value: a tuple of dicts in ipywidgets 8, a dict by file name in ipywidgets 7."""
    if isinstance(value, dict):
        return [Upload(name, entry["metadata"]["size"], entry["content"]) for name, entry in value.items()]
    return [Upload(entry["name"], entry["size"], entry["content"]) for entry in value]


@dataclass(frozen=True)
class Query:
    """The image searched for: a stored image (its relative path as `key`) or an upload (its `vector`)."""

    name: str
    key: str | None = None
    vector: list[float] | None = None
    sha256: str | None = None  # of a new image's bytes, to tell an identical file
    data: bytes | None = field(default=None, repr=False)  # a new image's bytes, held in memory, never written

    @property
    def example(self):
        """What Qdrant takes as this image: a stored point's id, or the upload's vector."""
        return point_id(self.key) if self.key else self.vector


@dataclass
class Search:
    query: Query
    more_like: list[str] = field(default_factory=list)  # relative paths of stored images
    less_like: list[str] = field(default_factory=list)
    label: str | None = None  # None: all labels
    limit: int = 5

    @property
    def shown_keys(self) -> list[str]:
        """The stored images already on screen as the query or an example, never offered as results."""
        return [key for key in (self.query.key, *self.more_like, *self.less_like) if key]


def label_filter(label: str | None) -> list[models.FieldCondition]:
    return [models.FieldCondition(key="label", match=models.MatchValue(value=label))] if label else []


def run_search(client: QdrantClient, collection: str, search: Search) -> list[models.ScoredPoint]:
    """The best matches: a plain query for the query image, a recommend query once there are examples."""
    query = search.query.example
    if search.more_like or search.less_like:
        examples = models.RecommendInput(
            positive=[query, *map(point_id, search.more_like)], negative=list(map(point_id, search.less_like))
        )
        query = models.RecommendQuery(recommend=examples)
    not_shown = [models.HasIdCondition(has_id=list(map(point_id, search.shown_keys)))] if search.shown_keys else []
    return client.query_points(
        collection,
        query=query,
        query_filter=models.Filter(must=label_filter(search.label), must_not=not_shown),
        limit=search.limit,
        with_payload=["path", "label"],
    ).points


def random_stored_image(client: QdrantClient, collection: str, label: str | None) -> str | None:
    """The relative path of a stored image drawn at random (of `label` if given), or None if there is none."""
    points = client.query_points(
        collection,
        query=models.SampleQuery(sample=models.Sample.RANDOM),
        query_filter=models.Filter(must=label_filter(label)),
        limit=1,
        with_payload=["path"],
    ).points
    return points[0].payload["path"] if points else None


def label_counts(client: QdrantClient, collection: str) -> dict[str, int]:
    """How many stored images each label has, by label name (on a server, this needs the `label` index)."""
    hits = client.facet(collection, key="label", limit=10_000).hits
    return {hit.value: hit.count for hit in sorted(hits, key=lambda hit: hit.value)}


def incomplete_upload(upload: Upload, received: int) -> str:
    """What to do when fewer bytes arrived than the browser announced (Colab: none, from about 1 MB on)."""
    what = "empty" if not received else f"incomplete ({received:,} bytes)"
    return (
        f"{upload.name} arrived {what}, though the browser announced {upload.size:,} bytes. Some hosts, Google "
        "Colab among them, deliver uploads of about 1 MB and more empty (ipywidgets issue 3452). Put the file "
        "on the notebook's machine instead (in Colab: the file browser, the folder icon on the left, then "
        f"Upload) and type its path here, for example /content/{upload.name}."
    )


def picture(source: Path | bytes) -> widgets.Widget:
    """A thumbnail of an image file or of an upload's bytes, or the reason it cannot be shown."""
    try:
        image = thumbnail(source, THUMBNAIL_SIZE)
    except Exception as error:  # a file deleted or changed since indexing must not break the panel
        return widgets.HTML(f"<i>cannot show it: {escape(describe_failure(error))}</i>")
    return jpeg_image(image)


def jpeg_image(image: Image.Image) -> widgets.Image:
    jpeg = io.BytesIO()
    image.save(jpeg, "JPEG", quality=85)
    return widgets.Image(value=jpeg.getvalue(), format="jpeg")


WHY_LEGEND = (
    "why?: under each result, the query and the result as the model sees them (the centre crop), each under "
    "its heat map: brighter places add more to the score, and each map sums to it (7 x 7 places)."
)


def code(text: str) -> str:
    return f'<code style="overflow-wrap: anywhere">{escape(text)}</code>'


def shows_errors(handler):
    """Show what goes wrong in a callback in the panel: otherwise it only reaches a log nobody reads."""

    @functools.wraps(handler)
    def handle(panel, *args, **kwargs):
        try:
            handler(panel, *args, **kwargs)
        except Exception as error:
            panel.say(f"Search failed: {type(error).__name__}: {error}")

    return handle


class SearchPanel:
    """The panel's widgets (`widget`), and what each control does to the search whose results it shows.

    `client_of()` gives the Qdrant client at each search; `embed(path, data=bytes)` is the notebook's
    `embed_file` with its model, preprocessing and device.
    With `duplicates` (the notebook's near-duplicate rule), a new image (not a stored one) is said to be a
    duplicate of a stored image, or not, and why, by the rule that groups the collection.
    With `explainer`, a "why?" toggle shows the heat maps of the query and each result.
    """

    def __init__(
        self,
        client_of,
        collection: str,
        image_dir: Path,
        embed,
        top_k: int = 5,
        caption: str = "",
        duplicates: NearDuplicates | None = None,
        explainer: Explainer | None = None,
    ):
        self.client_of, self.collection, self.image_dir, self.embed = client_of, collection, image_dir, embed
        self.duplicates, self.explainer = duplicates, explainer
        self.search: Search | None = None
        self.hits: list[models.ScoredPoint] = []
        random_button = widgets.Button(description="Random stored image", icon="random", layout={"width": "auto"})
        random_button.on_click(self.search_random_image)
        self.name_or_path = widgets.Text(
            placeholder="or a stored image's name, or an image file's path",
            continuous_update=False,
            layout={"width": "340px"},
        )
        self.name_or_path.observe(lambda change: self.search_typed(change["new"]), names="value")
        self.limit = widgets.BoundedIntText(
            top_k, min=1, max=100, description="results", **COMPACT, layout={"width": "120px"}
        )
        labels = label_counts(client_of(), collection)
        options = [("all labels", "")] + [(f"{label} ({count})", label) for label, count in labels.items()]
        self.label = widgets.Dropdown(options=options, description="label", **COMPACT, layout={"width": "200px"})
        if not labels:
            self.label.layout.display = "none"
        for control in (self.limit, self.label):
            control.observe(self.search_again, names="value")
        self.query_sources = widgets.HBox([self.new_upload_button(), random_button, self.name_or_path])
        self.message = widgets.HTML()
        self.query_picture = widgets.Box()
        self.examples = widgets.HTML()
        self.start_over_button = widgets.Button(description="Start over", icon="undo", disabled=True)
        self.start_over_button.on_click(self.start_over)
        self.results = widgets.Box(layout={"flex_flow": "row wrap"})
        query_row = widgets.HBox([self.query_picture, widgets.VBox([self.examples, self.start_over_button])])
        weights = widgets.HTML("<small>" + "<br>".join(map(escape, caption.splitlines())) + "</small>")
        self.why = widgets.ToggleButton(description="why?", icon="question", tooltip="where each result agrees")
        self.why.observe(self.show_results_again, names="value")
        if explainer is None:
            self.why.layout.display = "none"
        options_row = widgets.HBox([self.limit, self.label, self.why])
        self.widget = widgets.VBox([self.query_sources, options_row, weights, self.message, query_row, self.results])
        self.widget.add_class("imgsim-panel")
        self.say(
            f"Upload an image of up to {MAX_UPLOAD_BYTES // 1_000_000} MB, take a random one from the collection, "
            "or type a stored image's name or the path of an image file on the machine running this notebook. "
            "Uploads are not stored anywhere. Jupyter's connection drops a bigger file, and the upload button then "
            "stops answering until this cell is run again. In Colab, upload files of 1 MB and more with its file "
            "browser (the folder icon on the left) and type their path here."
        )

    def new_upload_button(self) -> widgets.FileUpload:
        upload = widgets.FileUpload(  # HEIC and AVIF by extension: some browsers know no image type for them
            accept=",".join(["image/*", *sorted(IMAGE_EXTENSIONS)]),
            multiple=False,
            description="Upload an image",
            layout={"width": "auto"},
        )
        upload.observe(self.search_upload, names="value")
        return upload

    def say(self, text: str) -> None:
        self.message.value = escape(text)

    @shows_errors
    def search_upload(self, change) -> None:
        files = uploaded_files(change["new"])
        if not files:
            return
        upload = files[0]
        # A fresh button for the next file: the upload's bytes go with the old one (ipywidgets 7 and 8 alike).
        self.query_sources.children = (self.new_upload_button(), *self.query_sources.children[1:])
        change["owner"].close()
        if upload.size > MAX_UPLOAD_BYTES:
            self.say(
                f"{upload.name} is {upload.size / 1e6:.1f} MB, more than the {MAX_UPLOAD_BYTES // 1_000_000} MB a "
                "Jupyter connection carries: resize it, or put it into the image folder, run the notebook again to "
                "index it, and type its name here."
            )
            return
        data = bytes(upload.content)
        if len(data) < upload.size:
            self.say(incomplete_upload(upload, len(data)))
            return
        try:
            vector = self.embed(Path(upload.name), data=data)
        except ValueError as error:
            self.say(str(error))
            return
        query = Query(upload.name, vector=vector.tolist(), sha256=hashlib.sha256(data).hexdigest(), data=data)
        self.show(Search(query, **self.options()), query_picture=picture(data))

    @shows_errors
    def search_random_image(self, _button=None) -> None:
        key = random_stored_image(self.client_of(), self.collection, self.options()["label"])
        if key is None:
            self.say("The collection holds no image with this label.")
            return
        self.search_stored(key)

    @shows_errors
    def search_typed(self, text: str) -> None:
        """A stored image's name (its path relative to the image folder), or the path of any image file."""
        text = text.strip().strip("\"'")  # a path copied with quotes around it
        if not text:
            return
        key = self.stored_key(text)
        if key:
            self.search_stored(key)
            return
        path = Path(text).expanduser()
        if not path.is_file():
            self.say(
                f"No stored image is named {text}, and {path.absolute()} "
                f"{'is a folder' if path.is_dir() else 'does not exist'}. Type a stored image's name (its path "
                "relative to the image folder) or the path of an image file on the machine running this notebook."
            )
            return
        try:
            vector = self.embed(path)
        except ValueError as error:
            self.say(str(error))
            return
        data = path.read_bytes()
        query = Query(str(path), vector=vector.tolist(), sha256=hashlib.sha256(data).hexdigest(), data=data)
        self.show(Search(query, **self.options()), query_picture=picture(path))

    def stored_key(self, text: str) -> str | None:
        """The name of the stored image that `text` names, as its name or as a path into the image folder."""
        names = [text]
        path = Path(text).expanduser().resolve()
        if path.is_relative_to(self.image_dir.resolve()):
            names.append(path.relative_to(self.image_dir.resolve()).as_posix())
        points = self.client_of().retrieve(self.collection, list(map(point_id, names)), with_payload=["path"])
        return points[0].payload["path"] if points else None

    @shows_errors
    def search_stored(self, key: str) -> None:
        self.show(Search(Query(key, key=key), **self.options()), query_picture=picture(self.image_dir / key))

    @shows_errors
    def search_again(self, _change=None) -> None:
        if self.search:
            self.show(replace(self.search, **self.options()))

    @shows_errors
    def refine(self, key: str, more: bool) -> None:
        if more:
            self.show(replace(self.search, more_like=[*self.search.more_like, key]))
        else:
            self.show(replace(self.search, less_like=[*self.search.less_like, key]))

    @shows_errors
    def start_over(self, _button=None) -> None:
        self.show(replace(self.search, more_like=[], less_like=[]))

    def options(self) -> dict:
        return {"label": self.label.value or None, "limit": self.limit.value}

    def show(self, search: Search, query_picture: widgets.Widget | None = None) -> None:
        hits = run_search(self.client_of(), self.collection, search)
        self.search, self.hits = search, hits
        if query_picture:
            self.query_picture.children = [query_picture]
        self.show_results()
        has_examples = bool(search.more_like or search.less_like)
        self.start_over_button.disabled = not has_examples
        lines = [f"query: {code(search.query.name)}"]
        if search.more_like:
            lines.append("more like: " + ", ".join(map(code, search.more_like)))
        if search.less_like:
            lines.append("less like: " + ", ".join(map(code, search.less_like)))
        self.examples.value = "<br>".join(lines)
        kind = "a recommend query with these examples" if has_examples else "a query"
        where = f"label {search.label!r}" if search.label else "all labels"
        self.say(f"{len(hits)} results of {kind}, {where}.")
        if self.duplicates and search.query.vector is not None:
            query = search.query
            verdict = self.duplicates.judge(self.client_of(), self.collection, query.vector, query.sha256, query.data)
            self.message.value += f"<br><b>{escape(verdict)}</b>"

    @shows_errors
    def show_results_again(self, _change=None) -> None:
        if self.search:
            self.show_results()

    def show_results(self) -> None:
        """The result cards, with each one's heat maps while "why?" is on."""
        maps = self.heat_maps(self.hits) if self.why.value and self.hits else [None] * len(self.hits)
        cards = enumerate(zip(self.hits, maps, strict=True), 1)
        self.results.children = [self.result_card(rank, hit, why) for rank, (hit, why) in cards]

    def heat_maps(self, hits: list[models.ScoredPoint]) -> list[list[widgets.Widget]]:
        """For each hit, the query and the hit as the model sees them, each under its map of their score."""
        query = self.search.query
        source = self.image_dir / query.key if query.key else query.data or Path(query.name)
        paths = [self.image_dir / hit.payload["path"] for hit in hits]
        images, explanations = self.explainer.explain_files(source, paths, name=Path(query.name))
        limit = shared_limit([e.first_map for e in explanations] + [e.second_map for e in explanations])

        def heat_picture(pixels, grid_map) -> widgets.Image:
            overlay = Image.fromarray(heat_overlay(pixels, grid_map, limit, centred=False))
            return jpeg_image(overlay.resize((THUMBNAIL_SIZE, THUMBNAIL_SIZE)))

        return [
            [
                widgets.HTML(f"<small>why: the query's part of {explanation.score:.4f}, then this one's</small>"),
                heat_picture(images[0].pixels, explanation.first_map),
                heat_picture(image.pixels, explanation.second_map),
            ]
            for image, explanation in zip(images[1:], explanations, strict=True)
        ]

    def result_card(self, rank: int, hit: models.ScoredPoint, why: list[widgets.Widget] | None = None) -> widgets.VBox:
        key = hit.payload["path"]
        text = widgets.HTML(
            f"{rank}. score {hit.score:.4f}<br>label: {escape(hit.payload.get('label') or '(none)')}<br>{code(key)}"
        )
        more = widgets.Button(description="more like this", icon="plus", layout={"width": "auto"})
        less = widgets.Button(description="less like this", icon="minus", layout={"width": "auto"})
        more.on_click(lambda _: self.refine(key, more=True))
        less.on_click(lambda _: self.refine(key, more=False))
        maps = widgets.VBox(why or [])
        maps.add_class("imgsim-why")
        card = widgets.VBox([picture(self.image_dir / key), text, more, less, *([maps] if why else [])], layout=CARD)
        card.add_class("imgsim-result")
        return card
