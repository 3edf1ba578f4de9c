"""The page template of `dvc plots show` / `dvc plots diff`: charts that draw with no network.

DVC's own page loads vega, vega-lite and vega-embed from a CDN through its ``{scripts}``
placeholder, so offline every interactive chart stays blank. This template leaves ``{scripts}``
out and inlines one bundle of the three, made by the pinned ``vl-convert-python`` package.
`make install` writes it to the file that ``plots.html_template`` in ``.dvc/config`` names
(git-ignored: about 0.9 MB, rebuilt from the installed package, never edited by hand).

    python -m mnist_pipeline.plots_page .dvc/vega-offline.html
"""

from __future__ import annotations

import argparse
import sys

from .atomic import atomic_open

# The Vega-Lite line of the `$schema` in DVC's templates (and ours in .dvc/plots/).
VEGA_LITE_VERSION = "5.21"

# DVC's divs call `vegaEmbed('#id', spec)`. SVG rather than the default canvas: marks stay
# sharp at any zoom, and they are in the page's DOM, where tests/test_plots_browser.py counts
# them.
SNIPPET = (
    'window.vegaEmbed = (el, spec, opt) => vegaEmbed(el, spec, {renderer: "svg", ...opt});'
    " window.vega = vega; window.vegaLite = vegaLite;"
)

# DVC fills {refresh_tag} and {plot_divs} by plain string replacement.
PAGE = """<!DOCTYPE html>
<html>
<head>
    <meta charset="utf-8">
    {refresh_tag}
    <title>DVC Plot</title>
    <!-- vega {vega}, vega-lite {vega_lite}, vega-embed {vega_embed}:
         bundled by vl-convert-python {vl_convert}, so the charts need no network -->
    <script>
{bundle}
    </script>
    <style>
        table {
            border-spacing: 15px;
        }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def render_page() -> str:
    """The template's text: DVC's page, with the bundle inlined where its CDN scripts were."""
    import vl_convert

    bundle = vl_convert.javascript_bundle(snippet=SNIPPET, vl_version=VEGA_LITE_VERSION)
    # Inside a <script> element, "</script" would end it early; DVC's placeholders in the
    # bundle would be replaced. Neither is in any bundle seen so far: refuse rather than guess.
    if "</script" in bundle.lower():
        raise ValueError("the vega bundle contains '</script': it cannot be inlined as is")
    for placeholder in ("{scripts}", "{plot_divs}", "{refresh_tag}"):
        if placeholder in bundle:
            raise ValueError(f"the vega bundle contains DVC's placeholder {placeholder}")
    fills = {
        "{vega}": vl_convert.get_vega_version(),
        "{vega_lite}": VEGA_LITE_VERSION,
        "{vega_embed}": vl_convert.get_vega_embed_version(),
        "{vl_convert}": vl_convert.__version__,
        "{bundle}": bundle,  # last: nothing in the bundle is replaced
    }
    page = PAGE
    for key, value in fills.items():
        page = page.replace(key, value)
    return page


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="where to write the template (.dvc/vega-offline.html)")
    args = parser.parse_args(argv)
    with atomic_open(args.out, "wb") as f:
        f.write(render_page().encode("utf-8"))  # the bundle holds non-ASCII text
    return 0


if __name__ == "__main__":
    sys.exit(main())
