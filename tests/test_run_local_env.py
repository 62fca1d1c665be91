"""The `.env` writer of `make run`: generated settings are written once and then kept."""

from __future__ import annotations

import base64

from dotenv import dotenv_values

from scripts import run_local


def test_env_file_gets_patient_data_key(tmp_path, monkeypatch):
    env_path = tmp_path / ".env"
    monkeypatch.setattr(run_local, "ENV_PATH", env_path)

    first = run_local.ensure_env_file()

    assert len(base64.b64decode(first["PATIENT_DATA_KEY"])) == 32
    assert dotenv_values(env_path)["PATIENT_DATA_KEY"] == first["PATIENT_DATA_KEY"]


def test_older_env_file_gains_key_once(tmp_path, monkeypatch):
    env_path = tmp_path / ".env"
    monkeypatch.setattr(run_local, "ENV_PATH", env_path)
    older = {
        name: value for name, value in run_local.default_env().items() if name != "PATIENT_DATA_KEY"
    }
    env_path.write_text("".join(f"{name}={value}\n" for name, value in older.items()))

    first = run_local.ensure_env_file()
    second = run_local.ensure_env_file()

    assert first["PATIENT_DATA_KEY"] == second["PATIENT_DATA_KEY"]
    assert first["SECRET_KEY"] == older["SECRET_KEY"]
    assert dotenv_values(env_path)["PATIENT_DATA_KEY"] == first["PATIENT_DATA_KEY"]
