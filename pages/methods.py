"""Methods: a card per registered method, generated from the registry (what it changes, its
equation, its paper, its defaults, its paper preset against the common defaults), with the values its
tuning searches found (cldash.analysis.tuning), for teaching."""

import pandas as pd
import streamlit as st

from cldash.analysis.tuning import searches
from cldash.config.presets import regime_table
from cldash.dashboard.tables import options_table
from cldash.dashboard.views import method_facts, method_order, method_searches_table
from cldash.methods import POLICIES, REGISTRY, marked_label, paper_presets
from pages.shared import get_store, through_app

through_app()

st.title("Methods")
st.caption("Every card is generated from the method's code: its docstring summary, equation, paper and options.")
order = method_order(REGISTRY)
summaries = searches(get_store())
# a table of contents: one link per card (each card's title carries the anchor)
st.markdown("**Contents:** " + " · ".join(f"[{REGISTRY[n].label}](#method-{n})" for n in order)
            + " · [Replay and EWC](#replay-and-ewc)")
for name in order:
    cls = REGISTRY[name]
    with st.container(border=True):
        st.subheader(marked_label(cls), anchor=f"method-{name}")
        st.markdown(f"`--method {name}`")
        st.markdown(cls.summary)
        if cls.equation:
            st.latex(cls.equation)
        if cls.reconstruction:
            st.warning(f"Reconstruction: {cls.reconstruction}")
        st.caption(f"Paper: {cls.paper}")
        options = options_table(cls.Config)
        if len(options):
            # a static table wraps its text: every "default from" is read in full (a dataframe cuts cells off)
            st.table(options)
        st.markdown("  \n".join(method_facts(cls, POLICIES)))
        regime = regime_table(name)
        if regime:
            preset = paper_presets()[name]
            st.markdown(f"**Two regimes.** *common* (the default, the same for every method) and *paper* (the "
                        f"authors' published regime: `--preset paper`), from {preset.paper}"
                        + (f", code `{preset.code}`" if preset.code else "") + ":")
            # static too: at 1024 px a dataframe cuts the options' names and the sources off, in 12 px canvas text
            st.table(pd.DataFrame(regime), hide_index=True)
            for note in preset.notes:
                st.caption(note)
        else:
            st.caption("No paper preset: its authors published no training regime that carries over; it runs in "
                       "the common regime, or in another method's with `--preset paper:METHOD`.")
        tuned = method_searches_table(summaries, name)
        if len(tuned):
            st.markdown("**Tuned** (the tuned regime: the best of one search per target, on validation data):")
            st.dataframe(tuned, hide_index=True,
                         column_config={"validation ACC": st.column_config.NumberColumn(format="%.3f")})
        else:
            st.caption(f"not tuned yet: `cldash tune --method {name} --stream S`")

with st.container(border=True):
    st.subheader("Replay and EWC · for any method", anchor="replay-and-ewc")
    st.markdown("Run options rather than methods, so they combine with every method above (Launch → "
                "*Replay and EWC*; `--replay`, `--ewc-lambda` on the command line). **Replay** keeps a buffer of "
                "finished tasks' examples and adds the loss of one replayed batch to every step (Chaudhry et al., "
                "arXiv 1902.10486). **EWC** anchors the parameters that train with the diagonal Fisher of each "
                "task (Kirkpatrick et al., arXiv 1612.00796; online EWC, arXiv 1805.06370).")
    st.latex(r"L = L_t + L(\text{replay batch}) + \frac{\lambda}{2}\sum_i F_i\,(\theta_i - \theta^*_i)^2")
    st.caption("With the merge policy an adapter's earlier tasks live in the frozen weight, so EWC has nothing "
               "to anchor; use it with the single policy or with full fine-tuning.")
