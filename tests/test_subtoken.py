"""Next-sub-token prediction (official stage 2, ``factorized_num_layers > 0``) in MergeAR (the teacher-forced
forward, cached decoding, the factor-by-factor sampler, the static path and generate()'s joint distribution) and in
the random-order model (cached and parallel decoding, CFG, seeds)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import DynamicCache

from mergevq_hf import MergeARConfig, MergeARForCausalLM, RandomARConfig, RandomARForCausalLM
from mergevq_hf.models.mergear import SampleNoise, generate_codes
from mergevq_hf.models.random_ar import decode_schedule, generate_random_order


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


# ------------------------------------------------------------------ the random-order model
def _random_ar(**overrides):
    config = RandomARConfig.from_preset(
        "tiny-subtoken", resid_dropout=0.0, ffn_dropout=0.0, token_dropout=0.0, **overrides
    )
    torch.manual_seed(0)
    model = RandomARForCausalLM(config).eval()
    with torch.no_grad():
        for p in model.sub_token_layers.parameters():
            p.add_(torch.randn_like(p) * 0.3)
        model.tok_embeddings[0].weight.mul_(20)
    return model


def _random_tokens(batch, width, seed=0):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, 256, (batch, width), generator=g)
    positions = torch.stack([torch.randperm(64, generator=g)[:width] for _ in range(batch)])
    return tokens, positions


def _sequence(model, labels, codes, positions):
    """The training-layout sequence of codes in the given order: ids and positions [B, 2 + 2K]."""
    batch, k = codes.shape
    pid = torch.full_like(codes, model.config.position_instruction_id)
    ids = torch.cat([model.prompt_ids(labels, k), torch.stack([pid, codes], 2).flatten(1)], 1)
    pos = torch.cat([torch.full((batch, 2), -1), positions.repeat_interleave(2, 1)], 1)
    return ids, pos


def test_random_ar_config_switch_and_presets():
    assert RandomARConfig.from_preset("random-ar-b").factorized_num_layers == 2
    assert RandomARConfig().factorized_num_layers == 0, "folders saved before the field keep independent heads"
    assert len(RandomARForCausalLM(RandomARConfig.from_preset("tiny-factorized")).sub_token_layers) == 0
    with pytest.raises(ValueError, match="exactly two factors"):
        RandomARConfig.from_preset("tiny", factorized_num_layers=2)
    model = _random_ar()
    hidden = torch.randn(2, 3, model.config.hidden_size)
    a = model.sub_token_logits(hidden, (torch.zeros(2, 3, dtype=torch.long),))
    b = model.sub_token_logits(hidden, (torch.full((2, 3), 5),))
    assert (a - b).abs().max() > 1e-2, "factor 1 depends on factor 0"


def test_random_ar_cached_decoding_equals_teacher_forced_forward():
    """One token per step with a DynamicCache ([x_i, P_{i+1}] per step): the hidden state at every position
    instruction, and so both factors (factor 1 given the true factor 0), equal the teacher-forced forward (1e-5);
    the loss is the cross-entropy of exactly those logits."""
    model = _random_ar()
    tokens, positions = _random_tokens(2, 20)
    ids, pos = _sequence(model, [3, 10], tokens, positions)
    with torch.no_grad():
        full = model(input_ids=ids, positions=pos).factor_logits
        cache = DynamicCache()
        hidden = [model(input_ids=ids[:, :3], positions=pos[:, :3], cache=cache, logits_to_keep=1).last_hidden_state]
        for t in range(3, ids.shape[1] - 1, 2):
            out = model(input_ids=ids[:, t : t + 2], positions=pos[:, t : t + 2], cache=cache, logits_to_keep=1)
            hidden.append(out.last_hidden_state)
        hidden = torch.cat(hidden, dim=1)  # at P_1 .. P_K
        step0 = model.sub_token_logits(hidden)
        step1 = model.sub_token_logits(hidden, (tokens & 7,))
        labels = torch.full_like(ids, -100)
        labels[:, 3::2] = tokens
        loss = model(input_ids=ids, positions=pos, labels=labels).loss
    torch.testing.assert_close(step0, full[0][:, 2::2], atol=1e-5, rtol=0)
    torch.testing.assert_close(step1, full[1][:, 2::2], atol=1e-5, rtol=0)
    expected = F.cross_entropy(step0.flatten(0, 1), (tokens & 7).flatten()) + F.cross_entropy(
        step1.flatten(0, 1), (tokens >> 3).flatten()
    )
    torch.testing.assert_close(loss, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("num_steps, scale", [(None, 1.0), (None, 3.0), (5, 1.0), (5, 3.0)])
def test_random_ar_greedy_generation_is_the_argmax_chain_of_the_full_forward(num_steps, scale):
    """Greedy codes re-scored by one full forward in generation order (CFG with a constant scale): every token of
    a one-per-step run, and the first token of every parallel step (the one whose query sees exactly its training
    prefix), is the argmax of factor 0 and then of factor 1 given it."""
    model = _random_ar()
    labels, k = [1, 4, 10], 16
    _, positions = _random_tokens(3, k)
    out = generate_random_order(
        model,
        labels,
        k,
        num_steps,
        guidance_scale=scale,
        guidance_schedule="constant",
        positions=positions,
        temperature=0,
    )
    ids, pos = _sequence(model, labels, out.codes, positions)
    with torch.no_grad():
        cond = model(input_ids=ids, positions=pos).factor_logits
        null_ids = ids.clone()
        null_ids[:, 0] = model.prompt_ids([model.config.num_classes] * 3, k)[:, 0]
        null = model(input_ids=null_ids, positions=pos).factor_logits if scale != 1 else cond
    guided = [(n + scale * (c - n))[:, 2::2] for c, n in zip(cond, null)]
    schedule = decode_schedule(k, num_steps)
    checked = list(range(k)) if num_steps is None else [0] + schedule[:-1]
    assert torch.equal(guided[0].argmax(-1)[:, checked], (out.codes & 7)[:, checked])
    assert torch.equal(guided[1].argmax(-1)[:, checked], (out.codes >> 3)[:, checked])


def test_random_ar_sampling_per_sample_seeds_with_cfg():
    model = _random_ar()
    gens = lambda seeds: [torch.Generator().manual_seed(s) for s in seeds]  # noqa: E731
    both = generate_random_order(model, [1, 2], 12, 4, guidance_scale=2.0, top_k=4, generators=gens([7, 8]))
    alone = generate_random_order(model, [2], 12, 4, guidance_scale=2.0, top_k=4, generators=gens([8]))
    assert torch.equal(both.codes[1:], alone.codes) and torch.equal(both.positions[1:], alone.positions)
    other = generate_random_order(model, [1, 2], 12, 4, guidance_scale=2.0, top_k=4, generators=gens([9, 8]))
    assert not torch.equal(other.codes[0], both.codes[0])


def test_random_ar_sampling_is_a_gumbel_race_per_factor_given_the_sampled_factor_0():
    """Temperature 1, one token per step: every code is re-derived from the full forward (factor 1 teacher-forced
    on the sampled factor 0) and the image's noise stream drawn in the sampler's order (positions, then per token
    factor 0's and factor 1's Gumbel noise)."""
    model = _random_ar()
    k = 10
    out = generate_random_order(model, [6], k, generators=torch.Generator().manual_seed(3))
    ids, pos = _sequence(model, [6], out.codes, out.positions)
    with torch.no_grad():
        logits = [logit[:, 2::2] for logit in model(input_ids=ids, positions=pos).factor_logits]
    noise = SampleNoise(torch.Generator().manual_seed(3), 1)
    noise.gumbel(model.config.num_positions)
    noise.uniform(k)
    for i in range(k):
        f0 = (logits[0][0, i] + noise.gumbel(8)[0]).argmax()
        f1 = (logits[1][0, i] + noise.gumbel(32)[0]).argmax()
        assert int(out.codes[0, i]) == int(f0 + (f1 << 3)), f"token {i}"
