"""MathVista's own process_results, with decimal answers scored.

lmms-eval 0.7.3 normalizes a float answer with round(value, precision), and MathVista's data gives
precision as a float (1.0, 2.0): round() refuses a float digit count, the error is caught, the
prediction becomes None and every question with a decimal answer is scored wrong (about a tenth of
testmini). This passes the same document with precision as the whole number it states; everything
else (answer extraction, the judge, the record) is lmms-eval's own function."""

from __future__ import annotations

from lmms_eval.tasks.mathvista.utils import mathvista_process_results


def whole_precision(doc: dict) -> dict:
    precision = doc.get("precision")
    if isinstance(precision, float) and precision.is_integer():
        return {**doc, "precision": int(precision)}
    return doc


def process_results(doc, results):
    return mathvista_process_results(whole_precision(doc), results)
