"""The trained ResNet-50 the README's pictures and the quality benchmarks use: AugNet's backbone, as a file.

    python benchmarks/augnet_weights.py data/resnet50-augnet-backbone.pth
    IMGSIM_WEIGHTS=data/resnet50-augnet-backbone.pth jupyter lab

AugNet (Chen et al., 2021, github.com/chenmingxiang110/AugNet, MIT licence) trained a torchvision ResNet-50
without labels, so that augmented copies of a picture land close together. Its weights ship as
`imgsim/model.pth` inside version 0.1.2 of the PyPI package `imgsim`, an unrelated project that happens to
use this project's import name: this script downloads that wheel with pip (about 100 MB, without installing
it), keeps the backbone (keys stripped of `module.pre.`) and drops the 2048 → 768 `fc` head, which is not
torchvision's. The notebook loads the file as it is: a state dict without `fc` is accepted. Saved under the
name above, the file is byte for byte the one the pictures name (sha256 a8800d6975b3; torch.save records
the file's name inside it, so another name gives another hash for the same tensors).
"""

import argparse
import hashlib
import io
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import torch

WHEEL = "imgsim==0.1.2"
PREFIX = "module.pre."


def backbone_state_dict(checkpoint: dict) -> dict:
    """AugNet's checkpoint as a torchvision resnet50 state dict without the fc head."""
    backbone = {key.removeprefix(PREFIX): value for key, value in checkpoint.items()}
    return {key: value for key, value in backbone.items() if not key.startswith("fc.")}


def augnet_checkpoint() -> dict:
    """`imgsim/model.pth` from the imgsim 0.1.2 wheel, downloaded by pip into a temporary folder."""
    with tempfile.TemporaryDirectory() as folder:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--dest", folder, WHEEL], check=True)
        (wheel,) = Path(folder).glob("*.whl")
        with zipfile.ZipFile(wheel) as archive:
            return torch.load(io.BytesIO(archive.read("imgsim/model.pth")), map_location="cpu", weights_only=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path, help="where to write the state dict (.pth)")
    output = parser.parse_args().output
    output.parent.mkdir(parents=True, exist_ok=True)
    state = backbone_state_dict(augnet_checkpoint())
    torch.save(state, output)
    digest = hashlib.sha256(output.read_bytes()).hexdigest()
    print(f"{output}: {len(state)} tensors of torchvision's resnet50 without fc, sha256 {digest[:12]}")
    print(f"use it with IMGSIM_WEIGHTS={output}")


if __name__ == "__main__":
    main()
