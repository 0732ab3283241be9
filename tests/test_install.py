"""install.py: paths, kritarc editing, install/repair/uninstall in a throw-away HOME, the zip, real Krita.

The subprocess tests run install.py from a copy of the working tree (what a fresh clone would hold) with a
temporary HOME and XDG folders, so nothing here touches the real user's Krita.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import pytest

import install
from tests.krita_env import KritaInstall, krita_environment, run_gui

REPO = Path(__file__).resolve().parent.parent
PROBE_DIR = Path(__file__).resolve().parent / "krita_install" / "pykrita"
KRITA_IMPORTER = Path("/usr/share/krita/pykrita/plugin_importer/plugin_importer.py")
PLUGIN = "blended_diffusion"
SKIP_PARTS = {".git", ".venv", "__pycache__", ".pytest_cache", ".ruff_cache"}


# ----------------------------------------------------------------------------------------------- helpers


def copy_working_tree(destination: Path) -> Path:
    """Copy the tracked and untracked-but-not-ignored files: what a clone of the current state would hold."""
    try:
        listed = (
            subprocess.run(
                ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                cwd=REPO,
                capture_output=True,
                check=True,
            )
            .stdout.decode("utf-8")
            .split("\0")
        )
        files = [name for name in listed if name]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout (e.g. an unpacked archive)
        files = [
            str(p.relative_to(REPO))
            for p in REPO.rglob("*")
            if p.is_file() and not SKIP_PARTS.intersection(p.relative_to(REPO).parts)
        ]
    for name in files:
        source = REPO / name
        if source.is_file() and not SKIP_PARTS.intersection(Path(name).parts):
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return destination


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    return copy_working_tree(tmp_path_factory.mktemp("clone"))


def home_env(home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BLENDED_DIFFUSION_", "XDG_"))}
    for key in ("APPDATA", "LOCALAPPDATA", "PYTHONPATH", "VIRTUAL_ENV"):
        env.pop(key, None)
    # pip runs `rustc --version` for its user agent; rustup's shim would write ~/.rustup into the test HOME.
    for key, folder in (("RUSTUP_HOME", ".rustup"), ("CARGO_HOME", ".cargo")):
        if key not in env and (Path.home() / folder).is_dir():
            env[key] = str(Path.home() / folder)
    env.update(
        HOME=str(home),
        XDG_DATA_HOME=str(home / ".local" / "share"),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_CACHE_HOME=str(home / ".cache"),
        PYTHONDONTWRITEBYTECODE="1",
        PIP_NO_CACHE_DIR="1",
    )
    return env


def run_install(clone_dir: Path, home: Path, *args: str, env_extra: dict | None = None):
    env = home_env(home)
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, str(clone_dir / "install.py"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def snapshot(root: Path) -> dict:
    """Every path under root with its kind and content hash: equal snapshots mean byte-equal trees."""
    state = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            state[rel] = ("link", os.readlink(path))
        elif path.is_dir():
            state[rel] = ("dir", None)
        else:
            state[rel] = ("file", hashlib.sha256(path.read_bytes()).hexdigest())
    return state


def tree_files(root: Path) -> dict:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and not SKIP_PARTS.intersection(p.relative_to(root).parts) and p.suffix != ".pyc"
    }


def make_home(tmp_path: Path) -> Path:
    """A HOME that already holds a kritarc with other settings and another plugin."""
    home = tmp_path / "home"
    (home / ".config").mkdir(parents=True)
    (home / ".config" / "kritarc").write_text(
        "[General]\nLastPreset=Basic-5\n\n[python]\nenable_other_plugin=true\n\n[Window]\nMaximized=false\n"
    )
    other = home / ".local" / "share" / "krita" / "pykrita"
    other.mkdir(parents=True)
    (other / "other_plugin.desktop").write_text("[Desktop Entry]\nX-KDE-Library=other_plugin\n")
    (home / ".bashrc").write_text("# unrelated\n")
    return home


def load_plugin_config_module(pykrita_package: Path) -> types.ModuleType:
    """Import the plugin's config.py without its package __init__ (which needs Krita)."""
    package = types.ModuleType("_bd_plugin_pkg")
    package.__path__ = [str(pykrita_package)]
    sys.modules["_bd_plugin_pkg"] = package
    sys.modules.pop("_bd_plugin_pkg.config", None)
    sys.modules.pop("_bd_plugin_pkg.errors", None)
    return __import__("_bd_plugin_pkg.config", fromlist=["engine_config_path"])


# ------------------------------------------------------------------------------------------- unit tests


def test_install_py_uses_only_the_standard_library():
    tree = ast.parse((REPO / "install.py").read_text(encoding="utf-8"))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            imported.add(node.module.split(".")[0])
    assert imported - {"__future__"} <= set(sys.stdlib_module_names), imported - set(sys.stdlib_module_names)


@pytest.mark.parametrize(
    "platform, env, resources, kritarc, config, data",
    [
        (
            "linux",
            {"HOME": "/h"},
            "/h/.local/share/krita",
            "/h/.config/kritarc",
            "/h/.config/blended-diffusion/engine.json",
            "/h/.local/share/blended-diffusion",
        ),
        (
            "linux",
            {"HOME": "/h", "XDG_DATA_HOME": "/d", "XDG_CONFIG_HOME": "/c"},
            "/d/krita",
            "/c/kritarc",
            "/c/blended-diffusion/engine.json",
            "/d/blended-diffusion",
        ),
        (
            "win32",
            {"HOME": "/h", "APPDATA": "/ad", "LOCALAPPDATA": "/lad"},
            "/ad/krita",
            "/lad/kritarc",
            "/ad/blended-diffusion/engine.json",
            "/lad/blended-diffusion",
        ),
        (
            "darwin",
            {"HOME": "/h"},
            "/h/Library/Application Support/krita",
            "/h/Library/Preferences/kritarc",
            "/h/Library/Application Support/blended-diffusion/engine.json",
            "/h/Library/Application Support/blended-diffusion",
        ),
    ],
)
def test_paths_per_platform(platform, env, resources, kritarc, config, data):
    assert install.krita_resource_dir(env, platform) == Path(resources)
    assert install.kritarc_path(env, platform) == Path(kritarc)
    assert install.engine_config_path(env, platform) == Path(config)
    assert install.user_data_dir(env, platform) == Path(data)
    assert install.default_weights_dir(env, platform) == Path(data) / "weights"
    assert install.engine_config_path({**env, "BLENDED_DIFFUSION_CONFIG": "/x.json"}, platform) == Path(
        "/x.json"
    )


@pytest.mark.parametrize("platform", ["linux", "win32", "darwin"])
def test_engine_config_path_agrees_with_the_plugin(platform):
    config = load_plugin_config_module(REPO / "krita_plugin" / PLUGIN)
    for env in (
        {"HOME": "/h", "APPDATA": "/ad"},
        {"HOME": "/h", "XDG_CONFIG_HOME": "/c", "APPDATA": "/ad"},
        {"HOME": "/h", "BLENDED_DIFFUSION_CONFIG": "/e.json"},
    ):
        assert Path(config.engine_config_path(env, platform)) == install.engine_config_path(env, platform)


@pytest.mark.parametrize(
    "before, after, restored_after_krita_rewrite",
    [
        ("", "[python]\nenable_blended_diffusion=true\n", "[Later]\nc=3\n"),
        (
            "[General]\na=1",
            "[General]\na=1\n\n[python]\nenable_blended_diffusion=true\n",
            "[General]\na=1\n\n[Later]\nc=3\n",
        ),
        (
            "[python]\nenable_x=true\n\n[W]\nb=2\n",
            "[python]\nenable_x=true\nenable_blended_diffusion=true\n\n[W]\nb=2\n",
            "[python]\nenable_x=true\n\n[W]\nb=2\n[Later]\nc=3\n",
        ),
        (
            "[python]\r\nenable_blended_diffusion=false\r\nenable_x=true\r\n",
            "[python]\r\nenable_blended_diffusion=true\r\nenable_x=true\r\n",
            "[python]\r\nenable_blended_diffusion=false\r\nenable_x=true\r\n[Later]\nc=3\n",
        ),
    ],
)
def test_kritarc_line_is_set_and_restored(before, after, restored_after_krita_rewrite):
    text, previous, added = install.enable_in_kritarc(before)
    assert text == after
    assert install.enable_in_kritarc(text)[0] == text  # a rerun changes nothing
    # Krita rewrites kritarc with settings of its own; undoing keeps those and restores only our line.
    rewritten = text + "[Later]\nc=3\n"
    assert install.restore_in_kritarc(rewritten, previous, added) == restored_after_krita_rewrite


def test_pip_commands_take_torch_from_its_index_first(tmp_path):
    requirements = tmp_path / "engine.txt"
    requirements.write_text("# pins\ntorch==2.14.1\ntorchvision==0.29.1 ; sys_platform != 'x'\npillow>=10\n")
    assert install.read_pins(requirements) == {"torch": "2.14.1", "torchvision": "0.29.1"}
    first, second = install.pip_commands("py", requirements, install.TORCH_CPU_INDEX)
    assert first[-4:] == ["torch==2.14.1", "torchvision==0.29.1", "--index-url", install.TORCH_CPU_INDEX]
    assert second[-2:] == ["-r", str(requirements)]
    assert len(install.pip_commands("py", requirements, None)) == 1
    assert install.torch_index("cpu", "linux", None) == install.TORCH_CPU_INDEX
    assert install.torch_index("cuda", "linux", None) is None  # PyPI's Linux wheels are the CUDA builds
    assert install.torch_index("default", "darwin", None) is None
    assert install.torch_index("cpu", "linux", "https://mirror/x") == "https://mirror/x"


def test_first_edit_falls_back_to_toy_then_tiny(tmp_path):
    assert install.first_edit_models(True, tmp_path)[0] == "default"
    toy = tmp_path / "resources" / "models" / "toy"
    toy.mkdir(parents=True)
    assert (
        install.first_edit_models(False, tmp_path)[0] == "tiny"
    )  # a folder without its preset is not enough
    (toy / "preset.json").write_text("{}")
    preset, note = install.first_edit_models(False, tmp_path)
    assert preset == str(toy) and "toy" in note and "absent" in note
    (tmp_path / "engine" / "models" / "presets").mkdir(parents=True)
    (tmp_path / "engine" / "models" / "presets" / "toy.json").write_text("{}")
    assert install.first_edit_models(False, tmp_path)[0] == "toy"
    command = install.first_edit_command(
        "py", Path("i.png"), Path("m.png"), "a cat", "toy", Path("out"), ["--x"]
    )
    assert command[:4] == ["py", "-m", "engine", "edit"]
    assert command[command.index("--models") + 1] == "toy" and command[-1] == "--x"
    # the toy preset's own edit_defaults decide the schedule and candidates, for its folder form too
    for toy_models in ("toy", str(toy)):
        toy_command = install.first_edit_command("py", Path("i"), Path("m"), "a", toy_models, Path("o"))
        assert "--timestep_respacing" not in toy_command and "--batch_size" not in toy_command
    tiny = install.first_edit_command("py", Path("i.png"), Path("m.png"), "a cat", "tiny", Path("out"))
    assert tiny[tiny.index("--timestep_respacing") + 1] == "25"  # a short schedule for random weights
    default = install.first_edit_command("py", Path("i.png"), Path("m.png"), "a cat", "default", Path("out"))
    assert "--timestep_respacing" not in default  # the reference's schedule with the real weights


def test_first_edit_example_is_the_toy_scene_for_the_toy_models():
    examples = REPO / "resources" / "examples"
    image, mask, prompt = install.pick_example(toy=True)
    assert (image, mask) == (examples / "toy_scene.png", examples / "toy_scene_mask.png")
    assert prompt == (examples / "toy_scene.txt").read_text().strip() and prompt
    image, mask, prompt = install.pick_example()  # default and tiny: a natural photo, never the toy scene
    assert image == examples / "lakeside.png" and prompt == install.DEFAULT_PROMPT


def test_box_mask_is_a_valid_png(tmp_path):
    path = tmp_path / "mask.png"
    install.write_box_mask(path, (40, 20), (0.25, 0.5, 0.75, 1.0))
    assert install.png_size(path) == (40, 20)
    from PIL import Image

    with Image.open(path) as mask:
        assert mask.mode == "L" and mask.size == (40, 20)
        assert mask.getpixel((20, 15)) == 255 and mask.getpixel((5, 15)) == 0 and mask.getpixel((20, 5)) == 0


# ------------------------------------------------------------------------------- install in a temporary HOME


def test_install_repair_and_uninstall_restore_home(clone, tmp_path):
    home = make_home(tmp_path)
    before = snapshot(home)
    kritarc_before = (home / ".config" / "kritarc").read_text()

    args = ["--no-venv", "--python", sys.executable, "--no-weights", "--no-first-edit", "--yes"]
    result = run_install(clone, home, *args)
    assert result.returncode == 0, result.stdout + result.stderr

    pykrita = home / ".local" / "share" / "krita" / "pykrita"
    source = clone / "krita_plugin"
    assert (pykrita / f"{PLUGIN}.desktop").read_bytes() == (source / f"{PLUGIN}.desktop").read_bytes()
    assert tree_files(pykrita / PLUGIN) == tree_files(source / PLUGIN)
    assert tree_files(pykrita / "bridge") == tree_files(clone / "bridge")
    action = home / ".local" / "share" / "krita" / "actions" / f"{PLUGIN}.action"
    assert action.read_bytes() == (source / f"{PLUGIN}.action").read_bytes()
    assert (pykrita / "other_plugin.desktop").is_file()

    kritarc = (home / ".config" / "kritarc").read_text()
    assert kritarc == kritarc_before.replace(
        "enable_other_plugin=true\n", "enable_other_plugin=true\nenable_blended_diffusion=true\n"
    )

    config_path = home / ".config" / "blended-diffusion" / "engine.json"
    record = json.loads(config_path.read_text())
    engine_root = home / ".local" / "share" / "blended-diffusion" / "engine"
    assert record == {
        "python": os.path.abspath(sys.executable),
        "engine_root": str(engine_root),
        "models": "default",
        "weights_dir": str(home / ".local" / "share" / "blended-diffusion" / "weights"),
    }
    # The engine copy is the checkout's engine, independent of where the checkout lives.
    assert tree_files(engine_root / "engine") == tree_files(clone / "engine")
    assert tree_files(engine_root / "bridge") == tree_files(clone / "bridge")
    # The installed plugin's own reader finds and accepts the record.
    plugin_config = load_plugin_config_module(pykrita / PLUGIN)
    env = home_env(home)
    assert Path(plugin_config.engine_config_path(env, "linux")) == config_path
    loaded = plugin_config.load_engine_config(str(config_path))
    assert (loaded.python, loaded.engine_root) == (record["python"], record["engine_root"])

    # Repair: damage the install, run again, get it back.
    (pykrita / PLUGIN / "__init__.py").unlink()
    (home / ".config" / "kritarc").write_text(kritarc.replace("diffusion=true", "diffusion=false"))
    result = run_install(clone, home, *args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Repairing" in result.stdout
    assert tree_files(pykrita / PLUGIN) == tree_files(source / PLUGIN)
    assert (home / ".config" / "kritarc").read_text() == kritarc

    result = run_install(clone, home, "--uninstall", "--yes")
    assert result.returncode == 0, result.stdout + result.stderr
    assert snapshot(home) == before


def test_uninstall_keeps_what_existed_before(clone, tmp_path):
    """A plugin folder that was there before install.py is moved aside, not lost, and comes back."""
    home = make_home(tmp_path)
    old = home / ".local" / "share" / "krita" / "pykrita" / PLUGIN
    old.mkdir()
    (old / "__init__.py").write_text("# a hand-made older copy\n")
    (home / ".config" / "kritarc").write_text("[python]\nenable_blended_diffusion=false\n")
    before = snapshot(home)
    args = ["--no-venv", "--python", sys.executable, "--no-weights", "--no-first-edit", "--yes"]
    assert run_install(clone, home, *args).returncode == 0
    assert (old / "__init__.py").read_bytes() == (
        clone / "krita_plugin" / PLUGIN / "__init__.py"
    ).read_bytes()
    assert (home / ".config" / "kritarc").read_text() == "[python]\nenable_blended_diffusion=true\n"
    # Krita rewrites kritarc while the plugin is installed; uninstall restores only our line.
    (home / ".config" / "kritarc").write_text("[python]\nenable_blended_diffusion=true\n\n[New]\nk=v\n")
    assert run_install(clone, home, "--uninstall", "--yes").returncode == 0
    assert (
        home / ".config" / "kritarc"
    ).read_text() == "[python]\nenable_blended_diffusion=false\n\n[New]\nk=v\n"
    (home / ".config" / "kritarc").write_text("[python]\nenable_blended_diffusion=false\n")
    assert snapshot(home) == before


def test_engine_from_repo_records_the_checkout(clone, tmp_path):
    home = make_home(tmp_path)
    args = ["--no-venv", "--python", sys.executable, "--no-weights", "--no-first-edit", "--yes"]
    result = run_install(clone, home, *args, "--engine-from-repo", "--models", "tiny")
    assert result.returncode == 0, result.stdout + result.stderr
    record = json.loads((home / ".config" / "blended-diffusion" / "engine.json").read_text())
    assert record["engine_root"] == str(clone) and record["models"] == "tiny"
    assert not (home / ".local" / "share" / "blended-diffusion" / "engine").exists()


@pytest.mark.parametrize("bad", [["--python", "/no/such/python"], ["--krita-dir", "FILE"], ["--models", ""]])
def test_bad_input_changes_nothing(clone, tmp_path, bad):
    home = make_home(tmp_path)
    bad = [str(home / ".bashrc") if arg == "FILE" else arg for arg in bad]
    before = snapshot(home)
    result = run_install(clone, home, *bad, "--no-weights", "--no-first-edit", "--yes")
    assert result.returncode == 2
    assert "install.py: error:" in result.stderr and bad[0] in result.stderr
    assert snapshot(home) == before


def test_offline_weights_then_first_edit_then_uninstall(clone, tmp_path):
    """No network: the download fails with a clear message, the install completes, the first edit runs on
    the stand-in models, and --uninstall still leaves HOME as it was (weights generated for it included)."""
    home = make_home(tmp_path)
    before = snapshot(home)
    quick = "--timestep_respacing 4 --skip_timesteps 2 --batch_size 1 --aug_num 1 --no-progress"
    args = ["--no-venv", "--python", sys.executable, "--yes", "--first-edit-args", quick]
    args += ["--models", "toy-latent"]  # the plugin's preset: downloaded (here: verified) besides the default
    closed = "http://127.0.0.1:9"  # nothing listens there: every download is refused at once
    offline = {"https_proxy": closed, "HTTPS_PROXY": closed, "http_proxy": closed, "HTTP_PROXY": closed}
    result = run_install(clone, home, *args, env_extra=offline)
    assert result.returncode == 0, result.stdout + result.stderr
    weights_dir = home / ".local" / "share" / "blended-diffusion" / "weights"
    assert "could not be downloaded" in result.stdout
    assert (
        "weights (default, toy-latent)" in result.stdout and "preset 'toy-latent' is ready" in result.stdout
    )
    assert f"Put these files in {weights_dir}" in result.stdout
    assert "256x256_diffusion_uncond.pt" in result.stdout and "openaipublic" in result.stdout
    assert "because the default weights" in result.stdout and "absent" in result.stdout
    candidates = home / ".local" / "share" / "blended-diffusion" / "first-edit" / "candidates"
    pictures = sorted(candidates.glob("*.png"))
    assert pictures, result.stdout + result.stderr
    assert "first edit's candidates, made with the" in result.stdout and str(pictures[0]) in result.stdout
    assert run_install(clone, home, "--uninstall", "--yes").returncode == 0
    assert snapshot(home) == before


def test_venv_is_created_reusing_an_installed_torch(clone, tmp_path):
    """The venv code path made cheap: the test interpreter has the pinned torch, so nothing downloads."""
    pin = install.read_pins(clone / "requirements" / "engine.txt")["torch"]
    have = install.installed_version(sys.executable, "torch")
    assert have and have.split("+")[0] == pin, "the test environment must hold the pinned torch"
    home = make_home(tmp_path)
    before = snapshot(home)
    venv_dir = home / "engine-venv"
    args = [
        "--venv",
        str(venv_dir),
        "--reuse-python",
        sys.executable,
        "--no-weights",
        "--no-first-edit",
        "--yes",
    ]
    result = run_install(clone, home, *args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"reusing torch {have}" in result.stdout
    python = install.venv_python(venv_dir)
    assert (venv_dir / "pyvenv.cfg").is_file() and python.exists()
    assert install.installed_version(str(python), "torch") == have
    record = json.loads((home / ".config" / "blended-diffusion" / "engine.json").read_text())
    assert record["python"] == str(python)
    # A rerun repairs in place: the venv stays, pip finds everything satisfied.
    assert run_install(clone, home, *args).returncode == 0
    assert run_install(clone, home, "--uninstall", "--yes").returncode == 0
    assert not venv_dir.exists()
    assert snapshot(home) == before


# ----------------------------------------------------------------------------------------------------- zip


def test_zip_holds_what_krita_expects(clone, tmp_path):
    target = tmp_path / "blended_diffusion.zip"
    result = subprocess.run(
        [sys.executable, str(clone / "install.py"), "--zip", str(target)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    with zipfile.ZipFile(target) as archive:
        names = archive.namelist()
        assert archive.testzip() is None
        desktop = archive.read(f"{PLUGIN}.desktop").decode()
    assert f"X-KDE-Library={PLUGIN}" in desktop
    # Krita's importer looks for the folder entry "<name>/" with "<name>/__init__.py" inside it.
    assert f"{PLUGIN}/" in names and f"{PLUGIN}/__init__.py" in names and f"{PLUGIN}.action" in names
    assert f"{PLUGIN}/_vendor/bridge/" in names and f"{PLUGIN}/_vendor/bridge/client.py" in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    package_files = {
        n[len(PLUGIN) + 1 :] for n in names if n.startswith(f"{PLUGIN}/") and not n.endswith("/")
    }
    assert {p for p in package_files if not p.startswith("_vendor/")} == set(
        tree_files(clone / "krita_plugin" / PLUGIN)
    )
    again = tmp_path / "again.zip"
    subprocess.run(
        [sys.executable, str(clone / "install.py"), "--zip", str(again)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    assert again.read_bytes() == target.read_bytes()  # reproducible


@pytest.mark.skipif(not KRITA_IMPORTER.is_file(), reason=f"Krita's importer not found at {KRITA_IMPORTER}")
def test_krita_importer_extracts_the_zip(clone, tmp_path):
    """Krita's own importer module (Tools > Scripts > Import Python Plugin from File) accepts the archive."""
    target = tmp_path / "blended_diffusion.zip"
    subprocess.run(
        [sys.executable, str(clone / "install.py"), "--zip", str(target)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    resources = tmp_path / "resources"
    resources.mkdir()
    result = subprocess.run(
        [sys.executable, str(KRITA_IMPORTER), str(target), str(resources)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "Imported plugin:" in result.stdout
    pykrita = resources / "pykrita"
    assert (pykrita / f"{PLUGIN}.desktop").is_file()
    assert (resources / "actions" / f"{PLUGIN}.action").is_file()
    installed = tree_files(pykrita / PLUGIN)
    assert {k: v for k, v in installed.items() if not k.startswith("_vendor")} == tree_files(
        clone / "krita_plugin" / PLUGIN
    )
    assert {
        k[len("_vendor/bridge/") :]: v for k, v in installed.items() if k.startswith("_vendor")
    } == tree_files(clone / "bridge")


# ------------------------------------------------------------------------------------------------ real Krita


needs_xvfb = pytest.mark.skipif(
    shutil.which("xvfb-run") is None, reason="needs xvfb-run (apt-get install xvfb)"
)


def docker_id(clone_dir: Path) -> str:
    source = (clone_dir / "krita_plugin" / PLUGIN / "ui" / "docker.py").read_text()
    match = re.search(r'^DOCKER_ID\s*=\s*"([^"]+)"', source, re.M)
    assert match, "krita_plugin/blended_diffusion/ui/docker.py defines no DOCKER_ID"
    return match.group(1)


def run_krita_with_probe(home: Path, tmp_path: Path, krita: KritaInstall) -> dict:
    """Start the real ``krita`` on ``home`` with the probe plugin beside what is installed; its report."""
    pykrita = home / ".local" / "share" / "krita" / "pykrita"
    shutil.copy(PROBE_DIR / "bd_install_probe.desktop", pykrita)
    shutil.copytree(PROBE_DIR / "bd_install_probe", pykrita / "bd_install_probe")
    kritarc = home / ".config" / "kritarc"
    kritarc.write_text(kritarc.read_text().replace("[python]\n", "[python]\nenable_bd_install_probe=true\n"))
    out = tmp_path / "probe.json"
    env = krita_environment(home_env(home))
    env["BD_PROBE_OUT"] = str(out)
    log = tmp_path / "krita.log"
    run_gui(krita, env, tmp_path, log)
    assert out.is_file(), "Krita never ran the probe plugin:\n" + log.read_text(errors="replace")[-3000:]
    report = json.loads(out.read_text())
    assert "error" not in report, report.get("error")
    return report


@needs_xvfb
def test_real_krita_loads_the_installed_plugin(clone, tmp_path, krita):
    """In Krita 5.1 and in Krita 6 (tests/conftest.py), the same installed files."""
    installed_plugin_loads(clone, tmp_path, krita)


@needs_xvfb
@pytest.mark.parametrize("krita", ["krita5.3"], indirect=True)
def test_krita_5_3_loads_the_installed_plugin(clone, tmp_path, krita):
    """Krita 5.3 (Qt5, Debian sid): the smoke test's load part (tests/krita/test_krita53_smoke.py)."""
    installed_plugin_loads(clone, tmp_path, krita)


def installed_plugin_loads(clone: Path, tmp_path: Path, krita: KritaInstall) -> None:
    home = tmp_path / "home"
    home.mkdir()
    args = ["--no-venv", "--python", sys.executable, "--no-weights", "--no-first-edit", "--yes"]
    result = run_install(clone, home, *args)
    assert result.returncode == 0, result.stdout + result.stderr
    report = run_krita_with_probe(home, tmp_path, krita)
    pykrita = home / ".local" / "share" / "krita" / "pykrita"
    # Loaded from the folder install.py filled, not from the source tree.
    assert report["modules"][PLUGIN] == str(pykrita / PLUGIN / "__init__.py")
    assert report["resolves"]["bridge"] == str(pykrita / "bridge" / "__init__.py")
    assert all(str(REPO) not in (path or "") for path in report["modules"].values())
    assert any(name.startswith(PLUGIN + ".") for name in report["extensions"]), report["extensions"]
    assert docker_id(clone) in report["dockers"], report["dockers"]
    actions = report["actions"]
    assert len(actions) == 9, actions
    assert actions["blended_diffusion_edit"] == ["Edit with Text…", "Ctrl+Alt+E"]
    assert actions["blended_diffusion_next"][1] == "Ctrl+Alt+."
    record = json.loads((home / ".config" / "blended-diffusion" / "engine.json").read_text())
    assert report["engine_config"] == {"python": record["python"], "engine_root": record["engine_root"]}


@needs_xvfb
def test_real_krita_loads_the_plugin_imported_from_the_zip(clone, tmp_path, krita):
    """The zip route: Krita's importer (each Krita's own), the engine set up with --no-plugin, the bridge
    from _vendor."""
    importer_file = (krita.root.path if krita.root else Path("/")) / str(KRITA_IMPORTER).lstrip("/")
    if not importer_file.is_file():
        pytest.skip(f"Krita's importer not found at {importer_file}")
    home = tmp_path / "home"
    resources = home / ".local" / "share" / "krita"
    resources.mkdir(parents=True)
    archive = tmp_path / "blended_diffusion.zip"
    build = [sys.executable, str(clone / "install.py"), "--zip", str(archive)]
    subprocess.run(build, check=True, capture_output=True, timeout=120)
    # Krita's own importer as its command line runs it; Krita 6's wants Krita's i18n() in builtins.
    run_importer = (
        "import builtins, runpy, sys; builtins.i18n = getattr(builtins, 'i18n', lambda text, *args: text); "
        "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
    )
    importer = [sys.executable, "-c", run_importer, str(importer_file), str(archive), str(resources)]
    subprocess.run(importer, check=True, capture_output=True, timeout=120)
    (home / ".config").mkdir()
    # What Krita's Python Plugin Manager writes when the user ticks the imported plugin.
    (home / ".config" / "kritarc").write_text("[python]\nenable_blended_diffusion=true\n")
    args = [
        "--no-plugin",
        "--no-venv",
        "--python",
        sys.executable,
        "--no-weights",
        "--no-first-edit",
        "--yes",
    ]
    result = run_install(clone, home, *args)
    assert result.returncode == 0, result.stdout + result.stderr
    report = run_krita_with_probe(home, tmp_path, krita)
    package = resources / "pykrita" / PLUGIN
    assert report["modules"][PLUGIN] == str(package / "__init__.py")
    assert report["resolves"]["bridge"] == str(package / "_vendor" / "bridge" / "__init__.py")
    assert docker_id(clone) in report["dockers"], report["dockers"]
    engine_root = home / ".local" / "share" / "blended-diffusion" / "engine"
    assert report["engine_config"]["engine_root"] == str(engine_root)
