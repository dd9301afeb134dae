"""`dvc plots show` / `dvc plots diff` pages that render with no network.

Why: DVC's page loads Vega, Vega-Lite and Vega-Embed from a CDN, so on an air-gapped runner or a laptop on a
train it is blank. DVC takes an HTML template instead (`plots.html_template` in `.dvc/config`); this one is DVC's
own page with the three libraries inlined, as vl-convert bundles them (a package made for exactly this), so the
page is the same with or without a network. This repository commits its template; any project gets one from
`selfheal offline-plots`.
"""

from __future__ import annotations

from pathlib import Path

from selfheal.core import atomic, workspace
from selfheal.core.errors import SelfHealError

# DVC's plot templates are Vega-Lite v5 specifications: the bundle's Vega-Lite must read them as written
VEGA_LITE = "5.20"
CONFIG_KEY = "html_template"
# DVC's page calls the global vegaEmbed(...) from each plot's own script tag
GLOBALS = "window.vegaEmbed = vegaEmbed; window.vega = vega; window.vegaLite = vegaLite;"


def page() -> str:
    """DVC's HTML page with Vega, Vega-Lite and Vega-Embed inlined in place of its CDN script tags."""
    import vl_convert
    from dvc_render.html import HTML, PAGE_HTML

    bundle = vl_convert.javascript_bundle(GLOBALS, vl_version=VEGA_LITE)
    placeholders = [HTML.SCRIPTS_PLACEHOLDER, HTML.PLOTS_PLACEHOLDER, HTML.REFRESH_PLACEHOLDER]
    if "</script" in bundle.lower() or any("{" + name + "}" in bundle for name in placeholders):
        # either would cut the inline script short or be filled in by DVC: refuse rather than write a broken page
        raise SelfHealError("vl-convert's bundle contains '</script' or a DVC placeholder; cannot inline it")
    # in place of the scripts placeholder, where DVC puts its CDN tags (the only scripts its renderers add)
    return PAGE_HTML.replace("{" + HTML.SCRIPTS_PLACEHOLDER + "}", f"<script>\n{bundle}\n</script>")


def install(root: Path) -> list[str]:
    """Write the template into the project's `.dvc/` and point the project's DVC config at it."""
    from dvc.config import Config

    dvc_dir = root / ".dvc"
    if not dvc_dir.is_dir():
        raise SelfHealError(f"{root.resolve()}: not a DVC project (no .dvc/ folder); run `dvc init` first")
    template = root / workspace.PLOTS_TEMPLATE
    template.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(template, page())
    relative = template.relative_to(dvc_dir).as_posix()  # DVC reads it relative to .dvc/
    with Config(str(dvc_dir)).edit("repo") as config:
        config.setdefault("plots", {})[CONFIG_KEY] = relative
    return [f"wrote {workspace.PLOTS_TEMPLATE} (Vega, Vega-Lite and Vega-Embed inlined)",
            f"set plots.{CONFIG_KEY} = {relative} in .dvc/config: `dvc plots show` / `dvc plots diff` pages "
            "now render offline (commit both to share it)"]
