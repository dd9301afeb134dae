"""A DVC project selfheal did not write, shaped like iterative/example-get-started: for tests and benchmarks.

prepare -> featurize -> train -> evaluate on small generated text (questions, some about R), a scikit-learn
random forest in `model.pkl` declared under `artifacts:` as type model, the cached directory output `eval/`
holding the nested `eval/metrics.json` (`avg_prec.test`, `roc_auc.test`) named by the top-level `metrics:`,
params.yaml with that project's own keys, and a first version registered and assigned `prod` by the gto CLI
itself (`text-classification@v1.0.0`, `text-classification#prod#1`). Variants: `metric="min"` reports an error
to minimise (`error.test`); `model_dir=True` makes the model a directory (`model/`); `csv=True` keeps the data
as a git-tracked CSV (`data/data.csv`: label, score, text, answers, views) that prepare reads, for data fixes
and drift, with `src/fold.py` (append a batch to it: a retrain command). Every variant has `src/serve.py
PORT`, a tiny HTTP service answering GET /health and POST /reload, for recovery.
"""

from __future__ import annotations

import random
import textwrap
from pathlib import Path

import yaml

from selfheal.ops import sandbox

ARTIFACT = "text-classification"
_R_WORDS = ["ggplot", "dplyr", "tidyverse", "data.frame", "rstudio", "cran", "shiny", "lapply", "tibble"]
_OTHER = ["python", "pandas", "numpy", "java", "spring", "react", "docker", "kubernetes", "sql", "rust", "golang",
          "django", "flask", "linux", "bash", "regex", "json", "http", "css", "html"]
_COMMON = ["how", "to", "fix", "error", "when", "using", "with", "my", "the", "a", "in", "function", "list",
           "plot", "table", "read", "file", "loop", "install", "package", "string", "date", "merge", "filter"]

PARAMS = {"prepare": {"split": 0.2, "seed": 20170428},
          "featurize": {"max_features": 200, "ngrams": 1},
          "train": {"seed": 20170428, "n_est": 30, "min_split": 2}}

PREPARE = '''
import csv, random, sys
from pathlib import Path
import yaml
p = yaml.safe_load(open("params.yaml"))["prepare"]
if sys.argv[1].endswith(".csv"):
    rows = [f"{int(float(r['label']))}\\t{r['text']}" for r in csv.DictReader(open(sys.argv[1], newline=""))]
else:
    rows = Path(sys.argv[1]).read_text().splitlines()[1:]
random.Random(p["seed"]).shuffle(rows)
cut = int(len(rows) * (1 - p["split"]))
out = Path("data/prepared"); out.mkdir(parents=True, exist_ok=True)
(out / "train.tsv").write_text("\\n".join(rows[:cut]) + "\\n")
(out / "test.tsv").write_text("\\n".join(rows[cut:]) + "\\n")
'''

FEATURIZE = '''
import pickle
from pathlib import Path
import yaml
from sklearn.feature_extraction.text import TfidfVectorizer
p = yaml.safe_load(open("params.yaml"))["featurize"]
def load(name):
    rows = [r.split("\\t") for r in Path(f"data/prepared/{name}.tsv").read_text().splitlines() if r]
    return [t for _, t in rows], [int(l) for l, _ in rows]
vec = TfidfVectorizer(max_features=p["max_features"], ngram_range=(1, p["ngrams"]))
out = Path("data/features"); out.mkdir(parents=True, exist_ok=True)
for name in ("train", "test"):
    text, labels = load(name)
    x = vec.fit_transform(text) if name == "train" else vec.transform(text)
    pickle.dump((x, labels), open(out / f"{name}.pkl", "wb"))
'''

TRAIN = '''
import pickle, sys
from pathlib import Path
import yaml
from sklearn.ensemble import RandomForestClassifier
p = yaml.safe_load(open("params.yaml"))["train"]
x, y = pickle.load(open("data/features/train.pkl", "rb"))
clf = RandomForestClassifier(n_estimators=p["n_est"], min_samples_split=p["min_split"], random_state=p["seed"],
                             n_jobs=1).fit(x, y)
target = Path(sys.argv[1])
if MODEL_DIR:
    target.mkdir(parents=True, exist_ok=True)
    for old in target.iterdir():
        old.unlink()
    pickle.dump(clf, open(target / "forest.pkl", "wb"))
    (target / "classes.txt").write_text(" ".join(map(str, clf.classes_)) + "\\n")
else:
    pickle.dump(clf, open(target, "wb"))
'''

EVALUATE = '''
import json, pickle, sys
from pathlib import Path
from sklearn import metrics
model = Path(sys.argv[1])
clf = pickle.load(open(model / "forest.pkl" if model.is_dir() else model, "rb"))
out = {}
for name in ("train", "test"):
    x, y = pickle.load(open(f"data/features/{name}.pkl", "rb"))
    score = clf.predict_proba(x)[:, 1]
    out.setdefault("avg_prec", {})[name] = metrics.average_precision_score(y, score)
    out.setdefault("roc_auc", {})[name] = metrics.roc_auc_score(y, score)
    out.setdefault("error", {})[name] = 1 - metrics.accuracy_score(y, clf.predict(x))
    precision, recall, _ = metrics.precision_recall_curve(y, score)
    prc = Path("eval/prc"); prc.mkdir(parents=True, exist_ok=True)
    (prc / f"{name}.json").write_text(json.dumps({"prc": [{"precision": p, "recall": r}
                                                          for p, r in zip(precision[::5], recall[::5])]}))
if not METRIC_MIN:
    out.pop("error")
else:
    out = {"error": out["error"]}
Path("eval/metrics.json").write_text(json.dumps(out, indent=4))
'''


SERVE = '''
import http.server, sys
class Handler(http.server.BaseHTTPRequestHandler):
    def _answer(self, code, body):
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        self._answer(200, b\'{"status": "ok"}\') if self.path == "/health" else self._answer(404, b"{}")
    def do_POST(self):
        self._answer(200, b\'{"reloaded": true}\') if self.path == "/reload" else self._answer(404, b"{}")
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
'''

FOLD = '''
import csv, sys
batch = list(csv.reader(open(sys.argv[1], newline="")))[1:]
with open(sys.argv[2], "a", newline="") as out:
    csv.writer(out).writerows(batch)
'''


def _question(rng: random.Random) -> tuple[str, int]:
    label = int(rng.random() < 0.3)
    words = rng.choices(_COMMON, k=rng.randint(4, 9)) + rng.choices(_R_WORDS if label else _OTHER, k=rng.randint(1, 3))
    if rng.random() < 0.08:  # noise: a question tagged R that reads like another language, and the reverse
        words += rng.choices(_OTHER if label else _R_WORDS, k=1)
    rng.shuffle(words)
    return " ".join(words), label


def write_data(path: Path, rows: int, seed: int) -> None:
    rng = random.Random(seed)
    lines = ["label\ttext", *(f"{label}\t{text}" for text, label in (_question(rng) for _ in range(rows)))]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def write_csv(path: Path, rows: int, seed: int, score_shift: float = 0.0) -> None:
    """Questions as CSV (label, score, text, answers, views): `score` is a vote count (0-10), `answers` 0-5 and
    `views` 10-60 (bounded, so clean data has no outliers to cap; the model reads only label and text, the
    numbers are there for data fixes and drift), `score_shift` moves the votes' distribution."""
    import csv

    rng, counts = random.Random(seed), random.Random(seed + 1)  # the questions do not depend on the counts
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["label", "score", "text", "answers", "views"])
        for text, label in (_question(rng) for _ in range(rows)):
            writer.writerow([label, rng.randint(0, 10) + round(score_shift), text, counts.randint(0, 5),
                             counts.randint(10, 60)])


def dvc_yaml(model: str, data: str = "data/data.tsv") -> dict:
    return {
        "artifacts": {
            "stackoverflow-dataset": {"path": data, "type": "dataset", "desc": "generated questions"},
            ARTIFACT: {"path": model, "type": "model", "desc": "Detect whether a question should have the R tag",
                       "labels": ["nlp", "classification"]},
        },
        "stages": {
            "prepare": {"cmd": f"python src/prepare.py {data}", "deps": [data, "src/prepare.py"],
                        "params": ["prepare.seed", "prepare.split"], "outs": ["data/prepared"]},
            "featurize": {"cmd": "python src/featurization.py", "deps": ["data/prepared", "src/featurization.py"],
                          "params": ["featurize.max_features", "featurize.ngrams"], "outs": ["data/features"]},
            "train": {"cmd": f"python src/train.py {model}", "deps": ["data/features", "src/train.py"],
                      "params": ["train.min_split", "train.n_est", "train.seed"], "outs": [model]},
            "evaluate": {"cmd": f"python src/evaluate.py {model}", "deps": [model, "data/features", "src/evaluate.py"],
                         "outs": ["eval"]},
        },
        "metrics": ["eval/metrics.json"],
        "plots": [{"eval/prc/test.json": {"x": "recall", "y": "precision"}}],
    }


def store(project: Path) -> Path:
    """The project's DVC remote: a folder beside it."""
    return project.parent / f"{project.name}-dvcstore"


def create(dest: Path, *, metric: str = "max", model_dir: bool = False, rows: int = 600, remote: bool = True,
           csv: bool = False) -> Path:
    """Write, `dvc repro`, commit and register v1.0.0 in prod with the gto CLI: the project a user brings."""
    model = "model" if model_dir else "model.pkl"
    data = "data/data.csv" if csv else "data/data.tsv"
    dest.mkdir(parents=True, exist_ok=True)
    src = dest / "src"
    src.mkdir(exist_ok=True)
    flags = f"MODEL_DIR = {model_dir}\nMETRIC_MIN = {metric == 'min'}\n"
    for name, body in {"prepare.py": PREPARE, "featurization.py": FEATURIZE, "train.py": flags + TRAIN,
                       "evaluate.py": flags + EVALUATE, "serve.py": SERVE, "fold.py": FOLD}.items():
        (src / name).write_text(textwrap.dedent(body).lstrip())
    if csv:
        write_csv(dest / data, rows, seed=7)
    else:
        write_data(dest / data, rows, seed=7)
    (dest / "params.yaml").write_text(yaml.safe_dump(PARAMS, sort_keys=False))
    (dest / "dvc.yaml").write_text(yaml.safe_dump(dvc_yaml(model, data), sort_keys=False))
    (dest / ".gitignore").write_text("__pycache__/\n.selfheal/\n")
    sandbox.run(["git", "init", "-q", "-b", "main"], dest)
    sandbox.run(["dvc", "init", "-q"], dest)
    sandbox.run(["dvc", "config", "core.analytics", "false"], dest)
    if remote:
        # relative (dvc stores it relative to .dvc/): a copy of the project beside a copy of its store works
        sandbox.run(["dvc", "remote", "add", "-d", "store", f"../{store(dest).name}"], dest)
    if not csv:  # the CSV stays in git, so a fixed or grown file is a plain change of a dep
        sandbox.run(["dvc", "add", "-q", data], dest)
    sandbox.run(["dvc", "repro", "-q"], dest)
    sandbox.commit(dest, "example pipeline, first model")
    if remote:
        sandbox.run(["dvc", "push", "-q"], dest)
    sandbox.run(["gto", "register", ARTIFACT, "--version", "v1.0.0"], dest)
    sandbox.run(["gto", "assign", ARTIFACT, "--version", "v1.0.0", "--stage", "prod"], dest)
    return dest


def set_params(repo: Path, group: str, **values: object) -> None:
    path = repo / "params.yaml"
    doc = yaml.safe_load(path.read_text())
    doc[group].update(values)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
