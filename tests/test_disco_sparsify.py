"""Sparsification: budget met exactly or just under, deterministic under a seed, CLI."""
import copy
import json

import pytest
import timm
import torch
import typer
from typer.testing import CliRunner

from disco_zoo.data.digits import digits_loaders
from disco_zoo.disco.accounting import disco_accounting
from disco_zoo.disco.adapters import to_disco
from disco_zoo.disco.sparsify import GroupLasso, SparsifyConfig, prune_to_budget, sparsify
from disco_zoo.errors import DiscoZooError

SHAPE = (1, 3, 16, 16)


def small_resnet(seed: int = 0):
    torch.manual_seed(seed)
    return to_disco(timm.create_model("resnet18", num_classes=10), 2)


def run(seed: int):
    model = small_resnet(seed)
    loader = digits_loaders(size=16, batch_size=32, seed=seed, limit=64)["train"]
    cfg = SparsifyConfig(traffic=0.2, epochs=1, finetune_epochs=1, seed=seed, penalty=1e-2, lr=1e-2)
    stats = sparsify(model, loader, cfg, SHAPE)
    return model, stats


def test_sparsify_is_deterministic_and_meets_budget():
    a, stats_a = run(0)
    b, stats_b = run(0)
    assert a.disco_partition.to_dict() == b.disco_partition.to_dict()
    for (name, ta), tb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(ta, tb), name
    assert stats_a == stats_b
    assert stats_a["finetune_loss"] < 2.5  # it trained (ln 10 = 2.30 is chance)
    acc = disco_accounting(a, SHAPE)
    assert acc.disco_bytes == stats_a["disco_bytes"] <= stats_a["budget_bytes"]
    assert acc.dense_tp_bytes == stats_a["dense_tp_bytes"]
    # just under: at 16x16 input layer4 reads 1x1 maps, so a channel there costs 4 bytes and
    # plenty of them are left out; greedy filling leaves less than one of them unused
    assert stats_a["budget_bytes"] - acc.disco_bytes < 4
    assert stats_a["groups_kept"] < stats_a["groups_total"]
    assert acc.traffic_ratio <= 0.2
    c, _ = run(1)
    assert c.disco_partition.to_dict() != a.disco_partition.to_dict()


def test_group_lasso_shrinks_only_off_diagonal_groups():
    model = small_resnet()
    penalty = GroupLasso(model, SHAPE)
    value = penalty()
    value.backward()
    conv = dict(model.named_modules())["layer1.0.conv1"]
    layer = model.disco_partition.layers["layer1.0.conv1"]
    rows0, own0 = layer.out_groups[0], layer.in_groups[0]
    assert value.item() > 0
    assert torch.all(conv.weight.grad[rows0][:, own0] == 0)  # diagonal block: no penalty
    assert torch.all(conv.weight.grad[rows0][:, layer.in_groups[1]].abs().sum((1, 2, 3)) > 0)


def test_pruned_weights_get_no_gradient_and_budget_errors():
    model = small_resnet()
    prune_to_budget(model, 0.1, SHAPE)
    x = torch.randn(2, 3, 16, 16)
    model(x).sum().backward()
    conv = dict(model.named_modules())["layer2.0.conv2"]
    closed = conv.mask[:, :, None, None].expand_as(conv.weight) == 0
    assert closed.any() and torch.all(conv.weight.grad[closed] == 0)
    with pytest.raises(DiscoZooError, match="raise --traffic"):
        prune_to_budget(copy.deepcopy(model), 1e-6, SHAPE)


def test_compute_budget_prunes_diagonal_blocks(tmp_path):
    from disco_zoo.disco.shards import load_shards_into, save_shards
    from disco_zoo.disco.sparsify import MAX_DROPPED_FRACTION, prune_compute

    model = small_resnet()
    prune_to_budget(model, 0.2, SHAPE)
    before = disco_accounting(model, SHAPE)
    stats = prune_compute(model, 0.6, SHAPE)
    after = disco_accounting(model, SHAPE)
    assert after.flops_total <= 0.6 * after.flops_dense < before.flops_total
    assert abs(after.flops_total - stats["flops_total"]) <= 1
    assert after.disco_bytes == before.disco_bytes  # traffic is untouched
    assert any(any(layer.dropped) for layer in model.disco_partition.layers.values())
    for layer in model.disco_partition.layers.values():  # no layer is emptied on any node
        for own, dropped in zip(layer.in_groups, layer.dropped or []):
            assert len(dropped) <= MAX_DROPPED_FRACTION * len(own)
    save_shards(model, tmp_path / "m", extra={"arch": "resnet18", "args": {"num_classes": 10}})
    loaded = load_shards_into(timm.create_model("resnet18", num_classes=10), tmp_path / "m")
    x = torch.randn(1, *SHAPE[1:])
    with torch.no_grad():
        assert torch.equal(loaded.eval()(x), model.eval()(x))
    with pytest.raises(DiscoZooError, match="raise --compute"):
        prune_compute(model, 1e-6, SHAPE)


def test_compute_budget_may_close_cross_node_channels_first():
    """With compute_groups="all" the cross blocks compete for the FLOPs cut, by norm per FLOP:
    the traffic falls with the FLOPs, and no own channel is dropped while a weaker cross one
    stays open."""
    from disco_zoo.disco.sparsify import _rows_onehot, _squared_group_sums, prune_compute

    model = small_resnet()
    prune_to_budget(model, 0.5, SHAPE)
    before = disco_accounting(model, SHAPE)
    budget = (before.flops_total / before.flops_dense) - 0.05
    stats = prune_compute(model, budget, SHAPE, "all")
    after = disco_accounting(model, SHAPE)
    assert after.flops_total <= budget * after.flops_dense < before.flops_total
    assert stats["flops_total"] == after.flops_total and stats["disco_bytes"] == after.disco_bytes
    assert stats["params_per_node"] == after.params_per_node
    assert after.disco_bytes < before.disco_bytes  # cross channels were closed
    modules, part = dict(model.named_modules()), model.disco_partition
    weakest_open, strongest_dropped = float("inf"), 0.0
    for name, layer in part.layers.items():
        if layer.mode != "split":
            continue
        norms = _squared_group_sums(modules[name], _rows_onehot(layer).to(modules[name].weight)).sqrt()
        per_flop = after.flops_per_entry[name]
        for k in range(layer.nodes):
            flops = per_flop * len(layer.out_groups[k])
            for j in range(layer.nodes):
                for c in layer.selected[k][j] if j != k else []:
                    weakest_open = min(weakest_open, norms[k, c].item() / flops)
            for c in (layer.dropped or [[]] * layer.nodes)[k]:
                strongest_dropped = max(strongest_dropped, norms[k, c].item() / flops)
    assert 0 < strongest_dropped <= weakest_open < float("inf")
    with pytest.raises(DiscoZooError, match="compute groups must be one of own, all"):
        prune_compute(model, 0.5, SHAPE, "cross")


def test_max_dropped_zero_closes_only_cross_node_channels():
    from disco_zoo.disco.sparsify import prune_compute

    model = small_resnet()
    prune_to_budget(model, 0.5, SHAPE)
    before = disco_accounting(model, SHAPE)
    budget = (before.flops_total / before.flops_dense) - 0.05
    prune_compute(model, budget, SHAPE, "all", max_dropped=0.0)
    after = disco_accounting(model, SHAPE)
    assert after.flops_total <= budget * after.flops_dense
    assert not any(any(layer.dropped or []) for layer in model.disco_partition.layers.values())
    with pytest.raises(DiscoZooError, match="dropping at most 0 of each layer's own inputs"):
        prune_compute(copy.deepcopy(model), budget - 0.05, SHAPE, "own", max_dropped=0.0)
    with pytest.raises(DiscoZooError, match="max dropped must be in"):
        prune_compute(model, budget, SHAPE, "all", max_dropped=1.5)


def test_group_lasso_with_flops_weighs_late_small_maps_up():
    """Bytes alone make a 1x1-map channel of layer4 nearly free; its FLOPs (512 outputs per
    channel) are not, and with ``flops`` its penalty weight rises relative to layer1's."""
    model = small_resnet()

    def weight_of(penalty, name):
        modules = dict(model.named_modules())
        return next(w for m, _, w in penalty.terms if m is modules[name]).max().item()

    plain, with_flops = GroupLasso(model, SHAPE), GroupLasso(model, SHAPE, flops=True)
    ratio_plain = weight_of(plain, "layer4.1.conv1") / weight_of(plain, "layer1.0.conv1")
    ratio_flops = weight_of(with_flops, "layer4.1.conv1") / weight_of(with_flops, "layer1.0.conv1")
    assert ratio_flops > 2 * ratio_plain
    assert with_flops().item() > 0


def test_unknown_compute_groups_is_refused_before_training():
    model = small_resnet()
    cfg = SparsifyConfig(traffic=0.2, epochs=1, compute=0.5, compute_groups="diagonal")
    with pytest.raises(DiscoZooError, match="compute groups must be one of own, all, got 'diagonal'"):
        sparsify(model, iter(()), cfg, SHAPE)


def _dense_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def test_params_budget_caps_every_node():
    from disco_zoo.disco.sparsify import prune_params

    model = to_disco(timm.create_model("resnet18", num_classes=10), 4)
    prune_to_budget(model, 0.2, SHAPE)
    before = disco_accounting(model, SHAPE)
    # a byte budget alone keeps layer4 (1x1 maps here) connected: shards near the dense weights
    assert max(before.params_per_node) > 0.2 * _dense_params(model)
    stats = prune_params(model, 0.125, SHAPE)
    after = disco_accounting(model, SHAPE)
    assert max(after.params_per_node) <= stats["params_budget"] == int(0.125 * _dense_params(model))
    assert after.params_per_node == stats["params_per_node"]
    assert after.disco_bytes == stats["disco_bytes"] <= before.disco_bytes
    assert after.traffic_ratio <= 0.2
    # only cross-node channels were closed, and only as many as needed (within one group)
    assert all(not layer.dropped or not any(layer.dropped) for layer in model.disco_partition.layers.values())
    assert min(after.params_per_node) > stats["params_budget"] - 512 * 9
    with pytest.raises(DiscoZooError, match="raise --params"):
        prune_params(copy.deepcopy(model), 0.01, SHAPE)


def test_sparsify_with_params_budget():
    model = small_resnet()
    loader = digits_loaders(size=16, batch_size=32, seed=0, limit=64)["train"]
    cfg = SparsifyConfig(traffic=0.2, params=0.3, epochs=0, finetune_epochs=1, seed=0)
    stats = sparsify(model, loader, cfg, SHAPE)
    acc = disco_accounting(model, SHAPE)
    assert max(acc.params_per_node) <= 0.3 * _dense_params(model)
    assert acc.disco_bytes == stats["disco_bytes"] <= stats["budget_bytes"]
    with pytest.raises(DiscoZooError, match="params must be"):
        sparsify(model, loader, SparsifyConfig(params=1.5, epochs=0, finetune_epochs=0), SHAPE)


def test_sparsify_command(tmp_path):
    from disco_zoo.commands.sparsify import register
    from disco_zoo.store import sha256_file

    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)  # a second command keeps "sparsify" a sub-command
    out = tmp_path / "r18"
    args = ["sparsify", "resnet18", "--nodes", "2", "--traffic", "0.25", "--params", "0.4", "--data", "digits",
            "--input-size", "16", "--epochs", "1", "--finetune-epochs", "1", "--limit", "64", "--seed", "3",
            "--lasso-flops", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "traffic ratio" in result.output
    config = json.loads((out / "config.json").read_text())
    assert config["sparsify"]["lasso_flops"] is True and config["sparsify"]["max_dropped"] == 0.5
    assert config["arch"] == "resnet18" and config["nodes"] == 2 and config["kind"] == "disco"
    assert config["accounting"]["traffic_ratio"] <= 0.25
    assert config["sparsify"]["params"] == 0.4
    assert max(config["accounting"]["params_per_node"]) <= config["sparsify"]["params_budget"]
    for record in config["files"]:
        assert sha256_file(out / record["name"]) == record["sha256"]
    # the hub's loader rebuilds it from config.json alone
    from disco_zoo.hub import load_folder

    model = load_folder(out)
    again = disco_accounting(model, (1, 3, 16, 16))
    assert again.disco_bytes == config["accounting"]["disco_bytes"]
    bad = CliRunner().invoke(app, ["sparsify", "resnet18", "--ratios", "0.5", "--out", str(tmp_path / "x")])
    assert bad.exit_code != 0 and "ratios" in str(bad.exception)
    no_augment = CliRunner().invoke(app, args[:-2] + ["--augment", "--out", str(tmp_path / "y")])
    assert no_augment.exit_code != 0 and "leave out --augment" in str(no_augment.exception)
    assert not (tmp_path / "y").exists()


def test_sparsify_command_starts_from_dense_weights(tmp_path):
    """--init loads the dense folder; at traffic 1.0 with no training nothing is pruned."""
    from disco_zoo.commands.sparsify import register
    from disco_zoo.hub import load_folder
    from disco_zoo.weights import save_dense

    torch.manual_seed(5)
    dense = timm.create_model("resnet18", num_classes=10).eval()
    save_dense(dense, tmp_path / "dense", {"arch": "resnet18", "args": {"num_classes": 10}})
    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)
    out = tmp_path / "disco"
    args = ["sparsify", "resnet18_disco_2node", "--traffic", "1.0", "--input-size", "16", "--epochs", "0",
            "--finetune-epochs", "0", "--limit", "16", "--init", str(tmp_path / "dense"), "--out", str(out), "--storage", "fp32"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert config["args"]["nodes"] == 2
    model = load_folder(out)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert (model(x) - dense(x)).abs().max().item() <= 1e-5
    assert config["storage_dtype"] == "fp32"


def test_fp16_shards_load_back_as_fp32(tmp_path):
    from disco_zoo.disco.adapters import to_disco
    from disco_zoo.disco.shards import load_node_shard, save_shards

    torch.manual_seed(0)
    model = to_disco(timm.create_model("resnet18", num_classes=10), 2).eval()
    save_shards(model, tmp_path / "half", extra={"arch": "resnet18", "args": {"num_classes": 10}}, storage="fp16")
    _, tensors = load_node_shard(tmp_path / "half", 1)
    assert all(t.dtype != torch.float16 for t in tensors.values())
    assert (tmp_path / "half" / "node1.safetensors").stat().st_size < 0.6 * sum(
        t.numel() * 4 for t in tensors.values() if t.is_floating_point())


@pytest.mark.parametrize("family", ["vit", "swin"])
def test_prune_transformers_to_budget(family):
    kwargs = {
        "vit": ("vit_tiny_patch16_224", {"img_size": 32, "patch_size": 8, "embed_dim": 64, "num_heads": 4, "depth": 1}),
        "swin": ("swin_tiny_patch4_window7_224", {"img_size": 32, "window_size": 4, "embed_dim": 32,
                                                  "depths": (1, 1, 1, 1), "num_heads": (4, 4, 4, 4)}),
    }[family]
    torch.manual_seed(0)
    model = to_disco(timm.create_model(kwargs[0], num_classes=10, **kwargs[1]), 4)
    shape = (1, 3, 32, 32)
    stats = prune_to_budget(model, 0.3, shape)
    acc = disco_accounting(model, shape)
    assert acc.disco_bytes == stats["disco_bytes"] <= 0.3 * acc.dense_tp_bytes
    assert stats["fixed_bytes"] > 0  # LayerNorm statistics and partial logits are charged
    assert acc.flops_total < acc.flops_dense


def test_sparsify_command_on_an_image_folder(tmp_path):
    import numpy as np
    from PIL import Image

    from disco_zoo.commands.sparsify import register

    for split in ("train", "val"):
        for c, name in enumerate(("a", "b", "c")):
            (tmp_path / "data" / split / name).mkdir(parents=True)
            for i in range(2):
                Image.fromarray(np.full((20, 20, 3), 80 * c + i, dtype=np.uint8)).save(
                    tmp_path / "data" / split / name / f"{i}.png")
    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)
    args = ["sparsify", "resnet18", "--nodes", "4", "--ratios", "0.4,0.2,0.2,0.2", "--data", str(tmp_path / "data"),
            "--input-size", "16", "--epochs", "1", "--finetune-epochs", "0", "--out", str(tmp_path / "out")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["args"]["num_classes"] == 3 and config["partition"]["ratios"] == [0.4, 0.2, 0.2, 0.2]
    assert len(config["files"]) == 4


def test_pruning_schedule_is_cubic_from_where_the_model_stands_to_the_targets():
    from disco_zoo.disco.sparsify import pruning_schedule

    model = small_resnet()
    assert pruning_schedule(model, SparsifyConfig(traffic=0.2, compute=0.6), SHAPE) == [(0.2, None, 0.6)]
    acc = disco_accounting(model, SHAPE)  # masks open: dense traffic, dense FLOPs
    cfg = SparsifyConfig(traffic=0.2, compute=0.6, params=0.9, prune_steps=4)
    steps = pruning_schedule(model, cfg, SHAPE)
    assert len(steps) == 4 and steps[-1] == (0.2, 0.9, 0.6)
    traffic = [t for t, _, _ in steps]
    assert traffic == sorted(traffic, reverse=True) and traffic[0] < acc.traffic_ratio
    start = acc.traffic_ratio
    assert traffic[0] == pytest.approx(0.2 + (start - 0.2) * (3 / 4) ** 3)  # cubic: most of the way early
    assert traffic[1] == pytest.approx(0.2 + (start - 0.2) * (1 / 2) ** 3)
    assert all(params == 0.9 for _, params, _ in steps)  # already met (open shards hold ~half): the target


def test_gradual_pruning_meets_every_budget_and_closes_channels_step_by_step(monkeypatch):
    import disco_zoo.disco.sparsify as sp

    seen = []
    real = sp.prune_to_budget

    def recording(model, traffic, *args, **kwargs):
        seen.append(traffic)
        return real(model, traffic, *args, **kwargs)

    monkeypatch.setattr(sp, "prune_to_budget", recording)
    model = small_resnet()
    loader = digits_loaders(size=16, batch_size=32, seed=0, limit=64)["train"]
    cfg = SparsifyConfig(traffic=0.2, compute=0.7, epochs=0, finetune_epochs=1, prune_steps=3, seed=0)
    stats = sparsify(model, loader, cfg, SHAPE)
    acc = disco_accounting(model, SHAPE)
    assert len(seen) == 3 and seen[-1] == 0.2 and seen[0] > seen[1] > 0.2
    assert acc.traffic_ratio <= 0.2 and acc.flops_total <= 0.7 * acc.flops_dense
    assert acc.disco_bytes == stats["disco_bytes"] and stats["finetune_loss"] < 2.5
    with pytest.raises(DiscoZooError, match="prune steps must be >= 1"):
        sparsify(model, loader, SparsifyConfig(prune_steps=0), SHAPE)


def test_the_traffic_budget_counts_every_call_of_a_shared_head():
    from helpers import TinySharedHead

    torch.manual_seed(0)
    model = to_disco(TinySharedHead(), 2)
    shape = (1, 3, 16, 16)
    stats = prune_to_budget(model, 0.4, shape)
    acc = disco_accounting(model, shape)  # the accounting counts each call's exchange
    assert acc.disco_bytes == stats["disco_bytes"] <= stats["budget_bytes"]
    assert acc.traffic_ratio <= 0.4
