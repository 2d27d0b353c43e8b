"""The notebook's code cells run against a real (tiny-model) generate run."""

import json
from pathlib import Path

import matplotlib
from conftest import tiny_generate

REPO = Path(__file__).resolve().parents[1]


def test_step_entropy_notebook_runs(tiny_model_dir, tmp_path):
    matplotlib.use("Agg")
    out = tiny_generate(tiny_model_dir, tmp_path, 4, max_new_tokens=80, temperature=1.2)
    nb = json.loads((REPO / "notebooks" / "step_entropy.ipynb").read_text())
    scope: dict = {}
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            src = "".join(cell["source"]).replace("../runs/smollm2-mawps/generate", str(out))
            exec(compile(src, "notebook", "exec"), scope)
    steps, df = scope["steps"], scope["df"]
    assert df.height == 4
    assert steps.height == int(df["n_steps"].sum())
    per_row = steps.group_by("problem_id").agg(
        p=scope["pl"].col("pruned").sum(), n=scope["pl"].len()
    )
    assert all(p == int(n * 0.8) for p, n in zip(per_row["p"], per_row["n"], strict=True))


def test_every_notebook_has_a_papermill_parameters_cell_before_its_first_read():
    for path in sorted((REPO / "notebooks").glob("*.ipynb")):
        cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
        first = cells[0]
        assert "parameters" in first["metadata"].get("tags", []), path.name
        assert "RUN = " in "".join(first["source"]), path.name
        assert all("RUN = " not in "".join(c["source"]) for c in cells[1:]), path.name
