"""Every shell block in the README runs, each in its own bash (set -eu), the way a reader
with keys would run it: the simulators stand in for the services. Three commands that cannot
run inside a test have stand-ins, defined below with the reason for each."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import voicenb as vnb

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"```bash\n(.*?)```", README, flags=re.S)

STAND_INS = r"""
# `make demo` serves JupyterLab until stopped and `make test` is what runs this test:
# check that the targets exist and what they would do (make -n), without running them.
make() { command make -n -C "$REPO" "$@" >/dev/null; }
# No network here: a pip install must already be satisfied (it would be, after make test).
pip() { command python -m pip "$@" --no-index --quiet; }
# Ollama is a separate program this machine does not have.
ollama() { echo "ollama $*: (not installed here)"; }
"""


def test_the_readme_has_shell_blocks():
    assert len(BLOCKS) >= 6


@pytest.fixture(scope="module")
def reader(tmp_path_factory, postgres_server):
    """A folder like a fresh clone's, and the variables a reader with keys has set (and, for
    the team's server, the libpq ones of psql: a real PostgreSQL server)."""
    where = tmp_path_factory.mktemp("reader")
    for name in ("voicenb", "notebooks", "Makefile", "pyproject.toml"):
        (where / name).symlink_to(ROOT / name)
    shutil.copy(ROOT / "tests" / "data" / "question.wav", where / "question.wav")
    server = postgres_server
    team = server.new_database().rsplit("/", 1)[1]
    libpq = dict(PGHOST=server.host, PGPORT=str(server.port), PGUSER="voicenb",
                 PGPASSWORD=server.password, PGDATABASE=team)
    with vnb.sim.running() as sim:
        yield where, {**sim.env(), **libpq}


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_shell_block_runs(block, reader):
    where, keys = reader
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ASSEMBLYAI_", "OPENAI_"))}
    env.update(keys, REPO=str(ROOT), VOICENB_HOME=str(where / "voicenb-data"),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}")
    script = f"set -eu\n{STAND_INS}\n{block}\nwait 2>/dev/null || true\n"
    proc = subprocess.Popen(["bash", "-c", script], cwd=where, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=180)
    finally:
        try:  # whatever the block left in the background
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    assert proc.returncode == 0, f"{block}\n--- stdout\n{out}\n--- stderr\n{err}"
    assert "Traceback" not in err, err
