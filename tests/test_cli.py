import dataclasses
from pathlib import Path

import pytest
from click.testing import CliRunner

from batchemo import config as C
from batchemo.cli import build_config, main


@pytest.mark.parametrize("command, cls", [("run", C.RunConfig), ("train", C.TrainConfig),
                                          ("evaluate", C.EvaluateConfig)])
def test_every_config_field_is_in_help(command, cls):
    out = CliRunner().invoke(main, [command, "--help"], terminal_width=200).output
    for f in dataclasses.fields(cls):
        assert "--" + f.name.replace("_", "-") in out, f.name


def test_flag_overrides_job_file_overrides_default(tmp_path):
    job = tmp_path / "job.toml"
    job.write_text('input = ["media"]\nfps = 2.0\nbatch_size = 32\n')
    cfg = build_config(C.RunConfig, job, {"fps": 7.5, "batch_size": None})
    assert cfg.fps == 7.5 and cfg.batch_size == 32 and cfg.min_face == 20
    assert cfg.input == [tmp_path / "media"]  # relative to the job file, not the cwd


def test_unknown_job_key_exits_2_naming_the_key(tmp_path):
    job = tmp_path / "job.toml"
    job.write_text('input = ["x"]\nfpss = 2\n')
    r = CliRunner().invoke(main, ["run", "--job", str(job)])
    assert r.exit_code == 2 and "fpss" in r.output


def test_out_of_bounds_value_exits_2(tmp_path):
    r = CliRunner().invoke(main, ["run", "-i", str(tmp_path), "--fps", "-1"])
    assert r.exit_code == 2 and "--fps" in r.output


def test_train_without_data_exits_2():
    r = CliRunner().invoke(main, ["train"])
    assert r.exit_code == 2 and "--data" in r.output


@pytest.mark.parametrize("job", sorted((Path(__file__).parents[1] / "jobs").glob("*.toml")),
                         ids=lambda p: p.name)
def test_shipped_job_files_are_valid(job):
    cls = C.TrainConfig if job.name.startswith("train-") else C.RunConfig
    cfg = build_config(cls, job, {})
    if cls is C.TrainConfig:
        assert cfg.data and cfg.out and not str(cfg.test_only or "").startswith("PublicTest")
    if job.name == "train-fer2013.toml":  # stage 1 → 2 → 3 → (+ teachers) student → 6 → 7a → 7
        # → 8a (three seeds) → 8
        stage = {n: build_config(C.TrainConfig, job.with_name(f"train-fer2013-stage{n}.toml"), {})
                 for n in (1, 2, 3)}
        teacher = build_config(C.TrainConfig, job.with_name("train-fer2013-teacher.toml"), {})
        student = build_config(C.TrainConfig, job.with_name("train-fer2013-student.toml"), {})
        step6 = build_config(C.TrainConfig, job.with_name("train-fer2013-distilled.toml"), {})
        assert stage[2].init == stage[1].out and stage[3].init == stage[2].out
        assert student.init == stage[3].out and stage[3].out in student.teachers
        assert teacher.out in student.teachers and len(student.teachers) == 5 and not teacher.init
        assert step6.init == student.out and step6.teachers == student.teachers
        step7a = build_config(C.TrainConfig, job.with_name("train-fer2013-video-teacher.toml"), {})
        assert step7a.init == step6.out and step7a.teachers == [step6.out] and step7a.degrade > 0
        step7 = build_config(C.TrainConfig, job.with_name("train-fer2013-video.toml"), {})
        assert step7.init == step6.out and step7.teachers == [step6.out, step7a.out]
        assert 0 < step7.degrade < step7a.degrade and step7.keep_init == 0.3
        assert step7.soft_labels.name == "ferplus_votes.csv" and not step7a.keep_init
        step8a = build_config(C.TrainConfig, job.with_name("train-fer2013-talking.toml"), {})
        assert step8a.init == step7.out and step8a.teachers == [step7.out]
        assert step8a.occlude and step8a.motion_blur and step8a.pitch and not step8a.keep_init
        assert cfg.init == step7.out and step8a.out in cfg.soup and len(cfg.soup) == 3
        assert cfg.keep_init == 0.85 and cfg.int8 and cfg.out.name == "fer2013-default.keras"


# Issue 28 item 10: `train --seed -1` and `--seed 5000000000` were ValueError tracebacks (exit 1).
@pytest.mark.parametrize("seed", ["-1", "5000000000"])
def test_train_seed_out_of_range_exits_2(tmp_path, seed):
    r = CliRunner().invoke(main, ["train", "--data", str(tmp_path), "--seed", seed])
    assert r.exit_code == 2 and "--seed" in r.output, (r.output, r.exception)
