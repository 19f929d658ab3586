"""Run every benchmark in this folder (`bench_*.py`), one after the other, and summarize.

    .venv/bin/python benchmarks/run_all.py [--check] [--only twirp,tokens] [--out DIR]

Each benchmark runs as its own process with its default settings (each one's docstring says
what it measures and how); its output is shown as it runs. `--check` is passed to the
benchmarks that accept it (they then exit non-zero when they miss their target). `--out DIR`
keeps each benchmark's output in DIR/<name>.txt. The exit code is non-zero when any failed.
`make bench` runs this.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="pass --check to the benchmarks that take it")
    ap.add_argument("--only", default="", help="comma-separated names (bench_<name>.py) to run")
    ap.add_argument("--out", help="directory for each benchmark's output")
    args = ap.parse_args()
    scripts = sorted(HERE.glob("bench_*.py"))
    if args.only:
        wanted = {n.strip().removeprefix("bench_").removesuffix(".py") for n in args.only.split(",") if n.strip()}
        unknown = wanted - {s.stem.removeprefix("bench_") for s in scripts}
        if unknown:
            print(f"no such benchmark: {', '.join(sorted(unknown))}", file=sys.stderr)
            return 2
        scripts = [s for s in scripts if s.stem.removeprefix("bench_") in wanted]
    out_dir = Path(args.out) if args.out else None
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
    summary = []
    for script in scripts:
        cmd = [sys.executable, str(script)]
        if args.check and '"--check"' in script.read_text():
            cmd.append("--check")
        print(f"\n=== {script.name} ({' '.join(cmd[2:]) or 'defaults'}) ===", flush=True)
        started = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                cwd=str(HERE.parent))
        lines = []
        assert proc.stdout is not None
        for line in proc.stdout:
            print(line, end="", flush=True)
            lines.append(line)
        rc = proc.wait()
        if out_dir:
            (out_dir / f"{script.stem}.txt").write_text("".join(lines))
        summary.append((script.name, rc, time.monotonic() - started))
    print("\n=== summary ===")
    for name, rc, seconds in summary:
        print(f"{name:<24} {'ok' if rc == 0 else f'FAILED (exit {rc})':<18} {seconds:6.0f} s")
    return 0 if all(rc == 0 for _, rc, _ in summary) else 1


if __name__ == "__main__":
    sys.exit(main())
