"""MergeVQImageProcessor: the package's one image <-> pixel-tensor conversion, saved beside every tokenizer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoImageProcessor

from conftest import run_without_mergevq_hf
from mergevq_hf import MergeVQConfig, MergeVQImageProcessor, MergeVQModel, MergeVQPipeline
from mergevq_hf.defaults import DEFAULT_PIPELINE_DIR, DEFAULT_TOKENIZER_DIR
from mergevq_hf.image_utils import EXAMPLE_IMAGE, load_image


def _reference(image: Image.Image, size: int) -> torch.Tensor:
    """The conversion written out by hand: short side to ``size`` (bicubic), central crop, x / 127.5 - 1."""
    width, height = image.size
    scale = size / min(width, height)
    resized = image.convert("RGB").resize((round(width * scale), round(height * scale)), Image.BICUBIC)
    left, top = (resized.width - size) // 2, (resized.height - size) // 2
    array = np.asarray(resized, dtype=np.float32)[top : top + size, left : left + size] / 127.5 - 1
    return torch.from_numpy(array).permute(2, 0, 1)


def test_preprocess_equals_the_written_out_conversion_and_postprocess_inverts_it():
    photo = Image.open(EXAMPLE_IMAGE)
    wide = photo.crop((0, 100, 512, 356))  # 512 x 256: the crop must come from the middle
    processor = MergeVQImageProcessor(size=64)
    pixels = processor(images=[photo, wide], return_tensors="pt").pixel_values
    assert pixels.shape == (2, 3, 64, 64) and pixels.dtype == torch.float32
    assert torch.equal(pixels[0], _reference(photo, 64)) and torch.equal(pixels[1], _reference(wide, 64))
    assert torch.equal(processor(images=np.asarray(wide.convert("RGB"))).pixel_values[0], pixels[1])
    assert torch.equal(load_image(EXAMPLE_IMAGE, 64), pixels[0]), "load_image goes through the processor"
    pil = processor.postprocess(pixels, output_type="pil")
    assert [p.size for p in pil] == [(64, 64)] * 2
    back = processor(images=pil, size=64).pixel_values  # uint8 -> [-1, 1] -> uint8 is exact
    assert torch.equal(back, pixels)
    as_np, as_pt = processor.postprocess(pixels * 1.5, "np"), processor.postprocess(pixels * 1.5, "pt")
    assert as_np.shape == (2, 64, 64, 3) and as_np.min() >= 0 and as_np.max() <= 1  # clamped
    assert np.array_equal(as_np, as_pt.permute(0, 2, 3, 1).numpy())
    stretched = MergeVQImageProcessor(size=64, do_center_crop=False)(images=wide).pixel_values
    assert stretched.shape == (1, 3, 64, 64) and not torch.equal(stretched[0], pixels[1])


def test_image_modes_become_rgb():
    processor = MergeVQImageProcessor(size=8)
    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 0))  # fully transparent red -> white
    assert torch.equal(processor(images=rgba).pixel_values, torch.ones(1, 3, 8, 8))
    gray = Image.new("L", (8, 8), 51)
    assert torch.allclose(processor(images=gray).pixel_values, torch.full((1, 3, 8, 8), 51 / 127.5 - 1))
    sixteen = Image.fromarray(np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000)
    assert processor(images=sixteen).pixel_values.shape == (1, 3, 8, 8)


def test_bad_input_gets_clear_errors():
    processor = MergeVQImageProcessor(size=8)
    with pytest.raises(ValueError, match=r"size=0; allowed: an int >= 1"):
        MergeVQImageProcessor(size=0)
    with pytest.raises(ValueError, match=r"output_type='jpeg'; allowed"):
        processor.postprocess(torch.zeros(1, 3, 8, 8), output_type="jpeg")
    with pytest.raises(TypeError, match="PIL images or uint8 arrays, got str"):
        processor(images=["x.png"])
    with pytest.raises(ValueError, match="uint8"):
        processor(images=np.zeros((8, 8, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="return_tensors='np'; allowed: 'pt'"):
        processor(images=Image.new("RGB", (8, 8)), return_tensors="np")
    with pytest.raises(TypeError, match="non-empty list"):
        processor(images=[])


def test_saved_beside_every_tokenizer_and_loaded_by_auto_image_processor(tmp_path):
    for folder in (DEFAULT_TOKENIZER_DIR, DEFAULT_PIPELINE_DIR / "tokenizer"):
        loaded = AutoImageProcessor.from_pretrained(folder)  # no trust_remote_code: registered on import
        assert type(loaded) is MergeVQImageProcessor and loaded.size == 32
    tokenizer = MergeVQModel(MergeVQConfig.from_preset("tiny"))
    tokenizer.save_pretrained(tmp_path / "tok")
    loaded = AutoImageProcessor.from_pretrained(tmp_path / "tok")
    assert type(loaded) is MergeVQImageProcessor and loaded.size == tokenizer.config.resolution
    assert (loaded.size, loaded.do_center_crop) == (tokenizer.image_processor().size, True)
    pipe = MergeVQPipeline.from_pretrained()
    assert pipe.image_processor.size == pipe.tokenizer.config.resolution
    photo = Image.open(EXAMPLE_IMAGE)
    expected = loaded(images=photo).pixel_values
    torch.save({"expected": expected}, tmp_path / "expected.pt")
    run_without_mergevq_hf(
        f"""
        import torch
        from PIL import Image
        from transformers import AutoImageProcessor
        processor = AutoImageProcessor.from_pretrained({str(tmp_path / "tok")!r}, trust_remote_code=True)
        assert "transformers_modules" in type(processor).__module__, type(processor).__module__
        pixels = processor(images=Image.open({str(EXAMPLE_IMAGE)!r})).pixel_values
        assert torch.equal(pixels, torch.load({str(tmp_path / "expected.pt")!r}, weights_only=True)["expected"])
        print("REMOTE_OK")
        """,
        tmp_path,
    )
