"""Nothing is chosen on the test split, including in the docs: no docs page and no comment of
metrics/thresholds.yaml gives a test figure as the reason for a choice.

A simple check, sentence by sentence: a sentence that speaks of a choice (chosen, picked,
better, a floor, a margin, a recipe...) and quotes a test figure (``test balanced accuracy
0.875``, ``0.93 on the test split``, ``by test accuracy``) fails, unless it says that this
is not done (never, not). Generated pages (results, intervals) report test figures and make
no choice; they are left out.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GENERATED = {"results.md", "intervals.md"}
CHOICE = re.compile(r"\b(chose|chosen|choose|chooses|select(?:s|ed)?|pick(?:s|ed)?|"
                    r"prefer(?:s|red)?|wins?|won|better|best|floors?|margin|recipe)\b", re.I)
TEST_FIGURE = re.compile(
    r"\btest(?:\s+split)?(?:'s)?\s+(?:balanced[ _]accuracy|accuracy|auc|sensitivity|"
    r"specificity|f1|figures?|results?|metrics?)\b[^.;]*?\d\.\d"
    r"|\d\.\d+[^.;]*?\bon\s+(?:the\s+)?test\b"
    r"|\bby\s+(?:its\s+|their\s+)?test\b", re.I)
NEGATED = re.compile(r"\b(never|not|no)\b", re.I)


def offending(text: str) -> list[str]:
    """The sentences of ``text`` that justify a choice by a test figure."""
    out = []
    for sentence in re.split(r"(?<=[.;])\s+|\n\s*\n", text):
        s = " ".join(sentence.split())
        if CHOICE.search(s) and TEST_FIGURE.search(s) and not NEGATED.search(s):
            out.append(s)
    return out


def _comments(yaml_text: str) -> str:
    return "\n".join(line.split("#", 1)[1] for line in yaml_text.splitlines() if "#" in line)


def test_the_check_catches_a_choice_made_on_test():
    assert offending("The demo recipe was chosen: test balanced accuracy 0.875 against 0.75.")
    assert offending(_comments("  auc: 0.95   # a margin below the test AUC 0.99\n"))
    assert offending("Width 0.125 is better (0.93 on the test split).")
    assert not offending("Width 0.125 is chosen on validation balanced accuracy (1.0 against "
                         "0.588); its test figures are in results.md.")
    assert not offending("Never choose by test metrics.")


def test_no_docs_page_or_threshold_comment_chooses_by_a_test_figure():
    found = {}
    for path in sorted((ROOT / "docs").glob("*.md")):
        if path.name not in GENERATED:
            found[path.name] = offending(path.read_text(encoding="utf-8"))
    thresholds = ROOT / "metrics" / "thresholds.yaml"
    found[thresholds.name] = offending(_comments(thresholds.read_text(encoding="utf-8")))
    assert {k: v for k, v in found.items() if v} == {}
