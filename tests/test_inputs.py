"""Calibration/verification inputs: image folders, fallbacks, conversions, preprocessing detection."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import make_tiny
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from rewriter import ModelHandle, RewriteError
from rewriter.inputs import IMAGENET_MEAN, IMAGENET_STD, calibration_set, detect_preprocess, to_tensor


def image_model(h=32, w=48, dynamic=False) -> onnx.ModelProto:
    w1 = np.full((1, 3, 1, 1), 1 / 3, np.float32)
    dims = [1, 3, "H", "W"] if dynamic else [1, 3, h, w]
    g = helper.make_graph([helper.make_node("Conv", ["img", "w"], ["d"], name="c")], "img",
                          [helper.make_tensor_value_info("img", TensorProto.FLOAT, dims)],
                          [helper.make_tensor_value_info("d", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(w1, "w")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_default_is_skimage_photos_with_note():
    s = calibration_set(ModelHandle(image_model()))
    assert s.source == "skimage" and s.is_images and len(s.feeds) >= 5
    assert "motorcycle" in s.names
    x = s.feeds[0]["img"]
    assert x.shape == (1, 3, 32, 48) and x.dtype == np.float32
    assert -2.5 < x.mean() < 2.5  # ImageNet-normalised, not 0..255
    assert any("scikit-image" in n for n in s.notes)


def test_dynamic_hw_uses_video_resolution():
    s = calibration_set(ModelHandle(image_model(dynamic=True)), count=2)
    assert s.feeds[0]["img"].shape == (1, 3, 288, 512)


def test_non_image_model_gets_seeded_random_inputs():
    a = calibration_set(ModelHandle(make_tiny()), count=3, seed=5)
    b = calibration_set(ModelHandle(make_tiny()), count=3, seed=5)
    assert a.source == "random" and not a.is_images and "not an image" in a.notes[0]
    np.testing.assert_array_equal(a.feeds[0]["x"], b.feeds[0]["x"])


def test_user_folder_grayscale_and_rgba_are_converted(tmp_path):
    Image.fromarray(np.full((40, 40), 128, np.uint8)).save(tmp_path / "gray.png")
    Image.fromarray(np.full((40, 60, 4), 200, np.uint8)).save(tmp_path / "rgba.png")
    (tmp_path / "notes.txt").write_text("ignored: not an image suffix")
    s = calibration_set(ModelHandle(image_model()), tmp_path)
    assert s.names == ["gray.png", "rgba.png"] and s.source.startswith("images:")
    assert s.feeds[0]["img"].shape == (1, 3, 32, 48)


@pytest.mark.parametrize("setup, message", [
    (lambda d: None, "no images"),
    (lambda d: (d / "bad.jpg").write_text("not a jpeg"), "cannot read this image"),
])
def test_bad_folders(tmp_path, setup, message):
    setup(tmp_path)
    with pytest.raises(RewriteError, match=message):
        calibration_set(ModelHandle(image_model()), tmp_path)
    with pytest.raises(RewriteError, match="does not exist"):
        calibration_set(ModelHandle(image_model()), tmp_path / "nope")


def test_to_tensor_modes():
    img = np.zeros((2, 2, 3), np.uint8)
    img[..., 0] = 255
    x = to_tensor(img, "imagenet")
    np.testing.assert_allclose(x[0, :, 0, 0], (np.array([1, 0, 0]) - IMAGENET_MEAN) / IMAGENET_STD, rtol=1e-6)
    assert to_tensor(img, "raw_bgr")[0, 2, 0, 0] == 255 and to_tensor(img, "raw_rgb")[0, 0, 0, 0] == 255


def test_detects_omz_preprocessing_in_ir(tmp_path):
    import openvino as ov

    src = tmp_path / "m.onnx"
    onnx.save(image_model(), str(src))
    plain = ov.convert_model(str(src))
    omz = ov.convert_model(str(src), input=[1, 3, 32, 48])
    from openvino.preprocess import PrePostProcessor

    ppp = PrePostProcessor(omz)
    ppp.input().tensor().set_layout(ov.Layout("NCHW"))
    ppp.input().preprocess().reverse_channels().mean([123.675, 116.28, 103.53]).scale([58.395, 57.12, 57.375])
    omz = ppp.build()
    assert detect_preprocess(ModelHandle(plain)) == "imagenet"
    assert detect_preprocess(ModelHandle(omz)) == "raw_bgr"
