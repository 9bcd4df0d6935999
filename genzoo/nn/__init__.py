"""Building blocks that several families share, each tested on its own.

Import the module you need (``from genzoo.nn.transformer import Block``):
- ``genzoo.nn.transformer``: CausalSelfAttention, Block, KVCache (GPT, music transformer);
- ``genzoo.nn.gan``: GAN losses (gradient_penalty in fp32 under autocast), DCGAN weight init;
- ``genzoo.nn.utils``: frozen, eval_mode;
- ``genzoo.nn.latent``: the latent protocol (encode / decode / interpolate / attribute vectors)
  that autoencoders and GANs share, and the prior sampler;
- ``genzoo.nn.autoregressive``: one raster loop for pixel models and one token loop for text
  and event models;
- ``genzoo.nn.music``: music notation, rendering (MIDI, WAV, piano rolls) and score parsing.

Like ``genzoo.family`` this is public surface: family modules import only the two of them, torch
and third-party libraries.
"""
