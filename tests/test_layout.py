import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_the_discord_process_never_imports_tensorflow_or_keras():
    cogs = ", ".join(f"bot.cogs.{path.stem}" for path in sorted((ROOT / "bot" / "cogs").glob("*.py"))
                     if path.stem != "__init__")  # every cog, found, not listed by hand
    code = (f"import sys, bot.app, bot.console, bot.web, {cogs}, model.client, model.safety; "
            "print(sorted(m for m in ('tensorflow', 'keras', 'jax') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"


def test_trainer_and_model_use_no_tensorflow_api():
    """Backend-neutral Keras only, so KERAS_BACKEND=jax trains on a GPU machine without TensorFlow."""
    for path in ["model/network.py", "train/loop.py", "train/dataset.py", "train/evaluate.py", "model/engine.py"]:
        source = (ROOT / path).read_text()
        lines = [l for l in source.splitlines() if "import tensorflow" in l]
        # engine/loop may name the TF device or compile for it, only behind a backend check
        assert all(l.startswith("        ") for l in lines), (path, lines)


def build_wheel(folder: Path, source: Path = ROOT) -> Path:
    import shutil

    had_build = (source / "build").exists()
    try:
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                        "--wheel-dir", str(folder), str(source)], check=True, capture_output=True, cwd=folder)
    finally:
        if not had_build:  # setuptools leaves its build folder in the checkout
            shutil.rmtree(source / "build", ignore_errors=True)
    [wheel] = folder.glob("quill-*.whl")
    return wheel


def image_files(folder: Path) -> Path:
    """What the Dockerfile's COPY lines put in the image, copied to `folder`."""
    import shutil

    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY "):
            *sources, target = line.split()[1:]
            for name in sources:
                if name.endswith("/"):
                    shutil.copytree(ROOT / name, folder / target, ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    (folder / target).mkdir(parents=True, exist_ok=True)
                    shutil.copy(ROOT / name, folder / target / name)
    return folder


@pytest.mark.slow
def test_an_installed_package_carries_its_data_files(tmp_path):
    """A non-editable install (the Docker image's) must hold the files the code reads at run time."""
    import zipfile

    names = set(zipfile.ZipFile(build_wheel(tmp_path)).namelist())
    assert {"model/blocklist.txt", "model/words.txt", "model/cast.txt", "cli.py", "bot/cogs/cast.py",
            "bot/templates/tale.html", "bot/templates/feed.atom", "bot/static/quill.css"} <= names
    assert any(name.endswith("share/quill/models/default/memory.json") for name in names)  # the memory ships


def test_the_runtime_never_imports_training_code():
    """model/ and bot/ are what `make run` and the Docker image install; train/ needs Keras."""
    for path in [*(ROOT / "model").glob("*.py"), *(ROOT / "bot").rglob("*.py")]:
        source = path.read_text()
        assert "from train" not in source and "import train" not in source, path


@pytest.mark.slow
def test_the_image_s_package_tells_a_story_from_any_folder(tmp_path):
    """A wheel of what the image copies, installed in a fresh venv, finds its shipped model (issue
    18), with no checkout, no training code and no benchmarks: its `quill` lists only what it can do."""
    import sysconfig

    wheel = build_wheel(tmp_path, image_files(tmp_path / "image"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
    python = venv / "bin" / "python"
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    # The dependencies come from this venv (no network); quill itself only from the wheel.
    (Path(site) / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", str(wheel)],
                   check=True, capture_output=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = subprocess.run([venv / "bin" / "quill", "story", "Harry", "--length", "100", "--seed", "1"],
                         capture_output=True, text=True, cwd=elsewhere, env={"PATH": "/usr/bin:/bin"}, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("Harry") and len(out.stdout) > 90
    out = subprocess.run([python, "-c", "import train"], capture_output=True, text=True, cwd=elsewhere)
    assert "No module named 'train'" in out.stderr
    out = subprocess.run([venv / "bin" / "quill", "--help"], capture_output=True, text=True, cwd=elsewhere,
                         env={"PATH": "/usr/bin:/bin"}, timeout=60)
    assert "{story,run,sync}" in out.stdout, out.stdout


WEB = ("QUILL_WEB_PORT", "QUILL_PUBLIC_URL")  # the web gallery's settings: one shard serves it (below)


def test_compose_runs_the_shards_as_the_multi_process_test_does():
    import yaml

    from tests.test_processes import SHARDS, shard_environment

    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    shards = sorted(name for name in services if name.startswith("shard"))
    assert shards == [f"shard{i}" for i in range(SHARDS)]
    database = services["shard0"]["environment"]["QUILL_DATABASE"]
    assert database.startswith("postgresql://") and "@postgres/" in database
    targets = []
    for i, name in enumerate(shards):
        service = services[name]
        assert service["command"] == ["quill", "run"]  # the test runs the same console script
        env = service["environment"]
        port = int(env["QUILL_METRICS_PORT"])
        shard_only = {k: v for k, v in env.items() if k not in ("DISCORD_TOKEN", *WEB)}
        assert shard_only == shard_environment(i, database, port)
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
        targets.append(f"{name}:{port}")
    scrape = yaml.safe_load(compose["configs"]["prometheus"]["content"])
    assert scrape["scrape_configs"][0]["static_configs"][0]["targets"] == targets


def test_the_image_checks_its_health_on_the_metrics_port():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "QUILL_METRICS_PORT=9100" in dockerfile and "EXPOSE 9100" in dockerfile
    assert "HEALTHCHECK" in dockerfile and "/healthz" in dockerfile


def test_the_image_and_compose_serve_the_web_gallery():
    import yaml

    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "QUILL_WEB_HOST=0.0.0.0" in dockerfile and re.search(r"EXPOSE .*\b8080\b", dockerfile)
    services = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    shards = [services[name] for name in services if name.startswith("shard")]
    assert [s["environment"].get("QUILL_WEB_PORT") for s in shards] == ["8080"] + [None] * (len(shards) - 1)
    assert len({s["environment"]["QUILL_PUBLIC_URL"] for s in shards}) == 1  # every shard links to it
    assert shards[0]["ports"] == ["127.0.0.1:8080:8080"]
