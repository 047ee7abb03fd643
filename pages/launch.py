"""Launch: pick methods, a stream, a backbone and seeds; every option with its paper default and a
one-line explanation; several methods and seeds side by side in one click."""

import hashlib
import json
import time
import uuid

import streamlit as st

from cldash.backbones import BACKBONES
from cldash.config import RunConfig, check_fields, check_inputs, describe_run
from cldash.config.grid import grid_lines, parse_grid
from cldash.config.presets import preset_names, regime_label
from cldash.core.errors import ConfigError, UserError
from cldash.core.options import describe, is_default, option_label, worded
from cldash.methods import POLICIES, REGISTRY, marked_label
from cldash.runs.data_fetch import fetch_tail, fetching, start_fetch
from cldash.runs.launch import launch
from cldash.runs.launchers import LAUNCHERS, Resources, parse
from cldash.runs.sweeps import Sweep, launch_sweep, parse_seeds as sweep_seeds, plan
from cldash.streams import STREAMS, get_stream
from cldash.streams.benchmarks import BENCHMARKS, cached_sizes, disk_estimate
from pages.shared import get_store, option_widget, set_selected, through_app

through_app()

store = get_store()
st.title("Launch runs")
slots: dict[str, st.delta_generator.DeltaGenerator] = {}
# field ('lora.rank', 'lr') -> the label of its widget ('rank', 'learning rate'); the method, stream, backbone and
# seeds selectors are named as their messages name them
labels: dict[str, str] = {}


def with_slot(key: str, widget_fn, label: str | None = None):
    """Render a widget and an empty slot right under it for its validation error; `label` is the widget's
    label (default: the option's name in words), which the error then calls the field by."""
    value = widget_fn()
    slots[key] = st.empty()
    labels[key] = label or option_label(key.rsplit(".", 1)[-1])
    return value


def show_error(field: str, message: str, fallback: str = "method") -> None:
    """An error under its field's widget, naming fields by their labels rather than their option names."""
    (slots.get(field) or slots[fallback]).error(worded(message, labels))


# what a launch always sends, whatever the regime (the rest is dropped where left at its default: the preset's)
KEEP = {"preset", "aid_preset", "method", "stream", "backbone", "seed", "method_options", "stream_options",
        "backbone_options"}


def parse_seeds(text: str) -> list[int]:
    """The seeds field as cldash sweep reads --seeds (0, 0-2, 0,1,2), its error under the field."""
    try:
        return sweep_seeds(text)
    except UserError as exc:
        raise ConfigError(str(exc), "seeds") from None


def method_label(name: str) -> str:
    return marked_label(REGISTRY[name])


names = ["lora", "full"] + sorted(n for n in REGISTRY if n not in ("lora", "full"))
methods = with_slot("method", lambda: st.multiselect("Methods", names, default=["lora"], format_func=method_label,
                                                      key="launch-methods",
                                                      help="Every method picked runs once per seed, side by side."))
HF = "hf:"   # the choice that opens a field for Hugging Face data sets / models


def data_panel(name: str, size: int = 224) -> None:
    """A named benchmark's data: whether it is decoded in the cache, how much disk it needs, and a button that
    fetches it in the background (cldash data fetch NAME)."""
    cached = cached_sizes(name)
    if size in cached:
        st.caption(f":material/check_circle: The {name} data is ready ({size} px, {cached[size] / 1e9:.1f} GB "
                   "in the cache).")
        return
    decoded, download = disk_estimate(name, size)
    if fetching(name):
        st.info(f"Fetching the {name} data in the background… {fetch_tail(name, 1)}", icon=":material/download:")
        return
    st.caption(f"The {name} data is not in the cache yet: about {download / 1e9:.1f} GB to download and "
               f"{decoded / 1e9:.1f} GB of decoded {size} px images. A run fetches it itself; fetching now lets "
               "runs start at once.")
    if st.button(f"Fetch the {name} data", key=f"fetch-{name}", icon=":material/download:"):
        start_fetch(get_store(), name, size)
        st.rerun()
    last = fetch_tail(name, 2)
    if last:
        st.caption(f"Last fetch: {last}")


def hf_spec(text: str) -> str:
    text = text.strip()
    return text if text.startswith(HF) else HF + text


# the backbone's label is long ("Tiny ViT (8x8 digits, 2 layers, width 64)"): at 1024 px it needs three fifths of
# the row to show in full, so the seeds go on a row of their own
c1, c2 = st.columns([2, 3])
c3, _ = st.columns([1, 2])
with c1:
    stream = with_slot("stream", lambda: st.selectbox(
        "Stream", [*STREAMS, HF], format_func=lambda n: STREAMS[n].label if n in STREAMS else
        "Hugging Face data sets (hf:…)", help="The sequence of tasks.", key="launch-stream"))
    if stream == HF:
        stream = hf_spec(st.text_input("data sets", placeholder="hf:tasks/a.csv,tasks/b.csv or hf:user/dataset",
                                       key="launch-hf-stream", help="CSV / JSON / Parquet files (one per task), a "
                                       "saved data set folder or a Hub name; map the columns in the stream options."))
        slots["stream"] = st.empty()
stream_error = None
try:
    scls = get_stream(stream)
except ConfigError as exc:   # an empty or missing hf: source: said under the field, nothing else to show
    scls, stream_error = None, str(exc)
if scls is not None:
    st.caption(scls.summary)
if stream in BENCHMARKS:
    data_panel(stream)
with c2:
    kinds = scls.backbone_kinds if scls is not None else ()
    fitting = [n for n, e in BACKBONES.items() if e.kind in kinds]
    if scls is not None and scls.default_backbone in fitting:   # the stream's own first: ViT-B/16 for CIFAR-100
        fitting.remove(scls.default_backbone)
        fitting.insert(0, scls.default_backbone)
        if st.session_state.get("launch-backbone-stream") != stream:   # a new stream starts on its own backbone
            st.session_state["launch-backbone"] = scls.default_backbone
        st.session_state["launch-backbone-stream"] = stream
    backbone = with_slot("backbone", lambda: st.selectbox(
        "Backbone", [*fitting, HF], format_func=lambda n: BACKBONES[n].label if n in BACKBONES else
        "Hugging Face model (hf:…)", key="launch-backbone"))
    if backbone == HF:
        backbone = hf_spec(st.text_input("model", placeholder="hf:gpt2 or hf:path/to/model", key="launch-hf-backbone",
                                         help="A causal LM, text or image classifier; loaded with "
                                              "trust_remote_code=False (offline: a local folder or a cached name)."))
        slots["backbone"] = st.empty()
with c3:
    seeds_text = with_slot("seeds", lambda: st.text_input("Seeds", "0", help="Comma-separated (0, 1, 2) or a range "
                                                                            "(0-2); one run per method and seed.",
                                                          key="launch-seeds"))
if stream_error and stream != HF:
    slots["stream"].error(stream_error)

rows = {r["name"]: r for r in describe(RunConfig)}
run_values = {}
with st.expander("Training", expanded=True):
    regimes = preset_names("")
    run_values["preset"] = with_slot("preset", lambda: st.selectbox(
        "regime", ["common", "paper", *regimes[1:]], format_func=regime_label, key="run-preset",
        help="common: the shared defaults below, the same for every method (a fair side-by-side comparison). "
             "paper: each method's authors' published regime (optimizer, lr, schedule, targets, steps, loss "
             "masking; each value cited on the Methods page). paper:METHOD: that method's authors' training "
             "regime for every selected method (a baseline on the same schedule). A value you change below "
             "wins over the preset's."), "regime")
    cols = st.columns(4)
    for i, name in enumerate(["steps_per_task", "batch_size", "eval_interval", "spectra_interval"]):
        with cols[i]:
            run_values[name] = with_slot(name, lambda n=name: option_widget(rows[n], f"run-{n}"))
    cols = st.columns(4)
    with cols[0]:
        run_values["lr"] = with_slot("lr", lambda: st.text_input(
            "learning rate", "", placeholder="method's own",
            help="Leave empty for each method's default (LoRA 5e-3, full fine-tuning 1e-3, ...).",
            key="run-lr"), "learning rate")
    with cols[1]:
        run_values["policy"] = with_slot("policy", lambda: st.selectbox(
            "task-boundary policy", ["", *POLICIES], format_func=lambda p: POLICIES.get(p, "method's own"),
            help="For methods that leave it open (LoRA and its variants): what happens to the adapter after a task."),
            "task-boundary policy")
    with cols[2]:
        run_values["device"] = with_slot("device", lambda: st.selectbox(
            "device", ["auto", "cpu", "cuda"], help="auto: a GPU when there is one."))
    with cols[3]:
        run_values["lr_schedule"] = with_slot("lr_schedule", lambda: option_widget(rows["lr_schedule"], "run-lrs"))
    with st.popover("More training options"):
        for name in ["weight_decay", "warmup_steps", "max_grad_norm", "dense_spectra_interval", "eval_batch_size"]:
            run_values[name] = with_slot(name, lambda n=name: option_widget(rows[n], f"run-{n}"))
        run_values["train_head"] = with_slot("train_head", lambda: st.checkbox(
            "also train the pre-trained classifier head", value=False,
            help="Adapter methods keep the pre-trained head frozen by default; full fine-tuning always trains it."),
            "also train the pre-trained classifier head")

with st.expander("Replay and EWC (for any method)", expanded=False):
    st.caption("Continual-learning aids that combine with every method: a buffer of finished tasks' examples "
               "replayed at every step, and the EWC penalty that anchors the trained parameters.")
    run_values["aid_preset"] = with_slot("aid_preset", lambda: st.selectbox(
        "TRACE's settings", ["", "replay", "ewc"], key="run-aid_preset",
        format_func=lambda a: {"": "none (the values below)", "replay": "replay: a buffer of 200, balanced",
                               "ewc": "ewc: online EWC, lambda 400"}[a],
        help="The aid as the TRACE benchmark (arXiv 2310.06762) sets it, each value cited (`cldash presets`); a "
             "value you change below wins."), "TRACE's settings")
    cols = st.columns(3)
    for i, name in enumerate(["replay", "replay_rule", "replay_batch_size"]):
        with cols[i]:
            run_values[name] = with_slot(name, lambda n=name: option_widget(rows[n], f"run-{n}"))
    cols = st.columns(4)
    for i, name in enumerate(["ewc_lambda", "ewc_online", "ewc_gamma", "ewc_batches"]):
        with cols[i]:
            run_values[name] = with_slot(name, lambda n=name: option_widget(rows[n], f"run-{n}"))

stream_values = {}
srows = describe(scls.Options) if scls is not None else []
if srows:
    with st.expander(f"{scls.label} options", expanded=False):
        for row in srows:
            stream_values[row["name"]] = with_slot(f"{stream}.{row['name']}",
                                                   lambda r=row: option_widget(r, f"stream-{stream}-{r['name']}"))

method_values: dict[str, dict] = {}
option_rows = {name: {r["name"]: r for r in describe(REGISTRY[name].Config)} for name in methods}
for name in methods:
    cls = REGISTRY[name]
    with st.expander(f"{method_label(name)} options", expanded=len(methods) == 1):
        st.caption(f"{cls.summary} — {cls.paper}")
        if cls.reconstruction:
            st.warning(f"Reconstruction: {cls.reconstruction}")
        presets = {"cldash defaults": {}, **cls.presets}
        preset = st.selectbox("option set", list(presets), key=f"preset-{name}",
                              help="Named sets of this method's options (papers' and libraries' settings).")
        values = {}
        for row in describe(cls.Config):
            default = presets[preset].get(row["name"], row["default"])
            values[row["name"]] = with_slot(f"{name}.{row['name']}",
                                            lambda r=row, d=default, name=name, preset=preset: option_widget(
                                                r, f"m-{name}-{preset}-{r['name']}", default=d))
        method_values[name] = values

backbone_values = {}
with st.expander(f"Backbone options ({backbone}, advanced)"):
    if backbone.startswith(HF):
        from cldash.backbones.hf import HFOptions

        backbone_options_cls = HFOptions
        st.caption("Options for loading the Hugging Face model.")
    else:
        backbone_options_cls = BACKBONES[backbone].Options
        st.caption("The defaults load the pre-trained weights that ship with cldash (the same on every machine); "
                   "changing any of these pre-trains a new backbone on first use (cached afterwards).")
    for row in describe(backbone_options_cls):
        backbone_values[row["name"]] = with_slot(f"{backbone}.{row['name']}",
                                                 lambda r=row: option_widget(r, f"bb-{backbone}-{r['name']}"))

def form_values(name: str, seed: int, drop_defaults: bool) -> dict:
    """The form's run configuration for one method and seed; with `drop_defaults`, only what the user changed
    (and what a launch always sends), so that a preset fills the rest."""
    values = {**run_values, "method": name, "stream": stream, "backbone": backbone,
              "seed": seed, "method_options": method_values[name], "stream_options": stream_values,
              "backbone_options": backbone_values}
    values["lr"] = values["lr"].strip() or None
    if drop_defaults:
        values = {k: v for k, v in values.items() if k not in rows or k in KEEP or not is_default(rows[k], v)}
        values["method_options"] = {k: v for k, v in method_values[name].items()
                                    if not is_default(option_rows[name][k], v)}
    if not REGISTRY[name].policies:
        values["policy"] = None
    return values


def grid_of(text: str) -> dict[str, list]:
    """The grid text area read as `cldash sweep --grid` reads its values, one option a line; the values are
    left to the sweep's plan to check (a JSON list that does not parse is json's ValueError)."""
    return parse_grid(grid_lines(text), twice="{name} is in the grid twice; give its values on one line.",
                      checked=False)


with st.expander("Sweep: a grid of runs as one group, on this machine or a Ray cluster", expanded=False):
    st.caption("The methods and seeds above, crossed with the regimes and option lists here; every other value "
               "is the form's. Repeating a sweep queues only the runs the store does not hold yet, and its runs "
               "form one group that the Runs and Compare pages filter and aggregate by.")
    sweeping = st.toggle("launch as a sweep", key="sweep-on")
    c1, c2 = st.columns(2)
    sweep_presets = c1.multiselect("regimes", ["common", "paper", *preset_names("")[1:]], default=["common"],
                                   format_func=regime_label, key="sweep-presets",
                                   help="A method without a paper preset is skipped under paper.")
    sweep_name = c2.text_input("sweep name", "", key="sweep-name", placeholder="default: a hash of what it sweeps")
    slots["sweep-name"] = c2.empty()
    grid_text = st.text_area("option grid, one option per line", "", key="sweep-grid",
                             placeholder="rank=4,8,16\nlr=0.001,0.005",
                             help="NAME=V1,V2,...: a run option (lr, steps_per_task...), else each method's own "
                                  "(rank...), else the stream's; a method without the option does not vary with "
                                  "it. A JSON list for values with commas: angles=[[45,90],[90,180]].")
    slots["sweep-grid"] = st.empty()
    c1, c2, c3 = st.columns([2, 1, 1])
    where = c1.selectbox("run on", list(LAUNCHERS), key="sweep-launcher", format_func=lambda n: LAUNCHERS[n].title)
    address = "local"
    if where != "local":   # a cluster: where it is, as --launcher names it
        address = c1.text_input("where, as --launcher writes it", LAUNCHERS[where].suggested_spec(),
                                key=f"sweep-{where}-address",
                                help=f"{LAUNCHERS[where].spec_help}. The store must be one every node reaches: "
                                     "PostgreSQL.")
    slots["sweep-launcher"] = c1.empty()
    cpus = c2.number_input("CPUs per run", 0.25, 64.0, 1.0, 0.25, key="sweep-cpus")
    gpus = c3.number_input("GPUs per run", 0.0, 8.0, 0.0, 0.125, key="sweep-gpus", disabled=where == "local",
                           help="On a Ray cluster 0.125 lets eight tiny runs share one GPU; SLURM gives whole GPUs.")
    sweep_plan = None
    if sweeping and methods:
        # the seeds and the grid are read apart, so that a bad value in one does not hide the other's
        sweep_errors: dict[str, str] = {}
        try:
            seeds = parse_seeds(seeds_text)
        except ConfigError as exc:
            sweep_errors["seeds"], seeds = str(exc), [0]
        try:
            grid = grid_of(grid_text)
        except (UserError, ValueError) as exc:   # a JSON list that does not parse
            sweep_errors["sweep-grid"], grid = str(exc), None
        if grid is not None and not sweep_errors:
            try:
                base = {k: v for k, v in form_values(methods[0], seeds[0], True).items()
                        if k not in ("method", "seed", "method_options", "stream", "backbone", "preset")}
                sweep = Sweep(methods=list(methods), seeds=seeds, presets=sweep_presets or ["common"], grid=grid,
                              stream=stream, backbone=backbone, name=sweep_name.strip(), base=base,
                              method_options={m: form_values(m, seeds[0], True)["method_options"] for m in methods})
                sweep_plan = plan(store, sweep)
            except ConfigError as exc:   # a form field's value under its field, a grid's value under the grid
                field = exc.field if exc.field in slots and exc.field not in grid else "sweep-grid"
                sweep_errors[field] = str(exc)
            except UserError as exc:
                sweep_errors["sweep-grid"] = str(exc)
        if sweep_plan is not None:
            st.info(sweep_plan.summary().replace("\n  ", "  \n· "))
        for field, message in sweep_errors.items():
            show_error(field, message, "sweep-grid")
    if where != "local" and st.button("Check the cluster", key="sweep-check"):
        try:
            res = parse(address).resources()
            slots["sweep-launcher"].success(f"{res['nodes']} node(s), {res['CPU']:g} CPUs, {res['GPU']:g} GPUs")
        except UserError as exc:
            slots["sweep-launcher"].error(str(exc))

if sweeping:
    count = len(sweep_plan.new) if sweep_plan is not None else 0
    label = f"Queue the sweep's {count} new run{'s' * (count != 1)}" if sweep_plan is not None else "Queue the sweep"
    clicked = st.button(label, type="primary", disabled=sweep_plan is None or not count, key="launch-button",
                        icon=":material/rocket_launch:")
else:
    with st.container(horizontal=True, vertical_alignment="center"):
        clicked = st.button("Launch", type="primary", disabled=not methods, key="launch-button",
                            icon=":material/rocket_launch:")
        if not methods:   # a greyed-out button alone does not say what it waits for
            st.markdown("Pick at least one method above to launch.", width="content")
if clicked and sweeping and sweep_plan is not None:
    try:
        launcher = parse(address)
        # a person launched it here to watch it: ahead of the claims' and the CLI's batches (cldash.runs.priority)
        _, ids = launch_sweep(store, sweep_plan, launcher=launcher,
                              resources=Resources(cpus=float(cpus), gpus=float(gpus)), priority="interactive")
    except UserError as exc:
        slots["sweep-launcher"].error(str(exc))
    else:
        set_selected(ids)
        st.session_state["sweep-queued"] = (
            f"Queued {len(ids)} run{'s' * (len(ids) != 1)} of sweep {sweep_plan.sweep.key()} on "
            f"{launcher.title if launcher.address is None else launcher.address}; filter the Runs page by its group.")
        st.rerun()   # the count and the button say what is left to queue now: nothing
if "sweep-queued" in st.session_state:
    st.success(st.session_state.pop("sweep-queued"))
    st.page_link("pages/live.py", label="Watch them live", icon=":material/monitoring:")
elif clicked and not sweeping:
    # every field is checked in one pass, each error under its field: a bad seeds value hides no other error
    errors: dict[str, str] = {}
    if stream_error:
        errors["stream"] = stream_error
    try:
        seeds = parse_seeds(seeds_text)
    except ConfigError as exc:
        errors["seeds"] = str(exc)
        seeds = []
    drop = run_values["preset"] != "common" or bool(run_values["aid_preset"])
    for name in methods:   # a seed changes no check: each method is checked once, with the first seed
        for field, exc in check_fields(form_values(name, seeds[0] if seeds else 0, drop)).items():
            errors.setdefault("seeds" if field == "seed" else field, str(exc))
    configs = []
    if not errors:
        from cldash.config import resolve

        try:   # the other seeds, whose range the first one's check did not cover
            resolved = [resolve(form_values(name, seed, drop)) for name in methods for seed in seeds]
            if resolved:
                check_inputs(resolved[0])   # every run has the same backbone and stream: weights and data here?
            configs = [r.to_dict() for r in resolved]
        except ConfigError as exc:
            errors["seeds" if exc.field == "seed" else exc.field or "method"] = str(exc)
    if errors:
        for field, message in errors.items():
            show_error(field, message)
        st.error(f"Nothing was launched: {len(errors)} value{'s' * (len(errors) != 1)} to fix above.")
    else:
        digest = hashlib.sha1(json.dumps(configs, sort_keys=True, default=str).encode()).hexdigest()
        recent = st.session_state.get("recent_launch")
        # the same launch again within 10 s is a double click: same keys, so the same runs
        nonce = recent["nonce"] if recent and recent["digest"] == digest and time.time() - recent["at"] < 10 \
            else uuid.uuid4().hex[:12]
        st.session_state.recent_launch = {"digest": digest, "nonce": nonce, "at": time.time()}
        ids = launch(store, configs, [f"{nonce}:{i}" for i in range(len(configs))], group_key=nonce,
                     names=[describe_run(RunConfig(**c)) for c in configs])
        set_selected(ids)
        many = len(ids) > 1
        st.success(f"Launched run{'s' * many} {', '.join(f'#{i}' for i in ids)}; " +
                   ("they run in the background (queued ones start when a slot frees)." if many else
                    "it runs in the background (if it is queued, it starts when a slot frees)."))
        st.page_link("pages/live.py", label="Watch them live", icon=":material/monitoring:")
