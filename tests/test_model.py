"""MergeVQModel API: round trips, save/load, remote code, bad inputs, training forward."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig, AutoModel

from conftest import random_pixels, run_without_mergevq_hf
from mergevq_hf import MergeVQConfig, MergeVQModel


def test_presets_build_official_shapes():
    for name, width, num_positions in [
        ("mergevq-gr-d64", 512, 256),
        ("mergevq-g-d64", 512, 1024),
        ("mergevq-gr-d32", 384, 256),
        ("mergevq-r-vitb", 768, 256),
        ("mergevq-gr-d96", 768, 256),
        ("mergevq-g-d32", 384, 1024),
    ]:
        config = MergeVQConfig.from_preset(name)
        assert config.encoder_width == width and config.num_positions == num_positions
    with pytest.raises(ValueError, match="unknown MergeVQ preset"):
        MergeVQConfig.from_preset("mergevq-xl")
    with pytest.raises(ValueError, match="encoder_type"):
        MergeVQConfig(encoder_type="conv")


def test_decode_paths_agree(tiny_tokenizer):
    pixels = random_pixels(2, 32)
    with torch.no_grad():
        enc = tiny_tokenizer.encode(pixels, num_tokens=20)
        codes_l = tiny_tokenizer.unmerge(enc.indices, enc.source)
        a = tiny_tokenizer.decode(codes_l)
        b = tiny_tokenizer.decode(enc.indices, source=enc.source)
        c = tiny_tokenizer.decode_quantized(tiny_tokenizer.unmerge(enc.quantized, enc.source))
        out = tiny_tokenizer(pixels, num_tokens=20)
    assert a.shape == pixels.shape
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, c)
    torch.testing.assert_close(a, out.reconstruction)
    assert torch.equal(out.indices, enc.indices)


def test_save_load_round_trip_identical(tmp_path, tiny_tokenizer):
    pixels = random_pixels(2, 32)
    tiny_tokenizer.save_pretrained(tmp_path)
    for loaded in (MergeVQModel.from_pretrained(tmp_path), AutoModel.from_pretrained(tmp_path)):
        assert isinstance(loaded, MergeVQModel)
        loaded.eval()
        with torch.no_grad():
            a, b = tiny_tokenizer(pixels, num_tokens=12), loaded(pixels, num_tokens=12)
        assert torch.equal(a.reconstruction, b.reconstruction) and torch.equal(a.indices, b.indices)
    assert AutoConfig.from_pretrained(tmp_path).num_tokens == tiny_tokenizer.config.num_tokens


def test_remote_code_loads_without_the_package(tmp_path, tiny_tokenizer):
    pixels = random_pixels(1, 32)
    with torch.no_grad():
        expected = tiny_tokenizer(pixels, num_tokens=10).reconstruction
    tiny_tokenizer.save_pretrained(tmp_path / "model")
    torch.save({"pixels": pixels, "expected": expected}, tmp_path / "io.pt")
    run_without_mergevq_hf(
        f"""
        import torch
        from transformers import AutoModel
        model = AutoModel.from_pretrained({str(tmp_path / "model")!r}, trust_remote_code=True).eval()
        assert "transformers_modules" in type(model).__module__, type(model).__module__
        io = torch.load({str(tmp_path / "io.pt")!r}, weights_only=True)
        with torch.no_grad():
            out = model(io["pixels"], num_tokens=10).reconstruction
        assert torch.equal(out, io["expected"]), (out - io["expected"]).abs().max()
        print("REMOTE_OK")
    """,
        tmp_path,
    )


@pytest.mark.parametrize(
    "bad,error,match",
    [
        (torch.zeros(1, 1, 32, 32), ValueError, "expected \\[B, 3, 32, 32\\]"),
        (torch.zeros(1, 3, 64, 64), ValueError, "takes 32x32"),
        (torch.full((1, 3, 32, 32), float("nan")), ValueError, "NaN"),
        (torch.zeros(1, 3, 32, 32, dtype=torch.long), TypeError, "floating point"),
        ([[0.0]], TypeError, "torch.Tensor"),
    ],
)
def test_bad_pixels_rejected(tiny_tokenizer, bad, error, match):
    with pytest.raises(error, match=match):
        tiny_tokenizer.encode(bad, num_tokens=8)


@pytest.mark.parametrize("num_tokens,error", [(0, ValueError), (65, ValueError), (-3, ValueError), (8.0, TypeError)])
def test_bad_num_tokens_rejected(tiny_tokenizer, num_tokens, error):
    with pytest.raises(error, match="num_tokens"):
        tiny_tokenizer.encode(random_pixels(1, 32), num_tokens=num_tokens)


def test_bad_codes_rejected(tiny_tokenizer):
    with pytest.raises(ValueError, match="allowed 0..255"):
        tiny_tokenizer.decode(torch.full((1, 64), 256))
    with pytest.raises(ValueError, match="decode needs L=64"):
        tiny_tokenizer.decode(torch.zeros(1, 10, dtype=torch.long))
    with pytest.raises(TypeError, match="integer"):
        tiny_tokenizer.decode(torch.zeros(1, 64))
    with pytest.raises(ValueError, match="source must be"):
        tiny_tokenizer.decode(torch.zeros(1, 4, dtype=torch.long), source=torch.full((1, 64), 7))


def test_forward_trains_every_part():
    model = MergeVQModel(MergeVQConfig.from_preset("tiny")).train()
    out = model(random_pixels(2, 32), num_tokens=16)
    assert torch.isfinite(out.loss)
    expected = out.reconstruction_loss + 0.25 * out.commitment_loss + 0.1 * out.entropy_loss
    torch.testing.assert_close(out.loss, expected)
    out.loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None and "dist_head" not in n]
    assert no_grad == []
    assert model.encoder.conv_in.weight.grad.abs().sum() > 0  # gradient reaches the encoder through LFQ


def test_model_card_from_template(tmp_path, tiny_tokenizer):
    from mergevq_hf.model_card import write_model_card

    tiny_tokenizer.save_pretrained(tmp_path)
    card = write_model_card(tmp_path, "mergevq", evaluation={"psnr": 20.5, "K": 36}, datasets=["ILSVRC/imagenet-1k"])
    text = (tmp_path / "README.md").read_text()
    assert text == str(card)
    assert "library_name: mergevq_hf" in text and "ILSVRC/imagenet-1k" in text
    assert "L=64 tokens" in text and "num_tokens=36" in text and '"psnr": 20.5' in text
    with pytest.raises(ValueError, match="model card kind"):
        write_model_card(tmp_path, "vae")
