"""Per-node download and the published index: what a pip install (no hub/) resolves, and
that a device fetches only config.json, the card and its own shard (issue 18)."""
import pytest

from disco_zoo import hub
from disco_zoo.disco.shards import read_node_shard
from disco_zoo.errors import DiscoZooError
from disco_zoo.published import published_index
from disco_zoo.runtime.disco_executor import node_folder
from helpers import fake_hub_download

NAME = "resnet18_disco_2node.digits"
REAL_HUB = hub.REPO_HUB


@pytest.fixture
def no_local_store(monkeypatch, tmp_path):
    """As in an installed wheel: no hub/, no $DISCO_ZOO_HUB; the Hub is a local fake."""
    monkeypatch.delenv(hub.HUB_ENV, raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "REPO_HUB", tmp_path / "no-hub")
    calls: list = []
    remote = {f"disco-zoo/{folder.name}": folder for folder in REAL_HUB.iterdir() if folder.is_dir()}

    def install(cache):
        import huggingface_hub

        monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_hub_download(remote, cache, calls))

    return install, calls


def test_without_a_local_store_the_index_says_what_is_published(no_local_store):
    published = sorted(p.name for p in REAL_HUB.iterdir() if (p / "config.json").is_file())
    assert hub.published_folders() == {}
    assert hub.list_pretrained() == published == sorted(published_index())
    assert hub.folder_name("resnet18-disco-2node") == NAME  # the default tag, from the index
    assert hub.hf_repo_id(NAME) == f"disco-zoo/{NAME}"


@pytest.mark.parametrize("node", [0, 1])
def test_a_node_downloads_config_card_and_its_own_shard_only(no_local_store, tmp_path, node):
    install, calls = no_local_store
    install(tmp_path / f"cache{node}")
    folder = hub.resolve_folder(NAME, node=node)
    assert calls[-1]["allow_patterns"] == ["config.json", "README.md", f"node{node}.safetensors"]
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", f"node{node}.safetensors"]
    part, config, tensors = read_node_shard(folder, node)  # verified against config.json's sha256
    assert config.nodes == 2 and tensors
    with pytest.raises(DiscoZooError, match="missing shard"):
        read_node_shard(folder, 1 - node)  # the other node's weights never came
    fetched = sum(p.stat().st_size for p in folder.iterdir())
    whole = sum(p.stat().st_size for p in (REAL_HUB / NAME).iterdir())
    shard = (REAL_HUB / NAME / f"node{node}.safetensors").stat().st_size
    assert fetched < 0.6 * whole and fetched - shard < 0.1 * fetched
    print(f"node {node}: fetched {fetched:,} of {whole:,} bytes ({fetched / whole:.2f})")


def test_the_runtime_resolves_each_rank_to_its_own_node(no_local_store, tmp_path):
    install, calls = no_local_store
    install(tmp_path / "cache")
    assert node_folder(str(REAL_HUB / NAME), 1) == REAL_HUB / NAME  # a folder is used as it is
    assert calls == []
    folder = node_folder(NAME, 1)
    assert calls[-1]["allow_patterns"][-1] == "node1.safetensors"
    assert (folder / "node1.safetensors").is_file() and not (folder / "node0.safetensors").exists()


def test_without_node_the_whole_folder_comes(no_local_store, tmp_path):
    install, calls = no_local_store
    install(tmp_path / "cache")
    folder = hub.resolve_folder(NAME)
    assert calls[-1]["allow_patterns"] is None
    assert {"node0.safetensors", "node1.safetensors"} <= {p.name for p in folder.iterdir()}


def test_offline_a_node_uses_what_its_cache_holds(no_local_store, tmp_path, monkeypatch):
    install, calls = no_local_store
    install(tmp_path / "cache")
    first = hub.resolve_folder(NAME, node=0)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub.resolve_folder(NAME, node=0) == first
    assert calls[-1]["offline"] is True


def test_a_dense_folder_comes_whole_for_any_node(no_local_store, tmp_path):
    install, calls = no_local_store
    install(tmp_path / "cache")
    folder = hub.resolve_folder("resnet18.digits", node=0)  # the root splits its one file on the fly
    assert calls[-1]["allow_patterns"] is None and (folder / "model.safetensors").is_file()


@pytest.mark.parametrize("node", [2, -1])
def test_a_node_the_model_lacks_is_one_clear_error(no_local_store, tmp_path, node):
    install, calls = no_local_store
    install(tmp_path / "cache")
    with pytest.raises(hub.HubError, match=f"split over 2 nodes; node {node} does not exist"):
        hub.resolve_folder(NAME, node=node)
    assert calls == []  # refused before any download
