"""llama_edu.budget: parameter, byte and FLOP accounting against the model and published figures."""

from __future__ import annotations

import dataclasses

import pytest

from llama_edu import budget
from llama_edu.generate import kv_cache_bytes as generate_kv_cache_bytes
from llama_edu.model import ModelArgs, count_params

PRESETS = ["tiny", "llama-7b", "llama2-7b", "llama2-13b", "llama2-70b", "llama3-8b",
           "llama3.2-1b"]


@pytest.mark.parametrize("name", PRESETS)
def test_param_counts_equal_the_model_built_on_the_meta_device(name):
    assert budget.param_counts(name) == count_params(name, breakdown=True)


@pytest.mark.parametrize("name, published", [
    ("llama2-7b", 6_738_415_616),     # Meta's model card: 7B
    ("llama3-8b", 8_030_261_248),     # transformers' LlamaForCausalLM for Meta-Llama-3-8B
    ("llama3.2-1b", 1_235_814_400),   # Llama 3.2 1B, tied embeddings
])
def test_param_counts_of_released_models(name, published):
    assert budget.param_counts(name)["total"] == published


def test_llama3_8b_kv_cache_and_weights_in_bf16():
    # 2 (k and v) x 32 layers x 8 kv heads x 128 dims x 2 bytes
    assert budget.kv_cache_bytes_per_token("llama3-8b", 2) == 131_072
    assert budget.kv_cache_bytes_per_token("llama3-8b", "bf16") == 131_072
    assert budget.kv_cache_bytes("llama3-8b", 8192) == 1_073_741_824  # 1 GiB at full context
    assert budget.kv_cache_bytes_per_token("llama2-7b", "fp16") == 524_288  # 32 kv heads: 4x
    assert budget.weight_bytes("llama3-8b", "bf16") == 16_060_522_496
    assert budget.weight_bytes("llama3-8b", "q4_0") == 8_030_261_248 * 4.5 / 8


def test_will_llama3_8b_fit_on_a_16_gib_card():
    # weights in bf16: 16,060,522,496 bytes = 14.96 GiB; one full context of 8,192 tokens: 1 GiB
    plan = budget.inference_memory("llama3-8b", context=8192, memory_gib=16)
    assert plan["weights"] == 16_060_522_496 and plan["kv_cache"] == 2**30
    assert plan["total"] == 17_134_264_320 and plan["fits"] is True
    assert plan["free"] == 17_179_869_184 - 17_134_264_320 == 45_604_864  # 43.5 MiB to spare
    two = budget.inference_memory("llama3-8b", context=8192, batch_size=2, memory_gib=16)
    assert two["fits"] is False and two["free"] == 45_604_864 - 2**30
    q4 = budget.inference_memory("llama3-8b", 8192, weight_dtype="q4_0", memory_gib=16)
    assert q4["fits"] is True and q4["weights"] == 8_030_261_248 * 18 / 32
    four = budget.inference_memory("llama3-8b", 8192, batch_size=4, weight_dtype="q4_0")
    assert four["kv_cache"] == 4 * 2**30 and "fits" not in four
    with pytest.raises(ValueError, match="memory_gib must be a number of GiB > 0"):
        budget.inference_memory("tiny", 10, memory_gib=0)


@pytest.mark.parametrize("name", ["tiny", "llama2-7b", "llama3-8b"])
def test_kv_cache_bytes_agrees_with_the_generation_module(name):
    args = ModelArgs.from_name(name)
    for context, batch, size in ((1, 1, 2), (100, 3, 4)):
        assert budget.kv_cache_bytes(args, context, batch, size) == generate_kv_cache_bytes(
            args, context, batch, size)


def test_the_kv_cache_of_an_ablation_variant_is_counted_too():
    args = dataclasses.replace(ModelArgs.from_name("tiny"), ffn_type="gelu", norm_type="layernorm")
    # 2 x 4 layers x 2 kv heads x 32 dims x 4 bytes
    assert budget.kv_cache_bytes_per_token(args, "fp32") == 2048


def test_flops_per_token_counts_every_matrix_multiply_and_the_attention():
    # Llama 3 8B: every weight but the embedding table and the norms is in a matrix multiply
    matmul = 8_030_261_248 - 128_256 * 4096 - (2 * 32 + 1) * 4096
    assert budget.flops_per_token("llama3-8b") == 2 * matmul
    # attending to 8,192 positions adds q.k and the weighted sum: 2 * 2 * 4096 per position
    assert budget.flops_per_token("llama3-8b", 8192) == 2 * matmul + 32 * 8192 * 4 * 4096
    # with tied embeddings the embedding matrix is also the output layer's multiply
    tied = budget.param_counts("llama3.2-1b")
    assert budget.flops_per_token("llama3.2-1b") == 2 * (tied["total"] - tied["norms"])


def test_training_flops_and_tokens_per_parameter():
    assert budget.training_flops(8_000_000_000, 15_000_000_000_000) == 720 * 10**21
    assert budget.tokens_per_parameter(15e12, 8e9) == pytest.approx(1875)
    assert budget.CHINCHILLA_TOKENS_PER_PARAM == 20


def test_train_memory_of_a_small_model_by_hand():
    args = ModelArgs(dim=8, n_layers=2, n_heads=2, n_kv_heads=1, vocab_size=10, multiple_of=4,
                     max_seq_len=16)
    # hidden: 2/3 * 4 * 8 = 21 -> rounded up to a multiple of 4 = 24
    assert args.hidden_dim == 24
    n = 10 * 8 + 2 * (8 * 8 + 2 * 8 * 4 + 8 * 8) + 2 * 3 * 8 * 24 + 5 * 8 + 10 * 8
    mem = budget.train_memory_bytes(args, batch_size=3, seq_len=5)
    assert mem["weights"] == mem["gradients"] == 4 * n and mem["optimizer"] == 8 * n
    # per token and block: 4*8 (norms) + 8 + 2*4 (q, k, v) + 8 (attention out) + 2*5 (probs)
    # + 4*24 (feed-forward); then 2*8 + 10 after the blocks
    per_token = 2 * (32 + 16 + 8 + 10 + 96) + 16 + 10
    assert budget.activation_values_per_token(args, 5) == per_token
    assert mem["activations"] == 3 * 5 * per_token * 4
    assert mem["total"] == 16 * n + 60 * per_token
    bf16 = budget.train_memory_bytes(args, 3, 5, weight_dtype="bf16", activation_dtype="bf16")
    assert bf16["weights"] == 2 * n and bf16["activations"] == mem["activations"] / 2


@pytest.mark.parametrize("call, error, words", [
    (lambda: budget.param_counts("llama-9000"), ValueError, "unknown preset"),
    (lambda: budget.param_counts({"dim": 8}), TypeError, "expects a ModelArgs"),
    (lambda: budget.param_counts(dataclasses.replace(ModelArgs.from_name("tiny"),
                                                      ffn_type="gelu")), ValueError,
     "counts Llama's own layout"),
    (lambda: budget.weight_bytes("tiny", "int3"), ValueError, "unknown format 'int3'"),
    (lambda: budget.weight_bytes("tiny", 0), ValueError, "bytes per value > 0"),
    (lambda: budget.kv_cache_bytes("tiny", -1), ValueError, "context must be a whole number"),
    (lambda: budget.kv_cache_bytes("tiny", 10, batch_size=1.5), ValueError, "batch_size"),
    (lambda: budget.train_memory_bytes("tiny", seq_len=0), ValueError, "seq_len"),
    (lambda: budget.train_memory_bytes("tiny", optimizer_bytes_per_param=-8), ValueError,
     "optimizer_bytes_per_param"),
    (lambda: budget.tokens_per_parameter(0, 10), ValueError, "n_tokens must be a number > 0"),
])
def test_bad_input_gets_a_clear_error(call, error, words):
    with pytest.raises(error, match=words):
        call()


def test_fit_report_says_whether_it_fits_and_by_how_much():
    text = budget.fit_report("llama3-8b", 8192, memory_gib=16)
    assert "14.96 GiB" in text and "1.00 GiB" in text and "15.96 GiB" in text
    assert text.endswith("in 16 GiB: fits, 0.04 GiB to spare")  # 45,604,864 bytes
    short = budget.fit_report("llama3-8b", 8192, batch_size=2, memory_gib=16)
    assert short.endswith("does NOT fit: 0.96 GiB short")  # 2 GiB of cache, 0.04 GiB free
    assert "weights (q4_0)" in budget.fit_report("llama2-70b", 4096, weight_dtype="q4_0")
    with pytest.raises(ValueError, match="memory_gib must be a number of GiB > 0"):
        budget.fit_report("tiny", 10, memory_gib=-1)
