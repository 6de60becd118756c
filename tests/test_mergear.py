"""MergeAR: duplicate rule, masked training forward == cached decoding, pruning cache, generate()."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from conftest import run_without_mergevq_hf
from mergevq_hf import MergeARConfig, MergeARForCausalLM, MergePruningCache
from mergevq_hf.models.mergear import SampleNoise, duplicate_mask, generate_codes, sample
from mergevq_hf.models.mergear.generation import filter_logits
from mergevq_hf.models.mergear.modeling_mergear import CACHE_NAME


def _model(preset="tiny", **overrides):
    config = MergeARConfig.from_preset(preset, resid_dropout=0.0, ffn_dropout=0.0, token_dropout=0.0, **overrides)
    return MergeARForCausalLM(config).eval()


def _codes_with_duplicates(batch, num_positions, seed=0):
    """Rows with different duplicate patterns: few distinct codes, many, and runs."""
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 256, (batch, num_positions), generator=g)
    codes[0] = torch.randint(0, 5, (num_positions,), generator=g)
    if batch > 2:
        codes[2] = torch.randint(0, 40, (num_positions,), generator=g).repeat_interleave(2)[:num_positions]
    return codes


def test_duplicate_mask_matches_definition():
    codes = torch.tensor([[3, 1, 3, 3, 2, 1], [-1, -1, 5, 5, 6, 5]])
    expected = torch.tensor([[0, 0, 1, 1, 0, 1], [0, 0, 0, 1, 0, 1]], dtype=torch.bool)
    assert torch.equal(duplicate_mask(codes), expected)
    g = torch.Generator().manual_seed(1)
    rand = torch.randint(0, 7, (4, 50), generator=g)
    brute = torch.tensor([[rand[b, j].item() in rand[b, :j].tolist() for j in range(50)] for b in range(4)])
    assert torch.equal(duplicate_mask(rand), brute)


def test_training_mask_rule():
    codes = torch.tensor([[-1, -1, 4, 4, 7, 4]])
    mask = MergeARForCausalLM.training_mask(codes)[0, 0]
    # query 5 (a duplicate of 4) sees start tokens, first 4 (pos 2), 7 (pos 4) and itself, not pos 3
    assert mask[5].tolist() == [True, True, True, False, True, True]
    assert mask[3].tolist() == [True, True, True, True, False, False]  # sees itself, nothing later
    assert not mask.triu(1).any()


@pytest.mark.parametrize("preset", ["tiny", "tiny-factorized"])
def test_masked_forward_equals_cached_decoding(preset):
    model = _model(preset)
    num_positions = model.config.num_positions
    codes = _codes_with_duplicates(3, num_positions)
    ids = model.build_inputs(codes, [1, 2, 10], [10, 20, 64])
    with torch.no_grad():
        full = model(input_ids=ids).factor_logits
        cache = model.new_cache()
        steps = [model(input_ids=ids[:, :2], cache=cache, logits_to_keep=1).factor_logits]
        for t in range(2, num_positions + 2):
            steps.append(model(input_ids=ids[:, t : t + 1], cache=cache).factor_logits)
        chunked_cache, chunks = model.new_cache(initial_capacity=3), []
        for a, b in [(0, 5), (5, 6), (6, 31), (31, num_positions + 2)]:  # multi-token steps with duplicates
            chunks.append(model(input_ids=ids[:, a:b], cache=chunked_cache).factor_logits)
    for f in range(len(full)):
        stepwise = torch.cat([s[f][:, -1:] for s in steps], dim=1)
        torch.testing.assert_close(stepwise, full[f][:, 1:], atol=1e-5, rtol=0)
        torch.testing.assert_close(torch.cat([c[f] for c in chunks], dim=1), full[f], atol=1e-5, rtol=0)
    distinct = torch.tensor([len(set(row.tolist())) for row in codes])
    assert torch.equal(cache.num_stored, 2 + distinct), "stores exactly start tokens + distinct codes"
    assert torch.equal(chunked_cache.num_stored, 2 + distinct)
    assert cache.seen_tokens == num_positions + 2


def _decode_stepwise(model, ids, cache):
    """Prompt, then one token per step; returns the logits of every step and, per step, the mask plan_step handed
    out with the entries each row had stored before it."""
    masks, plan = [], cache.plan_step

    def spy(codes):
        before = None if cache.lengths is None else cache.lengths.clone()
        plan(codes)
        masks.append((cache.step_masks[0] if len(cache.step_masks) == 1 else list(cache.step_masks), before))

    cache.plan_step = spy
    with torch.no_grad():
        out = [model(input_ids=ids[:, :2], cache=cache).logits[:, -1:]]
        out += [model(input_ids=ids[:, t : t + 1], cache=cache).logits for t in range(2, ids.shape[1])]
    return torch.cat(out, 1), masks


def test_one_token_steps_need_no_mask_for_equal_rows_and_a_cheap_one_otherwise():
    """Decoding one token per step: rows that stored the same number of entries (one image, or an image and its
    CFG twin) attend with no mask at all (SDPA's fused path); ragged rows get ``slot <= lengths[b]``. Both equal
    the masked training forward, and a cache that grows its seen-code table itself (no ``num_codes``) agrees."""
    model = _model()
    num_positions = model.config.num_positions
    codes = _codes_with_duplicates(3, num_positions)
    ids = model.build_inputs(codes, [1, 2, 10], [10, 20, 64])
    with torch.no_grad():
        full = model(input_ids=ids).logits[:, 1:]
    for rows in ([0], [2, 2]):  # one row; a CFG-like pair fed the same codes
        logits, masks = _decode_stepwise(model, ids[rows], model.new_cache(num_tokens=64))
        torch.testing.assert_close(logits, full[rows], atol=1e-5, rtol=0)
        assert all(mask is None for mask, _ in masks[1:]), "equal rows need no mask"
    cache = model.new_cache(num_tokens=64)
    logits, masks = _decode_stepwise(model, ids, cache)
    torch.testing.assert_close(logits, full, atol=1e-5, rtol=0)
    ragged = [(mask, before) for mask, before in masks[1:] if mask is not None]
    assert len(ragged) > num_positions // 2
    for mask, before in ragged:  # visible: the longest row's entries + the query; each row its own + itself
        assert mask.shape == (3, 1, 1, int(before.max()) + 1) and mask.dtype == torch.bool
        assert torch.equal(mask[:, 0, 0].sum(-1), before + 1) and bool(mask[:, 0, 0, 0].all())
    self_grown = MergePruningCache(model.config.num_hidden_layers, initial_capacity=3)
    torch.testing.assert_close(_decode_stepwise(model, ids, self_grown)[0], logits, atol=0, rtol=0)
    assert torch.equal(self_grown.num_stored, cache.num_stored)


def _codes_with_k_distinct(ks, num_positions, seed=0):
    """One row per K: exactly K distinct codes (as the code map of K merged tokens), in a random raster order."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for k in ks:
        values = torch.randperm(256, generator=g)[:k]
        row = torch.cat([values, values[torch.randint(0, k, (num_positions - k,), generator=g)]])
        rows.append(row[torch.randperm(num_positions, generator=g)])
    return torch.stack(rows)


def test_rows_of_different_k_get_buffers_of_their_own_size():
    """A mixed-K batch: one buffer per K (row group), each attended with its own call. Logits equal the masked
    training forward and a one-buffer cache, in one-token and multi-token steps; allocated bytes are what each
    row needs (start tokens + its K), not the largest row's size for every row."""
    model = _model()
    num_positions, start = model.config.num_positions, model.config.num_start_tokens
    ks = [10, 40, 10, 40, 10]
    codes = _codes_with_k_distinct(ks, num_positions)
    ids = model.build_inputs(codes, [1, 2, 3, 4, 5], ks)
    with torch.no_grad():
        full = model(input_ids=ids).logits[:, 1:]
    grouped = model.new_cache(num_tokens=ks)
    logits, _ = _decode_stepwise(model, ids, grouped)
    torch.testing.assert_close(logits, full, atol=1e-5, rtol=0)
    assert grouped.group_row_lists == [[0, 2, 4], [1, 3]] and grouped.group_capacity == [start + 11, start + 41]
    one_buffer = model.new_cache(initial_capacity=start + 41)
    torch.testing.assert_close(_decode_stepwise(model, ids, one_buffer)[0], logits, atol=1e-6, rtol=0)
    assert torch.equal(grouped.num_stored, torch.tensor(ks) + start) and torch.equal(
        grouped.num_stored, one_buffer.num_stored
    )
    slot_bytes = 2 * model.config.num_hidden_layers * model.config.hidden_size * 4  # keys + values, float32
    assert grouped.kv_bytes(allocated=False) == sum(start + k for k in ks) * slot_bytes
    assert grouped.kv_bytes() == sum(start + k + 1 for k in ks) * slot_bytes, "each row: its own K + 1 slot"
    assert one_buffer.kv_bytes() == len(ks) * (start + 41) * slot_bytes  # 215 slots where the groups need 125
    chunked = model.new_cache(num_tokens=ks)
    with torch.no_grad():
        chunks = [model(input_ids=ids[:, a:b], cache=chunked).logits for a, b in [(0, 7), (7, 8), (8, 40), (40, 66)]]
    torch.testing.assert_close(torch.cat(chunks, 1)[:, 1:], full, atol=1e-5, rtol=0)
    assert torch.equal(chunked.num_stored, grouped.num_stored)
    gens = [torch.Generator().manual_seed(s) for s in range(3)]
    mixed = generate_codes(model, [1, 2, 3], torch.tensor([10, 40, 25]), guidance_scale=2.0, generators=gens)
    for i, k in enumerate([10, 40, 25]):
        alone = generate_codes(model, [i + 1], k, guidance_scale=2.0, generators=[torch.Generator().manual_seed(i)])
        assert torch.equal(alone[0], mixed[i]), "a row's codes do not depend on the other rows' K"


@pytest.mark.parametrize("preset", ["tiny", "tiny-factorized"])
def test_static_decode_path_gives_the_same_codes_and_compiles_whole(preset):
    """The static path (one buffer of start + L slots, every row masked to its own entries, no host reads) samples
    the same codes as the default path, with and without guidance; torch.compile(fullgraph=True) captures its
    step without a graph break (aot_eager here: the CPU check of what CUDA graphs need; the codes stay equal)."""
    model = _model(preset)
    labels, ks = [1, 2, 3], torch.tensor([10, 40, 25])
    for scale in (1.0, 2.5):
        gens = lambda: [torch.Generator().manual_seed(s) for s in (4, 5, 6)]  # noqa: E731
        eager = generate_codes(model, labels, ks, guidance_scale=scale, generators=gens())
        static = generate_codes(model, labels, ks, guidance_scale=scale, generators=gens(), static=True)
        assert torch.equal(static, eager)
    torch._dynamo.reset()
    compiled = generate_codes(
        model, labels, ks, guidance_scale=2.5, generators=gens(), compile_options={"backend": "aot_eager"}
    )
    assert torch.equal(compiled, static)
    small = model.new_cache(num_tokens=10)
    with pytest.raises(ValueError, match="static decode needs a cache of 66 slots"):
        generate_codes(model, [1], 10, static=True, cache=small)


def test_cache_capacity_comes_from_L_and_K():
    """Dense: start tokens + L slots, never grown. Pruned: start tokens + K + 1 (a code map of K merged tokens has at
    most K distinct codes; + the slot a duplicate is written to before it is dropped), grown in blocks only when
    generated codes have more."""
    model = _model()
    num_positions, start = model.config.num_positions, model.config.num_start_tokens
    slot_bytes = 2 * model.config.num_hidden_layers * model.config.hidden_size * 4  # keys + values, float32
    dense = model.new_cache(prune=False)
    generate_codes(model, [1, 2], 20, generators=[torch.Generator().manual_seed(s) for s in (0, 1)], cache=dense)
    assert dense.capacity == start + num_positions and dense.kv_bytes() == 2 * (start + num_positions) * slot_bytes
    assert dense.kv_bytes(allocated=False) == 2 * (start + num_positions - 1) * slot_bytes  # the last code is not fed
    assert model.new_cache(num_tokens=torch.tensor([10, 36, 20])).capacity == start + 37
    assert model.new_cache(num_tokens=500).capacity == start + num_positions
    codes = _codes_with_duplicates(2, num_positions)
    k = max(len(set(row.tolist())) for row in codes)
    cache = model.new_cache(num_tokens=k)
    _decode_stepwise(model, model.build_inputs(codes, [1, 2], [k, k]), cache)
    assert cache.capacity == start + k + 1, "K distinct codes (+ the slot of a dropped duplicate) fit, no growth"
    assert cache.kv_bytes() == 2 * (start + k + 1) * slot_bytes
    assert cache.kv_bytes(allocated=False) == int(cache.num_stored.sum()) * slot_bytes


def test_no_duplicates_equals_dense_cache_and_dense_forward():
    model = _model()
    num_positions = model.config.num_positions
    codes = torch.stack([torch.randperm(256)[:num_positions] for _ in range(2)])
    ids = model.build_inputs(codes, [0, 5], [64, 30])
    with torch.no_grad():
        dense_causal = model(input_ids=ids).logits  # no duplicates: the training mask is plain causal
        results = []
        for prune in (True, False):
            cache = model.new_cache(prune=prune)
            out = [model(input_ids=ids[:, :1], cache=cache).logits]
            out += [model(input_ids=ids[:, t : t + 1], cache=cache).logits for t in range(1, ids.shape[1])]
            results.append(torch.cat(out, 1))
    torch.testing.assert_close(results[0], results[1], atol=1e-6, rtol=0)
    torch.testing.assert_close(results[0], dense_causal, atol=1e-5, rtol=0)
    assert (
        MergeARForCausalLM.training_mask(model._codes_of(ids))
        .squeeze(1)
        .equal(torch.ones(ids.shape[1], ids.shape[1], dtype=torch.bool).tril().expand(2, -1, -1))
    )


def test_dense_cache_stores_everything_and_pruned_cache_is_smaller():
    model = _model()
    codes = _codes_with_duplicates(2, 64)
    ids = model.build_inputs(codes, [1, 2], [8, 8])
    pruned, dense = model.new_cache(prune=True), model.new_cache(prune=False, initial_capacity=66)
    with torch.no_grad():
        model(input_ids=ids, cache=pruned)
        model(input_ids=ids, cache=dense)
    assert dense.num_stored.tolist() == [66, 66]
    assert pruned.kv_bytes(allocated=False) < dense.kv_bytes(allocated=False)
    assert pruned.kv_bytes() <= dense.kv_bytes()


@pytest.mark.parametrize("preset", ["tiny", "tiny-factorized"])
@pytest.mark.parametrize("guidance_scale", [1.0, 3.0])
def test_generate_builds_its_own_pruning_cache_and_matches_own_loop(preset, guidance_scale):
    """generate() with no cache argument: exactly L codes (generation_config), a MergePruningCache that stores
    only start tokens + distinct codes, and the same greedy codes as generate_codes, with CFG too."""
    model = _model(preset)
    labels, counts = [1, 2, 3], [10, 20, 64]
    out = model.generate(
        input_ids=model.prompt_ids(labels, counts),
        do_sample=False,
        guidance_scale=guidance_scale,
        return_dict_in_generate=True,
    )
    assert out.sequences.shape == (3, 2 + model.config.num_positions), "exactly L new tokens by default"
    own_cache = model.new_cache()
    ours = generate_codes(model, labels, counts, guidance_scale=guidance_scale, temperature=0, cache=own_cache)
    assert torch.equal(out.sequences[:, 2:], ours)
    cache = getattr(out, CACHE_NAME)  # "past_key_values" on transformers < 5.24
    assert isinstance(cache, MergePruningCache)
    expected = torch.tensor([2 + len(set(row[:-1].tolist())) for row in ours])  # last code is never fed
    assert torch.equal(cache.num_stored, expected)
    assert torch.equal(own_cache.num_stored[:3], expected)
    assert cache.num_stored.max() < 2 + model.config.num_positions - 1, "duplicates were pruned"
    assert cache.group_row_lists == [[0], [1], [2]], "one buffer per K read from the merge-instruction tokens"
    for (row,), capacity in zip(cache.group_row_lists, cache.group_capacity):
        sized = min(2 + counts[row] + 1, 2 + model.config.num_positions)  # start + K + 1
        grown = int(cache.num_stored[row]) + 1 > sized  # a random model's codes may hold more than K distinct
        assert capacity == sized if not grown else capacity % cache.block_size == 0


def test_generate_with_a_given_cache():
    model = _model("tiny-factorized")
    cache = model.new_cache()
    out = model.generate(input_ids=model.prompt_ids([4], 16), do_sample=False, **{CACHE_NAME: cache})
    assert torch.equal(out[:, 2:], generate_codes(model, [4], 16, temperature=0))
    assert cache.seen_tokens == 2 + model.config.num_positions - 1, "the given cache was used"


def test_generation_config_ships_with_the_model(tmp_path):
    model = _model()
    model.save_pretrained(tmp_path / "m")
    saved = json.loads((tmp_path / "m" / "generation_config.json").read_text())
    assert saved["max_new_tokens"] == model.config.num_positions and saved["do_sample"] is True
    loaded = MergeARForCausalLM.from_pretrained(tmp_path / "m")
    assert loaded.generation_config.max_new_tokens == model.config.num_positions
    # a folder saved before these defaults (plain generation config): generate() still completes the L codes
    (tmp_path / "m" / "generation_config.json").write_text('{"use_cache": true}')
    old = MergeARForCausalLM.from_pretrained(tmp_path / "m")
    assert old.generation_config.max_new_tokens is None
    out = old.generate(input_ids=old.prompt_ids([1], 8), do_sample=False)
    assert out.shape == (1, 2 + model.config.num_positions)


@pytest.mark.skipif(CACHE_NAME != "cache", reason="past_key_values is deprecated from transformers 5.24 on")
def test_past_key_values_is_a_deprecated_alias():
    model = _model()
    ids = model.prompt_ids([1], 8)
    with pytest.warns(FutureWarning, match="past_key_values"):
        legacy = model(input_ids=ids, past_key_values=model.new_cache())
    current = model(input_ids=ids, cache=model.new_cache())
    torch.testing.assert_close(legacy.logits, current.logits)
    assert isinstance(legacy.cache, MergePruningCache)


def test_joint_logits_only_when_asked():
    """Training never builds the [B, T, 2**code_dim] joint table; generate() asks for it."""
    model = _model("tiny-factorized")
    codes = _codes_with_duplicates(2, 64)
    inputs = model.training_inputs(codes, [1, 2], [16, 16])
    out = model(**inputs)
    assert out.logits is None and out.loss is not None
    assert [f.shape[-1] for f in out.factor_logits] == [8, 32]
    joint = model(input_ids=inputs["input_ids"], output_joint_logits=True, logits_to_keep=1).logits
    assert joint.shape == (2, 1, 256)
    expected = model.joint_log_probs(tuple(f[:, -1:] for f in out.factor_logits))
    torch.testing.assert_close(joint, expected)
    torch.testing.assert_close(joint.exp().sum(-1), torch.ones(2, 1))


def test_cfg_and_per_sample_seeds_independent_of_batch():
    model = _model()
    labels = [3, 1, 4, 1]

    def gens(seeds):
        return [torch.Generator().manual_seed(s) for s in seeds]

    batch = generate_codes(
        model, labels, 16, guidance_scale=3.0, temperature=1.0, top_k=50, generators=gens([7, 8, 9, 10])
    )
    single = generate_codes(model, [4], 16, guidance_scale=3.0, temperature=1.0, top_k=50, generators=gens([9]))
    assert torch.equal(batch[2:3], single)
    other_seed = generate_codes(model, [4], 16, guidance_scale=3.0, temperature=1.0, top_k=50, generators=gens([99]))
    assert not torch.equal(other_seed, single)
    # guidance changes the distribution: greedy codes differ from unguided greedy for some sample
    guided = generate_codes(model, labels, 16, guidance_scale=4.0, temperature=0)
    plain = generate_codes(model, labels, 16, guidance_scale=1.0, temperature=0)
    assert not torch.equal(guided, plain)


def test_sampling_filters():
    logits = torch.tensor([[4.0, 3.0, 2.0, 1.0, 0.0]])
    assert torch.isinf(filter_logits(logits, top_k=2)).tolist() == [[False, False, True, True, True]]
    probs = logits.softmax(-1)[0]
    kept = ~torch.isinf(filter_logits(logits, top_p=float(probs[0] + 0.01)))
    assert kept.tolist() == [[True, True, False, False, False]]
    draws = torch.stack([sample(logits, 1.0, top_k=2) for _ in range(300)])
    assert set(draws.unique().tolist()) == {0, 1}
    freq0 = (draws == 0).float().mean()
    expected = probs[0] / (probs[0] + probs[1])
    assert abs(freq0 - expected) < 0.1


def test_sample_noise_is_per_row_and_uniform():
    """Each row's stream depends only on its own generator (drawn once, on the generator's device); draws are
    uniform in (0, 1) and successive draws differ."""
    seeds = [3, 5, 8]
    batch = SampleNoise([torch.Generator().manual_seed(s) for s in seeds], 3)
    first, second = batch.uniform(1000), batch.uniform(1000)
    single = SampleNoise([torch.Generator().manual_seed(5)], 1)
    assert torch.equal(single.uniform(1000)[0], first[1]) and torch.equal(single.uniform(1000)[0], second[1])
    assert not torch.equal(first[0], first[1]) and not torch.equal(first, second)
    values = torch.cat([first, second]).flatten()
    assert 0 < values.min() and values.max() < 1 and abs(values.mean() - 0.5) < 0.01
    assert abs(values.var() - 1 / 12) < 0.005
    # sampling with per-row streams follows the distribution (Gumbel-max race)
    logits = torch.tensor([[2.0, 1.0, 0.0]]).expand(4000, -1)
    draws = sample(logits, 1.0, generators=SampleNoise(torch.Generator().manual_seed(0), 4000))
    freq = torch.bincount(draws, minlength=3).float() / 4000
    torch.testing.assert_close(freq, logits[0].softmax(-1), atol=0.03, rtol=0)


@pytest.mark.parametrize("drop_prob", [0.0, 1.0])
def test_training_loss_and_label_dropout(drop_prob):
    model = _model("tiny-factorized", class_dropout_prob=drop_prob).train()
    codes = _codes_with_duplicates(4, 64)
    loss = model.training_loss(codes, [1, 2, 3, 4], [16, 16, 36, 64])
    assert torch.isfinite(loss) and loss > 0
    loss.backward()
    assert model.layers[0].attention.q_proj.weight.grad.abs().sum() > 0
    grad = model.class_embedding.weight.grad.abs().sum(-1)
    null_class = model.config.num_classes
    if drop_prob == 1.0:  # every label replaced by the null class
        assert grad[null_class] > 0 and grad[:null_class].sum() == 0
    else:
        assert grad[null_class] == 0 and (grad[[1, 2, 3, 4]] > 0).all()


def test_bad_inputs():
    model = _model()
    with pytest.raises(ValueError, match="class labels"):
        model.prompt_ids([11], 4)
    with pytest.raises(ValueError, match="num_tokens"):
        model.prompt_ids([1], 65)
    with pytest.raises(ValueError, match="input_ids must be in"):
        model(input_ids=torch.tensor([[10**6]]))
    with pytest.raises(TypeError, match="MergePruningCache"):
        from transformers import DynamicCache

        model(input_ids=torch.tensor([[300, 320]]), cache=DynamicCache())
    with pytest.raises(ValueError, match="factorized_bits"):
        MergeARConfig(code_dim=8, factorized_bits=[3, 4])


def test_save_load_and_remote_code(tmp_path):
    model = _model("tiny-factorized")
    model.save_pretrained(tmp_path / "m")
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "m").eval()
    assert isinstance(loaded, MergeARForCausalLM)
    ref = generate_codes(model, [1, 2], 20, temperature=0)
    assert torch.equal(generate_codes(loaded, [1, 2], 20, temperature=0), ref)
    torch.save({"ref": ref}, tmp_path / "ref.pt")
    run_without_mergevq_hf(
        f"""
        import torch
        from transformers import AutoModelForCausalLM
        m = AutoModelForCausalLM.from_pretrained({str(tmp_path / "m")!r}, trust_remote_code=True).eval()
        cache_cls = type(m.new_cache())
        assert "transformers_modules" in cache_cls.__module__
        out = m.generate(input_ids=m.prompt_ids([1, 2], 20), do_sample=False)
        assert torch.equal(out[:, 2:], torch.load({str(tmp_path / "ref.pt")!r}, weights_only=True)["ref"])
        print("REMOTE_OK")
    """,
        tmp_path,
    )


def test_cache_is_a_transformers_cache():
    from transformers.cache_utils import Cache

    assert issubclass(MergePruningCache, Cache)
