"""checks.attention_module: the chapter 05 capstone (attention with RoPE, GQA and a KV cache)."""

import math
import time

import pytest
import torch
from torch import nn

from llama_edu import checks
from llama_edu.attention import Attention, KVCache, causal_mask, repeat_kv
from llama_edu.rope import rope_cos_sin


class EinsumAttention(nn.Module):
    """Written differently: complex-number RoPE, repeat_interleave, einsum, a hand-written cache."""

    def __init__(self, dim, n_heads, n_kv_heads):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, dim // n_heads
        self.wq = nn.Linear(dim, dim, bias=False)
        self.wk = nn.Linear(dim, n_kv_heads * self.head_dim, bias=False)
        self.wv = nn.Linear(dim, n_kv_heads * self.head_dim, bias=False)
        self.wo = nn.Linear(dim, dim, bias=False)

    def forward(self, x, cos, sin, mask=None, cache=None, layer=0, start_pos=0):
        b, s, _ = x.shape
        turn = torch.complex(cos, sin)[None, :, None, :]  # (1, s, 1, d/2)

        def rope(t):
            pairs = torch.view_as_complex(t.float().reshape(*t.shape[:-1], -1, 2).contiguous())
            return torch.view_as_real(pairs * turn).flatten(-2)

        q = rope(self.wq(x).view(b, s, self.n_heads, self.head_dim))
        k = rope(self.wk(x).view(b, s, self.n_kv_heads, self.head_dim))
        v = self.wv(x).view(b, s, self.n_kv_heads, self.head_dim)
        if cache is not None:  # written by hand instead of cache.store
            cache.k[layer, :b, start_pos : start_pos + s] = k
            cache.v[layer, :b, start_pos : start_pos + s] = v
            k = cache.k[layer, :b, : start_pos + s]
            v = cache.v[layer, :b, : start_pos + s]
        n_rep = self.n_heads // self.n_kv_heads
        k, v = k.repeat_interleave(n_rep, dim=2), v.repeat_interleave(n_rep, dim=2)
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(self.head_dim)
        if mask is not None:
            scores = scores + mask
        out = torch.einsum("bhqk,bkhd->bqhd", scores.softmax(dim=-1), v)
        return self.wo(out.reshape(b, s, -1))


class Mistaken(nn.Module):
    """A plain module whose forward makes one chosen mistake."""

    mistake = ""

    def __init__(self, dim, n_heads, n_kv_heads):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, dim // n_heads
        self.wq = nn.Linear(dim, dim, bias=False)
        self.wk = nn.Linear(dim, n_kv_heads * self.head_dim, bias=False)
        self.wv = nn.Linear(dim, n_kv_heads * self.head_dim, bias=False)
        self.wo = nn.Linear(dim, dim, bias=False)

    def forward(self, x, cos, sin, mask=None, cache=None, layer=0, start_pos=0):
        wrong = self.mistake
        b, s, _ = x.shape
        q = self.wq(x).view(b, s, self.n_heads, self.head_dim)
        k = self.wk(x).view(b, s, self.n_kv_heads, self.head_dim)
        v = self.wv(x).view(b, s, self.n_kv_heads, self.head_dim)
        q = rotate(q, cos, sin)
        if wrong != "keys not rotated":
            k = rotate(k, cos, sin)
        if cache is not None and wrong != "cache not used":
            where = 0 if wrong == "start_pos ignored" else start_pos
            k, v = cache.store(0 if wrong == "layer ignored" else layer, where, k, v)
        n_rep = self.n_heads // self.n_kv_heads
        if wrong == "kv heads tiled":
            k, v = k.repeat(1, 1, n_rep, 1), v.repeat(1, 1, n_rep, 1)
        else:
            k, v = repeat_kv(k, n_rep), repeat_kv(v, n_rep)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        scale = 1.0 if wrong == "not scaled" else 1 / math.sqrt(self.head_dim)
        scores = q @ k.transpose(-2, -1) * scale
        if mask is not None and wrong != "mask ignored":
            scores = scores + mask
        out = (scores.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, s, -1)
        return out if wrong == "wo forgotten" else self.wo(out)


def rotate(t, cos, sin):
    even, odd = t[..., 0::2], t[..., 1::2]
    c, s = cos[:, None, :], sin[:, None, :]
    return torch.stack((even * c - odd * s, even * s + odd * c), dim=-1).flatten(-2)


def mistaken(name):
    return type("Wrong", (Mistaken,), {"mistake": name})


class NotYet(nn.Module):
    def __init__(self, dim, n_heads, n_kv_heads):
        super().__init__()
        raise NotImplementedError("Exercise: replace this line with your solution")


@pytest.mark.parametrize("cls", [Attention, EinsumAttention, mistaken("")])
def test_correct_modules_pass(cls, capsys):
    start = time.perf_counter()
    checks.attention_module(cls)
    assert time.perf_counter() - start < 10  # runs in every grading, on 2 CPU cores
    assert capsys.readouterr().out.startswith("\u2713 checks.attention_module passed")
    assert checks.results()["attention_module"].status == "passed"


def test_library_module_without_sdpa_passes(capsys):
    cls = lambda dim, h, kv: Attention(dim, h, kv, use_sdpa=False)  # noqa: E731
    checks.attention_module(cls)
    assert "passed" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("mistake", "names_it"),
    [
        ("keys not rotated", "not to the keys"),
        ("kv heads tiled", "0, 1, 0, 1"),
        ("not scaled", "not scaled"),
        ("mask ignored", "mask is ignored"),
        ("wo forgotten", "output projection is missing"),
        ("cache not used", "cache is still empty"),
        ("start_pos ignored", "start_pos is ignored"),
        ("layer ignored", "`layer` argument is ignored"),
    ],
)
def test_typical_mistakes_are_named(mistake, names_it):
    with pytest.raises(checks.CheckFailed) as caught:
        checks.attention_module(mistaken(mistake))
    assert names_it in str(caught.value), str(caught.value)
    assert checks.results()["attention_module"].status == "failed"


def test_decode_that_ignores_the_returned_cache_is_named():
    class OnlyStores(Mistaken):
        def forward(self, x, cos, sin, mask=None, cache=None, layer=0, start_pos=0):
            if cache is None:
                return super().forward(x, cos, sin, mask)
            b, s, _ = x.shape
            k = rotate(self.wk(x).view(b, s, self.n_kv_heads, self.head_dim), cos, sin)
            v = self.wv(x).view(b, s, self.n_kv_heads, self.head_dim)
            cache.store(layer, start_pos, k, v)  # stored, but the result is thrown away
            return super().forward(x, cos, sin, mask)

    with pytest.raises(checks.CheckFailed, match="attends only to itself"):
        checks.attention_module(OnlyStores)


def test_bias_and_wrong_shapes_are_named():
    class WithBias(Mistaken):
        def __init__(self, dim, n_heads, n_kv_heads):
            super().__init__(dim, n_heads, n_kv_heads)
            self.wq = nn.Linear(dim, dim)

    class FullWidthKeys(Mistaken):
        def __init__(self, dim, n_heads, n_kv_heads):
            super().__init__(dim, n_heads, n_kv_heads)
            self.wk = nn.Linear(dim, dim, bias=False)

    with pytest.raises(checks.CheckFailed, match="bias=False"):
        checks.attention_module(WithBias)
    with pytest.raises(checks.CheckFailed, match=r"self\.wk\.weight has shape \(32, 32\)"):
        checks.attention_module(FullWidthKeys)


def test_stub_reports_not_implemented(capsys):
    checks.attention_module(NotYet)
    assert "not implemented yet" in capsys.readouterr().out
    assert checks.results()["attention_module"].status == "not implemented"


def test_the_cases_tell_the_mistakes_apart():
    """The check's inputs are not degenerate: each mistake changes the output a lot."""
    torch.manual_seed(0)
    good = Attention(32, 4, 2)
    x = torch.randn(2, 5, 32)
    cos, sin = rope_cos_sin(8, 5)
    for name in ("keys not rotated", "kv heads tiled", "not scaled", "mask ignored"):
        wrong = mistaken(name)(32, 4, 2)
        wrong.load_state_dict(good.state_dict())
        with torch.no_grad():
            gap = (wrong(x, cos, sin, causal_mask(5)) - good(x, cos, sin, causal_mask(5))).abs()
        assert gap.max() > 1e-3, name
    cache = KVCache(1, 2, 8, 2, 8)
    with torch.no_grad():
        good(x, cos, sin, causal_mask(5), cache=cache)
    assert cache.k.any()
