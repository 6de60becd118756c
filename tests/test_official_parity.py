"""Parity with the official MergeVQ code on ../shared/fixtures/official_parity (random weights in the
official layout, outputs of the official code for several K)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from conftest import shared_fixture
from mergevq_hf import MergeVQModel
from mergevq_hf.cli import main as cli_main
from mergevq_hf.convert import convert_official_checkpoint

FIXTURE_NAMES = ["gr_small"]


def _ks(name):
    return json.loads((shared_fixture("official_parity", name) / "meta.json").read_text())["Ks"]


def _group_min_pos(source: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """Order-independent partition label: smallest position of each position's group."""
    positions = torch.arange(source.shape[1]).expand_as(source)
    mins = torch.full((source.shape[0], num_tokens), source.shape[1], dtype=torch.long)
    mins = mins.scatter_reduce(1, source, positions, reduce="amin")
    return mins.gather(1, source)


@pytest.fixture(scope="module", params=FIXTURE_NAMES)
def converted(request, tmp_path_factory):
    folder = shared_fixture("official_parity", request.param)
    out = tmp_path_factory.mktemp(request.param)
    convert_official_checkpoint(folder / "state_dict.safetensors", folder / "config.yaml", out)
    model = MergeVQModel.from_pretrained(out).eval()
    return request.param, folder, model


def test_parity_every_k(converted):
    torch.backends.cudnn.allow_tf32 = False
    name, folder, model = converted
    images = load_file(folder / "inputs.safetensors")["images"]
    expected = load_file(folder / "expected.safetensors")
    for num_tokens in _ks(name):
        exp = {k.split(".", 1)[1]: v for k, v in expected.items() if k.startswith(f"k{num_tokens}.")}
        with torch.no_grad():
            enc = model.encode(images, num_tokens=num_tokens)
            codes_l = model.unmerge(enc.indices, enc.source)
            recon = model.decode(codes_l)
        assert model.merge_schedule(num_tokens) == exp["r_per_layer"].tolist()
        # key targets: per-position code map and the merge partition, exactly
        assert torch.equal(codes_l, exp["indices_L"]), f"K={num_tokens}: indices_L differ"
        assert torch.equal(_group_min_pos(enc.source, num_tokens), exp["group_min_pos_L"])
        # we also reproduce the official kept-token order
        assert torch.equal(enc.indices, exp["indices_K"])
        assert torch.equal(model.source_matrix(enc.source, num_tokens).to(torch.uint8), exp["source"])
        dec_input = model.unmerge(enc.quantized, enc.source).transpose(1, 2).reshape(exp["dec_input"].shape)
        assert torch.equal(dec_input, exp["dec_input"])
        torch.testing.assert_close(enc.latent, exp["latent_K"], atol=5e-5, rtol=0)
        torch.testing.assert_close(recon, exp["recon"], atol=1e-4, rtol=0)
        torch.testing.assert_close(enc.cls_features, exp["cls_head"], atol=1e-5, rtol=0)


def test_cli_converts_lightning_ckpt_and_live_weights_differ(tmp_path):
    """The .ckpt path (torch.load(weights_only=True) of a Lightning dict) through the console script;
    --no-ema must pick the live weights, which the fixture says give different codes."""
    folder = shared_fixture("official_parity", "gr_small")
    state_dict = load_file(folder / "state_dict.safetensors")
    ckpt = tmp_path / "last.ckpt"
    torch.save({"state_dict": state_dict, "epoch": 3, "global_step": 10}, ckpt)
    assert (
        cli_main(
            ["convert-official", str(ckpt), "--config", str(folder / "config.yaml"), "--output", str(tmp_path / "ema")]
        )
        == 0
    )
    assert (
        cli_main(
            [
                "convert-official",
                str(ckpt),
                "--config",
                str(folder / "config.yaml"),
                "--output",
                str(tmp_path / "live"),
                "--no-ema",
            ]
        )
        == 0
    )
    images = load_file(folder / "inputs.safetensors")["images"]
    expected = load_file(folder / "expected.safetensors")["k144.indices_L"]
    codes = {}
    for kind in ("ema", "live"):
        model = MergeVQModel.from_pretrained(tmp_path / kind).eval()
        with torch.no_grad():
            enc = model.encode(images, num_tokens=144)
        codes[kind] = model.unmerge(enc.indices, enc.source)
    assert torch.equal(codes["ema"], expected)
    assert (codes["live"] != expected).float().mean() > 0.5


def test_converter_refuses_missing_ema(tmp_path):
    folder = shared_fixture("official_parity", "gr_small")
    live_only = {k: v for k, v in load_file(folder / "state_dict.safetensors").items() if not k.startswith("model_ema")}
    from safetensors.torch import save_file

    save_file(live_only, tmp_path / "live.safetensors")
    with pytest.raises(ValueError, match="no-ema"):
        convert_official_checkpoint(tmp_path / "live.safetensors", folder / "config.yaml")
    model = convert_official_checkpoint(tmp_path / "live.safetensors", folder / "config.yaml", use_ema=False)
    assert model.config.num_tokens == 144
