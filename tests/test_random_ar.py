"""Random-order generator: training layout, cached decoding == full forward, parallel decoding, seeds,
position prior, remote code; MergeAR's plain raster baseline."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import AutoModelForCausalLM, DynamicCache

from conftest import run_without_mergevq_hf
from mergevq_hf import MergeARConfig, MergeARForCausalLM, RandomARConfig, RandomARForCausalLM
from mergevq_hf.models.mergear import generate_codes
from mergevq_hf.models.random_ar import decode_schedule, generate_random_order, sample_positions
from mergevq_hf.models.random_ar.generation import SampleNoise


def _model(preset="tiny", **overrides):
    config = RandomARConfig.from_preset(preset, resid_dropout=0.0, ffn_dropout=0.0, token_dropout=0.0, **overrides)
    torch.manual_seed(0)
    return RandomARForCausalLM(config).eval()


def _tokens(batch, width, seed=0):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, 256, (batch, width), generator=g)
    positions = torch.stack([torch.randperm(64, generator=g)[:width] for _ in range(batch)])
    return tokens, positions


def _joint(model, factor_logits):
    """Greedy code of every position from the factor logits."""
    code, offset = 0, 0
    for bits, logit in zip(model.factor_bits, factor_logits):
        code = code + (logit.argmax(-1) << offset)
        offset += bits
    return code


def test_training_layout_and_loss_targets():
    model = _model()
    tokens, positions = _tokens(3, 12)
    counts = torch.tensor([12, 7, 1])
    inputs = model.training_inputs(tokens, positions, [1, 2, 10], counts, generator=torch.Generator().manual_seed(3))
    ids, pos, labels = inputs["input_ids"], inputs["positions"], inputs["labels"]
    pid = model.config.position_instruction_id
    assert ids.shape == (3, 2 + 24) and pos.shape == ids.shape
    assert (pos[:, :2] == -1).all()
    for b, k in enumerate(counts.tolist()):
        body_ids, body_pos = ids[b, 2 : 2 + 2 * k], pos[b, 2 : 2 + 2 * k]
        assert (body_ids[0::2] == pid).all(), "a position instruction precedes every code"
        assert torch.equal(body_pos[0::2], body_pos[1::2]), "P_i and x_i share the token's position"
        pairs = sorted(zip(body_pos[1::2].tolist(), body_ids[1::2].tolist()))
        assert pairs == sorted(zip(positions[b, :k].tolist(), tokens[b, :k].tolist())), "a permutation of the K tokens"
        assert torch.equal(labels[b, 3 : 2 + 2 * k : 2], body_ids[1::2]), "labels: the codes at their own places"
        assert (labels[b, 2 + 2 * k :] == -100).all() and (labels[b, 2 : 2 + 2 * k : 2] == -100).all()
    orders = {tuple(model.training_inputs(tokens, positions, [1] * 3, 12)["positions"][0].tolist()) for _ in range(5)}
    assert len(orders) > 1, "a new random order per call"
    loss = model(**inputs).loss
    loss.backward()
    assert torch.isfinite(loss) and model.position_instruction.grad.abs().sum() > 0


@pytest.mark.parametrize("preset", ["tiny", "tiny-factorized"])
def test_cached_decoding_equals_full_forward(preset):
    """Step by step with a DynamicCache ([x_i, P_{i+1}] per step) gives the full forward's logits (1e-5)."""
    model = _model(preset)
    tokens, positions = _tokens(2, 20)
    inputs = model.training_inputs(tokens, positions, [3, 10], 20)
    ids, pos = inputs["input_ids"], inputs["positions"]
    with torch.no_grad():
        full = model(input_ids=ids, positions=pos).factor_logits
        cache = DynamicCache()
        steps = [model(input_ids=ids[:, :3], positions=pos[:, :3], cache=cache, logits_to_keep=1).factor_logits]
        for t in range(3, ids.shape[1] - 1, 2):
            out = model(input_ids=ids[:, t : t + 2], positions=pos[:, t : t + 2], cache=cache, logits_to_keep=1)
            steps.append(out.factor_logits)
    for f in range(len(full)):
        stepwise = torch.cat([s[f] for s in steps], dim=1)
        torch.testing.assert_close(stepwise, full[f][:, 2::2], atol=1e-5, rtol=0)


@pytest.mark.parametrize("num_steps", [None, 1, 4, 7])
def test_generation_is_consistent_with_the_full_forward(num_steps):
    """Greedy codes re-scored by one full forward in the generation order: every token decoded one per step, and
    the first token of every parallel step (the one that sees exactly its training prefix), is the argmax."""
    model = _model("tiny-factorized")
    _, positions = _tokens(3, 16)
    out = generate_random_order(model, [1, 4, 10], 16, num_steps, positions=positions, temperature=0)
    schedule = decode_schedule(16, num_steps)
    assert out.num_steps == len(schedule) and torch.equal(out.positions, positions)
    inputs = model.training_inputs(out.codes, out.positions, [1, 4, 10], 16)
    ids = model.prompt_ids([1, 4, 10], 16)
    pid = torch.full_like(out.codes, model.config.position_instruction_id)
    ids = torch.cat([ids, torch.stack([pid, out.codes], 2).flatten(1)], 1)
    pos = torch.cat([torch.full((3, 2), -1), positions.repeat_interleave(2, 1)], 1)
    with torch.no_grad():
        rescored = _joint(model, model(input_ids=ids, positions=pos).factor_logits)[:, 2::2]
    firsts = [0] + schedule[:-1]
    assert torch.equal(rescored[:, firsts], out.codes[:, firsts])
    if num_steps is None:
        assert torch.equal(rescored, out.codes)
    assert inputs["input_ids"].shape == ids.shape


def test_decode_schedule_is_randars_cosine():
    for k, s in [(256, 88), (144, 64), (36, 12), (36, 36), (5, 3), (49, 1)]:
        schedule = decode_schedule(k, s)
        assert len(schedule) == min(s, k) and schedule[-1] == k
        assert all(b > a for a, b in zip([0] + schedule, schedule)), "at least one token per step"
    formula = [min(256, int((1 - math.cos(math.pi / 2 * (s + 1) / 88)) * 256 + 1)) for s in range(88)]
    schedule = decode_schedule(256, 88)
    assert all(a >= b for a, b in zip(schedule, formula)), "the formula, raised where a step would decode nothing"
    assert schedule[23:] == formula[23:], "... after which it is RandAR's formula exactly"
    assert decode_schedule(36, 12) == [1, 2, 3, 5, 8, 11, 15, 18, 23, 27, 32, 36]
    assert decode_schedule(10) == list(range(1, 11)) == decode_schedule(10, 99)
    with pytest.raises(ValueError, match="num_inference_steps"):
        decode_schedule(10, 0)


def test_seeds_labels_and_batch_independence_with_cfg():
    model = _model("tiny-factorized")
    gens = lambda seeds: [torch.Generator().manual_seed(s) for s in seeds]  # noqa: E731
    a = generate_random_order(model, [1, 2, 3], 12, 5, guidance_scale=3.0, generators=gens([0, 1, 2]))
    b = generate_random_order(model, [7, 2], 12, 5, guidance_scale=3.0, generators=gens([9, 1]))
    assert torch.equal(a.codes[1], b.codes[1]) and torch.equal(a.positions[1], b.positions[1])
    c = generate_random_order(model, [1, 2, 3], 12, 5, guidance_scale=3.0, generators=gens([0, 1, 2]))
    assert torch.equal(a.codes, c.codes)
    constant = generate_random_order(
        model, [1, 2, 3], 12, 5, guidance_scale=3.0, guidance_schedule="constant", generators=gens([0, 1, 2])
    )
    assert torch.equal(constant.positions, a.positions) and not torch.equal(constant.codes, a.codes)
    for row in a.positions:
        assert len(set(row.tolist())) == 12, "distinct positions"


def test_position_prior():
    model = _model()
    counts = torch.zeros(65, 64)
    counts[10, :20] = 5.0  # K=10 was seen on positions 0..19 only
    model.set_position_prior(counts)
    noise = SampleNoise([torch.Generator().manual_seed(i) for i in range(50)], 50)
    for k in (10, 12):  # 12 unseen: the nearest seen K's prior
        positions = sample_positions(model, k, noise)
        assert positions.max() < 20 and all(len(set(r.tolist())) == k for r in positions)
    assert len({tuple(r.tolist()) for r in positions}) > 1
    with pytest.raises(ValueError, match="shape"):
        model.set_position_prior(torch.zeros(64, 64))
    uniform = sample_positions(_model(), 64, SampleNoise(None, 2))
    assert sorted(uniform[0].tolist()) == list(range(64)), "no counts: uniform over all positions"


def test_bad_arguments():
    model = _model()
    with pytest.raises(ValueError, match="num_tokens"):
        generate_random_order(model, [1], 65)
    with pytest.raises(ValueError, match="empty"):
        generate_random_order(model, [], 4)
    with pytest.raises(ValueError, match="guidance_schedule"):
        generate_random_order(model, [1], 4, guidance_schedule="cosine")
    with pytest.raises(ValueError, match="positions"):
        generate_random_order(model, [1], 4, positions=torch.zeros(1, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="class labels"):
        model.prompt_ids([11], 4)
    with pytest.raises(ValueError, match="exceeds"):
        model(input_ids=torch.zeros(1, 131, dtype=torch.long), positions=torch.zeros(1, 131, dtype=torch.long))


@pytest.mark.parametrize("preset", ["tiny-factorized", "tiny-subtoken"])
def test_save_load_and_remote_code(tmp_path, preset):
    model = _model(preset)
    counts = torch.zeros(65, 64)
    counts[8, 30:50] = 1.0
    model.set_position_prior(counts)
    model.save_pretrained(tmp_path / "m")
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "m").eval()
    assert isinstance(loaded, RandomARForCausalLM) and torch.equal(loaded.position_counts, counts)
    ref = generate_random_order(model, [1, 2], 8, 3, generators=torch.Generator().manual_seed(0))
    again = generate_random_order(loaded, [1, 2], 8, 3, generators=torch.Generator().manual_seed(0))
    assert torch.equal(ref.codes, again.codes) and ref.positions.min() >= 30
    inputs = model.training_inputs(ref.codes, ref.positions, [1, 2], 8, generator=torch.Generator().manual_seed(0))
    torch.save({k: v for k, v in inputs.items()}, tmp_path / "inputs.pt")
    with torch.no_grad():
        torch.save({"ref": model(**inputs).loss}, tmp_path / "ref.pt")
    run_without_mergevq_hf(
        f"""
        import torch
        from transformers import AutoModelForCausalLM
        m = AutoModelForCausalLM.from_pretrained({str(tmp_path / "m")!r}, trust_remote_code=True).eval()
        inputs = torch.load({str(tmp_path / "inputs.pt")!r}, weights_only=True)
        with torch.no_grad():
            loss = m(**inputs).loss
        assert torch.allclose(loss, torch.load({str(tmp_path / "ref.pt")!r}, weights_only=True)["ref"], atol=1e-6)
        print("REMOTE_OK")
    """,
        tmp_path,
    )


# ------------------------------------------------------------------ the plain raster baseline
def test_raster_baseline_uses_plain_causal_attention_and_a_dense_cache():
    config = dict(resid_dropout=0.0, ffn_dropout=0.0, token_dropout=0.0)
    torch.manual_seed(0)
    baseline = MergeARForCausalLM(MergeARConfig.from_preset("tiny", prune_duplicates=False, **config)).eval()
    pruned = MergeARForCausalLM(MergeARConfig.from_preset("tiny", **config)).eval()
    pruned.load_state_dict(baseline.state_dict())
    codes = torch.randint(0, 4, (2, 64), generator=torch.Generator().manual_seed(0))  # many duplicates
    ids = baseline.build_inputs(codes, [1, 2], 16)
    with torch.no_grad():
        full = baseline(input_ids=ids).logits
        cache = baseline.new_cache()
        steps = [baseline(input_ids=ids[:, :2], cache=cache, logits_to_keep=1).logits]
        steps += [baseline(input_ids=ids[:, t : t + 1], cache=cache).logits for t in range(2, ids.shape[1] - 1)]
        merged = pruned(input_ids=ids).logits
    torch.testing.assert_close(torch.cat(steps, 1), full[:, 1:-1], atol=1e-5, rtol=0)
    assert cache.num_stored.tolist() == [65, 65], "dense: every token is stored"
    assert not torch.allclose(merged, full, atol=1e-3), "duplicate masking changes the logits"
    a = generate_codes(baseline, [1, 2], 16, generators=[torch.Generator().manual_seed(s) for s in (0, 1)])
    assert a.shape == (2, 64)
