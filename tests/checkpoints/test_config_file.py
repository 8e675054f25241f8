"""``config.json``: one reader and one rule (unknown fields ignored, missing fields today's
defaults, anything else one line naming the file), the normalised comparison a resumed run
makes, a finished run re-run with a larger --meta-iters, and run folders written before."""
import dataclasses
import json

import pytest

from metaseg import checkpoints
from metaseg.config import DataConfig, MetaConfig, ModelConfig, RunConfig
from metaseg.errors import CheckpointError
from metaseg.meta.trainer import MetaTrainer
from tests.checkpoints.conftest import INNER, META
from tests.meta.conftest import tiny_logits_model, tiny_store

# config.json of a run folder as an earlier metaseg wrote it: fewer sections (no distribute,
# kshot, synthetic), UHO's values beside the settings, a field this metaseg no longer has.
OLD_RUN = """{
  "checkpoint": "runs/old",
  "data": {"image_size": 64, "data_dir": "shards"},
  "eval": {"eval_iters": 7, "shots": 5},
  "inner": {"learning_rate": 0.01, "sgd": true, "retired_option": 3},
  "meta": {"meta_iters": 1000, "meta_batch": 2},
  "model": {"rsd": [2, 4], "feature_extractor_name": "efficientnet-b0"},
  "seed": 4,
  "uho_learning_rate": 0.02,
  "uho_steps": 12
}"""


def test_a_run_folder_of_an_earlier_metaseg_is_read_by_the_one_rule(tmp_path, caplog):
    (tmp_path / "config.json").write_text(OLD_RUN)
    with caplog.at_level("INFO"):
        config = checkpoints.read_run_config(str(tmp_path))
    assert config.model.rsd == (2, 4) and config.data.image_size == 64 and config.seed == 4
    assert config.inner.sgd and config.inner.learning_rate == 0.01
    assert config.meta.meta_batch == 2 and config.eval.eval_iters == 7
    assert config.kshot == RunConfig().kshot  # a missing section: today's defaults
    assert "not used to rebuild the model: inner.retired_option, uho_learning_rate, uho_steps" \
        in caplog.text
    raw = checkpoints.read_config(str(tmp_path))
    assert checkpoints.uho_values(raw) == (0.02, 12)


def test_today_s_writer_is_read_back_to_the_same_config(tmp_path):
    config = RunConfig(data=DataConfig(image_size=32), model=ModelConfig(rsd=(2, 4)),
                       meta=MetaConfig(meta_iters=9), checkpoint=str(tmp_path))
    checkpoints.write_config(str(tmp_path), dataclasses.asdict(config))
    assert checkpoints.read_run_config(str(tmp_path)) == config
    assert checkpoints.stale_files(str(tmp_path)) == []


def test_the_file_keeps_its_format(tmp_path):
    checkpoints.write_config(str(tmp_path), {"model": {"rsd": (2, 4)}, "b": 1.5, "a": None})
    assert (tmp_path / "config.json").read_text() == (
        '{\n  "a": null,\n  "b": 1.5,\n  "model": {\n    "rsd": [\n      2,\n      4\n'
        '    ]\n  }\n}')


@pytest.mark.parametrize("text, expected", [
    ("{", r"config\.json is not valid JSON \(Expecting property name"),
    ("[1, 2]", r"config\.json is not a JSON object"),
    ('{"meta": {"meta_iters": -1}}', r"config\.json: --meta-iters must be"),
    ('{"model": 3}', r"config\.json: section 'model' of the saved run config must be an "
                     "object"),
])
def test_a_bad_file_is_one_line_naming_it(tmp_path, text, expected):
    (tmp_path / "config.json").write_text(text)
    with pytest.raises(CheckpointError, match=expected) as info:
        checkpoints.read_run_config(str(tmp_path))
    assert str(tmp_path / "config.json") in str(info.value) and "\n" not in str(info.value)


def test_an_absent_file_is_none(tmp_path):
    assert checkpoints.read_config(str(tmp_path)) is None
    assert checkpoints.read_run_config(str(tmp_path)) is None


def test_settings_compare_as_stored():
    stored = json.loads(json.dumps({"model": {"rsd": (2, 4), "name": "tiny"}}))  # lists
    checkpoints.check_same_settings("d", stored, {"model": {"rsd": (2, 4), "name": "tiny"}},
                                    ("model",))
    with pytest.raises(CheckpointError, match=r"^checkpoint directory d was written by a "
                                              r"different model configuration \(rsd: "
                                              r"checkpoint \[2, 4\] vs now \[4\]\); use the "):
        checkpoints.check_same_settings("d", stored, {"model": {"rsd": (4,), "name": "tiny"}},
                                        ("model",))


def run(directory, meta_iters, rsd=(2, 4)):
    meta = dataclasses.replace(META, meta_iters=meta_iters)
    return MetaTrainer(tiny_logits_model(seed=0), tiny_store(), meta=meta, inner=INNER,
                       checkpoint_dir=str(directory), total_inner_steps=1,
                       config={"model": {"rsd": rsd}, "meta": {"meta_iters": meta_iters}})


def test_a_finished_run_with_a_larger_meta_iters_resumes(tmp_path):
    assert run(tmp_path, 2).train() == 2
    assert run(tmp_path, 2).train() == 2  # finished: nothing to train, nothing rewritten
    assert checkpoints.read_config(str(tmp_path))["meta"]["meta_iters"] == 2
    assert run(tmp_path, 4).train() == 4
    assert [s.iteration for s in checkpoints.listed(str(tmp_path))] == [3, 4]
    assert checkpoints.read_config(str(tmp_path))["meta"]["meta_iters"] == 4
    with pytest.raises(CheckpointError, match=r"rsd: checkpoint \[2, 4\] vs now \[4\]"):
        run(tmp_path, 5, rsd=(4,)).train()


def test_a_preset_s_config_goes_through_the_same_reader(tmp_path):
    for name in ("config.json", "model.weights.h5"):
        (tmp_path / name).write_text("{" if name == "config.json" else "")
    (tmp_path / "metadata.json").write_text('{"format_version": 1}')
    with pytest.raises(CheckpointError, match=r"config\.json is not valid JSON"):
        checkpoints.detect(tmp_path)
