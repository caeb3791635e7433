"""Pretrained store: resolution order, offline behaviour, hashes, strict loading, torch.hub."""
import json
from pathlib import Path

import pytest
import torch

from disco_zoo import create_model, hub
from disco_zoo.registry import ModelEntry, list_models, register_model, unregister_model
from disco_zoo.store import write_folder_atomically
from disco_zoo.weights import DENSE_FILE, save_dense

ARCH = "hubtest_resnet18"
ENTRY = ModelEntry(arch=ARCH, builder="disco_zoo.models.timm_dense:build_timm", family="resnet", source="timm",
                   kwargs={"timm_name": "resnet18"})


def _publish(root: Path, seed: int = 0, tag: str = "digits") -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(seed)
    model = create_model(ARCH, num_classes=10)
    folder = save_dense(model, root / f"{ARCH}.{tag}", {"arch": ARCH, "args": {"num_classes": 10}})
    return folder, model


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    """A registered test architecture and a hub of its own, both gone after each test."""
    list_models()  # the real entries first, so the test entry is the only one removed
    register_model(ENTRY)
    monkeypatch.delenv(hub.HUB_ENV, raising=False)
    monkeypatch.setattr(hub, "REPO_HUB", tmp_path / "repo-hub")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    yield
    unregister_model(ARCH)


def test_the_test_entry_does_not_outlive_the_test():
    assert ARCH in list_models()  # the fixture registered it; teardown removes it (next test's setup re-adds)


def test_published_is_what_the_hub_holds(tmp_path, monkeypatch):
    assert hub.list_pretrained(ARCH) == []
    _publish(tmp_path / "env", tag="digits")
    _publish(tmp_path / "env", tag="other")
    monkeypatch.setenv(hub.HUB_ENV, str(tmp_path / "env"))
    assert hub.list_pretrained(ARCH) == [f"{ARCH}.digits", f"{ARCH}.other"]
    assert hub.folder_name(ARCH) == f"{ARCH}.digits"  # the default tag: the first published


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
    with pytest.raises(hub.HubError, match="no pretrained weights"):
        create_model(ARCH, pretrained=True)  # no tag, nothing published: nothing to guess
    with pytest.raises(hub.HubError, match="not found; looked in") as err:
        create_model(f"{ARCH}.digits", pretrained=True)
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
    name = f"{ARCH}.digits"  # nothing local: the tag says which repository to look for
    assert try_to_load_from_cache(hub.hf_repo_id(name), "config.json", cache_dir=cache) == str(snapshot / "config.json")
    assert hub.resolve_folder(name) == snapshot
    assert _same(model, create_model(name, pretrained=True, local_files_only=True))


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


def test_unknown_tag_lists_available(tmp_path, monkeypatch):
    _publish(tmp_path / "env", tag="digits")
    _publish(tmp_path / "env", tag="other")
    monkeypatch.setenv(hub.HUB_ENV, str(tmp_path / "env"))
    with pytest.raises(hub.HubError, match="Published tags of hubtest_resnet18: digits, other"):
        create_model(f"{ARCH}.imagenet", pretrained=True)


def test_wrong_architecture_in_folder(tmp_path):
    folder, _ = _publish(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["args"] = {"num_classes": 7}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(Exception, match="do not fit"):
        create_model(ARCH, pretrained=True, path=folder)


def test_failed_write_leaves_previous_folder(tmp_path):
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
    folder = save_dense(model, tmp_path / f"{ARCH}.digits", {"arch": ARCH, "args": {"num_classes": 10}}, storage="fp16")
    with safe_open(str(folder / DENSE_FILE), framework="pt") as handle:
        dtypes = {name: handle.get_tensor(name).dtype for name in handle.keys()}
    assert dtypes["conv1.weight"] == torch.float16 and dtypes["fc.weight"] == torch.float16
    assert dtypes["bn1.running_var"] == torch.float32 and dtypes["fc.bias"] == torch.float32
    loaded = create_model(ARCH, pretrained=True, path=folder)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())


def test_loaded_model_carries_its_folder_config(tmp_path):
    folder, _ = _publish(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config.update(input_size=[3, 32, 32], mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25], class_names=list("abcdefghij"),
                  task="classification")
    (folder / "config.json").write_text(json.dumps(config))
    model = create_model(f"{ARCH}.digits", pretrained=True, path=folder)
    cfg = model.pretrained_cfg
    assert cfg.name == f"{ARCH}.digits" and cfg.input_size == (3, 32, 32) and cfg.num_classes == 10
    assert cfg.class_names == tuple("abcdefghij") and cfg.task == "classification"
    import timm.data

    import disco_zoo

    expected = {"input_size": (3, 32, 32), "interpolation": "bilinear", "mean": (0.5, 0.5, 0.5),
                "std": (0.25, 0.25, 0.25), "crop_pct": 1.0, "crop_mode": "center"}
    assert disco_zoo.data_config(model) == expected
    assert timm.data.resolve_data_config(model=model) == expected  # timm reads our config as its own
    from PIL import Image

    x = disco_zoo.create_transform(model)(Image.new("RGB", (50, 40), (255, 0, 128)))
    assert x.shape == (3, 32, 32)
    assert torch.allclose(x[:, 0, 0], (torch.tensor([1.0, 0.0, 128 / 255]) - 0.5) / 0.25, atol=1e-3)


@pytest.mark.parametrize("content, fragment", [
    ("not json", "not JSON"),
    ("[]", "JSON object, got list"),
    ("{}", "lacks the field 'arch'"),
    ('{"arch": "x", "kind": "disco", "files": [{"name": "a", "size": 1, "sha256": "0"}]}', "lacks the field 'nodes'"),
    ('{"arch": "x", "kind": "dense"}', "lacks the field 'files'"),
    ('{"arch": "x", "kind": "weird", "files": []}', "'kind' must be one of dense, disco"),
    ('{"arch": 3, "kind": "dense", "files": []}', "'arch' must be a string"),
    ('{"arch": "x", "kind": "dense", "files": [{"name": "model.safetensors", "size": 1, "sha256": "0"}], "storage_dtype": "int4"}', "'storage_dtype' must be one of fp32"),
    ('{"arch": "x", "kind": "dense", "files": [{"name": "../../etc/passwd", "size": 1, "sha256": "0"}]}', "files[0]"),
])
def test_malformed_config_is_one_clear_error_naming_file_and_field(tmp_path, content, fragment):
    from disco_zoo.errors import DiscoZooError
    from disco_zoo.store import load_folder_config

    folder = tmp_path / f"{ARCH}.digits"
    folder.mkdir()
    (folder / "config.json").write_text(content)
    with pytest.raises(DiscoZooError) as err:
        load_folder_config(folder)
    assert fragment in str(err.value) and "config.json" in str(err.value)
    with pytest.raises(DiscoZooError):
        create_model(f"{ARCH}.digits", pretrained=True, path=folder)


def test_corrupt_safetensors_with_matching_hash_is_a_clear_error(tmp_path):
    from disco_zoo.errors import DiscoZooError
    from disco_zoo.store import file_record

    folder, _ = _publish(tmp_path)
    (folder / DENSE_FILE).write_bytes(b"\\x00" * 64)
    config = json.loads((folder / "config.json").read_text())
    config["files"] = [file_record(folder / DENSE_FILE)]  # a consistent record of a broken file
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(DiscoZooError, match="not a readable safetensors file"):
        create_model(f"{ARCH}.digits", pretrained=True, path=folder)
