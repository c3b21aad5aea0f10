"""Command-line errors: one line, exit code 2, nothing written to the output folder."""

from __future__ import annotations

import shutil

import pytest

from benchmark.cli import main


def run_cli(arguments, capsys):
    code = main(arguments)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_clean_failure(code, err, output_dir, expected):
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("poisonbench: error:")]
    assert len(lines) == 1, err
    assert expected in lines[0]
    assert not output_dir.exists() or not any(output_dir.iterdir())


def test_missing_data_folder(tmp_path, capsys):
    output_dir = tmp_path / "out"
    code, _, err = run_cli(
        ["run", "--data-dir", str(tmp_path / "missing"), "--output-dir", str(output_dir)], capsys
    )
    assert_clean_failure(code, err, output_dir, "sst2/train.tsv")


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ("a fine film without a tab", "train.tsv:3: missing tab"),
        ("a fine film\t7", "train.tsv:3: invalid label '7'"),
    ],
)
def test_malformed_tsv_row(tmp_path, capsys, shared_data, row, expected):
    data_dir = tmp_path / "data"
    (data_dir / "sst2").mkdir(parents=True)
    shutil.copy(shared_data / "sst2" / "test.tsv", data_dir / "sst2" / "test.tsv")
    (data_dir / "sst2" / "train.tsv").write_text(f"sentence\tlabel\na good film\t1\n{row}\n")
    output_dir = tmp_path / "out"
    code, _, err = run_cli(
        ["run", "--data-dir", str(data_dir), "--output-dir", str(output_dir)], capsys
    )
    assert_clean_failure(code, err, output_dir, expected)


@pytest.mark.parametrize("ratio", ["0", "1", "1.5", "-0.2"])
def test_ratio_outside_open_interval(tmp_path, capsys, shared_data, ratio):
    output_dir = tmp_path / "out"
    code, _, err = run_cli(
        ["run", "--data-dir", str(shared_data), "--output-dir", str(output_dir), "--ratio", ratio],
        capsys,
    )
    assert_clean_failure(code, err, output_dir, "poison ratio must lie in (0, 1)")


def test_unknown_config_key(tmp_path, capsys):
    config = tmp_path / "config.yaml"
    config.write_text("attack:\n  ratio: 0.03\n  trigger_phrase: x\n")
    output_dir = tmp_path / "out"
    code, _, err = run_cli(
        ["run", "--config", str(config), "--output-dir", str(output_dir)], capsys
    )
    assert_clean_failure(code, err, output_dir, "unknown key attack.trigger_phrase")


def test_wrong_type_in_config(tmp_path, capsys):
    config = tmp_path / "config.yaml"
    config.write_text("data:\n  n_train: many\n")
    code, _, err = run_cli(["run", "--config", str(config)], capsys)
    assert code == 2
    assert "key data.n_train must be an integer" in err


def test_unknown_detector(tmp_path, capsys, shared_data):
    output_dir = tmp_path / "out"
    code, _, err = run_cli(
        [
            "run",
            "--data-dir",
            str(shared_data),
            "--output-dir",
            str(output_dir),
            "--detectors",
            "loss,no-such-detector",
        ],
        capsys,
    )
    assert_clean_failure(code, err, output_dir, "unknown detector 'no-such-detector'")


@pytest.mark.parametrize(
    ("kind", "expected"),
    [("attacks", "ner-dirty"), ("detectors", "transform-voting"), ("transforms", "paraphrase")],
)
def test_list_commands(capsys, kind, expected):
    code, out, _ = run_cli(["list", kind], capsys)
    assert code == 0
    assert expected in out
