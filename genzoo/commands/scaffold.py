"""``zoo new-plugin NAME [--out DIR]``: write a third-party genzoo plugin package that installs and
trains as it is: pyproject.toml with the ``genzoo`` entry point, plugin.py (the hooks),
model.py (a family using only ``genzoo.family``), a test and a README. Only click is imported
at top level."""
from __future__ import annotations

import re
from pathlib import Path

import click

NAME = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
MAX_NAME = 40


def check_name(name: str) -> None:
    """A name that is a distribution name (genzoo-NAME), a module (genzoo_NAME) and a family, and
    whose family and model (NAME-fashion) are not taken: else one line."""
    from genzoo.errors import ConfigError
    if not NAME.match(name) or len(name) > MAX_NAME:
        raise ConfigError(f"plugin name {name[:60]!r} is not valid: use 1 to {MAX_NAME} lowercase "
                          "letters, digits and single hyphens, starting with a letter "
                          "(e.g. my-pixels); it becomes the package genzoo_NAME")
    from genzoo.core.registry import registry
    reg = registry()
    if name in reg.families:
        raise ConfigError(f"plugin name {name!r} is taken: a family of that name is registered "
                          f"by {reg.families[name].plugin}; choose another")
    if f"{name}-fashion" in reg.models:
        raise ConfigError(f"plugin name {name!r} is taken: its model {name}-fashion exists "
                          f"({reg.models[name + '-fashion'].plugin}); choose another")


def scaffold(name: str, out: Path) -> list[Path]:
    """Write the package into `out` (new or empty); returns the files written."""
    from genzoo._version import __version__
    from genzoo.commands.scaffold_templates import FILES
    from genzoo.errors import ConfigError
    check_name(name)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"--out {out} exists and is not an empty folder; give a new one")
    module = "genzoo_" + name.replace("-", "_")
    values = {"name": name, "module": module, "family": name,
              "Model": "".join(p.capitalize() for p in name.split("-")),
              "genzoo_version": __version__}
    written = []
    for rel, template in FILES.items():
        path = out / rel.format(**values)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(template.format(**values), encoding="utf-8")
        written.append(path)
    return written


@click.command("new-plugin")
@click.argument("name")
@click.option("--out", type=click.Path(), help="Folder to create (default ./genzoo-NAME); must "
              "be new or empty.")
def new_plugin(name: str, out: str | None) -> None:
    """Write a genzoo plugin package named NAME that installs and trains as it is: the family
    NAME (model.py, using only genzoo.family), the model NAME-fashion (plugin.py), the
    entry point (pyproject.toml), a test and a README.

    \b
    Example:
      zoo new-plugin my-pixels && pip install -e genzoo-my-pixels && zoo run my-pixels-fashion
    """
    folder = Path(out) if out else Path(f"genzoo-{name}")
    files = scaffold(name, folder)
    for path in files:
        click.echo(f"wrote {path}")
    click.echo(f"next:  pip install -e {folder} && zoo list '{name}*' && zoo run {name}-fashion")


COMMANDS = [new_plugin]
