"""The page template of `dvc plots show/diff` (mnist_pipeline.plots_page): vega inlined, nothing
loaded from the network, and the file that `make install` writes is the one .dvc/config names.
tests/test_plots_browser.py draws real pages made with it in a browser."""

from __future__ import annotations

import re
import subprocess

from conftest import REPO
from project import plots_page

from mnist_pipeline import plots_page as page_module


def test_template_inlines_vega_and_drops_dvcs_cdn_scripts(tmp_path):
    from dvc_render.html import HTML
    from dvc_render.vega import VegaRenderer

    out = tmp_path / "page.html"
    assert page_module.main([str(out)]) == 0
    template = out.read_text(encoding="utf-8")
    assert template.count("{plot_divs}") == 1 and "{scripts}" not in template
    assert "window.vegaEmbed=" in template and "window.vega=" in template
    assert len(template) > 500_000  # the bundle itself, not a reference to it

    # Filled the way DVC fills it: its CDN scripts have nowhere to go.
    page = HTML(template).with_scripts(VegaRenderer.SCRIPTS).with_element('<div id="x"></div>')
    html = page.embed()
    assert '<div id="x"></div>' in html
    assert "cdn." not in html
    assert not re.search(r"<script[^>]*\ssrc\s*=", html, re.IGNORECASE)


def test_make_install_writes_the_file_dvc_config_names_and_git_ignores_it():
    page = plots_page(REPO)
    makefile = (REPO / "Makefile").read_text()
    assert f"PLOTS_PAGE := {page.relative_to(REPO)}\n" in makefile
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", str(page.relative_to(REPO))], cwd=REPO, check=False
    )
    assert ignored.returncode == 0, f"{page} is not git-ignored"
