"""End-to-end fine-tuning pieces (paper A.4): MergeVQForImageClassification (encoder weights from a tokenizer
folder, CLS head, soft-target loss, layer groups for timm's layer-wise lr decay), RandAugment in the data stream
(timm's, seeded per example), and the fine-tuning script's resume."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoModelForImageClassification

from conftest import load_example
from mergevq_hf import MergeVQForImageClassification, MergeVQModel
from mergevq_hf.defaults import DEFAULT_PIPELINE_DIR
from mergevq_hf.training.data import DataConfig, transform_example
from mergevq_hf.training.data.augment import rand_augment_policy

TOKENIZER = DEFAULT_PIPELINE_DIR / "tokenizer"


@pytest.fixture(scope="module")
def classifier():
    return MergeVQForImageClassification.from_pretrained(TOKENIZER, num_labels=10).eval()


def test_classifier_starts_from_the_tokenizer_encoder(classifier, tmp_path):
    tokenizer = MergeVQModel.from_pretrained(TOKENIZER).eval()
    pixels = torch.rand(3, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        encoded = tokenizer.encode(pixels, num_tokens=16)
        _, _, _, cls = classifier.encoder(pixels, classifier.merge_schedule(16))
        logits = classifier(pixels, num_tokens=16).logits
    torch.testing.assert_close(cls, encoded.cls_token)
    torch.testing.assert_close(logits, classifier.classifier(classifier.fc_norm(cls)))
    names = [name for name, _ in classifier.named_parameters()]
    assert not any(
        n.startswith(("encoder.norm_out", "encoder.conv_out", "encoder.dist_head", "decoder")) for n in names
    )
    classifier.save_pretrained(tmp_path / "cls")
    again = AutoModelForImageClassification.from_pretrained(tmp_path / "cls").eval()
    assert type(again) is MergeVQForImageClassification and again.config.num_labels == 10
    with torch.no_grad():
        torch.testing.assert_close(again(pixels, num_tokens=16).logits, logits)


def test_classifier_loss_hard_and_soft_targets(classifier):
    pixels = torch.rand(4, 3, 32, 32) * 2 - 1
    labels = torch.tensor([0, 3, 9, 3])
    hard = classifier(pixels, labels=labels)
    soft = classifier(pixels, labels=torch.nn.functional.one_hot(labels, 10).float())
    torch.testing.assert_close(hard.loss, soft.loss)
    smoothed = torch.full((4, 10), 0.01) + torch.nn.functional.one_hot(labels, 10) * 0.9
    expected = -(smoothed * hard.logits.log_softmax(-1)).sum(-1).mean()
    torch.testing.assert_close(classifier(pixels, labels=smoothed).loss, expected)
    with pytest.raises(ValueError, match=r"labels must be class ids \[B\] \(integer\) or soft targets \[B, 10\]"):
        classifier(pixels, labels=torch.zeros(4, 3))
    with pytest.raises(ValueError, match="num_tokens=999 is out of range"):
        classifier(pixels, num_tokens=999)


def test_layer_wise_lr_decay_groups(classifier):
    from timm.optim import param_groups_layer_decay

    groups = param_groups_layer_decay(classifier, 0.05, layer_decay=0.5)
    scale = {name: group["lr_scale"] for group in groups for name in _names(classifier, group["params"])}
    blocks = classifier.config.num_att_blocks
    assert scale["classifier.weight"] == scale["fc_norm.weight"] == 1.0
    per_block = [scale[f"encoder.attn.blocks.{i}.attn.qkv.weight"] for i in range(blocks)]
    assert per_block == sorted(per_block) and len(set(per_block)) == blocks  # deeper blocks: larger lr
    assert scale["encoder.conv_in.weight"] < per_block[0]  # the CNN stage: smallest
    no_decay = {n for g in groups if g["weight_decay"] == 0 for n in _names(classifier, g["params"])}
    assert "classifier.bias" in no_decay and "classifier.weight" not in no_decay


def _names(model, params):
    ids = {id(p) for p in params}
    return [name for name, p in model.named_parameters() if id(p) in ids]


def test_rand_augment_in_the_stream_is_seeded_and_leaves_global_rngs_alone():
    image = Image.fromarray((np.random.default_rng(0).random((40, 40, 3)) * 255).astype(np.uint8))
    plain = DataConfig(crop="center", random_flip=False, alignment_views=False, resolution=32)
    augmented = DataConfig(
        crop="center", random_flip=False, alignment_views=False, resolution=32, rand_augment="rand-m9-mstd0.5-inc1"
    )
    random.seed(1)
    np.random.seed(1)
    state = (random.getstate(), np.random.get_state()[1].copy())
    first = transform_example(image, augmented, torch.Generator().manual_seed(5))["pixel_values"]
    again = transform_example(image, augmented, torch.Generator().manual_seed(5))["pixel_values"]
    other = transform_example(image, augmented, torch.Generator().manual_seed(6))["pixel_values"]
    base = transform_example(image, plain, torch.Generator().manual_seed(5))["pixel_values"]
    torch.testing.assert_close(first, again)
    assert not torch.equal(first, other) and not torch.equal(first, base)
    assert random.getstate() == state[0] and np.array_equal(np.random.get_state()[1], state[1])
    with pytest.raises(ValueError, match="rand_augment='auto'; allowed: None or a timm RandAugment policy"):
        DataConfig(rand_augment="auto")


def test_rand_augment_posterize_keeps_at_least_one_bit():
    transform = rand_augment_policy("rand-m10-n1-inc1", 32)
    posterize = next(op for op in transform.ops if "Posterize" in op.name)
    image = Image.new("RGB", (8, 8), (200, 100, 50))
    out = posterize.aug_fn(image, 0)  # timm's level 10 -> 0 bits; Pillow >= 11 rejects 0
    assert np.asarray(out).max() == 128  # 1 bit kept: 200 -> 128, 100 -> 0, 50 -> 0


def test_finetune_script_learns_and_resumes_exactly(digits, tmp_path):
    script = load_example("finetune_classifier")
    common = [
        *("--dataset", str(digits), "--eval-split", "test", "--batch-size", "8", "--warmup-steps", "1"),
        *("--log-every", "1", "--eval-every", "100", "--save-every", "2", "--num-labels", "10"),
        *("--schedule-steps", "4"),  # the interrupted run stops at 2 on the same schedule
    ]
    script.main([*common, "--max-steps", "4", "--output-dir", str(tmp_path / "straight")])
    script.main([*common, "--max-steps", "2", "--output-dir", str(tmp_path / "resumed")])
    script.main([*common, "--max-steps", "4", "--output-dir", str(tmp_path / "resumed"), "--resume", "latest"])
    straight = load_file(tmp_path / "straight/final/model.safetensors")
    resumed = load_file(tmp_path / "resumed/final/model.safetensors")
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    start = load_file(TOKENIZER / "model.safetensors")
    assert not torch.equal(
        straight["encoder.attn.blocks.0.attn.qkv.weight"], start["encoder.attn.blocks.0.attn.qkv.weight"]
    )
    assert (tmp_path / "straight/final/README.md").read_text().count("image-classification") >= 1
