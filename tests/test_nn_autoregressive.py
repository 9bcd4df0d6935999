"""genzoo.nn.autoregressive on its own: the raster loop, the token loop and the static-step
bookkeeping the families' fast samplers share (the families' tests check them on real nets)."""
import pytest
import torch

from genzoo.family import categorical, uniforms
from genzoo.nn.autoregressive import (TokenSteps, generate, raster_sample, raster_steps,
                                      run_token_steps, window_start)

BLANK = -1


# -- pixels ---------------------------------------------------------------------------------------

def test_raster_loop_fills_pixels_in_raster_order_each_from_the_earlier_ones_only():
    n, C, H, W = 2, 2, 3, 4
    canvas = torch.full((n, C, H, W), BLANK, dtype=torch.long)
    seen = []

    def predict(c):  # not causal itself: it sums the whole canvas, blanks counted as 0
        seen.append(c.clone())
        total = c.clamp(min=0).sum((1, 2, 3), keepdim=True)[:, :1]
        return total.expand(-1, 1, H, W) + 1

    def draw(params):  # (n, 1) -> (n, C): every channel takes the value
        return params.expand(-1, C)

    out = raster_sample(canvas, predict, draw)
    assert out is canvas and len(seen) == H * W
    for k, snapshot in enumerate(seen):
        flat = snapshot.flatten(2)  # (n, C, H*W) in raster order
        assert (flat[:, :, :k] != BLANK).all() and (flat[:, :, k:] == BLANK).all(), k
    # pixel k saw exactly pixels 0..k-1: v_k = 1 + C * (v_0 + ... + v_{k-1}) = (C + 1)^k
    want = torch.tensor([(C + 1) ** k for k in range(H * W)]).view(H, W)
    assert torch.equal(out, want.expand(n, C, H, W))


def test_raster_steps_run_a_row_step_before_the_pixels_of_each_row():
    calls = []
    raster_steps(lambda: calls.append("p"), 3, 2, "cpu", row_step=lambda: calls.append("r"))
    assert "".join(calls) == "rpp" * 3
    calls.clear()
    raster_steps(lambda: calls.append("p"), 3, 2, "cpu")
    assert calls == ["p"] * 6


# -- tokens ---------------------------------------------------------------------------------------

V = 6
END = 0


def bigram(seed=0, end_bias=0.0):
    """Next-token logits from the last token alone: a stateless stand-in for a network."""
    torch.manual_seed(seed)
    table = torch.randn(V, V)
    table[:, END] += end_bias
    return table


def test_generate_honours_max_new_tokens_and_the_seed():
    table = bigram()
    prompt = torch.tensor([[1, 2], [3, 4], [5, 1]])

    def sample(seed, **kw):
        return generate(prompt, lambda seq: table[seq[:, -1]], torch.Generator().manual_seed(seed),
                        7, **kw)
    a, b, c = sample(1), sample(1), sample(2)
    assert a.shape == (3, 2 + 7) and torch.equal(a[:, :2], prompt)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_generate_stops_rows_at_the_end_token_and_the_loop_when_all_have_ended():
    calls = []

    def next_logits(seq):  # row 0 ends at its 2nd new token, row 1 at its 4th
        calls.append(1)
        t = seq.shape[1] - 1
        logits = torch.full((2, V), -1e4)
        logits[:, 3] = 0.0
        if t >= 1:
            logits[0] = -1e4
            logits[0, END] = 0.0
        if t >= 3:
            logits[1] = -1e4
            logits[1, END] = 0.0
        return logits
    out = generate(torch.tensor([[1], [1]]), next_logits, torch.Generator().manual_seed(0), 50,
                   end=END)
    assert out.tolist() == [[1, 3, END, END, END], [1, 3, 3, 3, END]]
    assert len(calls) == 4  # stopped once every row had ended, not after 50 tokens


def test_generate_applies_temperature_and_top_k():
    logits = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0, -2.0]])
    seen = []
    out = generate(torch.zeros(1, 1, dtype=torch.long), lambda seq: logits.expand(300, -1)[:1],
                   torch.Generator().manual_seed(0), 300, temperature=0.5, top_k=2,
                   observe=seen.append)
    assert set(out[0, 1:].tolist()) == {0, 1}  # only the two likeliest
    want = torch.tensor([[4.0, 2.0] + [float("-inf")] * 4])
    assert all(torch.equal(s, want) for s in seen)
    # top_k=1: the argmax, whatever the seed
    greedy = [generate(torch.zeros(1, 1, dtype=torch.long), lambda seq: logits,
                       torch.Generator().manual_seed(s), 5, top_k=1)[0, 1:].tolist() for s in (0, 1)]
    assert greedy == [[0] * 5, [0] * 5]
    # a low temperature concentrates the draws on the likeliest token
    hot, cold = (generate(torch.zeros(1, 1, dtype=torch.long), lambda seq: logits,
                          torch.Generator().manual_seed(0), 300, temperature=t)[0, 1:]
                 for t in (2.0, 0.2))
    assert (cold == 0).sum() > 250 > (hot == 0).sum()


def test_generate_draws_aligned_streams_in_order_with_their_own_temperatures():
    notes, durs = torch.randn(1, 5), torch.randn(1, 3)
    seq = torch.zeros(2, 1, 2, dtype=torch.long)
    seen = []
    out = generate(seq, lambda s: (notes.expand(2, -1), durs.expand(2, -1)),
                   torch.Generator().manual_seed(4), 6, temperature=(0.5, 2.0), observe=seen.append)
    assert out.shape == (2, 7, 2)
    assert torch.allclose(seen[0][0], notes.expand(2, -1) / 0.5)
    assert torch.allclose(seen[0][1], durs.expand(2, -1) / 2.0)
    g = torch.Generator().manual_seed(4)  # the same draws by hand: note, then duration
    first = [categorical(notes.expand(2, -1) / 0.5, g), categorical(durs.expand(2, -1) / 2.0, g)]
    assert torch.equal(out[:, 1], torch.stack(first, -1))
    with pytest.raises(ValueError, match="one stream"):
        generate(seq, lambda s: (notes, durs), torch.Generator(), 2, end=END)


def test_window_keeps_its_last_half_once_it_outgrows_the_context():
    assert window_start(10, 0, 10) == 0
    assert window_start(11, 0, 10) == 6  # the last 5 tokens
    assert window_start(15, 6, 10) == 6
    assert window_start(17, 6, 10) == 12
    assert window_start(3, 0, 1) == 2  # a context of one keeps one token


# -- the static bookkeeping of fast samplers ------------------------------------------------------

class BigramWalk(TokenSteps):
    def __init__(self, table, prompt, u, **kw):
        super().__init__(prompt, u, **kw)
        self.table = table

    def step(self):
        self.draw(self.table.index_select(0, self.last()))


@pytest.mark.parametrize("end_bias", [None, 1.0])
def test_static_steps_draw_what_the_reference_loop_draws(end_bias):
    table = bigram(1, end_bias or 0.0)
    end = END if end_bias is not None else None
    prompt = torch.tensor([[1, 2], [3, 4], [5, 5], [2, 2]])
    T, kw = 40, {"temperature": 1.3, "top_k": 4}
    want = generate(prompt, lambda seq: table[seq[:, -1]], torch.Generator().manual_seed(9), T,
                    end=end, **kw)
    walk = BigramWalk(table, prompt, uniforms(torch.Generator().manual_seed(9), (T, 4), "cpu"),
                      end=end, **kw)
    advanced = []

    def advance(made, most):
        advanced.append(most)
        for _ in range(most):
            walk.step()
        return most
    made = run_token_steps(advance, T, 8, walk.done if end is not None else None)
    got = walk.tokens[:, :2 + made]
    L = want.shape[1]
    assert torch.equal(got[:, :L], want)
    if end is None:
        assert made == T and advanced == [8] * 5
    else:  # stopped at the first look after every row ended; later tokens are end tokens
        assert L < 2 + T and made < T and made % 8 == 0 and made - (L - 2) < 8
        assert (got[:, L:] == END).all()


def test_a_token_step_is_static():
    """On the meta device any read back to the host fails: the step never does one."""
    table = bigram().to("meta")
    prompt = torch.ones(2, 3, dtype=torch.long, device="meta")
    walk = BigramWalk(table, prompt, torch.rand(4, 2).to("meta"), top_k=3, end=END)
    walk.step()
    walk.step()
    assert walk.tokens.shape == (2, 7)
