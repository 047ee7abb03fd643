"""`cldash lessons` (the classroom lessons: a question, runs that take about a minute, what to look at;
--launch NAME queues one) and `cldash demo` (the quick demo, or --full every method, watched to the end
with a progress line per run)."""

from __future__ import annotations

import sys
import uuid

from cldash.analysis import lessons as L
from cldash.cli.waiting import store_reconciled, until_ended, wait_for, why
from cldash.core.text import id_ranges
from cldash.runs.demo import demo_line, launch_demo


def add_lessons_arguments(p) -> None:
    p.add_argument("--launch", metavar="NAME", help="queue this lesson's runs (a finished one is reused)")
    p.add_argument("--steps-per-task", type=int, metavar="N", help="train N steps a task instead of the lesson's own")
    p.add_argument("--wait", action="store_true", help="wait until its runs have ended, a line each")


def cmd_lessons(args) -> int:
    """The classroom lessons; --launch NAME queues one (at --steps-per-task N) and --wait waits for its runs."""
    if not args.launch:
        for lesson in L.LESSONS:
            print(f"{lesson.key:<11} {lesson.title}\n{'':<11} {lesson.question}\n{'':<11} {L.summary(lesson)}: "
                  f"{'; '.join(lesson.runs)}\n")
        print("cldash lessons --launch NAME [--steps-per-task N] [--wait] queues one; the Lessons page shows its "
              "reading")
        return 0
    lesson = L.get_lesson(args.launch)   # before opening the store
    L.check_length(args.steps_per_task)
    store = store_reconciled(args.db)
    ids = L.launch_lesson(store, lesson.key, args.steps_per_task)
    print(f"lesson {lesson.key}: runs {id_ranges(ids)} ({'; '.join(lesson.runs)}) -> {store.display}; the "
          f"Lessons page (?lesson={lesson.key}) shows them and the reading")
    return wait_for(store, ids) if args.wait else 0


def add_demo_arguments(p) -> None:
    p.add_argument("--full", action="store_true", help="the full comparison: every method, 5 tasks of 300 steps")


def cmd_demo(args) -> int:
    """Queue the demo comparison (--full: every method, full length) and wait, a progress line per run."""
    store = store_reconciled(args.db)
    ids = launch_demo(store, f"demo-{uuid.uuid4().hex[:8]}", full=args.full)
    print(f"{'full' if args.full else 'quick'} demo: runs {id_ranges(ids)} -> {store.display}", flush=True)
    return _watch(store, ids, sys.stdout.isatty())


def _watch(store, ids: list[int], tty: bool, poll: float = 1.0) -> int:
    """Wait until these runs have ended, one progress line per run: on a terminal redrawn in place every `poll`
    seconds, otherwise a line whenever a run starts, moves to another task or ends. 0 if all finished, else 1."""
    seen: dict[int, tuple] = {}
    drawn = [0]

    def lines(runs):
        if tty:
            print(("\x1b[F\x1b[K" * drawn[0]) + "\n".join(demo_line(r) for r in runs), flush=True)
            drawn[0] = len(runs)
            return
        for r in runs:
            state = (r["status"], r["task"] if r["status"] == "running" else None)
            if seen.get(r["id"]) != state:
                seen[r["id"]] = state
                print(demo_line(r), flush=True)

    runs = until_ended(store, ids, lines, poll)
    for r in runs:
        if why(r):   # why, in one line, as `cldash sweep --wait` says it
            print(f"run {r['id']} {r['status']}{why(r)}")
    failed = ", ".join(f"#{r['id']} {r['status']}" for r in runs if r["status"] != "finished")
    done = sum(r["status"] == "finished" for r in runs)
    print(f"{done} of {len(runs)} runs finished" + (f"; {failed}" if failed else
          "; `cldash list` shows their metrics and the Compare page their matrices"))
    return 1 if failed else 0
