"""Launch: pick methods, a stream, a backbone and seeds; every option with its paper default and a
one-line explanation; several methods and seeds side by side in one click."""

import hashlib
import json
import time
import uuid

import streamlit as st

from cldash.backbones import BACKBONES
from cldash.config import RunConfig, check_against_model, describe_run, resolve
from cldash.errors import ConfigError
from cldash.launch import launch
from cldash.methods import POLICIES, REGISTRY
from cldash.options import describe, is_default
from cldash.presets import preset_names, regime_label
from cldash.streams import STREAMS, get_stream
from pages.shared import get_store, option_widget, set_selected, through_app

through_app()

store = get_store()
st.title("Launch runs")
slots: dict[str, st.delta_generator.DeltaGenerator] = {}


def with_slot(key: str, widget_fn):
    """Render a widget and an empty slot right under it for its validation error."""
    value = widget_fn()
    slots[key] = st.empty()
    return value


# what a launch always sends, whatever the regime (the rest is dropped where left at its default: the preset's)
KEEP = {"preset", "aid_preset", "method", "stream", "backbone", "seed", "method_options", "stream_options", "backbone_options"}


def parse_seeds(text: str) -> list[int]:
    seeds = []
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        if "-" in part:
            lo, hi = part.split("-", 1)
            if not (lo.isdigit() and hi.isdigit()) or int(hi) < int(lo):
                raise ConfigError(f"seeds: {part!r} is not a range like 0-2.", "seeds")
            seeds.extend(range(int(lo), int(hi) + 1))
        elif part.isdigit():
            seeds.append(int(part))
        else:
            raise ConfigError(f"seeds must be whole numbers separated by commas, or a range like 0-2 "
                              f"(got {part!r}).", "seeds")
    if not seeds:
        raise ConfigError("seeds: give at least one seed (for example 0, or 0-2).", "seeds")
    return list(dict.fromkeys(seeds))


def method_label(name: str) -> str:
    cls = REGISTRY[name]
    return f"{cls.label} (reconstruction)" if cls.reconstruction else cls.label


names = ["lora", "full"] + sorted(n for n in REGISTRY if n not in ("lora", "full"))
methods = with_slot("method", lambda: st.multiselect("Methods", names, default=["lora"], format_func=method_label, key="launch-methods",
                                                      help="Every method picked runs once per seed, side by side."))
HF = "hf:"   # the choice that opens a field for Hugging Face data sets / models


def hf_spec(text: str) -> str:
    text = text.strip()
    return text if text.startswith(HF) else HF + text


c1, c2, c3 = st.columns(3)
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
with c2:
    kinds = scls.backbone_kinds if scls is not None else ()
    fitting = [n for n, e in BACKBONES.items() if e.kind in kinds]
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
                                                                            "(0-2); one run per method and seed."))
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
             "wins over the preset's."))
    cols = st.columns(4)
    for i, name in enumerate(["steps_per_task", "batch_size", "eval_interval", "spectra_interval"]):
        with cols[i]:
            run_values[name] = with_slot(name, lambda n=name: option_widget(rows[n], f"run-{n}"))
    cols = st.columns(4)
    with cols[0]:
        run_values["lr"] = with_slot("lr", lambda: st.text_input(
            "learning rate", "", placeholder="each method's default",
            help="Leave empty for each method's default (LoRA 5e-3, full fine-tuning 1e-3, ...)."))
    with cols[1]:
        run_values["policy"] = with_slot("policy", lambda: st.selectbox(
            "task-boundary policy", ["", *POLICIES], format_func=lambda p: POLICIES.get(p, "each method's default"),
            help="For methods that leave it open (LoRA and its variants): what happens to the adapter after a task."))
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
            help="Adapter methods keep the pre-trained head frozen by default; full fine-tuning always trains it."))

with st.expander("Replay and EWC (for any method)", expanded=False):
    st.caption("Continual-learning aids that combine with every method: a buffer of finished tasks' examples "
               "replayed at every step, and the EWC penalty that anchors the trained parameters.")
    run_values["aid_preset"] = with_slot("aid_preset", lambda: st.selectbox(
        "TRACE's settings", ["", "replay", "ewc"], key="run-aid_preset",
        format_func=lambda a: {"": "none (the values below)", "replay": "replay: a buffer of 200, balanced",
                               "ewc": "ewc: online EWC, lambda 400"}[a],
        help="The aid as the TRACE benchmark (arXiv 2310.06762) sets it, each value cited (`cldash presets`); a "
             "value you change below wins."))
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
            values[row["name"]] = with_slot(f"{name}.{row['name']}", lambda r=row, d=default: option_widget(
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

clicked = st.button("🚀 Launch", type="primary", disabled=not methods, key="launch-button")
if clicked:
    errors: dict[str, str] = {}
    if stream_error:
        errors["stream"] = stream_error
    configs = []
    try:
        seeds = parse_seeds(seeds_text)
    except ConfigError as exc:
        errors["seeds"] = str(exc)
        seeds = []
    for name in methods:
        for seed in seeds:
            values = {**run_values, "method": name, "stream": stream, "backbone": backbone,
                      "seed": seed, "method_options": method_values[name], "stream_options": stream_values,
                      "backbone_options": backbone_values}
            values["lr"] = values["lr"].strip() or None
            if values["preset"] != "common" or values["aid_preset"]:   # what is left at its default: the preset's
                values = {k: v for k, v in values.items() if k not in rows or k in KEEP or not is_default(rows[k], v)}
                values["method_options"] = {k: v for k, v in method_values[name].items()
                                            if not is_default(option_rows[name][k], v)}
            if not REGISTRY[name].policies:
                values["policy"] = None
            try:
                resolved = resolve(values)
                check_against_model(resolved)
                configs.append(resolved.to_dict())
            except ConfigError as exc:
                errors.setdefault(exc.field or "method", str(exc))
    if errors:
        for field, message in errors.items():
            (slots.get(field) or slots["method"]).error(message)
        st.error(f"Nothing was launched: {len(errors)} value(s) to fix above.")
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
        st.success(f"Launched run{'s' * (len(ids) > 1)} {', '.join(f'#{i}' for i in ids)}; they run in the "
                   "background (queued ones start when a slot frees).")
        st.page_link("pages/live.py", label="Watch them live", icon="📈")
