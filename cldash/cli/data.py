"""`cldash data`: the named image benchmarks' data. `data list` shows each benchmark, whether its decoded
images are in the cache and how much room they take; `data fetch NAME` says how much disk it needs, downloads
the data set (``datasets``, with its progress bars) and decodes it once into the cache at a backbone's
resolution, so that a run later starts at once (cldash.streams.benchmarks)."""

from __future__ import annotations

from cldash.core import hub
from cldash.core.cache import cache_dir
from cldash.core.errors import UserError

DEFAULT_SIZE = 224   # ViT-B/16's and CLIP ViT-B/16's input resolution


def add_data_arguments(p) -> None:
    p.add_argument("action", choices=("list", "fetch"), help="list: the benchmarks and their cache; fetch: "
                                                             "download and decode one")
    p.add_argument("name", nargs="?", metavar="NAME", help="the benchmark to fetch (cldash data list names them)")
    p.add_argument("--size", type=int, default=DEFAULT_SIZE, metavar="S",
                   help=f"decode at S x S pixels, the backbone's resolution (default {DEFAULT_SIZE})")
    p.add_argument("--source", metavar="DIR", help="a local save_to_disk copy of the data set instead of the Hub")


def cmd_data(args) -> int:
    from cldash.streams.benchmarks import BENCHMARKS  # deferred: imports torch

    if args.action == "list":
        return _list(BENCHMARKS)
    if not args.name or args.name not in BENCHMARKS:
        raise UserError(f"there is no benchmark {args.name!r}; the benchmarks are: {', '.join(BENCHMARKS)}."
                        if args.name else f"name the benchmark to fetch: {', '.join(BENCHMARKS)}.")
    if not 16 <= args.size <= 1024:
        raise UserError(f"--size must be between 16 and 1024 pixels (got {args.size}).")
    return _fetch(args.name, args.size, args.source or "")


def _gb(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.0f} MB"


def _list(benchmarks) -> int:
    from cldash.streams.benchmarks import cached_sizes, disk_estimate, split_spec  # deferred: imports torch

    print(f"{'benchmark':<15} {'tasks':>5} {'images':>8} {'download':>9} {'at 224':>9}  cached")
    for name in benchmarks:
        spec, (decoded, download) = split_spec(name), disk_estimate(name, DEFAULT_SIZE)
        cached = cached_sizes(name)
        where = ", ".join(f"{s} px: {_gb(b)}" for s, b in sorted(cached.items())) or "no"
        print(f"{name:<15} {spec['tasks']:>5} {spec['images']:>8,} {_gb(download):>9} {_gb(decoded):>9}  {where}")
    print(f"(cache: {cache_dir() / 'images'}; `cldash data fetch NAME` prepares one)")
    return 0


def _fetch(name: str, size: int, source: str) -> int:
    from cldash.streams.benchmarks import disk_estimate, hub_ids, prepare, split_spec  # deferred: imports torch

    spec, ids = split_spec(name), hub_ids(name)
    offline = None if source else hub.why_not(ids[0])
    if offline and not offline.startswith("HF_HUB_OFFLINE"):    # with HF_HUB_OFFLINE, the local HF cache may hold it
        raise UserError(f"cannot fetch {name}: {offline}; run `cldash data fetch {name}` where the Hugging Face Hub "
                        "can be reached (or give --source DIR, a saved copy).")
    decoded, download = disk_estimate(name, size)
    fetched = f"read from {source}" if source else f"about {_gb(download)} to download ({', '.join(ids)})"
    print(f"{name}: {spec['images']:,} images; {fetched} and about {_gb(decoded)} of decoded {size} x {size} images "
          f"in {cache_dir() / 'images'}.", flush=True)
    info = prepare(name, size, source)
    read = f"{info['source']} at revision {info['revision']}" if "source" in info else ", ".join(info["datasets"])
    print(f"{name} is ready: {read}, split file {info.get('split_file')} (sha256 {str(info.get('split_sha256'))[:12]}"
          "...).")
    return 0
