"""Induction scores, direct logit attribution and activation patching (llama_edu.interpretability),
checked on hand-built attention patterns and hand-built models whose answer is known."""

import math

import pytest
import torch

from llama_edu import interpretability as interp
from llama_edu.model import Llama, ModelArgs

L = 5  # block length of the repeated sequences: rows [bos, block, block] of 11 tokens
SEQ = 1 + 2 * L


def pattern(key_of_query) -> torch.Tensor:
    """Attention weights (SEQ, SEQ) with all of query q's weight on key key_of_query(q)."""
    w = torch.zeros(SEQ, SEQ)
    for q in range(SEQ):
        w[q, key_of_query(q)] = 1.0
    return w


# the token at q >= 1 + L is a copy of the token at q - L; the one after that copy is q - L + 1
INDUCTION = pattern(lambda q: q - L + 1 if q > L else 0)
PREVIOUS = pattern(lambda q: max(q - 1, 0))
SAME_TOKEN = pattern(lambda q: q - L if q > L else 0)  # the earlier copy itself


# --- induction ----------------------------------------------------------------------------------


def test_a_perfect_induction_pattern_scores_one_and_a_previous_token_pattern_zero():
    assert interp.induction_score(INDUCTION, L) == 1.0
    assert interp.induction_score(PREVIOUS, L) == 0.0
    assert interp.induction_score(SAME_TOKEN, L) == 0.0
    assert interp.previous_token_score(PREVIOUS, L) == 1.0
    assert interp.previous_token_score(INDUCTION, L) == 0.0
    uniform = torch.softmax(torch.zeros(SEQ, SEQ) + torch.full((SEQ, SEQ), -math.inf).triu(1), -1)
    # query 1 + L + i sees 2 + L + i keys; the mean of 1 / (2 + L + i) over i = 0 .. L - 1
    expected = sum(1 / (2 + L + i) for i in range(L)) / L
    assert interp.induction_score(uniform, L).item() == pytest.approx(expected)


def test_induction_score_keeps_the_leading_axes_and_averages_only_the_second_repeat():
    mixed = torch.stack([INDUCTION, PREVIOUS, 0.5 * INDUCTION + 0.5 * PREVIOUS])  # (3, SEQ, SEQ)
    scores = interp.induction_score(mixed[None].expand(2, 3, SEQ, SEQ), L)
    torch.testing.assert_close(scores, torch.tensor([[1.0, 0.0, 0.5]] * 2))
    # the first repeat does not count: change its rows freely, the score stays 1
    noisy = INDUCTION.clone()
    noisy[: 1 + L] = torch.softmax(torch.randn(1 + L, SEQ), -1)
    assert interp.induction_score(noisy, L) == 1.0
    # a head that is an induction head on half of the second repeat scores 0.5
    half = INDUCTION.clone()
    half[1 + L : 1 + L + 2] = PREVIOUS[1 + L : 1 + L + 2]
    assert interp.induction_score(half, L).item() == pytest.approx(1 - 2 / L)


def test_induction_head_scores_average_over_rows():
    layer0 = torch.stack([INDUCTION, PREVIOUS])[None].repeat(2, 1, 1, 1)  # (rows, heads, ...)
    layer1 = torch.stack([PREVIOUS, INDUCTION])[None].repeat(2, 1, 1, 1)
    layer1[1, 0] = INDUCTION  # row 1 of head (1, 0) is an induction pattern
    scores = interp.induction_head_scores([layer0, layer1], L)
    torch.testing.assert_close(scores, torch.tensor([[1.0, 0.0], [0.5, 1.0]]))
    with pytest.raises(ValueError, match="at least one layer"):
        interp.induction_head_scores([], L)


def test_induction_score_errors():
    with pytest.raises(ValueError, match=r"expected \(\.\.\., 11, 11\)"):
        interp.induction_score(torch.zeros(10, 10), L)
    with pytest.raises(ValueError, match="could not be told apart"):
        interp.induction_score(torch.zeros(5, 5), 2)


def test_repeated_tokens_are_bos_then_one_block_twice():
    pool = [7, 8, 9, 10, 11, 12, 13]
    x = interp.repeated_tokens(20, L, pool, bos_id=1, generator=torch.Generator().manual_seed(0))
    assert x.shape == (20, SEQ) and x.dtype == torch.long
    assert (x[:, 0] == 1).all()
    assert torch.equal(x[:, 1 : 1 + L], x[:, 1 + L :])
    for row in x[:, 1 : 1 + L].tolist():
        assert len(set(row)) == L and set(row) <= set(pool)  # one earlier occurrence each
    assert len({tuple(r) for r in x.tolist()}) > 1  # random blocks, not one block 20 times
    with pytest.raises(ValueError, match="at least length=5 different ids"):
        interp.repeated_tokens(2, L, [3, 4, 5, 6], bos_id=1)
    with pytest.raises(ValueError, match="at least length=5 different ids"):
        interp.repeated_tokens(2, L, [3, 3, 4, 5, 6, 7], bos_id=1)
    with pytest.raises(ValueError, match="n must be"):
        interp.repeated_tokens(0, L, pool, bos_id=1)


def test_repeat_losses_of_a_perfect_copier():
    vocab = 12
    x = interp.repeated_tokens(3, L, range(2, vocab), bos_id=1,
                               generator=torch.Generator().manual_seed(0))
    logits = torch.zeros(3, SEQ, vocab)  # uniform everywhere: a loss of ln(vocab)
    for t in range(L + 1, SEQ - 1):  # predicting tokens L+2 .. 2L: they are in the block
        logits[torch.arange(3), t, x[:, t + 1]] = 100.0
    first, second = interp.repeat_losses(logits, x, L)
    assert first.shape == second.shape == (L,)
    torch.testing.assert_close(first, torch.full((L,), math.log(vocab)))
    # token 0 of the second block cannot be known (nothing says the block will repeat)
    assert second[0].item() == pytest.approx(math.log(vocab))
    torch.testing.assert_close(second[1:], torch.zeros(L - 1), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match=r"shape \(rows, 11\)"):
        interp.repeat_losses(logits, x[:, :-1], L)
    with pytest.raises(ValueError, match="to match the tokens"):
        interp.repeat_losses(logits[:, :-1], x, L)


# --- hand-built models ------------------------------------------------------------------------


def make_model(seed: int = 0, n_layers: int = 2) -> Llama:
    torch.manual_seed(seed)
    args = ModelArgs(dim=16, n_layers=n_layers, n_heads=4, n_kv_heads=2, vocab_size=30,
                     multiple_of=8, max_seq_len=32)
    model = Llama(args).eval()
    with torch.no_grad():  # larger than the init, so that every part matters
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.5)
            else:
                p.uniform_(0.5, 1.5)
    return model


def one_live_head(layer: int, head: int) -> Llama:
    """Every wo is zero except the columns of (layer, head); every feed-forward outputs zero."""
    model = make_model(1)
    d = model.args.head_dim
    with torch.no_grad():
        for i, block in enumerate(model.layers):
            keep = block.attention.wo.weight[:, head * d : (head + 1) * d].clone()
            block.attention.wo.weight.zero_()
            if i == layer:
                block.attention.wo.weight[:, head * d : (head + 1) * d] = keep
            block.feed_forward.w2.weight.zero_()
    return model


TOKENS = torch.randint(0, 30, (3, 9), generator=torch.Generator().manual_seed(2))


def test_residual_parts_add_up_to_the_final_stream_and_keep_the_logits():
    model = make_model()
    parts = interp.residual_parts(model, TOKENS)
    with torch.no_grad():
        trace = model.trace(TOKENS)
    assert parts.heads.shape == (2, 4, 3, 9, 16) and parts.feed_forward.shape == (2, 3, 9, 16)
    torch.testing.assert_close(parts.final, trace.hidden_states[-1])
    torch.testing.assert_close(parts.embedding, model.tok_embeddings(TOKENS).detach())
    torch.testing.assert_close(parts.logits, trace.logits)
    total = parts.embedding + parts.heads.sum((0, 1)) + parts.feed_forward.sum(0)
    torch.testing.assert_close(total, parts.final, atol=1e-5, rtol=1e-5)
    # the first block's attention output is the sum of its heads' parts
    with torch.no_grad():
        h1 = trace.hidden_states[1] - trace.hidden_states[0]  # attention + feed-forward of block 0
    torch.testing.assert_close(parts.heads[0].sum(0) + parts.feed_forward[0], h1,
                               atol=1e-5, rtol=1e-5)


def test_residual_parts_refuses_a_model_whose_parts_do_not_add_up():
    model = make_model()
    handle = model.layers[0].register_forward_hook(
        lambda module, args, out: (out[0] * 2.0, out[1])  # not a sum of its parts any more
    )
    try:
        with pytest.raises(ValueError, match="do not add up"):
            interp.residual_parts(model, TOKENS)
    finally:
        handle.remove()
    with pytest.raises(TypeError, match="expects a Llama"):
        interp.residual_parts(torch.nn.Linear(3, 3), TOKENS)


def test_the_attributions_add_up_to_the_logit_and_the_logit_difference():
    model = make_model()
    parts = interp.residual_parts(model, TOKENS)
    positions, targets, others = torch.tensor([8, 3, 5]), torch.tensor([4, 0, 29]), 7
    one = interp.logit_attribution(model, parts, positions, targets)
    rows = torch.arange(3)
    torch.testing.assert_close(one.total, parts.logits[rows, positions, targets])
    torch.testing.assert_close(one.parts_sum(), one.total, atol=1e-4, rtol=1e-5)
    diff = interp.logit_attribution(model, parts, positions, targets, others)
    torch.testing.assert_close(
        diff.total, parts.logits[rows, positions, targets] - parts.logits[rows, positions, 7])
    torch.testing.assert_close(diff.parts_sum(), diff.total, atol=1e-4, rtol=1e-5)
    assert diff.heads.shape == (2, 4, 3) and diff.feed_forward.shape == (2, 3)
    with pytest.raises(ValueError, match="positions must be in 0 .. 8"):
        interp.logit_attribution(model, parts, 9, 0)
    with pytest.raises(ValueError, match="targets must be token ids"):
        interp.logit_attribution(model, parts, 1, 30)
    with pytest.raises(ValueError, match="one per row"):
        interp.logit_attribution(model, parts, [1, 2], 0)


def test_with_one_live_head_every_other_attribution_is_exactly_zero():
    model = one_live_head(1, 2)
    parts = interp.residual_parts(model, TOKENS)
    att = interp.logit_attribution(model, parts, 8, 3, 11)
    dead = torch.ones(2, 4, dtype=torch.bool)
    dead[1, 2] = False
    assert (att.heads[dead] == 0).all() and (att.feed_forward == 0).all()
    assert (att.heads[1, 2].abs() > 1e-3).all()  # the live head does add something
    torch.testing.assert_close(att.heads[1, 2], att.total - att.embedding, atol=1e-5, rtol=1e-5)


# --- activation patching ----------------------------------------------------------------------


def test_patch_head_replaces_one_head_at_one_position_only():
    corrupt, clean = torch.zeros(2, 5, 12), torch.ones(2, 5, 12)  # 4 heads of width 3
    out = interp.patch_head(corrupt, clean, head=2, position=3, head_dim=3)
    expected = torch.zeros(2, 5, 12)
    expected[:, 3, 6:9] = 1.0
    assert torch.equal(out, expected)
    assert (corrupt == 0).all() and (clean == 1).all()  # the inputs are unchanged
    every = interp.patch_head(corrupt, clean, head=0, position=None, head_dim=3)
    assert (every[..., :3] == 1).all() and (every[..., 3:] == 0).all()
    with pytest.raises(ValueError, match="same shape"):
        interp.patch_head(corrupt, clean[:, :4], 0, 0, 3)
    with pytest.raises(ValueError, match="head 4"):
        interp.patch_head(corrupt, clean, 4, 0, 3)
    with pytest.raises(ValueError, match="position 5"):
        interp.patch_head(corrupt, clean, 0, 5, 3)


def corrupted(tokens: torch.Tensor, where: int = 2) -> torch.Tensor:
    out = tokens.clone()
    out[:, where] = (out[:, where] + 1) % 30
    return out


def test_patching_every_head_of_every_layer_at_a_position_restores_its_logits_exactly():
    model = make_model()
    clean, corrupt = TOKENS, corrupted(TOKENS)
    outputs = interp.head_outputs(model, clean)
    with torch.no_grad():
        clean_logits, corrupt_logits = model(clean), model(corrupt)
        everything = [(layer, head, 7) for layer in range(2) for head in range(4)]
        with interp.patched_heads(model, outputs, everything):
            patched = model(corrupt)
        assert torch.equal(model(corrupt), corrupt_logits)  # the hooks are gone afterwards
    assert not torch.allclose(corrupt_logits[:, 7], clean_logits[:, 7])
    torch.testing.assert_close(patched[:, 7], clean_logits[:, 7], atol=1e-5, rtol=1e-5)
    # before the corrupted token nothing differs; at other later positions it still does
    assert not torch.allclose(patched[:, 5], clean_logits[:, 5])


def test_patching_all_heads_of_a_one_layer_model_restores_the_clean_logits_after_the_change():
    model = make_model(n_layers=1)
    clean, corrupt = TOKENS, corrupted(TOKENS, where=4)
    outputs = interp.head_outputs(model, clean)
    with torch.no_grad(), interp.patched_heads(model, outputs, [(0, h, None) for h in range(4)]):
        patched = model(corrupt)
    with torch.no_grad():
        clean_logits = model(clean)
    keep = [t for t in range(9) if t != 4]  # every position whose own token is the same
    torch.testing.assert_close(patched[:, keep], clean_logits[:, keep], atol=1e-5, rtol=1e-5)


def metric_at(position: int, right: int, wrong: int):
    return lambda logits: logits[:, position, right] - logits[:, position, wrong]


def test_with_one_live_head_only_that_head_restores_anything():
    model = one_live_head(1, 2)
    clean, corrupt = TOKENS, corrupted(TOKENS)
    metric = metric_at(8, 3, 11)
    with torch.no_grad():
        m_clean, m_corrupt = metric(model(clean)), metric(model(corrupt))
    effects = interp.patching_effects(model, clean, corrupt, metric, positions=[None, 8, 1])
    assert effects.shape == (2, 4, 3, 3)
    share = interp.restored_share(effects, m_clean, m_corrupt)
    dead = torch.ones(2, 4, dtype=torch.bool)
    dead[1, 2] = False
    assert (share[dead] == 0).all()  # patching a head whose wo is zero changes nothing
    # the live head is the only route, so patching it everywhere, or at the read
    # position alone, brings the whole clean metric back; at position 1 it restores nothing
    torch.testing.assert_close(share[1, 2, 0], torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(share[1, 2, 1], torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(share[1, 2, 2], torch.zeros(3, dtype=torch.float64))


def test_patching_effects_match_patching_one_head_at_a_time():
    model = make_model()
    clean, corrupt = TOKENS, corrupted(TOKENS)
    metric = metric_at(6, 3, 11)
    per_row = torch.tensor([6, 2, 4])
    effects = interp.patching_effects(model, clean, corrupt, metric, positions=[6, per_row, None])
    outputs = interp.head_outputs(model, clean)
    for layer, head in [(0, 1), (1, 3)]:
        for k, position in enumerate([6, None]):
            with torch.no_grad(), interp.patched_heads(model, outputs, [(layer, head, position)]):
                alone = metric(model(corrupt))
            column = [0, 2][k]  # positions 6 and None are entries 0 and 2
            torch.testing.assert_close(effects[layer, head, column], alone.double(),
                                       atol=1e-5, rtol=1e-5)
        for row in range(3):
            with torch.no_grad(), interp.patched_heads(
                    model, outputs, [(layer, head, int(per_row[row]))]):
                alone = metric(model(corrupt))[row]
            torch.testing.assert_close(effects[layer, head, 1, row], alone.double(),
                                       atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="same shape"):
        interp.patching_effects(model, clean, corrupt[:, :-1], metric)


def test_restored_share():
    assert interp.restored_share(2.0, 2.0, -1.0) == 1.0
    assert interp.restored_share(-1.0, 2.0, -1.0) == 0.0
    assert interp.restored_share(0.5, 2.0, -1.0) == 0.5
    with pytest.raises(ValueError, match="nothing to restore"):
        interp.restored_share(1.0, 3.0, 3.0)
