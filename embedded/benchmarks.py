"""Small local copies of the paper's twelve Table-1 benchmarks, in the schema of the published datasets.

lmms-eval's own task code (its YAML and utils.py, never a copy) runs on these files, so a wrong
result key, a missing column or an unreachable judge shows up in minutes on CPU instead of at
the end of a cluster job. Each benchmark is a handful of rows with generated images; the
columns and their types are those the task's doc_to_visual / doc_to_text / doc_to_target /
process_results / process_docs read in lmms-eval 0.7.3 (plus published columns they carry along).

    build_table1_benchmarks(out_dir)  ->  {task: file}
    out_dir/<task>.parquet                     one file per task, HF `datasets` features embedded
    out_dir/gqa_testdev_balanced_images.parquet  GQA's image table, which its process_docs loads
                                               by hub name (lmms-lab-encoder/GQA) a second time

Answers are chosen so that a model that always answers "A" (and a judge that always answers
"1") has an exact, known score on every benchmark (EXPECTED_IF_ALWAYS_A); the rows are a pure
function of the code, no seed.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

from PIL import Image, ImageDraw

# The score (paper's 0-100 scale) of a model answering "A" to everything, judged by a judge that
# answers "1" to everything; derived by hand from each task's scoring code (comments below).
EXPECTED_IF_ALWAYS_A = {
    "infovqa_val": 37.5, "docvqa_val": 50.0, "chartqa": 50.0, "realworldqa": 50.0,
    "mathvista_testmini_format": 75.0, "seedbench_2_plus": 25.0, "mmerealworld": 50.0,
    "mmbench_en_dev": 50.0, "mmstar": 50.0, "mmvet": 100.0, "ai2d": 50.0, "gqa": 50.0,
}
# The second hub dataset GQA's process_docs loads by name (lmms_eval/tasks/gqa/utils.py).
GQA_IMAGES = {"path": "lmms-lab-encoder/GQA", "name": "testdev_balanced_images", "split": "testdev",
              "file": "gqa_testdev_balanced_images.parquet"}


def image(text: str, side: int = 84, colour=(40, 80, 220)) -> Image.Image:
    """A plain scene: a coloured box and a short text, so OCR-style questions have something to read."""
    img = Image.new("RGB", (side, side), (250, 250, 245))
    draw = ImageDraw.Draw(img)
    draw.rectangle([side // 8, side // 2, side - side // 8, side - side // 8], fill=colour)
    draw.text((4, 4), text[:12], fill=(0, 0, 0))
    return img


def png_base64(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


# ---------------------------------------------------------------- one generator per task
# Each returns (features, rows). `datasets` is imported inside: world building imports this module.

def infovqa_val():
    from datasets import Features, Image as Img, Sequence, Value

    feats = Features({"questionId": Value("string"), "question": Value("string"), "answers": Sequence(Value("string")),
                      "answer_type": Sequence(Value("string")), "image": Img(), "image_url": Value("string"),
                      "operation/reasoning": Sequence(Value("string")), "ocr": Value("string"),
                      "data_split": Value("string")})
    # ANLS of "A": 1 ("A"), 0.5 ("Ab": distance 1 of length 2), 0, 0 -> mean 0.375
    answers = [["A"], ["Ab"], ["four"], ["no", "7"]]
    rows = [{"questionId": str(9000 + i), "question": f"Which label is shown in panel {i + 1}?", "answers": a,
             "answer_type": ["single span"], "image": image(a[0]), "image_url": f"local://infovqa/{i}.png",
             "operation/reasoning": [], "ocr": a[0], "data_split": "val"} for i, a in enumerate(answers)]
    return feats, rows


def docvqa_val():
    from datasets import Features, Image as Img, Sequence, Value

    feats = Features({"questionId": Value("string"), "question": Value("string"),
                      "question_types": Sequence(Value("string")), "image": Img(), "docId": Value("int64"),
                      "ucsf_document_id": Value("string"), "ucsf_document_page_no": Value("string"),
                      "answers": Sequence(Value("string")), "data_split": Value("string")})
    answers = [["A"], ["x", "a"], ["1998"], ["memo"]]   # ANLS 1, 1 (case-insensitive), 0, 0 -> 0.5
    rows = [{"questionId": str(100 + i), "question": "What is written in the header?",
             "question_types": ["layout"], "image": image(a[0]), "docId": 10 + i, "ucsf_document_id": f"doc{i}",
             "ucsf_document_page_no": "1", "answers": a, "data_split": "val"} for i, a in enumerate(answers)]
    return feats, rows


def chartqa():
    from datasets import Features, Image as Img, Value

    feats = Features({"type": Value("string"), "question": Value("string"), "answer": Value("string"),
                      "image": Img()})
    # relaxed accuracy of "A": exact (case-insensitive) for text, 5% for numbers -> 1, 0, 0, 1
    cases = [("human_test", "A"), ("augmented_test", "12"), ("human_test", "7%"), ("augmented_test", "a")]
    rows = [{"type": t, "question": "Which bar is the tallest?", "answer": a, "image": image(f"bar {a}")}
            for t, a in cases]
    return feats, rows


def realworldqa():
    from datasets import Features, Image as Img, Value

    feats = Features({"image": Img(), "question": Value("string"), "answer": Value("string")})
    prompt = "\nA. left\nB. right\nC. straight\nPlease answer directly with only the letter of the correct option and nothing else."
    rows = [{"image": image("road"), "question": f"Where does the road turn?{prompt}", "answer": a}
            for a in ("A", "B", "C", "A")]           # letter match -> 2/4
    return feats, rows


def mathvista_testmini_format():
    from datasets import Features, Image as Img, Sequence, Value

    meta = {"category": Value("string"), "context": Value("string"), "grade": Value("string"),
            "img_height": Value("int64"), "img_width": Value("int64"), "language": Value("string"),
            "skills": Sequence(Value("string")), "source": Value("string"), "split": Value("string"),
            "task": Value("string")}
    feats = Features({"pid": Value("string"), "question": Value("string"), "image": Value("string"),
                      "decoded_image": Img(), "choices": Sequence(Value("string")), "unit": Value("string"),
                      "precision": Value("float64"), "answer": Value("string"), "question_type": Value("string"),
                      "answer_type": Value("string"), "metadata": meta, "query": Value("string")})
    # The model's "A" is no choice and no number, so the judge extracts every answer; it says "1":
    # multi_choice -> most similar choice "1 cm" (right); integer 1 (right); integer 3 (wrong);
    # float with precision 1.0 (published as a float): round(1.0, 1.0) raises in lmms-eval's
    # normalize_extracted_answer, so lmms-eval alone scores it wrong (2/4); the harness's local copy
    # passes precision 1 (evaluation/lmms_tasks/mathvista_decimal.py), so "1.0" is right -> 3/4.
    cases = [("multi_choice", "text", ["1 cm", "4 cm"], "1 cm", None),
             ("free_form", "integer", None, "1", None),
             ("free_form", "integer", None, "3", None),
             ("free_form", "float", None, "1.0", 1.0)]
    rows = []
    for i, (qtype, atype, choices, answer, precision) in enumerate(cases):
        question = "How long is the blue bar?"
        rows.append({"pid": str(i + 1), "question": question, "image": f"images/{i + 1}.jpg",
                     "decoded_image": image("bar"), "choices": choices, "unit": None, "precision": precision,
                     "answer": answer, "question_type": qtype, "answer_type": atype,
                     "metadata": {"category": "math-targeted-vqa", "context": "bar chart", "grade": "elementary school",
                                  "img_height": 84, "img_width": 84, "language": "english",
                                  "skills": ["arithmetic reasoning"], "source": "embedded", "split": "testmini",
                                  "task": "figure question answering"},
                     "query": f"Question: {question}"})
    return feats, rows


def seedbench_2_plus():
    from datasets import Features, Image as Img, Value

    text = ("data_id", "question_id", "question_image_type", "question_image_subtype", "question", "choice_A",
            "choice_B", "choice_C", "choice_D", "answer", "data_source", "data_type", "level", "subpart", "version")
    feats = Features({**{k: Value("string") for k in text}, "image": Img()})
    cases = [("chart", "A"), ("map", "B"), ("web", "C"), ("chart", "D")]   # first letter "A" -> 1/4
    rows = [{"data_id": f"{t}/{i}.png", "question_id": f"s{i}", "question_image_type": t,
             "question_image_subtype": "embedded", "question": "Which label is highlighted?", "choice_A": "north",
             "choice_B": "south", "choice_C": "east", "choice_D": "west", "answer": a, "data_source": "embedded",
             "data_type": "Image", "level": "L1", "subpart": "Text-Rich Data Comprehension", "version": "v2+",
             "image": image(t)} for i, (t, a) in enumerate(cases)]
    return feats, rows


def mmerealworld():
    from datasets import Features, Sequence, Value

    feats = Features({"index": Value("int64"), "question": Value("string"),
                      "multi-choice options": Sequence(Value("string")), "answer": Value("string"),
                      "category": Value("string"), "l2-category": Value("string"), "bytes": Value("string")})
    options = ["(A) one", "(B) two", "(C) three", "(D) four", "(E) The image does not feature the object"]
    # category "<Perception|Reasoning>/<one of the task's SUBTASKS>"; letter match -> 2/4
    cases = [("Perception/Remote Sensing", "count", "A"), ("Perception/Monitoring", "color", "B"),
             ("Reasoning/Autonomous_Driving", "intention", "A"), ("Reasoning/Diagram and Table", "table", "C")]
    rows = [{"index": i, "question": "How many cars are parked?", "multi-choice options": options, "answer": a,
             "category": c, "l2-category": l2, "bytes": png_base64(image("cars"))} for i, (c, l2, a) in enumerate(cases)]
    return feats, rows


def mmbench_en_dev():
    from datasets import Features, Image as Img, Value

    feats = Features({"index": Value("int64"), "question": Value("string"), "hint": Value("string"),
                      "A": Value("string"), "B": Value("string"), "C": Value("string"), "D": Value("string"),
                      "answer": Value("string"), "category": Value("string"), "image": Img(),
                      "source": Value("string"), "L2-category": Value("string"), "comment": Value("string"),
                      "split": Value("string")})
    # index is int64 as in the cn/cc configs and MMBench_EN: one public card of the en config lists it as a
    # string, and with strings lmms-eval 0.7.3's aggregation (data["index"] < int(1e6)) raises TypeError.
    # "A" is read as option A without the judge (can_infer) -> rows answered A are right: 2/4
    cases = [("A", "image_scene"), ("B", "image_style"), ("A", "ocr"), ("C", "attribute_color")]
    rows = [{"index": i, "question": "What colour is the box?", "hint": "nan" if i % 2 else "Look at the box.",
             "A": "blue", "B": "red", "C": "green", "D": "yellow", "answer": a, "category": cat, "image": image("box"),
             "source": "embedded", "L2-category": "Coarse Perception", "comment": "nan", "split": "dev"}
            for i, (a, cat) in enumerate(cases)]
    return feats, rows


def mmstar():
    from datasets import Features, Image as Img, Value

    feats = Features({"index": Value("int64"), "question": Value("string"), "image": Img(), "answer": Value("string"),
                      "category": Value("string"), "l2_category": Value("string"),
                      "meta_info": {"source": Value("string"), "split": Value("string"), "image_path": Value("string")}})
    # one row per category, each its own l2_category: "average" is the mean of per-l2 means -> 3/6
    cases = [("coarse perception", "image scene and topic", "A"), ("fine-grained perception", "object counting", "B"),
             ("instance reasoning", "single-instance reasoning", "A"), ("logical reasoning", "diagram reasoning", "C"),
             ("science & technology", "geography & earth science", "A"), ("math", "numeric commonsense", "D")]
    question = "Which option fits?\nOptions: A: one, B: two, C: three, D: four"
    rows = [{"index": i, "question": question, "image": image(l2), "answer": a, "category": c, "l2_category": l2,
             "meta_info": {"source": "embedded", "split": "val", "image_path": f"images/{i}.jpg"}}
            for i, (c, l2, a) in enumerate(cases)]
    return feats, rows


def mmvet():
    from datasets import Features, Image as Img, Value

    feats = Features({"question_id": Value("string"), "image": Img(), "question": Value("string"),
                      "answer": Value("string"), "image_source": Value("string"), "capability": Value("string")})
    # every score comes from the judge: "1" -> 1.0 per row -> 100
    cases = [("What is written on the sign?", "STOP", "ocr,rec"), ("How many boxes?", "1", "rec,math"),
             ("What colour is the box?", "blue<OR>navy", "rec")]
    rows = [{"question_id": f"v{i}", "image": image(a), "question": q, "answer": a, "image_source": "embedded",
             "capability": cap} for i, (q, a, cap) in enumerate(cases)]
    return feats, rows


def ai2d():
    from datasets import Features, Image as Img, Sequence, Value

    feats = Features({"question": Value("string"), "options": Sequence(Value("string")), "answer": Value("string"),
                      "image": Img()})
    # answer is the index of the right option (a string); "A" is option 0 -> 2/4
    rows = [{"question": "Which stage comes first?", "options": ["egg", "larva", "pupa", "adult"], "answer": a,
             "image": image("cycle")} for a in ("0", "1", "0", "3")]
    return feats, rows


def gqa():
    from datasets import Features, Value

    feats = Features({"id": Value("string"), "imageId": Value("string"), "question": Value("string"),
                      "answer": Value("string"), "fullAnswer": Value("string"), "isBalanced": Value("bool")})
    answers = ["a", "yes", "A", "no"]        # exact match, case ignored -> 2/4
    rows = [{"id": f"q{i}", "imageId": f"n{i % 2}", "question": "What letter is on the sign?", "answer": a,
             "fullAnswer": f"The answer is {a}.", "isBalanced": True} for i, a in enumerate(answers)]
    return feats, rows


def gqa_images():
    from datasets import Features, Image as Img, Value

    feats = Features({"id": Value("string"), "image": Img()})
    return feats, [{"id": f"n{i}", "image": image(f"sign {i}")} for i in range(2)]


GENERATORS = {
    "infovqa_val": infovqa_val, "docvqa_val": docvqa_val, "chartqa": chartqa, "realworldqa": realworldqa,
    "mathvista_testmini_format": mathvista_testmini_format, "seedbench_2_plus": seedbench_2_plus,
    "mmerealworld": mmerealworld, "mmbench_en_dev": mmbench_en_dev, "mmstar": mmstar, "mmvet": mmvet,
    "ai2d": ai2d, "gqa": gqa,
}


def write_parquet(generator, path: Path) -> Path:
    """One table as parquet, with the `datasets` features in its metadata (images stay Image columns)."""
    from datasets import Dataset

    feats, rows = generator()
    path.parent.mkdir(parents=True, exist_ok=True)
    Dataset.from_list(rows, features=feats).to_parquet(str(path))
    return path


def build_table1_benchmarks(out_dir: Path) -> dict[str, Path]:
    """Write every task's local table (and GQA's image table); returns {task: file}."""
    out_dir = Path(out_dir)
    files = {task: write_parquet(gen, out_dir / f"{task}.parquet") for task, gen in GENERATORS.items()}
    write_parquet(gqa_images, out_dir / GQA_IMAGES["file"])
    return files
