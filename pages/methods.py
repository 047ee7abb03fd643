"""Methods: a card per registered method, generated from the registry (what it changes, its
equation, its paper, its defaults), for teaching."""

import pandas as pd
import streamlit as st

from cldash.methods import POLICIES, REGISTRY
from cldash.options import describe
from pages.shared import through_app

through_app()

st.title("Methods")
st.caption("Every card is generated from the method's code: its docstring summary, equation, paper and options.")
order = ["lora", "full"] + sorted(n for n in REGISTRY if n not in ("lora", "full"))
for name in order:
    cls = REGISTRY[name]
    with st.container(border=True):
        title = f"### {cls.label}" + (" · reconstruction" if cls.reconstruction else "")
        st.markdown(title + f"  \n`--method {name}`")
        st.markdown(cls.summary)
        if cls.equation:
            st.latex(cls.equation)
        if cls.reconstruction:
            st.warning(f"Reconstruction: {cls.reconstruction}")
        st.caption(f"Paper: {cls.paper}")
        rows = describe(cls.Config)
        if rows:
            st.dataframe(pd.DataFrame([{"option": r["name"], "default": str(r["default"]), "what it does": r["help"],
                                        "default from": r.get("source") or ""} for r in rows]), hide_index=True)
        facts = [f"default learning rate {cls.default_lr:g}"]
        if cls.policies:
            facts.append("task-boundary policy: " + ", ".join(f"**{p}** ({POLICIES[p]})" for p in cls.policies) +
                         f"; default {cls.policies[0]}")
        facts.append("trains every backbone weight" if cls.trains_backbone else "trains only its adapters")
        st.markdown("  \n".join(facts))
