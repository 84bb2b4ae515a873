"""``jupyter ptcuda export NOTEBOOK -o train.py``.

The ``jupyter ptcuda`` command adds these options to its ``export`` sub-parser with
:func:`add_arguments` and calls :func:`run` with the parsed arguments. :func:`main` runs it on
its own (``python -m jupyter_ptcuda.export.cli``). The script goes to ``-o`` or stdout; what
was rewritten, warnings and errors go to stderr.
"""

from __future__ import annotations

import argparse
import os
import sys

from jupyter_ptcuda.errors import PtcudaError
from jupyter_ptcuda.export.notebook import ExportResult, export_notebook


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the export options to ``parser`` (called by the ``jupyter ptcuda`` CLI)."""
    parser.add_argument("notebook", help="the notebook (.ipynb) to export")
    parser.add_argument("-o", "--output", metavar="FILE", help="write the script to FILE (default: stdout)")
    parser.add_argument("--lenient", action="store_true",
                        help="comment out magics that have no plain-Python equivalent (with a warning) "
                             "instead of failing")
    parser.add_argument("--echo-outputs", action="store_true",
                        help="print each cell's last bare expression, as the notebook shows it, to the job log")
    parser.add_argument("--requirements", metavar="FILE",
                        help="also write the packages of !pip / %%pip install lines to FILE")


def inferred_line(result: ExportResult) -> str | None:
    """The report's line naming the parameters that came from plain assignments (None when there are
    none: the notebook has a parameters cell, or no top-level literal assignment)."""
    inferred = [f"{name} (cell {p['cell']})" for name, p in result.parameters.items() if p.get("inferred")]
    if not inferred:
        return None
    return ("parameters: no cell is tagged 'parameters', so these top-level assignments are the flags "
            f"(`-p NAME=VALUE` / --NAME VALUE): {', '.join(inferred)}")


def _report(result: ExportResult) -> None:
    for entry in result.report:
        source = str(entry["source"]).splitlines()[0] if entry["source"] else ""
        print(f"cell {entry['cell']}: {source} -> {entry['action']}", file=sys.stderr)
    line = inferred_line(result)
    if line:
        print(line, file=sys.stderr)
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    """Export ``args.notebook``; 0 on success, 1 (message on stderr) when it cannot be exported."""
    try:
        result = export_notebook(args.notebook, lenient=args.lenient, echo_outputs=args.echo_outputs)
    except PtcudaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    _report(result)
    try:
        if args.output:
            with open(args.output, "w", encoding="utf-8") as f:
                f.write(result.script)
            mode = os.stat(args.output).st_mode
            os.chmod(args.output, mode | (mode & 0o444) >> 2)  # chmod +x where readable
            print(f"wrote {args.output}", file=sys.stderr)
        else:
            sys.stdout.write(result.script)
        if args.requirements:
            with open(args.requirements, "w", encoding="utf-8") as f:
                f.write("".join(f"{spec}\n" for spec in result.requirements))
    except OSError as exc:
        print(f"error: cannot write {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jupyter ptcuda export", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
