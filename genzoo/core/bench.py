"""``zoo bench``: training throughput and sampling latency per model, as JSON records
``{model, device, metric, setting, median, min, max, unit}``. Median of repeats after warm-up;
compare figures as ratios within one run (shared machines drift 5-15% between runs)."""
from __future__ import annotations

import dataclasses
import re
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import torch

from genzoo.core.train_config import StepContext, TrainConfig, pick_device
from genzoo.core.trainer import Trainer


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timeit(fn: Callable[[], Any], repeats: int, warmup: int, device: torch.device) -> list[float]:
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t)
    return times


def record(model: str, device: torch.device, metric: str, setting: str, values: list[float],
           unit: str) -> dict[str, Any]:
    return {"model": model, "device": str(device.type) + (f" ({torch.cuda.get_device_name(device)})"
                                                           if device.type == "cuda" else ""),
            "metric": metric, "setting": setting, "median": statistics.median(values),
            "min": min(values), "max": max(values), "unit": unit, "repeats": len(values)}


def bench_data(p: Any, batch_size: int) -> Any:
    """Real data when it is at hand (embedded, cached), else uniform noise of the right shape."""
    from genzoo.core.factory import DataShape
    from genzoo.core.sources import load
    try:
        cfg = p.data
        cfg.download = False
        return load(cfg, "train")
    except Exception:
        shape = DataShape.of(p)
        if shape.modality != "image" or not shape.shape:
            raise
        from genzoo.core.datasets import ImageData
        g = torch.Generator().manual_seed(0)
        n = max(batch_size * 2, 256)
        classes = list(shape.classes)
        if cfg.label:  # an attribute as the label: absent / present, as the real loader makes it
            classes = [f"not {cfg.label}", cfg.label]
        y = torch.randint(0, len(classes), (n,), generator=g) if classes else None
        return ImageData(torch.rand(n, *shape.shape, generator=g), y, classes)


def plan_from_run(path: str, device: str) -> Any:
    """The Plan a run was trained with (its config.json), to bench that exact model."""
    from genzoo.core import config as configlib
    from genzoo.core.data_config import DataConfig
    from genzoo.core.factory import Plan, family_of, run_field
    from genzoo.core.registry import registry
    from genzoo.core.run_folder import Run
    r = Run.open(path)
    cfg, where = r.read_config(), r.config_path
    family = family_of(cfg, where)
    train = configlib.build(TrainConfig, {**run_field(cfg, "train", where, dict), "device": device},
                            what="train")
    data = configlib.build(DataConfig, run_field(cfg, "data", where, dict), what="data")
    stages = None
    if isinstance(cfg.get("components"), dict):  # a pipeline: each stage's own train config
        stages = {n: {"model": c.get("model") or {},
                      "train": configlib.build(TrainConfig, {**(c.get("train") or {}),
                                                             "device": device}, what=f"{n} train")}
                  for n, c in cfg["components"].items() if isinstance(c, dict)}
    return Plan(registry().get(run_field(cfg, "name", where, str)), family, family.model_class(),
                cfg.get("preset", "?"), cfg.get("model") or {} if stages else
                run_field(cfg, "model", where, dict), train, data, cfg.get("sampler"), stages)


def _proc_status_mb(field: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return None


def _reset_peak_rss() -> float:
    """Reset the kernel's peak-RSS mark (Linux: ``clear_refs`` 5) and return the RSS now (MiB),
    so the peak after some work is that work's own; elsewhere, the process's peak so far."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        now = _proc_status_mb("VmRSS")
        if now is not None:
            return now
    except OSError:
        pass
    return _peak_rss_mb()


def _peak_rss_mb() -> float:
    peak = _proc_status_mb("VmHWM")
    if peak is not None:
        return peak
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def bench_model(name: str, preset: str = "book", device: str = "cpu", repeats: int = 5,
                batch_size: int | None = None, n_samples: int = 16,
                steps_per_repeat: int = 10, run: str | None = None) -> list[dict[str, Any]]:
    """`run`: bench the model of a run folder (its config; its trained weights for sampling)."""
    from genzoo.core.factory import build_from_config, build_model, plan
    from genzoo.core.registry import registry
    dev = pick_device(device)
    p = plan_from_run(run, device) if run else plan(name, preset, {"train.device": device})
    name, preset = p.entry.name, p.preset
    bs = batch_size or p.train.batch_size
    p.train.batch_size = bs
    data = bench_data(p, bs)
    torch.manual_seed(0)
    if p.stages is not None:
        return _bench_pipeline(p, name, preset, bs, data, dev, repeats, n_samples,
                               steps_per_repeat, run)
    if run:  # the run's network with its weights and artifacts, as load_run rebuilds it
        from genzoo.core.run_folder import Run
        r = Run.open(run)
        model = build_from_config(r.read_config(), r.config_path, r.weights_path)
    else:
        model = build_model(p, data)
        model.setup(data)
    model.to(dev)
    setting = f"preset={preset} batch={bs} params={model.num_params()}"
    out, ctx = _bench_training(name, dev, setting, model, data, p.train, bs, repeats,
                               steps_per_repeat)
    out += _bench_sampling(name, dev, model, registry().get_family(p.entry.family), n_samples,
                           repeats)
    return _stamp(out, ctx, p.train.amp, run)


def _bench_pipeline(p: Any, name: str, preset: str, bs: int, data: Any, dev: torch.device,
                    repeats: int, n_samples: int, steps_per_repeat: int,
                    run: str | None) -> list[dict[str, Any]]:
    """A pipeline: each stage's component trained on its own stage's data (the earlier ones
    frozen, as in training), records named MODEL/STAGE; then the whole pipeline's samplers."""
    from genzoo.core.factory import build_model
    from genzoo.core.pipeline import bind
    from genzoo.core.registry import registry
    if run:
        from genzoo.core.stages import load
        pipeline = load(run, ema=True, device="cpu").model
    else:
        pipeline = build_model(p, data)
    pipeline.to(dev)
    out: list[dict[str, Any]] = []
    upstream: dict[str, Any] = {}
    ctx = None
    for stage in p.model_cls.stages:
        component = pipeline.parts[stage.name]
        bind(component, upstream)
        stage_data = p.model_cls.stage_data(stage.name, data, upstream)
        cfg = p.stages[stage.name]["train"]
        cfg.batch_size, cfg.device = bs, str(dev)
        setting = f"preset={preset} stage={stage.name} batch={bs} params={component.num_params()}"
        records, ctx = _bench_training(f"{name}/{stage.name}", dev, setting, component,
                                       stage_data, cfg, bs, repeats, steps_per_repeat)
        out += records
        upstream[stage.name] = component.eval()
    out += _bench_sampling(name, dev, pipeline, registry().get_family(p.entry.family),
                           n_samples, repeats)
    return _stamp(out, ctx, p.train.amp, run)


def _bench_training(name: str, dev: torch.device, setting: str, model: Any, data: Any,
                    train_cfg: TrainConfig, bs: int, repeats: int,
                    steps_per_repeat: int) -> tuple[list[dict[str, Any]], Any]:
    """The bare training step, the full trainer loop, FLOPs and MFU of one network."""
    out: list[dict[str, Any]] = []

    # bare step: the model's own training_step, no loop around it
    from genzoo.core.batching import StepBatches, batch_to_device
    batches = StepBatches(data, bs, 0)
    cached = [batch_to_device(data, batches(i), dev) for i in range(min(4, batches.per_epoch))]
    optimizers = model.configure_optimizers(train_cfg)
    ctx = StepContext(dev, train_cfg.amp, train_cfg.grad_clip)
    model.train()

    def steps() -> None:
        for i in range(steps_per_repeat):
            ctx.step = i
            model.training_step(cached[i % len(cached)], optimizers, ctx)

    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    rss_before = _reset_peak_rss()  # model, optimizer state and batches already allocated
    times = timeit(steps, repeats, 1, dev)
    step_times = [t / steps_per_repeat for t in times]
    if dev.type == "cuda":
        peak = [torch.cuda.max_memory_allocated(dev) / 2**20]
        how = "CUDA max allocated"
    else:
        peak = [_peak_rss_mb() - rss_before]
        how = "peak RSS growth during the steps (activations, grads, optimizer state)"
    out.append(record(name, dev, "peak_memory", f"{setting} training_step, {how}", peak, "MiB"))
    out.append(record(name, dev, "train_throughput", f"{setting} (training_step)",
                      [bs / t for t in step_times], "samples/s"))
    seq_len = getattr(data, "seq_len", None) if getattr(data, "modality", "") == "text" else None
    if seq_len:
        out.append(record(name, dev, "train_throughput", f"{setting} seq_len={seq_len} (training_step)",
                          [bs * seq_len / t for t in step_times], "tokens/s"))

    # the full trainer loop (batching, logging, lr schedule) on the same model
    def loop() -> None:
        with tempfile.TemporaryDirectory() as d:
            from genzoo.core.run_folder import Run
            cfg = TrainConfig(**{**vars(train_cfg), "steps": steps_per_repeat, "sample_every": 0,
                                 "checkpoint_every": 10**9, "log_every": steps_per_repeat})
            trainer = Trainer(model, data, cfg, Run.create(name, d + "/run"), None, progress=False)
            trainer.fit(stop_after=steps_per_repeat)

    times = timeit(loop, repeats, 1, dev)
    out.append(record(name, dev, "train_throughput", f"{setting} (Trainer loop incl. final checkpoint)",
                      [steps_per_repeat * bs / t for t in times], "samples/s"))

    flops = train_flops(model, cached[0], optimizers, ctx)
    if flops:
        out.append(record(name, dev, "train_flops", f"{setting} fwd+bwd per sample",
                          [flops / bs], "FLOP"))
    # model FLOPs utilisation against the matmul peak measured now, on this device and dtype
    peak = matmul_peak(dev, ctx.dtype or torch.float32)
    out.append(record(name, dev, "matmul_peak", f"{peak['setting']} (same run)", peak["values"],
                      "FLOP/s"))
    peak_flops = statistics.median(peak["values"])
    if flops:
        out.append(record(name, dev, "mfu", f"{setting} FLOP counter fwd+bwd / matmul peak",
                          [flops / t / peak_flops for t in step_times], "fraction"))
    analytic = model.flops(cached[0])  # a family's own count (GPT: nanoGPT's 6N + attention)
    if analytic:
        out.append(record(name, dev, "mfu", f"{setting} analytic FLOPs (Model.flops) / matmul peak",
                          [analytic / t / peak_flops for t in step_times], "fraction"))

    return out, ctx


def _bench_sampling(name: str, dev: torch.device, model: Any, family: Any, n_samples: int,
                    repeats: int) -> list[dict[str, Any]]:
    """Latency per sample of every sampler of the family."""
    from genzoo.core.sampler import draw
    out: list[dict[str, Any]] = []
    model.eval()
    for sname in family.samplers:
        cls = family.sampler_class(sname)
        variants = [("", {})]
        if dev.type == "cuda" and "cuda_graph" in {f.name for f in dataclasses.fields(cls.Options)}:
            variants.append((" cuda_graph=false", {"cuda_graph": False}))  # what the graph saves
        for label, options in variants:
            sampler = cls(**options)

            def one() -> None:
                draw(model, sampler, n_samples, torch.Generator().manual_seed(0), family=family.name)
            first = timeit(one, 1, 1, dev)[0]
            reps = repeats if first < 5 else max(2, min(repeats, 3))
            times = [first] + timeit(one, reps - 1, 0, dev)
            out.append(record(name, dev, "sample_latency", f"sampler={sname}{label} n={n_samples}",
                              [t / n_samples for t in times], "s/sample"))
    return out


def _stamp(out: list[dict[str, Any]], ctx: Any, amp: Any, run: str | None) -> list[dict[str, Any]]:
    precision = (str(ctx.dtype).replace("torch.", "") + " autocast" if ctx.dtype else "fp32") \
        + f" (amp={amp})"
    for r in out:
        r["precision"] = precision
        if run:
            r["run"] = str(run)
    return out


def matmul_peak(device: torch.device, dtype: torch.dtype = torch.float32, size: int | None = None,
                repeats: int = 5) -> dict[str, Any]:
    """The machine's measured matmul rate (FLOP/s): square GEMMs big enough to reach the peak,
    the denominator of model FLOPs utilisation (nanoGPT's ``estimate_mfu`` assumes an A100's
    312 TFLOPS; a measured one also fits a shared CPU)."""
    n = size or (8192 if device.type == "cuda" else 1024)
    if device.type == "cpu" and dtype not in (torch.float32, torch.float64, torch.bfloat16):
        dtype = torch.float32
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    reps = 10 if device.type == "cuda" else 3
    times = timeit(lambda: [torch.mm(a, b) for _ in range(reps)], repeats, 1, device)
    return {"values": [2 * n ** 3 * reps / t for t in times],
            "setting": f"{n}x{n} {str(dtype).replace('torch.', '')} matmul"}


def train_flops(model: Any, batch: dict[str, torch.Tensor], optimizers: Any, ctx: Any) -> int:
    try:
        from torch.utils.flop_counter import FlopCounterMode
        with FlopCounterMode(display=False) as counter:
            with ctx.autocast():
                loss = model.loss(batch)["loss"]
            loss.backward()
        for opt in optimizers.values():
            opt.zero_grad(set_to_none=True)
        return int(counter.get_total_flops())
    except Exception:
        return 0


def print_records(records: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table
    console = Console()
    if not console.is_terminal:  # `zoo bench > log`: keep columns readable
        console = Console(width=200)
    table = Table(title="genzoo bench (median of repeats)")
    for col in ("model", "device", "metric", "setting", "median", "min", "max", "unit"):
        table.add_column(col, overflow="fold", min_width=len(col))
    for r in records:
        table.add_row(r["model"], r["device"], r["metric"], r["setting"], f"{r['median']:.4g}",
                      f"{r['min']:.4g}", f"{r['max']:.4g}", r["unit"])
    console.print(table)
    precisions = {r["model"]: r["precision"] for r in records if r.get("precision")}
    for model, precision in precisions.items():
        console.print(f"{model}: training precision {precision}")
    by = {}
    for r in records:
        if r["metric"] == "sample_latency":
            by.setdefault(r["model"], {})[r["setting"].rsplit(" n=", 1)[0]] = r["median"]
    for model, s in by.items():
        if "sampler=naive" in s and len(s) > 1:
            fastest = min(v for k, v in s.items() if k != "sampler=naive")
            console.print(f"{model}: fastest sampler is {s['sampler=naive'] / fastest:.1f}x the naive one")


def markdown_records(records: list[dict[str, Any]]) -> str:
    cols = ("model", "device", "precision", "metric", "setting", "median", "min", "max", "unit")
    lines = ["| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
    for r in records:
        cells = [str(r.get(c, "")) if c not in ("median", "min", "max") else f"{r[c]:.4g}" for c in cols]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def summary_markdown(records: list[dict[str, Any]]) -> str:
    """One row per model: what a user compares when picking one (medians; the full records
    keep min/max and the settings)."""
    rows: dict[str, dict[str, str]] = {}
    for r in records:
        row = rows.setdefault(r["model"], {"device": r["device"], "precision": r.get("precision", "")})
        metric, setting, v = r["metric"], r["setting"], r["median"]
        if m := re.search(r"params=(\d+)", setting):
            row["params"] = f"{int(m[1]):,}"
        if m := re.search(r"batch=(\d+)", setting):
            row["batch"] = m[1]
        if metric == "train_throughput" and r["unit"] == "samples/s":
            row["loop" if "Trainer loop" in setting else "step"] = f"{v:,.1f}"
        elif metric == "train_flops":
            row["flops"] = f"{v:.3g}"
        elif metric == "mfu" and "FLOP counter" in setting:
            row["mfu"] = f"{100 * v:.1f}%"
        elif metric == "peak_memory":
            row["memory"] = f"{v:,.0f}"
        elif metric == "sample_latency":
            sampler = setting.rsplit(" n=", 1)[0].removeprefix("sampler=")
            row.setdefault("sampling", []).append(f"{sampler} {_short_time(v)}")  # type: ignore[arg-type]
    cols = [("model", "model"), ("params", "params"), ("batch", "batch"),
            ("step", "train samples/s (step)"), ("loop", "(Trainer loop)"),
            ("flops", "FLOP/sample fwd+bwd"), ("mfu", "MFU"), ("memory", "train peak MiB"),
            ("sampling", "sampling, per sample"), ("precision", "precision"), ("device", "device")]
    lines = ["| " + " | ".join(c[1] for c in cols) + " |", "|" + " --- |" * len(cols)]
    for model, row in rows.items():
        row["model"] = model
        cells = [", ".join(row[k]) if isinstance(row.get(k), list) else str(row.get(k, "–"))
                 for k, _ in cols]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def _short_time(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e6:.0f} µs"


def device_label(device: torch.device) -> str:
    """What benchmark reports name the machine by: the GPU, or the CPU thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu x{torch.get_num_threads()} threads"


def dump_report(summary: dict[str, Any], raw: Any, args: dict[str, Any],
                path: str | None) -> None:
    """The benchmark scripts' common ending: print the summary, save summary + raw + args."""
    import json
    summary.setdefault("torch", torch.__version__)
    print(json.dumps(summary, indent=2))
    if path:
        with open(path, "w") as f:
            json.dump({"summary": summary, "raw": raw, "args": args}, f, indent=2)
