"""``zoo leaderboard``: one table over runs, from what each run folder holds.

A run folder carries ``config.json`` (model, family, dataset, params), ``metrics.jsonl`` (the
training log), and, once measured, ``eval.json`` (``zoo eval``: NLL, FID/KID with its protocol,
a classifier's accuracy) and ``bench.json`` (``zoo bench RUN``: training samples/s of the trainer
loop, sampling latency per sampler, device, precision). Nothing is recomputed here.
"""
from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from genzoo.errors import ConfigError

NLL_KEYS = (("bits_per_dim", "bits/dim"), ("nats_per_token", "nats/token"),
            ("nats_per_point", "nats/point"), ("nll_nats", "nats"))


@dataclass
class Row:
    model: str
    run: str
    family: str
    dataset: str
    params: int | None
    nll: str  # value and unit, e.g. "0.584 bits/dim"
    fid: float | None
    kid: float | None
    accuracy: float | None
    train_samples_s: float | None
    train_source: str  # "bench" (trainer loop, zoo bench RUN) or "log" (training metrics)
    sample_ms: float | None  # per sample, default sampler
    device: str
    protocol: str  # how FID/KID were measured
    recognisable: str = ""  # "62% sure, spread 0.95 (real 81%, 1.00)": zoo eval --metrics recognisable
    recog_protocol: str = ""


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def find_runs(paths: list[str | Path]) -> list[Path]:
    """Run folders named directly, or every run folder (with config.json) inside a folder."""
    out: list[Path] = []
    for p in paths:
        p = Path(p)
        if (p / "config.json").exists():
            out.append(p)
        elif p.is_dir():
            out += sorted(c.parent for c in p.glob("*/config.json"))
        else:
            raise ConfigError(f"{p} is neither a run folder nor a folder of runs")
    seen, unique = set(), []
    for r in out:
        if r.resolve() not in seen:
            seen.add(r.resolve())
            unique.append(r)
    return unique


def row(run: Path) -> Row:
    cfg = _json(run / "config.json") or {}
    ev = _json(run / "eval.json") or {}
    bench = _json(run / "bench.json") or []
    data = cfg.get("data", {})
    size = data.get("size")
    crop = data.get("crop")  # the centre crop x crop square the model sees, resized to size
    dataset = str(data.get("name", "?")) + (f" {size}px" if size else "") \
        + (f" of the centre {crop}x{crop}" if crop else "")
    nll = ""
    for key, unit in NLL_KEYS:
        if isinstance(ev.get(key), (int, float)):
            nll = f"{ev[key]:.4g} {unit}"
            break
    train, source, latency, device = None, "", None, ""
    records = bench if isinstance(bench, list) else bench.get("records", [])
    for r in records:
        if r.get("metric") == "train_throughput" and "Trainer loop" in r.get("setting", ""):
            train, source, device = r["median"], "bench", r.get("device", "")
            if r.get("precision"):
                device += f" {r['precision']}"
    sampler = cfg.get("sampler")
    lat = [r for r in records if r.get("metric") == "sample_latency"]
    if lat:
        # the default settings only (not e.g. "sampler=cached cuda_graph=false n=16")
        mine = [r for r in lat if r.get("setting", "").startswith(f"sampler={sampler} n=")] or lat
        latency = min(r["median"] for r in mine) * 1000
    if train is None:  # the training log's throughput: median over logged windows
        rates = [m["samples_per_s"] for m in _metrics(run) if "samples_per_s" in m]
        if rates:
            train, source = statistics.median(rates), "log"
            device = device or str(cfg.get("train", {}).get("device", ""))
    return Row(model=str(cfg.get("name", run.name)), run=str(run), family=str(cfg.get("family", "")),
               dataset=dataset, params=cfg.get("params"), nll=nll,
               fid=ev.get("fid"), kid=ev.get("kid"), accuracy=ev.get("accuracy"),
               train_samples_s=train, train_source=source, sample_ms=latency, device=device,
               protocol=str(ev.get("protocol", "")), recognisable=_recognisable(ev),
               recog_protocol=str(ev.get("recog_protocol", "")))


def _recognisable(ev: dict[str, Any]) -> str:
    keys = ("recog_confident", "recog_class_entropy", "recog_confident_real",
            "recog_class_entropy_real")
    if not all(isinstance(ev.get(k), (int, float)) for k in keys):
        return ""
    return (f"{ev['recog_confident']:.0%} sure, spread {ev['recog_class_entropy']:.2f} "
            f"(real {ev['recog_confident_real']:.0%}, {ev['recog_class_entropy_real']:.2f})")


def _metrics(run: Path) -> list[dict[str, Any]]:
    path = run / "metrics.jsonl"
    out = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


def gather(paths: list[str | Path]) -> list[Row]:
    runs = find_runs(paths or ["runs"])
    rows = [row(r) for r in runs]
    return sorted(rows, key=lambda r: (r.dataset, r.family, r.model, r.run))


COLUMNS = ("model", "dataset", "params", "NLL", "FID", "KID", "recognisable", "accuracy",
           "train samples/s", "sample ms", "device", "run")


def cells(r: Row, run_label: str | None = None) -> list[str]:
    def num(v: float | None, fmt: str) -> str:
        return "" if v is None else format(v, fmt)
    params = "" if r.params is None else (f"{r.params / 1e6:.2f}M" if r.params >= 1e6 else f"{r.params / 1e3:.0f}k")
    train = num(r.train_samples_s, ".0f") + (" (log)" if r.train_source == "log" else "")
    return [r.model, r.dataset, params, r.nll, num(r.fid, ".2f"), num(r.kid, ".4f"),
            r.recognisable, "" if r.accuracy is None else f"{r.accuracy:.1%}", train, num(r.sample_ms, ".3g"),
            r.device, run_label if run_label is not None else r.run]


def protocols(rows: list[Row]) -> list[str]:
    return ([f"{r.model} ({r.run}): {r.protocol}" for r in rows if r.protocol]
            + [f"{r.model} ({r.run}): {r.recog_protocol}" for r in rows if r.recog_protocol])


def markdown(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    for r in rows:
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells(r)) + " |")
    notes = protocols(rows)
    if notes:
        lines += ["", "FID/KID and recognisability protocols:", ""] + [f"- {n}" for n in notes]
    lines += ["", "train samples/s: the trainer loop measured by `zoo bench RUN`, or "
              "\"(log)\": the median of the run's own training log (the machine's load at the time)."]
    return "\n".join(lines)


def to_json(rows: list[Row]) -> str:
    return json.dumps([asdict(r) for r in rows], indent=2)
