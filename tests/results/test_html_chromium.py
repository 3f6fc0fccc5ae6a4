"""The HTML report opens in headless Chromium and its screenshot shows the tables and the plots."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from results import Dataset, write_report
from tests.conftest import require_executable

pytestmark = pytest.mark.slow
WIDTH, HEIGHT = 1400, 3000


def _screenshot(chromium: str, page: Path, out: Path) -> np.ndarray:
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           f"--screenshot={out}", f"--window-size={WIDTH},{HEIGHT}", page.as_uri()]
    subprocess.run(cmd, capture_output=True, timeout=120, check=False)
    assert out.is_file(), f"chromium wrote no screenshot: {' '.join(cmd)}"
    return np.asarray(Image.open(out).convert("RGB"), dtype=np.int16)


def test_html_report_renders_tables_and_plots(synthetic: Dataset, tmp_path: Path) -> None:
    chromium = require_executable("chromium", "chromium-browser")
    page = write_report(synthetic, tmp_path / "report", formats=("html",))["html"]
    pixels = _screenshot(chromium, page, tmp_path / "shot.png")
    assert pixels.shape == (HEIGHT, WIDTH, 3)
    dark = pixels.max(axis=2) < 100  # text and table rules
    colour = (pixels.max(axis=2) - pixels.min(axis=2)) > 80  # plot markers, lines and heat maps
    top, below = slice(0, 900), slice(900, HEIGHT)
    assert dark[top].mean() > 0.01, "no table text in the top of the page"
    assert colour[top].mean() < 0.001, "the tables should be black on white"
    assert colour[below].sum() > 20_000, "no plots below the tables"
