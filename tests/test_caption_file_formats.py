"""The ``file`` captioner reads what people actually have: a BOM, CRLF, a JSON array (UrbanCLIP's), non-UTF-8."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from urbanln_bench.captions.caption_file import (
    CaptionFileError,
    CaptionRecord,
    FileCaptioner,
    read_caption_jsonl,
)

RECORDS = [CaptionRecord("r1", "qwen", "A long caption."), CaptionRecord("r2", "qwen", "Another one.")]


def _lines(records=RECORDS) -> list[str]:
    return [json.dumps(r.to_dict(), ensure_ascii=False) for r in records]


def test_byte_order_mark_and_crlf(tmp_path: Path):
    path = tmp_path / "windows.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(_lines()).encode() + b"\r\n")
    assert read_caption_jsonl(path, {"r1", "r2"}) == RECORDS
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b"\xef\xbb\xbf" + "\r\n".join([_lines()[0], "{oops"]).encode() + b"\r\n")
    with pytest.raises(CaptionFileError, match=rf"{bad}:2: malformed JSON"):
        read_caption_jsonl(bad)


def test_line_separators_inside_captions_are_not_line_breaks(tmp_path: Path):
    """U+2028 written raw by ensure_ascii=False stays inside its caption (str.splitlines would cut it)."""
    record = CaptionRecord("r1", "qwen", "A road\u2028with trees\x85and shops.")
    path = tmp_path / "caps.jsonl"
    path.write_text("\n".join(_lines([record])) + "\n", encoding="utf-8")
    assert read_caption_jsonl(path) == [record]


def test_non_utf8_names_the_line_of_the_bad_byte(tmp_path: Path):
    path = tmp_path / "gbk.jsonl"
    chinese = json.dumps({"image_id": "r2", "captioner": "q", "caption": "街道两旁有树"}, ensure_ascii=False)
    path.write_bytes(("\n".join(_lines()[:1]) + "\n").encode() + chinese.encode("gbk") + b"\n")
    with pytest.raises(CaptionFileError, match=rf"{path}:2: not UTF-8 text: byte 0xbd at column 50 .*iconv"):
        read_caption_jsonl(path)
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())  # the mark does not shift the reported position
    with pytest.raises(CaptionFileError, match=rf"{path}:2: not UTF-8 text: byte 0xbd at column 50"):
        read_caption_jsonl(path)


def test_json_array_of_records(tmp_path: Path, caplog):
    path = tmp_path / "caps.json"
    path.write_text(json.dumps([r.to_dict() for r in RECORDS], indent=2))
    with caplog.at_level(logging.WARNING, logger="urbanln_bench.captions.caption_file"):
        assert read_caption_jsonl(path) == RECORDS
    assert f"{path}: a JSON array, not JSONL: 2 caption records, one flat list" in caplog.text


@pytest.mark.parametrize("grouped", [False, True])
def test_urbanclip_caption_array_is_regrouped_per_image(tmp_path: Path, caplog, grouped: bool):
    """UrbanCLIP's Beijing_captions.json: {caption, image} sentences, flat (the toolkit's pairs) or grouped."""
    groups = [[{"caption": "The image shows a large parking lot with several cars parked in it",
                "image": "Beijing/16_12614_4690_s.jpg"},
               {"caption": "The parking lot is situated next to a building.", "image": "Beijing/16_12614_4690_s.jpg"}],
              [{"caption": "The image depicts a snowy city street", "image": "Beijing/16_12615_4690_s.jpg"}]]
    data = groups if grouped else [item for group in groups for item in group]
    path = tmp_path / "Beijing_captions.json"
    path.write_text(json.dumps(data, indent=4))
    with caplog.at_level(logging.WARNING, logger="urbanln_bench.captions.caption_file"):
        captioner = FileCaptioner(path, known_image_ids={"z16_12614_4690", "z16_12615_4690"})
    assert captioner.describe(None, "z16_12614_4690", n=5) == [
        "The image shows a large parking lot with several cars parked in it. The parking lot is situated next to "
        "a building."]
    assert captioner.records("z16_12615_4690")[0].captioner == "Beijing_captions"
    shape = "grouped per image in 2 inner arrays" if grouped else "one flat list"
    assert (f"{path}: a JSON array, not JSONL: 3 {{caption, image}} sentences (UrbanCLIP's format), {shape}; "
            "regrouped by 'image' into 2 captions by captioner 'Beijing_captions'") in caplog.text
    with pytest.raises(CaptionFileError) as info:
        read_caption_jsonl(path, known_image_ids={"z16_12614_4690"})
    line = 13 if grouped else 10
    assert (f"{path}:{line}: unknown image 'Beijing/16_12615_4690_s.jpg' (image id 'z16_12615_4690' is not an "
            "image of this city)") in str(info.value)


def test_bad_items_of_an_array_are_reported_at_their_line(tmp_path: Path):
    path = tmp_path / "caps.json"
    items = [r.to_dict() for r in RECORDS] + [{"image_id": "r3", "caption": "no captioner"}, {"caption": 3, "image": "x"}]
    path.write_text(json.dumps(items, indent=1))
    with pytest.raises(CaptionFileError) as info:
        read_caption_jsonl(path)
    message = str(info.value)
    assert f"{path}:12: missing key(s) 'captioner'" in message
    assert f"{path}:16: expected {{\"caption\": str, \"image\": str}} (UrbanCLIP's format)" in message
    path.write_text('[{"image_id": "r1",\n "caption": }]')
    with pytest.raises(CaptionFileError, match=rf"{path}:2: malformed JSON array"):
        read_caption_jsonl(path)
