"""How long a render page of 50 images x 8 methods takes to open in headless Chromium (target: under 2 s).

    python benchmarks/page_load.py                 # builds the folder in a temp dir, prints the times
    python benchmarks/page_load.py --images 50 --methods 8 --repeats 5 --screenshot docs/pages-render.png

The folder is what `jaxcam render` writes for the page (jaxcam.viz.pages): the shipped photos (cycled)
as 224 px JPEGs and a smooth 224 px heatmap PNG per cell. Timed: a fresh page, from ``goto`` until
the load event and every image in the window decoded (the grid's images are lazy: the others load
when scrolled near); median of the repeats. `--eager` times every image of the page instead. Check `uptime`: load counts.
"""
import argparse
import os
import statistics
import tempfile
import time

import numpy as np

from jaxcam import images as images_lib
from jaxcam.viz import heatmap, pages


def build(out: str, n: int, m: int) -> None:
    photos = [images_lib.load(p, 224).image for p in images_lib.sample_photos()]
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:224, 0:224] / 224.0
    methods = [f"method_{j}" for j in range(m)]
    for i in range(n):
        name = f"image_{i:03d}"
        pages.save_image(pages.original_path(out, name), photos[i % len(photos)])
        for meth in methods:
            cy, cx = rng.random(2)
            cam = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 0.05)
            pages.save_cell(out, name, meth, heatmap(cam), {"explained": "tabby cat", "score": float(rng.random()),
                                                           "predicted": "tabby cat", "label": None})
    pages.render_page(out, [f"image_{i:03d}" for i in range(n)], methods)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--images", type=int, default=50)
    p.add_argument("--methods", type=int, default=8)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--chromium", default="/usr/bin/chromium")
    p.add_argument("--eager", action="store_true", help="time until every image is decoded (lazy ones forced)")
    p.add_argument("--screenshot", default=None, help="also save a screenshot of the page's top here")
    args = p.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as out:
        build(out, args.images, args.methods)
        size = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(out) for f in fs)
        url = "file://" + os.path.join(out, "index.html")
        times = []
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=args.chromium)
            for _ in range(args.repeats + 1):  # the first opens the browser's caches: not counted
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                start = time.perf_counter()
                page.goto(url, wait_until="load")
                if args.eager:
                    page.evaluate("document.querySelectorAll('img[loading=lazy]').forEach(i => { i.loading = 'eager'; })")
                    page.wait_for_function("Array.from(document.images).every(i => !i.hasAttribute('src') || "
                                           "(i.complete && i.naturalWidth > 0))")
                page.wait_for_function("Array.from(document.images).filter(i => i.hasAttribute('src') && "
                                       "i.getBoundingClientRect().top < innerHeight).every(i => i.complete && "
                                       "i.naturalWidth > 0)")
                times.append(time.perf_counter() - start)
                cells = page.locator("td.cell").count()
                if args.screenshot and len(times) == 1:
                    page.locator("td.cell").nth(1).click()
                    page.screenshot(path=args.screenshot)
                page.close()
            browser.close()
    print(f"{args.images} images x {args.methods} methods: {cells} cells, {size / 1e6:.1f} MB on disk; open "
          f"median {statistics.median(times[1:]):.2f} s (first {times[0]:.2f} s, all {', '.join(f'{t:.2f}' for t in times)})"
          f"; load averages {open('/proc/loadavg').read().split()[:3]}")


if __name__ == "__main__":
    main()
