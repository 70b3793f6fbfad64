"""`jaxcam render` on a folder holding a decompression bomb and a good image: the bomb is reported in
one 'skipped' line, the good image is rendered, exit status 0 (as for truncated or empty files)."""
import contextlib
import io
import os

import numpy as np
from PIL import Image


def test_render_skips_a_bomb_and_renders_the_rest(tmp_path, bomb_png):
    from jaxcam.cli import render

    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(folder / "good.png")
    (folder / "bomb.png").write_bytes(bomb_png)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        status = render.main([str(folder), "--method", "grad_cam", "--model", "resnet20", "--weights", "none",
                              "--image-size", "32", "--batch-size", "2", "--out", str(tmp_path / "out")])
    text = out.getvalue()
    assert status == 0, text
    assert sorted(os.listdir(tmp_path / "out")) == ["good_grad_cam.png", "index.html", "page", "render.json"]
    assert sorted(os.listdir(tmp_path / "out" / "page")) == ["good.jpg", "good_grad_cam.png"]  # the page's pictures
    assert text.count(f"skipped {folder / 'bomb.png'}: decompression bomb") == 1, text  # one line (tqdm.write)
    assert "skipped 1 unreadable" in text
    assert "Traceback" not in text
