"""BENCHMARKS.md's rendered tables are what their committed result files say (benchmarks/tables.py)."""
import json
import shutil

from benchmarks import tables


def test_every_rendered_table_is_its_result_files_rendering():
    text = tables.BENCHMARKS_MD.read_text()
    for name in tables.RENDERERS:
        assert tables.current_block(name, text) == tables.rendered_block(name), (
            f"BENCHMARKS.md's table {name!r} differs from its result file: run `python -m benchmarks.tables`")
    assert tables.main(["--check"]) == 0


def test_every_result_file_has_a_table_and_every_table_a_file():
    files = {p.name for p in tables.RESULTS.glob("*.json")}
    assert files == {r.result_file for r in tables.RENDERERS.values()}


def test_a_changed_result_changes_the_table_and_fails_the_check(tmp_path):
    """The check can fail: a figure edited in a copy of the results shows in the rendering, and the
    committed text no longer matches it."""
    results = tmp_path / "results"
    shutil.copytree(tables.RESULTS, results)
    record = json.loads((results / "first_run.json").read_text())
    record["attempts"][0]["seconds"] = 1234.4
    record["attempts"][1]["exit"] = 5
    (results / "first_run.json").write_text(json.dumps(record))
    block = tables.rendered_block("first_run", results)
    assert "1234" in block and "0, 5, 0" in block and "11 of 12 attempts exited 0." in block
    text = tables.BENCHMARKS_MD.read_text()
    again = tables.render_all(text, results)
    assert tables.current_block("first_run", again) != tables.current_block("first_run", text)


def test_reproduce_sh_reruns_the_benchmark_of_every_result_file():
    import subprocess

    listed = subprocess.run(["bash", str(tables.ROOT / "benchmarks" / "reproduce.sh"), "--list"], capture_output=True,
                            text=True, timeout=30, check=True).stdout
    for renderer in tables.RENDERERS.values():
        assert f"-> benchmarks/results/{renderer.result_file} (took " in listed, renderer.result_file
