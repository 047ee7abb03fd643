"""The same numbers on every machine: a short run's accuracy matrix, bit for bit.

The README promises that a cldash version and seed give the same accuracy matrix on every machine
within the tested versions (its install section's floors). data/pinned_matrix.json holds the numbers
one short run gives in the pinned environment (.ci/constraints.txt), as float.hex, with the versions
that made them. .ci/run checks them there, and .ci/floors.sh again at the floors
(.ci/constraints-floor.txt): a library version that moves one bit of one score fails here.

Remake the file after a change that is meant to move the numbers, in the pinned environment:
``python tests/backbones/test_pinned_numbers.py --write``.
"""

import json
import platform
import sys
import tempfile
from pathlib import Path

import pytest

PINNED = Path(__file__).parent / "data" / "pinned_matrix.json"
QUIET = ["--seed", "0", "--eval-interval", "0", "--spectra-interval", "0", "--dense-spectra-interval", "0", "--quiet"]
# one short LoRA run on each shipped backbone, evaluated at each task's end: vit-tiny on two rotated-digits tasks
# scored on the whole held-out split (539 digits: a score moves by 1/539, not 1/64), gpt2-tiny on two skills
RUNS = {
    "vit-tiny": ["run", "--method", "lora", "--stream", "digits-rotate", "--stream-angles", "45,90",
                 "--steps-per-task", "30", *QUIET],
    "gpt2-tiny": ["run", "--method", "lora", "--stream", "skills", "--stream-skills", "successor,add_mod",
                  "--stream-train-examples", "256", "--stream-test-examples", "100", "--steps-per-task", "30", *QUIET],
}


def short_run_numbers(backbone: str, folder: Path) -> dict:
    """The short run's accuracy matrix and general-task columns as float.hex, and where its weights came from."""
    from cldash.cli import main
    from cldash.store import Store

    db = str(folder / f"{backbone}.db")
    assert main(["--db", db, *RUNS[backbone]]) == 0
    store = Store(db)
    (run,) = store.runs()
    m = store.accuracy_matrix(run["id"])
    return {"weights": run["weights"]["source"], "metric": m["metric"],
            "R": [[float(x).hex() for x in row] for row in m["R"]],
            "general": {k: [float(x).hex() for x in v] for k, v in m["general"].items()}}


def made_with() -> dict:
    import torch
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__}


@pytest.mark.floors
@pytest.mark.parametrize("backbone", list(RUNS))
def test_a_short_run_gives_the_pinned_environments_accuracy_matrix_bit_for_bit(backbone, tmp_path, capsys):
    pinned = json.loads(PINNED.read_text())
    assert pinned["runs"][backbone] == RUNS[backbone], "the run changed: remake the file (this module's docstring)"
    got = short_run_numbers(backbone, tmp_path)
    capsys.readouterr()
    assert got["weights"] == "shipped", "the run pre-trained its own backbone: its numbers cannot be the pinned ones"
    readable = [[float.fromhex(x) for x in row] for row in got["R"]]
    assert got == pinned["numbers"][backbone], (f"this environment ({made_with()}) gives other numbers than the "
                                                f"pinned one ({pinned['made_with']}): R = {readable}")


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python tests/backbones/test_pinned_numbers.py --write   (in the pinned environment)")
    with tempfile.TemporaryDirectory() as folder:
        numbers = {name: short_run_numbers(name, Path(folder)) for name in RUNS}
    PINNED.write_text(json.dumps({"runs": RUNS, "made_with": made_with(), "numbers": numbers}, indent=1) + "\n")
    print(f"wrote {PINNED}")
