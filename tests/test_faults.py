"""Faults, signals and bad input (issue 17): every fault ends in one clear line, within the
timeout plus a few seconds, and leaves no process and no temporary directory behind.

Runs are driven from a separate process (``DRIVER``, what the CLI does around a launch)
with TMPDIR and the log directory inside the test's own folder, so the run's spec path
(under TMPDIR) marks every process it started: orphans are found by scanning /proc.
"""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import descendants, is_loopback, listening_addresses, processes_mentioning

from disco_zoo.runtime.launch import pid_alive

REPO = Path(__file__).resolve().parents[1]
BACKENDS = ["mpi", "gloo"]
TIMEOUT = 3.0
SLACK_S = 5.0  # the bound: the clear error within timeout + 5 s
STARTUP_S = 90.0  # ranks importing torch on a busy machine

DRIVER = """
import json, sys
from disco_zoo.runtime.errors import Interrupted, PeerError
from disco_zoo.runtime.launch import launch
from disco_zoo.timing.links import Link
spec = json.loads(sys.argv[1])
link = Link.parse(*spec["link"]) if spec["link"] else None
try:
    launch(spec["entry"], spec["world"], spec["backend"], args=spec["args"], timeout_s=spec["timeout"], link=link)
except PeerError as err:
    print(f"error: {err}", file=sys.stderr)
    sys.exit(2)
except Interrupted as err:
    print(f"error: {err}", file=sys.stderr)
    sys.exit(128 + err.signum)
"""


class Driven:
    """One launch in a driver process, its files all under ``tmp_path``."""

    def __init__(self, tmp_path: Path, backend: str, entry: str = "disco_zoo.runtime.selftest:steady",
                 args: dict | None = None, world: int = 2, timeout: float = TIMEOUT, link: list | None = None) -> None:
        self.tmp, self.logs, self.pid_dir = tmp_path / "tmp", tmp_path / "logs", tmp_path / "pids"
        for folder in (self.tmp, self.pid_dir):
            folder.mkdir()
        self.world = world
        spec = {"entry": entry, "world": world, "backend": backend, "timeout": timeout, "link": link,
                "args": {"pid_dir": str(self.pid_dir), **(args or {})}}
        env = dict(os.environ, TMPDIR=str(self.tmp), DISCO_ZOO_LOG_DIR=str(self.logs))
        self.proc = subprocess.Popen([sys.executable, "-c", DRIVER, json.dumps(spec)], cwd=REPO, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.mark = time.monotonic()

    def ranks_up(self) -> dict[int, int]:
        """rank -> pid, once every rank's transport is up (the entry wrote its pid file)."""
        deadline = time.monotonic() + STARTUP_S
        while time.monotonic() < deadline:
            files = list(self.pid_dir.glob("*.pid"))
            if len(files) == self.world and all(f.read_text().strip() for f in files):
                time.sleep(0.3)  # into the entry's first wait
                self.mark = time.monotonic()
                return {int(f.stem): int(f.read_text().split()[0]) for f in files}
            assert self.proc.poll() is None, self.proc.communicate()
            time.sleep(0.05)
        raise AssertionError("ranks did not start")

    def finish(self) -> tuple[int, str, float]:
        """(exit status, stderr, seconds from the fault to the driver's exit)."""
        _, err = self.proc.communicate(timeout=120)
        return self.proc.returncode, err, time.monotonic() - self.mark

    def orphans(self) -> tuple[list[int], list[str]]:
        """Processes still naming the run's directory and files left in TMPDIR, after
        giving the clean-up (the reaper, for a SIGKILLed launcher) SLACK_S to act."""
        deadline = time.monotonic() + SLACK_S
        while True:
            procs = processes_mentioning(str(self.tmp))
            files = sorted(p.name for p in self.tmp.iterdir() if p.name.startswith("disco-zoo-"))
            if not (procs or files) or time.monotonic() > deadline:
                return procs, files
            time.sleep(0.1)


def _one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


# -- the fault matrix -------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_killed_rank_is_named_at_once_with_the_message_its_peer_waited_for(tmp_path, backend):
    run = Driven(tmp_path, backend, timeout=120)  # the launch must not wait out the timeout
    os.kill(run.ranks_up()[1], signal.SIGKILL)
    code, err, seconds = run.finish()
    line = _one_error_line(err)
    assert code == 2 and seconds < SLACK_S, (seconds, line)
    assert "rank 1 died" in line
    # rank 0 is mostly receiving, but may be caught posting its send on the same tag
    assert re.search(r"rank 0 was waiting to (receive from|send to) rank 1 \(tag/layer 'step'\)", line), line
    assert run.orphans() == ([], [])


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_stopped_rank_is_reported_within_the_timeout(tmp_path, backend):
    run = Driven(tmp_path, backend)
    os.kill(run.ranks_up()[1], signal.SIGSTOP)
    code, err, seconds = run.finish()
    line = _one_error_line(err)
    assert code == 2 and seconds < TIMEOUT + SLACK_S, (seconds, line)
    assert "rank 1 is stopped" in line
    # rank 0 may be caught in either half of its round: its answer to rank 1 can wait in a
    # full socket buffer (gloo) as well as its receive
    assert re.search(rf"rank 0 timed out after {TIMEOUT:g} s waiting to (receive from|send to) rank 1 "
                     r"\(tag/layer 'step'\)", line), line
    assert run.orphans() == ([], [])


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_sigterm_to_the_launcher_stops_every_rank(tmp_path, backend):
    run = Driven(tmp_path, backend)
    run.ranks_up()
    run.proc.send_signal(signal.SIGTERM)
    code, err, seconds = run.finish()
    assert code == 128 + signal.SIGTERM and seconds < SLACK_S
    assert _one_error_line(err) == "error: interrupted by SIGTERM"
    assert run.orphans() == ([], [])


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_sigkill_of_the_launcher_leaves_no_rank_and_no_directory(tmp_path, backend):
    run = Driven(tmp_path, backend)
    pids = run.ranks_up()
    run.proc.kill()
    code, _, _ = run.finish()
    assert code == -signal.SIGKILL
    start = time.monotonic()
    assert run.orphans() == ([], [])  # the ranks died with their parent; the reaper removed the directory
    while any(pid_alive(pid) for pid in pids.values()) and time.monotonic() - start < SLACK_S:
        time.sleep(0.05)  # a process on its way out has no command line any more, but may still run
    assert not any(pid_alive(pid) for pid in pids.values())  # (a zombie awaiting init's reaping is not alive)
    assert time.monotonic() - start < SLACK_S


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_link_too_slow_for_the_timeout_fails_at_once(tmp_path, backend):
    run = Driven(tmp_path, backend, link=["1bit", None])  # one 4-byte message needs 32 s
    run.ranks_up()
    code, err, seconds = run.finish()
    line = _one_error_line(err)
    assert code == 2 and seconds < TIMEOUT + SLACK_S, (seconds, line)
    assert "the link is too slow for the timeout" in line and "'step'" in line and f"timeout of {TIMEOUT:g} s" in line
    assert run.orphans() == ([], [])


# -- item 1: emulated delivery is bounded by the timeout -------------------------------


def test_a_stamp_past_the_deadline_is_a_clear_error_without_waiting():
    import torch
    from helpers import LoopbackBackend, LoopbackHub

    from disco_zoo.runtime.errors import LinkTooSlowError
    from disco_zoo.runtime.transport import Transport
    from disco_zoo.timing.links import Link

    hub = LoopbackHub()
    sender, receiver = (Transport(LoopbackBackend(hub, r, 2), links=Link.parse(None, "1000s"), timeout_s=0.5)
                        for r in (0, 1))
    start = time.monotonic()
    with pytest.raises(LinkTooSlowError) as sent:
        sender.send(torch.zeros(4), 1, "layer3")
    with pytest.raises(LinkTooSlowError) as received:
        receiver.recv((4,), torch.float32, 0, "layer3")
    assert time.monotonic() - start < 0.5  # neither waited for the deadline, let alone the stamp
    for err in (sent.value, received.value):
        text = str(err)
        assert "link 0->1" in text and "'layer3'" in text and "timeout of 0.5 s" in text and "too slow" in text
        assert err.tag == "layer3"
    assert sent.value.rank == 1 and received.value.rank == 0  # the peer at the other end


@pytest.mark.slow
@pytest.mark.parametrize(("link", "timeout"), [(["--bandwidth", "1bit"], 10), (["--latency", "1000s"], 5)])
def test_cli_run_on_a_link_too_slow_for_the_timeout(tmp_path, link, timeout):
    env = dict(os.environ, TMPDIR=str(tmp_path), DISCO_ZOO_LOG_DIR=str(tmp_path / "logs"))
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "disco_zoo.cli", "run", "resnet18-disco-2node", "--random", *link,
                           "--timeout", str(timeout)], capture_output=True, text=True, timeout=120, env=env, cwd=REPO)
    seconds = time.monotonic() - start
    line = _one_error_line(proc.stderr)
    assert proc.returncode == 2 and "the link is too slow for the timeout" in line and "'input'" in line
    assert seconds < timeout + 15, seconds  # start-up (torch, the model's shards) + no waiting at all
    assert processes_mentioning(str(tmp_path)) == [] and list(tmp_path.glob("disco-zoo-*")) == []


# -- item 3: a local run listens on loopback only ---------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_local_run_listens_on_loopback_only(tmp_path, backend):
    run = Driven(tmp_path, backend, args={"seconds": 30})
    run.ranks_up()
    try:
        addresses = listening_addresses(descendants(run.proc.pid))
    finally:
        run.proc.send_signal(signal.SIGTERM)
        run.finish()
    assert [a for a in addresses if not is_loopback(a[0])] == [], addresses
    if backend == "gloo":
        assert addresses  # the rendezvous store and gloo's pairs: found, and on loopback
    assert run.orphans() == ([], [])


# -- items 4 and 11: one line, verbatim; the traceback in a log ------------------------


def test_error_text_is_printed_verbatim_on_one_line(capsys):
    from disco_zoo.cli import print_error

    text = "rank 0: failed to receive [/__w/pytorch/third_party/gloo/pair.cc:561] [bold]x[/] " + "y" * 300
    print_error(text)
    assert capsys.readouterr().err == f"error: {text}\n"


def test_cli_prints_a_name_that_looks_like_markup():
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "disco_zoo.cli", "run", "[/x]"], capture_output=True, text=True,
                          timeout=60, cwd=REPO)
    line = _one_error_line(proc.stderr)
    assert proc.returncode == 2 and "'[/x]'" in line and time.monotonic() - start < 30


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_failing_rank_keeps_its_traceback_in_the_named_log(tmp_path, backend):
    run = Driven(tmp_path, backend, entry="disco_zoo.runtime.selftest:fail_at",
                 args={"bad_rank": 1, "mode": "raise", "tag": "layer2.conv1"})
    code, err, _ = run.finish()
    line = _one_error_line(err)
    assert code == 2
    assert line.startswith("error: distributed run failed: rank 1 failed: ValueError: deliberate failure; ")
    logs = list(run.logs.glob("*.log"))
    assert len(logs) == 1 and line.endswith(f"full log: {logs[0]}")
    text = logs[0].read_text()
    assert "Traceback" in text and "ValueError: deliberate failure" in text and "== rank 1: failed" in text
    assert oct(logs[0].stat().st_mode & 0o777) == "0o600"
    assert run.orphans() == ([], [])


# -- item 5: hub push uploads exactly the listed files ---------------------------------


class FakeHfApi:
    calls: list = []

    def __init__(self, token=None):
        self.token = token

    def create_repo(self, *args, **kwargs):
        return None

    def upload_folder(self, **kwargs):
        FakeHfApi.calls.append(kwargs)
        return "https://huggingface.co/fake"


@pytest.fixture
def hub_copy(tmp_path, monkeypatch):
    """resnet18.digits copied into a private hub root, its card regenerated, HfApi faked."""
    import shutil

    import huggingface_hub

    from disco_zoo.model_cards import render_folder_card
    from disco_zoo.store import read_config

    folder = tmp_path / "hub" / "resnet18.digits"
    shutil.copytree(REPO / "hub" / "resnet18.digits", folder)
    (folder / "README.md").write_text(render_folder_card(read_config(folder)))
    monkeypatch.setenv("DISCO_ZOO_HUB", str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHfApi)
    FakeHfApi.calls = []
    return folder


def _push():
    from disco_zoo.commands.hubcmd import push_command

    push_command("resnet18.digits", repo_id="someone/resnet18", token="t", private=False)


def test_hub_push_uploads_exactly_the_listed_files(hub_copy):
    _push()
    (call,) = FakeHfApi.calls
    assert sorted(call["allow_patterns"]) == ["README.md", "config.json", "model.safetensors"]


@pytest.mark.parametrize("stray", [".env", "notes/todo.txt", "model.safetensors.bak"])
def test_hub_push_refuses_a_folder_holding_anything_else(hub_copy, stray):
    from disco_zoo.errors import DiscoZooError

    (hub_copy / stray).parent.mkdir(parents=True, exist_ok=True)
    (hub_copy / stray).write_text("HF_TOKEN=secret")
    with pytest.raises(DiscoZooError, match=f"does not list: {stray}"):
        _push()
    assert FakeHfApi.calls == []


def test_hub_push_refuses_a_config_naming_a_file_outside_the_folder(hub_copy):
    from disco_zoo.errors import DiscoZooError

    config = json.loads((hub_copy / "config.json").read_text())
    config["files"].append({"name": "../../secret", "sha256": "0" * 64, "size": 1})
    (hub_copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(DiscoZooError, match="not a file inside"):
        _push()
    assert FakeHfApi.calls == []
