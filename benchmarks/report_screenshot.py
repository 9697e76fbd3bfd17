"""Render a run's report.html in headless Chromium and check what the page shows.

Usage:
    python benchmarks/report_screenshot.py runs/demo [--png runs/demo/report.png]
        [--results benchmarks/results/report_screenshot.jsonl]

Issue 6 asks for the HTML report to be rendered in headless Chromium (Debian's ``chromium``)
and the screenshot checked. This prints the image size, the share of non-white pixels and how
many pixels carry matplotlib's default blue (the plotted points and bars), and saves the PNG;
the figures are appended to --results (block ``report_screenshot``) for benchmarks/render.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib.image

sys.path.insert(0, str(Path(__file__).resolve().parent))
# The headless-Chromium helper lives beside the report test, its other user.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "pipeline"))
from _results import Results, add_results_option
from browser import screenshot


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run", type=Path, help="a torchslim compress/demo output folder")
    parser.add_argument("--png", type=Path, default=None, help="where to save the screenshot")
    parser.add_argument("--height", type=int, default=2400)
    add_results_option(parser, "report_screenshot")
    args = parser.parse_args()
    png = screenshot(args.run / "report.html", args.png or args.run / "report.png",
                     width=1400, height=args.height)  # fmt: skip
    pixels = matplotlib.image.imread(str(png))[..., :3]
    ink = (pixels < 0.9).any(axis=-1).mean()
    blue = ((abs(pixels[..., 0] - 0.12) < 0.1) & (abs(pixels[..., 2] - 0.71) < 0.1)).sum()
    print(f"{png}: {pixels.shape[1]}x{pixels.shape[0]} px, {100 * ink:.1f}% non-white, "
          f"{blue} plot-blue pixels")  # fmt: skip
    res = Results(args.results, table="report_screenshot", area="pipeline",
                  claim="The HTML report rendered in headless Chromium", row_header=["page"],
                  settings={"width": 1400, "height": args.height})  # fmt: skip
    page = str(args.run / "report.html")
    res.add(page, "screenshot", f"{pixels.shape[1]}x{pixels.shape[0]} px", "text")
    res.add(page, "non-white", round(100 * float(ink), 3), "%", 1)
    res.add(page, "plot-blue pixels", int(blue), "px", 0)
    if not 0.01 < ink < 0.6 or blue < 500:
        raise SystemExit("the page looks empty or broken")


if __name__ == "__main__":
    main()
