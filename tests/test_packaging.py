"""A plain `pip install .` (no extras) runs the README's commands: the runtime dependencies are complete."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow  # a fresh venv and a pip install: minutes (run with --run-slow)


def test_a_plain_install_without_extras_runs_the_devnet(tmp_path):
    src = tmp_path / "src"  # a copy: building in place would leave build/ in the checkout
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".venv", ".git", "build", "*.egg-info", "__pycache__",
                                                             "tests", "grafana"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    # the real runtime dependencies, resolved by pip (from its cache and the configured indexes)
    install = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(src)],
                             capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-3000:]
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba")}
    env.pop("PYTHONPATH", None)
    result = subprocess.run([str(venv / "bin" / "quantus-miner"), "devnet", "--blocks", "1", "--json"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report, result.stdout
    assert "httpx" not in result.stderr
    # without the optional gpu extra a GPU engine is refused up front, naming the extra (even with the simulator on)
    result = subprocess.run([str(venv / "bin" / "quantus-miner"), "mine", "--engine", "gpu-cuda-v2", "--header",
                             "00" * 32, "--difficulty", "5"], cwd=tmp_path, env={**env, "NUMBA_ENABLE_CUDASIM": "1"},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "--engine=gpu-cuda-v2: the GPU engines need the optional gpu extra (pip install 'quantus-miner[gpu]')" \
        in result.stderr
