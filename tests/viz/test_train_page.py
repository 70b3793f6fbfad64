"""The training run page in Chromium: rebuilt at every epoch, per-class table (sortable, checked
against counts by a plain loop), misclassified gallery with a CAM per stage, checkpoint links."""
from pathlib import Path

import numpy as np
import pytest

from jaxcam.train import reports
from tests.helpers import tiny_model

CLASSES = ["ant", "bee", "cat", "dog", "eel"]  # tiny_model: 5 classes, layers conv1 and conv2


def epoch(e):
    return {"epoch": e, "train_loss": 1.0 / e, "train_acc": 0.2 * e, "val_loss": 1.1 / e, "val_acc": 0.15 * e,
            "lr": 0.1, "seconds": 3.0 + e}


def test_run_page_follows_the_epochs_and_shows_the_final_reports(open_page, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text("model: tiny\nepochs: 2\n")
    reports.write_metrics(str(out), [epoch(1)])
    o = open_page(out / "index.html").check()
    assert o.page.locator("#epochs tbody tr").count() == 1
    assert "epochs so far: 1" in o.page.locator("header").inner_text()

    for kind in ("last", "best"):
        (out / "checkpoints" / kind / "1").mkdir(parents=True)
    reports.write_metrics(str(out), [epoch(1), epoch(2)])
    o = open_page(out / "index.html").check()
    assert o.page.locator("#epochs tbody tr").count() == 2
    assert o.page.locator("#epochs tbody tr").nth(1).locator("td").first.inner_text() == "2"
    links = o.page.locator("a").evaluate_all("l => l.map(a => a.getAttribute('href'))")
    assert "checkpoints/best/1/" in links and "checkpoints/last/1/" in links and "config.yaml" in links
    assert all((out / href).exists() for href in links)

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(5), 4)
    right = rng.random(20) < np.array([0.9, 0.5, 0.2, 0.7, 0.6])[labels]  # per-class chance of a clear logit
    logits = rng.normal(size=(20, 5)) + 2.5 * np.eye(5)[labels] * right[:, None]
    images = rng.integers(0, 256, (20, 16, 16, 3), dtype=np.uint8)
    reports.write_final(str(out), tiny_model(), images, labels, logits, CLASSES, gallery=3,
                        cam_layers=["conv1", "conv2"])
    o = open_page(out / "index.html").check()
    page = o.page
    pred = logits.argmax(1)
    accuracy = {}
    for c, name in enumerate(CLASSES):  # a plain loop over the images
        hits = [pred[i] == c for i in range(20) if labels[i] == c]
        accuracy[name] = sum(hits) / len(hits)
    page.locator("#per-class thead th", has_text="accuracy").click()
    order = page.locator("#per-class tbody td:first-child").all_inner_texts()
    assert order == sorted(CLASSES, key=lambda n: (accuracy[n], CLASSES.index(n)))
    values = page.locator("#per-class tbody td:nth-child(4)").evaluate_all("l => l.map(t => +t.dataset.value)")
    assert values == pytest.approx([accuracy[n] for n in order])

    wrong = np.flatnonzero(pred != labels)
    assert page.locator("table.grid tr.row").count() == min(3, len(wrong))
    assert page.locator("table.grid th.method").all_inner_texts() == ["conv1", "conv2"]
    assert page.locator("table.grid td.cell").count() == 2 * min(3, len(wrong))
    first = page.locator("table.grid td.name").first.inner_text()
    most_confident = wrong[np.argmax(np.exp(logits[wrong]).max(1) / np.exp(logits[wrong]).sum(1))]
    assert f"true {CLASSES[labels[most_confident]]}" in first and f"pred {CLASSES[pred[most_confident]]}" in first
    page.click('th.method[data-col="1"]')
    assert o.visible("td.cell") == min(3, len(wrong))
    page.locator("td.cell").filter(visible=True).first.press("Enter")
    assert page.locator("#large").is_visible() and "conv2" in page.locator(".large-caption").inner_text()
    assert Path(out / "confusion.png").exists() and page.locator('img[src="confusion.png"]').count() == 1
    o.check()

    reports.write_summary(str(out), {"best_epoch": 2, "val_acc": 0.25, "wall_seconds": 12.5})
    o = open_page(out / "index.html").check()
    assert o.page.locator("header .sub").inner_text() == "finished"
    assert o.page.locator("table").first.locator("td").all_inner_texts()[:2] == ["best_epoch", "2"]
