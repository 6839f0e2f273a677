"""The simulator's interpreter is built from pinned source and cached:
nothing is rebuilt while the inputs are unchanged, and any change to a
frozen module, the variant or the manifests changes the input digest."""
import os
import shutil
import subprocess

import build_mp
from lockctl.interp import ROOT


def test_second_build_is_a_no_op():
    # conftest built it (or found it current) before the tests started.
    assert build_mp.build(quiet=True) is False
    r = subprocess.run(["python3", os.path.join(ROOT, "tools", "build_mp.py")], capture_output=True, text=True)
    assert r.returncode == 0 and "built" not in r.stdout, r.stdout + r.stderr


def test_source_pin_is_checked():
    tar = build_mp.tarball_path()
    assert os.path.exists(tar), "the vendored tarball is expected beside the project here"
    assert build_mp._sha256_file(tar) == build_mp.TARBALL_SHA256


def _tree_copy(tmp_path):
    for rel in build_mp.INPUT_DIRS:
        shutil.copytree(os.path.join(ROOT, rel), tmp_path / rel, ignore=shutil.ignore_patterns("__pycache__"))
    for rel in build_mp.INPUT_FILES:
        os.makedirs(tmp_path / os.path.dirname(rel), exist_ok=True)
        shutil.copy(os.path.join(ROOT, rel), tmp_path / rel)


def test_every_input_changes_the_digest(tmp_path, monkeypatch):
    _tree_copy(tmp_path)
    monkeypatch.setattr(build_mp, "ROOT", str(tmp_path))
    base = build_mp.input_digest("x")
    assert base == build_mp.input_digest("x")
    assert base != build_mp.input_digest("y")  # another source pin
    targets = [os.path.join("firmware", "trust", "p256.py"),
               os.path.join("boards", "unix", "variant", "mpconfigvariant.mk"),
               os.path.join("boards", "firmware_manifest.py"),
               os.path.join("boards", "unix", "blockdev.py")]
    for rel in targets:
        p = tmp_path / rel
        old = p.read_bytes()
        p.write_bytes(old + b"\n")
        assert build_mp.input_digest("x") != base, rel
        p.write_bytes(old)
    assert build_mp.input_digest("x") == base
    (tmp_path / "firmware" / "lock" / "new_module.py").write_text("x = 1\n")
    assert build_mp.input_digest("x") != base


def test_manifests_share_one_firmware_list():
    # Both boards freeze the firmware through the one shared list.
    for manifest, include in ((os.path.join("boards", "esp32", "manifest.py"), "../firmware_manifest.py"),
                              (os.path.join("boards", "unix", "variant", "manifest.py"), "../../firmware_manifest.py")):
        with open(os.path.join(ROOT, manifest)) as f:
            assert 'include("%s")' % include in f.read(), manifest
    with open(os.path.join(ROOT, "boards", "firmware_manifest.py")) as f:
        text = f.read()
    packages = sorted(d for d in os.listdir(os.path.join(ROOT, "firmware"))
                      if os.path.isdir(os.path.join(ROOT, "firmware", d)) and d != "__pycache__")
    for pkg in packages:
        assert 'package("%s", base_path="../firmware")' % pkg in text, pkg
