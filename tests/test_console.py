"""virality.console.caffe_logging: Caffe's whole log in the one file asked for, the console quiet."""
import os
import subprocess
import sys
import textwrap

from virality.paths import ROOT

# Deprecated input fields: Caffe upgrades the net and logs a WARNING ("Note that future Caffe releases
# will only support input layers and not input fields."), which glog also copies to a .log.WARNING file.
OLD_STYLE_NET = 'name: "old" input: "data" input_shape { dim: 1 dim: 2 } layer { name: "r" type: "ReLU" bottom: "data" top: "r" }\n'


def test_the_log_file_holds_everything_and_glogs_severity_copies_are_removed_at_exit(tmp_path):
    (tmp_path / "old.prototxt").write_text(OLD_STYLE_NET)
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        from virality.console import caffe_logging
        caffe_logging({str(tmp_path / "logs" / "caffe.log")!r})
        import caffe
        caffe.Net({str(tmp_path / "old.prototxt")!r}, caffe.TEST)
        import os
        print("during:", *sorted(os.listdir({str(tmp_path / "logs")!r})))
        """)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GLOG_")}     # as a user runs a tool
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    assert "Network initialization done" not in out.stderr                         # INFO is off the console
    during = out.stdout.split("during:", 1)[1].split()
    assert any(".log.WARNING." in name for name in during), during                 # glog made its copy ...
    assert sorted(os.listdir(tmp_path / "logs")) == ["caffe.log"]                  # ... and it is gone at exit
    log = (tmp_path / "logs" / "caffe.log").read_text()
    assert "future Caffe releases will only support input layers" in log and "Network initialization done" in log
