"""The documentation site builds with ``mkdocs build --strict``: a broken link or cross-reference, a name of
the public API that no page documents, or an object that moved without its directive fails here."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_site_builds_strict(tmp_path):
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    # API pages: a docstring, read statically (nothing imported), and the hs index's link to it
    causal = (site / "api" / "circuits.causal" / "index.html").read_text("utf-8")
    assert "Causal tracing (ROME), averaged indirect effects over facts" in causal
    assert 'id="headscope.circuits.causal.trace"' in causal
    assert 'href="circuits.causal/#headscope.circuits.causal.trace"' in (site / "api" / "index.html").read_text("utf-8")
    # guide pages: one per "## " section of the README, its figures served beside them
    sections = re.findall(r"^## (.+)$", (ROOT / "README.md").read_text("utf-8"), flags=re.M)
    assert "Set up and run" in sections
    for title in sections:
        slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")
        assert f'<h1 id="{slug}">' in (site / slug / "index.html").read_text("utf-8"), title
    assert (site / "docs" / "average_trace.png").is_file()
    # the notebooks, rendered with their stored outputs
    notebook = (site / "notebooks" / "01_quickstart" / "index.html").read_text("utf-8")
    assert "jp-OutputArea" in notebook and "data:image/png;base64," in notebook
