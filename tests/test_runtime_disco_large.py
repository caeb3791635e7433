"""Heavier executor checks: more nodes, unequal and skewed splits (marked slow)."""
import pytest

from helpers import TINY_SWIN, TINY_VIT, check_disco_run, sparse_disco_folder


@pytest.mark.slow
def test_resnet50_four_nodes_skewed_split(tmp_path):
    folder, model, part = sparse_disco_folder(tmp_path, 4, ratios=(0.4, 0.3, 0.2, 0.1), arch="resnet50")
    assert not next(iter(part.layers.values())).in_groups[3]  # conv1: node 3 gets no image channel
    check_disco_run(folder, model, part, "mpi", 4, shape=[1, 3, 32, 32])


@pytest.mark.slow
def test_resnet18_three_nodes_unequal_split(tmp_path):
    folder, model, part = sparse_disco_folder(tmp_path, 3, ratios=(0.5, 0.3, 0.2), seed=1)
    check_disco_run(folder, model, part, "mpi", 3)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["mpi", "gloo"])
@pytest.mark.parametrize("nodes", [2, 4])
@pytest.mark.parametrize("family", ["vit", "swin"])
def test_transformers_on_both_backends_at_two_and_four_nodes(tmp_path, family, nodes, backend):
    arch, args = TINY_VIT if family == "vit" else TINY_SWIN
    folder, model, part = sparse_disco_folder(tmp_path, nodes, arch=arch, args=args)
    check_disco_run(folder, model, part, backend, nodes)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["mpi", "gloo"])
def test_unequal_splits_for_vit_and_resnet50(tmp_path, backend):
    arch, args = TINY_VIT
    folder, model, part = sparse_disco_folder(tmp_path / "vit", 2, ratios=(0.75, 0.25), arch=arch, args=args)
    check_disco_run(folder, model, part, backend, 2)
    folder, model, part = sparse_disco_folder(tmp_path / "r50", 2, ratios=(0.6, 0.4), arch="resnet50", seed=2)
    check_disco_run(folder, model, part, backend, 2)
