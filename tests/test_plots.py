"""The figures as files and as the notebook shows them: files at the resolution asked for, pictures on
screen at screen size, photos as JPEG so that the executed notebook stays light."""

import io

import matplotlib.pyplot as plt
import numpy as np
from conftest import save_picture
from PIL import Image

from imgsim.plots import SCREEN_WIDTH, Figures, on_screen, plot_thumbnail_rows


def test_a_figure_is_saved_at_the_resolution_asked_for(tmp_path):
    figures = Figures(tmp_path / "figures", image_dir=tmp_path)
    fig, ax = plt.subplots(figsize=(8, 3))
    ax.plot([0, 1], [1, 0])
    figures.save("chart", fig, dpi=90)
    assert Image.open(figures.saved["chart"]).size == (720, 270)
    assert not plt.get_fignums(), "a shown figure is closed"


def test_photos_are_shown_as_a_jpeg_no_wider_than_the_screen_and_lighter_than_a_png(tmp_path):
    photos = [save_picture(tmp_path / f"picture_{seed}.jpg", seed, (640, 480)) for seed in range(12)]
    fig = plot_thumbnail_rows([[(path, path.name) for path in photos[:6]], [(p, p.name) for p in photos[6:]]], "")
    shown = on_screen(fig)
    png = io.BytesIO()
    fig.savefig(png, format="png", bbox_inches="tight")  # as the notebook showed it before
    assert shown.format == "jpeg" and Image.open(io.BytesIO(shown.data)).format == "JPEG"
    assert Image.open(io.BytesIO(shown.data)).width <= SCREEN_WIDTH
    assert len(shown.data) < len(png.getvalue()) / 3
    plt.close(fig)


def test_a_chart_is_shown_as_a_sharp_png_at_matplotlibs_resolution():
    fig, ax = plt.subplots(figsize=(8, 3))
    ax.hist(np.random.default_rng(0).random(100))
    shown = on_screen(fig)
    assert shown.format == "png" and Image.open(io.BytesIO(shown.data)).format == "PNG"
    assert Image.open(io.BytesIO(shown.data)).size == (800, 300), "8 x 3 inches at 100 dpi"
    plt.close(fig)
