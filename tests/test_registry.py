import subprocess
import sys

import pytest

import disco_zoo
from disco_zoo.hub import HubError, get_pretrained_cfg
from disco_zoo.registry import UnknownModelError, get_entry, list_models, normalize_name, split_name

DENSE = ["resnet18", "resnet50", "vit_small_patch16_224", "swin_tiny_patch4_window7_224",
         "googlenet", "densenet121", "mobilenet_v2"]


def test_dense_entries_registered():
    names = list_models()
    for name in DENSE:
        assert name in names
    assert names == sorted(names)


def test_pattern_filters_and_sorts():
    resnets = list_models("resnet*")
    assert resnets == sorted(resnets)
    assert {"resnet18", "resnet50"} <= set(resnets)
    assert all(n.startswith("resnet") for n in resnets)
    assert list_models("no_such_*") == []


def test_cli_spelling_and_tags():
    assert normalize_name("resnet50-disco-2node") == "resnet50_disco_2node"
    assert split_name("resnet50-disco-2node.digits") == ("resnet50_disco_2node", "digits")
    assert split_name("resnet50") == ("resnet50", "")
    assert get_entry("ResNet50").arch == "resnet50"


def test_unknown_name_lists_close_matches():
    with pytest.raises(UnknownModelError) as err:
        get_entry("resnet05")
    message = str(err.value)
    assert "resnet05" in message and "resnet50" in message and "disco-zoo list" in message


def test_unknown_name_without_matches_still_clear():
    with pytest.raises(UnknownModelError, match="unknown model 'zzzz'"):
        disco_zoo.create_model("zzzz")


def test_pretrained_on_model_without_weights_is_clear():
    with pytest.raises(HubError, match="no pretrained weights"):
        get_pretrained_cfg("googlenet")


def test_create_model_passes_kwargs():
    model = disco_zoo.create_model("resnet18", num_classes=10)
    assert model.fc.out_features == 10


def test_listing_does_not_import_torch():
    code = ("import sys, disco_zoo.cli, disco_zoo; disco_zoo.list_models(); "
            "print('torch' in sys.modules, 'timm' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_small_swin_is_named_for_its_size():
    """The published Swin is a small config of timm's Swin, registered under its own name."""
    dense = disco_zoo.create_model("swin_micro_patch2_window4_32", num_classes=10)
    params = sum(p.numel() for p in dense.parameters())
    assert params < 2_000_000  # timm's swin_tiny is 28M
    variant = get_entry("swin_micro_disco_2node")
    assert variant.kwargs["dense"] == "swin_micro_patch2_window4_32"  # the architecture it is made from
    disco = disco_zoo.create_model("swin_micro_disco_2node", num_classes=10)
    assert disco.disco_partition.nodes == 2 and sum(p.numel() for p in disco.parameters()) == params


def test_published_means_a_folder_in_the_hub():
    """Published is known in one place: the folders the hub holds (no list elsewhere)."""
    from pathlib import Path

    from disco_zoo.hub import REPO_HUB, list_pretrained

    on_disk = sorted(p.name for p in Path(REPO_HUB).iterdir() if (p / "config.json").is_file())
    assert list_pretrained() == on_disk
    assert "resnet50_disco_2node.digits" in list_pretrained("resnet50*")


def test_every_published_folder_carries_its_metadata():
    from disco_zoo.hub import list_pretrained

    for name in list_pretrained():
        cfg = get_pretrained_cfg(name)
        assert cfg.name == name and cfg.task == get_entry(name).task
        if cfg.task == "classification":  # other tasks (super-resolution) have no classes
            assert cfg.class_names and len(cfg.class_names) == cfg.num_classes
        assert len(cfg.mean) == len(cfg.std) == cfg.input_size[0]
        if cfg.kind == "disco":
            dense = get_pretrained_cfg(cfg.dense)  # the dense counterpart is published too
            assert dense.kind == "dense" and dense.input_size == cfg.input_size
