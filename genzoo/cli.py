"""The ``zoo`` command line. Thin: parses, calls genzoo's API, prints.

Only click, yaml and the registry are imported at start-up; torch and family modules are
imported inside the commands that need them, so ``zoo --help``, ``zoo list`` and ``zoo info``
answer in a fraction of a second.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from genzoo.errors import GenzooError


class ZooGroup(click.Group):
    """Turns a user's mistake into one line and a non-zero exit code: genzoo's own errors, click's
    usage errors, memory that cannot be allocated, a disk that is full or read-only, a number
    too large. Anything else is a bug: its traceback, then a line that says so.
    GENZOO_DEBUG=1 shows the traceback behind every one-line error too."""

    def _plugin_commands(self) -> None:
        _load_plugin_commands(self)  # once per plugin host (the host remembers)

    def get_command(self, ctx: click.Context, name: str) -> Any:
        from genzoo.core.plugins import host
        loaded = getattr(self, "_genzoo_commands_host", None)
        if loaded is not None and loaded is not host():  # plugins reset since: never run stale
            self._plugin_commands()
        cmd = super().get_command(ctx, name)
        if cmd is None:
            self._plugin_commands()
            cmd = super().get_command(ctx, name)
        return cmd

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._plugin_commands()
        return super().list_commands(ctx)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta["genzoo.argv"] = list(args)  # `zoo train --nproc N` relaunches them via torchrun
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as e:  # `zoo --bogus`: one line too
            raise _usage_line(e) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except GenzooError as e:
            raise _one_line(str(e)) from None
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort) as e:
            if isinstance(e, click.UsageError):
                raise _usage_line(e) from None
            raise
        except OSError as e:  # a path the user gave (missing, a folder, too long), a full disk
            message = _os_error_line(e, ctx)
            if message is None:
                _bug(e)
            raise _one_line(message) from None
        except KeyboardInterrupt as e:
            # genzoo's Interrupted (core/signals.py) says which signal and what was saved; exit
            # 128 + signal (130 SIGINT, 143 SIGTERM); the ranks > 0 of a distributed run are quiet
            message = getattr(e, "message", None)
            if message is None:
                run = getattr(e, "run", None)
                message = (f"interrupted; the last checkpoint is kept (continue with: zoo train "
                           f"--resume {run})" if run else "interrupted")
            if message and os.environ.get("RANK", "0").strip() in ("", "0"):
                click.echo(message, err=True)
            sys.exit(128 + int(getattr(e, "signum", 2)))
        except (MemoryError, RuntimeError) as e:  # torch.OutOfMemoryError is a RuntimeError
            message = _memory_line(e, ctx)
            if message is None:
                _bug(e)
            raise _one_line(message) from None
        except (OverflowError, ValueError) as e:
            message = _number_line(e)
            if message is None:
                _bug(e)
            raise _one_line(message) from None
        except Exception as e:
            _bug(e)


def _debug() -> tuple[bool, str]:
    """Whether GENZOO_DEBUG asks for the tracebacks behind one-line errors, and a note for the
    line when its value is neither on nor off. Read only when an error is shown, so a value
    that cannot be used is named on the same line as the error it would have explained
    (and counts as off)."""
    from genzoo.core.env import env_bool
    try:
        return bool(env_bool("GENZOO_DEBUG", False)), ""
    except GenzooError as e:
        return False, f" [{e}]"


class _OneLine(click.ClickException):
    """``Error: MESSAGE`` on one line (newlines in a message become "; "), exit code 1 or 2."""

    def __init__(self, message: str, exit_code: int = 1):
        lines = [line.strip() for line in str(message).splitlines() if line.strip()]
        super().__init__("; ".join(lines) or "error")
        self.exit_code = exit_code


def _one_line(message: str, exit_code: int = 1) -> click.ClickException:
    """The one-line error for `message`; under GENZOO_DEBUG the exception being handled is
    raised instead, with its traceback."""
    debug, note = _debug()
    if debug and sys.exc_info()[1] is not None:
        raise sys.exc_info()[1]
    return _OneLine(message + note, exit_code)


def _usage_line(e: click.UsageError) -> click.ClickException:
    """click's usage error (a bad option value, a missing argument) on one line with where to
    look, instead of the usage block, a blank line and the error; `--help` still shows it all.
    Exit code 2, as click's."""
    if isinstance(e, click.exceptions.NoArgsIsHelpError):
        return e  # `zoo data` with no subcommand: the help is the answer
    where = f" (see: {e.ctx.command_path} --help)" if e.ctx is not None else ""
    return _OneLine(e.format_message().rstrip() + where, exit_code=e.exit_code)


def _bug(e: BaseException) -> None:
    """Not a user's mistake: the traceback, then one line saying it is a bug, exit code 1."""
    import traceback
    traceback.print_exception(type(e), e, e.__traceback__)
    click.echo("zoo: this is a bug in genzoo (or in a plugin), not a mistake in your input; "
               "please report it with the traceback above (GENZOO_DEBUG=1 also shows the "
               "traceback behind one-line errors)" + _debug()[1], err=True)
    sys.exit(1)


_LOWER = {  # what to lower when memory runs out, by command
    "sample": "lower --n, or the sampler's sizes given with --set",
    "run": "lower --batch-size, or the model or data sizes given with --set",
    "train": "lower --batch-size, or the model or data sizes given with --set",
    "bench": "lower --batch-size or --n",
    "eval": "lower --n-samples",
}


def _memory_line(e: BaseException, ctx: click.Context) -> str | None:
    """An allocation that failed, as one line: how much was asked for (from the message), on
    which device, and what to lower; None when `e` is not about memory."""
    import re
    text = str(e)
    torch = sys.modules.get("torch")
    oom = isinstance(e, MemoryError) or (
        torch is not None and isinstance(e, getattr(torch, "OutOfMemoryError", ())))
    if not oom and not re.search(r"out of memory|can't allocate memory|cannot allocate memory|"
                                 r"DefaultCPUAllocator", text, re.IGNORECASE):
        return None
    size = None
    m = re.search(r"tried to allocate (\d+) bytes", text, re.IGNORECASE)
    if m:
        size = _bytes(int(m.group(1)))
    else:
        m = re.search(r"(?:tried to|unable to) allocate ([\d.]+ ?[KMGTP]?i?B)", text, re.IGNORECASE)
        size = m.group(1) if m else None
    device = "GPU " if re.search(r"CUDA|GPU|MPS", text) else ""
    asked = f": tried to allocate {size}" if size else f" ({type(e).__name__})"
    hint = _LOWER.get(ctx.invoked_subcommand or "", "lower the sizes you gave")
    return f"not enough {device}memory{asked}; {hint}"


def _bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n} B"  # not reached


_ENV_ERRNOS = {"ENOSPC": "the disk is full", "EDQUOT": "the disk quota is used up",
               "EROFS": "the file system is read-only", "EACCES": "no permission",
               "EPERM": "not permitted", "EFBIG": "the file is too large for the file system",
               "EIO": "an input/output error", "ENOMEM": "not enough memory",
               "ENAMETOOLONG": "the name is too long"}


def _os_error_line(e: OSError, ctx: click.Context) -> str | None:
    """A path that cannot be read or written, or a disk that is full or read-only, as one line
    naming the path (the error's, else the output the command was writing); None for an
    OSError that no input or machine state explains (a bug)."""
    import errno
    code = errno.errorcode.get(e.errno or -1, "")
    name = e.filename if e.filename is not None else ctx.meta.get("genzoo.writing")
    if e.filename is None and code not in _ENV_ERRNOS:
        return None
    what = e.strerror or _ENV_ERRNOS.get(code) or type(e).__name__
    if code in ("ENOSPC", "EDQUOT"):
        what += " (free some space, or write elsewhere with --out)"
    if name is None:
        return f"{what} ({code}) while writing"
    shown = str(name) if len(str(name)) <= 120 else str(name)[:117] + "..."
    if e.filename2 is not None:
        shown += f" -> {e.filename2}"
    return f"{what}: {shown}"


def _number_line(e: BaseException) -> str | None:
    """A number too large for where it goes (an OverflowError, torch's "Overflow when unpacking
    long" for a seed or size beyond 64 bits) as one line; None for any other ValueError."""
    import re
    text = (str(e).splitlines() or [type(e).__name__])[0][:200]
    if isinstance(e, OverflowError) or re.search(r"overflow|out of range|too large|too big",
                                                 text, re.IGNORECASE):
        return f"a number is too large for where it is used ({text}); use a smaller value"
    return None


def _writing(path: str | os.PathLike) -> None:
    """Note the output a command is writing, named by a full-disk or read-only error whose
    OSError does not carry the path."""
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        ctx.find_root().meta["genzoo.writing"] = str(path)


def _console() -> Any:
    """Rich console; when stdout is not a terminal (``zoo bench > log``) a wide fixed width, so
    tables keep their columns instead of wrapping into 8-character slivers."""
    from rich.console import Console
    console = Console()
    if not console.is_terminal:
        console = Console(width=200)
    return console


def _registry() -> Any:
    from genzoo.core.registry import registry
    return registry()


@click.group(cls=ZooGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="genzoo")
def cli() -> None:
    """genzoo: a zoo of generative models you can list, train, sample and benchmark.

    \b
    Examples:
      zoo list                      # the catalogue
      zoo run pixelcnn              # train the quick preset, then write a sample grid
      zoo train pixelcnn --preset book --set lr=3e-4 --epochs 10
      zoo sample runs/pixelcnn-20261125-101500 --n 64 --sampler naive
      zoo bench pixelcnn --json bench.json
    """


# -- catalogue --------------------------------------------------------------------------------

@cli.command("list")
@click.argument("pattern", required=False)
@click.option("--tag", "tags", multiple=True, help="Only entries with this tag (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--markdown", is_flag=True, help="Print the README's families table (Markdown).")
def list_cmd(pattern: str | None, tags: tuple[str, ...], as_json: bool, markdown: bool) -> None:
    """List models in the registry, optionally filtered by a wildcard PATTERN.

    \b
    Examples:
      zoo list
      zoo list '*cnn*'
      zoo list --tag likelihood --json
    """
    entries = _registry().list(pattern, tags)
    if markdown:
        from genzoo.core.catalogue import markdown_table
        click.echo(markdown_table(entries))
        return
    if as_json:
        click.echo(json.dumps([{
            "name": e.name, "family": e.family, "chapter": e.chapter, "summary": e.summary,
            "dataset": e.dataset.get("name"), "params": e.params, "tags": e.tags,
            "source": e.plugin, "presets": sorted(e.presets)} for e in entries], indent=2))
        return
    from rich.table import Table
    table = Table(title=f"genzoo models ({len(entries)})")
    for col in ("name", "family", "ch.", "dataset", "params", "source"):
        table.add_column(col, no_wrap=True)
    table.add_column("summary", overflow="fold", min_width=20)
    for e in entries:
        params = " / ".join(f"{_human(v)}" for k, v in sorted(e.params.items(), key=lambda kv: kv[0] != "quick"))
        table.add_row(e.name, e.family, str(e.chapter or ""), str(e.dataset.get("name", "")),
                      params, e.plugin, e.summary)
    _console().print(table)
    if not entries:
        click.echo("no models match" + (f" {pattern!r}" if pattern else ""))


def _write_out(path: str, text: str) -> None:
    """An output file the user named (--json): its folder is made; a bad path is one line."""
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text)
    except OSError as e:
        raise click.ClickException(f"cannot write {path}: {e.strerror or e}") from None


def _human(n: int) -> str:
    from genzoo.core.catalogue import human
    return human(n)


@cli.command()
@click.argument("name")
def info(name: str) -> None:
    """Show a model's registry entry: family, dataset, samplers, presets; or, given a run
    folder, what it holds (a pipeline's components with their figures).

    \b
    Examples:
      zoo info pixelcnn
      zoo info runs/vqgan-twemoji-20261206-101500
    """
    if Path(name).is_dir() and ((Path(name) / "config.json").is_file() or os.sep in name):
        _run_info(Path(name))
        return
    reg = _registry()
    e = reg.get(name)
    fam = reg.families.get(e.family)
    c = _console()
    c.print(f"[bold]{e.name}[/bold] — {e.summary}")
    c.print(f"family: {e.family}   chapter: {e.chapter}   source: {e.plugin}   tags: {', '.join(e.tags)}")
    c.print(f"dataset: {json.dumps(e.dataset)}")
    if fam is not None:
        c.print(f"samplers: {', '.join(fam.samplers)} (default {e.sampler or fam.default_sampler})")
    for preset in e.presets:
        resolved = e.resolved(preset)
        params = e.params.get(preset)
        c.print(f"preset [bold]{preset}[/bold]" + (f" ({params:,} params)" if params else "") + ":")
        for section in ("model", "train", "data"):
            if resolved[section]:
                c.print(f"  {section}: " + ", ".join(f"{k}={v}" for k, v in resolved[section].items()))
    if e.notes:
        c.print(f"notes: {e.notes}")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--check", is_flag=True, help="Import every module:attr reference of every entry "
              "(models, samplers, dataset loaders, writers, plugin commands); one line per broken "
              "one, exit code 1 when any is.")
@click.pass_context
def plugins(ctx: click.Context, as_json: bool, check: bool) -> None:
    """List loaded plugins, their hooks, and any that failed to load (with the error).

    \b
    Set GENZOO_LOAD_PLUGINS=name1,name2 to load only those (empty: none),
    GENZOO_STRICT_PLUGINS=1 to raise on a broken plugin instead of skipping it.

    \b
    Example:
      zoo plugins --check             # after installing or writing a plugin
    """
    reg = _registry()
    if isinstance(ctx.find_root().command, click.Group):  # a command clash is a status too
        _load_plugin_commands(ctx.find_root().command)
    if check:
        _check_plugins(ctx, reg)
        return
    infos = list(reg.host.infos.values())
    if as_json:
        click.echo(json.dumps([vars(i) for i in infos], indent=2))
        return
    status = {"ok": "[green]ok[/green]", "error": "[red]error[/red]"}
    _print_table("genzoo plugins", ("name", "source", "version", "status", "hooks / error"),
                 [(i.name, i.source, i.version, status.get(i.status, i.status),
                   i.error or ", ".join(i.hooks)) for i in infos])


def _run_info(path: Path) -> None:
    from genzoo.core.run_folder import Run
    run = Run.open(path)
    cfg = run.read_config()
    c = _console()
    name = cfg.get("name", path.name) if isinstance(cfg, dict) else path.name
    family = cfg.get("family") if isinstance(cfg, dict) else None
    c.print(f"[bold]{name}[/bold] ({family}) — run {path}")
    if not (path / "model_index.json").is_file():
        c.print(f"params: {cfg.get('params')}   preset: {cfg.get('preset')}")
        tests = [m for m in run.metrics() if m.get("split") == "test" and "error" not in m]
        if tests:
            c.print("test: " + ", ".join(f"{k} {v:.4g}" for k, v in tests[-1].items()
                                         if isinstance(v, float)))
        return
    from genzoo.core.stages import describe
    rows = describe(path)
    table = []
    for r in rows:
        test = r.get("test") or {}
        figures = ", ".join(f"{k} {v:.4g}" for k, v in test.items() if isinstance(v, float))
        table.append((r["component"], r.get("class", ""), f"{r['params']:,}" if r.get("params")
                      else "-", r["state"] + (f" (from {r['from']})" if r.get("from") else ""),
                      f"{r['train_loss']:.4g}" if isinstance(r.get("train_loss"), float) else "-",
                      figures or r.get("error", "-")))
    _print_table("components, in stage order",
                 ("component", "class", "params", "state", "train loss", "test"), table)


def _check_plugins(ctx: click.Context, reg: Any) -> None:
    from genzoo.core.checks import check
    n, broken = check(reg, cli=click.Group())  # commands go to a throwaway group
    plugins = f"{len(reg.host.infos)} plugin" + "s" * (len(reg.host.infos) != 1)
    for b in broken:
        click.echo(b.line())
    if broken:
        click.echo(f"{len(broken)} broken ({n} references, {plugins} checked)", err=True)
        ctx.exit(1)
    click.echo(f"all {n} references load ({plugins})")


def _print_table(title: str, columns: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    from rich.table import Table
    table = Table(title=title)
    for col in columns:
        table.add_column(col, overflow="fold", min_width=min(len(col), 12))
    for row in rows:
        table.add_row(*row)
    _console().print(table)


@cli.group()
def data() -> None:
    """Datasets: embedded (offline), torchvision, Kaggle and image folders."""


@data.command("list")
@click.option("--json", "as_json", is_flag=True)
def data_list(as_json: bool) -> None:
    """List registered datasets and where they come from.

    \b
    Example:
      zoo data list
    """
    ds = sorted(_registry().datasets.values(), key=lambda d: d.name)
    if as_json:
        click.echo(json.dumps([vars(d) for d in ds], indent=2))
        return
    _print_table("genzoo datasets", ("name", "source", "modality", "location", "summary"),
                 [(d.name, d.source, d.modality, d.location, d.summary) for d in ds])


@data.command("download")
@click.argument("name")
@click.option("--data-root", help="Where to cache it (default $GENZOO_DATA or ~/.cache/genzoo/data).")
def data_download(name: str, data_root: str | None) -> None:
    """Fetch a torchvision or Kaggle dataset into the data root now (cached: never twice).

    \b
    Examples:
      zoo data download celeba        # needs Kaggle credentials, see README
      zoo data download fashion-mnist --data-root /data
    """
    from genzoo.core.data import DataConfig, data_root as root_of, load
    spec = _registry().get_dataset(name)
    if spec.source in ("embedded", "folder"):
        click.echo(f"{name} is {spec.source}: nothing to download")
        return
    data = load(DataConfig(name=name, root=data_root), "train")
    click.echo(f"{name}: {len(data)} training examples under {root_of(data_root)}")


# -- training ---------------------------------------------------------------------------------

def _overrides(sets: tuple[str, ...], **named: Any) -> dict[str, Any]:
    from genzoo.core.config import parse_set
    out: dict[str, Any] = parse_set(sets)
    for key, value in named.items():
        if value is not None:
            out[key] = value
    return out


def _data_option(value: str | None) -> dict[str, Any]:
    if value is None:
        return {}
    if value.startswith("folder:"):
        return {"data.name": "folder", "data.path": value[len("folder:"):]}
    return {"data.name": value}


_train_options = [
    click.option("--preset", default="quick", show_default=True, help="quick (minutes on a CPU) or book."),
    click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
                 help="Override any config key (model, train or data; e.g. lr=3e-4, train.batch_size=32)."),
    click.option("--steps", type=int, help="Total optimizer steps."),
    click.option("--epochs", type=float, help="Total epochs (ignored when --steps is given)."),
    click.option("--batch-size", type=int),
    click.option("--device", default=None, help="auto, cpu, cuda or mps (default auto)."),
    click.option("--seed", type=int, help="Fixes init, data order and sampling."),
    click.option("--data", "data_name", help="Dataset name, or folder:PATH for any image folder."),
    click.option("--data-root", help="Where downloads are cached (default $GENZOO_DATA or ~/.cache/genzoo/data)."),
    click.option("--out", type=click.Path(), help="Run folder (default runs/NAME-TIMESTAMP)."),
    click.option("--no-progress", is_flag=True, help="No progress bar."),
    click.option("--stage", help="Pipelines: the first stage to train anew (with --from RUN)."),
    click.option("--from", "source", type=click.Path(), help="Pipelines: take the stages before "
                 "--stage from this finished run (by path and weight hash; nothing is copied)."),
]


def train_options(f: Any) -> Any:
    for opt in reversed(_train_options):
        f = opt(f)
    return f


def _do_train(name: str | None, preset: str, sets: tuple[str, ...], steps: int | None,
              epochs: float | None, batch_size: int | None, device: str | None, seed: int | None,
              data_name: str | None, data_root: str | None, out: str | None, no_progress: bool,
              resume: str | None, stage: str | None = None, source: str | None = None) -> Any:
    from genzoo import api
    if resume:
        if stage or source:
            raise click.UsageError("--resume continues a run where it stopped; --stage/--from "
                                   "start a new one")
        if sets or data_name or epochs or batch_size or seed is not None:
            raise click.UsageError("--resume continues a run as configured; only --steps and "
                                   "--device may change")
        _writing(resume)
        run = api.resume(resume, steps=steps, device=device, progress=not no_progress)
    else:
        if name is None:
            raise click.UsageError("give a model NAME (see `zoo list`) or --resume RUN")
        if epochs is not None and steps is None:
            sets = sets + ("train.steps=None",)
        overrides = _overrides(sets, **{"train.steps": steps, "train.epochs": epochs,
                                        "train.batch_size": batch_size, "train.device": device,
                                        "train.seed": seed, "data.root": data_root},
                               **_data_option(data_name))
        _writing(out or "runs")
        run = api.train(name, preset, overrides, out=out, progress=not no_progress, stage=stage,
                        source=source)
    return run


@cli.command()
@click.argument("name", required=False)
@train_options
@click.option("--resume", type=click.Path(), help="Continue the run in this folder.")
@click.option("--nproc", type=int, help="Data-parallel processes on this machine (wraps torchrun; "
              "one per GPU, or CPU processes). The global batch and the data order stay those "
              "of one process.")
def train(name: str | None, nproc: int | None, **kw: Any) -> None:
    """Train NAME (a registry model) and save a run folder.

    \b
    Examples:
      zoo train pixelcnn --steps 500
      zoo train pixelcnn --preset book --set filters=64 --device cuda
      zoo train vae-faces --data folder:~/pictures/faces
      zoo train --resume runs/pixelcnn-20261125-101500 --steps 3000
      zoo train pixelcnn --nproc 2            # two processes (torchrun --standalone)
      zoo train vqgan-twemoji --stage prior --from runs/vqgan-twemoji-20261206-101500
    """
    if nproc is not None:
        _launch(name, nproc, kw)
        return
    run = _do_train(name, **kw)
    _report(run)


def _launch(name: str | None, nproc: int, kw: dict[str, Any]) -> None:
    """Check the config here (before N processes each fail on it), then run this same command
    under torchrun (``genzoo.core.distributed.launch``)."""
    from genzoo.core import distributed
    distributed.check_nproc(nproc)
    device = kw["device"]
    if kw.get("resume"):
        if device is None:  # the device the run was trained on
            from genzoo.core.checkpoint import Run
            config = Run.open(kw["resume"]).read_config()
            train_cfg = config.get("train") if isinstance(config, dict) else None
            device = train_cfg.get("device") if isinstance(train_cfg, dict) else None
    else:
        if name is None:
            raise click.UsageError("give a model NAME (see `zoo list`) or --resume RUN")
        from genzoo.core.factory import plan
        sets = kw["sets"] + (("train.steps=None",) if kw["epochs"] is not None and kw["steps"] is None else ())
        p = plan(name, kw["preset"], _overrides(sets, **{
            "train.steps": kw["steps"], "train.epochs": kw["epochs"], "train.batch_size": kw["batch_size"],
            "train.device": kw["device"], "train.seed": kw["seed"], "data.root": kw["data_root"]},
            **_data_option(kw["data_name"])))
        device = p.train.device
        distributed.check_nproc(nproc, device)  # before the split: more ranks than devices first
        if p.train.batch_size % nproc:
            raise click.BadParameter(f"batch_size {p.train.batch_size} does not split over {nproc} "
                                     f"processes; use a multiple of {nproc}", param_hint="--nproc")
    argv = click.get_current_context().find_root().meta.get("genzoo.argv", [])
    rc = distributed.launch(argv, nproc, device=device or "auto")
    if rc != 0:
        raise click.ClickException(f"distributed training stopped (exit code {rc}); see the "
                                   "messages above")


@cli.command("run")
@click.argument("name")
@train_options
@click.option("--n", "n", default=64, show_default=True, help="Samples drawn at the end.")
def run_cmd(name: str, n: int, **kw: Any) -> None:
    """Train NAME with the quick preset, then sample: the five-minute tour.

    \b
    Example:
      zoo run pixelcnn
    """
    from genzoo import api
    run = _do_train(name, resume=None, **kw)
    loaded = api.load_run(run.path)
    out = loaded.sample(n, seed=loaded.config["train"]["seed"])
    paths = loaded.write(out, run.path / "samples" / "final")
    _report(run, paths, out)


def _report(run: Any, paths: list[Path] | None = None, out: Any = None) -> None:
    from genzoo.core.distributed import world
    if world()[0] != 0:  # under torchrun, rank 0 reports (RANK, checked)
        return
    tests = [m for m in run.metrics() if m.get("split") == "test"]
    c = _console()
    c.print(f"run:      {run.path}")
    if (run.path / "model_index.json").is_file():  # a pipeline: a folder per component
        from genzoo.core.stages import describe
        for row in describe(run.path):
            where = f" (from {row['from']})" if row.get("from") else ""
            c.print(f"stage:    {row['component']}: {row['state']}{where}")
    else:
        c.print(f"weights:  {run.weights_path}")
    if tests and "loss" in tests[-1]:
        extra = ", ".join(f"{k} {v:.4g}" for k, v in tests[-1].items()
                          if k not in ("step", "split") and isinstance(v, float))
        c.print(f"test:     {extra}")
    for p in paths or []:
        c.print(f"samples:  {p}")
    if out is not None:
        _preview(out)
    if not (run.path / "model_index.json").is_file():
        c.print(f"loss:     {run.path / 'loss.png'}")


def _preview(out: Any) -> None:
    from genzoo.core.sample import preview
    for line in preview(out):
        click.echo(line)


# `--show-X` flags from before `--show X` took any view a sampler declares: hidden, still working
SHOW_ALIASES = ("chain", "process", "attention", "probs")


def _show_alias(view: str) -> Any:
    def add(ctx: click.Context, param: click.Parameter, on: bool) -> None:
        if on:
            ctx.meta.setdefault("genzoo.shows", set()).add(view)
    return click.option(f"--show-{view}", is_flag=True, hidden=True, expose_value=False,
                        callback=add, help=f"Same as --show {view}.")


def _sampler_inputs(sampler: type, family: str, pairs: tuple[str, ...]) -> dict[str, Any]:
    """`--input NAME=VALUE` pairs as the sampler's inputs: a name it does not declare is one
    line naming those it does; a value is typed by the annotation of its ``sample`` parameter
    (``label: int`` gets 3, not "3")."""
    import inspect
    import types
    import typing

    from genzoo.core.config import coerce
    from genzoo.errors import ConfigError
    declared = getattr(sampler, "inputs", {}) or {}
    try:
        hints = typing.get_type_hints(sampler.sample)
    except Exception:  # an annotation that does not resolve: the value stays a string
        hints = {}
    params = inspect.signature(sampler.sample).parameters
    out: dict[str, Any] = {}
    for item in pairs:
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise ConfigError(f"bad --input {item!r}: expected NAME=VALUE, e.g. --input label=3")
        if key not in declared:
            valid = ", ".join(declared) or "none"
            raise ConfigError(f"unknown input {key!r} for sampler {getattr(sampler, 'name', '')!r} "
                              f"of family {family!r}; its inputs: {valid}")
        hint = hints.get(key) if key in params else None
        if typing.get_origin(hint) in (typing.Union, types.UnionType):  # a given value is never None
            args = [a for a in typing.get_args(hint) if a is not type(None)]
            hint = args[0] if len(args) == 1 else typing.Union[tuple(args)]
        out[key] = coerce(key, value, hint) if hint is not None else value
    return out


@cli.command()
@click.argument("run", type=click.Path())
@click.option("--n", default=64, show_default=True, help="Number of samples.")
@click.option("--sampler", "sampler_name", help="Sampler name (default: the run's).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Sampler option, e.g. temperature=0.8.")
@click.option("--input", "input_items", multiple=True, metavar="NAME=VALUE",
              help="An input the sampler declares, e.g. --input label=3 (repeatable).")
@click.option("--prompt", help="Text to continue (text and music models): --input prompt=TEXT.")
@click.option("--label", type=int, help="Class label for conditional models (e.g. cgan): "
              "--input label=K.")
@click.option("--show", "shows", multiple=True, metavar="VIEW",
              help="An extra view the sampler declares (chain, process, attention, probs, "
              "latent...; repeatable).")
@_show_alias("chain")
@_show_alias("process")
@_show_alias("attention")
@_show_alias("probs")
@click.option("--seed", default=0, show_default=True)
@click.option("--out", type=click.Path(), help="Output stem; the writer adds .png/.txt/... "
              "(default RUN/samples/sample-SAMPLER-SEED).")
@click.option("--device", default="cpu", show_default=True)
@click.option("--no-ema", is_flag=True, help="Use raw weights even when EMA weights exist.")
@click.option("--batch-size", type=int, help="Samples drawn at once, 1 to 16384 (default: 256 "
              "for images and text, fewer for long token rows): memory does not grow with --n.")
@click.pass_context
def sample(ctx: click.Context, run: str, n: int, sampler_name: str | None, sets: tuple[str, ...],
           input_items: tuple[str, ...], prompt: str | None, label: int | None,
           shows: tuple[str, ...], seed: int, out: str | None, device: str, no_ema: bool,
           batch_size: int | None) -> None:
    """Draw N samples from a trained RUN and write them the way their modality is looked at:
    image grids, text files (also printed), point scatters.

    \b
    Examples:
      zoo sample runs/pixelcnn-20261125-101500
      zoo sample runs/pixelcnn-20261125-101500 --sampler naive --set temperature=0.7 --n 16
      zoo sample runs/lstm-20261127-101500 --prompt "recipe for" --set temperature=0.5 --n 3
      zoo sample runs/cgan-20261127-101500 --input label=3 --n 8
      zoo sample runs/ddm-20261127-101500 --show process --set frames=6
    """
    from genzoo import api
    from genzoo.core.config import parse_set
    if n < 1:
        raise click.BadParameter("must be >= 1", param_hint="--n")
    from genzoo.core.train_config import check_seed
    check_seed(seed, "--seed")  # torch's generators take [0, 2^64 - 1]
    aliased = ctx.meta.get("genzoo.shows", set())
    views = tuple(shows) + tuple(v for v in SHOW_ALIASES if v in aliased)
    loaded = api.load_run(run, ema=not no_ema, device=device)
    name = sampler_name or loaded.config.get("sampler")
    inputs = _sampler_inputs(loaded.family.sampler_class(name), loaded.family.name, input_items)
    for key, value in (("label", label), ("prompt", prompt)):  # the shortcuts
        if value is not None:
            if key in inputs and inputs[key] != value:
                from genzoo.errors import ConfigError
                raise ConfigError(f"--{key} and --input {key}=... disagree; give one")
            inputs[key] = value
    inputs["show"] = views
    chunks = loaded.sample_chunks(n, seed=seed, sampler=sampler_name, inputs=inputs,
                                  batch_size=batch_size, **parse_set(sets))
    from genzoo.core.sample import output_stem
    stem = output_stem(out) if out else loaded.run.samples_dir / f"sample-{name}-{seed}"
    if out and Path(out).is_dir():  # a folder: the default file name inside it
        stem = Path(out) / f"sample-{name}-{seed}"
    _writing(stem)
    paths, result = loaded.write_chunks(chunks, stem, n)  # a view of 64, an archive of all
    for path in paths:
        click.echo(f"wrote {path}")
    _preview(result)


@cli.command()
@click.argument("run", type=click.Path())
@click.option("--out", type=click.Path(), help="PNG path (default RUN/loss.png).")
@click.option("--keys", help="Comma-separated metrics to draw (default: every logged one).")
def plot(run: str, out: str | None, keys: str | None) -> None:
    """Draw a RUN's logged metrics, one axis per quantity (training line, test points).

    \b
    Example:
      zoo plot runs/pixelcnn-20261125-101500 --keys loss,bits_per_dim
    """
    from genzoo.core.checkpoint import Run
    from genzoo.core.plots import loss_curve
    r = Run.open(run)
    if not r.metrics():
        raise click.ClickException(f"{run} has no logged metrics yet (metrics.jsonl is empty)")
    names = [k.strip() for k in keys.split(",") if k.strip()] if keys else None
    logged = {k for m in r.metrics() for k in m}
    unknown = [k for k in names or [] if k not in logged]
    if unknown:
        raise click.ClickException(f"unknown metric {unknown[0]!r}; logged: "
                                   f"{', '.join(sorted(logged))}")
    click.echo(f"wrote {loss_curve(r, Path(out) if out else None, names)}")


@cli.command("eval")
@click.argument("run", type=click.Path())
@click.option("--split", default="test", show_default=True, type=click.Choice(["train", "test"]))
@click.option("--device", default="cpu", show_default=True)
@click.option("--metrics", help="Comma-separated: loss, nll, fid, kid, recognisable (default "
              "loss,nll). recognisable: the fraction of samples a chapter-2 classifier puts in "
              "one class with p >= 0.9, and the entropy of its class histogram, beside real "
              "images' figures.")
@click.option("--classifier", help="recognisable: the classifier RUN that judges (default: a "
              "finished classifier run on the dataset beside RUN or in ./runs, else the "
              "dataset's registered classifier trained once with its quick preset and cached).")
@click.option("--n-samples", type=int, help="Generated images for FID/KID (default: as many as "
              "the split has real ones).")
@click.option("--features", help="FID/KID feature network: a classifier RUN folder, 'inception' "
              "(torch-fidelity's InceptionV3, downloaded once into the data root) or 'auto' "
              "(default: Inception if its weights are on disk, else a CNN classifier run on the "
              "same dataset beside RUN or in ./runs, else the dataset's registered classifier, "
              "trained once and cached in the data root).")
@click.option("--data", "data_name", help="Score on this dataset instead of the run's own: a "
              "dataset name or folder:PATH, seen through the run's transform (size, channels, "
              "pad, tokenizer).")
@click.option("--seed", default=0, show_default=True, help="Sampling seed for FID/KID.")
@click.option("--json", "json_out", type=click.Path(), help="Also write the figures as JSON "
              "(they are always saved to RUN/eval.json, or RUN/eval-DATA.json for --data).")
def eval_cmd(run: str, split: str, device: str, metrics: str | None, classifier: str | None,
             n_samples: int | None, features: str | None, data_name: str | None, seed: int,
             json_out: str | None) -> None:
    """Evaluate a RUN on its dataset: its loss terms, the family's own figures (a classifier's
    accuracy and confusion matrix), NLL in the modality's units for likelihood models (bits/dim
    for images, nats/token + perplexity for text, nats/point), and FID/KID for image models.

    \b
    Examples:
      zoo eval runs/pixelcnn-20261125-101500
      zoo eval runs/dcgan-20261125-101500 --metrics fid,kid --n-samples 500 --features runs/cnn-twemoji-1
      zoo eval runs/cnn-mnist-20261125-101500          # accuracy + RUN/confusion.png
      zoo eval runs/ebm-20261206-101500 --metrics recognisable --n-samples 200
      zoo eval runs/pixelcnn-20261125-101500 --data mnist --split test   # a held-out test set
      zoo eval runs/vae-faces-20261125-101500 --data folder:~/held-out-faces
    """
    from genzoo.core.metrics import eval_file, evaluate
    names = tuple(m.strip() for m in metrics.split(",") if m.strip()) if metrics else None
    from genzoo.core.train_config import check_seed
    check_seed(seed, "--seed")
    saved = Path(run) / eval_file(data_name)
    _writing(saved)
    result = evaluate(run, split=split, device=device, metrics=names, n_samples=n_samples,
                      features=features, seed=seed, data=data_name, classifier=classifier)
    for k, v in result.items():
        if k in ("confusion_matrix", "protocol", "recog_protocol"):
            continue
        click.echo(f"{k}: {v:.4f}" if isinstance(v, float) else f"{k}: {v}")
    if "protocol" in result:
        click.echo(f"protocol: {result['protocol']}")
    if "recog_protocol" in result:
        click.echo(f"recognisable protocol: {result['recog_protocol']}")
    click.echo(f"saved:    {saved}")
    if json_out:
        _write_out(json_out, json.dumps(result, indent=2))


@cli.command()
@click.argument("runs", nargs=-1, type=click.Path())
@click.option("--markdown", is_flag=True, help="Print a Markdown table (for READMEs).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON rows.")
def leaderboard(runs: tuple[str, ...], markdown: bool, as_json: bool) -> None:
    """One table over RUNS (run folders, or folders of runs; default ./runs): model, dataset,
    params, NLL or bits/dim, FID/KID, accuracy, training samples/s, sampling latency, device.
    Figures come from each run's eval.json (`zoo eval`) and bench.json (`zoo bench RUN`).

    \b
    Examples:
      zoo leaderboard
      zoo leaderboard runs/ --markdown > LEADERBOARD.md
    """
    from genzoo.core import leaderboard as lb
    rows = lb.gather(list(runs))
    if as_json:
        click.echo(lb.to_json(rows))
        return
    if markdown:
        click.echo(lb.markdown(rows))
        return
    if not rows:
        click.echo("no runs found" + (f" in {', '.join(runs)}" if runs else " in ./runs"))
        return
    _print_table("genzoo leaderboard", lb.COLUMNS, [tuple(lb.cells(r)) for r in rows])
    for note in lb.protocols(rows):
        click.echo(f"FID/KID protocol, {note}")


@cli.command()
@click.argument("runs", nargs=-1, type=click.Path())
@click.option("--out", type=click.Path(), default="gallery", show_default=True,
              help="Folder to write the site into.")
def gallery(runs: tuple[str, ...], out: str) -> None:
    """Write a static HTML site over RUNS (default ./runs): an index with the leaderboard and
    one page per run (samples, loss curves, metrics, config). Opens offline from file://.

    \b
    Example:
      zoo gallery runs/ --out site && xdg-open site/index.html
    """
    from genzoo.core.gallery import build
    _writing(out)
    index = build(list(runs), out)
    click.echo(f"wrote {index}")


@cli.command()
@click.argument("names", nargs=-1)
@click.option("--all", "all_models", is_flag=True, help="Every registry model (the default "
              "when no NAMES are given).")
@click.option("--device", default="cpu", show_default=True)
@click.option("--repeats", default=5, show_default=True, help="Timed repeats (median reported).")
@click.option("--batch-size", type=int, help="Training batch size (default: the preset's).")
@click.option("--n", "n_samples", default=16, show_default=True, help="Images per sampling call.")
@click.option("--steps", "steps_per_repeat", default=10, show_default=True,
              help="Training steps per timed repeat.")
@click.option("--preset", default="book", show_default=True)
@click.option("--json", "json_out", type=click.Path(), help="Write records as JSON.")
@click.option("--markdown", is_flag=True, help="Print the records as a Markdown table.")
@click.option("--summary", is_flag=True, help="Print one Markdown row per model (params, "
              "train samples/s, FLOPs, MFU, memory, latency of each sampler).")
def bench(names: tuple[str, ...], all_models: bool, device: str, repeats: int,
          batch_size: int | None, n_samples: int, steps_per_repeat: int, preset: str,
          json_out: str | None, markdown: bool, summary: bool) -> None:
    """Time NAMES (registry models) or RUN folders: params, training samples/s (the model's
    step and the full trainer loop), sampling latency per sampler, peak memory, FLOPs per
    sample and the share of the matmul peak measured in the same run, and the precision used.
    A RUN's records are also saved to RUN/bench.json (read by `zoo leaderboard`).

    \b
    Examples:
      zoo bench pixelcnn
      zoo bench --all --preset quick --markdown
      zoo bench --all --preset book --n 4 --summary
      zoo bench runs/pixelcnn-20261125-101500 --device cuda
    """
    from genzoo.core.bench import bench_model, markdown_records, print_records, summary_markdown
    sweep = all_models or not names
    if sweep:
        names = tuple(names) + tuple(e.name for e in _registry().list() if e.name not in names)
    records, skipped = [], []
    for name in names:
        run = name if (Path(name) / "config.json").exists() else None
        try:
            got = bench_model(name, preset=preset, device=device, repeats=repeats,
                              batch_size=batch_size, n_samples=n_samples,
                              steps_per_repeat=steps_per_repeat, run=run)
        except GenzooError as e:
            if not sweep:  # a model the user named: its error is the answer
                raise
            # one model whose data is not at hand (Kaggle, a download) must not end the sweep
            skipped.append(name)
            click.echo(f"skipped {name}: {e}", err=True)
            continue
        if run:
            _write_out(str(Path(run) / "bench.json"), json.dumps(got, indent=2))
            click.echo(f"wrote {Path(run) / 'bench.json'}")
        records += got
    if summary:
        click.echo(summary_markdown(records))
    elif markdown:
        click.echo(markdown_records(records))
    else:
        print_records(records)
    if skipped:
        click.echo(f"skipped {len(skipped)} (data not at hand): {', '.join(skipped)}", err=True)
    if json_out:
        _write_out(json_out, json.dumps(records, indent=2))
        click.echo(f"wrote {json_out}")


def _load_plugin_commands(group: click.Group) -> None:
    """Let plugins (built-in ones included) add commands; one broken plugin must not break
    the CLI: it is marked failed and shown by `zoo plugins`. A name the group has (`list`,
    `sample`...) is a clash: the built-in stays. The catalogue loads first, so a plugin that
    failed there adds no command either."""
    try:
        from genzoo.core.registry import registry
        registry().host.add_commands(group)
    except Exception as e:
        if isinstance(e, GenzooError):
            # a setting the user got wrong (GENZOO_LOAD_PLUGINS=',,'): forget the half-loaded
            # catalogue, so the command that needs it says so in one line (`--help` still works)
            from genzoo.core import registry
            registry.reset()
            return
        from genzoo.core.plugins import strict
        try:
            on = strict()
        except GenzooError:  # GENZOO_STRICT_PLUGINS=nonsense: the command that loads says so
            on = False
        if on:
            raise
        click.echo(f"warning: plugins not loaded: {e}", err=True)


def main() -> None:
    if os.environ.get("TORCHELASTIC_RUN_ID") is not None and os.environ.get("WORLD_SIZE", "1") != "1":
        from genzoo.core.distributed import run_rank  # torch: only in a torchrun rank
        run_rank(lambda: cli(prog_name="zoo"))
    cli(prog_name="zoo")
