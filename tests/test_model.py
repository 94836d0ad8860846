"""Loading the model: a weights file, the torch hub cache, and clear errors when weights are missing."""

import urllib.error
from pathlib import Path
from urllib.parse import urlparse

import pytest
import torch
import torchvision
from conftest import save_picture

from imgsim.model import build_resnet, feature_extractor


def seeded_resnet18_state(seed: int) -> dict:
    torch.manual_seed(seed)
    return torchvision.models.resnet18(weights=None).state_dict()


def assert_same_weights(model, state: dict) -> None:
    loaded = model.state_dict()
    assert all(torch.equal(loaded[name], value) for name, value in state.items() if name in loaded)


def test_weights_file_is_loaded(tmp_path):
    state = seeded_resnet18_state(7)
    path = tmp_path / "my weights.pth"
    torch.save(state, path)

    model, preprocess, weights_id, vector_size = feature_extractor("resnet18", path, torch.device("cpu"))

    assert vector_size == 512
    assert weights_id.startswith("file my weights.pth sha256:")
    assert isinstance(model.fc, torch.nn.Identity)
    assert not model.training
    assert_same_weights(model, {k: v for k, v in state.items() if not k.startswith("fc.")})
    assert preprocess.crop_size == [224]
    with torch.inference_mode():
        assert model(torch.rand(2, 3, 224, 224)).shape == (2, 512)


def test_a_headless_state_dict_or_one_with_another_head_loads(tmp_path):
    state = seeded_resnet18_state(5)
    headless = {key: value for key, value in state.items() if not key.startswith("fc.")}
    torch.save(headless, tmp_path / "headless.pth")
    torch.save(headless | {"fc.weight": torch.zeros(128, 512), "fc.bias": torch.zeros(128)}, tmp_path / "head128.pth")

    for name in ("headless.pth", "head128.pth"):
        model, _, weights_id, vector_size = feature_extractor("resnet18", tmp_path / name, torch.device("cpu"))
        assert vector_size == 512 and weights_id.startswith(f"file {name} sha256:")
        assert_same_weights(model, headless)


def test_a_state_dict_missing_a_backbone_key_stops_with_its_name(tmp_path):
    state = seeded_resnet18_state(5)
    del state["layer2.0.conv1.weight"]
    state["layer9.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "broken.pth")

    with pytest.raises(ValueError) as raised:
        build_resnet("resnet18", tmp_path / "broken.pth")
    message = str(raised.value)
    assert "broken.pth" in message and "layer2.0.conv1.weight" in message and "layer9.weight" in message


def test_the_trained_weights_file_loads(trained_weights):
    model, _, weights_id, vector_size = feature_extractor("resnet50", trained_weights, torch.device("cpu"))
    assert vector_size == 2048 and weights_id.startswith(f"file {trained_weights.name} sha256:")
    with torch.inference_mode():
        features = model(torch.rand(2, 3, 224, 224))
    assert features.shape == (2, 2048) and torch.isfinite(features).all()


def test_default_weights_come_from_the_torch_hub_cache(tmp_path, monkeypatch):
    weights = torchvision.models.ResNet18_Weights.DEFAULT
    cached = tmp_path / "hub" / "checkpoints" / Path(urlparse(weights.url).path).name
    cached.parent.mkdir(parents=True)
    state = seeded_resnet18_state(3)
    torch.save(state, cached)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    model, _, weights_id = build_resnet("resnet18", "DEFAULT")

    assert weights_id == "IMAGENET1K_V1"
    assert_same_weights(model, state)


def test_failed_download_stops_with_offline_instructions(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def unreachable(*args, **kwargs):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(torch.hub, "urlopen", unreachable)
    with pytest.raises(RuntimeError, match="Offline") as raised:
        build_resnet("resnet50", "DEFAULT")
    message = str(raised.value)
    assert "IMGSIM_WEIGHTS=/path/to/weights.pth" in message and "IMGSIM_WEIGHTS=none" in message
    assert str(tmp_path / "hub" / "checkpoints") in message


def test_random_weights_are_seeded_and_announced():
    with pytest.warns(UserWarning, match="NOT semantic"):
        first, _, weights_id = build_resnet("resnet18", "none")
    with pytest.warns(UserWarning):
        second, _, _ = build_resnet("resnet18", "none")
    assert weights_id.startswith("none")
    assert_same_weights(first, second.state_dict())


def test_notebook_runs_with_a_weights_file(tmp_path, notebook):
    weights = tmp_path / "resnet18.pth"
    torch.save(seeded_resnet18_state(11), weights)
    for seed in range(3):
        save_picture(tmp_path / "images" / f"p{seed}.png", seed)
    notebook.set(IMAGE_DIR=str(tmp_path / "images"), WEIGHTS=str(weights))

    report = notebook.run_ok()

    assert report["weights"].startswith("file resnet18.pth sha256:")
    assert report["points_in_collection"] == 3
    assert all(payload["model"] == f"resnet18/{report['weights']}" for payload in notebook.stored_payloads().values())
