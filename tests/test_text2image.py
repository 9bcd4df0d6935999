"""Text to image (genzoo.plugins.text2image, genzoo.nn.captions, genzoo.plugins.captions): the
tokenizer, CLIP's InfoNCE, cross-attention, classifier-free guidance, DDIM and the one-line
errors, on tiny networks (seconds each)."""
from __future__ import annotations

import json
import math

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from genzoo import api
from genzoo.core.data_config import DataConfig
from genzoo.core.sampler import check_inputs
from genzoo.core.sources import load
from genzoo.errors import ConfigError, DataError
from genzoo.nn.captions import CaptionData, caption_tokenizer, tokenize
from genzoo.plugins import text2image as t2i

TINY = {"clip.filters": [4, 8, 8], "clip.width": 16, "clip.embed_dim": 16, "clip.heads": 2,
        "clip.layers": 1, "autoencoder.widths": [4, 8], "unet.widths": [8, 16],
        "unet.heads": 2, "unet.embedding_dim": 8, "steps": 2, "batch_size": 16,
        "clip.batch_size": 16, "log_every": 1}


@pytest.fixture(scope="module")
def digits():
    return load(DataConfig(name="mnist-captions", pad=2), "train")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return api.train("ldm-mnist", "quick", dict(TINY), progress=False,
                     out=tmp_path_factory.mktemp("t2i") / "run")


def tiny_clip(data, **over):
    cfg = {**t2i.CLIP.config_from_data(data), "filters": (8, 16, 16), "width": 32,
           "embed_dim": 32, "heads": 2, "layers": 1, **over}
    clip = t2i.CLIP(t2i.CLIPConfig(**cfg))
    clip.setup(data)
    return clip


# -- captions and the tokenizer ------------------------------------------------------------------
def test_captions_ship_for_digits_fashion_and_emoji(digits):
    assert digits.captions[0][0].startswith("a handwritten ")
    assert digits.class_prompts[7] == "a handwritten seven" and len(digits.captions) == len(digits)
    fashion = load(DataConfig(name="fashion-captions"), "test")
    assert "a photo of a sneaker" in fashion.class_prompts
    emoji = load(DataConfig(name="twemoji-captions", size=32), "train")
    assert "grinning face" in {c[0] for c in emoji.captions}
    assert "a food & drink emoji" in emoji.class_prompts and "an activities emoji" in emoji.class_prompts
    both = load(DataConfig(name="mnist-fashion-captions", pad=2), "test")
    assert set(both.groups) == {"digits", "fashion"} and len(both.classes) == 20


def test_tokenizer_round_trip_and_unknown_words(digits):
    tok = caption_tokenizer(digits.captions)
    assert tok.vocab[:2] == ["", "[UNK]"] and len(tok) == 19
    for text in ("a handwritten seven", "a drawing of the number three"):
        assert tok.decode(tok.encode(text)) == text
    ids = tokenize(tok, ["a handwritten seven", "a purple seven", ""], 6)
    assert ids.shape == (3, 6) and ids[2].eq(0).all()
    assert ids[1, 1] == tok.unk_id and ids[0, 3:].eq(0).all()  # unknown -> [UNK], padding 0
    assert caption_tokenizer(list(reversed(digits.captions))).vocab == tok.vocab  # deterministic
    clip = tiny_clip(digits)
    with pytest.raises(ConfigError, match="only unknown words"):
        clip.prompt_tokens("purple elephant")
    with pytest.raises(ConfigError, match="at most 6"):
        clip.prompt_tokens("a handwritten seven a handwritten seven a")


def test_folder_with_captions_jsonl_is_captioned_data(tmp_path):
    names = []
    for i in range(8):
        Image.new("L", (8, 8), 30 * i).save(tmp_path / f"img{i}.png")
        names.append(f"img{i}.png")
    rows = [{"file": n, "caption": f"a grey square number {i}"} for i, n in enumerate(names)]
    (tmp_path / "captions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = load(DataConfig(name="folder", path=str(tmp_path), root=str(tmp_path / "root"),
                           test_fraction=0.25), "train")
    assert isinstance(data, CaptionData) and len(data) == 6
    shade = {int(data.x[i].float().mean().round()): data.captions[i][0] for i in range(len(data))}
    assert all(shade[30 * i] == f"a grey square number {i}" for i in range(8) if 30 * i in shade)
    (tmp_path / "captions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:-3]))
    with pytest.raises(DataError, match="has no caption for img"):
        load(DataConfig(name="folder", path=str(tmp_path), root=str(tmp_path / "root"),
                        test_fraction=0.25), "train")


# -- CLIP ---------------------------------------------------------------------------------------
def test_info_nce_is_symmetric_and_counts_identical_captions():
    g = torch.Generator().manual_seed(0)
    a = torch.nn.functional.normalize(torch.randn(6, 4, generator=g), dim=1)
    b = torch.nn.functional.normalize(torch.randn(6, 4, generator=g), dim=1)
    same = torch.eye(6, dtype=torch.bool)
    same[0, 1] = same[1, 0] = True
    scale = torch.tensor(10.0)
    assert torch.allclose(t2i.info_nce(a, b, scale, same)[0], t2i.info_nce(b, a, scale, same)[0])
    # distinct captions: the plain CLIP loss
    logits = scale * a @ b.T
    plain = 0.5 * (torch.nn.functional.cross_entropy(logits, torch.arange(6))
                   + torch.nn.functional.cross_entropy(logits.T, torch.arange(6)))
    assert torch.allclose(t2i.info_nce(a, b, scale)[0], plain)


def test_info_nce_falls_on_real_captioned_data(digits):
    torch.manual_seed(0)
    clip = tiny_clip(digits)
    opt = torch.optim.Adam(clip.parameters(), 3e-3)
    g = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(30):
        batch = digits.to_device(digits.batch(torch.randint(len(digits), (64,), generator=g)), "cpu")
        loss = clip.loss(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < first - 0.3, (first, last)
    figures = t2i.clip_figures(clip, load(DataConfig(name="mnist-captions", pad=2), "test"))
    assert {"zero_shot_accuracy", "recall@1/image_to_text", "recall@5/text_to_image"} <= set(figures)
    assert figures["zero_shot_accuracy"] > 0.2  # chance: 0.1


# -- the conditional U-Net ------------------------------------------------------------------------
def unet_and_inputs(seed=0):
    torch.manual_seed(seed)
    unet = t2i.LatentUNet(t2i.UNetConfig(latent_channels=2, latent_size=4, context_dim=8,
                                         widths=(8, 16), heads=2, embedding_dim=8))
    for p in unet.parameters():  # the zero-initialised outputs would hide the text's effect
        torch.nn.init.normal_(p, std=0.2) if p.ndim > 1 else None
    unet.eval()
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 2, 4, 4, generator=g)
    n = torch.full((3,), 0.7)
    ctx = torch.randn(3, 5, 8, generator=g)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    return unet, x, n, ctx, mask


def test_cross_attention_reads_the_text_and_ignores_padding():
    unet, x, n, ctx, mask = unet_and_inputs()
    with torch.no_grad():
        base = unet(x, n, ctx, mask)
        other = ctx.clone()
        other[:, 1] += 1.0  # a real token of every caption changes
        assert (unet(x, n, other, mask) - base).abs().amax(dim=(1, 2, 3)).min() > 1e-4
        padded = ctx.clone()
        padded[~mask] = 100.0  # only padding changes
        assert torch.allclose(unet(x, n, padded, mask), base, atol=1e-6)


def test_guidance_zero_is_unconditional_one_conditional_and_one_batch_equals_two_passes():
    unet, x, n, ctx, mask = unet_and_inputs()
    empty = torch.zeros_like(ctx)
    umask = torch.zeros_like(mask)
    umask[:, 0] = True
    cond, uncond = (ctx, mask), (empty, umask)
    with torch.no_grad():
        eps_c, eps_u = unet(x, n, *cond), unet(x, n, *uncond)
        assert torch.allclose(t2i.guided_noise(unet, x, n, cond, uncond, 1.0), eps_c)
        assert torch.allclose(t2i.guided_noise(unet, x, n, cond, uncond, 0.0), eps_u)
        for w in (0.5, 3.0):
            one = t2i.guided_noise(unet, x, n, cond, uncond, w, batched=True)
            two = t2i.guided_noise(unet, x, n, cond, uncond, w, batched=False)
            assert torch.allclose(one, two, atol=1e-5)
            assert torch.allclose(one, eps_u + w * (eps_c - eps_u), atol=1e-5)


def test_caption_dropout_is_ten_percent():
    unet = t2i.LatentUNet(t2i.UNetConfig(widths=(8, 16), heads=2, embedding_dim=8))
    torch.manual_seed(0)
    dropped = unet.drop_captions(["a handwritten seven"] * 20_000)
    share = sum(t == "" for t in dropped) / len(dropped)
    assert abs(share - 0.1) < 0.01, share


# -- a whole (tiny) pipeline run ------------------------------------------------------------------
def test_pipeline_trains_samples_deterministically_and_records_the_prompt(tiny_run):
    loaded = api.load_run(tiny_run.path)
    assert set(loaded.model.parts) == {"clip", "autoencoder", "unet"}
    a = loaded.sample(4, seed=3, inputs={"prompt": "a handwritten seven"})
    b = loaded.sample(4, seed=3, inputs={"prompt": "a handwritten seven"})
    c = loaded.sample(4, seed=4, inputs={"prompt": "a handwritten seven"})
    assert a.images.shape == (4, 1, 32, 32) and torch.equal(a.images, b.images)
    assert not torch.equal(a.images, c.images)
    assert a.extras["prompt"] == "prompt: a handwritten seven (guidance 3)"
    assert "unconditional" in loaded.sample(2, seed=0, inputs={"prompt": ""}).extras["prompt"]
    assert "a handwritten nine" in loaded.sample(10, seed=0).extras["prompt"]
    tok = json.loads((tiny_run.path / "components/clip/artifacts.json").read_text())["artifacts"]
    assert "handwritten" in tok["tokenizer"]["vocab"]  # the tokenizer is a run artifact


def cli(*args):
    from genzoo.cli import cli as main
    return CliRunner().invoke(main, [str(a) for a in args])


def one_line_error(res, pattern):
    assert res.exit_code != 0, res.output
    lines = [line for line in res.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in res.output, res.output
    assert pattern in lines[0], lines[0]


def test_bad_prompts_and_guidance_are_one_line(tiny_run, tmp_path):
    run = tiny_run.path
    one_line_error(cli("sample", run, "--prompt", "purple elephant", "--n", 2), "only unknown words")
    one_line_error(cli("sample", run, "--prompt", "the digit seven", "--set", "guidance=nan", "--n", 2),
                   "guidance")  # the option parser refuses nan before the sampler sees it
    one_line_error(cli("sample", run, "--prompt", "the digit seven", "--set", "guidance=-1", "--n", 2),
                   "guidance must be a number >= 0")
    res = cli("sample", run, "--prompt", "", "--n", 2, "--out", tmp_path / "u")
    assert res.exit_code == 0 and "unconditional" in res.output, res.output
    res = cli("sample", run, "--prompt", "a handwritten seven", "--n", 2, "--out", tmp_path / "s")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "s.png").exists()
    assert "a handwritten seven" in (tmp_path / "s-prompt.txt").read_text()
    # --prompt on a run without text conditioning: the sampler takes no prompt, in one line
    from genzoo.plugins.diffusion import DDIMSampler
    with pytest.raises(ConfigError, match="takes inputs: none"):
        check_inputs(DDIMSampler(), "ddm", {"prompt": "a red apple"})


def test_guidance_options_are_checked():
    for bad in (math.nan, -0.5, math.inf):
        with pytest.raises(ConfigError, match="guidance"):
            t2i.GuidedDDIMSampler(guidance=bad)
    assert t2i.GuidedDDIMSampler(guidance=0).options.guidance == 0


@pytest.mark.slow
def test_eval_reports_zero_shot_retrieval_and_clip_score(tiny_run):
    from genzoo.core.metrics import evaluate
    ev = evaluate(str(tiny_run.path), metrics=("loss",))
    for key in ("clip/loss", "autoencoder/mse", "unet/loss", "clip/zero_shot_accuracy",
                "clip/recall@1/image_to_text", "clip/recall@5/text_to_image", "clip_score@w3"):
        assert key in ev, key
