"""Lessons (cldash.analysis.lessons), the quick demo, `cldash lessons` and `cldash demo`, the Lessons page and the
welcome page. Nothing here trains: launches are queued with the scheduler switched off, and the pages are read under
AppTest; tests/pages/test_browser_lesson.py runs one lesson for real."""

import re
from pathlib import Path
from urllib.parse import parse_qs

import pytest

from cldash.analysis import lessons as L
from cldash.analysis.claims import CLAIMS
from cldash.analysis.matching import match_key
from cldash.cli import main
from cldash.store import Store

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def no_start(monkeypatch):
    """Queued runs stay queued: no run process starts (the dashboard's sidebar schedules too)."""
    from conftest import keep_runs_queued

    keep_runs_queued(monkeypatch)


@pytest.mark.parametrize("lesson", L.LESSONS, ids=lambda x: x.key)
def test_every_lesson_resolves_and_its_reading_names_real_pages_and_claims(lesson):
    from cldash.config import check_against_model, resolve

    cfgs = L.configs(lesson)
    assert list(cfgs) == list(lesson.runs) and len(cfgs) >= 2
    assert len({match_key(c) for c in cfgs.values()}) == len(cfgs)          # every run is a distinct setting
    for cfg in cfgs.values():
        assert cfg["stream"] == L.STREAM and cfg["steps_per_task"] == lesson.steps_per_task
        assert cfg["seed"] == 0 and cfg["eval_interval"] == L.RUN_DEFAULTS["eval_interval"]
        assert len(cfg["stream_options"]["angles"]) == lesson.tasks
        check_against_model(resolve(cfg))                               # ranks fit the layers
    # the lesson's whole stream, two at a time: about a minute on 2 cores
    assert lesson.tasks * lesson.steps_per_task * -(-len(lesson.runs) // 2) <= 1000
    app = (ROOT / "app.py").read_text()
    assert lesson.reading and lesson.question.endswith("?") and lesson.seconds > 0
    for step in lesson.reading:
        assert (ROOT / L.PAGES[step.page]).exists() and f'"{L.PAGES[step.page]}"' in app
        assert step.claim is None or step.claim in {c.key for c in CLAIMS}
        assert step.chart and step.look and step.notice
    # a teacher's length replaces the lesson's own in every run, and nothing else
    short = L.configs(lesson, steps_per_task=7)
    for label, cfg in short.items():
        assert cfg["steps_per_task"] == 7 and {**cfg, "steps_per_task": lesson.steps_per_task} == cfgs[label]


STEPS = [(lesson, n, step) for lesson in L.LESSONS for n, step in enumerate(lesson.reading, start=1)]


@pytest.mark.parametrize("lesson, n, step", STEPS, ids=[f"{x.key}-{n}" for x, n, _ in STEPS])
def test_every_steps_link_names_a_state_its_page_has(lesson, n, step):
    """The state a step's link carries (run, update kind, module, measures, section) is one its page can show: the
    section a header the page draws with that anchor (tests/pages/test_app_links.py draws them), the run one of the
    lesson's, the module one its backbone adapts."""
    from cldash.config import check_against_model, resolve
    from cldash.dashboard.labels import MEASURE_LABELS

    assert step.page in L.PAGES
    assert step.section is None or step.section in L.SECTIONS[step.page]
    assert step.run is None or (step.run in lesson.runs and step.page in L.RUN_PAGES)
    if step.page != "Spectra":
        assert step.kind is None and step.module is None and not step.measures
    else:
        assert step.kind in L.UPDATE_KINDS and step.run is not None
        assert step.module in check_against_model(resolve(L.config(lesson, step.run)))
        assert set(step.measures) <= set(MEASURE_LABELS)
    ids = {label: 10 + i for i, label in enumerate(lesson.runs)}
    state = step.link_state(ids)
    assert state.get("run") == (str(ids[step.run]) if step.run else None)
    assert state.get("section") == step.section and state.get("kind") == step.kind
    assert step.link_state({}).get("run") is None       # not launched yet: the page's own default run
    words = step.opens(ids)         # the link's tooltip says what it opens
    assert words.startswith(f"Opens {step.page} ") and (not step.run or f"{step.run} (#{ids[step.run]})" in words)
    assert not step.section or L.SECTIONS[step.page][step.section] in words


def test_the_steps_ask_for_what_their_text_names():
    """A step that names a run, an update kind or a measure in its text carries that state."""
    for lesson, _, step in STEPS:
        for kind in L.UPDATE_KINDS:
            if f"update: {kind}" in step.look:
                assert step.kind == kind, (lesson.key, step.look)
        if "pick the CoDyRA run" in step.look:
            assert step.run == "CoDyRA"
    spectra = L.get_lesson("spectra").reading
    assert (spectra[0].run, spectra[0].kind) == ("LoRA r=16", "task")   # "first for LoRA … (update: task)"
    assert set(spectra[1].measures) == {"top1_energy", "erank"} and spectra[1].section == "shape-measures"
    assert "w0_energy" in L.get_lesson("where").reading[0].measures    # "energy in W0's top directions"
    metrics = [s for _, _, s in STEPS if s.page == "Compare" and s.chart == "Metrics"]
    assert metrics and {s.section for s in metrics} == {"metrics"}


def test_the_lessons_cover_the_six_topics_with_their_methods():
    methods = {x.key: sorted({s.method for s in x.runs.values()}) for x in L.LESSONS}
    assert methods == {"forgetting": ["full", "lora"], "rank": ["codyra", "lora"], "spectra": ["eblora", "lora"],
                       "where": ["lora", "loretta", "pissa", "wegeft"], "rehearsal": ["lora"], "order": ["lora"]}
    ranks = [c["method_options"]["rank"] for c in L.configs(L.get_lesson("rank")).values() if c["method"] == "lora"]
    assert ranks == [1, 4, 16]
    aids = [(c["replay"], c["ewc_lambda"]) for c in L.configs(L.get_lesson("rehearsal")).values()]
    assert aids == [(0, 0.0), (200, 0.0), (0, 400.0)]
    orders = [c["stream_options"]["angles"] for c in L.configs(L.get_lesson("order")).values()]
    from cldash.analysis.claims import ADVERSARIAL_ROTATIONS

    assert orders == [[36.0, 72.0, 108.0, 144.0, 180.0], ADVERSARIAL_ROTATIONS]
    assert any("w0" in s.look or "W0" in s.look for s in L.get_lesson("where").reading)
    with pytest.raises(Exception, match="the lessons are: forgetting, rank"):
        L.get_lesson("nope")


def test_a_double_launch_queues_once_and_a_failed_run_is_launched_again(db, no_start):
    store = Store(db)
    first = L.launch_lesson(store, "rank", steps_per_task=2)
    assert L.launch_lesson(store, "rank", steps_per_task=2) == first and len(store.runs()) == 4
    assert {r["group_key"] for r in store.runs()} == {"lesson:rank"}
    assert [r["config"]["steps_per_task"] for r in store.runs()] == [2] * 4
    store.update_run(first[1], status="failed", error="boom")
    again = L.launch_lesson(store, "rank", steps_per_task=2)
    assert again[0] == first[0] and again[2:] == first[2:] and again[1] not in first
    # another length is another set of runs; the lesson's state reads per length
    other = L.launch_lesson(store, "rank", steps_per_task=3)
    assert not set(other) & set(again) and len(store.runs()) == 9
    state = L.progress(L.lesson_runs(store, L.get_lesson("rank"), 2))
    assert state == {"launched": 4, "finished": 0, "active": 4, "failed": 0, "progress": 0.0, "done": False}
    for i in again:
        store.update_run(i, status="finished", progress=1.0)
    assert L.progress(L.lesson_runs(store, L.get_lesson("rank"), 2))["done"]
    with pytest.raises(Exception, match="steps per task must be between 1 and 10000"):
        L.launch_lesson(store, "rank", steps_per_task=0)


def test_cli_lists_launches_and_rejects_an_unknown_lesson(db, no_start, capsys):
    assert main(["lessons"]) == 0
    out = capsys.readouterr().out
    for lesson in L.LESSONS:
        assert lesson.key in out and lesson.title in out and lesson.question in out and L.summary(lesson) in out
    assert main(["--db", db, "lessons", "--launch", "order", "--steps-per-task", "3"]) == 0
    assert "lesson order: runs #1 to #2 (LoRA, natural order; LoRA, adversarial order)" in capsys.readouterr().out
    runs = Store(db).runs()
    assert [r["config"]["steps_per_task"] for r in runs] == [3, 3] and runs[0]["group_key"] == "lesson:order"
    assert main(["--db", db, "lessons", "--launch", "order", "--steps-per-task", "3"]) == 0   # launched once
    assert len(Store(db).runs()) == 2
    assert main(["--db", db, "lessons", "--launch", "forgeting"]) == 2
    err = capsys.readouterr().err
    assert "unknown lesson 'forgeting'" in err and "forgetting, rank, spectra, where, rehearsal, order" in err
    assert err.count("\n") == 1


def test_the_quick_demo_is_four_methods_on_a_short_stream_and_the_full_one_every_method():
    from cldash.methods import REGISTRY
    from cldash.runs.demo import QUICK_DEMO_METHODS, demo_configs

    quick, full = demo_configs(), demo_configs(full=True)
    assert [c["method"] for c in quick] == list(QUICK_DEMO_METHODS) == ["lora", "full", "eblora", "pissa"]
    assert {(c["steps_per_task"], len(c["stream_options"]["angles"])) for c in quick} == {(100, 3)}
    assert sorted(c["method"] for c in full) == sorted(REGISTRY) and {c["steps_per_task"] for c in full} == {300}


class ScriptedStore:
    """A store whose runs move through scripted states, one per read."""

    def __init__(self, states):
        self.states = states
        self.reads = 0

    def runs(self, ids=None, status=None):
        state = self.states[min(self.reads, len(self.states) - 1)]
        self.reads += 1
        return state


def _run(i, status, task=0, step=0, progress=0.0):
    return {"id": i, "name": f"lora r=8 · digits-rotate · seed {i}", "method": "lora", "status": status,
            "task": task, "num_tasks": 2, "step": step, "total_steps": 20, "progress": progress,
            "config": {"steps_per_task": 10}, "error": None}


def test_demo_progress_lines_on_a_pipe_and_on_a_terminal(monkeypatch, capsys):
    from cldash.cli import lessons, waiting

    monkeypatch.setattr("cldash.cli.waiting.reconcile", lambda store: [])
    monkeypatch.setattr(waiting.time, "sleep", lambda s: None)
    states = [[_run(1, "queued"), _run(2, "queued")],
              [_run(1, "running", 1, 4, 0.2), _run(2, "queued")],
              [_run(1, "running", 1, 8, 0.4), _run(2, "running", 1, 2, 0.1)],   # no task change: no new line
              [_run(1, "running", 2, 12, 0.6), _run(2, "running", 1, 6, 0.3)],
              [_run(1, "finished", 2, 20, 1.0), {**_run(2, "failed", 1, 9, 0.45), "error": "diverged\nTraceback"}]]
    assert lessons._watch(ScriptedStore(states), [1, 2], tty=False) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("#1") and "queued" in lines[0] and lines[1].startswith("#2")
    assert [ln[:2] for ln in lines[2:-2]] == ["#1", "#2", "#1", "#1", "#2"]
    assert "task 1/2" in lines[2] and "step 4/20" in lines[2] and "[##........]  20 % running" in lines[2]
    assert "[##########] 100 % finished" in lines[-4] and "45 % failed" in lines[-3]
    assert lines[-2:] == ["run 2 failed: diverged", "1 of 2 runs finished; #2 failed"]
    from cldash.runs.demo import demo_line

    fresh = {**_run(3, "queued"), "num_tasks": 0, "total_steps": 100}     # before its process built the stream
    assert demo_line(fresh) == "#3   lora r=8           task -    step -         [..........]   0 % queued"
    # on a terminal: every poll redraws the same two lines in place
    assert lessons._watch(ScriptedStore(states[-2:-1] + [[_run(1, "finished", 2, 20, 1.0)] * 1 + [
        _run(2, "finished", 2, 20, 1.0)]]), [1, 2], tty=True) == 0
    out = capsys.readouterr().out
    assert out.count("\x1b[F\x1b[K") == 2 and out.count("100 % finished") == 2
    assert out.rstrip().endswith("2 of 2 runs finished; `cldash list` shows their metrics and the Compare page "
                                 "their matrices")


def test_cldash_demo_queues_the_quick_or_full_demo_and_watches_it(db, no_start, monkeypatch, capsys):
    from cldash.cli import lessons

    watched = []
    monkeypatch.setattr(lessons, "_watch", lambda store, ids, tty: watched.append(ids) or 0)
    assert main(["--db", db, "demo"]) == 0
    assert [r["method"] for r in Store(db).runs()] == ["lora", "full", "eblora", "pissa"]
    assert re.match(r"quick demo: runs #1 to #4 -> ", capsys.readouterr().out) and watched == [[1, 2, 3, 4]]
    assert main(["--db", db, "demo", "--full"]) == 0
    assert len(Store(db).runs()) == 4 + 14 and len(watched[1]) == 14
    quick, full = ({r["group_key"] for r in Store(db).runs()[a:b]} for a, b in ((0, 4), (4, None)))
    assert len(quick) == len(full) == 1 and full.pop().endswith("-full") and not quick.pop().endswith("-full")


# -- the pages ------------------------------------------------------------------------------------

def _app(db, monkeypatch, query=None):
    from streamlit.testing.v1 import AppTest

    from test_app import v2_navigation

    monkeypatch.setenv("CLDASH_DB", str(db))
    v2_navigation(monkeypatch)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    for k, v in (query or {}).items():
        at.query_params[k] = v
    return at


def _links(at) -> list[tuple[str, str, str]]:
    return [(e.proto.label, e.proto.page, e.proto.query_string) for e in at.get("page_link")]


def test_lessons_page_launches_a_lesson_at_a_length_and_links_its_reading(db, no_start, monkeypatch):
    store = Store(db)
    at = _app(db, monkeypatch, {"lesson": "where"}).run()
    at.switch_page("pages/lessons.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.selectbox(key="lesson-pick").value == "where"
    assert L.get_lesson("where").question in [s.value for s in at.subheader]
    assert any("Not launched yet" in i.value for i in at.info)
    at.number_input(key="lesson-steps-where").set_value(3).run()
    at.button(key="lesson-launch-where").click().run()
    assert not at.exception, [e.value for e in at.exception]
    runs = store.runs()
    assert [r["method"] for r in runs] == ["lora", "pissa", "wegeft", "loretta"]
    assert {r["config"]["steps_per_task"] for r in runs} == {3} and {r["group_key"] for r in runs} == {"lesson:where"}
    assert at.session_state["selected"] == [1, 2, 3, 4]
    text = " ".join(m.value for m in at.markdown)
    assert "**PiSSA** · run #2 · queued · 0 %" in text
    links = _links(at)
    reading = L.get_lesson("where").reading
    opens = [lk for lk in links if lk[0].startswith("Open ")]
    assert [lk[0] for lk in opens] == [f"Open {s.page}" for s in reading]
    # each link carries the lesson's runs and the state its step describes: LoRA r=8 is run #1
    queries = [{k: v[0] for k, v in parse_qs(lk[2]).items()} for lk in opens]
    assert queries == [{"runs": "1,2,3,4", "run": "1", "kind": "cumulative", "module": L.MODULE,
                        "measures": "w0_energy,frobenius", "section": "shape-measures"},
                       {"runs": "1,2,3,4", "section": "metrics"}]
    claims = [lk for lk in links if lk[0].startswith("The claim")]
    assert claims and all(lk[2] == "claim=study-pissa" for lk in claims)
    for r in runs:
        store.update_run(r["id"], status="finished", progress=1.0)
    at.run()
    assert "4 of 4 finished" in at.get("progress")[0].proto.text
    # a class follows a step's link and comes back for the next step (the sidebar's navigation clears the URL's
    # ?lesson=): the same lesson at the same length, its links still carrying the runs
    at.query_params.clear()
    at.switch_page("pages/compare.py").run()
    at.switch_page("pages/lessons.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.selectbox(key="lesson-pick").value == "where" and at.number_input(key="lesson-steps-where").value == 3
    assert [{k: v[0] for k, v in parse_qs(lk[2]).items()} for lk in _links(at) if lk[0].startswith("Open ")] == queries
    helps = [e.proto.help for e in at.get("page_link") if e.proto.label.startswith("Open ")]
    assert helps == ["Opens Spectra on LoRA r=8 (#1), update: cumulative, module vit.layers.0.attention.k_proj, at "
                     "Shape measures over steps.", "Opens Compare at Metrics."]


def test_claims_page_opens_the_claim_a_lesson_links_to(db, monkeypatch):
    at = _app(db, monkeypatch, {"claim": "study-pissa"}).run()
    at.switch_page("pages/claims.py").run()
    assert not at.exception
    statements = [m.value for m in at.markdown if m.value.startswith("**") and m.value.endswith("**")]
    pissa = next(c for c in CLAIMS if c.key == "study-pissa")
    assert statements[0] == f"**{pissa.statement}**"
    assert any("linked from a lesson" in m.value for m in at.markdown)
    # its evidence open, one expander per regime (all three shown); nothing else open
    evidence = [e for e in at.expander if e.label.startswith("Evidence · ")]
    assert [e.proto.expanded for e in evidence][:3] == [True, True, True]
    assert not any(e.proto.expanded for e in evidence[3:])
    assert not any(e.proto.expanded for e in at.expander if not e.label.startswith("Evidence · "))


def test_welcome_page_launches_a_lesson_the_quick_demo_or_the_full_comparison(db, no_start, monkeypatch):
    store = Store(db)
    at = _app(db, monkeypatch).run()
    assert "Welcome to cldash" in [s.value for s in at.title]
    assert ("Launch page", "launch") in [lk[:2] for lk in _links(at)]    # a real link, not bold text
    assert "14 methods" in at.button(key="demo-full-button").label
    at.selectbox(key="welcome-lesson").set_value("spectra").run()
    assert any(L.get_lesson("spectra").question in m.value for m in at.markdown)
    at.button(key="welcome-lesson-button").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert [r["method"] for r in store.runs()] == ["lora", "eblora"]
    assert at.selectbox(key="lesson-pick").value == "spectra"     # it went on to the Lessons page

    other = Path(db).with_name("other.db")
    at = _app(other, monkeypatch).run()
    at.button(key="demo-button").click().run()
    assert [r["method"] for r in Store(str(other)).runs()] == ["lora", "full", "eblora", "pissa"]
