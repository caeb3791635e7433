"""timm SwinTransformer: every stage's embedding is split by that stage's heads.

Window attention is local to a node's heads (its rows of the relative position bias
table included). Patch merging stacks 4 neighbours, so node k holds its channels of
each of the 4 copies; the merging LayerNorm exchanges statistics and the reduction
linear maps them onto the next stage's head split.
"""
from __future__ import annotations

from torch import nn

from disco_zoo.disco.adapters.vit import add_attention_mlp_block, add_norm_if_layernorm, head_groups
from disco_zoo.disco.partition import Partition, contiguous_groups, interleave_groups
from disco_zoo.errors import DiscoZooError


def is_swin(model: nn.Module) -> bool:
    from timm.models.swin_transformer import SwinTransformer

    return isinstance(model, SwinTransformer)


def swin_partition(model: nn.Module, nodes: int, ratios: list[float]) -> Partition:
    from timm.models.swin_transformer import PatchMerging

    part = Partition("swin", nodes, ratios)
    first = model.layers[0].blocks[0].attn
    emb = head_groups(first.qkv.in_features, first.num_heads, nodes, ratios)
    proj = model.patch_embed.proj
    part.add_layer("patch_embed.proj", "conv", contiguous_groups(proj.in_channels, nodes, ratios), emb)
    add_norm_if_layernorm(part, "patch_embed.norm", model.patch_embed.norm, emb)
    for s, stage in enumerate(model.layers):
        attn = stage.blocks[0].attn
        new = head_groups(attn.qkv.in_features, attn.num_heads, nodes, ratios)
        if isinstance(stage.downsample, PatchMerging):
            prev_dim = stage.downsample.reduction.in_features // 4
            merged = interleave_groups(emb, prev_dim, 4)
            add_norm_if_layernorm(part, f"layers.{s}.downsample.norm", stage.downsample.norm, merged)
            part.add_layer(f"layers.{s}.downsample.reduction", "linear", merged, new)
        elif not isinstance(stage.downsample, nn.Identity):
            raise DiscoZooError(f"layers.{s}.downsample: {type(stage.downsample).__name__} is not supported")
        emb = new
        for b, block in enumerate(stage.blocks):
            prefix = f"layers.{s}.blocks.{b}"
            block_emb = add_attention_mlp_block(part, prefix, block, nodes, ratios)
            if block_emb != emb:
                raise DiscoZooError(f"{prefix}: head split differs from its stage's")
            heads = contiguous_groups(block.attn.num_heads, nodes, ratios)
            part.add_tensor(f"{prefix}.attn.relative_position_bias_table", 1, heads)
    add_norm_if_layernorm(part, "norm", model.norm, emb)
    fc = getattr(model.head, "fc", None)
    if isinstance(fc, nn.Linear):
        part.add_layer("head.fc", "linear", emb, contiguous_groups(fc.out_features, nodes, ratios), mode="reduce")
    return part
