"""The README's Python examples run as written: every ```python block, in order, in one namespace
(later blocks use names that earlier ones define, as a reader following along would), with a scratch
working directory for the files they write."""

import contextlib
import io
import os
import re
import textwrap

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def readme_python_blocks() -> list[str]:
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as fh:
        text = fh.read()
    # blocks inside list items are indented with the item: dedent each
    return [textwrap.dedent(b) for b in re.findall(r"```python\n(.*?)```", text, re.S)]


def test_readme_python_examples_run(tmp_path, monkeypatch):
    blocks = readme_python_blocks()
    assert len(blocks) >= 8  # the tour: estimators, distances, convex learners, deep training, ...
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    out = io.StringIO()
    for i, code in enumerate(blocks):
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            exec(compile(code, f"README.md python block {i}", "exec"), namespace)  # noqa: S102
    printed = out.getvalue()
    # the first example prints the 3-NN accuracy of NCA on iris: a number between 0 and 1
    first = float(printed.split()[0])
    assert 0.8 < first <= 1.0, printed[:200]
