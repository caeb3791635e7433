"""Heavier executor checks: more nodes, unequal and skewed splits (marked slow)."""
import pytest

from test_runtime_disco import _check, _sparse_disco_folder


@pytest.mark.slow
def test_resnet50_four_nodes_skewed_split(tmp_path, monkeypatch):
    import test_runtime_disco

    monkeypatch.setattr(test_runtime_disco, "SHAPE", [1, 3, 32, 32])
    folder, model, part = _sparse_disco_folder(tmp_path, 4, ratios=(0.4, 0.3, 0.2, 0.1), arch="resnet50")
    assert not next(iter(part.layers.values())).in_groups[3]  # conv1: node 3 gets no image channel
    _check(folder, model, part, "mpi", 4)


@pytest.mark.slow
def test_resnet18_three_nodes_unequal_split(tmp_path):
    folder, model, part = _sparse_disco_folder(tmp_path, 3, ratios=(0.5, 0.3, 0.2), seed=1)
    _check(folder, model, part, "mpi", 3)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["mpi", "gloo"])
@pytest.mark.parametrize("nodes", [2, 4])
@pytest.mark.parametrize("family", ["vit", "swin"])
def test_transformers_on_both_backends_at_two_and_four_nodes(tmp_path, family, nodes, backend):
    from test_runtime_disco import TINY_SWIN, TINY_VIT

    arch, args = TINY_VIT if family == "vit" else TINY_SWIN
    folder, model, part = _sparse_disco_folder(tmp_path, nodes, arch=arch, args=args)
    _check(folder, model, part, backend, nodes)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["mpi", "gloo"])
def test_unequal_splits_for_vit_and_resnet50(tmp_path, backend):
    from test_runtime_disco import TINY_VIT

    arch, args = TINY_VIT
    folder, model, part = _sparse_disco_folder(tmp_path / "vit", 2, ratios=(0.75, 0.25), arch=arch, args=args)
    _check(folder, model, part, backend, 2)
    folder, model, part = _sparse_disco_folder(tmp_path / "r50", 2, ratios=(0.6, 0.4), arch="resnet50", seed=2)
    _check(folder, model, part, backend, 2)
