"""Next-sub-token prediction (official stage 2, ``factorized_num_layers > 0``) in MergeAR: the teacher-forced
forward, cached decoding, the factor-by-factor sampler, the static path and generate()'s joint distribution."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mergevq_hf import MergeARConfig, MergeARForCausalLM
from mergevq_hf.models.mergear import generate_codes


def _model(prune=True, **overrides):
    config = MergeARConfig.from_preset(
        "tiny-subtoken", resid_dropout=0.0, ffn_dropout=0.0, token_dropout=0.0, prune_duplicates=prune, **overrides
    )
    model = MergeARForCausalLM(config).eval()
    with torch.no_grad():  # the default init makes factor 1 nearly independent of factor 0: make it matter
        for p in model.sub_token_layers.parameters():
            p.add_(torch.randn_like(p) * 0.3)
        model.tok_embeddings[0].weight.mul_(20)
    return model


def _codes(batch, length, seed=0):
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 256, (batch, length), generator=g)
    codes[0] = torch.randint(0, 6, (length,), generator=g)  # many duplicates
    return codes


def test_config_switch_and_presets():
    assert MergeARConfig.from_preset("mergear-b").factorized_num_layers == 2
    assert MergeARConfig().factorized_num_layers == 0, "folders saved before the field keep independent heads"
    assert len(MergeARForCausalLM(MergeARConfig.from_preset("tiny-factorized")).sub_token_layers) == 0
    with pytest.raises(ValueError, match="exactly two factors"):
        MergeARConfig.from_preset("tiny", factorized_num_layers=2)
    with pytest.raises(ValueError, match="factorized_num_layers=-1"):
        MergeARConfig.from_preset("tiny-factorized", factorized_num_layers=-1)


def test_factor_1_depends_on_factor_0():
    model = _model()
    hidden = torch.randn(2, 3, model.config.hidden_size)
    a = model.sub_token_logits(hidden, (torch.zeros(2, 3, dtype=torch.long),))
    b = model.sub_token_logits(hidden, (torch.full((2, 3), 5),))
    assert (a - b).abs().max() > 1e-2
    # slot 0 never sees the prefix (causal intra pass)
    full = model.factor_logits_of(hidden, torch.full((2, 3), 5 + (7 << 3)))
    torch.testing.assert_close(full[0], model.sub_token_logits(hidden), atol=1e-5, rtol=0)
    torch.testing.assert_close(full[1], b, atol=1e-5, rtol=0)


@pytest.mark.parametrize("prune", [True, False])
def test_cached_decoding_equals_teacher_forced_forward(prune):
    model = _model(prune)
    length = model.config.num_positions
    codes = _codes(3, length)
    ids = model.build_inputs(codes, [1, 2, 10], [10, 20, 64])
    with torch.no_grad():
        full = model(input_ids=ids).factor_logits  # factor 1 teacher-forced on the next code's factor 0
        cache = model.new_cache()
        hidden = [model(input_ids=ids[:, :2], cache=cache, logits_to_keep=1).last_hidden_state]
        for t in range(2, length + 1):
            hidden.append(model(input_ids=ids[:, t : t + 1], cache=cache).last_hidden_state)
        hidden = torch.cat(hidden, dim=1)  # the outputs predicting codes 0..L-1
        first = codes & 7
        step0 = model.sub_token_logits(hidden)
        step1 = model.sub_token_logits(hidden, (first,))
    torch.testing.assert_close(step0, full[0][:, 1:-1], atol=1e-5, rtol=0)
    torch.testing.assert_close(step1, full[1][:, 1:-1], atol=1e-5, rtol=0)
    # the loss is the cross-entropy of exactly these teacher-forced logits
    with torch.no_grad():
        loss = model(**model.training_inputs(codes, [1, 2, 10], [10, 20, 64])).loss
    expected = F.cross_entropy(step0.flatten(0, 1), first.flatten()) + F.cross_entropy(
        step1.flatten(0, 1), (codes >> 3).flatten()
    )
    torch.testing.assert_close(loss, expected, atol=1e-5, rtol=0)


def test_greedy_generation_is_the_argmax_chain_of_the_full_forward():
    model = _model()
    labels, ks = [1, 4], [12, 64]
    for scale in (1.0, 3.0):
        codes = generate_codes(model, labels, ks, guidance_scale=scale, temperature=0)
        ids = model.build_inputs(codes, labels, ks)
        with torch.no_grad():
            cond = model(input_ids=ids).factor_logits
            null = model(input_ids=model.null_prompt_like(ids)).factor_logits if scale != 1 else cond
        guided = [n + scale * (c - n) for c, n in zip(cond, null)]
        assert torch.equal(guided[0][:, 1:-1].argmax(-1), codes & 7)
        assert torch.equal(guided[1][:, 1:-1].argmax(-1), codes >> 3)
        static = generate_codes(model, labels, ks, guidance_scale=scale, temperature=0, static=True)
        assert torch.equal(static, codes)


def test_sampling_per_sample_seeds_and_static_path():
    model = _model()
    gens = lambda seeds: [torch.Generator().manual_seed(s) for s in seeds]  # noqa: E731
    both = generate_codes(model, [1, 2], 16, guidance_scale=2.0, top_k=4, generators=gens([7, 8]))
    alone = generate_codes(model, [2], 16, guidance_scale=2.0, top_k=4, generators=gens([8]))
    assert torch.equal(both[1:], alone), "a sample depends only on its own generator"
    static = generate_codes(model, [1, 2], 16, guidance_scale=2.0, top_k=4, generators=gens([7, 8]), static=True)
    assert torch.equal(static, both)


def test_joint_log_probs_are_factor0_times_factor1_given_factor0():
    model = _model()
    hidden = torch.randn(2, 1, model.config.hidden_size)
    joint = model.joint_log_probs_of(hidden)  # [2, 1, 256]
    torch.testing.assert_close(joint.logsumexp(-1), torch.zeros(2, 1), atol=1e-5, rtol=0)
    log0 = model.sub_token_logits(hidden).log_softmax(-1)
    for code in (0, 5, 77, 255):
        f0, f1 = code & 7, code >> 3
        log1 = model.sub_token_logits(hidden, (torch.full((2, 1), f0),)).log_softmax(-1)
        torch.testing.assert_close(joint[..., code], log0[..., f0] + log1[..., f1], atol=1e-5, rtol=0)


def test_generate_samples_the_joint_and_greedy_is_its_argmax():
    model = _model()
    prompt = model.prompt_ids([3], 64)
    with torch.no_grad():
        seq = model.generate(input_ids=prompt, do_sample=False)
    codes = seq[:, 2:]
    with torch.no_grad():
        out = model(input_ids=seq[:, :-1], output_joint_logits=True)
    joint = model.joint_log_probs_of(out.last_hidden_state[:, 1:])
    assert torch.equal(joint.argmax(-1), codes)


def test_save_load_round_trip(tmp_path):
    model = _model()
    model.save_pretrained(tmp_path)
    loaded = MergeARForCausalLM.from_pretrained(tmp_path).eval()
    assert loaded.config.factorized_num_layers == 2
    a = generate_codes(model, [1], 8, temperature=0)
    assert torch.equal(generate_codes(loaded, [1], 8, temperature=0), a)
