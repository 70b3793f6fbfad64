"""Images load as a person sees them: 16-bit scaled (not clipped), EXIF orientation, palette, CMYK, alpha."""
import numpy as np
import pytest
from PIL import Image

from jaxcam import images as images_lib


def _save(tmp_path, name, image, **kw):
    path = tmp_path / name
    image.save(path, **kw)
    return str(path)


def test_16bit_png_is_scaled_not_clipped(tmp_path):
    ramp = (np.arange(64, dtype=np.uint32)[None, :].repeat(8, 0) * 1040).astype(np.uint16)  # 0 .. 65520
    path = _save(tmp_path, "g16.png", Image.fromarray(ramp))
    with Image.open(path) as raw:
        assert raw.mode.startswith("I")  # really a 16-bit file
    got = images_lib.load(path).image
    assert got.shape == (8, 64, 3) and got.dtype == np.uint8
    np.testing.assert_array_equal(got[..., 0], np.round(ramp / 257.0).astype(np.uint8))
    assert got.min() == 0 and 250 <= got.max() <= 255 and len(np.unique(got)) > 60  # a ramp, not a white square


def test_exif_orientation_is_applied(tmp_path):
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :10] = 255  # white band on the left of the stored (landscape) pixels
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = _save(tmp_path, "rot.jpg", Image.fromarray(pixels), exif=exif.tobytes(), quality=95)
    got = images_lib.load(path).image
    assert got.shape == (40, 20, 3)  # shown upright: portrait
    assert got[:10].mean() > 200 and got[-10:].mean() < 50  # the left band is now at the top


def test_alpha_is_composited_on_white(tmp_path):
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0] = 255  # red
    rgba[:, :4, 3] = 0  # left half fully transparent
    rgba[:, 4:, 3] = 255
    got = images_lib.load(_save(tmp_path, "a.png", Image.fromarray(rgba))).image
    np.testing.assert_array_equal(got[:, :4], 255)  # white, not black or red
    assert (got[:, 4:] == [255, 0, 0]).all()
    black = images_lib.load(str(tmp_path / "a.png"), background=(0, 0, 0)).image
    np.testing.assert_array_equal(black[:, :4], 0)
    la = np.stack([np.full((4, 4), 0, np.uint8), np.full((4, 4), 128, np.uint8)], -1)
    got = images_lib.load(_save(tmp_path, "la.png", Image.merge("LA", [Image.fromarray(la[..., 0]), Image.fromarray(la[..., 1])]))).image
    assert np.all(np.abs(got.astype(int) - 127) <= 1)  # black at half opacity over white: mid gray


def test_palette_with_transparency_and_cmyk(tmp_path):
    p = Image.new("P", (4, 4), 0)
    p.putpalette([0, 0, 255] + [0, 255, 0] + [0] * 762)
    p.paste(1, (2, 0, 4, 4))
    path = _save(tmp_path, "p.png", p, transparency=0)
    got = images_lib.load(path).image
    np.testing.assert_array_equal(got[:, :2], 255)  # transparent palette entry -> white
    assert (got[:, 2:] == [0, 255, 0]).all()
    cmyk = Image.new("CMYK", (4, 4), (0, 255, 255, 0))  # pure red in CMYK
    got = images_lib.load(_save(tmp_path, "c.jpg", cmyk, quality=100)).image
    assert got[..., 0].min() > 200 and got[..., 1:].max() < 60


def test_sixteen_bit_renders_the_picture(tmp_path):
    """The 16-bit PNG of issue 13 through `fit` at a model size: a picture, not a white square."""
    yy, xx = np.mgrid[0:48, 0:48]
    picture = ((xx + yy) * 680).astype(np.uint16)
    path = _save(tmp_path, "p16.png", Image.fromarray(picture))
    got = images_lib.load(path, size=32).image
    assert got.shape == (32, 32, 3) and got.std() > 30 and got.min() < 40
