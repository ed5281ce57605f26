"""Scene formats only Blender imports (.fbx, .dae, .usd/.usda/.usdc/.usdz, .abc, .blend): cheap
checks of the header and of what a truncated file loses (a table, a footer, a closing tag), so
garbage and cut-off files are refused before a Blender importer sees them (and crashes, hangs or
imports half a scene). Their geometry is checked after the import (data_pipeline.render.blender).

References: FBX binary layout (Blender's io_scene_fbx/parse_fbx.py), USD crate header
(pxr/usd/sdf/crateFile.cpp), Ogawa (Alembic's lib/Alembic/Ogawa), .blend header and ENDB block
(Blender's doc/blender_file_format), COLLADA 1.4/1.5 root element.
"""

from __future__ import annotations

import gzip
import lzma
import re
import struct
import zipfile
import zlib
from pathlib import Path

from data_pipeline.formats.base import read_head, read_tail, undecodable, unsupported

# ----------------------------------------------------------------------------- FBX

FBX_MAGIC = b"Kaydara FBX Binary  \x00\x1a\x00"  # then uint32 version
FBX_MIN_VERSION = 7100  # io_scene_fbx: "Version ... unsupported, must be 7100 or later"
_FBX_MAX_TOP_NODES = 10_000  # a real file has about ten top-level nodes


def check_fbx(path: Path) -> list[str]:
    """Binary FBX: magic, version >= 7.1, and the top-level node records (each names the offset
    where it ends) must fit in the file and end with the null record. ASCII FBX is refused:
    Blender's importer reads binary FBX only."""
    size = path.stat().st_size
    head = read_head(path, 27)
    if not head.startswith(FBX_MAGIC):
        text = read_head(path, 1024)
        if text.lstrip().startswith(b";") or b"FBXHeaderExtension" in text:
            raise unsupported(path, "ASCII FBX: Blender's FBX importer reads binary FBX only")
        raise undecodable(path, "not an FBX file (no 'Kaydara FBX Binary' magic)")
    if len(head) < 27:
        raise undecodable(path, "truncated: FBX header without its version")
    (version,) = struct.unpack_from("<I", head, 23)
    if version < FBX_MIN_VERSION:
        raise unsupported(
            path, f"FBX version {version}: Blender's importer reads {FBX_MIN_VERSION} and later"
        )
    wide = version >= 7500  # 64-bit offsets from FBX 7.5 on
    layout, record = ("<QQQB", 25) if wide else ("<IIIB", 13)
    offset = 27
    with open(path, "rb") as handle:
        for _ in range(_FBX_MAX_TOP_NODES):
            handle.seek(offset)
            raw = handle.read(record)
            if len(raw) < record:
                raise undecodable(path, f"truncated: FBX node record at byte {offset} is cut off")
            end, _, _, _ = struct.unpack(layout, raw)
            if end == 0:  # the null record closing the top-level node list
                return []
            if end > size:
                raise undecodable(
                    path, f"truncated: an FBX node ends at byte {end}, the file has {size}"
                )
            if end <= offset:
                raise undecodable(path, f"corrupt FBX node record at byte {offset}")
            offset = end
    raise undecodable(path, f"more than {_FBX_MAX_TOP_NODES} top-level FBX nodes: corrupt")


# ----------------------------------------------------------------------------- COLLADA


def check_dae(path: Path) -> list[str]:
    """XML whose root element is <COLLADA>, closed at the end (a truncated file is not)."""
    head = read_head(path, 4096).decode("utf-8", errors="replace").lstrip("\ufeff \t\r\n")
    if not head.startswith("<") or re.search(r"<(\w+:)?COLLADA[\s>]", head) is None:
        raise undecodable(path, "not a COLLADA file (no <COLLADA> root element)")
    if re.search(rb"</(\w+:)?COLLADA>\s*$", read_tail(path, 1024)) is None:
        raise undecodable(path, "truncated: COLLADA document does not end with </COLLADA>")
    return []


# ----------------------------------------------------------------------------- USD

USDC_MAGIC = b"PXR-USDC"
USDA_MAGIC = b"#usda "
_USDC_HEADER = 88  # magic 8, version 8, table-of-contents offset 8, reserved 64
_USDC_MAX_SECTIONS = 64  # a crate has about six (TOKENS, STRINGS, FIELDS, ...)
_USD_LAYERS = (".usd", ".usda", ".usdc")


def check_usd(path: Path) -> list[str]:
    """.usd: crate or text; .usda: text ("#usda 1.0"); .usdc: crate ("PXR-USDC"), whose table of
    contents (at the offset the header names, written last) must lie inside the file."""
    ext = path.suffix.lower()
    head = read_head(path, 16)
    if head.startswith(USDC_MAGIC) and ext in (".usd", ".usdc"):
        _check_crate(path)
    elif head.startswith(USDA_MAGIC) and ext in (".usd", ".usda"):
        pass  # text: nothing cheap tells a truncated layer apart
    else:
        wanted = {".usd": "'PXR-USDC' or '#usda'", ".usda": "'#usda'", ".usdc": "'PXR-USDC'"}
        raise undecodable(path, f"not a {ext} layer (no {wanted.get(ext, 'USD')} magic)")
    return []


def _check_crate(path: Path) -> None:
    size = path.stat().st_size
    head = read_head(path, _USDC_HEADER)
    if len(head) < _USDC_HEADER:
        raise undecodable(path, f"truncated: {size} bytes, a USD crate header has 88")
    (toc,) = struct.unpack_from("<q", head, 16)
    if not _USDC_HEADER <= toc <= size - 8:
        raise undecodable(
            path, f"truncated: crate table of contents at byte {toc}, the file has {size}"
        )
    with open(path, "rb") as handle:
        handle.seek(toc)
        (count,) = struct.unpack("<Q", handle.read(8))
        if count > _USDC_MAX_SECTIONS:
            raise undecodable(path, f"corrupt crate: {count} sections in its table of contents")
        for _ in range(count):
            raw = handle.read(32)
            if len(raw) < 32:
                raise undecodable(path, "truncated: crate table of contents is cut off")
            name, start, length = struct.unpack("<16sqq", raw)
            if start < 0 or length < 0 or start + length > size:
                section = name.rstrip(b"\0").decode("ascii", errors="replace")
                raise undecodable(path, f"truncated: crate section {section!r} ends past the file")


def check_usdz(path: Path) -> list[str]:
    """A zip archive (readable central directory) whose first file is a USD layer (the package's
    default layer, as the usdz spec requires), itself with a valid magic."""
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            if not infos or not infos[0].filename.lower().endswith(_USD_LAYERS):
                raise undecodable(path, "usdz whose first file is not a .usd/.usda/.usdc layer")
            with archive.open(infos[0]) as layer:
                head = layer.read(16)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, lzma.LZMAError, EOFError,
            OSError, ValueError, struct.error) as exc:  # fmt: skip
        raise undecodable(path, f"not a readable usdz (zip) archive: {exc}") from exc
    except (NotImplementedError, RuntimeError) as exc:  # compression method, encryption
        raise unsupported(path, f"usdz archive Blender cannot read: {exc}") from exc
    if not head.startswith((USDC_MAGIC, USDA_MAGIC)):
        raise undecodable(path, f"usdz layer {infos[0].filename!r} has no USD magic")
    return []


# ----------------------------------------------------------------------------- Alembic

OGAWA_MAGIC = b"Ogawa"
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_OGAWA_DATA_FLAG = 1 << 63  # a child offset with the top bit set points at data, else a group
_OGAWA_MAX_CHILDREN = 1 << 20


def check_abc(path: Path) -> list[str]:
    """Ogawa Alembic: magic, the "frozen" byte a writer sets once the file is complete, and the
    root group (offset in the header) and its children inside the file. HDF5 Alembic (the old
    back end) is refused: Blender reads Ogawa only."""
    size = path.stat().st_size
    head = read_head(path, 16)
    if head.startswith(_HDF5_MAGIC):
        raise unsupported(path, "HDF5 Alembic: Blender's Alembic importer reads Ogawa only")
    if not head.startswith(OGAWA_MAGIC):
        raise undecodable(path, "not an Alembic file (no 'Ogawa' magic)")
    if len(head) < 16:
        raise undecodable(path, "truncated: Ogawa header is cut off")
    if head[5] != 0xFF:
        raise undecodable(path, "Ogawa file is not frozen: its writer never finished it")
    (root,) = struct.unpack_from("<Q", head, 8)
    with open(path, "rb") as handle:
        handle.seek(min(root, size))
        raw = handle.read(8)
        if root + 8 > size or len(raw) < 8:
            raise undecodable(path, f"truncated: Ogawa root group at byte {root}, file has {size}")
        (count,) = struct.unpack("<Q", raw)
        if count > _OGAWA_MAX_CHILDREN or root + 8 + 8 * count > size:
            raise undecodable(path, f"truncated: Ogawa root group of {count} children is cut off")
        children = struct.unpack(f"<{count}Q", handle.read(8 * count))
    if any((child & ~_OGAWA_DATA_FLAG) > size for child in children):
        raise undecodable(path, "truncated: an Ogawa child lies past the end of the file")
    return []


# ----------------------------------------------------------------------------- .blend

# "BLENDER" + pointer size ("_" 4, "-" 8) + endianness ("v" little, "V" big) + version "402";
# from Blender 5.0: "BLENDER" + header size "17" + "-" + format "01" + "v" + version "0500".
_BLEND_HEADER = re.compile(rb"BLENDER(?:[_-][vV]\d{3}|\d\d-\d\d[vV]\d{4})")
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"  # Blender 3.0+ compression; no decoder in the stdlib


def check_blend(path: Path) -> list[str]:
    """A .blend: the header, and the ENDB block every complete file ends with. Compressed files:
    gzip (before 3.0) is opened to read the header; zstd (3.0+) is checked by its magic only."""
    head = read_head(path, 32)
    if head.startswith(_ZSTD_MAGIC):
        return []
    if head.startswith(_GZIP_MAGIC):
        try:
            with gzip.open(path) as handle:
                head = handle.read(32)
        except (OSError, EOFError, zlib.error) as exc:
            raise undecodable(path, f"gzip-compressed .blend does not decompress: {exc}") from exc
        if not _BLEND_HEADER.match(head):
            raise undecodable(path, "gzip-compressed file holds no .blend header")
        return []
    if not _BLEND_HEADER.match(head):
        raise undecodable(path, "not a .blend file (no 'BLENDER' header)")
    if b"ENDB" not in read_tail(path, 64):
        raise undecodable(path, "truncated: .blend does not end with its ENDB block")
    return []
