"""The README's torchrun commands for several hosts, run as written on localhost (h1 =
127.0.0.1, a free port): one torchrun per node, each with its --node-rank, both finish."""
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from disco_zoo.runtime.launch import free_port
from disco_zoo.runtime.worker import RESULT_PREFIX

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _torchrun_commands() -> list[str]:
    section = (REPO / "README.md").read_text().split("## Distributed runs on several hosts\n", 1)[1].split("\n## ", 1)[0]
    blocks = [b for b in re.findall(r"```bash\n(.*?)```", section, flags=re.S) if "torchrun" in b]
    assert len(blocks) == 1, "the section has one torchrun block"
    return [c.strip() for c in re.split(r"\n(?=torchrun )", blocks[0].replace("\\\n", " ")) if c.strip()]


def test_the_readme_gives_each_torchrun_its_node_rank():
    commands = _torchrun_commands()
    assert len(commands) == 2
    ranks = [re.search(r"--node-rank (\d+)", c).group(1) for c in commands]  # without it, one rank hangs
    assert ranks == ["0", "1"] and all("--nnodes 2" in c for c in commands)


@pytest.mark.slow
def test_readme_torchrun_commands_run_on_localhost():
    assert (BIN / "torchrun").exists(), "torchrun is in the venv (torch ships it)"
    port = str(free_port())
    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}", PYTHONPATH=str(REPO))
    procs = []
    try:
        for command in _torchrun_commands():
            command = command.replace("--master-addr h1", "--master-addr 127.0.0.1").replace("29500", port)
            procs.append(subprocess.Popen(["bash", "-c", command], cwd=REPO, env=env, text=True, start_new_session=True,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE))
        outputs = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    rows = {}
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, err[-3000:]
        rows.update({r["rank"]: r for r in (json.loads(l[len(RESULT_PREFIX):]) for l in out.splitlines()
                                          if l.startswith(RESULT_PREFIX))})
    assert sorted(rows) == [0, 1] and all(r["ok"] for r in rows.values())
    from disco_zoo.runtime.session import decode_output

    assert decode_output(rows[0]["result"]["logits"]).shape[-1] == 10 and "logits" not in rows[1]["result"]
