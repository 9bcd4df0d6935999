"""Building blocks that several families share, each tested on its own.

Import the module you need (``from genzoo.nn.transformer import Block``):
- ``genzoo.nn.transformer``: CausalSelfAttention, Block, KVCache (GPT, music transformer);
- ``genzoo.nn.attention_view``: a causal transformer's attention over its own samples, as text
  and as a heat map (``zoo sample --show attention``);
- ``genzoo.nn.autoregressive``: one raster loop for pixel models (PixelCNN, PixelCNN++-style
  mixtures) and one token loop for text and event models (LSTM, GPT, music transformer), plus the
  static-step helpers their fast samplers share (anchor: pytorch-generative's
  ``AutoregressiveModel.sample``);
- ``genzoo.nn.gan``: GAN losses (``gradient_penalty``, computed in fp32 even under autocast) and
  the DCGAN weight init;
- ``genzoo.nn.utils``: ``frozen`` (parameters stop requiring grad, restored after) and
  ``eval_mode``;
- ``genzoo.nn.latent``: the latent protocol autoencoders, VAEs and GANs share (encode / decode /
  reconstruct, prior sampling, lerp / slerp interpolation, attribute vectors, latent scatter);
- ``genzoo.nn.music``: music notation (``notation``), rendering to MIDI / WAV / piano rolls
  (``render``) and score parsing through music21 (``parse``).

Like ``genzoo.family`` this is public surface: family modules import only the two of them, torch
and third-party libraries (tests/test_architecture.py).
"""
