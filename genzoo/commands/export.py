"""``zoo export RUN --format onnx|torch-export|hf``: a trained run as files other tools load
(``genzoo.core.export``). Only click is imported here; torch loads inside the command."""
from __future__ import annotations

import click

FORMATS = ("onnx", "torch-export", "hf")  # genzoo.core.export.FORMATS, without importing torch


@click.command("export")
@click.argument("run", type=click.Path())
@click.option("--format", "fmt", required=True, type=click.Choice(FORMATS),
              help="onnx (model.onnx), torch-export (model.pt2) or hf (a Hugging Face model "
                   "folder: config.json, model.safetensors, README.md model card, samples, metrics).")
@click.option("--out", type=click.Path(), help="Folder to write (default RUN/export/FORMAT); an "
              "earlier export there is replaced.")
@click.option("--device", default="cpu", show_default=True, help="Device the network is traced on.")
def export_cmd(run: str, fmt: str, out: str | None, device: str) -> None:
    """Export RUN's network for use outside genzoo: a GAN generator or VAE decoder
    (z -> image), a DDIM denoiser step, a GPT or LSTM step (tokens -> logits), a classifier
    (image -> logits). ONNX and torch.export outputs are checked against torch (onnxruntime /
    torch.export.load) before the folder is moved into place.

    \b
    Examples:
      zoo export runs/dcgan-20261125-101500 --format onnx
      zoo export runs/gpt-20261125-101500 --format torch-export --out gpt-pt2
      zoo export runs/vae-20261125-101500 --format hf --out vae-hub && huggingface-cli upload me/vae vae-hub
    """
    from genzoo.core.export import export_run
    r = export_run(run, fmt, out, device)
    click.echo(f"exported {r['model']} ({r['family']}) as {fmt}: {r['out']}/{r['file']}")
    if r.get("what"):
        click.echo(f"network:  {r['what']}")
    for key in ("inputs", "outputs"):
        for t in r.get(key, []):
            dyn = ", ".join(f"dim {d} {label}" for d, label in t.get("dynamic", {}).items())
            click.echo(f"{key[:-1]:<8}  {t['name']} {t['dtype']} {tuple(t['shape'])}"
                       + (f" (dynamic: {dyn})" if dyn else ""))
    check = r.get("check")
    if check:
        if check.get("checked"):
            click.echo(f"checked:  {check['runtime']} equals torch within {check['atol']:g} + "
                       f"{check['rtol']:g}*|x| (max |diff| {check['max_abs_diff']:.2g})")
        else:
            click.echo(f"not checked: {check['why']}")
    if fmt == "hf":
        click.echo(f"trained by: {r['command']}")
        click.echo(f"upload:   huggingface-cli upload YOU/{r['model']} {r['out']}")


COMMANDS = [export_cmd]
