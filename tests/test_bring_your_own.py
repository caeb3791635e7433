"""Bring your own model and data (issue 18): ``train`` on an ImageFolder, ``--init`` from a
timm checkpoint or a disco-zoo folder (a head for other classes re-initialised, as timm
does), and ``eval`` / ``info`` / ``run`` given a folder path as well as a name."""
import json
import re
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file
from torch import nn
from typer.testing import CliRunner

from disco_zoo import hub
from disco_zoo.cli import app
from disco_zoo.commands.info import model_report
from disco_zoo.commands.run import prepare_folder
from disco_zoo.errors import DiscoZooError
from disco_zoo.harness import evaluate
from disco_zoo.weights import classifier_names, load_pretrained_state, read_checkpoint, save_dense

from helpers import write_image_folder

CLASSES = ("ant", "bee", "cat")


def image_folder_root(root: Path, classes=CLASSES) -> Path:
    """A tiny ImageFolder root: ``train/`` and ``val/``, two 12x12 images per class."""
    for split in ("train", "val"):
        write_image_folder(root / split, classes=classes, per_class=2, size=(12, 12))
    return root


def cli(*args: str):
    """The real CLI app, in process (a DiscoZooError comes back as ``result.exception``)."""
    return CliRunner().invoke(app, list(args))


def tiny_resnet(num_classes: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return timm.create_model("resnet18", num_classes=num_classes).eval()


# -- loading a state dict into a model built for the data's classes ---------------------


def test_a_head_for_another_number_of_classes_is_reinitialised():
    source = tiny_resnet(7, seed=1)
    path = Path("unused.safetensors")
    from disco_zoo.weights import Checkpoint

    model = tiny_resnet(3, seed=2)
    fresh_head = model.fc.weight.detach().clone()
    note = load_pretrained_state(model, Checkpoint(path, path, source.state_dict()))
    assert note is not None and "re-initialised the classifier fc" in note and "7 classes" in note and "3 in" in note
    assert torch.equal(model.conv1.weight, source.conv1.weight)
    assert torch.equal(model.layer4[1].bn2.running_var, source.layer4[1].bn2.running_var)
    assert torch.equal(model.fc.weight, fresh_head)  # the model's own initialisation, as timm leaves it
    same = tiny_resnet(7, seed=3)
    assert load_pretrained_state(same, Checkpoint(path, path, source.state_dict())) is None
    assert torch.equal(same.fc.weight, source.fc.weight)


def test_a_model_without_a_named_classifier_uses_its_last_linear_layer():
    def net(classes: int) -> nn.Module:
        return nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, classes))

    from disco_zoo.weights import Checkpoint

    assert classifier_names(net(2)) == ("4",)
    assert classifier_names(tiny_resnet(2)) == ("fc",)
    source, model = net(5), net(2)
    note = load_pretrained_state(model, Checkpoint(Path("x"), Path("x"), source.state_dict()))
    assert note and "classifier 4" in note
    assert torch.equal(model[2].weight, source[2].weight)


def test_same_count_other_class_names_reinitialise_the_head(tmp_path):
    source = tiny_resnet(3, seed=1)
    save_dense(source, tmp_path / "resnet18.pets", {"arch": "resnet18", "args": {"num_classes": 3},
                                                    "class_names": ["cat", "dog", "emu"]})
    checkpoint = read_checkpoint(tmp_path / "resnet18.pets")
    assert checkpoint.config is not None and checkpoint.class_names == ("cat", "dog", "emu")
    model = tiny_resnet(3, seed=2)
    note = load_pretrained_state(model, checkpoint, CLASSES)
    assert note and "class names are not the data's" in note
    assert not torch.equal(model.fc.weight, source.fc.weight)
    kept = tiny_resnet(3, seed=2)
    assert load_pretrained_state(kept, checkpoint, ("cat", "dog", "emu")) is None
    assert torch.equal(kept.fc.weight, source.fc.weight)


def test_any_other_mismatch_names_the_tensor_and_both_shapes():
    from disco_zoo.weights import Checkpoint

    state = tiny_resnet(3).state_dict()
    state["layer1.0.conv1.weight"] = torch.zeros(64, 64, 1, 1)
    with pytest.raises(DiscoZooError, match=r"'layer1.0.conv1.weight' has shape \[64, 64, 1, 1\] in the checkpoint "
                                            r"but \[64, 64, 3, 3\] in the model"):
        load_pretrained_state(tiny_resnet(3), Checkpoint(Path("c"), Path("c"), state))
    state = tiny_resnet(3).state_dict()
    state.pop("layer2.0.bn1.weight")
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(DiscoZooError, match=r"missing 1 tensor\(s\) the model has: layer2.0.bn1.weight; "
                                            r"1 tensor\(s\) the model lacks: extra.weight"):
        load_pretrained_state(tiny_resnet(3), Checkpoint(Path("c"), Path("c"), state))
    state = tiny_resnet(3).state_dict()
    state["fc.weight"] = torch.zeros(3, 100)  # another feature width is not a head for other classes
    with pytest.raises(DiscoZooError, match="'fc.weight' has shape"):
        load_pretrained_state(tiny_resnet(3), Checkpoint(Path("c"), Path("c"), state))


# -- what --init reads ----------------------------------------------------------------------


def test_checkpoint_formats(tmp_path):
    from timm.models import save_for_hf

    source = tiny_resnet(7)
    save_file(source.state_dict(), str(tmp_path / "r18.safetensors"))
    plain = read_checkpoint(tmp_path / "r18.safetensors")
    assert plain.config is None and plain.timm_architecture is None and set(plain.state) == set(source.state_dict())
    save_for_hf(source, str(tmp_path / "timm_folder"), safe_serialization=True)
    folder = read_checkpoint(tmp_path / "timm_folder")
    assert folder.timm_architecture == "resnet18" and folder.weights_file.name == "model.safetensors"
    torch.save(source.state_dict(), tmp_path / "r18.pth")
    with pytest.raises(DiscoZooError, match="not a readable safetensors file.*never pickle"):
        read_checkpoint(tmp_path / "r18.pth")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DiscoZooError, match="holds no model.safetensors"):
        read_checkpoint(tmp_path / "empty")
    disco = tmp_path / "resnet18.d"
    save_dense(source, disco, {"arch": "resnet18", "args": {"num_classes": 7}})
    (disco / "model.safetensors").write_bytes(b"x" + (disco / "model.safetensors").read_bytes()[1:])
    with pytest.raises(DiscoZooError, match="sha256"):
        read_checkpoint(disco)  # a disco-zoo folder's hashes are checked
    with pytest.raises(DiscoZooError, match="expected a dense model folder"):
        read_checkpoint(hub.resolve_folder("resnet18_disco_2node.digits"))


# -- a name or a path, told apart in one place ---------------------------------------------------


def test_a_name_or_a_path(tmp_path, monkeypatch):
    folder = tmp_path / "mine"
    save_dense(tiny_resnet(3), folder, {"arch": "resnet18", "args": {"num_classes": 3}, "tag": "mine"})
    assert hub.is_model_path(str(folder)) and hub.is_model_path("./x") and not hub.is_model_path("resnet18.digits")
    assert hub.resolve_folder(str(folder)) == folder
    assert hub.load(str(folder)).pretrained_cfg.name == "resnet18.mine"
    monkeypatch.chdir(tmp_path)
    assert hub.is_model_path("mine")  # a folder with a config.json here
    (tmp_path / "resnet18").mkdir()
    assert not hub.is_model_path("resnet18")  # an empty folder named like a model: the name wins
    assert hub.is_model_path("./resnet18")
    with pytest.raises(DiscoZooError, match="holds no config.json"):
        hub.resolve_folder("./resnet18")
    with pytest.raises(DiscoZooError, match="'./gone': no such folder"):
        hub.resolve_folder("./gone")
    with pytest.raises(DiscoZooError, match="not a file or folder here, nor a model name"):
        hub.resolve_path_or_name("ckpt.safetensors")


def test_info_and_run_take_a_folder_path(tmp_path):
    folder = tmp_path / "resnet18.bugs"
    save_dense(tiny_resnet(3), folder, {"arch": "resnet18", "args": {"num_classes": 3}, "input_size": [3, 16, 16],
                                        "class_names": list(CLASSES)})
    report = model_report(str(folder), None, None, "fp32")
    assert report["model"] == "resnet18.bugs" and report["input_size"] == 16 and report["num_classes"] == 3
    shards, weights = prepare_folder(str(folder), 2, tmp_path / "scratch")
    assert "resnet18.bugs" in weights and (shards / "node1.safetensors").is_file()
    disco, how = prepare_folder(str(hub.resolve_folder("resnet18_disco_2node.digits")), None, tmp_path / "s2")
    assert how == "shards"


def test_eval_takes_a_folder_path_and_finds_the_dense_model_beside_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    dense = tmp_path / "resnet18.bugs"
    save_dense(tiny_resnet(3), dense, {"arch": "resnet18", "args": {"num_classes": 3}})
    with pytest.raises(DiscoZooError, match="resnet18.bugs is a dense model"):
        evaluate(str(dense))  # resolved from its path, then refused for what it is
    # a DISCO folder names its dense counterpart (arch.tag): beside it is searched first,
    # and the latency baseline (in eval and on rank 0) loads it from that path
    assert hub.resolve_folder("resnet18.bugs", near=tmp_path) == dense
    from disco_zoo.harness.latency import load_dense_measured
    from disco_zoo.runtime.rounds import build_dense

    assert load_dense_measured(str(dense))[0].pretrained_cfg.name == "resnet18.bugs"
    assert build_dense(str(dense)).pretrained_cfg.name == "resnet18.bugs"
    with pytest.raises(DiscoZooError, match="looked in: " + re.escape(str(tmp_path / "resnet18.pets"))):
        hub.resolve_folder("resnet18.pets", near=tmp_path)


# -- the commands ---------------------------------------------------------------------------------


def test_train_on_an_image_folder_from_a_timm_checkpoint(tmp_path):
    """Classes and num_classes follow the folder; with lr 0 every loaded tensor is the
    checkpoint's, and the head (7 ImageNet-style classes there, 3 here) is the model's own."""
    data = image_folder_root(tmp_path / "bugs")
    source = tiny_resnet(7)
    save_file(source.state_dict(), str(tmp_path / "r18.safetensors"))
    out = tmp_path / "models" / "resnet18.bugs"
    result = cli("train", "resnet18", "--data", str(data), "--init", str(tmp_path / "r18.safetensors"), "--epochs", "1",
                 "--lr", "0", "--input-size", "16", "--storage", "fp32", "--out", str(out))
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert result.output.count("re-initialised the classifier fc (7 classes in the checkpoint, 3 in the data)") == 1
    config = json.loads((out / "config.json").read_text())
    assert config["class_names"] == list(CLASSES) and config["args"]["num_classes"] == 3
    assert config["dataset"] == "bugs" and config["init"]["source"] == str(tmp_path / "r18.safetensors")
    trained = hub.load(str(out))
    assert torch.equal(trained.conv1.weight, source.conv1.weight)
    assert torch.equal(trained.layer3[0].downsample[0].weight, source.layer3[0].downsample[0].weight)
    assert trained.fc.weight.shape == (3, 512)


def test_train_refuses_weights_of_another_architecture_before_reading_data(tmp_path):
    from timm.models import save_for_hf

    save_for_hf(timm.create_model("resnet34", num_classes=3), str(tmp_path / "r34"), safe_serialization=True)
    result = cli("train", "resnet18", "--data", str(tmp_path / "nowhere"), "--init", str(tmp_path / "r34"),
                 "--out", str(tmp_path / "out"))
    assert isinstance(result.exception, DiscoZooError)
    assert "is a timm resnet34 checkpoint; resnet18 is timm resnet18" in str(result.exception)
    result = cli("train", "resnet18", "--init", "resnet50.digits", "--out", str(tmp_path / "out"))
    assert "holds a resnet50 model, not resnet18" in str(result.exception)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_bring_your_own_end_to_end(tmp_path, monkeypatch):
    """The README's commands: train on an ImageFolder from a timm checkpoint, sparsify from
    the trained folder, then eval, info and run given the DISCO folder's path."""
    monkeypatch.chdir(tmp_path)
    image_folder_root(tmp_path / "bugs")
    torch.manual_seed(0)
    save_file(timm.create_model("resnet18", num_classes=1000).state_dict(), "resnet18_in1k.safetensors")
    steps = [
        ["train", "resnet18", "--data", "bugs", "--init", "resnet18_in1k.safetensors", "--epochs", "1",
         "--input-size", "16", "--out", "models/resnet18.bugs"],
        ["sparsify", "resnet18", "--data", "bugs", "--init", "models/resnet18.bugs", "--traffic", "0.2",
         "--epochs", "1", "--finetune-epochs", "0", "--input-size", "16", "--out", "models/resnet18_disco_2node.bugs"],
        ["eval", "models/resnet18_disco_2node.bugs", "--data", "bugs", "--no-latency", "--paper-size", "0",
         "--json", "--out", "result.json"],
        ["info", "models/resnet18_disco_2node.bugs", "--json"],
        ["run", "models/resnet18_disco_2node.bugs", "--backend", "gloo", "--json"],
    ]
    outputs = []
    for step in steps:
        result = cli(*step)
        assert result.exit_code == 0, f"{step}: {result.output}{result.exception!r}"
        outputs.append(result.stdout)
    report = json.loads(Path("result.json").read_text())
    assert report["model"] == "resnet18.bugs" and report["dense_model"] == "resnet18.bugs"
    assert report["accuracy"]["images"] == 6
    info = json.loads(outputs[3])  # stdout holds the document alone
    assert info["nodes"] == 2 and info["num_classes"] == 3 and info["traffic_ratio"] <= 0.2
    ran = json.loads(outputs[4])
    assert ran["nodes"] == 2 and ran["weights"] == "shards"
