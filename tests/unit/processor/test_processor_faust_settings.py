"""The processor's faust settings: what deploy/README.md promises of it."""

from __future__ import annotations

from pathlib import Path

from services.processor.app import faust_settings
from services.settings import Settings


def test_the_processor_produces_with_acks_all(tmp_path: Path) -> None:
    # Measurement notices and detections must survive a leader failing after it acked.
    assert faust_settings(Settings(data_dir=tmp_path))["producer_acks"] == -1


def test_faust_keeps_its_directory_under_the_data_directory(tmp_path: Path) -> None:
    datadir = faust_settings(Settings(data_dir=tmp_path))["datadir"]
    assert Path(datadir.format(conf=type("Conf", (), {"name": "g"}))) == tmp_path / "faust" / "g"
