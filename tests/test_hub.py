"""Pretrained store: resolution order, offline behaviour, hashes, strict loading, torch.hub."""
import json
from pathlib import Path

import pytest
import torch

from disco_zoo import hub
from disco_zoo.registry import ModelEntry, PretrainedCfg, UnknownModelError, create_model, register_model
from disco_zoo.weights import DENSE_FILE, save_dense

ARCH = "hubtest_resnet18"
register_model(
    ModelEntry(
        arch=ARCH,
        builder="disco_zoo.models.timm_dense:build_timm",
        family="resnet",
        source="timm",
        kwargs={"timm_name": "resnet18"},
        pretrained=(PretrainedCfg(tag="digits", dataset="digits", input_size=(3, 32, 32), num_classes=10),
                    PretrainedCfg(tag="other", num_classes=10)),
    )
)


def _publish(root: Path, seed: int = 0, tag: str = "digits") -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(seed)
    model = create_model(ARCH, num_classes=10)
    folder = save_dense(model, root / f"{ARCH}.{tag}", {"arch": ARCH, "args": {"num_classes": 10}})
    return folder, model


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    monkeypatch.delenv(hub.HUB_ENV, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))


def _same(a, b):
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        return torch.equal(a.eval()(x), b.eval()(x))


def test_round_trip_strict_and_hashed(tmp_path):
    folder, model = _publish(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    assert [f["name"] for f in config["files"]] == [DENSE_FILE]
    loaded = create_model(f"{ARCH}.digits", pretrained=True, path=folder)
    assert _same(model, loaded)


def test_resolution_order_explicit_then_env_then_repo(tmp_path, monkeypatch):
    env_root, explicit_root = tmp_path / "env", tmp_path / "explicit"
    _publish(env_root, seed=1)
    _publish(explicit_root, seed=2)
    monkeypatch.setenv(hub.HUB_ENV, str(env_root))
    assert hub.resolve_folder(ARCH) == env_root / f"{ARCH}.digits"
    assert hub.resolve_folder(ARCH, path=explicit_root) == explicit_root / f"{ARCH}.digits"
    monkeypatch.setattr(hub, "REPO_HUB", tmp_path / "repo")
    monkeypatch.delenv(hub.HUB_ENV)
    _publish(tmp_path / "repo", seed=3)
    assert hub.resolve_folder(ARCH) == tmp_path / "repo" / f"{ARCH}.digits"


def test_offline_without_weights_is_clear(tmp_path, monkeypatch):
    monkeypatch.setattr(hub, "REPO_HUB", tmp_path / "empty")
    with pytest.raises(hub.HubError, match="not found; looked in") as err:
        create_model(ARCH, pretrained=True)
    assert "cache" in str(err.value)  # offline: only the cache was consulted


def test_hugging_face_cache_is_used_offline(tmp_path, monkeypatch):
    """A folder in the Hugging Face cache layout is found with HF_HUB_OFFLINE=1 (no network)."""
    from huggingface_hub import constants, try_to_load_from_cache

    cache = tmp_path / "hf" / "hub"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hub, "REPO_HUB", tmp_path / "empty")
    folder, model = _publish(tmp_path / "src")
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo_dir = cache / f"models--disco-zoo--{ARCH}.digits"
    snapshot = repo_dir / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for item in folder.iterdir():
        (snapshot / item.name).write_bytes(item.read_bytes())
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(commit)
    # huggingface_hub's own cache reader agrees with the layout we wrote.
    assert try_to_load_from_cache(hub.hf_repo_id(ARCH), "config.json", cache_dir=cache) == str(snapshot / "config.json")
    assert hub.resolve_folder(ARCH) == snapshot
    assert _same(model, create_model(ARCH, pretrained=True, local_files_only=True))


def test_tampered_file_is_refused_before_loading(tmp_path):
    folder, _ = _publish(tmp_path)
    path = folder / DENSE_FILE
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(hub.HubIntegrityError, match="tampered"):
        create_model(ARCH, pretrained=True, path=folder)


def test_truncated_and_missing_files(tmp_path):
    folder, _ = _publish(tmp_path)
    path = folder / DENSE_FILE
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(hub.HubIntegrityError, match="truncated"):
        hub.verify_folder(folder)
    path.unlink()
    with pytest.raises(hub.HubIntegrityError, match="missing"):
        hub.verify_folder(folder)


def test_unknown_tag_lists_available(tmp_path):
    with pytest.raises(UnknownModelError, match="available tags: digits, other"):
        create_model(f"{ARCH}.imagenet", pretrained=True, path=tmp_path)


def test_wrong_architecture_in_folder(tmp_path):
    folder, _ = _publish(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["args"] = {"num_classes": 7}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(Exception, match="do not fit"):
        create_model(ARCH, pretrained=True, path=folder)


def test_failed_write_leaves_previous_folder(tmp_path):
    from disco_zoo.weights import write_folder_atomically

    folder, model = _publish(tmp_path)
    before = (folder / "config.json").read_text()

    def broken(tmp):
        (tmp / "x.safetensors").write_bytes(b"partial")
        raise OSError("disk full")

    with pytest.raises(OSError):
        write_folder_atomically(folder, broken)
    assert (folder / "config.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [folder.name]


def test_torch_hub_local_entry_points():
    repo = Path(__file__).resolve().parent.parent
    import torch.hub as th

    module = th._import_module("hubconf", str(repo / "hubconf.py"))
    entries = [f for f in dir(module) if callable(getattr(module, f)) and not f.startswith("_")]
    assert "resnet50" in entries and "googlenet" in entries
    assert all(getattr(module, name).__doc__ for name in entries)
    model = torch.hub.load(str(repo), "resnet18", source="local", num_classes=10)
    assert model.fc.out_features == 10


def test_fp16_storage_rounds_weight_matrices_only(tmp_path):
    from safetensors import safe_open

    torch.manual_seed(0)
    model = create_model(ARCH, num_classes=10)
    folder = save_dense(model, tmp_path / f"{ARCH}.digits", {"arch": ARCH, "args": {"num_classes": 10}}, half=True)
    with safe_open(str(folder / DENSE_FILE), framework="pt") as handle:
        dtypes = {name: handle.get_tensor(name).dtype for name in handle.keys()}
    assert dtypes["conv1.weight"] == torch.float16 and dtypes["fc.weight"] == torch.float16
    assert dtypes["bn1.running_var"] == torch.float32 and dtypes["fc.bias"] == torch.float32
    loaded = create_model(ARCH, pretrained=True, path=folder)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
