"""`cldash export`: a run's tables as CSV or JSON files (or one table on standard output), its final
adapters as a PEFT LoRA adapter folder, or its series as TensorBoard event files (cldash.dashboard.tensorboard).
A place that cannot be written is one sentence."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

from cldash.cli.arguments import add_run_id
from cldash.cli.waiting import store_reconciled
from cldash.core.errors import UserError
from cldash.dashboard.tensorboard import write_tensorboard

EXPORTS = ("matrix", "evaluations", "scalars", "spectra", "config")


def add_export_arguments(p) -> None:
    add_run_id(p)
    p.add_argument("--format", choices=("csv", "json", "peft"), default="csv",
                   help="csv or json: the run's tables; peft: its final adapters as a PEFT LoRA adapter folder")
    p.add_argument("--what", default="all", metavar="LIST", help=f"comma-separated: {', '.join(EXPORTS)}, or all")
    p.add_argument("--out", default=".", metavar="DIR", help="folder to write into, or - for standard output")
    p.add_argument("--tensorboard", metavar="DIR",
                   help="write TensorBoard event files instead (loss, every task's score, the metrics at each task's "
                        "end, singular values as histograms) into DIR/run-ID-NAME; open with tensorboard --logdir DIR")


def export_tables(store, run_id: int, what: list[str]) -> dict:
    """The run's tables as pandas DataFrames (or a dict for the config)."""
    from cldash.dashboard.tables import matrix_table  # deferred: imports pandas

    out = {}
    for name in what:
        if name == "matrix":
            out[name] = matrix_table(store.accuracy_matrix(run_id))
        elif name == "evaluations":
            out[name] = store.evaluations(run_id)
        elif name == "scalars":
            out[name] = store.scalars(run_id)
        elif name == "spectra":
            df = store.spectra(run_id)
            if len(df):
                df["values"] = [" ".join(f"{v:.6g}" for v in vals) for vals in df["values"]]
            out[name] = df
        elif name == "config":
            out[name] = store.get_run(run_id)
    return out


def cmd_export(args) -> int:
    store = store_reconciled(args.db)
    store.get_run(args.run)
    if args.tensorboard is not None:
        return export_tensorboard(store, args)
    if args.format == "peft":
        return export_peft(store, args)
    what = list(EXPORTS) if args.what == "all" else [w.strip() for w in args.what.split(",")]
    bad = [w for w in what if w not in EXPORTS]
    if bad:
        raise UserError(f"cannot export {bad[0]!r}; choose from {', '.join(EXPORTS)} or all.")
    if args.out == "-" and len(what) != 1:
        raise UserError("exporting to standard output takes one table; name it with --what (e.g. --what matrix).")
    tables = export_tables(store, args.run, what)
    if args.out != "-":
        out_dir = Path(args.out)
        if out_dir.exists() and not out_dir.is_dir():
            raise UserError(f"--out {out_dir} is a file; give a folder to write the tables into.")
        with _writing(out_dir):
            out_dir.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        if name == "config":
            text = json.dumps(table, indent=2, default=str)
            suffix = "json"
        elif args.format == "csv":
            text, suffix = table.to_csv(index=False), "csv"
        else:
            text, suffix = table.to_json(orient="records", indent=1), "json"
        if args.out == "-":
            sys.stdout.write(text)
        else:
            path = Path(args.out) / f"run-{args.run}-{name}.{suffix}"
            with _writing(path):
                path.write_text(text)
            print(path)
    return 0


@contextlib.contextmanager
def _writing(path: Path):
    """An export that cannot be written (no such place, no permission, a full or read-only disk) is one sentence."""
    try:
        yield
    except OSError as exc:
        raise UserError(f"cannot write {exc.filename or path} ({exc.strerror or exc}); give --out a folder that "
                        "you can write to.") from None


def export_tensorboard(store, args) -> int:
    """The run's event files in DIR/run-ID-NAME (cldash.dashboard.tensorboard), to open beside other experiments."""
    if args.format != "csv" or args.what != "all" or args.out != ".":
        raise UserError("--tensorboard DIR writes every series of the run into DIR; leave out --format, --what and "
                        "--out.")
    (folder,) = write_tensorboard(store, [args.run], args.tensorboard)
    print(folder)
    print(f"open it with: tensorboard --logdir {args.tensorboard}")
    return 0


def export_peft(store, args) -> int:
    """The run's final adapters as a PEFT LoRA adapter folder (adapter_model.safetensors + adapter_config.json)."""
    from cldash.engine.adapters import load_adapted_model  # deferred: imports torch
    from cldash.methods.peft_format import save_peft  # deferred: imports torch

    if args.out == "-":
        raise UserError("a PEFT adapter is a folder of files; give one with --out (e.g. --out adapter/).")
    resolved, _, _, method = load_adapted_model(store, args.run)
    folder = Path(args.out) / f"run-{args.run}-peft" if args.out == "." else Path(args.out)
    with _writing(folder):
        save_peft(method, folder, base_model=f"cldash {resolved.config.backbone} "
                  f"{json.dumps(resolved.config.backbone_options)}")
    print(folder)
    return 0
