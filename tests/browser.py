"""A real headless Chromium with no network beyond this machine: what a page draws when the internet is away.

`.ci/run` installs Debian's chromium and sets SELFHEAL_REQUIRE_BROWSER, so there a missing browser fails the test
instead of skipping it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

import pytest

# every host name but the loopback address resolves to nothing: a CDN script cannot load, whatever the machine
OFFLINE = "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"
QUIET = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if found is None:
        if os.environ.get("SELFHEAL_REQUIRE_BROWSER"):
            pytest.fail("no chromium on PATH, and SELFHEAL_REQUIRE_BROWSER is set (`apt-get install chromium`)")
        pytest.skip("no chromium on PATH (CI installs it: .ci/run)")
    return found


def rendered_dom(url: str, budget_ms: int = 15000) -> str:
    """The page's DOM after its scripts ran (up to `budget_ms` of virtual time), loaded offline."""
    browser = chromium()
    with tempfile.TemporaryDirectory(prefix="selfheal-chromium-") as profile:
        proc = subprocess.run([browser, *QUIET, OFFLINE, f"--user-data-dir={profile}",
                               f"--virtual-time-budget={budget_ms}", "--dump-dom", url],
                              capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"chromium failed on {url}: {proc.stderr[-2000:]}"
    return proc.stdout
