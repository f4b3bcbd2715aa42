"""
One learning-curve plot and one table for the runs of several benchmark folders, e.g. with and without
demonstrations::

    python examples/compare_benchmarks.py --run "demos=docs/benchmarks/fetchpickandplace-v4-demos" \
        "no demos=docs/benchmarks/fetchpickandplace-v4" --at 10000 50000 100000 200000 \
        --title "FetchPickAndPlace-v4, one env" --out docs/benchmarks/fetchpickandplace-v4-demos/comparison.png
"""

from __future__ import annotations

import argparse

from sb3_hher.benchmark import compare


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", nargs="+", required=True, metavar="LABEL=FOLDER", help="benchmark output folders")
    parser.add_argument("--at", nargs="+", type=int, required=True, help="env steps for the table")
    parser.add_argument("--title", default="")
    parser.add_argument("--out", required=True, help="PNG to write")
    args = parser.parse_args()
    folders = {}
    for item in args.run:
        label, separator, folder = item.partition("=")
        if not separator:
            parser.error(f"--run takes LABEL=FOLDER, got {item!r}")
        folders[label] = folder
    print(compare(folders, args.out, args.title, args.at))


if __name__ == "__main__":
    main()
