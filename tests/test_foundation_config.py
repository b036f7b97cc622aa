"""Config templates and the hparams loader."""

import json
import sys
from pathlib import Path

import pytest
import yaml

from modules.cli import run_main
from modules.errors import ConfigError
from modules.hparams import HParams, get_hparams_from_file, save_config

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "configs"


def test_templates_hold_the_original_values():
    std = json.loads((TEMPLATES / "config_template.json").read_text())
    tiny = json.loads((TEMPLATES / "config_tiny_template.json").read_text())
    assert std["train"]["log_interval"] == 200 and std["train"]["eval_interval"] == 800
    assert std["train"]["betas"] == [0.8, 0.99] and std["train"]["eps"] == 1e-9
    assert std["train"]["lr_decay"] == 0.999875 and std["train"]["segment_size"] == 10240
    assert std["train"]["c_mel"] == 45 and std["train"]["keep_ckpts"] == 3 and std["train"]["port"] == "8001"
    assert std["data"]["sampling_rate"] == 44100 and std["data"]["hop_length"] == 512
    assert std["data"]["unit_interpolate_mode"] == "nearest"
    m = std["model"]
    assert (m["filter_channels"], m["upsample_initial_channel"], m["n_speakers"]) == (768, 512, 200)
    assert m["use_depthwise_conv"] is False and m["flow_share_parameter"] is False
    assert m["use_automatic_f0_prediction"] is True and m["vocoder_name"] == "nsf-hifigan"
    assert std["spk"] == {"nyaru": 0, "huiyu": 1, "nen": 2, "paimon": 3, "yunhao": 4}
    # tiny differs in exactly four model values (spec §2.2)
    diff = {k for k in m if m[k] != tiny["model"][k]}
    assert diff == {"filter_channels", "upsample_initial_channel", "use_depthwise_conv", "flow_share_parameter"}
    assert tiny["train"] == std["train"] and tiny["data"] == std["data"]
    d = yaml.safe_load((TEMPLATES / "diffusion_template.yaml").read_text())
    assert d["model"] == {"type": "Diffusion", "n_layers": 20, "n_chans": 512, "n_hidden": 256,
                          "use_pitch_aug": True, "timesteps": 1000, "k_step_max": 0, "n_spk": 1}
    assert d["infer"] == {"speedup": 10, "method": "dpm-solver++"}
    assert d["vocoder"] == {"type": "nsf-hifigan", "ckpt": "pretrain/nsf_hifigan/model"}
    assert d["train"]["batch_size"] == 48 and d["train"]["interval_val"] == 2000


def test_loader_attribute_and_key_access():
    hps = get_hparams_from_file(TEMPLATES / "config_template.json")
    assert hps.data.hop_length == 512 == hps["data"]["hop_length"]
    assert dict(**hps.model)["ssl_dim"] == 768  # usable as **kwargs
    with pytest.raises(AttributeError, match="model.no_such_key"):
        _ = hps.model.no_such_key
    with pytest.raises(KeyError):
        _ = hps["nope"]
    d = get_hparams_from_file(TEMPLATES / "diffusion_template.yaml")
    assert d.infer.method == "dpm-solver++" and d.model.n_chans == 512


def test_unknown_key_is_rejected_with_file_and_suggestion(tmp_path):
    cfg = json.loads((TEMPLATES / "config_template.json").read_text())
    cfg["model"]["ssl_dimm"] = 768
    p = tmp_path / "config.json"
    p.write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match=r"config.json.*model.ssl_dimm.*did you mean 'model.ssl_dim'"):
        get_hparams_from_file(p)
    assert get_hparams_from_file(p, strict=False).model.ssl_dimm == 768


def test_old_40_config_loads_with_inference_defaults(tmp_path):
    cfg = json.loads((TEMPLATES / "config_template.json").read_text())
    for k in ("speech_encoder", "vol_embedding", "use_depthwise_conv", "flow_share_parameter",
              "use_automatic_f0_prediction", "use_transformer_flow", "vocoder_name", "n_flow_layer",
              "n_layers_trans_flow", "speaker_embedding"):
        del cfg["model"][k]
    del cfg["data"]["unit_interpolate_mode"]
    cfg["model"]["ssl_dim"] = cfg["model"]["gin_channels"] = 256
    p = tmp_path / "config.json"
    p.write_text(json.dumps(cfg))
    hps = get_hparams_from_file(p, infer_mode=True)
    assert hps.model.speech_encoder == "vec768l12"  # 4.1's default for configs without the key
    assert hps.model.vol_embedding is False and hps.data.unit_interpolate_mode == "left"


@pytest.mark.parametrize("content,match", [(None, "not found"), ("", "empty"), ("{oops", "not valid JSON"), ("[1, 2]", "top level")])
def test_bad_config_files(tmp_path, content, match):
    p = tmp_path / "config.json"
    if content is not None:
        p.write_text(content)
    with pytest.raises(ConfigError, match=match):
        get_hparams_from_file(p)


def test_save_config_round_trip(tmp_path):
    hps = get_hparams_from_file(TEMPLATES / "config_tiny_template.json")
    hps.spk = {"a": 0}
    save_config(hps, tmp_path / "c.json")
    save_config(get_hparams_from_file(TEMPLATES / "diffusion_template.yaml"), tmp_path / "d.yaml")
    assert get_hparams_from_file(tmp_path / "c.json").to_dict() == hps.to_dict()
    text = (tmp_path / "d.yaml").read_text()
    assert text.index("data:") < text.index("model:")  # 4.1 dumps with sorted keys
    assert list(tmp_path.iterdir()) and not [f for f in tmp_path.iterdir() if f.name.startswith(".")]


def test_hparams_is_picklable_for_worker_processes():
    import pickle

    hps = HParams(a={"b": 1})
    assert pickle.loads(pickle.dumps(hps)).a.b == 1


def test_run_main_turns_user_errors_into_one_line_and_exit_2(capsys):
    def main(argv):
        raise ConfigError("configs/x.json: config file not found")

    assert run_main(main, []) == 2
    err = capsys.readouterr().err
    assert err.strip() == "error: configs/x.json: config file not found"
