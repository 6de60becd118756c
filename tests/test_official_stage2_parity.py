"""Parity with the official stage-2 generator (taming/modules/transformer/gpt.py, class GPT) on
../shared/fixtures/official_stage2 (random weights, the official code's teacher-forced factor logits)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from conftest import shared_fixture
from mergevq_hf import MergeARForCausalLM
from mergevq_hf.cli import main as cli_main
from mergevq_hf.models.mergear import generate_codes


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    folder = shared_fixture("official_stage2", "small")
    out = tmp_path_factory.mktemp("stage2")
    assert (
        cli_main(
            [
                "convert-official",
                str(folder / "state_dict.safetensors"),
                "--config",
                str(folder / "config.yaml"),
                "--output",
                str(out),
            ]
        )
        == 0
    )
    model = MergeARForCausalLM.from_pretrained(out).eval()
    inputs, expected = load_file(folder / "inputs.safetensors"), load_file(folder / "expected.safetensors")
    return folder, model, inputs, expected


def test_converted_config_is_the_official_layout(converted):
    folder, model, _, _ = converted
    cfg, official = model.config, json.loads((folder / "config.json").read_text())
    assert cfg.factorized_bits == official["factorized_bits"] and cfg.code_dim == 18
    assert cfg.factorized_num_layers == official["factorized_n_layer"]
    assert cfg.num_hidden_layers == official["spatial_n_layer"] and cfg.hidden_size == official["dim"]
    assert cfg.num_positions == official["block_size"] and cfg.num_classes == official["class_num"]
    assert cfg.intermediate_size == 192  # find_multiple(int(2 * 4 * 64 / 3), multiple_of=32)
    assert not cfg.prune_duplicates and not cfg.merge_instruction and cfg.zero_start_rotary
    assert cfg.num_start_tokens == official["cls_token_num"]


def test_teacher_forced_factor_logits_match_the_official_gpt(converted):
    _, model, inputs, expected = converted
    pre, post, labels = inputs["idx_pre"].long(), inputs["idx_post"].long(), inputs["labels"].long()
    codes = pre + (post << 6)  # the official factorized LFQ: idx_pre = the 6 low bits, idx_post the 12 high
    assert torch.equal(model._split_codes(codes)[0], pre) and torch.equal(model._split_codes(codes)[1], post)
    with torch.no_grad():
        out = model(input_ids=model.build_inputs(codes, labels, model.config.num_positions))
    # position t (class token + codes < t) predicts code t; our sequence also holds the last code (unused here)
    diff_pre = (out.factor_logits[0][:, :-1] - expected["logits_pre"]).abs().max().item()
    diff_post = (out.factor_logits[1][:, :-1] - expected["logits_post"]).abs().max().item()
    assert diff_pre < 1e-4 and diff_post < 1e-4, (diff_pre, diff_post)
    assert expected["logits_pre"].std() > 0.1 and expected["logits_post"].std() > 0.1, "heads are not zero"


def test_cached_decode_steps_match_the_official_logits(converted):
    _, model, inputs, expected = converted
    pre, post, labels = inputs["idx_pre"].long(), inputs["idx_post"].long(), inputs["labels"].long()
    codes = pre + (post << 6)
    cache = model.new_cache()
    with torch.no_grad():
        hidden = [model(input_ids=model.prompt_ids(labels, 16), cache=cache, logits_to_keep=1).last_hidden_state]
        for t in range(codes.shape[1] - 1):
            hidden.append(model(input_ids=codes[:, t : t + 1], cache=cache).last_hidden_state)
        hidden = torch.cat(hidden, dim=1)
        step_pre = model.sub_token_logits(hidden)
        step_post = model.sub_token_logits(hidden, (pre,))
    torch.testing.assert_close(step_pre, expected["logits_pre"], atol=1e-4, rtol=0)
    torch.testing.assert_close(step_post, expected["logits_post"], atol=1e-4, rtol=0)


def test_greedy_cached_decoding_gives_the_full_forward_argmax(converted):
    _, model, inputs, _ = converted
    labels = inputs["labels"].long()
    codes = generate_codes(model, labels, model.config.num_positions, temperature=0)
    with torch.no_grad():
        out = model(input_ids=model.build_inputs(codes, labels, model.config.num_positions))
    assert torch.equal(out.factor_logits[0][:, :-1].argmax(-1), codes & 63)
    assert torch.equal(out.factor_logits[1][:, :-1].argmax(-1), codes >> 6)


def test_convert_official_refuses_a_yaml_of_neither_kind(converted, tmp_path, capsys):
    folder = converted[0]
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  init_args:\n    learning_rate: 1.0\n")
    argv = ["convert-official", str(folder / "state_dict.safetensors"), "--config", str(bad), "--output", "o"]
    with pytest.raises(SystemExit) as exit_info:
        cli_main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "ddconfig (tokenizer) or model.init_args.transformer_config (stage-2 generator)" in err
    assert len(err.strip().splitlines()) == 1, "one line, no traceback"
