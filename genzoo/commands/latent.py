"""``zoo reconstruct / interpolate / latent-plot / attribute``: genzoo.nn.latent's tools on a
trained RUN of any latent family (autoencoder, VAE, GAN). Grids and plots are written as PNGs.

Only click is imported here; torch and the run's family load inside the commands.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import click


def _run_options(f: Any) -> Any:
    f = click.option("--no-ema", is_flag=True, help="Use raw weights even when EMA weights exist.")(f)
    f = click.option("--device", default="cpu", show_default=True)(f)
    f = click.option("--out", type=click.Path(), help="PNG path (default: inside RUN/samples/).")(f)
    f = click.option("--seed", default=0, show_default=True, help="Picks the images / prior draws.")(f)
    return f


def _data_options(split: str) -> Any:
    def wrap(f: Any) -> Any:
        f = click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
                         help="Data setting for this command, e.g. limit=500 (default: the run's).")(f)
        f = click.option("--split", default=split, show_default=True,
                         type=click.Choice(["train", "test"]))(f)
        f = click.option("--data", "data_name",
                         help="Dataset name or folder:PATH (default: the run's dataset).")(f)
        return f
    return wrap


def _load(run: str, device: str, no_ema: bool) -> Any:
    from genzoo import api
    return api.load_run(run, ema=not no_ema, device=device)


def _data(loaded: Any, data_name: str | None, sets: tuple[str, ...], split: str) -> Any:
    """The run's data settings (so images come at the size it was trained on), with --data and
    --set applied on top."""
    from genzoo.core import config as configlib
    from genzoo.core.data import DataConfig, ImageData, load
    from genzoo.errors import DataError
    cfg = dict(loaded.config.get("data", {}))
    if data_name:
        if data_name.startswith("folder:"):
            cfg.update(name="folder", path=data_name[len("folder:"):])
        else:
            cfg.update(name=data_name, path=None)
    cfg.update({k.removeprefix("data."): v for k, v in configlib.parse_set(sets).items()})
    data = load(configlib.build(DataConfig, cfg, what="data"), split)
    if not isinstance(data, ImageData):
        raise DataError(f"dataset {cfg.get('name')!r} is not an image dataset")
    return data


def _pick(n_total: int, n: int, seed: int) -> Any:
    import torch
    return torch.randperm(n_total, generator=torch.Generator().manual_seed(seed))[:n]


def _out(loaded: Any, out: str | None, default: str) -> Path:
    return Path(out) if out else loaded.run.samples_dir / default


def _what(loaded: Any, command: str) -> str:
    return f"`zoo {command}` on {loaded.config.get('name', '?')} ({loaded.path})"


@click.command()
@click.argument("run", type=click.Path())
@click.option("--n", default=16, show_default=True, help="Images to show.")
@_data_options("test")
@_run_options
def reconstruct(run: str, n: int, data_name: str | None, split: str, sets: tuple[str, ...],
                seed: int, out: str | None, device: str, no_ema: bool) -> None:
    """Show inputs above their reconstructions decode(encode(x)), and how far they are.

    \b
    Examples:
      zoo reconstruct runs/vae-fashion-20261125-101500
      zoo reconstruct runs/vae-faces-20261125-101500 --data folder:~/faces --n 32
    """
    from genzoo import api
    from genzoo.nn import latent
    if n < 1:
        raise click.BadParameter("must be >= 1", param_hint="--n")
    loaded = _load(run, device, no_ema)
    latent.require_encoder(loaded.model, _what(loaded, "reconstruct"))
    data = _data(loaded, data_name, sets, split)
    x = data.images(_pick(len(data), n, seed))
    per_row = min(8, len(x))
    grid = latent.reconstruction_grid(x, latent.reconstruct(loaded.model, x), per_row)
    path = api.save_grid(grid, _out(loaded, out, f"reconstruct-{split}.png"), nrow=per_row)
    err = latent.reconstruction_error(loaded.model, data.images(slice(0, 2000)))
    click.echo(f"reconstruction MSE {err['mse']:.4f} per pixel on {min(len(data), 2000)} {split} "
               f"images; the mean image scores {err['mean_image_mse']:.4f} "
               f"({err['ratio']:.1f}x worse)")
    click.echo(f"wrote {len(x)} inputs (odd rows) and reconstructions (even rows) to {path}")


@click.command()
@click.argument("run", type=click.Path())
@click.option("--pairs", default=4, show_default=True, help="Start/end pairs (grid rows per method).")
@click.option("--steps", default=9, show_default=True, help="Points per path, ends included.")
@click.option("--method", default="both", show_default=True,
              type=click.Choice(["both", "linear", "spherical"]))
@click.option("--prior", "from_prior", is_flag=True,
              help="Morph between prior samples even when the model has an encoder.")
@click.option("--temperature", default=1.0, show_default=True, help="For prior endpoints.")
@_data_options("test")
@_run_options
def interpolate(run: str, pairs: int, steps: int, method: str, from_prior: bool, temperature: float,
                data_name: str | None, split: str, sets: tuple[str, ...], seed: int,
                out: str | None, device: str, no_ema: bool) -> None:
    """Morph between two latent points, linearly and along the sphere (slerp), as a grid.

    With an encoder (autoencoder, VAE) the endpoints are encoded images, shown at both ends of
    each row; without one (GANs), or with --prior, they are draws from the prior.

    \b
    Examples:
      zoo interpolate runs/vae-faces-20261125-101500
      zoo interpolate runs/dcgan-20261125-101500 --method spherical --pairs 6 --seed 3
    """
    import torch
    from genzoo import api
    from genzoo.nn import latent
    if pairs < 1:
        raise click.BadParameter("must be >= 1", param_hint="--pairs")
    if steps < 2:
        raise click.BadParameter("must be >= 2", param_hint="--steps")
    loaded = _load(run, device, no_ema)
    model = loaded.model
    latent.require_latent(model, _what(loaded, "interpolate"))
    methods = ("linear", "spherical") if method == "both" else (method,)
    ends = None
    g = torch.Generator().manual_seed(seed)
    if latent.has_encoder(model) and not from_prior:
        data = _data(loaded, data_name, sets, split)
        if len(data) < 2 * pairs:
            raise click.BadParameter(f"the {split} split has only {len(data)} images",
                                     param_hint="--pairs")
        x = data.images(_pick(len(data), 2 * pairs, seed))
        z0, z1 = latent.endpoints(model, pairs, g, images=x)
        ends = (x[:pairs], x[pairs:])
        source = "encoded"
    else:
        z0, z1 = latent.endpoints(model, pairs, g, temperature=temperature)
        source = "prior"
    grid = latent.interpolation_grid(model, z0, z1, steps, methods, ends)
    row = steps + (2 if ends else 0)
    path = api.save_grid(grid, _out(loaded, out, f"interpolate-{source}-seed{seed}.png"), nrow=row)
    click.echo(f"wrote {pairs} {source} pair(s) x {' and '.join(methods)} rows of {steps} steps"
               + (" (inputs at both ends)" if ends else "") + f" to {path}")


@click.command("latent-plot")
@click.argument("run", type=click.Path())
@click.option("--limit", default=2000, show_default=True, help="At most this many images.")
@click.option("--color-by", help="Colour by this attribute instead of the dataset's labels.")
@_data_options("test")
@_run_options
def latent_plot(run: str, limit: int, color_by: str | None, data_name: str | None, split: str,
                sets: tuple[str, ...], seed: int, out: str | None, device: str, no_ema: bool) -> None:
    """Scatter the encoded images in 2-D, coloured by label (PCA when the latent has > 2 dims).

    \b
    Examples:
      zoo latent-plot runs/vae-fashion-20261125-101500
      zoo latent-plot runs/vae-faces-20261125-101500 --color-by "Smileys & Emotion"
    """
    from genzoo.nn import latent
    loaded = _load(run, device, no_ema)
    latent.require_encoder(loaded.model, _what(loaded, "latent-plot"))
    data = _data(loaded, data_name, sets, split)
    idx = _pick(len(data), limit, seed).sort().values
    z = latent.encode(loaded.model, data.images(idx))
    labels, classes = None, list(data.classes)
    if color_by:
        labels = latent.attribute_mask(data, color_by)[idx].long()
        classes = [f"not {color_by}", color_by]
    elif data.y is not None:
        labels = data.y[idx]
    name = loaded.config.get("name", "")
    path = latent.latent_scatter(z, _out(loaded, out, f"latent-{split}.png"), labels, classes,
                                 title=f"{name}: {len(z)} {split} images, {z.shape[1]}-d latent"
                                       + (" (PCA)" if z.shape[1] > 2 else ""))
    click.echo(f"wrote a scatter of {len(z)} {split} embeddings to {path}")


@click.command()
@click.argument("run", type=click.Path())
@click.option("--attribute", "attribute", required=True,
              help='e.g. Smiling (CelebA), "Smileys & Emotion" (twemoji).')
@click.option("--scales", default="-3,-1,0,1,3", show_default=True,
              help="Multiples of the attribute vector added to each face.")
@click.option("--n", default=5, show_default=True, help="Faces to move (grid rows).")
@click.option("--limit", default=5000, show_default=True,
              help="Training images used to estimate the vector.")
@click.option("--unit", is_flag=True, help="Scale the vector to length 1 (as the book's code does).")
@_data_options("test")
@_run_options
def attribute(run: str, attribute: str, scales: str, n: int, limit: int, unit: bool,
              data_name: str | None, split: str, sets: tuple[str, ...], seed: int,
              out: str | None, device: str, no_ema: bool) -> None:
    """Latent arithmetic: add mean(z | attribute) - mean(z | not attribute) to encoded faces.

    The vector comes from up to --limit training images; each grid row shows a --split image,
    then its decoding moved by each of --scales times the vector.

    \b
    Examples:
      zoo attribute runs/vae-faces-20261125-101500 --attribute Smiling --scales -3,-1,0,1,3
      zoo attribute runs/vae-faces-20261125-101500 --attribute "Smileys & Emotion" --unit
    """
    import re
    from genzoo import api
    from genzoo.nn import latent
    factors = latent.parse_scales(scales)
    loaded = _load(run, device, no_ema)
    model = loaded.model
    latent.require_encoder(model, _what(loaded, "attribute"))
    train = _data(loaded, data_name, sets, "train")
    has = latent.attribute_mask(train, attribute)
    idx = _pick(len(train), limit, seed)
    z = latent.encode(model, train.images(idx))
    vector = latent.attribute_vector(z, has[idx], attribute, unit=unit)
    shown = _data(loaded, data_name, sets, split)
    x = shown.images(_pick(len(shown), n, seed))
    grid = latent.attribute_grid(model, x, vector, factors)
    slug = re.sub(r"[^A-Za-z0-9]+", "-", attribute).strip("-") or "attribute"
    path = api.save_grid(grid, _out(loaded, out, f"attribute-{slug}.png"), nrow=1 + len(factors))
    pos = int(has[idx].sum())
    click.echo(f"{attribute}: {pos} with, {len(idx) - pos} without, of {len(idx)} training images; "
               f"|vector| = {float(vector.norm()):.3f}")
    click.echo(f"wrote {len(x)} rows (input, then scales {', '.join(f'{s:g}' for s in factors)}) "
               f"to {path}")


COMMANDS = (reconstruct, interpolate, latent_plot, attribute)
