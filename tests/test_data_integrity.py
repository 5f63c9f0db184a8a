"""Data identity from the bytes and containment of data folders (issue 15): a stale or forged manifest,
links out of the folder and image bombs are refused with the file named; nothing is written. Each
hostile input asserts the exit code, the message, no traceback and nothing written (docs/hostile-inputs.md)."""

from __future__ import annotations

import json
import os
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import cli, write_city_dir

from urbanln_bench.data.loader import CityData, reuse_opened
from urbanln_bench.data.manifest import compute_manifest, manifest_hash, read_manifest, write_manifest


def _snapshot(*roots: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for root in roots if root.exists() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.is_symlink()}


def _run(data: Path, results: Path) -> object:
    """`run` on a data folder, with a cache of its own next to ``results`` (``_cache``): whatever it
    writes there shows, whatever other tests write to the shared one does not."""
    env = {**os.environ, "URBANLN_BENCH_CACHE": str(_cache(results))}
    return cli("run", "--method", "color-histogram", "--city", "NY", "--data-root", str(data), "--seeds", "0",
               "--task", "Pop", "--imagery", "SI", "--results", str(results), "--no-frame", env=env)


def _cache(results: Path) -> Path:
    return results.parent / "run-cache"


def _nothing_written(results: Path) -> bool:
    return not results.exists() and not [p for p in _cache(results).rglob("*") if p.is_file()
                                         and not p.name.endswith(".lock")]


def _assert_refused(done, code: int, *messages: str) -> None:
    for message in messages:
        assert message in done.stderr + done.stdout, done.stderr
    assert done.returncode == code, done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` × ``height`` pixels, with (almost) no pixel data."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")


@pytest.fixture
def sealed_city(tmp_path: Path) -> Path:
    root = write_city_dir(tmp_path / "NY")
    write_manifest(root)
    return root


def _same_size_edit(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-20] ^= 0xFF
    path.write_bytes(bytes(data))


# -- a stale or forged manifest ----------------------------------------------------------------------

def _indicator_changed(root: Path) -> str:
    text = (root / "indicators.csv").read_text()
    (root / "indicators.csv").write_text(text.replace("\nt001,20,", "\nt001,25,", 1))
    return "indicators.csv: content differs from the manifest"


def _tile_replaced(root: Path) -> str:
    (root / "satellite" / "t000.png").write_bytes((root / "satellite" / "t001.png").read_bytes())
    return "satellite/t000.png: content differs from the manifest"


def _file_added(root: Path) -> str:
    (root / "streetview" / "t000" / "9.jpg").write_bytes((root / "streetview" / "t000" / "0.jpg").read_bytes())
    return "streetview/t000/9.jpg: not in the manifest"


def _file_removed(root: Path) -> str:
    (root / "streetview" / "t000" / "1.jpg").unlink()
    return "streetview/t000/1.jpg: in the manifest but missing"


def _aux_changed(root: Path) -> str:
    with open(root / "aux" / "mobility.csv", "a") as handle:
        handle.write("t000,t002,5\n")
    return "aux/mobility.csv: content differs from the manifest"


STALE: dict[str, Callable[[Path], str]] = {"indicator value changed": _indicator_changed,
                                           "satellite tile replaced": _tile_replaced,
                                           "street view added": _file_added, "street view deleted": _file_removed,
                                           "mobility row appended": _aux_changed}


@pytest.mark.parametrize("name", list(STALE))
def test_a_stale_manifest_is_refused_naming_the_file(name: str, sealed_city: Path, tmp_path: Path):
    message = STALE[name](sealed_city)
    results = tmp_path / "results"
    before = _snapshot(sealed_city)
    _assert_refused(_run(sealed_city, results), 2, "stale or forged manifest", message, "--write-manifest")
    assert _nothing_written(results) and _snapshot(sealed_city) == before
    report = cli("data", "validate", str(sealed_city))
    _assert_refused(report, 1, f"{sealed_city / 'manifest.json'}: stale or forged: {message}")
    assert _snapshot(sealed_city) == before


def test_write_manifest_accepts_the_new_files_and_keeps_a_correct_identity(sealed_city: Path):
    """A correct manifest yields the identity of the bytes (as before this check), and `--write-manifest`
    is how a user who changed the data on purpose gets a new one."""
    identity = CityData.open(sealed_city).manifest_hash
    assert identity == manifest_hash(compute_manifest(sealed_city)) == manifest_hash(read_manifest(sealed_city).files)
    _indicator_changed(sealed_city)
    done = cli("data", "validate", str(sealed_city), "--write-manifest")
    assert done.returncode == 0, done.stderr
    assert CityData.open(sealed_city).manifest_hash not in ("", identity)


def test_reuse_opened_reads_a_folder_once_and_again_after_it_is_rewritten(sealed_city: Path, monkeypatch):
    """`leaderboard --verify-keys` opens each city once (not once per replayed cell); a folder rewritten
    since (new manifest) is read again; outside the block every open reads and verifies."""
    reads = []
    read = CityData._read.__func__
    monkeypatch.setattr(CityData, "_read", classmethod(lambda cls, root, **kw: reads.append(root) or read(cls, root, **kw)))
    with reuse_opened():
        first = CityData.open(sealed_city)
        with reuse_opened():  # nested blocks share the cities
            assert CityData.open(sealed_city) is first
        assert CityData.open(Path(str(sealed_city) + "/")) is first and len(reads) == 1
        assert CityData.open(sealed_city, exempt=frozenset({"indicators.csv"})) is not first  # other options
        _indicator_changed(sealed_city)
        assert cli("data", "validate", str(sealed_city), "--write-manifest").returncode == 0
        again = CityData.open(sealed_city)
        assert again is not first and again.manifest_hash != first.manifest_hash and len(reads) == 3
    CityData.open(sealed_city)
    CityData.open(sealed_city)
    assert len(reads) == 5


def test_a_copied_folder_keeps_its_identity(sealed_city: Path, tmp_path: Path):
    """Other mtimes (a copy without -p): the shortcut misses, the hashes agree, the identity is the same."""
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(sealed_city, copy, copy_function=shutil.copyfile)
    assert CityData.open(copy).manifest_hash == CityData.open(sealed_city).manifest_hash


def test_verify_hashes_what_the_shortcut_trusts(sealed_city: Path):
    """Same size, same mtime, other bytes: only a full hash (`--verify`) sees it; likewise a manifest whose
    hash was forged while its sizes and times were kept."""
    tile = sealed_city / "satellite" / "t003.png"
    stat = tile.stat()
    _same_size_edit(tile)
    os.utime(tile, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert cli("data", "validate", str(sealed_city)).returncode == 1  # the edit broke the PNG's checksum ...
    before = _snapshot(sealed_city)
    _assert_refused(cli("data", "validate", str(sealed_city), "--verify"), 1,
                    "stale or forged: satellite/t003.png: content differs from the manifest")
    assert _snapshot(sealed_city) == before


def test_a_forged_hash_with_kept_stats_is_found_by_verify(sealed_city: Path):
    path = sealed_city / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["files"]["regions.csv"] = "0" * 64
    path.write_text(json.dumps(manifest))
    before = _snapshot(sealed_city)
    assert cli("data", "validate", str(sealed_city)).returncode == 0  # size and mtime match: trusted
    _assert_refused(cli("data", "validate", str(sealed_city), "--verify"), 1,
                    "stale or forged: regions.csv: content differs from the manifest")
    assert _snapshot(sealed_city) == before


@pytest.mark.parametrize(("text", "message"), [
    ("{not json", "not a readable manifest"),
    ('{"files": ["regions.csv"]}', "not a manifest (expected"),
    ('{"files": {"regions.csv": "abc"}}', "not a manifest (expected"),
    ("[1, 2]", "not a manifest (expected"),
])
def test_a_malformed_manifest_is_named(text: str, message: str, sealed_city: Path, tmp_path: Path):
    (sealed_city / "manifest.json").write_text(text)
    results = tmp_path / "results"
    before = _snapshot(sealed_city)
    _assert_refused(_run(sealed_city, results), 2, f"{sealed_city / 'manifest.json'}: {message}")
    _assert_refused(cli("data", "validate", str(sealed_city)), 1, message)
    assert _nothing_written(results) and _snapshot(sealed_city) == before


# -- links out of the folder ---------------------------------------------------------------------------

def _tile_linked_out(root: Path, outside: Path) -> str:
    target = outside / "elsewhere.png"
    target.write_bytes((root / "satellite" / "t001.png").read_bytes())
    (root / "satellite" / "t000.png").unlink()
    (root / "satellite" / "t000.png").symlink_to(target)
    return f"{root / 'satellite' / 't000.png'}: symbolic link to {target}, outside the data folder"


def _folder_linked_to_etc(root: Path, outside: Path) -> str:
    (root / "streetview" / "t001").rename(outside / "t001-moved")
    (root / "streetview" / "t001").symlink_to("/etc", target_is_directory=True)
    return f"{root / 'streetview' / 't001'}: symbolic link to /etc, outside the data folder"


def _table_linked_out(root: Path, outside: Path) -> str:
    (root / "indicators.csv").rename(outside / "indicators.csv")
    (root / "indicators.csv").symlink_to(outside / "indicators.csv")
    return "indicators.csv: symbolic link to"


def _relative_link_up(root: Path, outside: Path) -> str:
    (outside / "x.png").write_bytes((root / "satellite" / "t001.png").read_bytes())
    (root / "satellite" / "t002.png").unlink()
    (root / "satellite" / "t002.png").symlink_to(Path("..") / ".." / outside.name / "x.png")
    return "satellite/t002.png: symbolic link to"


LINKS = {"satellite tile linked to a file elsewhere": _tile_linked_out,
         "street-view folder linked to /etc": _folder_linked_to_etc,
         "indicators table linked out": _table_linked_out, "relative link climbing out": _relative_link_up}


@pytest.mark.parametrize("name", list(LINKS))
def test_links_out_of_the_data_folder_are_refused(name: str, tmp_path: Path):
    root = write_city_dir(tmp_path / "NY")
    outside = tmp_path / "outside"
    outside.mkdir()
    message = LINKS[name](root, outside)
    results = tmp_path / "results"
    before = _snapshot(root, outside)
    _assert_refused(_run(root, results), 2, message, "--allow-symlinks")
    _assert_refused(cli("data", "validate", str(root)), 1, message)
    assert _nothing_written(results) and _snapshot(root, outside) == before


def test_links_inside_the_folder_are_allowed_and_allow_symlinks_lets_others_in(tmp_path: Path):
    root = write_city_dir(tmp_path / "NY")
    (root / "satellite" / "t000.png").unlink()
    (root / "satellite" / "t000.png").symlink_to(root / "satellite" / "t001.png")
    done = cli("data", "validate", str(root))
    assert done.returncode == 0, done.stdout + done.stderr
    outside = tmp_path / "outside"
    outside.mkdir()
    _tile_linked_out(root, outside)
    assert cli("data", "validate", str(root)).returncode == 1
    done = cli("data", "validate", str(root), "--allow-symlinks")
    assert done.returncode == 0 and "no problems" in done.stdout, done.stdout + done.stderr


def test_a_linked_folder_is_in_the_manifest(tmp_path: Path):
    """Files reached through a link (allowed) are data: they are hashed into the identity."""
    root = write_city_dir(tmp_path / "NY")
    (root / "streetview" / "t001").rename(root / "shared-t001")
    (root / "streetview" / "t001").symlink_to(root / "shared-t001", target_is_directory=True)
    assert "streetview/t001/0.jpg" in compute_manifest(root)


# -- image bombs ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("width", "height"), [(100_000, 100_000), (10_000, 10_000), (1, 200_000_000)])
def test_an_image_header_claiming_too_many_pixels_is_refused(width: int, height: int, tmp_path: Path):
    root = write_city_dir(tmp_path / "NY")
    tile = root / "satellite" / "t005.png"
    tile.write_bytes(_png_header(width, height))
    results = tmp_path / "results"
    before = _snapshot(root)
    _assert_refused(cli("data", "validate", str(root)), 1, f"{tile}: image header claims", "resize the image")
    _assert_refused(_run(root, results), 2, f"{tile}: image header claims")
    assert _nothing_written(results) and _snapshot(root) == before


def test_the_pixel_limit_is_explicit_and_can_be_raised(tmp_path: Path, monkeypatch):
    from PIL import Image

    from urbanln_bench.data.loader import MAX_IMAGE_PIXELS, load_image
    from urbanln_bench.errors import DataError

    path = tmp_path / "wide.png"
    Image.new("RGB", (300, 200)).save(path)
    monkeypatch.setenv("URBANLN_BENCH_MAX_IMAGE_PIXELS", "50000")
    with pytest.raises(DataError, match="300 × 200 pixels, more than the 50,000"):
        load_image(path)
    monkeypatch.setenv("URBANLN_BENCH_MAX_IMAGE_PIXELS", "60000")
    assert load_image(path).shape == (200, 300, 3)
    monkeypatch.setenv("URBANLN_BENCH_MAX_IMAGE_PIXELS", "-1")
    with pytest.raises(DataError, match="must be a positive number of pixels"):
        load_image(path)
    monkeypatch.delenv("URBANLN_BENCH_MAX_IMAGE_PIXELS")
    load_image(path)
    assert Image.MAX_IMAGE_PIXELS == MAX_IMAGE_PIXELS
