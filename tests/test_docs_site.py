"""The documentation: the site builds with `mkdocs build --strict` (any warning fails: a broken link, a page
missing from the nav, an API reference that does not resolve), offline; the README stays a first screen
(at most 10 KB) and its relative links lead to files that exist."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
README_LIMIT_BYTES = 10_240
# [text](target) and ![alt](target), the target up to a space or ")"; reference-style links are not used.
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def relative_links(text: str) -> list[str]:
    """The link targets that are files of this repository: not URLs, mail or in-page anchors."""
    targets = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue
        targets.append(target.split("#", 1)[0])
    return targets


def test_site_builds_strictly_and_offline(tmp_path):
    site = tmp_path / "site"
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    # No network: proxies pointing nowhere make any download fail loudly instead of succeeding quietly.
    env.update(http_proxy="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9",
               HTTPS_PROXY="http://127.0.0.1:9", no_proxy="", NO_PROXY="")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-6000:]
    assert "WARNING" not in output, output[-6000:]
    # The API reference was generated from the docstrings, not left as a `::: locktune.api` line.
    api = (site / "api" / "index.html").read_text(encoding="utf-8")
    assert 'id="locktune.load"' in api and 'id="locktune.api"' in api and "::: locktune" not in api
    # RESULTS.md is included (docs/hooks/results.py) with its plots beside it.
    results = (site / "studies" / "results" / "index.html").read_text(encoding="utf-8")
    first_heading = next(line for line in (ROOT / "RESULTS.md").read_text().splitlines() if line.startswith("# "))
    assert first_heading[2:].split()[0] in results and "include: RESULTS.md" not in results
    plots = re.findall(r'<img[^>]+src="([^"]+)"', results)
    assert plots and all((site / "studies" / "results" / src).resolve().is_file() for src in plots), plots
    # Nothing fetched at view time from a font CDN either.
    assert "fonts.googleapis.com" not in (site / "index.html").read_text(encoding="utf-8")


def test_readme_is_at_most_10_kb():
    size = len(README.read_text(encoding="utf-8").encode())
    assert size <= README_LIMIT_BYTES, f"README.md is {size:,} bytes; the limit is {README_LIMIT_BYTES:,}: move detail to docs/"


def test_every_relative_link_in_the_readme_exists():
    targets = relative_links(README.read_text(encoding="utf-8"))
    assert len(targets) >= 10  # the picture, the docs pages, RESULTS.md
    missing = [t for t in targets if not (ROOT / t).exists()]
    assert not missing, f"README.md links to files that do not exist: {missing}"


def test_the_link_finder_sees_links_and_skips_urls():
    text = ("![a](docs/assets/lit.svg) [b](docs/api.md#load) [c](https://x.org/a.md) [d](#here) "
            "[e](RESULTS.md \"title\") [f](mailto:a@b.c)")
    assert relative_links(text) == ["docs/assets/lit.svg", "docs/api.md", "RESULTS.md"]
