"""`run` and `info` read a model's metadata from its folder: preprocessing, input size,
classes and nodes come from config.json, never from a guess."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import disco_zoo
from disco_zoo.commands.info import model_report
from disco_zoo.commands.run import image_tensor, prepare_folder
from disco_zoo.errors import DiscoZooError
from disco_zoo.hub import get_pretrained_cfg

SCRIPT = str(Path(sys.executable).parent / "disco-zoo")


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    """A real photograph (scikit-image's camera man) as a PNG file."""
    from skimage import data

    path = tmp_path_factory.mktemp("photo") / "camera.png"
    Image.fromarray(data.camera()).save(path)
    return path


def test_image_is_preprocessed_with_the_models_own_config(photo, tmp_path):
    config = get_pretrained_cfg("resnet18_disco_2node.digits")
    x = np.load(image_tensor(photo, config, config.input_size[-1], tmp_path))
    assert x.shape == (1, 3, 32, 32)
    expected = disco_zoo.create_transform(config)(Image.open(photo).convert("RGB")).numpy()
    np.testing.assert_allclose(x[0], expected, atol=1e-6)
    # digits' statistics, not ImageNet's: one mean/std for every channel, so a grey photo
    # gives three equal channels (ImageNet's per-channel statistics would not), in [0, 1] once undone
    np.testing.assert_array_equal(x[0, 0], x[0, 2])
    pixels = x * config.std[0] + config.mean[0]
    assert pixels.min() >= -1e-6 and pixels.max() <= 1 + 1e-6


def test_run_classifies_a_png_as_the_single_process_model_does(photo):
    env = {**os.environ, "COLUMNS": "200"}
    out = subprocess.run([SCRIPT, "run", "resnet18-disco-2node", "--input", str(photo), "--json", "--timeout", "60"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["input_size"] == 32
    model = disco_zoo.create_model("resnet18_disco_2node.digits", pretrained=True)
    x = disco_zoo.create_transform(model)(Image.open(photo).convert("RGB"))[None]
    with torch.no_grad():
        logits = model(x)[0]
    for top in report["top5"]:
        assert top["logit"] == pytest.approx(float(logits[top["class"]]), abs=1e-4)
    assert report["top5"][0]["class"] == int(logits.argmax())


def test_run_refuses_a_node_count_the_model_is_not_split_for(tmp_path):
    with pytest.raises(DiscoZooError, match="split over 2 nodes"):
        prepare_folder("resnet18-disco-2node", 4, tmp_path)


def test_run_needs_published_weights_or_an_explicit_untrained_flag(tmp_path):
    from disco_zoo.hub import HubError

    with pytest.raises(HubError, match="no pretrained weights"):
        prepare_folder("resnet34", 2, tmp_path / "a")
    folder, weights = prepare_folder("resnet34", 2, tmp_path / "b", untrained=True)
    assert "UNTRAINED" in weights and (folder / "node1.safetensors").is_file()


def test_info_honours_the_tag_and_the_configs_size_and_classes():
    report = model_report("resnet50.digits", None, None, "fp32")
    assert report["model"] == "resnet50.digits"
    assert report["input_size"] == 32 and report["num_classes"] == 10
    bare = model_report("resnet50", None, None, "fp32")  # the architecture itself: ImageNet-sized
    assert bare["input_size"] == 224 and bare["num_classes"] == 1000


def test_info_checks_nodes_against_the_model():
    with pytest.raises(DiscoZooError, match="split over 2 nodes"):
        model_report("resnet18-disco-2node", 4, None, "fp32")
    report = model_report("resnet18-disco-2node", None, None, "fp32")
    assert report["nodes"] == 2 and report["input_bytes_per_pair"] == {"0->1": 1 * 32 * 32 * 4}
