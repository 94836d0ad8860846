"""Step 6, why two images match: where in each picture their score comes from, as two heat maps.

A ResNet's vector of an image is an average: its last feature map has one vector of 2048 numbers (512
for ResNet-18/34) for each of 7 x 7 = 49 places of the 224-pixel input, and the average pool takes their
mean, p = (1/N) sum_i F[i]. The cosine of two images is therefore a sum over pairs of places:

    cos(p_A, p_B) = sum_i sum_j <F_A[i], F_B[j]> / (N^2 |p_A| |p_B|)

Summing each row of those N x N terms gives image A's map (what each of its places adds to the score),
each column image B's; each map sums to the score exactly. The centred score of the near-duplicates
subtracts the collection's mean vector m from the unit vectors first: v - m = (1/N) sum_i (F[i] / |p| - m),
so the same split holds with every place shifted by m and the centred lengths below the line; there,
places that pull the score down come out negative. With plain cosine every term is zero or positive
(the features come out of a ReLU): the map shows what helped a match, never what hurt it.

The maps come from the model's last feature map, without gradients: a second output of the ONNX Runtime
graph (`imgsim.runtime`), or the torch model's layers. Stylianou, Souvenir & Pless, "Visualizing Deep
Similarity Networks" (WACV 2019) make the same split; docs/explaining-similarity.md says more.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from imgsim.model import Autocast, last_feature_map
from imgsim.reading import LoadedImage, decode_image, load_image, normalise_pixels
from imgsim.runtime import OnnxRuntimeModel


@dataclass(frozen=True)
class Explanation:
    """How the score of two images (a query and a match, or a kept image and a member) splits over their places.

    `pairs[i, j]` is what place i of the first image and place j of the second add to `score`; places are
    numbered row by row on a grid of `grid` (rows, columns), 7 x 7 at 224 pixels.
    """

    score: float
    pairs: np.ndarray
    grid: tuple[int, int]
    centred: bool

    @property
    def first_map(self) -> np.ndarray:
        """What each place of the first image adds to the score (rows x columns); it sums to the score."""
        return self.pairs.sum(axis=1).reshape(self.grid)

    @property
    def second_map(self) -> np.ndarray:
        """What each place of the second image adds to the score; it sums to the score."""
        return self.pairs.sum(axis=0).reshape(self.grid)

    def partners_of(self, place: tuple[int, int]) -> np.ndarray:
        """Where in the second image one place of the first finds its partners: that place's terms, as a map."""
        return self.pairs[place[0] * self.grid[1] + place[1]].reshape(self.grid)


def place_vectors(feature_map: np.ndarray, mean: np.ndarray | None) -> np.ndarray:
    """Each place's vector (places x channels) scaled as the unit vector is, minus the collection's mean when
    given: their average is the image's unit vector, or its shifted vector that the centred score normalises."""
    places = feature_map / np.linalg.norm(feature_map.mean(axis=0))
    return places if mean is None else places - mean


def explain_pair(first: np.ndarray, second: np.ndarray, grid: tuple[int, int], mean=None) -> Explanation:
    """The split of two images' cosine (centred on `mean` when given) over pairs of their places.

    `first` and `second` are feature maps as places x channels. `score` is the cosine of the two images'
    (centred) average vectors, computed on its own; the maps sum to it within float rounding.
    """
    first_places = place_vectors(first.astype(np.float64), mean)
    second_places = place_vectors(second.astype(np.float64), mean)
    first_vector, second_vector = first_places.mean(axis=0), second_places.mean(axis=0)
    lengths = np.linalg.norm(first_vector) * np.linalg.norm(second_vector)
    pairs = first_places @ second_places.T / (len(first_places) * len(second_places) * lengths)
    return Explanation(float(first_vector @ second_vector / lengths), pairs, grid, mean is not None)


def upsampled(grid_map: np.ndarray, side: int) -> np.ndarray:
    """A map of places smoothly enlarged to side x side pixels (bilinear), for drawing over the model's input."""
    values = torch.from_numpy(np.ascontiguousarray(grid_map, dtype=np.float32))[None, None]
    enlarged = torch.nn.functional.interpolate(values, size=(side, side), mode="bilinear", align_corners=False)
    return enlarged[0, 0].numpy()


def read_for_model(source: Path | bytes, preprocess, name: Path | None = None) -> LoadedImage:
    """An image file (or an image's bytes, named `name`) as the model sees it; ValueError with the reason if not."""
    loaded = load_image(source, preprocess) if isinstance(source, Path) else decode_image(source, name, preprocess)
    if loaded.error:
        raise ValueError(f"cannot explain {loaded.path}: {loaded.error}")
    return loaded


@dataclass
class Explainer:
    """Explains scores with the notebook's model: the torch ResNet, or ONNX Runtime's graph with its second output."""

    model: object
    preprocess: object
    device: torch.device

    @torch.inference_mode()
    def feature_maps(self, images: list[LoadedImage]) -> tuple[np.ndarray, tuple[int, int]]:
        """The last feature map of each image, as images x places x channels, and the grid of places."""
        batch = normalise_pixels(torch.stack([image.pixels for image in images]).to(self.device), self.preprocess)
        batch = batch.contiguous(memory_format=torch.channels_last)
        if isinstance(self.model, OnnxRuntimeModel):
            maps = self.model.feature_map(batch)
        else:  # float32 even when the search runs under autocast: the maps add up in full precision
            maps = last_feature_map(self.model.model if isinstance(self.model, Autocast) else self.model, batch)
        maps = maps.float().cpu()
        return maps.flatten(2).transpose(1, 2).numpy(), tuple(maps.shape[2:])

    def explain(self, first: LoadedImage, others: list[LoadedImage], mean=None) -> list[Explanation]:
        """`first` against each of `others`: plain cosine, as search ranks, or centred on `mean`, as near-duplicates."""
        maps, grid = self.feature_maps([first, *others])
        return [explain_pair(maps[0], other, grid, mean) for other in maps[1:]]

    def explain_files(self, first: Path | bytes, others: list[Path], mean=None, name: Path | None = None):
        """(the images as the model sees them, first first; `first` against each of `others`) for image files
        (`first` may be an image's bytes, named `name`)."""
        images = [read_for_model(first, self.preprocess, name)] + [read_for_model(p, self.preprocess) for p in others]
        return images, self.explain(images[0], images[1:], mean)
