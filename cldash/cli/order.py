"""`cldash order`: measure the gradient conflict between a stream's tasks on the pre-trained backbone,
store it, and print the adversarial order (the most opposing consecutive gradients, as in SLICE) with the
command that runs it; --list and --show read the stored orders.

Staged like `cldash run`: the stream's and the backbone's options are flags, so the parser is built once
the stream and the backbone are known.
"""

from __future__ import annotations

import argparse

from cldash.analysis.orders import measure, stream_flags
from cldash.cli.arguments import Parser, add_stream_and_backbone_options, collect, help_command
from cldash.core.errors import UserError
from cldash.store import Store


def _order_parser(stream: str, backbone: str | None) -> argparse.ArgumentParser:
    p = Parser(prog="cldash order", allow_abbrev=False, description="Measure the gradient conflict (cosine of "
                               "accumulated full-weight gradients per targeted module) between every pair of a "
                               "stream's tasks on the pre-trained backbone, store it, and print the adversarial "
                               "order (the most opposing consecutive gradients, as in SLICE) with the command "
                               "that runs it.")
    p.add_argument("--stream", default=stream, metavar="NAME", help="task stream (cldash streams)")
    p.add_argument("--backbone", default=backbone or "", metavar="NAME", help="backbone; default: the stream's")
    p.add_argument("--targets", default=None, metavar="LIST",
                   help="comma-separated target patterns; default: the backbone's")
    p.add_argument("--batches", type=int, default=4, metavar="N", help="batches whose gradients are accumulated "
                   "per task")
    p.add_argument("--batch-size", type=int, default=32, metavar="N", help="examples per batch")
    p.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the batches drawn")
    p.add_argument("--method", default="lora", metavar="NAME", help="method named in the printed run command")
    p.add_argument("--list", action="store_true", help="list the stored orders instead of measuring")
    p.add_argument("--show", type=int, default=None, metavar="ID", help="print one stored order")
    taken = {"--stream", "--backbone", "--targets", "--batches", "--batch-size", "--seed", "--method", "--list",
             "--show", "--help"}
    add_stream_and_backbone_options(p, stream, backbone, taken)
    return p


def format_order(o: dict, method: str = "lora") -> str:
    """A stored order as text: the conflict matrix, the adversarial order and the command that runs it."""
    tasks, C = o["tasks"], o["matrix"]
    lines = [f"order {o.get('id', '?')}: {o['stream']} on {o['backbone']}; gradient cosine C[i][j] "
             f"(mean over {len(o['config'].get('modules', [])) or 'the targeted'} modules):",
             "".ljust(6) + "".join(f"T{j + 1}".rjust(8) for j in range(len(tasks)))]
    for i, row in enumerate(C):
        lines.append(f"T{i + 1}".ljust(6) + "".join(f"{v:8.3f}" for v in row))
    lines.append("; ".join(f"T{j + 1}: {n}" for j, n in enumerate(tasks)))
    lines.append(f"adversarial order: {' -> '.join(f'T{i + 1}' for i in o['order'])} (sum of consecutive cosines "
                 f"{o['cost']:.3f}; configured order {o['natural_cost']:.3f})")
    lines.append(f"run it: cldash run --method {method} --stream {o['stream']} --backbone {o['backbone']} "
                 + stream_flags(o["ordered_options"]))
    return "\n".join(lines)


def cmd_order(args, rest: list[str]) -> int:
    pre = Parser(prog="cldash order", add_help=False, allow_abbrev=False)
    pre.add_argument("--stream", default="skills")
    pre.add_argument("--backbone", default="")
    known, _ = pre.parse_known_args(rest)
    parser = _order_parser(known.stream, known.backbone)
    parser.help_command = help_command("cldash order", known)
    if any(a in ("-h", "--help") for a in rest):
        parser.print_help()
        return 0
    ns = parser.parse_args(rest)
    for name, value in (("--batches", ns.batches), ("--batch-size", ns.batch_size)):
        if value < 1:
            raise UserError(f"{name} must be at least 1 (got {value}).")
    store = Store(args.db)
    if ns.list:
        orders = store.orders()
        if not orders:
            print(f"no orders in {store.display}")
        for o in orders:
            print(f"{o['id']:>4}  {o['stream']:<16} {o['backbone']:<12} "
                  f"{' -> '.join(str(i + 1) for i in o['order'])}  cost {o['cost']:.3f} "
                  f"(configured {o['natural_cost']:.3f})")
        return 0
    if ns.show is not None:
        print(format_order(store.get_order(ns.show), ns.method))
        return 0
    values = collect(ns, {})
    values.pop("method", None)
    if ns.targets:
        values["targets"] = ns.targets
    result = measure(values, batches=ns.batches, batch_size=ns.batch_size, seed=ns.seed)
    result["id"] = store.save_order(result)
    result["config"] = {"modules": result["modules"]}
    print(format_order(result, ns.method))
    return 0
