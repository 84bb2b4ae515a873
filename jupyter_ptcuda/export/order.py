"""Did the notebook run top to bottom? Execution counts against cell order.

``notebook.export_notebook`` calls :func:`check_order` with the exported code cells that have
statements (``skip-export`` cells, empty and comment-only cells are left out: they do not run in
the script) and puts :func:`order_warning` first among the export's warnings; the script prints it
too, so a job's log shows it above any error.

The script runs every cell once, top to bottom. A cell whose execution count is not above every
count of the cells above it (``In [3]`` below ``In [12]``) last ran before one of them, so the
notebook's state when it ran is not what the script gives it. A cell with no execution count
(never run, or its output cleared) neither breaks nor sets the order: it is not a warning by
itself, but when the order is broken the warning also names those cells, which the notebook has
not shown running either.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: How many out-of-order cells the warning names (the rest are counted).
SHOWN = 8


@dataclass
class OrderCheck:
    """``out_of_order``: one ``{"cell", "count", "after_cell", "after_count"}`` per cell that did not
    run after the cell above it with the highest count (``after_cell``). ``not_run``: the cells with
    no execution count."""

    out_of_order: list[dict[str, int]] = field(default_factory=list)
    not_run: list[int] = field(default_factory=list)


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def check_order(cells: list[tuple[int, object]]) -> OrderCheck:
    """``cells``: ``(cell number, execution_count)`` of the script's code cells, in notebook order."""
    check = OrderCheck()
    top: tuple[int, int] | None = None  # (cell, count): the highest count so far
    for cell, raw in cells:
        count = _count(raw)
        if count is None:
            check.not_run.append(cell)
            continue
        if top is not None and count <= top[1]:
            check.out_of_order.append({"cell": cell, "count": count, "after_cell": top[0], "after_count": top[1]})
        else:
            top = (cell, count)
    return check


def _ranges(numbers: list[int], code_cells: list[int]) -> str:
    """``1-6, 8-20, 33``: runs of consecutive code cells (markdown cells between them do not break a run)."""
    position = {cell: i for i, cell in enumerate(code_cells)}
    runs: list[list[int]] = []
    for n in numbers:
        if runs and position[n] == position[runs[-1][-1]] + 1:
            runs[-1].append(n)
        else:
            runs.append([n])
    return ", ".join(str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs)


def order_warning(check: OrderCheck, code_cells: list[int]) -> str | None:
    """The warning for a broken order (None when the counts increase down the notebook)."""
    if not check.out_of_order:
        return None
    parts = []
    for item in check.out_of_order[:SHOWN]:
        relation = "has the same count as" if item["count"] == item["after_count"] else "ran before"
        parts.append(f"cell {item['cell']} (In [{item['count']}]) is below cell {item['after_cell']} "
                     f"(In [{item['after_count']}]) but {relation} it")
    more = len(check.out_of_order) - SHOWN
    listed = "; ".join(parts) + (f"; and {more} more cell{'s' if more > 1 else ''}" if more > 0 else "")
    text = (f"cells ran out of order: {listed}. The script runs every cell once, top to bottom, so it can fail "
            "(or compute something else) where the notebook did not.")
    if check.not_run:
        cells, verb = ("Cells", "have") if len(check.not_run) > 1 else ("Cell", "has")
        text += (f" {cells} {_ranges(check.not_run, code_cells)} {verb} no execution count (never run, or output "
                 "cleared): the notebook has not shown what they do either.")
    return text + " Check with Kernel > Restart Kernel and Run All Cells, save, and export again."
