"""The DISCO executor: distributed output == single-process masked model, and the bytes
on the wire == the DISCO accounting's prediction, message for message."""
import pytest

from disco_zoo.errors import DiscoZooError
from disco_zoo.runtime.launch import launch
from helpers import DISCO_ENTRY, DISCO_SHAPE, TINY_SWIN, TINY_VIT, check_disco_run, sparse_disco_folder


@pytest.mark.parametrize("backend", ["mpi", "gloo"])
def test_resnet18_two_nodes_matches_masked_model_and_accounting(tmp_path, backend):
    folder, model, part = sparse_disco_folder(tmp_path, 2)
    results = check_disco_run(folder, model, part, backend, 2)
    assert {r["output_rank"] for r in results} == {0} and "logits" not in results[1]  # the output rank declared once


def test_vit_split_layernorms_and_local_heads(tmp_path):
    arch, args = TINY_VIT
    folder, model, part = sparse_disco_folder(tmp_path, 2, arch=arch, args=args)
    assert part.norms  # the LayerNorm statistics exchange is exercised and counted
    check_disco_run(folder, model, part, "gloo", 2)


def test_swin_windows_patch_merging_and_local_heads(tmp_path):
    arch, args = TINY_SWIN
    folder, model, part = sparse_disco_folder(tmp_path, 2, arch=arch, args=args)
    assert any("downsample.norm" in name for name in part.norms)
    check_disco_run(folder, model, part, "mpi", 2)


def test_fp16_wire_halves_every_message(tmp_path):
    folder, model, part = sparse_disco_folder(tmp_path, 2)
    check_disco_run(folder, model, part, "mpi", 2, wire_dtype="fp16")


def test_wrong_world_size_is_a_clear_error(tmp_path):
    folder, _, _ = sparse_disco_folder(tmp_path, 2)
    with pytest.raises(DiscoZooError, match="split over 2 nodes; run it with 2 ranks, not 3"):
        launch(DISCO_ENTRY, 3, "mpi", args={"folder": str(folder), "input_shape": DISCO_SHAPE}, timeout_s=20)


def test_damaged_shard_is_refused(tmp_path):
    folder, _, _ = sparse_disco_folder(tmp_path, 2)
    with open(folder / "node1.safetensors", "r+b") as f:
        f.seek(-4, 2)
        f.write(b"\0\1\2\3")
    with pytest.raises(DiscoZooError, match=r"node1.safetensors sha256 \S+ differs from config.json"):
        launch(DISCO_ENTRY, 2, "mpi", args={"folder": str(folder), "input_shape": DISCO_SHAPE}, timeout_s=20)


def test_tag_policy_gives_every_message_its_own_backend_id():
    from disco_zoo.runtime.session import unique_tags
    from disco_zoo.runtime.transport import tag_id

    # 'blocks.9.attn.qkv' and 'head' share a backend id (both layers of a ViT-Tiny split)
    assert tag_id("blocks.9.attn.qkv") == tag_id("head")
    tags = unique_tags({"input": "input", "blocks.9.attn.qkv": "blocks.9.attn.qkv", "head": "head"})
    assert tags["input"] == "input" and tags["blocks.9.attn.qkv"] == "blocks.9.attn.qkv"  # first keeps its name
    assert tags["head"].startswith("head#") and len({tag_id(t) for t in tags.values()}) == 3
