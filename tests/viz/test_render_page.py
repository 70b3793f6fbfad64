"""The render page in Chromium: the grid, its controls and the keyboard, from a moved folder; and the
page `jaxcam render` writes, the same after a rerun that finishes a partial folder and when two
processes share the images."""
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jaxcam.viz import pages

METHODS = ["grad_cam", "score_cam", "x ray#1"]  # a name needing URL escaping


def fake_render(out: Path, n: int = 6):
    """A render folder written through pages.save_cell: image i predicted 'cat' when i is even."""
    rng = np.random.default_rng(0)
    truth = {}
    for i in range(n):
        name = f"img {i}"
        pages.save_image(pages.original_path(str(out), name), rng.integers(0, 256, (20, 24, 3), dtype=np.uint8))
        pred, label = ("cat", "dog")[i % 2], ("cat", "dog", "bird")[i % 3]
        for j, m in enumerate(METHODS):
            info = {"explained": pred, "score": 0.5 + i / 100 + j / 1000, "predicted": pred, "label": label}
            pages.save_cell(str(out), name, m, rng.integers(0, 256, (20, 24, 3), dtype=np.uint8), info)
            truth[name, m] = info
    pages.render_page(str(out), [f"img {i}" for i in range(n)] + ["never rendered"], METHODS)
    return truth


def test_grid_controls_and_keyboard_from_a_moved_folder(open_page, tmp_path):
    truth = fake_render(tmp_path / "made")
    moved = tmp_path / "elsewhere" / "renders"
    shutil.move(str(tmp_path / "made"), str(moved))  # relative references: the moved folder still works
    o = open_page(moved / "index.html").check()
    page = o.page
    assert page.locator("td.cell").count() == 6 * 3
    assert page.locator("tr.row").count() == 6  # the never-rendered name has no row
    captions = page.locator("td.cell .caption").all_inner_texts()
    want = [f"{truth[f'img {i}', m]['explained']} {truth[f'img {i}', m]['score']:.2f}"
            for i in range(6) for m in METHODS]
    assert [c.strip() for c in captions] == want

    heat = page.locator("td.cell img.heat").first
    opacity = lambda: float(heat.evaluate("e => getComputedStyle(e).opacity"))  # noqa: E731
    assert opacity() == pytest.approx(0.5)
    page.locator("#opacity").fill("0.2")
    assert opacity() == pytest.approx(0.2)

    for value, kind in (("pred:cat", "predicted"), ("true:bird", "label")):
        page.select_option("#class-filter", value)
        shown = [t.split("\n")[0] for t in page.locator("tr.row td.name").filter(visible=True).all_inner_texts()]
        assert shown == [f"img {i}" for i in range(6) if truth[f"img {i}", METHODS[0]][kind] == value[5:]]
    page.select_option("#class-filter", "")
    assert o.visible("tr.row") == 6

    page.click('th.method[data-col="1"]')  # one column alone
    assert o.visible("td.cell") == 6 and o.visible('td.cell[data-col="1"]') == 6
    assert o.visible("th.method") == 1
    page.click('th.method[data-col="1"]')
    assert o.visible("td.cell") == 18

    cells = page.locator("td.cell")
    cells.nth(0).click()  # large view: original, heatmap, overlay of that cell
    assert page.locator("#large").is_visible()
    srcs = page.locator("#large img").evaluate_all("l => l.map(i => i.getAttribute('src'))")
    first = [cells.nth(0).locator(s).get_attribute("src") for s in ("img.orig", "img.heat")]
    assert srcs == [first[0], first[1], first[0], first[1]]
    page.keyboard.press("ArrowRight")
    assert page.locator(".large-caption").inner_text().startswith(f"img 0 | {METHODS[1]}")
    page.keyboard.press("ArrowDown")
    assert page.locator(".large-caption").inner_text().startswith(f"img 1 | {METHODS[1]}")
    page.keyboard.press("Escape")
    assert not page.locator("#large").is_visible()
    assert page.evaluate("document.activeElement.dataset.title").startswith(f"img 1 | {METHODS[1]}")
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("Enter")
    assert page.locator(".large-caption").inner_text().startswith(f"img 1 | {METHODS[0]}")
    o.check()  # the large view loaded its images too


def _render(out):
    from jaxcam.cli import render

    argv = ["--method", "grad_cam,fast_ablation", "--model", "resnet20", "--weights", "none", "--image-size", "32",
            "--batch-size", "2", "--out", str(out)]  # the 4 shipped photos
    assert render.main(argv) == 0
    return (out / "index.html").read_text() if (out / "index.html").exists() else None


def test_render_writes_the_page_again_after_a_partial_folder_and_from_two_processes(open_page, tmp_path,
                                                                                      monkeypatch):
    one = _render(tmp_path / "one")
    o = open_page(tmp_path / "one" / "index.html").check()
    assert o.page.locator("td.cell").count() == 4 * 2  # the 4 shipped photos x 2 methods
    names = o.page.locator("tr.row td.name").all_inner_texts()
    assert [n.split("\n")[0] for n in names] == ["astronaut", "chelsea", "coffee", "rocket"]
    for cell in o.page.locator("td.cell").all():  # class and score as the triptych's title says
        title, caption = cell.get_attribute("data-title"), cell.locator(".caption").inner_text()
        predicted = title.split("predicted ")[1]
        assert caption.strip() == predicted.replace(" (", " ").rstrip(")")

    partial = tmp_path / "partial"  # a killed run: some images done, the others missing, no page
    shutil.copytree(tmp_path / "one", partial)
    for p in [partial / "index.html", *partial.glob("rocket*"), *partial.glob("page/rocket*"),
              *partial.glob("coffee_grad_cam.png"), *partial.glob("page/coffee_grad_cam.png")]:
        p.unlink()
    assert _render(partial) == one

    # Two processes (jaxcam.distributed; its own tests run real ones): each renders its share of whole
    # batches; process 1 writes no page, process 0 writes it from both shares' files.
    from jaxcam import distributed

    monkeypatch.setattr(distributed, "process_count", lambda: 2)
    monkeypatch.setattr(distributed, "barrier", lambda name: None)
    two = tmp_path / "two"
    monkeypatch.setattr(distributed, "process_index", lambda: 1)
    assert _render(two) is None
    assert sorted(p.name for p in (two / "page").iterdir()) == [
        "coffee.jpg", "coffee_fast_ablation_cam.png", "coffee_grad_cam.png",
        "rocket.jpg", "rocket_fast_ablation_cam.png", "rocket_grad_cam.png"]
    monkeypatch.setattr(distributed, "process_index", lambda: 0)
    assert _render(two) == one
    open_page(two / "index.html").check()
    for name in ("rocket_grad_cam.png", "astronaut_fast_ablation_cam.png"):
        assert pages.read_info(str(two / "page" / name)) == pages.read_info(str(tmp_path / "one" / "page" / name))
        with Image.open(two / "page" / name) as a, Image.open(tmp_path / "one" / "page" / name) as b:
            assert np.array_equal(np.asarray(a), np.asarray(b))
