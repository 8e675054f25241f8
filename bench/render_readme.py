"""Copy the generated result tables into README.md between their markers.

    python bench/render_readme.py [--readme README.md]

Each block ``<!-- BEGIN <path> -->`` ... ``<!-- END <path> -->`` of the README is replaced
by the Markdown file at ``<path>`` (relative to the repository) without its ``# `` title and
with its headings moved two levels down, so the README shows exactly what the last
``bench/run_all.py``, ``bench/bench_settings.py`` and ``studies/learning_signal.py`` wrote.
A block whose file does not exist yet is left as it is, with a warning.
"""

from __future__ import annotations

import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [p for p in (HERE,) if p not in sys.path]

from absl import app, flags, logging  # noqa: E402

import provenance  # noqa: E402

BLOCK = re.compile(r"(<!-- BEGIN (\S+) -->\n)(.*?)(<!-- END \2 -->)", re.S)


def demote(markdown: str) -> str:
    """Drop the ``# `` title; ``## x`` becomes ``#### x`` (inside a README subsection)."""
    lines = [line for line in markdown.splitlines() if not line.startswith("# ")]
    return "\n".join(("##" + line) if line.startswith("##") else line
                     for line in lines).strip() + "\n"


def render(readme: str, repo: str) -> str:
    def replace(match):
        path = os.path.join(repo, match.group(2))
        if not os.path.exists(path):
            logging.warning("%s does not exist yet; README block left unchanged", path)
            return match.group(0)
        with open(path, encoding="utf-8") as f:
            return match.group(1) + demote(f.read()) + match.group(4)
    return BLOCK.sub(replace, readme)


def main(argv):
    del argv
    path = flags.FLAGS.readme
    with open(path, encoding="utf-8") as f:
        text = f.read()
    provenance.write_atomic(path, render(text, provenance.REPO))
    logging.info("Updated %s", path)


if __name__ == "__main__":
    flags.DEFINE_string("readme", os.path.join(provenance.REPO, "README.md"), "README to update.")
    app.run(main)
