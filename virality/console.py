"""Quiet Caffe on the console, its full log in a file, and readable configuration lines.

Caffe logs through glog: building one net prints its whole definition (hundreds of lines).
``caffe_logging(log_file, verbose)``, called before ``import caffe``, keeps the console to
Caffe's errors and writes everything Caffe logs to ``log_file`` (glog's own file, renamed to the
name asked for; glog's copies of the warnings and errors in files of their own are removed at
exit). It asks for warnings on the console too (``GLOG_stderrthreshold=1``), which glog 0.7 and
newer honour; Debian 12's glog 0.6 ignores that variable (google/glog#558), so there Caffe's
warnings are in the log file only. ``verbose=True`` prints it all
on the console as well. Without a log file, only warnings and errors are logged at all
(``GLOG_minloglevel=1``). A ``GLOG_*`` variable the user set is left as it is.

Tools call it first thing in ``main()``; training can pass its run directory's ``caffe.log``.
"""
import atexit
import os
import sys
from pathlib import Path

_initialised = {"log": None}


def caffe_logging(log_file=None, verbose=False):
    """Configure glog for this process (once). Returns the path of Caffe's full log, or None."""
    if _initialised["log"] is not None or "caffe" in sys.modules:
        # glog reads its GLOG_* variables when libcaffe is loaded; later calls cannot change them.
        return _initialised["log"]
    env = os.environ
    env.setdefault("GLOG_minloglevel", "0" if (verbose or log_file) else "1")
    env.setdefault("GLOG_stderrthreshold", "0" if verbose else "1")
    if log_file is None:
        env.setdefault("GLOG_logtostderr", "1")
        return None
    log_file = Path(log_file).resolve()
    log_file.parent.mkdir(parents=True, exist_ok=True)
    env.setdefault("GLOG_logtostderr", "0")
    env["GLOG_log_dir"] = str(log_file.parent)
    import caffe
    caffe.init_log()
    caffe.log(f"Caffe log of {Path(sys.argv[0]).name} (pid {os.getpid()})")   # makes glog open its file
    suffix = f".{os.getpid()}"
    made = [p for p in log_file.parent.glob("*.log.INFO.*") if p.name.endswith(suffix)]
    if made:
        os.replace(made[0], log_file)            # glog keeps writing to the open file under the new name
        _drop_dangling_links(log_file.parent, "INFO")
    else:
        return None
    atexit.register(_drop_severity_copies, log_file.parent, os.getpid())
    _initialised["log"] = log_file
    return log_file


SEVERITY_COPIES = ("WARNING", "ERROR")


def _drop_severity_copies(log_dir, pid):
    """glog also writes every WARNING and ERROR line to a file of that severity (and a symlink to it);
    the renamed INFO file holds those lines too, so at a normal exit this process's copies are removed
    and its log is the one file asked for. (A crash leaves them, and its FATAL file, beside it.)"""
    log_dir = Path(log_dir)
    for severity in SEVERITY_COPIES:
        for copy in log_dir.glob(f"*.log.{severity}.*.{pid}"):
            copy.unlink(missing_ok=True)
        _drop_dangling_links(log_dir, severity)


def _drop_dangling_links(log_dir, severity):
    """glog's ``<program>.<SEVERITY>`` symlinks whose file is gone (renamed or removed)."""
    for link in Path(log_dir).glob(f"*.{severity}"):
        if link.is_symlink() and not link.exists():
            link.unlink()


def config_lines(title, config):
    """``title`` and one ``  key: value`` line per entry of a dict or dataclass, for the console."""
    from dataclasses import asdict, is_dataclass
    items = asdict(config) if is_dataclass(config) else dict(config)
    width = max((len(str(k)) for k in items), default=0)
    lines = [f"{title}:"]
    for key, value in items.items():
        if isinstance(value, (list, tuple)):
            value = ", ".join(map(str, value)) if value else "(none)"
        elif value is None:
            value = "(default)"
        lines.append(f"  {str(key) + ':':<{width + 1}} {value}")
    return "\n".join(lines)
