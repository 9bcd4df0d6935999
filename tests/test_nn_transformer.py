"""genzoo.nn.transformer on its own: causal attention, the KV cache (append and static modes)."""
import pytest
import torch

from genzoo.nn.transformer import Block, CausalSelfAttention, KVCache, causal_mask


def blocks(layers=2, norm="pre", dim=16, heads=2, head_dim=8):
    torch.manual_seed(0)
    return torch.nn.ModuleList(Block(dim, heads, head_dim, 32, 0.0, norm) for _ in range(layers)
                               ).double().eval()


def run(layers, x, caches=None):
    weights = []
    for i, block in enumerate(layers):
        x, w = block(x, caches[i] if caches is not None else None, need_weights=True)
        weights.append(w)
    return x, weights


def test_causal_mask_lets_a_new_position_see_itself_and_every_earlier_one():
    m = causal_mask(3, 2, torch.device("cpu"))
    assert m.shape == (3, 5)
    assert m.tolist() == [[True, True, True, False, False],
                          [True, True, True, True, False],
                          [True, True, True, True, True]]


@pytest.mark.parametrize("module", ["attention", "pre", "post"])
def test_a_position_never_sees_later_ones(module):
    torch.manual_seed(0)
    net = CausalSelfAttention(16, 2, 8) if module == "attention" else blocks(1, module)[0]
    net = net.double().eval()
    x = torch.randn(2, 7, 16, dtype=torch.float64, requires_grad=True)
    for t in (0, 3, 6):
        x.grad = None
        out, weights = net(x, need_weights=True)
        out[:, t].sum().backward()
        g = x.grad.abs().sum((0, 2))
        assert (g[t + 1:] == 0).all() and (g[: t + 1] > 0).all(), (t, g)
        assert (weights[:, :, t, t + 1:] == 0).all()  # no attention to the future
        assert torch.allclose(weights.sum(-1), torch.ones_like(weights.sum(-1)))


@pytest.mark.parametrize("norm", ["pre", "post"])
def test_kv_cache_decoding_equals_a_full_forward(norm):
    layers = blocks(2, norm)
    x = torch.randn(3, 9, 16, dtype=torch.float64)
    full, wf = run(layers, x)
    caches = [KVCache(12) for _ in layers]
    head, _ = run(layers, x[:, :4], caches)  # a prompt at once, then one position at a time
    assert torch.allclose(head, full[:, :4])
    for t in range(4, 9):
        y, w = run(layers, x[:, t:t + 1], caches)
        assert torch.allclose(y[:, 0], full[:, t])
        assert torch.allclose(w[-1][:, :, 0], wf[-1][:, :, t, : t + 1])
    assert len(caches[0]) == 9
    two, _ = run(layers, x[:, :2], [KVCache(12) for _ in layers])  # two new positions at once
    assert torch.allclose(two, full[:, :2])


def test_static_put_mode_equals_append_mode():
    layers = blocks(2)
    x = torch.randn(2, 8, 16, dtype=torch.float64)
    append = [KVCache(8) for _ in layers]
    static = [KVCache(8) for _ in layers]
    run(layers, x[:, :3], append)
    run(layers, x[:, :3], static)
    pos = torch.tensor([3])  # one device-held position every static cache shares
    for cache in static:
        cache.pos = pos
    for t in range(3, 8):
        a, wa = run(layers, x[:, t:t + 1], append)
        s, ws = run(layers, x[:, t:t + 1], static)
        pos.add_(1)
        assert torch.allclose(a, s)
        assert torch.allclose(ws[-1][..., : t + 1], wa[-1])  # the whole buffer, later positions
        assert (ws[-1][..., t + 1:] == 0).all()              # masked out
    assert torch.equal(static[0].k, append[0].k) and len(static[0]) == 3  # put never counts


def test_a_full_cache_refuses_more_positions():
    cache = KVCache(4)
    k = torch.zeros(1, 2, 3, 8)
    cache.append(k, k)
    with pytest.raises(ValueError, match="holds 4 positions; 6 asked for"):
        cache.append(k, k)
    cache.reset()
    assert len(cache) == 0
