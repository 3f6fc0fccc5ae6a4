"""The HTML report opens in headless Chromium: its screenshot shows the tables and the plots, and a script in
the rendered page measures what a reader sees (alignment, bold, images, links)."""

from __future__ import annotations

import html
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from results import Dataset, RunLinks, ablation_table, write_report
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
    assert colour[below].sum() > 5_000, "no plots below the tables"  # thin lines and hollow markers at 96 dpi


PROBE = """<script>
const table = document.querySelector("table");  // the first: the ablation table
const cells = [...table.querySelectorAll("tbody tr")].map(tr => [...tr.children].map(td => {
  const box = td.getBoundingClientRect(), range = document.createRange();
  range.selectNodeContents(td);
  const text = range.getBoundingClientRect();
  return {text: td.textContent, left: text.left - box.left, right: box.right - text.right,
          weight: Number(getComputedStyle(td.querySelector("strong") || td).fontWeight)};
}));
document.body.setAttribute("data-probe", JSON.stringify({
  heads: [...table.querySelectorAll("th")].map(th => th.textContent), cells,
  images: [...document.querySelectorAll("img")].map(i => [i.alt, i.naturalWidth]),
  links: [...document.querySelectorAll("a")].map(a => [a.textContent, a.href])}));
</script>"""


def _seen(chromium: str, page: Path, probe: Path) -> dict[str, Any]:
    """What the page shows once laid out: the ablation table's cells (text, gaps to the cell's edges,
    weight), the images decoded and the links, measured by a script in the rendered page."""
    probe.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           f"--window-size={WIDTH},{HEIGHT}", "--dump-dom", probe.as_uri()]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False).stdout
    found = re.search(r'data-probe="([^"]*)"', dom)
    assert found, f"the probe did not run: {' '.join(cmd)}"
    return dict(json.loads(html.unescape(found.group(1))))


def test_a_reader_sees_right_aligned_numbers_the_best_in_bold_and_links_to_mlflow(searched: Dataset,
                                                                                 tmp_path: Path) -> None:
    chromium = require_executable("chromium", "chromium-browser")
    runs = {str(t): f"http://mlflow.test:5000/#/experiments/3/runs/run{i}"
            for i, t in enumerate(searched.trials["trial_id"])}
    links = RunLinks("http://mlflow.test:5000/#/experiments/3/runs", runs)
    page = write_report(searched, tmp_path / "report", formats=("html",), links=links)["html"]
    seen = _seen(chromium, page, tmp_path / "probe.html")
    heads = seen["heads"]
    assert heads[:2] == ["selection", "best setting"] and heads[2].startswith("val mIoU (%")
    assert heads[3].startswith("OC rate (%")
    for row in seen["cells"]:
        assert row[0]["left"] < row[0]["right"]  # text: flush left
        for cell in row[2:]:  # figures: flush right (the baseline's empty p cell has no text to place)
            assert not cell["text"] or cell["right"] < cell["left"], cell
    values = ablation_table(searched).values
    weights = [row[2]["weight"] for row in seen["cells"]]
    assert [w >= 700 for w in weights] == [i == values["val_miou_mean"].idxmax() for i in range(len(values))]
    images = dict(seen["images"])
    assert images.get("parallel_coordinates", 0) > 0 and images.get("importance", 0) > 0
    shown = dict(seen["links"])
    assert shown["The study's runs in MLflow"] == links.experiment_url
    assert {t: u for t, u in shown.items() if t in runs} == runs  # every trial, to its own run
