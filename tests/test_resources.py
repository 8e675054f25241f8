"""The facts metaseg ships (metaseg/resources): provenance lines, and an installed package
finds them without the source tree."""
import os
import pathlib
import subprocess
import sys

from metaseg import resources
from metaseg.data.tasks import read_class_list
from tests.conftest import time_limit

REPO = pathlib.Path(__file__).resolve().parents[1]
SHIPPED = (resources.FSS1000_TEST_CLASSES, resources.FSS1000_TRAIN_CLASSES,
           resources.FPK_TEST_CLASSES, resources.ORIGINAL_FLAGS, resources.TF1_VARIABLES)


def test_every_shipped_file_opens_with_its_provenance():
    for name in SHIPPED:
        first = resources.resource_path(name).read_text(encoding="utf-8").splitlines()[0]
        assert first.startswith("# ") and "ml4ai/mliis" in first, name
    assert sorted(p.name for p in (REPO / "metaseg" / "resources").iterdir()
                  if p.suffix != ".py" and p.name != "__pycache__") == sorted(SHIPPED)


def test_class_lists_have_the_authors_counts():
    counts = [len(read_class_list(resources.resource_path(name)))
              for name in SHIPPED[:3]]
    assert counts == [240, 760, 5]


def test_a_built_package_ships_and_finds_its_resources(tmp_path):
    """What setup.py installs (build_py: packages plus package_data), used from elsewhere."""
    lib = tmp_path / "lib"
    subprocess.run([sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(lib)],
                   cwd=REPO, check=True, capture_output=True, timeout=time_limit(120))
    code = ("from metaseg import resources\n"
            f"for name in {SHIPPED!r}:\n"
            "    print(resources.resource_path(name))\n")
    env = dict(os.environ, PYTHONPATH=str(lib), TF_CPP_MIN_LOG_LEVEL="3")
    found = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, check=True,
                           capture_output=True, text=True, timeout=time_limit(120))
    assert found.stdout.split() == [str(lib / "metaseg" / "resources" / n) for n in SHIPPED]
