"""Run every peer benchmark in benchmarks/peers/ one after another; skip, with the reason, those
whose peer package is not installed (``pip install -e ".[bench]"`` brings normflows and
diffusers).

    python benchmarks/peers/run_all.py                    # every script, its own defaults
    python benchmarks/peers/run_all.py --only bare_loop --timeout 900
    python benchmarks/peers/run_all.py --json benchmarks/results/peers.json

A script's peers are the third-party modules it imports (anywhere in the file) besides genzoo's
own dependencies; one missing means a skip, not a failure. Scripts run one at a time (never two
heavy processes on a shared machine), each with a timeout. Exit code 1 if any script failed.
"""
from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# genzoo's own dependencies and the standard library are not peers
OURS = {"genzoo", "torch", "torchvision", "numpy", "timm", "einops", "safetensors", "click",
        "rich", "yaml", "PIL", "matplotlib", "sklearn", "torchmetrics"}


def peers_of(script: Path) -> list[str]:
    tree = ast.parse(script.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    stdlib = set(getattr(sys, "stdlib_module_names", ()))
    return sorted(n for n in names if n not in OURS and n not in stdlib and n != "__future__")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", action="append", help="script stem to run (repeatable)")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per script")
    ap.add_argument("--json", help="write a summary here")
    a = ap.parse_args()
    scripts = sorted(p for p in HERE.glob("*.py") if p.name != Path(__file__).name
                     and not p.name.startswith("_"))
    if a.only:
        scripts = [s for s in scripts if s.stem in a.only]
    summary = []
    for script in scripts:
        missing = [m for m in peers_of(script) if importlib.util.find_spec(m) is None]
        if missing:
            reason = f"needs {', '.join(missing)} (pip install -e \".[bench]\")"
            print(f"SKIP {script.name}: {reason}", flush=True)
            summary.append({"script": script.name, "status": "skipped", "reason": reason})
            continue
        print(f"RUN  {script.name}", flush=True)
        t = time.perf_counter()
        try:
            proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                                  timeout=a.timeout)
            status = "ok" if proc.returncode == 0 else f"failed (exit {proc.returncode})"
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-15:]
        except subprocess.TimeoutExpired:
            status, tail = f"timed out after {a.timeout:.0f} s", []
        dt = time.perf_counter() - t
        for line in tail:
            print(f"     {line}")
        print(f"     -> {status} in {dt:.0f} s", flush=True)
        summary.append({"script": script.name, "status": status, "seconds": round(dt, 1),
                        "output_tail": tail})
    if a.json:
        Path(a.json).write_text(json.dumps(summary, indent=2))
    return 1 if any(s["status"].startswith(("failed", "timed")) for s in summary) else 0


if __name__ == "__main__":
    sys.exit(main())
