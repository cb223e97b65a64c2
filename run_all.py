#!/usr/bin/env python
"""Run the whole kaggle_tl pipeline: `python run_all.py [--config run.toml] [--data DIR] [flags]`.

With no arguments it generates the embedded demo competition (data/demo) and runs it offline with
the pip-installed EfficientNet-Lite0. Same flags as `kaggle-tl run`; see README.md.
"""
import sys

from kaggle_tl.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
