"""The application API: a DISCO model kept running across calls (disco_zoo.distributed),
its multi-host form (disco-zoo node), and that nothing outlives it."""
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import disco_zoo
from disco_zoo.errors import DiscoZooError
from disco_zoo.runtime.errors import PeerError
from disco_zoo.runtime.launch import free_port, pid_alive
from helpers import processes_mentioning, sparse_disco_folder

REPO = Path(__file__).resolve().parents[1]
BATCHES = (1, 2, 3)


def _single_process(folder):
    """What the session must reproduce: the folder's model in one process, eval mode."""
    return disco_zoo.create_model("resnet18", pretrained=True, path=folder).eval()


def _expected_traffic(model, part, batches):
    """The accounting's bytes for one call per batch size: image scatter + layer exchanges."""
    from disco_zoo.disco.accounting import disco_traffic, input_pair_bytes, layer_shapes

    tags, pairs = {}, {}
    for b in batches:
        shape = (b, 3, 32, 32)
        per_layer, per_pair = disco_traffic(part, layer_shapes(model, shape), 4)
        for name, n in [*per_layer.items(), ("input", sum(input_pair_bytes(part, shape, 4).values()))]:
            if n:
                tags[name] = tags.get(name, 0) + n
        for pair, n in [*per_pair.items(), *input_pair_bytes(part, shape, 4).items()]:
            if n:
                pairs[pair] = pairs.get(pair, 0) + n
    return tags, pairs


def _assert_gone(pids, run_dir):
    """Within 10 s: the ranks dead, then (the reaper kills first, removes files last) the
    run's folder gone and no process naming it."""
    def lingering():
        return any(pid_alive(p) for p in pids) or run_dir.exists() or processes_mentioning(str(run_dir))

    deadline = time.monotonic() + 10
    while lingering() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [p for p in pids if pid_alive(p)], "a rank outlived the session"
    assert not run_dir.exists() and not processes_mentioning(str(run_dir))


def test_calls_match_the_single_process_model_and_bytes_match_the_accounting(tmp_path):
    folder, masked, part = sparse_disco_folder(tmp_path, 2)
    reference = _single_process(folder)
    xs = [torch.randn(b, 3, 32, 32, generator=torch.Generator().manual_seed(b)) for b in BATCHES]
    with disco_zoo.distributed(folder, nodes=2, timeout_s=30) as model:
        pids, run_dir = list(model.rank_pids.values()), model._run.out_dir.parent
        assert len(pids) == 2 and model.load_stats["backend"] == "mpi"
        for x in xs:  # every batch size, in one session: each rank loaded its shard once
            out = model(x)
            with torch.no_grad():
                assert out.shape == (x.shape[0], 10)
                assert (out - reference(x)).abs().max().item() <= 1e-4
        with pytest.raises(DiscoZooError, match=r"takes a batch \(B, 3, \d+, \d+\), got shape \(3, 32, 32\); add the batch dimension"):
            model(xs[0][0])
    _assert_gone(pids, run_dir)
    tags, pairs = _expected_traffic(masked, part, BATCHES)
    assert model.calls == 3
    assert model.traffic["tags"] == tags and model.traffic["pairs"] == pairs  # exactly the accounting's messages
    assert model.request_bytes == 32 * (len(BATCHES) + 1)  # a request header per call and the stop, to 1 peer
    with pytest.raises(DiscoZooError, match="is closed"):
        model(xs[0])


def test_gloo_with_an_emulated_link_and_an_exception_in_the_block(tmp_path):
    folder, _, _ = sparse_disco_folder(tmp_path, 2)
    reference = _single_process(folder)
    x = torch.randn(2, 3, 32, 32)
    with pytest.raises(KeyError, match="the application's own error"):
        with disco_zoo.distributed(folder, backend="gloo", latency="1ms", timeout_s=30) as model:
            pids, run_dir = list(model.rank_pids.values()), model._run.out_dir.parent
            with torch.no_grad():
                assert (model(x) - reference(x)).abs().max().item() <= 1e-4
            raise KeyError("the application's own error")
    _assert_gone(pids, run_dir)


def test_a_killed_rank_is_the_runtimes_one_line_error_in_the_caller(tmp_path):
    folder, _, _ = sparse_disco_folder(tmp_path, 2)
    model = disco_zoo.distributed(folder, timeout_s=5)
    pids, run_dir = model.rank_pids, model._run.out_dir.parent
    model(torch.randn(1, 3, 32, 32))
    os.kill(pids[1], signal.SIGKILL)
    start = time.monotonic()
    with pytest.raises(PeerError) as caught:
        model(torch.randn(1, 3, 32, 32))
    assert time.monotonic() - start < 5 + 10  # the timeout bounds it (no hang)
    message = str(caught.value)
    assert "\n" not in message, message
    assert re.match(r"distributed run failed: rank 1 died (\(killed by SIGKILL\) )?before returning a result", message), \
        message
    assert "full log:" in message
    _assert_gone(pids.values(), run_dir)  # the survivors were stopped at once
    with pytest.raises(DiscoZooError, match="stopped after a failure: distributed run failed: rank 1 died"):
        model(torch.randn(1, 3, 32, 32))
    model.close()


@pytest.mark.slow
@pytest.mark.parametrize("ending", ["exit", "sigkill"])
def test_no_rank_outlives_the_interpreter(tmp_path, ending):
    """Never closed: the interpreter's exit must stop it (atexit), and a SIGKILLed
    application takes its ranks along (pdeathsig, the reaper)."""
    folder, _, _ = sparse_disco_folder(tmp_path, 2)
    script = textwrap.dedent(f"""
        import sys, time, torch, disco_zoo
        model = disco_zoo.distributed({str(folder)!r}, backend="gloo", timeout_s=30)
        model(torch.randn(1, 3, 32, 32))
        print("PIDS", *model.rank_pids.values(), model._run.out_dir.parent, flush=True)
        if sys.argv[1] == "sigkill":
            time.sleep(600)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script, ending], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=REPO)
    try:
        line = proc.stdout.readline()
        assert line.startswith("PIDS"), proc.stderr.read()[-3000:] if proc.poll() is not None else line
        *pids, run_dir = line.split()[1:]
        if ending == "sigkill":
            proc.kill()
        assert proc.wait(timeout=120) == (0 if ending == "exit" else -signal.SIGKILL)
    finally:
        proc.kill()
    _assert_gone([int(p) for p in pids], Path(run_dir))


def test_bad_arguments_are_one_line_errors(tmp_path):
    folder, _, _ = sparse_disco_folder(tmp_path, 2)
    with pytest.raises(DiscoZooError, match="split over 2 nodes; pass nodes=2, not 3"):
        disco_zoo.distributed(folder, nodes=3)
    with pytest.raises(DiscoZooError, match="MPI cannot attach"):
        disco_zoo.distributed(folder, launch=False, backend="mpi", master_port=1)
    with pytest.raises(DiscoZooError, match="needs master_port="):
        disco_zoo.distributed(folder, launch=False)
    with pytest.raises(DiscoZooError, match="is a dense model"):
        disco_zoo.distributed("resnet18.digits")
    with pytest.raises(DiscoZooError, match="timeout_s must be a positive number of seconds, got nan"):
        disco_zoo.distributed(folder, timeout_s=float("nan"))
    with pytest.raises(DiscoZooError, match="wire_dtype must be one of 'fp32', 'fp16', got 'int8'"):
        disco_zoo.distributed(folder, wire_dtype="int8")
    proc = _node(folder, "--rank", "2", "--master-port", "1")
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1] == "error: --rank 2: resnet18. has nodes 0..1"


def _node(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "disco_zoo.cli", "node", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO)


@pytest.mark.slow
def test_a_node_without_its_root_says_so_in_one_line(tmp_path):
    folder, _, _ = sparse_disco_folder(tmp_path, 2)
    proc = _node(folder, "--rank", "1", "--master-port", free_port(), "--timeout", "2")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 2, proc.stderr[-3000:]  # "waiting for the root", then the error
    assert lines[1].startswith("error: rank 1: gloo rendezvous failed") and "launch=False, master_port=" in lines[1]


@pytest.mark.slow
def test_published_four_node_model_over_mpi():
    """A published model, 4 ranks, the launched MPI form: outputs equal create_model's."""
    name = "resnet18_disco_4node.digits"
    reference = disco_zoo.create_model(name, pretrained=True).eval()
    x = torch.randn(2, 3, 32, 32)
    with disco_zoo.distributed(name, timeout_s=60) as model:
        assert len(model.rank_pids) == 4
        out = model(x)
    with torch.no_grad():
        assert (out - reference(x)).abs().max().item() <= 1e-4
    assert set(model.traffic["tags"]) >= {"input", "fc"} and model.request_bytes == 32 * 3 * 2


def _readme_section(title: str) -> str:
    text = (REPO / "README.md").read_text()
    return text.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def _bash_blocks(section: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", section, flags=re.S)


@pytest.mark.slow
def test_readme_application_example_runs_as_written_on_localhost(tmp_path):
    """The README's multi-host example (a `disco-zoo node` plus the application as rank 0),
    on localhost with a free port, the published ResNet-50: the doc cannot drift."""
    (block,) = [b for b in _bash_blocks(_readme_section("Use it in an application")) if "disco-zoo node" in b]
    port = str(free_port())
    script = block.replace("29600", port)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}", PYTHONPATH=str(REPO))
    proc = subprocess.Popen(["bash", "-e", "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=tmp_path, env=env, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=400)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the node too, had the application failed
        except ProcessLookupError:
            pass
    assert proc.returncode == 0, out[-2000:] + err[-3000:]
    assert "served 2 calls; the root closed the model" in err
    assert re.search(r"model: (\d\.\de-0[5-9]|0\.0e\+00)$", out, flags=re.M), out


@pytest.mark.slow
def test_node_command_serves_the_root_and_exits_when_it_is_killed(tmp_path):
    """A `disco-zoo node` rank against an in-process root: outputs match; a root that dies
    ends the node with one error line, not a hang."""
    folder, _, _ = sparse_disco_folder(tmp_path, 2)
    reference = _single_process(folder)
    port = free_port()
    cmd = [sys.executable, "-m", "disco_zoo.cli", "node", str(folder), "--rank", "1", "--master-port", str(port),
           "--timeout", "60"]
    node = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        with disco_zoo.distributed(folder, launch=False, master_port=port, timeout_s=60) as model:
            for b in (1, 3):
                x = torch.randn(b, 3, 32, 32)
                with torch.no_grad():
                    assert (model(x) - reference(x)).abs().max().item() <= 1e-4
            root = model.rank_pids[0]
            os.kill(root, signal.SIGKILL)  # the root device goes away mid-session
            _, err = node.communicate(timeout=60)
            with pytest.raises(PeerError, match="rank 0 of .* closed its connection|rank 0 died"):
                model(torch.randn(1, 3, 32, 32))
    finally:
        node.kill()
    assert node.returncode != 0 and err.strip().splitlines()[-1].startswith("error: "), err[-2000:]
