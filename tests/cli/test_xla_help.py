"""--jit_compile stays off by default, and its help says why (issue 16: measured on CPU)."""
import subprocess
import sys
from pathlib import Path

from metaseg.config import InnerConfig
from tests.conftest import time_limit

ROOT = Path(__file__).resolve().parents[2]


def test_xla_is_off_by_default_and_help_gives_the_measured_reason():
    assert InnerConfig().jit_compile is False
    proc = subprocess.run([sys.executable, "run_metasegnet.py", "--helpfull"], cwd=ROOT,
                          capture_output=True, text=True, timeout=time_limit(300), check=False)
    text = " ".join(proc.stdout.split())
    start = text.index("--[no]jit_compile")
    help_text = text[start:start + 400]
    assert "Off by default: on CPU, XLA's depthwise convolution makes the step 30-45x slower" \
        in help_text, help_text
    assert "(default: 'false')" in help_text
