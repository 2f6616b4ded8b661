#!/usr/bin/env python3
"""Checks with PyBaMM itself that cyclerd's `pybamm` and `pybamm-json` targets mean what the
source string means to PyBaMM.

For every string of protocols/tests/pybamm_corpus.txt, cyclerd's outputs are the ones pinned in
protocols/tests/pybamm_corpus.expected.jsonl (this script first runs the Rust test that checks
the pinned file is what the compiler writes today). PyBaMM then parses the source string, our
string (`pybamm.Experiment([...])`) and our JSON (`pybamm.Experiment.from_config`), and the
steps are compared: step class, signed value, duration, `uses_default_duration`, period and
terminations (class, value, operator as written).

Needs PyBaMM (`pip install pybamm`); CI does not run this. Usage:
    python3 scripts/pybamm-roundtrip.py [--no-cargo]
Exit status 0 when every string round-trips identically through both targets.
"""
import json
import pathlib
import subprocess
import sys

import pybamm

ROOT = pathlib.Path(__file__).resolve().parent.parent
PINNED = ROOT / "protocols/tests/pybamm_corpus.expected.jsonl"


def key(step):
    """What a step means to PyBaMM, as comparable values."""
    return {
        "type": type(step).__name__,
        "value": float(step.value) if not isinstance(step.value, pybamm.Symbol) else str(step.value),
        "duration": float(step.duration),
        "uses_default_duration": step.uses_default_duration,
        "period": step.period,
        # PyBaMM's own from_config builds `CrateTermination`, its deprecated alias (a subclass
        # that changes nothing) of `CRateTermination`, which the string parser builds.
        "terminations": [
            (type(t).__name__.replace("CrateTermination", "CRateTermination"), float(t.value), t.operator)
            for t in step.termination
        ],
    }


def main():
    if "--no-cargo" not in sys.argv:
        subprocess.run(
            ["cargo", "test", "-q", "-p", "cyclerd-protocols", "--test", "pybamm_corpus"],
            cwd=ROOT,
            check=True,
        )
    lines = [json.loads(l) for l in PINNED.read_text().splitlines() if l.strip()]
    same = {"pybamm": 0, "pybamm-json": 0}
    for line in lines:
        source = line["source"]
        want = key(pybamm.Experiment([source]).steps[0])
        text_steps = pybamm.Experiment(line["pybamm"]).steps
        json_steps = pybamm.Experiment.from_config(line["pybamm_json"]).steps
        for target, steps in (("pybamm", text_steps), ("pybamm-json", json_steps)):
            got = [key(s) for s in steps]
            if got == [want]:
                same[target] += 1
            else:
                print(f"DIFFERS {target}: {source!r}\n  source: {want}\n  ours:   {got}")
    n = len(lines)
    for target, k in same.items():
        print(f"{target}: {k}/{n} strings parse identically in PyBaMM {pybamm.__version__}")
    return 0 if all(k == n for k in same.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
