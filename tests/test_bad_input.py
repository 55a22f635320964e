"""Bad inputs a learner may plausibly give, and the error each one gets (issue 14).

Read BAD_INPUTS as a table: what is called -> which exception -> a fragment of its message.
Every message says what was wrong, what was expected and what to do. STILL_WORKS lists
near-misses that are valid inputs and must keep working.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

import llama_edu
from llama_edu import attention as att
from llama_edu import ffn, generate, norm, rope
from llama_edu.model import Llama, ModelArgs
from llama_edu.tokenizer import SentencePieceTokenizer, train_sentencepiece

NAN, INF = float("nan"), float("inf")
SMALL = dict(dim=16, n_layers=1, n_heads=2, vocab_size=32, multiple_of=8, max_seq_len=32)
SP_MODEL = Path(llama_edu.__file__).parent / "assets" / "tinytales" / "tokenizer.model"
FLOAT_ONLY = r"expects a floating-point tensor, got torch.int64; convert with x\.float\(\)"


def args(**changes: object) -> Callable[[], object]:
    """ModelArgs(**SMALL) with some fields changed (a callable, for the table)."""
    return lambda: ModelArgs(**{**SMALL, **changes})


def small_model() -> Llama:
    torch.manual_seed(0)
    return Llama(ModelArgs(**SMALL)).eval()


class NaNAfterTwo(nn.Module):
    """A 'model' whose logits are fine for the first new token and NaN from the second on."""

    def __init__(self) -> None:
        super().__init__()
        self.args = ModelArgs(**SMALL)
        self.unused = nn.Parameter(torch.zeros(1))

    def forward(self, tokens: torch.Tensor, cache: object = None) -> torch.Tensor:
        logits = torch.zeros(tokens.shape[0], tokens.shape[1], self.args.vocab_size)
        return logits.fill_(NAN) if tokens.shape[1] > 2 else logits


MODEL = small_model()
ATTN = att.Attention(dim=8, n_heads=2)
COS, SIN = rope.rope_cos_sin(4, 3)
X8 = torch.randn(1, 3, 8)
Q = torch.randn(1, 2, 3, 4)
INT_Q = torch.randint(0, 3, (1, 2, 3, 4))
INT_X = torch.arange(8).reshape(1, 8)
LLAMA31 = {
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
}

P = pytest.param
BAD_INPUTS = [
    # --- ModelArgs (llama_edu/model.py) ---------------------------------------------------
    P(args(n_kv_heads=0), ValueError, r"n_kv_heads must be a positive int .* got 0", id="args-kv0"),
    P(args(n_kv_heads=-2), ValueError, r"n_kv_heads must be a positive int", id="args-kv-neg"),
    P(args(n_kv_heads=3), ValueError, r"n_heads=2 is not divisible by n_kv_heads=3", id="args-kv3"),
    P(
        args(rope_theta=0),
        ValueError,
        r"rope_theta must be a finite number > 0, got 0",
        id="args-theta0",
    ),
    P(
        args(rope_theta=-1.0),
        ValueError,
        r"rope_theta must be .* > 0, got -1\.0",
        id="args-theta-neg",
    ),
    P(args(rope_theta=NAN), ValueError, r"rope_theta must be a finite number", id="args-theta-nan"),
    P(args(rope_theta="1e4"), ValueError, r"rope_theta .* got '1e4'", id="args-theta-str"),
    P(
        args(norm_eps=-1e-5),
        ValueError,
        r"norm_eps must be a finite number >= 0",
        id="args-eps-neg",
    ),
    P(args(norm_eps=NAN), ValueError, r"norm_eps must be a finite number >= 0", id="args-eps-nan"),
    P(args(dim=0), ValueError, r"ModelArgs\.dim must be a positive int, got 0", id="args-dim0"),
    P(args(dim=16.0), ValueError, r"ModelArgs\.dim must be a positive int", id="args-dim-float"),
    P(args(n_heads=0), ValueError, r"n_heads must be a positive int", id="args-heads0"),
    P(args(n_layers=0), ValueError, r"n_layers must be a positive int", id="args-layers0"),
    P(
        args(n_layers=True),
        ValueError,
        r"n_layers must be a positive int, got True",
        id="args-layers-bool",
    ),
    P(args(vocab_size=0), ValueError, r"vocab_size must be a positive int", id="args-vocab0"),
    P(args(multiple_of=0), ValueError, r"multiple_of must be a positive int", id="args-multiple0"),
    P(args(max_seq_len=0), ValueError, r"max_seq_len must be a positive int", id="args-seq0"),
    P(args(n_heads=3), ValueError, r"dim=16 is not divisible by n_heads=3", id="args-dim%heads"),
    P(args(dim=24, n_heads=8), ValueError, r"head_dim .* = 3 is odd", id="args-odd-head"),
    P(
        args(ffn_dim_multiplier=0),
        ValueError,
        r"ffn_dim_multiplier must be .* > 0",
        id="args-ffn-multiplier-0",
    ),
    P(
        args(tie_embeddings="no"),
        ValueError,
        r"tie_embeddings must be True or False",
        id="args-tie-str",
    ),
    P(
        args(rope_scaling={"factor": 8}),
        ValueError,
        r"rope_scaling is missing",
        id="args-scaling-keys",
    ),
    P(
        args(rope_scaling={**LLAMA31, "high_freq_factor": 1.0}),
        ValueError,
        r"high_freq_factor=1\.0 must be larger than low_freq_factor",
        id="args-scaling-low=high",
    ),
    # --- norms (llama_edu/norm.py) ----------------------------------------------------------
    P(lambda: norm.rms_norm(INT_X, torch.ones(8)), TypeError, FLOAT_ONLY, id="rms-int"),
    P(
        lambda: norm.rms_norm(INT_X > 3, torch.ones(8)),
        TypeError,
        r"got torch\.bool",
        id="rms-bool",
    ),
    P(lambda: norm.RMSNorm(8)(INT_X), TypeError, FLOAT_ONLY, id="RMSNorm-int"),
    P(
        lambda: norm.rms_norm(torch.randn(8), torch.ones(8, dtype=torch.long)),
        TypeError,
        r"got torch\.int64; convert with weight\.float\(\)",
        id="rms-int-weight",
    ),
    P(
        lambda: norm.rms_norm([1.0, 2.0], torch.ones(2)),
        TypeError,
        r"torch\.tensor\(x\)",
        id="rms-list",
    ),
    P(
        lambda: norm.rms_norm(torch.randn(8), torch.ones(8), -1e-5),
        ValueError,
        r"eps must be",
        id="rms-eps-negative",
    ),
    P(lambda: norm.layer_norm(INT_X, torch.ones(8)), TypeError, FLOAT_ONLY, id="ln-int"),
    P(lambda: norm.LayerNorm(8)(INT_X), TypeError, FLOAT_ONLY, id="LayerNorm-int"),
    P(
        lambda: norm.layer_norm(torch.randn(2, 8), torch.ones(4)),
        ValueError,
        r"weight has shape \(4,\) but x has shape \(2, 8\).*shape \(8,\)",
        id="ln-weight-shape",
    ),
    P(
        lambda: norm.layer_norm(torch.randn(2, 8), torch.ones(1)),
        ValueError,
        r"weight has shape \(1,\) .* shape \(8,\)",
        id="ln-weight-broadcast",
    ),
    P(
        lambda: norm.layer_norm(torch.randn(2, 8), torch.ones(8), torch.zeros(3)),
        ValueError,
        r"bias has shape \(3,\) .* shape \(8,\)",
        id="ln-bias-shape",
    ),
    # --- RoPE (llama_edu/rope.py) -----------------------------------------------------------
    P(lambda: rope.apply_rope(INT_Q), TypeError, FLOAT_ONLY, id="rope-int"),
    P(lambda: rope.apply_rope_half(INT_Q), TypeError, FLOAT_ONLY, id="rope-half-int"),
    P(lambda: rope.rotate_pairs(INT_Q, COS, SIN), TypeError, FLOAT_ONLY, id="rotate-int"),
    P(
        lambda: rope.rotate_pairs(torch.randn(1, 3, 2, 4), COS.long(), SIN.long()),
        TypeError,
        r"got torch\.int64; convert with cos\.float\(\)",
        id="rotate-int-cos",
    ),
    P(
        lambda: rope.rotate_pairs(torch.randn(1, 3, 2, 4), COS.double(), SIN),
        TypeError,
        r"cos is torch\.float64 but sin is torch\.float32",
        id="rotate-cos-sin-dtypes",
    ),
    P(
        lambda: rope.apply_rope_half(torch.randn(3, 2, 4)),
        ValueError,
        r"apply_rope_half expects x of shape \(batch, seq, n_heads, head_dim\), got \(3, 2, 4\)",
        id="rope-half-3d",
    ),
    P(lambda: rope.apply_rope([[1.0]]), TypeError, r"torch\.Tensor, got list", id="rope-list"),
    P(
        lambda: rope.apply_rope(torch.randn(1, 3, 2, 4), theta=0),
        ValueError,
        r"rope_theta \(the RoPE base\) must be a finite number > 0, got 0",
        id="rope-theta0",
    ),
    P(
        lambda: rope.apply_rope(torch.randn(1, 3, 2, 4), start_pos=-2),
        ValueError,
        r"start_pos must be an int >= 0, got -2",
        id="rope-start-neg",
    ),
    P(
        lambda: rope.rope_frequencies(0),
        ValueError,
        r"head_dim must be a positive int",
        id="rope-head-dim-0",
    ),
    P(
        lambda: rope.rope_cos_sin(4, -1),
        ValueError,
        r"seq_len must be an int >= 0",
        id="rope_cos_sin-seq-neg",
    ),
    P(
        lambda: rope.apply_llama3_scaling(torch.arange(1, 4), LLAMA31),
        TypeError,
        r"got torch\.int64; convert with freqs\.float\(\)",
        id="llama3-int-freqs",
    ),
    P(
        lambda: rope.apply_llama3_scaling(rope.rope_frequencies(8), {**LLAMA31, "factor": 0}),
        ValueError,
        r"factor must be a finite number > 0, got 0",
        id="llama3-factor0",
    ),
    P(
        lambda: rope.sinusoidal_positions(-1, 4),
        ValueError,
        r"seq_len must be",
        id="sinusoidal-seq-neg",
    ),
    P(
        lambda: rope.interleaved_to_half(torch.randn(8, 4), 0),
        ValueError,
        r"n_heads must be a positive int, got 0",
        id="to-half-0-heads",
    ),
    P(
        lambda: rope.interleaved_to_half(torch.randn(8), 2),
        ValueError,
        r"expected a 2-D weight",
        id="to-half-1d",
    ),
    # --- attention (llama_edu/attention.py) -------------------------------------------------
    P(
        lambda: att.attention(INT_Q, INT_Q, INT_Q),
        TypeError,
        r"got torch\.int64.*q\.float",
        id="attention-int",
    ),
    P(
        lambda: att.sdpa_attention(INT_Q, INT_Q, INT_Q),
        TypeError,
        r"got torch\.int64",
        id="sdpa-int",
    ),
    P(
        lambda: att.attention_weights(INT_Q, INT_Q),
        TypeError,
        r"got torch\.int64",
        id="attention_weights-int",
    ),
    P(
        lambda: att.attention(Q, Q.double(), Q),
        TypeError,
        r"q torch\.float32, k torch\.float64, v torch\.float32; they must share one dtype",
        id="attention-mixed",
    ),
    P(
        lambda: att.attention(Q, Q, Q, torch.ones(3, 3, dtype=torch.bool).tril()),
        TypeError,
        r"mask must be an additive float tensor .* got torch\.bool",
        id="attention-bool-mask",
    ),
    P(
        lambda: att.sdpa_attention(Q, Q, Q, torch.ones(3, 3, dtype=torch.bool).tril()),
        TypeError,
        r"mask must be an additive float tensor",
        id="sdpa-bool-mask",
    ),
    P(
        lambda: att.attention_weights(torch.randn(2, 3, 4), torch.randn(2, 3, 5)),
        ValueError,
        r"same head_dim",
        id="weights-head-dim",
    ),
    P(
        lambda: att.repeat_kv(torch.randn(2, 3, 4), 2),
        ValueError,
        r"\(batch, seq, n_kv",
        id="repeat_kv-3d",
    ),
    P(
        lambda: att.repeat_kv(Q, 2.0),
        ValueError,
        r"n_rep must be an int >= 1",
        id="repeat_kv-float",
    ),
    P(lambda: att.causal_mask(2.5), ValueError, r"an int seq_len >= 1", id="mask-float"),
    P(
        lambda: att.Attention(8, 2, 0),
        ValueError,
        r"n_kv_heads must be a positive int",
        id="Attention-kv0",
    ),
    P(lambda: att.Attention(6, 2), ValueError, r"head_dim .* = 3 is odd", id="Attention-odd"),
    P(lambda: ATTN(X8.long(), COS, SIN), TypeError, FLOAT_ONLY, id="Attention-int-x"),
    P(
        lambda: ATTN(X8[0], COS, SIN),
        ValueError,
        r"expects x of shape \(batch, seq, dim\) = \(batch, seq, 8\), got \(3, 8\)",
        id="Attention-rank",
    ),
    P(
        lambda: ATTN(torch.randn(1, 3, 6), COS, SIN),
        ValueError,
        r"\(batch, seq, 8\), got \(1, 3, 6\)",
        id="Attention-width",
    ),
    P(
        lambda: ATTN(X8.double(), COS, SIN),
        TypeError,
        r"x is torch\.float64 but the layer's weights are torch\.float32",
        id="Attention-x-float64",
    ),
    P(
        lambda: ATTN(X8, COS.double(), SIN),
        TypeError,
        r"cos is torch\.float64 but sin is torch\.float32",
        id="Attention-cos-sin-dtypes",
    ),
    P(
        lambda: ATTN(X8, COS.long(), SIN.long()),
        TypeError,
        r"got torch\.int64; convert with cos\.float\(\)",
        id="Attention-int-cos",
    ),
    # --- feed-forward (llama_edu/ffn.py) ----------------------------------------------------
    P(
        lambda: ffn.swiglu(INT_X[:, :4], torch.randn(6, 4), torch.randn(4, 6), torch.randn(6, 4)),
        TypeError,
        FLOAT_ONLY,
        id="swiglu-int",
    ),
    P(lambda: ffn.FeedForward(8, 6)(INT_X), TypeError, FLOAT_ONLY, id="FeedForward-int"),
    # --- tokenizer (llama_edu/tokenizer.py) -------------------------------------------------
    P(
        lambda: SentencePieceTokenizer(SP_MODEL).encode("a\ud800b"),
        ValueError,
        r"lone surrogate U\+D800 at index 1",
        id="sp-encode-surrogate",
    ),
    P(
        lambda: SentencePieceTokenizer(SP_MODEL).pieces("a\ud800b"),
        ValueError,
        r"lone surrogate U\+D800",
        id="sp-pieces-surrogate",
    ),
    P(
        lambda: SentencePieceTokenizer(SP_MODEL).piece_to_id("\ud800"),
        ValueError,
        r"lone surrogate U\+D800",
        id="sp-piece_to_id-surrogate",
    ),
    # --- generation (llama_edu/generate.py) -------------------------------------------------
    P(
        lambda: generate.generate(MODEL, [1, 2], 3, stop_ids="12"),
        ValueError,
        r"stop_ids must be token ids .* got the string '12'",
        id="gen-stop-str",
    ),
    P(
        lambda: generate.generate(MODEL, [1], 3, stop_ids=[3.5]),
        ValueError,
        r"3\.5 is not",
        id="gen-stop-float",
    ),
    P(
        lambda: generate.generate(MODEL, [1], 3, stop_ids=True),
        ValueError,
        r"stop_ids",
        id="gen-stop-bool",
    ),
    P(
        lambda: generate.beam_search(MODEL, [1, 2], 2, 3, stop_ids="2"),
        ValueError,
        r"got the string '2'",
        id="beam-stop-str",
    ),
    P(
        lambda: generate.generate(MODEL, [1, 2], 3, temperature="0.5"),
        ValueError,
        r"temperature must be a finite number >= 0 .* got '0\.5' \(a str",
        id="gen-temperature-str",
    ),
    P(
        lambda: generate.generate(MODEL, [1], 3, temperature=None),
        ValueError,
        r"got None",
        id="gen-temperature-none",
    ),
    P(
        lambda: generate.beam_search(MODEL, [1, 2], 2, 3, length_penalty=NAN),
        ValueError,
        r"length_penalty must be a finite number, got nan",
        id="beam-length-penalty-nan",
    ),
    P(
        lambda: generate.beam_search(MODEL, [1], 2, 3, length_penalty=INF),
        ValueError,
        r"length_penalty must be a finite number, got inf",
        id="beam-length-penalty-inf",
    ),
    P(
        lambda: generate.beam_search(MODEL, [1], True, 3),
        ValueError,
        r"beam_width",
        id="beam-width-bool",
    ),
    P(
        lambda: generate.generate(NaNAfterTwo(), [1, 2], 5),
        ValueError,
        r"at step 1 \(new token 2\) the model gave logits that are NaN in row 0",
        id="gen-nan-logits-greedy",
    ),
    P(
        lambda: generate.generate(NaNAfterTwo(), [1, 2], 5, temperature=1.0),
        ValueError,
        r"at step 1 \(new token 2\) .* NaN",
        id="gen-nan-logits-sampling",
    ),
    P(lambda: list(generate.stream(NaNAfterTwo(), [1, 2], 5)), ValueError, r"NaN", id="stream-nan"),
    P(
        lambda: generate.beam_search(NaNAfterTwo(), [1, 2], 2, 5),
        ValueError,
        r"at step 1 \(new token 2\) .* NaN",
        id="beam-nan-logits",
    ),
    P(
        lambda: generate.top_p_filter(torch.zeros(4), 0.9),
        ValueError,
        r"sum to 0 in row 0 \(all zeros\), which is no distribution",
        id="top-p-zero-probs",
    ),
    P(
        lambda: generate.top_p_filter(torch.tensor([[0.5, 0.5], [0.0, 0.0]]), 1.0),
        ValueError,
        r"sum to 0 in row 1",
        id="top-p-zero-row-in-batch",
    ),
    P(
        lambda: generate.top_p_filter(torch.tensor([2.0, -1.0, 0.5]), 0.9),
        ValueError,
        r"negative values; these look like logits.*torch\.softmax",
        id="top-p-given-logits",
    ),
    P(
        lambda: generate.top_p_filter(torch.tensor([0.5, NAN]), 0.9),
        ValueError,
        r"NaN",
        id="top-p-nan",
    ),
    P(
        lambda: generate.sample_top_p(torch.zeros(4), 0.9),
        ValueError,
        r"sum to 0",
        id="sample-top-p-zero-probs",
    ),
    P(lambda: generate.top_p_filter([0.2, 0.8], 0.9), TypeError, r"torch\.Tensor", id="top-p-list"),
    P(
        lambda: generate.top_p_filter(torch.zeros(0), 0.9),
        ValueError,
        r"at least one",
        id="top-p-empty",
    ),
    P(
        lambda: generate.top_k_filter(torch.tensor([1, 2, 3]), 2),
        TypeError,
        r"got torch\.int64; convert with logits\.float\(\)",
        id="top-k-int",
    ),
    P(
        lambda: generate.top_k_filter(torch.tensor(1.0), 2),
        ValueError,
        r"got shape \(\)",
        id="top-k-0d",
    ),
    P(
        lambda: generate.next_token_distribution(torch.tensor([1.0, NAN]), 1.0),
        ValueError,
        r"got logits that are NaN in row 0",
        id="distribution-nan",
    ),
    P(
        lambda: generate.next_token_distribution(torch.full((3,), -INF), 1.0),
        ValueError,
        r"-inf everywhere",
        id="distribution-all-masked",
    ),
    P(
        lambda: generate.next_token_distribution(torch.zeros(3), "1"),
        ValueError,
        r"temperature must be",
        id="distribution-temperature-str",
    ),
    P(
        lambda: generate.kv_cache_bytes("tiny", 10),
        TypeError,
        r"expects a ModelArgs",
        id="kv_cache_bytes-name",
    ),
    P(
        lambda: generate.kv_cache_bytes(MODEL.args, 2.5),
        ValueError,
        r"needs ints seq_len >= 0",
        id="kv_cache_bytes-float",
    ),
]


@pytest.mark.parametrize(("call", "error", "message"), BAD_INPUTS)
def test_bad_input_gets_a_clear_error(
    call: Callable[[], object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        call()


def test_train_sentencepiece_reports_lone_surrogates(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"lone surrogate U\+D800"):
        train_sentencepiece("hello world \ud800 " * 200, 40, tmp_path)
    assert list(tmp_path.iterdir()) == []  # nothing written


# --- near misses that are valid and must keep working ---------------------------------------


def test_zero_logits_are_a_uniform_distribution() -> None:
    # top_p_filter takes probabilities (a zero row has none); logits of zeros are uniform.
    probs = generate.next_token_distribution(torch.zeros(4), 1.0, top_k=4, top_p=1.0)
    torch.testing.assert_close(probs, torch.full((4,), 0.25))
    assert (generate.top_k_filter(torch.zeros(4), 2) == 0).sum() == 2


def test_top_p_filter_accepts_unnormalised_counts() -> None:
    torch.testing.assert_close(
        generate.top_p_filter(torch.tensor([1, 1, 2]), 1.0), torch.tensor([0.25, 0.25, 0.5])
    )


def test_some_masked_logits_are_fine() -> None:
    logits = torch.tensor([0.0, -INF, 0.0])
    torch.testing.assert_close(
        generate.next_token_distribution(logits, 1.0), torch.tensor([0.5, 0.0, 0.5])
    )


def test_stop_ids_as_int_tensor_or_numpy_like_ids_still_work() -> None:
    assert generate.generate(MODEL, [1, 2], 3, stop_ids=torch.tensor([3, 4])) == generate.generate(
        MODEL, [1, 2], 3, stop_ids=[3, 4]
    )
    assert generate.generate(MODEL, [1, 2], 3, stop_ids=torch.tensor(3)) == generate.generate(
        MODEL, [1, 2], 3, stop_ids=3
    )


def test_low_precision_and_float64_inputs_still_work() -> None:
    x = torch.randn(1, 3, 2, 4)
    for dtype in (torch.bfloat16, torch.float64):
        assert rope.apply_rope(x.to(dtype)).dtype == dtype  # float32 tables, any float x
        assert norm.rms_norm(x.to(dtype), torch.ones(4, dtype=dtype)).dtype == dtype
    layer = att.Attention(dim=8, n_heads=2).to(torch.bfloat16)
    assert layer(X8.bfloat16(), COS, SIN).dtype == torch.bfloat16  # float32 cos/sin are fine
    model = small_model().to(torch.bfloat16)
    assert torch.isfinite(model(torch.tensor([[1, 2, 3]]))).all()


def test_valid_edge_values_of_model_args() -> None:
    ModelArgs(**{**SMALL, "norm_eps": 0, "rope_theta": 500000, "n_kv_heads": 1})
    ModelArgs(**{**SMALL, "rope_scaling": LLAMA31})
    assert math.isfinite(generate.beam_search_candidates(MODEL, [1], 2, 2, -0.5)[0][1])


def test_numpy_integers_still_count_as_ints() -> None:
    np = pytest.importorskip("numpy")
    x = torch.randn(1, 3, 2, 4)
    torch.testing.assert_close(rope.apply_rope(x, start_pos=np.int64(3)), rope.apply_rope(x, 3))
    assert rope.rope_frequencies(np.int64(4)).shape == (2,)
