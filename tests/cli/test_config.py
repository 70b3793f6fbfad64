"""jaxcam.config: defaults < file < flags, unknown keys / bad values name the key and the file."""
import pytest

from jaxcam import config as C

OPTS = (
    C.Option("config", str, None, "file", flag_only=True),
    C.Option("lr", float, 0.1, "rate", check=C.positive),
    C.Option("epochs", int, 3, "epochs", check=C.at_least(1)),
    C.Option("schedule", str, "cosine", "schedule", choices=("cosine", "step", "plateau")),
    C.Option("smoothing", float, 0.0, "fraction", check=C.fraction),
    C.Option("augment", dict, {"flip": {}}, "augmentations"),
    C.Option("layers", list, None, "layers"),
    C.Option("bf16", bool, False, "flag"),
)


def _resolve(argv):
    return C.resolve(OPTS, C.parser("t", OPTS).parse_args(argv))


def test_defaults_file_flags_precedence(tmp_path):
    f = tmp_path / "run.yaml"
    f.write_text("lr: 0.5\nepochs: 7\nschedule: Step\naugment:\n  crop: {padding: 2}\n  flip:\nlayers: [a, b]\nbf16: yes\n")
    cfg, where = _resolve(["--config", str(f), "--epochs", "9"])
    assert cfg == {"lr": 0.5, "epochs": 9, "schedule": "step", "smoothing": 0.0,
                   "augment": {"crop": {"padding": 2}, "flip": {}}, "layers": ["a", "b"], "bf16": True}
    assert where["lr"] == f"{f}: lr" and where["epochs"] == "--epochs" and where["smoothing"] == "default"
    cfg, _ = _resolve(["--augment", "crop,flip", "--layers", "x", "--no-bf16"])
    assert cfg["augment"] == {"crop": {}, "flip": {}} and cfg["layers"] == ["x"] and cfg["bf16"] is False


def test_dump_round_trips(tmp_path):
    cfg, _ = _resolve(["--lr", "0.25", "--augment", "none"])
    C.dump(str(tmp_path / "c.yaml"), cfg)
    again, _ = _resolve(["--config", str(tmp_path / "c.yaml")])
    assert again == cfg and cfg["augment"] == {}


@pytest.mark.parametrize("text, message", [
    ("lrr: 0.1\n", r"run.yaml: unknown key 'lrr' \(did you mean 'lr'\?\)"),
    ("lr: -1\n", r"run.yaml: lr: must be > 0, got -1"),
    ("epochs: 2.5\n", r"run.yaml: epochs: expected an integer, got 2.5"),
    ("epochs: 0\n", r"run.yaml: epochs: must be >= 1, got 0"),
    ("smoothing: 1.5\n", r"run.yaml: smoothing: must be in \[0, 1\], got 1.5"),
    ("schedule: cosin\n", r"run.yaml: schedule: unknown value 'cosin' \(did you mean 'cosine'\?\)"),
    ("lr: [1\n", r"run.yaml: line \d+ not valid YAML"),
    ("- 1\n- 2\n", r"run.yaml: must be a mapping"),
])
def test_file_errors_name_the_key_and_the_file(tmp_path, text, message):
    f = tmp_path / "run.yaml"
    f.write_text(text)
    with pytest.raises(C.ConfigError, match=message) as info:
        _resolve(["--config", str(f)])
    assert "\n" not in str(info.value)


def test_flag_errors_name_the_flag():
    with pytest.raises(C.ConfigError, match=r"^--lr: must be > 0, got -1.0$"):
        _resolve(["--lr", "-1"])
    with pytest.raises(C.ConfigError, match=r"^--schedule: unknown value 'plataeu' \(did you mean 'plateau'\?\)"):
        _resolve(["--schedule", "plataeu"])
    with pytest.raises(C.ConfigError, match="--config: no such file"):
        _resolve(["--config", "/nonexistent/run.yaml"])


def test_argparse_errors_are_one_line_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        C.parser("t", OPTS).parse_args(["--epochs", "two"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--epochs" in err and "invalid int value" in err
