"""doc_to_* and scoring for the caprl_synth_vqa lmms-eval task (rows of <world>/bench/vqa.jsonl)."""

from PIL import Image


def doc_to_visual(doc):
    return [Image.open(doc["image"]).convert("RGB")]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    kw = lmms_eval_specific_kwargs or {}
    return f"{kw.get('pre_prompt', '')}{doc['question']}{kw.get('post_prompt', '')}"


def normalize(text: str) -> str:
    return text.strip().lower().strip(" .!?,;:\"'")


def process_results(doc, results):
    return {"exact_match": float(normalize(results[0]) == normalize(doc["answer"]))}
