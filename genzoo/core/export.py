"""``zoo export``: a trained run as files other tools load.

- ``onnx``: ``model.onnx``, the network its family declares deployable
  (``Model.export_module``: a generator or decoder z -> image, a DDIM step, a language-model
  step, a classifier), checked against torch with onnxruntime when it is installed;
- ``torch-export``: ``model.pt2``, the same network as a ``torch.export`` program
  (``torch.export.load(path).module()(*inputs)``), reloaded and checked the same way;
- ``hf``: a Hugging Face-style model folder for ``huggingface-cli upload``: ``config.json``,
  ``model.safetensors`` (and the run's artifacts: a tokenizer, data statistics), a model card
  ``README.md`` with YAML metadata, a sample grid, ``metrics.json`` and the command that trained
  the run. The folder is also a genzoo run folder: ``genzoo.load_run(DIR)`` samples from it.

Every format writes ``export.json`` (inputs, outputs, shapes, what the network computes, the
check). Output folders are written beside their target and renamed into place, so a failed
export leaves no half folder. The core finds the network by capability
(``Model.can_export``), never by family name.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from genzoo._version import __version__
from genzoo.errors import ConfigError

FORMATS = ("onnx", "torch-export", "hf")
#: an exported network's outputs must equal torch's within |a - b| <= ATOL + RTOL * |b|
ATOL, RTOL = 1e-4, 1e-3
ONNX_OPSET = 18
MARKER = "export.json"


def supported_families() -> list[str]:
    """Registry families whose model defines ``export_module`` (their classes resolved now)."""
    from genzoo.core.registry import registry
    from genzoo.errors import GenzooError
    reg = registry()
    out = []
    for name in sorted({e.family for e in reg.list()}):
        try:
            cls = reg.get_family(name).model_class()
        except GenzooError:
            continue
        if getattr(cls, "can_export", lambda: False)():
            out.append(name)
    return out


class Spec:
    """What ``Model.export_module`` returned, checked and normalised."""

    def __init__(self, module: nn.Module, inputs: tuple[torch.Tensor, ...], names: dict[str, Any],
                 family: str):
        if not isinstance(inputs, tuple) or not all(isinstance(t, torch.Tensor) for t in inputs):
            raise ConfigError(f"{family}.export_module must return a tuple of example tensors")
        self.module, self.inputs, self.family = module.eval(), inputs, family
        self.input_names = list(names.get("inputs") or [f"input_{i}" for i in range(len(inputs))])
        if len(self.input_names) != len(inputs):
            raise ConfigError(f"{family}.export_module names {len(self.input_names)} inputs for "
                              f"{len(inputs)} example tensors")
        with torch.no_grad():
            out = self.reference()
        self.output_names = list(names.get("outputs") or [f"output_{i}" for i in range(len(out))])
        if len(self.output_names) != len(out):
            raise ConfigError(f"{family}.export_module names {len(self.output_names)} outputs; "
                              f"the module returns {len(out)}")
        self.what = str(names.get("what", ""))
        dynamic = names.get("dynamic") or {n: {0: "batch"} for n in self.input_names}
        # {input: {dim: label | [label, max]}}
        self.dynamic = {n: {int(d): (v if isinstance(v, (list, tuple)) else [v, None])
                            for d, v in dims.items()} for n, dims in dynamic.items()}

    def reference(self, inputs: tuple[torch.Tensor, ...] | None = None) -> list[torch.Tensor]:
        with torch.no_grad():
            out = self.module(*(inputs if inputs is not None else self.inputs))
        return list(out) if isinstance(out, (tuple, list)) else [out]

    def bigger_inputs(self) -> tuple[torch.Tensor, ...]:
        """The example inputs with every dynamic dimension one larger (within its maximum):
        the check runs there too, so a size baked into the graph shows up."""
        out = []
        for name, t in zip(self.input_names, self.inputs):
            for dim, (_, most) in self.dynamic.get(name, {}).items():
                if most is None or t.shape[dim] < most:
                    t = torch.cat([t, t.narrow(dim, 0, 1)], dim=dim)
            out.append(t)
        return tuple(out)

    def torch_dynamic_shapes(self) -> tuple[dict[int, Any], ...]:
        dims: dict[str, Any] = {}
        shapes = []
        for name in self.input_names:
            spec = {}
            for dim, (label, most) in self.dynamic.get(name, {}).items():
                if label not in dims:
                    dims[label] = torch.export.Dim(label.replace("-", "_"), min=1,
                                                   max=most if most else 2 ** 20)
                spec[dim] = dims[label]
            shapes.append(spec)
        return tuple(shapes)

    def describe(self) -> dict[str, Any]:
        outs = self.reference()
        return {"what": self.what,
                "inputs": [{"name": n, "shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch."),
                            "dynamic": {str(d): v[0] for d, v in self.dynamic.get(n, {}).items()}}
                           for n, t in zip(self.input_names, self.inputs)],
                "outputs": [{"name": n, "shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")}
                            for n, t in zip(self.output_names, outs)]}


def spec_of(loaded: Any) -> Spec:
    """The run's deployable network, or one line saying its family has none."""
    model, family = loaded.model, loaded.family.name
    if not getattr(type(model), "can_export", lambda: False)():
        raise ConfigError(f"{family} cannot export a network for ONNX / torch.export (its "
                          "sampler is not one module a runtime can call); supported: "
                          f"{', '.join(supported_families())}; `--format hf` packages any run's "
                          "weights")
    module, inputs, names = model.export_module()
    return Spec(module, tuple(inputs), dict(names or {}), family)


def compare(expected: list[torch.Tensor], got: list[Any]) -> float:
    """The largest |a - b| over all outputs; raises ConfigError past ATOL + RTOL * |b|."""
    worst = 0.0
    for e, g in zip(expected, got, strict=True):
        g = torch.as_tensor(g).to(e.device, e.dtype) if not isinstance(g, torch.Tensor) else g
        if tuple(g.shape) != tuple(e.shape):
            raise ConfigError(f"the exported network returned shape {tuple(g.shape)}, torch "
                              f"{tuple(e.shape)}")
        diff = (g.float() - e.float()).abs()
        worst = max(worst, float(diff.max()) if diff.numel() else 0.0)
        if not torch.all(diff <= ATOL + RTOL * e.float().abs()):
            raise ConfigError(f"the exported network differs from torch by {worst:.3g} (tolerance "
                              f"{ATOL:g} + {RTOL:g}*|x|); please report it")
    return worst


# -- formats --------------------------------------------------------------------------------

def to_onnx(spec: Spec, path: Path) -> dict[str, Any]:
    """``model.onnx`` (torch.export-based exporter when onnxscript is installed, else the
    TorchScript one), single file, batch (and any declared) dimensions dynamic."""
    import importlib.util
    import warnings
    dynamo = importlib.util.find_spec("onnxscript") is not None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            torch.onnx.export(spec.module, spec.inputs, str(path), dynamo=True,
                              input_names=spec.input_names, output_names=spec.output_names,
                              dynamic_shapes=spec.torch_dynamic_shapes(), external_data=False,
                              opset_version=ONNX_OPSET, verbose=False)
        else:
            axes = {n: {d: v[0] for d, v in spec.dynamic.get(n, {}).items()}
                    for n in spec.input_names}
            try:
                torch.onnx.export(spec.module, spec.inputs, str(path), dynamo=False,
                                  input_names=spec.input_names, output_names=spec.output_names,
                                  dynamic_axes=axes, opset_version=ONNX_OPSET)
            except Exception as e:  # the legacy exporter's limits (ops, memory layouts)
                first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
                raise ConfigError(f"torch's TorchScript ONNX exporter failed on this {spec.family} "
                                  f"network ({first}); install onnxscript (pip install "
                                  "onnxscript) for its torch.export-based exporter") from None
    return {"exporter": "torch.onnx (dynamo)" if dynamo else "torch.onnx (torchscript)",
            "opset": ONNX_OPSET}


def check_onnx(spec: Spec, path: Path) -> dict[str, Any]:
    """Run ``model.onnx`` in onnxruntime on the example inputs and on larger ones; compare with
    torch. Skipped (said so) when onnxruntime is not installed."""
    try:
        import onnxruntime as ort
    except ImportError:
        return {"checked": False, "why": "onnxruntime not installed (pip install onnxruntime)"}
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for inputs in (spec.inputs, spec.bigger_inputs()):
        feed = {n: t.detach().cpu().numpy() for n, t in zip(spec.input_names, inputs)}
        got = session.run(spec.output_names, feed)
        worst = max(worst, compare([t.cpu() for t in spec.reference(inputs)], got))
    return {"checked": True, "runtime": f"onnxruntime {ort.__version__}", "max_abs_diff": worst,
            "atol": ATOL, "rtol": RTOL}


def to_torch_export(spec: Spec, path: Path) -> dict[str, Any]:
    import warnings
    with warnings.catch_warnings():  # nn.LSTM's flat weights "assigned during export": harmless
        warnings.simplefilter("ignore", UserWarning)
        program = torch.export.export(spec.module, spec.inputs,
                                      dynamic_shapes=spec.torch_dynamic_shapes())
    torch.export.save(program, str(path))
    return {"exporter": f"torch.export (torch {torch.__version__})"}


def check_torch_export(spec: Spec, path: Path) -> dict[str, Any]:
    """Reload ``model.pt2`` and run it on the example inputs and on larger ones."""
    module = torch.export.load(str(path)).module()
    worst = 0.0
    with torch.no_grad():
        for inputs in (spec.inputs, spec.bigger_inputs()):
            out = module(*inputs)
            got = list(out) if isinstance(out, (tuple, list)) else [out]
            worst = max(worst, compare(spec.reference(inputs), got))
    return {"checked": True, "runtime": "torch.export.load", "max_abs_diff": worst,
            "atol": ATOL, "rtol": RTOL}


# -- hf: a model folder for the Hugging Face Hub ---------------------------------------------

def train_command(cfg: dict[str, Any]) -> str:
    """The command that trained the run: as recorded (``command``), else rebuilt from its
    name, preset and overrides (`zoo train` records every --set/--steps/... as an override)."""
    import shlex
    if isinstance(cfg.get("command"), str):
        return cfg["command"]
    parts = ["zoo", "train", str(cfg.get("name", "?"))]
    preset = cfg.get("preset")
    if preset and preset != "quick":
        parts += ["--preset", str(preset)]
    for k, v in sorted((cfg.get("overrides") or {}).items()):
        parts += ["--set", f"{k}={v}"]
    return " ".join(shlex.quote(p) for p in parts)


def _final_grid(run: Path) -> Path | None:
    samples = run / "samples"
    if not samples.is_dir():
        return None
    pngs = sorted(samples.glob("*.png"))
    final = [p for p in pngs if not p.name.startswith("step_")]
    return (final or pngs[-1:] or [None])[0]


def _metrics(run: Path) -> dict[str, Any]:
    from genzoo.core.atomic import read_json
    out: dict[str, Any] = {}
    ev = run / "eval.json"
    if ev.exists():
        data = read_json(ev)
        if isinstance(data, dict):
            out["eval"] = {k: v for k, v in data.items() if k != "confusion_matrix"}
    tests = []
    log = run / "metrics.jsonl"
    if log.exists():
        for line in log.read_text().splitlines():
            try:
                m = json.loads(line)
            except ValueError:
                continue
            if isinstance(m, dict) and m.get("split") == "test":
                tests.append(m)
    if tests:
        out["test_after_training"] = tests[-1]
    return out


def _card(cfg: dict[str, Any], metrics: dict[str, Any], grid: str | None, command: str,
          spec: Spec | None) -> str:
    import yaml
    name = str(cfg.get("name", "model"))
    family = str(cfg.get("family", ""))
    data = cfg.get("data", {}) or {}
    dataset = str(data.get("name", ""))
    figures = {k: v for k, v in {**metrics.get("test_after_training", {}),
                                 **metrics.get("eval", {})}.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step"}
    meta = {"license": "mit", "library_name": "genzoo",
            "tags": ["genzoo", family, str(cfg.get("modality", "image")), "generative"],
            "datasets": [dataset] if dataset else [],
            "metrics": sorted({k.split("/")[-1] for k in figures})}
    meta["tags"] = [t for t in dict.fromkeys(meta["tags"]) if t]
    lines = ["---", yaml.safe_dump(meta, sort_keys=False).strip(), "---", "",
             f"# {name}", "",
             f"A genzoo `{family}` model trained on `{dataset}`"
             f"{' (' + str(data.get('size')) + ' px)' if data.get('size') else ''}, "
             f"{cfg.get('params', '?')} parameters, genzoo {cfg.get('versions', {}).get('genzoo', __version__)}.",
             ""]
    if grid:
        lines += [f"![samples]({grid})", ""]
    lines += ["## Use it", "", "```bash", "pip install genzoo",
              "huggingface-cli download OWNER/REPO --local-dir model",
              "zoo sample model --n 16", "```", "", "```python", "import genzoo",
              "run = genzoo.load_run('model')", "samples = run.sample(16, seed=0)", "```", ""]
    if spec is not None:
        lines += [f"Deployable network (`zoo export RUN --format onnx|torch-export`): {spec.what}", ""]
    lines += ["## Train it again", "", "```bash", command, "```", ""]
    if figures:
        lines += ["## Metrics", "", "| metric | value |", "| --- | --- |"]
        lines += [f"| {k} | {v:.6g} |" for k, v in figures.items()]
        protocol = metrics.get("eval", {}).get("protocol")
        if protocol:
            lines += ["", f"FID/KID protocol: {protocol}"]
        lines += ["", "All figures: `metrics.json`.", ""]
    return "\n".join(lines) + "\n"


def to_hf(loaded: Any, out: Path, spec: Spec | None) -> dict[str, Any]:
    from genzoo.core.atomic import read_json, write_json
    from genzoo.core.run_folder import ARTIFACT_JSON, ARTIFACT_TENSORS, EMA_WEIGHTS, WEIGHTS
    run = loaded.path
    cfg = read_json(run / "config.json")
    ema = (run / EMA_WEIGHTS).exists()
    shutil.copyfile(run / (EMA_WEIGHTS if ema else WEIGHTS), out / WEIGHTS)
    for name in (ARTIFACT_JSON, ARTIFACT_TENSORS):
        if (run / name).exists():
            shutil.copyfile(run / name, out / name)
    command = train_command(cfg)
    write_json(out / "config.json", {**cfg, "command": command,
                                     "weights": "ema" if ema else "raw"})
    metrics = _metrics(run)
    write_json(out / "metrics.json", metrics)
    grid = _final_grid(run)
    if grid is not None:
        shutil.copyfile(grid, out / "samples.png")
    (out / "README.md").write_text(_card(cfg, metrics, "samples.png" if grid else None, command,
                                         spec), encoding="utf-8")
    return {"weights": "ema" if ema else "raw", "command": command}


# -- the command's one entry point ----------------------------------------------------------

def _fresh_folder(out: Path) -> None:
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MARKER).exists())):
        raise ConfigError(f"--out {out} exists and is not an earlier export (no {MARKER}); "
                          "give a new or empty folder")


def _swap_in(tmp: Path, out: Path) -> None:
    """Replace `out` (an earlier export, or nothing) by `tmp` with renames."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}-{time.time_ns()}")
        out.rename(old)
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def export_run(run_path: str | os.PathLike, fmt: str, out: str | os.PathLike | None = None,
               device: str = "cpu") -> dict[str, Any]:
    """Export the run at `run_path` as `fmt` into `out` (default RUN/export/FMT); returns what
    was written and checked (also saved as OUT/export.json)."""
    from genzoo.core.runner import load_run
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; valid: {', '.join(FORMATS)}")
    run_dir = Path(run_path)
    if (run_dir / "model_index.json").exists():
        raise ConfigError(f"{run_dir} is a pipeline (model_index.json): zoo export takes one "
                          "model; export a component run (RUN/components/NAME) instead")
    loaded = load_run(run_dir, device=device)
    spec = None
    if fmt != "hf" or getattr(type(loaded.model), "can_export", lambda: False)():
        spec = spec_of(loaded)
    target = Path(out) if out is not None else run_dir / "export" / fmt
    _fresh_folder(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        record: dict[str, Any] = {"format": fmt, "run": str(run_dir), "model": loaded.name,
                                  "family": loaded.family.name, "genzoo": __version__,
                                  "torch": torch.__version__}
        if spec is not None:
            record.update(spec.describe())
        if fmt == "onnx":
            record["file"] = "model.onnx"
            record.update(to_onnx(spec, tmp / "model.onnx"))
            record["check"] = check_onnx(spec, tmp / "model.onnx")
        elif fmt == "torch-export":
            record["file"] = "model.pt2"
            record.update(to_torch_export(spec, tmp / "model.pt2"))
            record["check"] = check_torch_export(spec, tmp / "model.pt2")
        else:
            record["file"] = "model.safetensors"
            record.update(to_hf(loaded, tmp, spec))
        from genzoo.core.atomic import write_json
        write_json(tmp / MARKER, record)
        _swap_in(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    record["out"] = str(target)
    return record
