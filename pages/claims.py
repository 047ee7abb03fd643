"""Claims: each seed paper's headline claim with its verdict per regime, computed from the stored runs by
cldash.analysis.claims (the same verdicts as `cldash claims`), the evidence one click away, and a button that
queues the runs still missing. While any claim run is queued or running the verdicts refresh every two
seconds."""

import streamlit as st

from cldash.analysis import claims as C
from cldash.core.errors import UserError
from cldash.core.text import id_ranges
from cldash.dashboard.labels import run_refs
from cldash.dashboard.views import claim_run_ids, claim_seeds, claim_values_table, claims_board, paper_is_common
from pages.shared import download, get_store, set_selected, through_app

through_app()

BADGE = {"holds": ("green", ":material/check_circle:"), "does not hold": ("red", ":material/cancel:"),
         "not enough evidence": ("gray", ":material/help:")}
PAGE_FILES = {"Compare": "pages/compare.py", "Spectra": "pages/spectra.py", "Ranks": "pages/ranks.py",
              "Orders": "pages/orders.py", "Live": "pages/live.py", "Runs": "pages/runs.py"}


def badge(verdict: str) -> str:
    colour, icon = BADGE[verdict]
    return f":{colour}-badge[{icon} {verdict}]"


store = get_store()
st.title("Claims")
st.caption("The seed papers' headline claims, decided by runs in this store. In a terminal, `cldash claims` "
           "prints the same verdicts and `cldash claims --launch` queues the missing runs.")
st.markdown(
    f"**Decision rule.** A check takes the paired difference of one metric between two runs over the seeds both "
    f"have, with its 95 % t-interval: it {badge('holds')} when the interval lies on the claimed side of 0 (past "
    f"a margin, where one is given), {badge('does not hold')} otherwise (the opposite, or no clear difference), "
    f"and has {badge('not enough evidence')} below {len(C.SEEDS)} paired seeds. A claim holds when all its "
    f"checks hold.  \n**Regimes.** *common*: every method on the shared defaults, for a fair side by side; "
    f"*paper*: the paper's own training regime, each value cited on the Methods page.")
launched = st.session_state.pop("claims_launched", None)
if launched is not None:
    if launched:
        st.success(f"Queued {len(launched)} run{'s' * (len(launched) != 1)}: {id_ranges(launched)}. They start "
                   "as slots free (sidebar: runs at once); the verdicts below update as they finish.")
        # also where the button was: a per-claim launch is clicked far below the message
        st.toast(f"Queued {len(launched)} run{'s' * (len(launched) != 1)}.", icon=":material/play_arrow:")
    else:
        st.info("Nothing to launch: every run these claims need is finished, queued or running.")


def launch(claims: tuple, regimes: tuple[str, ...]) -> None:
    try:
        ids = C.launch_missing(store, claims, regimes)
    except UserError as exc:   # a read-only store, a configuration that no longer resolves
        st.error(f"Nothing was launched: {exc}")
        return
    st.session_state.claims_launched = ids
    if ids:   # runs on their way: the refresh is on from the next run (no second rerun to lose the message)
        st.session_state.claims_live = True
    st.rerun(scope="app")


def compare(ids: list[int]) -> None:
    set_selected(ids)
    st.switch_page("pages/compare.py")


def evidence(claim: C.Claim, v: dict) -> None:
    key = f"{claim.key}-{v['regime']}"
    for check in v["checks"]:
        st.markdown(f"{badge(check['verdict'])} **{check['check']}** — {check['why']}")
    for caveat in v["caveats"]:
        st.warning(caveat, icon=":material/warning:")
    table = claim_values_table(claim, v)
    if claim_run_ids(v):
        seeds = [c for c in table.columns if c.startswith("seed ")]
        st.dataframe(table[["what", "run", *seeds, "mean ± sd"]], hide_index=True,   # run ids: the buttons below
                     column_config={"what": st.column_config.TextColumn("metric"),
                                    **{s: st.column_config.NumberColumn(format="%.3f") for s in seeds}})
        download(table, f"claim-{key}", "Values as CSV", key=f"dl-claim-{key}")
        ids = claim_run_ids(v)
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
    else:
        st.caption("No finished runs yet.")
    m = v["missing"]
    if st.button(f"Launch the {m} missing run{'s' * (m != 1)} of this claim ({v['regime']})", disabled=not m,
                 key=f"launch-{key}", icon=":material/play_arrow:"):
        launch((claim,), (v["regime"],))
    page, what = claim.look
    if page in PAGE_FILES:
        st.page_link(PAGE_FILES[page], label=f"Look at: {page}, {what}", icon=":material/arrow_forward:")
    else:
        st.markdown(f"Look at: {page}, {what}")


@st.fragment(run_every=2 if st.session_state.get("claims_live") else None)
def board() -> None:
    with st.container(horizontal=True, vertical_alignment="bottom", gap="large"):
        choice = st.radio("Regime", ["both", "common", "paper"], horizontal=True, key="claims-regime",
                          help="Which regimes' verdicts to show and which runs the launch buttons queue.")
        regimes = C.REGIMES if choice == "both" else (choice,)
        verdicts, to_launch = claims_board(store, regimes)
        live = any(v["pending"] for v in verdicts)
        if live != st.session_state.get("claims_live", False):   # start or stop the two-second refresh
            st.session_state.claims_live = live
            st.rerun(scope="app")
        if st.button(f"Launch the {to_launch} missing run{'s' * (to_launch != 1)}", type="primary",
                     disabled=not to_launch, key="claims-launch-all", icon=":material/play_arrow:",
                     help="Every run the claims below still need (claims share runs: each is queued once), "
                          f"at seeds {', '.join(map(str, C.SEEDS))}."):
            launch(C.CLAIMS, regimes)
    by_claim = {}
    for v in verdicts:
        by_claim.setdefault(v["claim"], []).append(v)
    focus = st.query_params.get("claim")   # ?claim=KEY (a lesson's link): that claim first, its evidence open
    for claim in sorted(C.CLAIMS, key=lambda c: c.key != focus):
        with st.container(border=True):
            if claim.key == focus:
                st.markdown(":blue-badge[:material/school: linked from a lesson]")
            st.markdown(f"**{claim.statement}**")
            st.caption(f"{claim.paper} · `{claim.key}` · stream {claim.stream}" +
                       (f" · {claim.note}" if claim.note else ""))
            for v in by_claim[claim.key]:
                same = v["regime"] == "paper" and paper_is_common(claim)
                st.markdown(f"*{v['regime']}* {badge(v['verdict'])} {claim_seeds(v)} of {len(C.SEEDS)} seeds · "
                            f"{v['pending']} queued or running · {v['missing']} to launch" +
                            (" · the same runs as common: no paper preset applies" if same else ""))
            for v in by_claim[claim.key]:
                with st.expander(f"Evidence · {v['regime']} regime", expanded=claim.key == focus):
                    evidence(claim, v)


board()
