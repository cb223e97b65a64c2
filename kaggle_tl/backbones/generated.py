"""Tables generated from the backbones themselves (GFLOPs, stages): one writer and command line for both.

Each table is a Python module holding one dict literal, so that reading it needs no TensorFlow.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable


def table_main(argv, *, description: str, path: Path, doc: list[str], variable: str,
               measure: Callable[[str], Any], show: Callable[[Any], str],
               entry: Callable[[str, Any], list[str]]) -> int:
    """``--write``: measure every backbone and rewrite ``path``; else print the named backbones' values."""
    from kaggle_tl.backbones import list_backbones

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--write", action="store_true", help=f"rewrite {path.name} for every backbone")
    parser.add_argument("names", nargs="*", help="backbones to show (default: all)")
    args = parser.parse_args(argv)
    if not args.write:
        for name in args.names or list_backbones():
            print(f"{name}: {show(measure(name))}")
        return 0
    lines = ['"""' + doc[0], *doc[1:], '"""', "", f"{variable} = {{"]
    for name in list_backbones():
        value = measure(name)
        print(f"{name}: {show(value)}", flush=True)
        lines.extend(entry(name, value))
    path.write_text("\n".join(lines + ["}", ""]), encoding="utf-8")
    return 0
