"""Training throughput of genzoo's StyleGAN2 beside lucidrains' ``stylegan2-pytorch`` (PyPI
``stylegan2_pytorch`` 1.9.0), in one process, interleaved, on the same CPU threads.

    pip download --no-deps stylegan2_pytorch -d whl && unzip whl/stylegan2_pytorch-*.whl -d SITE
    pip install --no-deps --target SITE kornia kornia_rs
    PYTHONPATH=SITE nice .venv/bin/python benchmarks/peers/stylegan2_lucidrains.py --threads 2

Only the networks and one training step are used. Their package imports logging, CLI and
experimental-regulariser libraries at the top (aim, fire, retry, contrastive_learner,
vector_quantize_pytorch) that its networks never call with the defaults used here; they are
stubbed so the heavy ``aim`` need not be installed. The module asserts a CUDA GPU at import and
``StyleGAN2.__init__`` moves to CUDA, so the assertion is passed for the import and the script
builds its S / G / D / AugWrapper and Adams the way that constructor does, on the CPU.

Both sides at 32x32 RGB, batch 32, z = w = 128, 2 mapping layers, DiffAugment
(colour, translation, cutout) on every image D sees, style mixing 0.9:
- "matched widths": their network_capacity=8, fmap_max=64 gives generator widths 64, 64, 32, 16
  at 4..32 px, genzoo's quick preset's (channel_base 512, channel_max 64); their discriminator
  has one block more, so the parameter counts differ (printed);
- "matched params": their capacity picked so their total parameter count is nearest ours.
Each side's own regularisation schedule is kept: ours R1 every 16 steps; theirs a gradient
penalty on reals and fakes every 4 steps (no path-length term before step 5,000 in theirs; ours
has none). Images/s = batch / median step time over interleaved rounds.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
import types


def _stub(name: str, **attrs: object) -> None:
    mod = types.ModuleType(name)
    mod.__dict__.update(attrs)
    sys.modules[name] = mod


class _Unused:
    def __init__(self, *a: object, **k: object) -> None:
        raise RuntimeError("stubbed: not used by the default networks")


_stub("aim", Run=_Unused)
_stub("fire", Fire=_Unused)
_stub("retry", retry=lambda *a, **k: (lambda f: f))
_stub("contrastive_learner", ContrastiveLearner=_Unused)
_stub("vector_quantize_pytorch", VectorQuantize=_Unused)

import torch  # noqa: E402
from torch.optim import Adam  # noqa: E402

import genzoo  # noqa: E402
from genzoo.core.train_config import StepContext, TrainConfig  # noqa: E402

SIZE, BATCH, LATENT = 32, 32, 128


def ours() -> tuple[str, int, object]:
    model = genzoo.create_model("stylegan2-twemoji")  # the quick preset: 32 px
    train = TrainConfig(lr=0.0025, betas=(0.0, 0.99), grad_clip=None)
    opts = model.configure_optimizers(train)
    ctx = StepContext(torch.device("cpu"), "none", None)
    state = {"step": 0}

    def step(x: torch.Tensor) -> None:
        ctx.step = state["step"]
        model.training_step({"x": x}, opts, ctx)
        state["step"] += 1
    return "genzoo", model.num_params(), step


def lucidrains() -> types.ModuleType:
    """Their module asserts torch.cuda.is_available() at import; it is true for that moment."""
    real = torch.cuda.is_available
    torch.cuda.is_available = lambda: True
    try:
        import stylegan2_pytorch.stylegan2_pytorch as L
    finally:
        torch.cuda.is_available = real
    return L


def theirs(capacity: int, fmap_max: int) -> tuple[str, int, object]:
    L = lucidrains()
    S = L.StyleVectorizer(LATENT, 2, lr_mul=0.1)
    G = L.Generator(SIZE, LATENT, capacity, fmap_max=fmap_max)
    D = L.Discriminator(SIZE, capacity, fmap_max=fmap_max)
    D_aug = L.AugWrapper(D, SIZE)
    for m in [*S.modules(), *G.modules(), *D.modules()]:  # their StyleGAN2._init_weights
        if type(m) in {torch.nn.Conv2d, torch.nn.Linear}:
            torch.nn.init.kaiming_normal_(m.weight, a=0, mode="fan_in", nonlinearity="leaky_relu")
    for block in G.blocks:
        for lin in (block.to_noise1, block.to_noise2):
            torch.nn.init.zeros_(lin.weight)
            torch.nn.init.zeros_(lin.bias)
    lr = 2e-4
    G_opt = Adam([*G.parameters(), *S.parameters()], lr=lr, betas=(0.5, 0.9))
    D_opt = Adam(D.parameters(), lr=lr * 2, betas=(0.5, 0.9))
    aug = {"prob": 1.0, "types": ["color", "translation", "cutout"]}
    layers = G.num_layers
    state = {"step": 0}
    n_params = sum(p.numel() for m in (S, G, D) for p in m.parameters())

    def noise_list(n: int, layers: int) -> list:  # their noise_list / mixed_list, without .cuda
        return [(torch.randn(n, LATENT), layers)]

    def mixed_list(n: int, layers: int) -> list:
        tt = int(torch.rand(()).numpy() * layers)
        return noise_list(n, tt) + noise_list(n, layers - tt)

    def step(x: torch.Tensor) -> None:
        # their Trainer.train, one step, gradient_accumulate_every=1, on the CPU
        x = x * 2 - 1
        gp_now = state["step"] % 4 == 0
        get_latents = mixed_list if L.random() < 0.9 else noise_list
        D_opt.zero_grad()
        w = L.styles_def_to_tensor(L.latent_to_w(S, get_latents(BATCH, layers)))
        noise = torch.rand(BATCH, SIZE, SIZE, 1)  # their image_noise, without .cuda
        fake = G(w, noise)
        fake, (fake_out, _) = D_aug(fake.clone().detach(), return_aug_images=True,
                                    input_requires_grad=gp_now, **aug)
        if gp_now:
            x = x.clone().requires_grad_()
        real_out, _ = D_aug(x, **aug)
        loss = L.hinge_loss(fake_out, real_out)
        if gp_now:
            loss = loss + L.gradient_penalty(x, real_out) + L.gradient_penalty(fake, fake_out)
        loss.backward()
        D_opt.step()
        G_opt.zero_grad()
        w = L.styles_def_to_tensor(L.latent_to_w(S, get_latents(BATCH, layers)))
        fake_out, _ = D_aug(G(w, torch.rand(BATCH, SIZE, SIZE, 1)), **aug)
        L.gen_hinge_loss(fake_out, None).backward()
        G_opt.step()
        state["step"] += 1
    return f"stylegan2-pytorch (capacity {capacity}, fmap_max {fmap_max})", n_params, step


def their_params(capacity: int, fmap_max: int) -> int:
    L = lucidrains()
    mods = (L.StyleVectorizer(LATENT, 2), L.Generator(SIZE, LATENT, capacity, fmap_max=fmap_max),
            L.Discriminator(SIZE, capacity, fmap_max=fmap_max))
    return sum(p.numel() for m in mods for p in m.parameters())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=8, help="timed steps per side per round")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.rand(BATCH, 3, SIZE, SIZE)
    mine = ours()
    target = mine[1]
    cap = min(range(2, 33), key=lambda c: abs(their_params(c, 512) - target))
    sides = [mine, theirs(8, 64), theirs(cap, 512)]
    for _, _, step in sides:  # warm-up: allocator, mkldnn primitives
        for _ in range(3):
            step(x)
    times: dict[str, list[float]] = {name: [] for name, _, _ in sides}
    for _ in range(args.rounds):
        for name, _, step in sides:
            t = time.perf_counter()
            for _ in range(args.steps):
                step(x)
            times[name].append((time.perf_counter() - t) / args.steps)
    base = statistics.median(times[mine[0]])
    print(f"torch {torch.__version__}, {args.threads} threads, {SIZE}x{SIZE}, batch {BATCH}, "
          f"{args.rounds} rounds x {args.steps} steps per side (interleaved)")
    for name, n, _ in sides:
        med = statistics.median(times[name])
        print(f"{name:48s} params {n:>9,}  {1000 * med:7.1f} ms/step  {BATCH / med:7.1f} img/s  "
              f"its step time / genzoo's = {med / base:.2f}")


if __name__ == "__main__":
    main()
