"""Text for reports: counts in human units and the tables every report's ``__str__`` prints.

One table layout for the whole library: columns as wide as their widest cell, two spaces
apart, a dashed rule under the header. Markdown tables (the run report) are written here too.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence


def format_count(value: float, unit: str = "") -> str:
    """Human units: ``format_count(1.82e9) == "1.82 G"``.

    Example:
        >>> format_count(11_689_512)
        '11.69 M'
    """
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= scale:
            return f"{value / scale:.2f} {prefix}{unit}"
    return f"{value:.0f} {unit}".rstrip() if float(value).is_integer() else f"{value:.2f} {unit}"


def text_table(
    header: Sequence[str],
    rows: Iterable[Sequence[object]],
    *,
    right: Collection[int] = (),
    footer: Iterable[Sequence[object]] = (),
) -> list[str]:
    """The lines of a plain-text table: each column as wide as its widest cell (header and
    footer included), columns two spaces apart, a dashed rule under the header and another
    above the ``footer`` rows (totals). Columns whose index is in ``right`` are right-aligned
    (numbers), the others left-aligned; trailing spaces are trimmed.

    Example:
        >>> print("\\n".join(text_table(("layer", "MACs"), [("conv", "1.2 M"), ("fc", "512")],
        ...                             right={1}, footer=[("total", "1.2 M")])))
        layer   MACs
        -----  -----
        conv   1.2 M
        fc       512
        -----  -----
        total  1.2 M
    """
    body = [[str(c) for c in row] for row in rows]
    foot = [[str(c) for c in row] for row in footer]
    cells = [list(header), *body, *foot]
    for row in cells:
        if len(row) != len(header):
            raise ValueError(f"text_table: {len(header)} columns, but a row has {len(row)}: {row}")
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]

    def line(row: Sequence[str]) -> str:
        padded = (
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        return "  ".join(padded).rstrip()

    rule = "  ".join("-" * w for w in widths).rstrip()
    lines = [line(header), rule, *map(line, body)]
    if foot:
        lines += [rule, *map(line, foot)]
    return lines


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    """The lines of a Markdown (GitHub) table, cells as they are.

    Example:
        >>> print("\\n".join(markdown_table(("stage", "top-1"), [("base", "91.2%")])))
        | stage | top-1 |
        |---|---|
        | base | 91.2% |
    """
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines
