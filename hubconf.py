"""torch.hub entry points: ``torch.hub.load(repo_dir, "resnet50_disco_2node", source="local", pretrained=True)``.

One entry per registered architecture, generated from the registry so the two never
disagree; ``torch.hub.help(repo_dir, name)`` shows each entry's docstring.
"""
from __future__ import annotations

dependencies = ["torch", "timm", "safetensors"]


def _entry(arch: str) -> "typing.Callable[..., typing.Any]":  # noqa: F821 (no top-level imports: torch.hub.list lists every public callable)
    from disco_zoo.hub import list_pretrained
    from disco_zoo.registry import get_entry

    entry = get_entry(arch)
    tags = ", ".join(n.partition(".")[2] for n in list_pretrained() if n.partition(".")[0] == arch) or "none published"

    def build(pretrained: bool = False, tag: str = "", **kwargs: "typing.Any") -> "typing.Any":  # noqa: F821
        from disco_zoo import create_model

        name = f"{arch}.{tag}" if tag else arch
        return create_model(name, pretrained=pretrained, **kwargs)

    build.__name__ = arch
    build.__qualname__ = arch
    build.__doc__ = (
        f"{entry.description or arch} ({entry.source}, family {entry.family}).\n\n"
        f"pretrained=True loads the verified safetensors weights of ``tag`` (default: the first);\n"
        f"pretrained tags: {tags}. Other keyword arguments go to the builder (e.g. num_classes)."
    )
    return build


def _register_all() -> None:
    from disco_zoo.registry import list_models

    for _arch in list_models():
        globals()[_arch] = _entry(_arch)


_register_all()
