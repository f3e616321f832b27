"""Which tests execute each line of one module: the recorder behind tools/mutants.py's test selection.

Not imported by the project. tools/mutants.py copies this file and a ``sitecustomize.py`` that
imports it into a directory it puts on PYTHONPATH for one recording run of a module's tests; every
Python process of that run (pytest itself, ``tools/*.py`` subprocesses, the Python inside Caffe's
CLI, forked feed workers) then traces the one target file and appends what it executes to its own
file ``<out>/lines-<pid>.txt``, one ``<context>\\t<line>`` row the first time that process runs that
line in that context. Rows are written at once (line-buffered), so a process that ends with
``os._exit`` or is killed still leaves what it ran.

The context is the pytest item being run (its node id), a fixture being set up (``fixture:<n>``;
a test then counts the lines of every fixture it uses, whenever that fixture was set up), or
``<outside>`` (imports, collection, session end: a line run there can reach any test). A process
started from a context inherits it (environment variable ``MUTANTS_TRACE_CTX``; a fork keeps the
variable in memory). A process started with an environment that drops the recorder's variables
cannot be traced: its context is marked opaque, and tools/mutants.py then runs that test for every
mutant.

Used as a pytest plugin (``-p mutants_trace``) it also writes ``<out>/session.json``: the items in
run order, the fixture contexts of each, the opaque contexts, the seconds of each item (setup, call
and teardown) and of each fixture's setup, and whether every test passed.

Environment: MUTANTS_TRACE_FILE (absolute path of the traced module), MUTANTS_TRACE_OUT (directory).
"""
import json
import os
import sys
import threading
import time

FILE_VAR, OUT_VAR, CTX_VAR = "MUTANTS_TRACE_FILE", "MUTANTS_TRACE_OUT", "MUTANTS_TRACE_CTX"
OUTSIDE = "<outside>"

_target = None
_out = None
_ctx = OUTSIDE
_seen = set()
_sink = None
_sink_pid = None
_lock = threading.Lock()
_is_target = {}


def _record(line):
    global _sink, _sink_pid
    key = (_ctx, line)
    if key in _seen:
        return
    with _lock:
        if key in _seen:
            return
        pid = os.getpid()
        if _sink is None or _sink_pid != pid:      # a forked child writes its own file
            _sink = open(os.path.join(_out, f"lines-{pid}.txt"), "a", buffering=1)
            _sink_pid = pid
        _sink.write(f"{_ctx}\t{line}\n")
        _seen.add(key)


def _local(frame, event, arg):
    if event == "line":
        _record(frame.f_lineno)
    return _local


def _global(frame, event, arg):
    name = frame.f_code.co_filename
    hit = _is_target.get(name)
    if hit is None:
        hit = _is_target[name] = os.path.realpath(name) == _target
    if not hit:
        return None
    _record(frame.f_lineno)         # the call itself (first line of the def, or of the module)
    return _local


def start_from_env():
    """Trace the target file in this process if the recorder's variables are set (sitecustomize)."""
    global _target, _out, _ctx
    target, out = os.environ.get(FILE_VAR), os.environ.get(OUT_VAR)
    if not target or not out or _target is not None:
        return
    _target, _out = os.path.realpath(target), out
    _ctx = os.environ.get(CTX_VAR, OUTSIDE)
    sys.settrace(_global)
    threading.settrace(_global)


def set_context(ctx):
    """The context later lines (and the processes started from now on) are counted in."""
    global _ctx
    _ctx = ctx
    os.environ[CTX_VAR] = ctx


# ------------------------------------------------------------------ the pytest plugin

_session = {"order": [], "fixtures": {}, "opaque": [], "passed": True, "seconds": {}, "fixture_seconds": {}}
_fixture_keys = {}        # id(FixtureDef) -> "fixture:<n>:<name>"
_keep = []                # the FixtureDefs, so that their id()s stay unique for the session


def _fixture_key(fixturedef):
    key = _fixture_keys.get(id(fixturedef))
    if key is None:
        key = _fixture_keys[id(fixturedef)] = f"fixture:{len(_fixture_keys)}:{fixturedef.argname}"
        _keep.append(fixturedef)
    return key


def _spawn_is_traced(env):
    if env is None:
        return True
    here = os.path.dirname(os.path.abspath(__file__))
    return (env.get(FILE_VAR) == os.environ.get(FILE_VAR) and env.get(OUT_VAR) == os.environ.get(OUT_VAR)
            and here in env.get("PYTHONPATH", "").split(os.pathsep))


def _mark_if_untraced(env):
    if not _spawn_is_traced(env) and _ctx not in _session["opaque"]:
        _session["opaque"].append(_ctx)


def _watch_spawns():
    """Mark the current context opaque when it starts a process with an environment that drops the
    recorder (its lines could not be counted)."""
    import subprocess
    original = subprocess.Popen.__init__

    def init(self, *args, **kwargs):
        _mark_if_untraced(kwargs["env"] if "env" in kwargs else (args[10] if len(args) > 10 else None))
        original(self, *args, **kwargs)
    subprocess.Popen.__init__ = init

    for name, index in (("execve", 2), ("spawnve", 3), ("posix_spawn", 2), ("posix_spawnp", 2)):
        fn = getattr(os, name, None)
        if fn is not None:
            def wrapped(*args, _fn=fn, _index=index, **kwargs):
                _mark_if_untraced(kwargs["env"] if "env" in kwargs else
                                  (args[_index] if len(args) > _index else None))
                return _fn(*args, **kwargs)
            setattr(os, name, wrapped)


def pytest_configure(config):
    import pytest

    class Recorder:
        @pytest.hookimpl(hookwrapper=True)
        def pytest_runtest_protocol(self, item, nextitem):
            _session["order"].append(item.nodeid)
            info = getattr(item, "_fixtureinfo", None)
            keys = []
            if info is not None:
                for defs in info.name2fixturedefs.values():
                    keys += [_fixture_key(d) for d in defs]
            _session["fixtures"][item.nodeid] = keys
            set_context(item.nodeid)
            try:
                yield
            finally:
                set_context(OUTSIDE)

        @pytest.hookimpl(hookwrapper=True)
        def pytest_fixture_setup(self, fixturedef, request):
            outer, key, start = _ctx, _fixture_key(fixturedef), time.time()
            set_context(key)
            try:
                yield
            finally:
                set_context(outer)
                seconds = _session["fixture_seconds"]
                seconds[key] = seconds.get(key, 0.0) + time.time() - start

        def pytest_runtest_logreport(self, report):
            seconds = _session["seconds"]
            seconds[report.nodeid] = seconds.get(report.nodeid, 0.0) + report.duration   # setup, call, teardown
            if report.failed:
                _session["passed"] = False

        def pytest_sessionfinish(self, session, exitstatus):
            _session["passed"] = _session["passed"] and exitstatus == 0
            path = os.path.join(_out, "session.json")
            with open(path + ".tmp", "w") as f:
                json.dump(_session, f)
            os.replace(path + ".tmp", path)

    start_from_env()
    if _target is None:
        raise pytest.UsageError(f"mutants_trace: set {FILE_VAR} and {OUT_VAR} (tools/mutants.py does)")
    _watch_spawns()
    config.pluginmanager.register(Recorder(), "mutants_trace_recorder")
