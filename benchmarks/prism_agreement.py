"""How often Prism's `reference` mode and the paper authors' released scoring logic agree.

Over the held-out-style verdict table (tests/prism_verdicts.py, verdicts written by hand from the
protocol), prism/score.py in reference mode against the re-implementation of the released scorer
(tests/caprl_released_scorer.py). Every disagreement must be one of
prism.score.DELIBERATE_DIFFERENCES; the script says so, or exits 1.

    .venv/bin/python benchmarks/prism_agreement.py
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main() -> int:
    from prism.score import DELIBERATE_DIFFERENCES
    from tests.prism_verdicts import cases, reference_verdict, released_disagreements, same

    rows = cases()
    wrong = [r for r in rows if not same(reference_verdict(*r[:3]), r[3])]
    differ = released_disagreements()
    print(f"{len(rows)} answer/gold pairs; reference mode gives the table's verdict on {len(rows) - len(wrong)}")
    print(f"reference mode and the released scorer agree on {len(rows) - len(differ)} of {len(rows)}")
    for name, n in Counter(r[4] for r in differ).most_common():
        print(f"  {n:>3} x {name}: {DELIBERATE_DIFFERENCES.get(name, 'NOT A LISTED DIFFERENCE')}")
    unlisted = [r for r in differ if r[4] not in DELIBERATE_DIFFERENCES]
    for reply, gold, metric, verdict, _ in unlisted + wrong:
        print(f"  unexplained: reply {reply[-60:]!r} gold {gold!r} ({metric}), table says {verdict}")
    return 1 if unlisted or wrong else 0


if __name__ == "__main__":
    sys.exit(main())
