"""Execute the course notebooks in place and clean their outputs for committing.

    python scripts/build_notebooks.py                         # every notebooks/*.ipynb, full mode
    python scripts/build_notebooks.py notebooks/01_*.ipynb --quick --timeout 300

Runs each notebook with nbclient (cwd = notebooks/, env JEPA_QUICK=0 unless --quick), then cleans it:
absolute paths (/work/..., /tmp/..., /root/..., /home/...) become relative or '<path>', memory addresses
(` at 0x...`) are dropped, and execution counts are renumbered 1..n in order. Prints per-notebook wall time.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"

ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
ABS_PATH = re.compile(r"(?<![\w.])/(?:work|tmp|root|home|usr/local|opt)/[^\s'\"\)\]\},:]*")


def clean_text(text: str) -> str:
    """Drop memory addresses; make paths inside the repo relative, other absolute paths '<path>'."""
    text = ADDRESS.sub("", text)
    text = text.replace(str(NOTEBOOKS) + "/", "").replace(str(ROOT) + "/", "")
    text = text.replace(str(ROOT), ".")

    def repl(m: re.Match) -> str:
        path = m.group(0)
        for marker in ("site-packages/", "dist-packages/"):
            if marker in path:
                return "<site-packages>/" + path.split(marker, 1)[1]
        return "<path>"

    return ABS_PATH.sub(repl, text)


def clean_notebook(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Clean outputs in place (see `clean_text`) and renumber execution counts 1..n; return the notebook."""
    count = 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        count += 1
        cell.execution_count = count
        for out in cell.get("outputs", []):
            if "execution_count" in out:
                out["execution_count"] = count
            if "text" in out:
                out["text"] = clean_text(out["text"])
            if out.get("output_type") == "error":
                out["traceback"] = [clean_text(line) for line in out.get("traceback", [])]
                out["evalue"] = clean_text(out.get("evalue", ""))
            for mime, value in out.get("data", {}).items():
                if mime.startswith("text/") and isinstance(value, str):
                    out["data"][mime] = clean_text(value)
        cell.metadata.pop("execution", None)
    return nb


def build(path: Path, *, quick: bool, timeout: int, kernel: str) -> float:
    """Execute one notebook in place (cwd notebooks/), clean it, and return the wall time in seconds."""
    nb = nbformat.read(path, as_version=4)
    env_quick = "1" if quick else "0"
    old = os.environ.get("JEPA_QUICK")
    os.environ["JEPA_QUICK"] = env_quick  # the kernel inherits the environment
    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    try:
        client = NotebookClient(
            nb, timeout=timeout, kernel_name=kernel, resources={"metadata": {"path": str(path.parent)}}
        )
        start = time.perf_counter()
        client.execute()
        elapsed = time.perf_counter() - start
    finally:
        if old is None:
            os.environ.pop("JEPA_QUICK", None)
        else:
            os.environ["JEPA_QUICK"] = old
    nbformat.write(clean_notebook(nb), path)
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("paths", nargs="*", type=Path, help="notebooks (default: notebooks/*.ipynb)")
    parser.add_argument("--quick", action="store_true", help="run in quick mode (JEPA_QUICK=1)")
    parser.add_argument("--timeout", type=int, default=1800, help="per-cell timeout in seconds")
    parser.add_argument("--kernel", default="python3", help="Jupyter kernel name")
    args = parser.parse_args(argv)
    paths = args.paths or sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    if not paths:
        print("no notebooks found", file=sys.stderr)
        return 1
    failed = []
    for path in paths:
        path = path.resolve()
        try:
            elapsed = build(path, quick=args.quick, timeout=args.timeout, kernel=args.kernel)
            print(f"{path.name}: {elapsed:.1f} s ({'quick' if args.quick else 'full'})", flush=True)
        except Exception as err:  # report every notebook, fail at the end
            failed.append(path.name)
            print(f"{path.name}: FAILED: {type(err).__name__}: {str(err)[-2000:]}", flush=True)
    if failed:
        print(f"{len(failed)} notebook(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
