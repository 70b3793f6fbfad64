"""`jaxcam render` on a folder holding a decompression bomb and a good image: the bomb is reported in
one 'skipped' line, the good image is rendered, exit status 0 (as for truncated or empty files)."""
import os

from tests.helpers import random_pngs, render_folder


def test_render_skips_a_bomb_and_renders_the_rest(tmp_path, bomb_png):
    folder = random_pngs(tmp_path / "in", ["good.png"], (20, 24, 3))
    (folder / "bomb.png").write_bytes(bomb_png)
    status, text = render_folder(folder, tmp_path / "out")
    assert status == 0, text
    assert sorted(os.listdir(tmp_path / "out")) == ["good_grad_cam.png", "index.html", "page", "render.json"]
    assert sorted(os.listdir(tmp_path / "out" / "page")) == ["good.jpg", "good_grad_cam.png"]  # the page's pictures
    assert text.count(f"skipped {folder / 'bomb.png'}: decompression bomb") == 1, text  # one line (tqdm.write)
    assert "skipped 1 unreadable" in text
    assert "Traceback" not in text
