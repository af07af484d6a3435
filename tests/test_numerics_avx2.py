"""The numerics-sensitive tests (marked ``numerics``) rerun as a CPU without AVX-512 or native
bf16 runs them: PyTorch, oneDNN and MKL capped at their AVX2 kernels in a fresh process (the
caps are read when torch loads). CI runs on whichever CPU the submitter has; this lets one run
check the tolerances for both kinds (docs/development.md, "On every CPU")."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

AVX2 = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
}


def test_numerics_marked_tests_pass_on_avx2_kernels(tmp_path) -> None:
    if os.environ.get("ATEN_CPU_CAPABILITY", "").lower() == "avx2":
        pytest.skip("the suite already runs on AVX2 kernels")
    tests = Path(__file__).parent
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "numerics",
         f"--basetemp={tmp_path}", str(tests)],
        capture_output=True, text=True, timeout=900, check=False, cwd=tests.parent,
        env={**os.environ, **AVX2},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and " failed" not in done.stdout
    probe = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.backends.cpu.get_cpu_capability())"],
        capture_output=True, text=True, check=True, env={**os.environ, **AVX2},
    )  # fmt: skip
    assert probe.stdout.strip() == "AVX2"
