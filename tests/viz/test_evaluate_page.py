"""The evaluate page in Chromium: the metrics table (mean and 95 % interval as numpy/statistics compute
them from the per-image results), sorting by any column, bars, and the per-image drill-down."""
import math
import statistics

import numpy as np
import pytest

from jaxcam.cli import evaluate
from jaxcam.metrics import evaluation
from jaxcam.viz import pages
from tests.cli.test_evaluate import BASE, data  # noqa: F401  (the fixture: 3 random images img0..2.png)

Z = statistics.NormalDist().inv_cdf(0.975)


def interval(values):
    values = [float(np.mean(v)) for v in values]  # per image (ROAD: mean over the percentiles)
    return statistics.fmean(values), Z * statistics.stdev(values) / math.sqrt(len(values))


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, data):  # noqa: F811
    out = tmp_path_factory.mktemp("eval")
    argv = BASE + ["--data", str(data), "--methods", "grad_cam", "--steps", "4", "--percentiles", "50",
                   "--out", str(out)]
    rows, failed = evaluate.run(argv, progress=False)
    assert not failed
    return out


def test_page_of_a_real_evaluation(open_page, evaluated):
    o = open_page(evaluated / "index.html").check()
    page = o.page
    (cache,) = evaluated.glob("cache/*")
    header = page.locator("#metrics thead th").all_inner_texts()
    rows = page.locator("#metrics tbody tr")
    assert rows.count() == 2
    for r in range(2):
        method = rows.nth(r).locator("td").first.inner_text()
        results = [dict(np.load(cache / method / f"img{i}.npz")) for i in range(3)]
        for key, title in evaluation.COLUMNS:
            mean, half = interval([res[key] for res in results])
            cell = rows.nth(r).locator("td").nth(header.index(title))
            assert float(cell.get_attribute("data-value")) == pytest.approx(mean, rel=1e-6, abs=1e-9)
            assert cell.inner_text().strip() == f"{mean:.4f} ± {half:.4f}"
    # drill-down: image 2's section shows each method's map and that image's scores
    page.click('.drill-list a[href="#img-2"]')
    assert o.visible("section.drill") == 1 and page.locator("#img-2").is_visible()
    cells = page.locator("#img-2 td.cell")
    assert cells.count() == 2 and o.visible("td.cell") == 2
    for c in range(2):
        method = page.locator("#img-2 th.method").nth(c).inner_text()
        res = dict(np.load(cache / method / "img2.npz"))
        text = cells.nth(c).locator(".caption").inner_text()
        assert f"Deletion AUC: {float(res['deletion_auc']):.4f}" in text
        assert f"ROAD MoRF: {float(np.mean(res['road_morf'])):.4f}" in text
        assert cells.nth(c).locator("img.heat").get_attribute("src") == f"cache/{cache.name}/{method}/img2.png"


def test_sorting_reorders_the_rows_as_the_numbers_say(open_page, tmp_path):
    rng = np.random.default_rng(1)
    cache, files, methods = tmp_path / "cache" / "cfg", [f"im{i}.png" for i in range(4)], ["a", "b", "c", "d", "e"]
    for m in methods:
        for f in files:
            (cache / m).mkdir(parents=True, exist_ok=True)
            values = {k: rng.normal(size=(2,) if k.startswith("road") else ()) for k, _ in evaluation.COLUMNS}
            np.savez(cache / m / f"{f[:-4]}.npz", seconds=np.float32(rng.random()), warm=np.bool_(True), **values)
    table = evaluation.collect(methods, files, str(cache))
    rows = evaluation.summary_rows(table)
    pages.evaluate_page(str(tmp_path), str(cache), files, rows, table, evaluation.COLUMNS, lambda m, f: None)
    o = open_page(tmp_path / "index.html").check()
    page = o.page
    header = page.locator("#metrics thead th").all_inner_texts()
    for key, title in evaluation.COLUMNS:
        means = {m: interval([np.load(cache / m / f"{f[:-4]}.npz")[key] for f in files])[0] for m in methods}
        page.locator("#metrics thead th").nth(header.index(title)).click()
        assert page.locator("#metrics tbody tr td:first-child").all_inner_texts() == sorted(methods, key=means.get)
        page.locator("#metrics thead th").nth(header.index(title)).click()
        assert page.locator("#metrics tbody tr td:first-child").all_inner_texts() == sorted(
            methods, key=means.get, reverse=True)
        widths = page.locator(f"#metrics tbody tr td:nth-child({header.index(title) + 1}) .bar").evaluate_all(
            "l => l.map(b => parseFloat(b.style.width))")
        top = max(abs(v) for v in means.values())
        assert widths == pytest.approx([100 * abs(means[m]) / top for m in sorted(methods, key=means.get,
                                                                                    reverse=True)], abs=0.051)
    page.locator("#metrics thead th").first.click()  # text column: alphabetical
    assert page.locator("#metrics tbody tr td:first-child").all_inner_texts() == methods
