"""The settings: the notebook's parameters cell, and `check_parameters` turning its values into typed settings."""

import re
import subprocess
import sys

import pytest
from conftest import NOTEBOOK, code_cells, notebook_defaults, notebook_parameters, parameters_cell, save_picture

from imgsim.files import SAMPLE_FOLDER
from imgsim.settings import PARAMETERS, SettingError, check_parameters, variable_of

DEFAULTS = notebook_defaults()  # read from the parameters cell, never restated here


def checked_variables() -> dict[str, str]:
    """Each parameter `check_parameters` checks and the environment variable its messages name."""
    return {name: variable_of(name) for name in PARAMETERS}


def test_the_parameters_cell_reads_one_setting_per_line_with_its_default_and_a_comment():
    cells = code_cells()
    source = "".join(parameters_cell()["source"])
    assert cells.index(source) <= 1, "the parameters cell comes first, after the install cell"
    assert source.startswith("from os import getenv\n\n")
    lines = source.split("\n\n", 1)[1].splitlines()
    assert len(lines) == len(notebook_parameters()), "NAME = getenv(VARIABLE, default), one a line"
    assert all(re.search(r'"\)  # \w', line) for line in lines), "each with a comment"
    read = {name: parameter.variable for name, parameter in notebook_parameters().items()}
    assert read == checked_variables(), "every parameter is checked, under the variable the cell reads"


def test_the_notebooks_defaults_pass_the_check_and_a_missing_parameter_is_named():
    settings = check_parameters(DEFAULTS)
    assert settings.image_dir == SAMPLE_FOLDER, "by default, the folder the sample set fills"
    assert settings.weights == "DEFAULT" and settings.max_images is None and settings.qdrant_url is None
    for name in ("TOP_K", "QDRANT_URL"):
        without = {other: value for other, value in DEFAULTS.items() if other != name}
        with pytest.raises(SettingError, match=rf"^{variable_of(name)} .* is not set: the parameters cell sets every"):
            check_parameters(without)


def test_papermill_sees_every_parameter_with_its_help():
    command = [sys.executable, "-m", "papermill", "--help-notebook", str(NOTEBOOK)]
    listed = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    inferred = dict(re.findall(r"^  (\w+): .*\n +(\S.*)$", listed, re.MULTILINE))
    assert set(inferred) == set(checked_variables()) and all(inferred.values())


GIVEN = DEFAULTS | {"WEIGHTS": "none", "DUPLICATE_THRESHOLD": "0.9", "PLANT_DUPLICATES": "0"}


@pytest.mark.parametrize(
    "name, value, accepted",
    [
        ("TOP_K", "abc", "a whole number of at least 1"),
        ("TOP_K", "0", "a whole number of at least 1"),
        ("MAX_IMAGES", "-3", "a whole number of at least 1 (or all)"),
        ("BATCH_SIZE", "eight", "(or auto)"),
        ("MODEL", "vgg16", "resnet18, resnet34, resnet50"),
        ("WEIGHTS", "IMAGENET_BEST", "IMAGENET1K_V2"),
        ("DEVICE", "gpu", "auto, cpu, cuda"),
        ("DUPLICATE_THRESHOLD", "1.5", "at most 1"),
        ("DUPLICATE_THRESHOLD", "high", "a number above -1"),
        ("PLANT_DUPLICATES", "-1", "at least 0"),
        ("COLLECTION", "a/b", "without '/'"),
        ("QDRANT_URL", "localhost:6333", "http://"),
        ("QUERY_IMAGE", "/no/such/image.jpg", "an image file that exists"),
        ("NEIGHBOUR_SOURCE", "faiss", "auto, numpy, qdrant"),
        # empty where the cell gives no meaning to empty: nothing is filled in
        ("IMAGE_DIR", "", "the folder of images to index"),
        ("QDRANT_PATH", "", "a folder for local mode's storage"),
        ("REPORT", "", "the path of the run report"),
        ("MAX_IMAGES", "", "a whole number of at least 1 (or all)"),
        ("WORKERS", " ", "a whole number of at least 1 (or auto)"),
        ("TOP_K", "", "a whole number of at least 1"),
        ("MODEL", "", "resnet18, resnet34, resnet50"),
        ("WEIGHTS", "", "IMAGENET1K_V2"),
        ("DEVICE", "", "auto, cpu, cuda"),
        ("DUPLICATE_THRESHOLD", "", "auto, or a number"),
        ("NEIGHBOUR_SOURCE", "", "auto, numpy, qdrant"),
        ("RUNTIME", "", "auto, torch, onnxruntime"),
    ],
)
def test_a_parameter_that_cannot_be_used_is_named_with_what_it_accepts(name, value, accepted):
    with pytest.raises(SettingError) as raised:
        check_parameters({**GIVEN, name: value})
    message = str(raised.value)
    assert message.startswith(variable_of(name)) and accepted in message and repr(value) in message


def test_parameters_become_typed_settings():
    settings = check_parameters({**GIVEN, "TOP_K": 7, "MAX_IMAGES": "all", "BATCH_SIZE": "auto", "WORKERS": "3"})
    assert settings.top_k == 7 and settings.max_images is None and settings.batch_size is None
    assert settings.workers == 3 and settings.duplicate_threshold == 0.9
    assert settings.image_dir == SAMPLE_FOLDER and settings.qdrant_url is None
    assert "secret" not in str(check_parameters({**GIVEN, "QDRANT_API_KEY": "secret"}))


def test_the_runtime_setting_is_auto_by_default_and_onnxruntime_only_where_it_can_run_the_model():
    parameters = DEFAULTS | {"MODEL": "resnet18", "WEIGHTS": "none", "PLANT_DUPLICATES": "9", "DEVICE": "cpu"}
    assert check_parameters(parameters).runtime == "auto"
    assert check_parameters(parameters | {"RUNTIME": " torch "}).runtime == "torch"
    assert check_parameters(parameters | {"RUNTIME": "onnxruntime"}).runtime == "onnxruntime"
    with pytest.raises(SettingError, match="IMGSIM_RUNTIME .*one of auto, torch, onnxruntime, not 'onnx'"):
        check_parameters(parameters | {"RUNTIME": "onnx"})
    with pytest.raises(SettingError, match="IMGSIM_RUNTIME .*auto or torch with IMGSIM_PRECISION=bfloat16"):
        check_parameters(parameters | {"RUNTIME": "onnxruntime", "PRECISION": "bfloat16"})
    assert check_parameters(parameters | {"PRECISION": "bfloat16"}).runtime == "auto"  # auto then picks torch


def test_the_precision_setting_is_float32_by_default_and_a_wrong_value_names_the_variable():
    parameters = DEFAULTS | {"MODEL": "resnet18", "WEIGHTS": "none", "PLANT_DUPLICATES": "9"}
    assert check_parameters(parameters).precision == "float32"
    assert check_parameters(parameters | {"PRECISION": " bfloat16 "}).precision == "bfloat16"
    with pytest.raises(SettingError, match="IMGSIM_PRECISION .*one of float32, float16, bfloat16, not 'fp16'"):
        check_parameters(parameters | {"PRECISION": "fp16"})


def test_neighbour_source_auto_means_numpy_in_local_mode_and_qdrant_on_a_server():
    parameters = DEFAULTS | {"MODEL": "resnet18", "WEIGHTS": "none", "PLANT_DUPLICATES": "9"}
    assert check_parameters(parameters).neighbour_source == "numpy"
    assert check_parameters(parameters | {"QDRANT_URL": "http://qdrant:6333"}).neighbour_source == "qdrant"
    assert check_parameters(parameters | {"NEIGHBOUR_SOURCE": "qdrant"}).neighbour_source == "qdrant"


def test_calibrating_needs_planted_copies():
    parameters = DEFAULTS | {"MODEL": "resnet18", "WEIGHTS": "none"}
    needs_copies = "IMGSIM_PLANT_DUPLICATES .* at least 1 while IMGSIM_DUPLICATE_THRESHOLD is auto"
    with pytest.raises(SettingError, match=needs_copies):
        check_parameters(parameters | {"DUPLICATE_THRESHOLD": "auto", "PLANT_DUPLICATES": "0"})
    given = check_parameters(parameters | {"DUPLICATE_THRESHOLD": "0.8", "PLANT_DUPLICATES": "0"})
    assert given.duplicate_threshold == 0.8 and given.plant_duplicates == 0


def test_a_quarantine_inside_the_image_folder_is_refused(tmp_path):
    images = tmp_path / "images"
    parameters = DEFAULTS | {"MODEL": "resnet18", "WEIGHTS": "none"}
    parameters |= {"IMAGE_DIR": str(images), "DUPLICATE_THRESHOLD": "0.9", "PLANT_DUPLICATES": "0"}
    for inside in (images / "duplicates", images, tmp_path):
        with pytest.raises(SettingError, match="IMGSIM_MOVE_DUPLICATES_TO .* outside the image folder"):
            check_parameters(parameters | {"MOVE_DUPLICATES_TO": str(inside)})
    assert check_parameters(parameters).move_duplicates_to is None, "by default nothing moves"
    outside = check_parameters(parameters | {"MOVE_DUPLICATES_TO": str(tmp_path / "duplicates")})
    assert outside.move_duplicates_to == tmp_path / "duplicates"


def test_missing_weights_file_says_how_to_supply_one(tmp_path):
    with pytest.raises(SettingError, match="IMGSIM_WEIGHTS=none") as raised:
        check_parameters(DEFAULTS | {"WEIGHTS": str(tmp_path / "absent.pth")})
    assert "torch.save" in str(raised.value)


def test_unknown_weights_name_lists_the_choices():
    with pytest.raises(SettingError, match="IMAGENET1K_V2"):
        check_parameters(DEFAULTS | {"MODEL": "resnet50", "WEIGHTS": "IMAGENET_BEST"})


def test_unknown_model_is_refused():
    with pytest.raises(SettingError, match="resnet152"):
        check_parameters(DEFAULTS | {"MODEL": "vgg16", "WEIGHTS": "none"})


def test_weights_become_none_a_name_or_the_path_of_a_file(tmp_path):
    (tmp_path / "mine.pth").write_bytes(b"a state dict")
    weights = {value: check_parameters(DEFAULTS | {"WEIGHTS": value}).weights for value in ("None", "IMAGENET1K_V1")}
    assert weights == {"None": "none", "IMAGENET1K_V1": "IMAGENET1K_V1"}
    assert check_parameters(DEFAULTS | {"WEIGHTS": str(tmp_path / "mine.pth")}).weights == tmp_path / "mine.pth"


def test_notebook_stops_with_a_clear_message_when_the_weights_file_is_missing(tmp_path, notebook):
    save_picture(tmp_path / "images" / "p.png", 0)
    notebook.set(IMAGE_DIR=str(tmp_path / "images"), WEIGHTS=str(tmp_path / "missing.pth"))

    report, _, error = notebook.run()

    assert report is None
    assert error is not None and "SettingError" in error.summary + error.trace
    assert "IMGSIM_WEIGHTS=none" in error.trace
    assert not notebook.qdrant_path.exists(), "checked with the other settings, before any work starts"


def test_notebook_stops_at_the_top_on_a_bad_parameter(tmp_path, notebook):
    save_picture(tmp_path / "images" / "p.png", 0)
    notebook.set(IMAGE_DIR=str(tmp_path / "images"), TOP_K="abc")

    report, executed, error = notebook.run()

    assert report is None and error is not None
    assert "IMGSIM_TOP_K" in error.trace and "a whole number of at least 1" in error.trace
    assert not notebook.qdrant_path.exists(), "nothing may run before the parameters are checked"
