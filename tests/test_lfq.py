"""LFQ: index <-> code round trip, straight-through quantisation, exact bounded-memory entropy."""

from __future__ import annotations

import pytest
import torch

from mergevq_hf.models.tokenizer.lfq import (
    codes_to_indices,
    commitment_loss,
    entropy_terms,
    entropy_terms_naive,
    indices_to_codes,
    quantize,
)


def test_index_code_round_trip_all_patterns():
    code_dim = 10
    indices = torch.arange(2**code_dim)
    codes = indices_to_codes(indices, code_dim)
    assert set(codes.unique().tolist()) == {-1.0, 1.0}
    assert torch.equal(codes_to_indices(codes), indices)
    assert len({tuple(c) for c in codes.tolist()}) == 2**code_dim
    # channel 0 is the least significant bit
    assert codes[1].tolist() == [1.0] + [-1.0] * (code_dim - 1)
    assert codes[2 ** (code_dim - 1)].tolist() == [-1.0] * (code_dim - 1) + [1.0]


def test_quantize_sign_zero_negative_and_straight_through():
    latent = torch.tensor([[0.3, -0.2, 0.0, 2.0]], requires_grad=True)
    quantized, indices = quantize(latent)
    assert quantized.tolist() == [[1.0, -1.0, -1.0, 1.0]]
    assert indices.tolist() == [1 + 8]
    (quantized * torch.arange(4.0)).sum().backward()
    assert latent.grad.tolist() == [[0.0, 1.0, 2.0, 3.0]]
    torch.testing.assert_close(commitment_loss(latent.detach()), ((latent.detach() - quantized.detach()) ** 2).mean())


@pytest.mark.parametrize("code_dim,scale", [(5, 0.01), (8, 0.003), (8, 1.0), (11, 0.02)])
def test_bounded_entropy_equals_naive_values_and_gradients(code_dim, scale):
    latent = (torch.randn(2, 13, code_dim) * scale).requires_grad_()
    # chunk_elements tiny: many chunks, to exercise the streaming path
    per_sample, codebook = entropy_terms(latent, temperature=0.01, chunk_elements=64)
    ref_per_sample, ref_codebook = entropy_terms_naive(latent, temperature=0.01)
    torch.testing.assert_close(per_sample, ref_per_sample, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(codebook, ref_codebook, atol=1e-5, rtol=1e-5)
    # gradients in float64, where the naive reference is itself accurate
    latent64 = latent.detach().double().requires_grad_()
    per_sample, codebook = entropy_terms(latent64, temperature=0.01, chunk_elements=64)
    ref_per_sample, ref_codebook = entropy_terms_naive(latent64, temperature=0.01)
    torch.testing.assert_close(per_sample, ref_per_sample, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(codebook, ref_codebook, atol=1e-10, rtol=1e-10)
    grad = torch.autograd.grad(per_sample - codebook, latent64)[0]
    ref_grad = torch.autograd.grad(ref_per_sample - ref_codebook, latent64)[0]
    torch.testing.assert_close(grad, ref_grad, atol=1e-9, rtol=1e-7)


def test_bounded_entropy_equals_naive_at_18_bits():
    latent = torch.randn(3, 18) * 0.005
    per_sample, codebook = entropy_terms(latent, chunk_elements=1 << 16)
    ref_per_sample, ref_codebook = entropy_terms_naive(latent.double())  # float64 reference over 2^18 codes
    torch.testing.assert_close(per_sample.double(), ref_per_sample, atol=2e-5, rtol=0)
    torch.testing.assert_close(codebook.double(), ref_codebook, atol=2e-5, rtol=0)
    # three distinct tokens with near-uniform bits: batch entropy is close to the maximum 18 ln 2
    assert codebook > per_sample
