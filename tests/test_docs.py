"""The docs cannot rot: every shell command of README.md and docs/*.md runs here.

Convention (docs/development.md): commands in ```bash fences are executed, one test case per
command (id = page:line; a command repeated word for word on another page runs once, under its
first place); commands that need a GPU, a cluster, the network or a long time sit in ```text
fences. Each command is matched by a rule (:func:`plan_command`) that says how it runs small:

* ``python -m reid_attn.train ...``: ``debug=fast`` appended (train.yaml's defaults list puts
  ``debug`` after ``experiment``, so it wins); a multirun of an ``experiment=ablation*`` keeps
  two rows and one seed; ``resume=true`` first runs the same command without it into the
  folder it resumes. Every job must write its ``metrics.json``.
* ``python -m reid_attn.tune ...``: ``debug=fast`` and ``tune.n_trials=2``; the search must
  leave ``trials.csv``, ``tuned/best.yaml`` and its trials' ``metrics.json``.
* the other tools (evaluate, report, visualize, extract, export, search, viz.cmc) run as
  written, on the placeholders' stand-ins, and must write their files.
* ``python experiments/X.py``: the script's small flags appended, run on a copy of
  experiments/ so that committed results stay untouched.
* ``make train ARGS=...``: the Python command ``make -n`` prints, run as above; other make
  targets (they run the test suite themselves) are checked to exist with ``make -n``.
* a command that uses a folder an earlier command of its page made (``outputs/search_demo/``
  of docs/search.md) finds it laid out by a session fixture (:data:`STATES`).

Every command runs in a fresh subprocess whose current directory is the test's tmp_path (so
``outputs/`` lands there), with ``REID_ATTN_CACHE`` and ``TORCH_HOME`` under a session tmp
folder; ``.venv/bin/python``, ``python`` and ``python3`` become this interpreter. Placeholders
(``outputs/train/<run>``, ``/path/to/market1501``, ...) become session fixtures: tiny trained
runs, a tiny sweep and search, fake dataset trees in the real layouts.

The command cases are slow (``make test-slow``); the parsing, link and length checks are fast.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
PAGES = ["README.md", *sorted(p.relative_to(ROOT).as_posix() for p in ROOT.glob("docs/*.md"))]
INTERPRETERS = {".venv/bin/python", "python", "python3"}
TIMEOUT = 1800  # seconds per subprocess; the 2-core machine is shared
README_MAX_LINES = 200
#: Links to pages that other branches add; each must exist once that branch is merged.
PENDING_LINKS = {"docs/search.md"}

#: Python modules the docs run with ``-m``, and the files each must write (globs under the
#: test's directory; report's are in the sweep folder it is given).
TOOLS = {
    "reid_attn.train": ["**/metrics.json"],
    "reid_attn.evaluate": ["outputs/evaluate/*/metrics.json"],
    "reid_attn.report": [],  # checked in the sweep folder
    "reid_attn.visualize": ["outputs/visualize/*/*.png"],
    "reid_attn.extract": ["outputs/extract/*/features.pt"],
    "reid_attn.export": ["outputs/export/*/model.onnx"],
    "reid_attn.search": ["**/results.html", "**/results.json"],
    "reid_attn.tune": ["outputs/search/*/trials.csv", "outputs/search/*/tuned/best.yaml"],
    "reid_attn.viz.cmc": [],  # checked at --out
}

#: ``experiments/`` scripts: the flags that make each one small, and the files it must write
#: (relative to the test's directory, which holds the copy of experiments/).
EXPERIMENTS = {
    "bench_eval.py": (["--quick", "--repeats", "1"], []),
    "bench_rerank.py": (["--quick", "--repeats", "1"], []),
    "bench_scale.py": (["--scale", "0.01"], ["experiments/results/bench_scale.json"]),
    "bench_train.py": (["--quick"], []),
    "profile_attention.py": (
        ["--size", "64x32", "--batch", "4", "--warmup", "0", "--steps", "1"],
        [],
    ),
    "attention_variants.py": (["--size", "64x32", "--batch", "2", "--iters", "1"], []),
    "colour_histogram_baseline.py": (
        ["debug=fast"],
        ["experiments/results/colour_histogram_baseline.json"],
    ),
}

#: Placeholder -> fixture giving its stand-in (longest first when replacing).
PLACEHOLDERS = {
    "hydra.run.dir=outputs/train/<run>": "resume_dir_override",
    "outputs/train/<run>": "doc_run",
    "outputs/train/<run2>": "doc_run2",
    "outputs/ablation_cpu/<sweep>": "doc_sweep_copy",
    "outputs/search/<study>": "doc_search",
    "/path/to/market1501": "fake_market1501",
    "/path/to/dukemtmc": "fake_dukemtmc",
    "/path/to/msmt17": "fake_msmt17",
    "/path/to/crops": "fake_crops",
    "/path/to/person.jpg": "fake_person",
    "/path/to/resnet50-0676ba61.pth": "fake_imagenet_weights",
}
UNKNOWN_PLACEHOLDER = re.compile(r"<[A-Za-z_0-9]+>|/path/to/\S*|\.\.\.")
#: Folders that a page's earlier commands make and its later commands use: prefix -> fixture
#: that lays them out in the test's directory before such a command (the command that makes
#: them, a ``reid_attn.train``, runs as usual).
STATES = {"outputs/search_demo/": "search_demo"}


# ---------------------------------------------------------------- reading the docs


@dataclass(frozen=True)
class DocCommand:
    page: str
    line: int  # of the command's first line
    text: str  # continuation lines joined, comment kept off by the parser

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def words(self) -> list[str]:
        return shlex.split(self.text, comments=True)


def fenced_commands(page: str, language: str = "bash") -> list[DocCommand]:
    """The commands of ``page``'s ```language fences, with ``\\`` continuations joined."""
    commands, fence, pending, start = [], None, "", 0
    for number, line in enumerate((ROOT / page).read_text().splitlines(), start=1):
        stripped = line.strip()
        if stripped.startswith("```"):
            fence = None if fence is not None else (stripped[3:].strip() or "plain")
            continue
        if fence != language or (not pending and not stripped):
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        text = pending + stripped
        pending = ""
        if shlex.split(text, comments=True):
            commands.append(DocCommand(page, start, text))
    return commands


def doc_commands() -> list[DocCommand]:
    """Every ```bash command of the README and docs/, each distinct one once."""
    seen, unique = set(), []
    for page in PAGES:
        for command in fenced_commands(page):
            key = tuple(command.words)
            if key not in seen:
                seen.add(key)
                unique.append(command)
    return unique


# ---------------------------------------------------------------- the rules


class NoRuleError(ValueError):
    """A ```bash command that no rule knows how to run small."""


@dataclass
class Plan:
    kind: str  # "tool", "experiment", "make-run", "make-check"
    words: list[str]  # with this interpreter, before placeholders are replaced
    env: dict[str, str] = field(default_factory=dict)
    module: str | None = None  # the -m module, for "tool"
    script: str | None = None  # the experiments/ script, for "experiment"
    placeholders: list[str] = field(default_factory=list)
    states: list[str] = field(default_factory=list)


def makefile_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([A-Za-z][\w-]*):", text, flags=re.MULTILINE))


def placeholders_in(text: str) -> list[str]:
    """The known placeholders of ``text``; :class:`NoRuleError` for an unknown one."""
    found, rest = [], text
    for key in sorted(PLACEHOLDERS, key=len, reverse=True):
        if key in rest:
            found.append(key)
            rest = rest.replace(key, " ")
    unknown = UNKNOWN_PLACEHOLDER.findall(rest)
    if unknown:
        raise NoRuleError(f"unknown placeholder(s) {unknown}: add a stand-in to PLACEHOLDERS")
    return found


def plan_command(command: DocCommand) -> Plan:
    """How ``command`` runs in a test, or :class:`NoRuleError`."""
    words = command.words
    env = {}
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
        name, value = words.pop(0).split("=", 1)
        env[name] = value
    if not words:
        raise NoRuleError("an environment assignment alone")
    found = placeholders_in(" ".join(words))
    head, rest = words[0], words[1:]
    if head == "make":
        targets = [w for w in rest if "=" not in w and not w.startswith("-")]
        if len(targets) != 1 or targets[0] not in makefile_targets():
            raise NoRuleError(f"make target(s) {targets} not in the Makefile")
        kind = "make-run" if targets[0] == "train" else "make-check"
        return Plan(kind, words, env, placeholders=found)
    if head not in INTERPRETERS:
        raise NoRuleError(f"{head!r} is not an interpreter the runner substitutes ({INTERPRETERS})")
    words = [sys.executable, *rest]
    if rest[:1] == ["-m"] and len(rest) > 1:
        if rest[1] not in TOOLS:
            raise NoRuleError(f"module {rest[1]} has no rule (TOOLS)")
        joined = " ".join(words)
        makes = ("reid_attn.train", "reid_attn.tune")
        states = [] if rest[1] in makes else [p for p in STATES if p in joined]
        return Plan("tool", words, env, module=rest[1], placeholders=found, states=states)
    if rest and rest[0].startswith("experiments/") and Path(rest[0]).name in EXPERIMENTS:
        return Plan("experiment", words, env, script=Path(rest[0]).name, placeholders=found)
    raise NoRuleError(f"no rule for {shlex.join(rest[:2])}")


OVERRIDE = re.compile(r"[\w./+~@-]+=")


def set_override(args: list[str], key: str, value: str) -> list[str]:
    """``args`` with ``key=value`` replacing any ``key=...`` in place, else inserted after the
    last override (Hydra's parser takes the overrides as one run of words: ``--cfg hydra -p
    hydra.launcher`` may follow them, another override may not)."""
    new = f"{key}={value}"
    if any(a.startswith(f"{key}=") for a in args):
        return [new if a.startswith(f"{key}=") else a for a in args]
    last = max((i for i, a in enumerate(args) if OVERRIDE.match(a)), default=len(args) - 1)
    return [*args[: last + 1], new, *args[last + 1 :]]


def small_train_args(args: list[str]) -> list[str]:
    """The arguments of ``python -m reid_attn.train`` made small (see the module docstring)."""
    multirun = "--multirun" in args or "-m" in args
    if multirun and any(a.startswith("experiment=ablation") for a in args):
        args = set_override(args, "ablation", "baseline,cbam")
        args = set_override(args, "seed", "0")
    if not any(a.startswith("debug=") for a in args):
        args = set_override(args, "debug", "fast")
    return args


def test_small_train_args_keep_the_overrides_together() -> None:
    render = ["--multirun", "experiment=ablation", "x.y=gpu", "--cfg", "hydra", "-p", "hydra.l"]
    assert small_train_args(render) == [
        "--multirun", "experiment=ablation", "x.y=gpu", "ablation=baseline,cbam", "seed=0",
        "debug=fast", "--cfg", "hydra", "-p", "hydra.l",
    ]  # fmt: skip
    assert small_train_args(["--multirun", "experiment=ablation", "seed=0,1,2"]) == [
        "--multirun", "experiment=ablation", "seed=0", "ablation=baseline,cbam", "debug=fast",
    ]  # fmt: skip
    assert small_train_args([]) == ["debug=fast"]
    assert small_train_args(["--config-dir", "d", "tuned=best"]) == [
        "--config-dir", "d", "tuned=best", "debug=fast",
    ]  # fmt: skip


def small_tune_args(args: list[str]) -> list[str]:
    """The arguments of ``python -m reid_attn.tune`` made small: two trials of ``debug=fast``."""
    args = set_override(args, "tune.n_trials", "2")
    if not any(a.startswith("debug=") for a in args):
        args = set_override(args, "debug", "fast")
    return args


def test_small_tune_args() -> None:
    assert small_tune_args(["tune.n_trials=30", "trainer.max_epochs=4"]) == [
        "tune.n_trials=2", "trainer.max_epochs=4", "debug=fast",
    ]  # fmt: skip
    assert small_tune_args(["--multirun", "tune.worker=0,1"]) == [
        "--multirun", "tune.worker=0,1", "tune.n_trials=2", "debug=fast",
    ]  # fmt: skip


# ---------------------------------------------------------------- fast checks

COMMANDS = doc_commands()


def test_the_docs_have_commands() -> None:
    assert {c.page for c in COMMANDS} >= {"README.md", "docs/training.md"}
    assert len(COMMANDS) > 20


@pytest.mark.parametrize("command", COMMANDS, ids=[c.id for c in COMMANDS])
def test_every_bash_command_has_a_rule(command: DocCommand) -> None:
    """A new ```bash command must be one the runner can run small (else: a new rule here, or
    a ```text fence with the reason it cannot run on a CPU in a test)."""
    try:
        plan_command(command)
    except NoRuleError as err:
        pytest.fail(f"{command.id}: {command.text}\n{err}")


def _anchors(page: Path) -> set[str]:
    """GitHub's anchors of ``page``'s headings."""
    anchors = set()
    for line in page.read_text().splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", title)))
    return anchors


@pytest.mark.parametrize("page", PAGES)
def test_relative_links_resolve(page: str) -> None:
    text = (ROOT / page).read_text()
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        path, _, anchor = target.partition("#")
        resolved = (ROOT / page).parent / path
        relative = os.path.relpath(resolved, ROOT)
        if relative in PENDING_LINKS and not resolved.exists():
            continue
        assert resolved.exists(), f"{page}: link {target} -> {relative} does not exist"
        if anchor and resolved.suffix == ".md":
            assert anchor in _anchors(resolved), f"{page}: no heading #{anchor} in {relative}"


def test_readme_is_short_and_links_every_docs_page() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= README_MAX_LINES
    for page in PAGES[1:]:
        assert f"({page})" in readme, f"README.md does not link {page}"


# ---------------------------------------------------------------- stand-ins (session fixtures)
# (fake_imagenet_weights, which test_real_datasets.py uses too, is conftest.py's)


def _image(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    colour = rng.integers(0, 256, 3)
    pixels = np.clip(colour + rng.normal(0, 25, (64, 32, 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def _pid(pid: int) -> str:
    return "-1" if pid < 0 else f"{pid:04d}"


def _market_style(root: Path, name) -> Path:
    """A tiny tree in the Market-1501 layout; ``name(pid, cam, frame)`` gives file names.
    10 training ids (3 cameras x 2 images), 5 test ids (query: camera 1; gallery: 2 and 3),
    3 distractors (pid 0) and 2 junk images (pid -1)."""
    frame = 0
    for pid in range(1, 11):
        for cam in (1, 2, 3):
            for _ in range(2):
                frame += 1
                _image(root / "bounding_box_train" / name(pid, cam, frame), pid)
    for pid in range(11, 16):
        frame += 1
        _image(root / "query" / name(pid, 1, frame), pid)
        for cam in (2, 3):
            frame += 1
            _image(root / "bounding_box_test" / name(pid, cam, frame), pid)
    for pid, cam in ((0, 1), (0, 2), (0, 3), (-1, 1), (-1, 2)):
        frame += 1
        _image(root / "bounding_box_test" / name(pid, cam, frame), 100 + frame)
    return root


@pytest.fixture(scope="session")
def fake_market1501(tmp_path_factory) -> Path:
    return _market_style(
        tmp_path_factory.mktemp("market1501"),
        lambda pid, cam, frame: f"{_pid(pid)}_c{cam}s1_{frame:06d}_00.jpg",
    )


@pytest.fixture(scope="session")
def fake_dukemtmc(tmp_path_factory) -> Path:
    return _market_style(
        tmp_path_factory.mktemp("dukemtmc"),
        lambda pid, cam, frame: f"{_pid(pid)}_c{cam}_f{frame:07d}.jpg",
    )


@pytest.fixture(scope="session")
def fake_msmt17(tmp_path_factory) -> Path:
    """MSMT17_V1: train/ and test/ with list_{train,val,query,gallery}.txt."""
    root = tmp_path_factory.mktemp("msmt17")
    lists: dict[str, list[str]] = {"train": [], "val": [], "query": [], "gallery": []}

    def add(split: str, folder: str, pid: int, cam: int, frame: int, label: int) -> None:
        rel = f"{pid:04d}/{pid:04d}_{frame:03d}_{cam:02d}_0303morning_{frame:04d}_0.jpg"
        _image(root / folder / rel, pid)
        lists[split].append(f"{rel} {label}")

    frame = 0
    for label in range(10):  # 2 images per camera: held-out validation ids need a gallery
        for cam in (1, 2, 3):
            for _ in range(2):
                frame += 1
                split = "val" if label == 9 and cam == 3 else "train"
                add(split, "train", label, cam, frame, label)
    for pid in range(20, 25):
        frame += 1
        add("query", "test", pid, 1, frame, pid)
        for cam in (2, 3):
            frame += 1
            add("gallery", "test", pid, cam, frame, pid)
    for split, lines in lists.items():
        (root / f"list_{split}.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="session")
def fake_crops(fake_market1501, tmp_path_factory) -> Path:
    """A user's folder of crops: the fake gallery's images."""
    crops = tmp_path_factory.mktemp("crops")
    for path in sorted((fake_market1501 / "bounding_box_test").glob("*.jpg")):
        shutil.copy(path, crops / path.name)
    return crops


@pytest.fixture(scope="session")
def fake_person(fake_market1501) -> Path:
    return sorted((fake_market1501 / "query").glob("*.jpg"))[0]


@pytest.fixture(scope="session")
def doc_env(tmp_path_factory) -> dict[str, str]:
    """The environment of every command: data cache and torch hub under a session folder."""
    root = tmp_path_factory.mktemp("doc_env")
    return {
        **os.environ,
        "REID_ATTN_CACHE": str(root / "cache"),
        "TORCH_HOME": str(root / "torch"),
        "MPLBACKEND": "Agg",
        "PYTHONUNBUFFERED": "1",
        # One thread per command: nothing here is a measurement, and on a shared, busy machine
        # torch's spinning worker threads make small runs 10-100x slower.
        "OMP_NUM_THREADS": "1",
    }


def run_checked(words: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        words, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT, check=False
    )
    assert proc.returncode == 0, (
        f"exit {proc.returncode}: {shlex.join(words)}\n--- stdout\n{proc.stdout[-4000:]}"
        f"\n--- stderr\n{proc.stderr[-4000:]}"
    )
    return proc


def _train(args: list[str], cwd: Path, env: dict[str, str]) -> None:
    run_checked([sys.executable, "-m", "reid_attn.train", *args], cwd, env)


def drop_checkpoints(folder: Path, keep: str | None = None) -> Path:
    """``folder`` without the checkpoint files its users do not read (each is ~300 MB: the
    weights and Adam's state)."""
    for path in folder.rglob("*.ckpt"):
        if path.name != keep:
            path.unlink()
    return folder


@pytest.fixture(scope="session")
def doc_run(tmp_path_factory, doc_env) -> Path:
    """``outputs/train/<run>``: a tiny CBAM + joint circle run."""
    root = tmp_path_factory.mktemp("doc_run")
    _train(["debug=fast", f"hydra.run.dir={root / 'run'}"], root, doc_env)
    return drop_checkpoints(root / "run", keep="last.ckpt")


@pytest.fixture(scope="session")
def doc_run2(tmp_path_factory, doc_env) -> Path:
    """``outputs/train/<run2>``: a second tiny run (plain ResNet50, CE)."""
    root = tmp_path_factory.mktemp("doc_run2")
    args = ["attention=none", "loss=ce", "debug=fast", f"hydra.run.dir={root / 'run'}"]
    _train(args, root, doc_env)
    return drop_checkpoints(root / "run")


@pytest.fixture(scope="session")
def doc_sweep(tmp_path_factory, doc_env) -> Path:
    """A tiny ablation sweep: two rows, one seed."""
    root = tmp_path_factory.mktemp("doc_sweep")
    args = ["--multirun", "experiment=ablation_cpu", "ablation=baseline,cbam", "seed=0"]
    _train([*args, "debug=fast", f"hydra.sweep.dir={root / 'sweep'}"], root, doc_env)
    return drop_checkpoints(root / "sweep")


@pytest.fixture
def doc_sweep_copy(doc_sweep, tmp_path) -> Path:
    """``outputs/ablation_cpu/<sweep>``: a copy, since the report writes into it."""
    return Path(shutil.copytree(doc_sweep, tmp_path / "sweep"))


@pytest.fixture(scope="session")
def doc_search(tmp_path_factory, doc_env) -> Path:
    """``outputs/search/<study>``: a two-trial Optuna search, with its tuned/best.yaml."""
    root = tmp_path_factory.mktemp("doc_search")
    args = ["tune.n_trials=2", "debug=fast", f"hydra.run.dir={root / 'search'}"]
    run_checked([sys.executable, "-m", "reid_attn.tune", *args], root, doc_env)
    assert (root / "search" / "tuned" / "best.yaml").is_file()
    return root / "search"


@pytest.fixture(scope="session")
def search_demo_session(tmp_path_factory, doc_env) -> Path:
    """docs/search.md's set-up, once: its tiny model (the page's train command) and the
    gallery and query folders its ```text step copies from the synthetic test split."""
    root = tmp_path_factory.mktemp("search_demo")
    demo = "outputs/search_demo"
    _train(["debug=fast", f"output_dir={demo}/model", f"data.root={demo}/data"], root, doc_env)
    (data,) = (root / demo / "data").glob("synthetic-*")
    for folder, pattern in (("gallery", "bounding_box_test/0*.jpg"), ("query", "query/*.jpg")):
        (root / demo / folder).mkdir()
        for image in data.glob(pattern):
            shutil.copy(image, root / demo / folder / image.name)
    return drop_checkpoints(root / demo, keep="last.ckpt")


@pytest.fixture
def search_demo(search_demo_session, tmp_path) -> Path:
    """``outputs/search_demo/`` in the test's directory: model and data linked, the gallery
    and query folders copied (a search may add to them and writes its index beside them)."""
    demo = tmp_path / "outputs" / "search_demo"
    demo.mkdir(parents=True)
    for name in ("model", "data"):
        (demo / name).symlink_to(search_demo_session / name)
    for name in ("gallery", "query"):
        shutil.copytree(search_demo_session / name, demo / name)
    return demo


@pytest.fixture
def resume_dir_override(tmp_path) -> str:
    """``hydra.run.dir=outputs/train/<run>`` of a resume: a folder the test trains first."""
    return f"hydra.run.dir={tmp_path / 'resumed'}"


# ---------------------------------------------------------------- running a command


def _metrics_files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("metrics.json"))


def _check_metrics(path: Path) -> None:
    metrics = json.loads(path.read_text())
    for key in ("rank1", "rank5", "rank10", "mAP", "mINP"):
        assert 0.0 <= metrics[key] <= 1.0, f"{path}: {key}={metrics[key]}"


def _run_train(args: list[str], cwd: Path, env: dict[str, str]) -> None:
    """``python -m reid_attn.train args`` made small; checks what each job writes."""
    args = small_train_args(args)
    if "--cfg" in args or "--info" in args or "-c" in args:
        proc = run_checked([sys.executable, "-m", "reid_attn.train", *args], cwd, env)
        assert proc.stdout.strip(), "printed nothing"
        return
    if "resume=true" in args:  # first the run that is resumed, into the same folder
        _train([a for a in args if a != "resume=true"], cwd, env)
    before = set(_metrics_files(cwd))
    _train(args, cwd, env)
    written = [p for p in _metrics_files(cwd) if p not in before or "resume=true" in args]
    multirun = "--multirun" in args or "-m" in args
    assert len(written) >= (2 if multirun else 1), f"metrics.json written: {written}"
    for path in written:
        _check_metrics(path)


def _run_tune(args: list[str], cwd: Path, env: dict[str, str]) -> None:
    """``python -m reid_attn.tune args`` made small; checks the search's files and trials."""
    run_checked([sys.executable, "-m", "reid_attn.tune", *small_tune_args(args)], cwd, env)
    for pattern in TOOLS["reid_attn.tune"]:
        assert list(cwd.glob(pattern)), f"nothing matches {pattern} under {cwd}"
    written = list(cwd.glob("outputs/search/*/trial*/metrics.json"))
    assert written, "no trial wrote its metrics.json"
    for path in written:
        _check_metrics(path)


def _run_tool(plan: Plan, words: list[str], cwd: Path, env: dict[str, str]) -> None:
    if plan.module == "reid_attn.train":
        _run_train(words[3:], cwd, env)
        return
    if plan.module == "reid_attn.tune":
        _run_tune(words[3:], cwd, env)
        return
    run_checked(words, cwd, env)
    for pattern in TOOLS[plan.module]:
        assert list(cwd.glob(pattern)), f"nothing matches {pattern} under {cwd}"
    if plan.module == "reid_attn.report":
        sweep = Path(words[3])
        for name in ("ablation.md", "ablation.csv", "ablation.png"):
            assert (sweep / name).is_file(), f"no {name} in {sweep}"
    if plan.module == "reid_attn.viz.cmc":
        out = words[words.index("--out") + 1]
        assert (cwd / out).is_file(), f"no {out}"


def _run_experiment(plan: Plan, words: list[str], cwd: Path, env: dict[str, str]) -> None:
    copy = cwd / "experiments"
    copy.mkdir()
    for source in (ROOT / "experiments").glob("*.py"):
        shutil.copy(source, copy / source.name)
    flags, outputs = EXPERIMENTS[plan.script]
    run_checked([*words, *flags], cwd, env)
    for name in outputs:
        assert (cwd / name).is_file(), f"{plan.script} did not write {name}"


def _run_make(plan: Plan, cwd: Path, env: dict[str, str]) -> None:
    dry = subprocess.run(
        ["make", "-n", "--no-print-directory", "-C", str(ROOT), *plan.words[1:]],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert dry.returncode == 0, dry.stderr
    if plan.kind == "make-check":
        assert dry.stdout.strip(), f"make -n {plan.words[1:]} prints no recipe"
        return
    lines = [line for line in dry.stdout.splitlines() if "-m reid_attn.train" in line]
    assert len(lines) == 1, dry.stdout
    words = shlex.split(lines[0])
    assert words[0] in INTERPRETERS or words[0].endswith("/bin/python"), words
    _run_train(words[3:], cwd, env)


def replace_placeholders(words: list[str], values: dict[str, str]) -> list[str]:
    out = []
    for word in words:
        for key in sorted(values, key=len, reverse=True):
            word = word.replace(key, values[key])
        out.append(word)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("command", COMMANDS, ids=[c.id for c in COMMANDS])
def test_doc_command_runs(command: DocCommand, doc_env, tmp_path, request) -> None:
    plan = plan_command(command)
    for prefix in plan.states:
        request.getfixturevalue(STATES[prefix])
    values = {key: str(request.getfixturevalue(PLACEHOLDERS[key])) for key in plan.placeholders}
    words = replace_placeholders(plan.words, values)
    env = {**doc_env, **plan.env}
    if plan.kind in ("make-run", "make-check"):
        _run_make(Plan(plan.kind, words), tmp_path, env)
    elif plan.kind == "experiment":
        _run_experiment(plan, words, tmp_path, env)
    else:
        _run_tool(plan, words, tmp_path, env)
    # Passed: free the disk (a training run writes ~600 MB of checkpoints); a failed case
    # keeps its folder for a look.
    for child in tmp_path.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink()
