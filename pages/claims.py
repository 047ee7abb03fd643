"""Claims: each seed paper's headline claim with its verdict per regime, computed from the stored runs by
cldash.analysis.claims (the same verdicts as `cldash claims`), the evidence one click away, the paper's own
numbers beside ours, the tuned regime's searches, and buttons that queue the runs the stopping rule still asks
for. While any claim run is queued or running the verdicts refresh every two seconds."""

import streamlit as st

from cldash.analysis import claims as C, evidence as E
from cldash.analysis.matching import resolved_config
from cldash.analysis.reported import SOURCE
from cldash.analysis.tuning import LA_WINDOW, TRIALS, TUNE_SEEDS, VALIDATION, searches
from cldash.core.errors import UserError
from cldash.core.text import id_ranges
from cldash.dashboard.labels import run_refs
from cldash.dashboard.views import (
    claim_reported_table,
    claim_run_ids,
    claim_searches,
    claim_seeds,
    claim_values_table,
    claims_board,
    params_text,
    search_best_text,
    search_trials_table,
)
from cldash.runs.pace import estimate
from pages.shared import download, get_store, set_selected, through_app

through_app()

# a colour and an icon for every check state (evidence.STATES and the guard's) and every claim verdict
# (claims.VERDICTS): "holds" is the one name the two share, with the same badge
BADGE = {"holds": ("green", ":material/check_circle:"), "opposite": ("red", ":material/cancel:"),
         "equivalent": ("orange", ":material/drag_handle:"), "undecided": ("gray", ":material/help:"),
         "not comparable": ("violet", ":material/block:"), "does not hold": ("red", ":material/cancel:"),
         "not enough evidence": ("gray", ":material/help:"), "not tuned yet": ("blue", ":material/tune:"),
         "not in this setting": ("orange", ":material/location_off:")}
PAGE_FILES = {"Compare": "pages/compare.py", "Spectra": "pages/spectra.py", "Ranks": "pages/ranks.py",
              "Orders": "pages/orders.py", "Live": "pages/live.py", "Runs": "pages/runs.py"}
STEPS = resolved_config({"stream": C.CLAIMS[0].stream})["steps_per_task"]
PAPER_LINE = (f"The paper regime keeps the authors' optimizer settings and learning rate but the common length "
              f"({STEPS} steps a task), so the guard decides what can be compared.")
SHIPPED = C.shipped_study()   # the verdicts that ship with the package, beside the live ones
SCHEDULE = " → ".join(map(str, E.SEED_SCHEDULE))
LAUNCH_HELP = (f"The first {E.SEED_SCHEDULE[0]} seeds of every run, or the next seeds the stopping rule asks for: "
               f"adds seeds to undecided checks, up to {E.SEED_CAP} ({SCHEDULE}).")


def badge(state: str) -> str:
    """A check state's or a claim verdict's badge, with its display text."""
    colour, icon = BADGE[state]
    return f":{colour}-badge[{icon} {E.STATE_TEXT.get(state, state)}]"


def deltas_text() -> str:
    """δ per metric, grouped by value: "0.02 for acc, forgetting ...; 0.1 for update_norm ..."."""
    by_value: dict[float, list[str]] = {}
    for metric, delta in E.DELTAS.items():
        by_value.setdefault(delta, []).append(metric)
    return "; ".join(f"{d:g} for {', '.join(ms)}" for d, ms in by_value.items())


def decision_rule() -> None:
    st.markdown(
        f"**A check** takes the paired difference of one metric between two runs over the seeds both have, with "
        f"its 95 % t-interval. It {badge('holds')} when the interval lies on the claimed side of 0 (past the "
        f"check's margin, where one is given); {badge('opposite')} when it lies clearly on the other side; "
        f"{badge('equivalent')} when two one-sided tests (TOST, 5 % each: the 90 % interval inside ±δ) show the "
        f"difference smaller than δ, the smallest one that matters ({deltas_text()}); otherwise "
        f"{badge('undecided')}, with the smallest difference its seeds could detect.  \n"
        f"**The learned-enough guard.** A check on what a run keeps or ends with ({', '.join(C.GUARDED)}) is "
        f"{badge('not comparable')} when one of its runs learns (LA) more than the guard margin below the claim's "
        f"best learner: a run that learns nothing forgets nothing.  \n"
        f"**A claim** {badge('does not hold')} when any check shows the opposite or no difference; else it has "
        f"{badge('not enough evidence')} while a check is undecided; else it is {badge('not comparable')} when "
        f"a check is guarded; else it {badge('holds')}.  \n"
        f"**Seeds until clear.** {E.SEED_SCHEDULE[0]} seeds first; while a check is undecided, more seeds on a "
        f"schedule fixed in advance ({SCHEDULE}), stopping at {E.SEED_CAP} whatever the answer, so nobody stops "
        f"the moment an interval happens to clear 0. Looking up to {len(E.SEED_SCHEDULE)} times raises the chance "
        f"of declaring a difference that is not there from 5 % to about 14 % (two-sided).  \n"
        f"**Regimes.** *common*: every method on the shared defaults, for a fair side by side; *paper*: "
        f"{PAPER_LINE[len('The paper regime '):]} *tuned*: each run's learning rate, schedule and up to two of "
        f"its own options from one search of {TRIALS} trials on validation data, then verdicts on fresh seeds "
        f"({badge('not tuned yet')} until every run of the claim is searched).")


store = get_store()
st.title("Claims")
st.caption("The seed papers' headline claims, decided by runs in this store. In a terminal, `cldash claims` "
           "prints the same verdicts and `cldash claims --launch` queues the runs they still need.")
with st.expander("Decision rule", expanded=False, icon=":material/gavel:"):
    decision_rule()
st.info(f"**Shipped study** ({SHIPPED['date']}; {SHIPPED['machine']}): each claim below shows the "
        f"verdict of the study that ships with the package, at {SHIPPED['setting']['steps_per_task']} steps a task. "
        f"Reproduce it with `{SHIPPED['command']}`.", icon=":material/inventory_2:")
launched = st.session_state.pop("claims_launched", None)
if launched is not None:
    if launched:
        st.success(f"Queued {len(launched)} run{'s' * (len(launched) != 1)}: {id_ranges(launched)}. They start "
                   "as slots free (sidebar: runs at once); the verdicts below update as they finish.")
        # also where the button was: a per-claim launch is clicked far below the message
        st.toast(f"Queued {len(launched)} run{'s' * (len(launched) != 1)}.", icon=":material/play_arrow:")
    else:
        st.info("Nothing to launch: every run these claims need is finished, queued or running.")


def chosen_setting() -> C.Setting:
    """The setting the page reads and launches: each claim's own length, or the steps per task and the search
    budget chosen under "Setting" (what `cldash claims --steps-per-task N --trials T` reads)."""
    steps = st.session_state.get("claims-steps", 0)
    return C.Setting(steps_per_task=steps or None, trials=st.session_state.get("claims-trials", TRIALS))


def setting_inputs() -> None:
    with st.expander("Setting: the claims at another length or search budget", icon=":material/tune:"):
        with st.container(horizontal=True, gap="large"):
            st.number_input("Steps per task", 0, 100_000, 0, 50, key="claims-steps", width=180,
                            help="0: each claim's own (the common 300). Another length reads and launches the same "
                                 "claims at that length, e.g. the 100-step study of bench/claims_study.py.")
            st.number_input("Search trials (tuned)", 1, 1000, TRIALS, 1, key="claims-trials", width=180,
                            help="The tuned regime's budget: the searches of this many trials a run "
                                 "(`cldash tune --trials N`).")


def launch(claims: tuple, regimes: tuple[str, ...]) -> None:
    try:
        ids = C.launch_missing(store, claims, regimes, setting=chosen_setting(),
                               margin=st.session_state.get("claims-guard", C.GUARD_MARGIN))
    except UserError as exc:   # a read-only store, a configuration that no longer resolves
        st.error(f"Nothing was launched: {exc}")
        return
    st.session_state.claims_launched = ids
    if ids:   # runs on their way: the refresh is on from the next run (no second rerun to lose the message)
        st.session_state.claims_live = True
    st.rerun(scope="app")


def ask(key: str, claims: tuple, regimes: tuple[str, ...]) -> None:
    """A launch button asks before it queues: the confirmation under it (`confirm`) names the runs and the time."""
    st.session_state["claims-ask"] = {"key": key, "claims": [c.key for c in claims], "regimes": list(regimes)}


def confirm(key: str) -> None:
    """Under the launch button `key`, once clicked: how many runs, how long on this machine (runs.pace), that they
    queue behind a lesson launched meanwhile, and Queue / Cancel. Nothing is queued before Queue."""
    asked = st.session_state.get("claims-ask")
    if not asked or asked["key"] != key:
        return
    claims = tuple(c for c in C.CLAIMS if c.key in asked["claims"])
    regimes = tuple(asked["regimes"])
    configs = C.to_launch(store, claims, regimes, setting=chosen_setting(),
                          margin=st.session_state.get("claims-guard", C.GUARD_MARGIN))
    forecast = estimate(store, configs)
    with st.container(border=True, key=f"ask-{key}"):
        st.markdown(f"**Queue {forecast.text()}?**")
        st.caption(f"Estimated from {forecast.source}. They queue as a batch: a lesson, the demo or a Launch page "
                   "run started meanwhile goes ahead of them. Cancel them on the Runs page.")
        with st.container(horizontal=True):
            go = st.button(f"Queue {forecast.runs} run{'s' * (forecast.runs != 1)}", type="primary",
                           key=f"yes-{key}", icon=":material/play_arrow:", disabled=not forecast.runs)
            if st.button("Cancel", key=f"no-{key}", icon=":material/close:"):
                st.session_state.pop("claims-ask", None)
                st.rerun()
    if go:
        st.session_state.pop("claims-ask", None)
        launch(claims, regimes)


def compare(ids: list[int]) -> None:
    set_selected(ids)
    st.switch_page("pages/compare.py")


def values(claim: C.Claim, v: dict, key: str) -> None:
    """The metric values behind a verdict, with the buttons that open its runs on the Compare page."""
    table = claim_values_table(claim, v)
    ids = claim_run_ids(v)
    if not ids:
        st.caption("No finished runs yet.")
        return
    seeds = [c for c in table.columns if c.startswith("seed ")]
    st.dataframe(table[["what", "run", *seeds, "mean ± sd"]], hide_index=True,   # run ids: the buttons below
                 column_config={"what": st.column_config.TextColumn("metric"),
                                **{s: st.column_config.NumberColumn(format="%.3f") for s in seeds}})
    download(table, f"claim-{key}", "Values as CSV", key=f"dl-claim-{key}")
    if st.button(f"Compare these {len(ids)} runs", key=f"cmp-{key}", icon=":material/compare_arrows:",
                 help="Select them (sidebar: selected runs) and open the Compare page"):
        compare(ids)
    with st.container(horizontal=True, vertical_alignment="center"):
        st.caption("or one run's seeds:", width="content")
        for label, by_seed in v["runs"].items():
            if by_seed and st.button(f"{label}: {run_refs(by_seed.values())}",
                                     key=f"cmp-{key}-{label}", type="tertiary", icon=":material/arrow_outward:",
                                     help=f"Select {label}'s runs and open the Compare page"):
                compare(list(by_seed.values()))


def evidence(claim: C.Claim, v: dict) -> None:
    key = f"{claim.key}-{v['regime']}"
    if v["verdict"] in ("not tuned yet", "not in this setting"):
        st.info(v["why"], icon=":material/info:")
        if v["verdict"] == "not tuned yet":
            st.code(f"cldash tune --claim {claim.key}", language="bash")
        return
    if v["regime"] == "paper":
        st.caption(PAPER_LINE)
    if v.get("tuned"):
        st.caption("Tuned values: " + " · ".join(f"{label}: {params_text(p)}" for label, p in v["tuned"].items()))
    for check in v["checks"]:
        st.markdown(f"{badge(check['state'])} **{check['check']}** — {check['why']}")
    values(claim, v, key)
    m = v["missing"]
    if st.button(f"Launch the {m} missing run{'s' * (m != 1)} of this claim ({v['regime']})", disabled=not m,
                 key=f"launch-{key}", icon=":material/play_arrow:", help=LAUNCH_HELP):
        ask(key, (claim,), (v["regime"],))
    confirm(key)
    page, what = claim.look
    if page in PAGE_FILES:
        st.page_link(PAGE_FILES[page], label=f"Look at: {page}, {what}", icon=":material/arrow_forward:")
    else:
        st.markdown(f"Look at: {page}, {what}")


def regime_line(v: dict) -> str:
    """One regime's verdict in a line: its badge, the seeds, what is running and what is still to launch."""
    head = f"*{v['regime']}* {badge(v['verdict'])}"
    if v["verdict"] in ("not tuned yet", "not in this setting"):
        return f"{head} — {v['why']}"
    line = (f"{head} {claim_seeds(v)} of {v['seeds_wanted']} seeds · {v['pending']} queued or running · "
            f"{v['missing']} to launch")
    return line + (" · the same runs as common: no paper preset applies" if v["same_as"] else "")


def source_line(claim: C.Claim) -> str:
    """Where the claim's words come from; the reference note's paraphrase alone is marked."""
    source = SOURCE.get(claim.key, "")
    if "paraphrase" in source:
        return (f":orange-badge[:material/warning: {source}] the claim's words are the reference note's paraphrase, "
                "not read in the paper itself")
    return f"The claim's words: the paper's {source}" if source else ""


def reported_numbers(v: dict) -> None:
    st.dataframe(claim_reported_table(v), hide_index=True,
                 column_config={"where": st.column_config.TextColumn(width="large")})
    st.caption(f"Their setting: {v['paper_setting']}")


def search_list(claim: C.Claim, summaries: list[dict]) -> None:
    """Each run's search (cldash.analysis.tuning): its trials, its best and the best's spread over the seeds."""
    st.caption(f"One search per run, the same for every method: {chosen_setting().trials} trials of Optuna's TPE "
               f"at seed {TUNE_SEEDS[0]}, scored on validation data ({VALIDATION:.0%} of each task's training data "
               f"held out); the best is the highest validation ACC among the trials within {LA_WINDOW:g} of the best "
               f"LA, run again at seeds {', '.join(map(str, TUNE_SEEDS[1:]))} for its spread.")
    for label, s in claim_searches(store, claim, summaries, chosen_setting()).items():
        st.markdown(f"**{label}**")
        if s is None:
            st.caption(f"not searched yet: `cldash tune --claim {claim.key}`")
            continue
        st.caption("Searches " + "; ".join(s.get("space") or []))
        st.dataframe(search_trials_table(s), hide_index=True,
                     column_config={c: st.column_config.NumberColumn(format="%.3f")
                                    for c in ("validation ACC", "LA", "forgetting")})
        st.markdown(search_best_text(s))


def claim_card(claim: C.Claim, vs: list[dict], focus: bool, summaries: list[dict] | None) -> None:
    """One claim: its statement, source and setting, a line per regime, then the evidence, the paper's
    numbers and the searches, each in an expander."""
    with st.container(border=True):
        if focus:
            st.markdown(":blue-badge[:material/school: linked from a lesson]")
        st.markdown(f"**{claim.statement}**")
        st.caption(f"{claim.paper} · `{claim.key}` · stream {claim.stream}" +
                   (f" · {claim.note}" if claim.note else ""))
        st.caption(" · ".join(filter(None, [source_line(claim), f"computed on: {vs[0]['setting']}"])))
        for v in vs:
            st.markdown(regime_line(v))
        st.caption(f"shipped study ({SHIPPED['date']}): " + " · ".join(
            f"{v['regime']} {badge(SHIPPED['by_claim'][claim.key, v['regime']])}" for v in vs
            if (claim.key, v["regime"]) in SHIPPED["by_claim"]))
        shown = {v["regime"] for v in vs}
        for v in vs:   # a paper regime that is the common one is not decided twice
            if v["same_as"] not in shown:
                with st.expander(f"Evidence · {v['regime']} regime", expanded=focus):
                    evidence(claim, v)
        if vs[0]["reported"]:
            with st.expander(f"The paper's own numbers · {len(vs[0]['reported'])}", icon=":material/menu_book:"):
                reported_numbers(vs[0])
        elif vs[0]["paper_setting"]:
            st.caption(f"The paper's setting: {vs[0]['paper_setting']}")
        if summaries is not None:
            with st.expander("Searches · tuned regime", icon=":material/tune:"):
                search_list(claim, summaries)


@st.fragment(run_every=2 if st.session_state.get("claims_live") else None)
def board() -> None:
    with st.container(horizontal=True, vertical_alignment="bottom", gap="large"):
        choice = st.radio("Regime", ["all", *C.REGIMES], horizontal=True, key="claims-regime",
                          help="Which regimes' verdicts to show and which runs the launch buttons queue.")
        margin = st.number_input("Guard margin (LA)", 0.0, 0.5, C.GUARD_MARGIN, 0.01, key="claims-guard",
                                 width=160, help="A check on what a run keeps or ends with is not comparable when "
                                                 "one of its runs' LA is more than this below the claim's best.")
        regimes = C.REGIMES if choice == "all" else (choice,)
        verdicts, to_launch = claims_board(store, regimes, margin, chosen_setting())
        live = any(v["pending"] for v in verdicts)
        if live != st.session_state.get("claims_live", False):   # start or stop the two-second refresh
            st.session_state.claims_live = live
            st.rerun(scope="app")
        if st.button(f"Launch the {to_launch} missing run{'s' * (to_launch != 1)}", type="secondary",
                     disabled=not to_launch, key="claims-launch-all", icon=":material/play_arrow:",
                     help="Every run the claims below still need (claims share runs: each is queued once). "
                          + LAUNCH_HELP + " Asks first, with the time they take."):
            ask("all", C.CLAIMS, regimes)
    confirm("all")
    by_claim: dict[str, list[dict]] = {}
    for v in verdicts:
        by_claim.setdefault(v["claim"], []).append(v)
    summaries = searches(store) if "tuned" in regimes else None
    setting_inputs()
    focus = st.query_params.get("claim")   # ?claim=KEY (a lesson's link): that claim first, its evidence open
    for claim in sorted(C.CLAIMS, key=lambda c: c.key != focus):
        claim_card(claim, by_claim[claim.key], claim.key == focus, summaries)


board()
