"""glibc allocator tuning applied by `import istd`."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from istd._malloc import keep_freed_memory

GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_thresholds_are_raised_on_glibc():
    assert keep_freed_memory() is True


@pytest.mark.skipif(GLIBC, reason="needs a system without glibc")
def test_other_systems_are_left_alone():
    assert keep_freed_memory() is False


def _imports_tuning(env: dict[str, str]) -> bool:
    code = "import sys, istd; print('istd._malloc' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return out.stdout.strip() == "True"


def test_import_applies_it_unless_opted_out():
    base = {k: v for k, v in os.environ.items() if k != "ISTD_KEEP_MALLOC"}
    assert _imports_tuning(base)
    assert not _imports_tuning({**base, "ISTD_KEEP_MALLOC": "1"})
