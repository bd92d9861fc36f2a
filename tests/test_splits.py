"""Input splits: calibration / validation / test disjoint by whole image, deterministic, clear errors."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from rewriter import ModelHandle, RewriteError
from rewriter.inputs import DEFAULT_SPLIT, SKIMAGE_PHOTOS, SPLITS, split_inputs
from rewriter.passbase import PassContext


def image_model() -> ModelHandle:
    """x[1,3,32,48] → 1x1 conv → y: an image model small enough to split photos for quickly."""
    w = np.full((1, 3, 1, 1), 0.3, np.float32)
    g = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], name="c")], "img",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 48])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 32, 48])],
                          initializer=[numpy_helper.from_array(w, "w")])
    return ModelHandle.load(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))


def folder(path, n: int, start: int = 0):
    path.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + n):
        rgb = np.random.default_rng(i).integers(0, 255, (20, 30, 3), dtype=np.uint8)
        Image.fromarray(rgb).save(path / f"img{i:02d}.png")
    return path


def assert_disjoint(names: dict[str, list[str]]) -> None:
    sets = [set(names[k]) for k in SPLITS]
    assert all(sets), names
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2]), names


def test_one_folder_is_split_disjoint_deterministic_and_seeded(tmp_path):
    d = folder(tmp_path / "imgs", 12)
    m = image_model()
    s = split_inputs(m, calib=str(d))
    names = s.names()
    assert_disjoint(names)
    assert sorted(sum(names.values(), [])) == sorted(p.name for p in d.iterdir())  # every image used once
    assert len(names["validation"]) == len(names["test"]) == 3 and not s.overlap
    assert split_inputs(m, images=str(d)).names() == names  # same folder, same split whichever option
    assert split_inputs(m, calib=str(d), seed=0).names() == names  # deterministic
    assert split_inputs(m, calib=str(d), seed=5).names() != names  # seeded
    feed = s.test.feeds[0]["x"]
    assert feed.shape == (1, 3, 32, 48) and feed.dtype == np.float32


def test_two_folders_calib_and_images(tmp_path):
    cal, held = folder(tmp_path / "cal", 2), folder(tmp_path / "held", 5, start=10)
    s = split_inputs(image_model(), calib=str(cal), images=str(held))
    names = s.names()
    assert_disjoint(names)
    assert names["calibration"] == ["img00.png", "img01.png"]
    assert sorted(names["validation"] + names["test"]) == [f"img{i}.png" for i in range(10, 15)]
    assert len(names["validation"]) == 3 and len(names["test"]) == 2


def test_two_folders_sharing_an_image_are_refused_unless_allowed(tmp_path):
    cal, held = folder(tmp_path / "cal", 3), folder(tmp_path / "held", 3, start=2)  # img02 in both
    with pytest.raises(RewriteError, match=r"share 1 image\(s\) \(img02.png\).*--allow-overlap"):
        split_inputs(image_model(), calib=str(cal), images=str(held))
    s = split_inputs(image_model(), calib=str(cal), images=str(held), allow_overlap=True)
    assert s.overlap


def test_too_few_images_says_how_many_are_needed(tmp_path):
    d = folder(tmp_path / "two", 2)
    with pytest.raises(RewriteError) as e:
        split_inputs(image_model(), calib=str(d))
    msg = str(e.value)
    assert "\n" not in msg and str(d) in msg and "2 image(s)" in msg and "at least 3" in msg
    assert "--allow-overlap" in msg
    s = split_inputs(image_model(), calib=str(d), allow_overlap=True)
    assert s.overlap and all(len(v) == 2 for v in s.names().values())
    one = folder(tmp_path / "one", 1, start=7)
    with pytest.raises(RewriteError, match="--images .*1 image, but validation and test need at least 2"):
        split_inputs(image_model(), calib=str(folder(tmp_path / "c", 3)), images=str(one))


def test_default_photos_are_split_and_every_photo_used_once():
    s = split_inputs(image_model())
    names = s.names()
    assert_disjoint(names)
    assert {k: tuple(v) for k, v in names.items()} == {k: tuple(v) for k, v in DEFAULT_SPLIT.items()}
    assert sorted(sum(names.values(), [])) == sorted(SKIMAGE_PHOTOS)
    assert s.source == "skimage" and s.calibration.is_images


def test_random_feeds_come_from_three_disjoint_seed_ranges(tiny_onnx):
    m = ModelHandle.load(tiny_onnx)
    s = split_inputs(m, seed=3)
    assert_disjoint(s.names())
    assert s.source == "random" and not s.calibration.is_images
    arrays = [f["x"] for k in SPLITS for f in s.get(k).feeds]
    for i in range(len(arrays)):  # different seeds, different data
        for j in range(i + 1, len(arrays)):
            assert not np.array_equal(arrays[i], arrays[j])
    again = split_inputs(m, seed=3)
    np.testing.assert_array_equal(again.validation.feeds[1]["x"], s.validation.feeds[1]["x"])


def test_pass_context_serves_the_calibration_split(tmp_path):
    d = folder(tmp_path / "imgs", 8)
    m = image_model()
    s = split_inputs(m, calib=str(d))
    ctx = PassContext(calib_dir=str(d), splits=s)
    assert ctx.calibration(m).names == s.names()["calibration"]
    assert ctx.calibration(m, count=1).names == s.names()["calibration"][:1]
    assert ctx.calibration(m, folder=str(d)).names == s.names()["calibration"]
    raw = ctx.calibration(m, preprocess="raw_rgb")  # another preprocessing: same images, rebuilt feeds
    assert raw.names == s.names()["calibration"] and raw.preprocess == "raw_rgb"
    assert raw.feeds[0]["x"].max() > 10 > s.calibration.feeds[0]["x"].max()
    held = folder(tmp_path / "held", 4, start=20)
    s2 = split_inputs(m, calib=str(d), images=str(held))
    ctx2 = PassContext(calib_dir=str(d), images_dir=str(held), splits=s2)
    assert ctx2.calibration(m, folder=str(held)).names == s2.names()["validation"]  # a pass's selection judge
    # what a pass judges on (int8's accuracy control) is the validation split, with --calib alone too
    assert ctx.validation(m).names == s.names()["validation"] and ctx2.validation(m).names == s2.names()["validation"]
    assert not set(ctx.validation(m).names) & set(ctx.calibration(m).names)


def test_cli_too_few_images_exit_2_one_line(tmp_path, tiny_onnx):
    from conftest import run_cli

    img_model = tmp_path / "img.onnx"
    onnx.save(image_model().onnx, str(img_model))
    d = folder(tmp_path / "two", 2)
    out = tmp_path / "o.onnx"
    r = run_cli("--passes", "asym_interp", str(img_model), "--calib", str(d), "-o", str(out))
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert r.returncode == 2 and len(lines) == 1 and "at least 3" in lines[0] and not out.exists()


def test_allow_overlap_is_said_in_the_report_headline(tmp_path):
    from rewriter.manager import rewrite
    from rewriter.report import render_text

    d = folder(tmp_path / "two", 2)
    _, rep = rewrite(image_model(), "asym_interp", calib=str(d), allow_overlap=True, targets=("cpu",))
    assert rep["inputs"]["overlap"] is True and rep["inputs"]["validation"] == ["img00.png", "img01.png"]
    assert "WARNING: --allow-overlap" in render_text(rep).split("Passes")[0]
    _, rep = rewrite(image_model(), "asym_interp", calib=str(folder(tmp_path / "three", 3)), targets=("cpu",))
    assert rep["inputs"]["overlap"] is False and "cumulative" in rep
