"""timm VisionTransformer: the embedding is split by attention heads.

Node k owns whole heads (their q/k/v rows and the matching embedding channels), so
attention itself is local; qkv, proj, fc1 and fc2 are split layers, the MLP hidden
units are split contiguously, LayerNorms exchange per-token statistics, the class
token and position embedding are sliced, and the head reduces partial logits.
"""
from __future__ import annotations

from torch import nn

from disco_zoo.disco.partition import Partition, contiguous_groups, interleave_groups
from disco_zoo.errors import DiscoZooError


def is_vit(model: nn.Module) -> bool:
    from timm.models.vision_transformer import VisionTransformer

    return isinstance(model, VisionTransformer)


def head_groups(dim: int, heads: int, nodes: int, ratios: list[float]) -> list[list[int]]:
    """Embedding channels per node when node k owns a contiguous run of whole heads."""
    if heads < nodes:
        raise DiscoZooError(f"{heads} attention heads cannot be split over {nodes} nodes; use fewer nodes")
    head_dim = dim // heads
    return [[h * head_dim + d for h in hs for d in range(head_dim)] for hs in contiguous_groups(heads, nodes, ratios)]


def add_norm_if_layernorm(part: Partition, name: str, module: nn.Module, groups: list[list[int]]) -> None:
    if isinstance(module, nn.LayerNorm):
        part.add_norm(name, groups, affine=module.elementwise_affine)
    elif not isinstance(module, nn.Identity):
        raise DiscoZooError(f"{name}: {type(module).__name__} is not supported by DISCO yet")


def add_attention_mlp_block(
    part: Partition, prefix: str, block: nn.Module, nodes: int, ratios: list[float]
) -> list[list[int]]:
    """The layers of one pre-norm transformer block (ViT or Swin); returns the embedding groups."""
    attn = block.attn
    dim = attn.qkv.in_features
    emb = head_groups(dim, attn.num_heads, nodes, ratios)
    add_norm_if_layernorm(part, f"{prefix}.norm1", block.norm1, emb)
    part.add_layer(f"{prefix}.attn.qkv", "linear", emb, interleave_groups(emb, dim, 3))
    part.add_layer(f"{prefix}.attn.proj", "linear", emb, emb)
    add_norm_if_layernorm(part, f"{prefix}.norm2", block.norm2, emb)
    hidden = contiguous_groups(block.mlp.fc1.out_features, nodes, ratios)
    part.add_layer(f"{prefix}.mlp.fc1", "linear", emb, hidden)
    if not isinstance(getattr(block.mlp, "norm", nn.Identity()), nn.Identity):
        raise DiscoZooError(f"{prefix}.mlp.norm is not supported by DISCO yet")
    part.add_layer(f"{prefix}.mlp.fc2", "linear", hidden, emb)
    for ls in ("ls1", "ls2"):
        gamma = getattr(getattr(block, ls, None), "gamma", None)
        if gamma is not None:
            part.add_tensor(f"{prefix}.{ls}.gamma", 0, emb)
    return emb


def vit_partition(model: nn.Module, nodes: int, ratios: list[float]) -> Partition:
    from timm.models.vision_transformer import Block

    if getattr(model, "attn_pool", None) is not None:
        raise DiscoZooError("ViT with attention pooling is not supported by DISCO yet")
    part = Partition("vit", nodes, ratios)
    dim = model.embed_dim
    emb = head_groups(dim, model.blocks[0].attn.num_heads, nodes, ratios)
    proj = model.patch_embed.proj
    part.add_layer("patch_embed.proj", "conv", contiguous_groups(proj.in_channels, nodes, ratios), emb)
    add_norm_if_layernorm(part, "patch_embed.norm", model.patch_embed.norm, emb)
    for tensor in ("cls_token", "reg_token", "pos_embed"):
        if getattr(model, tensor, None) is not None:
            part.add_tensor(tensor, 2, emb)
    add_norm_if_layernorm(part, "norm_pre", model.norm_pre, emb)
    for i, block in enumerate(model.blocks):
        if type(block) is not Block:
            raise DiscoZooError(f"blocks.{i}: {type(block).__name__} is not supported by DISCO yet")
        if add_attention_mlp_block(part, f"blocks.{i}", block, nodes, ratios) != emb:
            raise DiscoZooError("ViT blocks with different head counts are not supported by DISCO")
    add_norm_if_layernorm(part, "norm", model.norm, emb)
    add_norm_if_layernorm(part, "fc_norm", model.fc_norm, emb)
    if isinstance(model.head, nn.Linear):
        part.add_layer("head", "linear", emb, contiguous_groups(model.head.out_features, nodes, ratios), mode="reduce")
    return part
