"""The shared progress bar: whole lines (no carriage returns) when stderr is a file or a pipe."""
import io

from virality.progress import progress


def test_a_bar_into_a_log_writes_whole_lines(monkeypatch):
    monkeypatch.delenv("VIRALITY_PROGRESS", raising=False)
    log = io.StringIO()                                   # not a terminal
    for _ in progress(range(50), total=50, desc="predict", unit="img", stream=log, log_interval=0):
        pass
    text = log.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert lines and lines[-1].startswith("predict: 100%") and "50/50" in lines[-1]


def test_disabled_and_switched_off_bars_write_nothing(monkeypatch):
    log = io.StringIO()
    list(progress(range(5), stream=log, enabled=False))
    monkeypatch.setenv("VIRALITY_PROGRESS", "0")
    list(progress(range(5), stream=log))
    assert log.getvalue() == ""
