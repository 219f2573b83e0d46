from __future__ import annotations

import pytest

from engine_overlay.errors import OverlayError
from engine_overlay.markers.grammar import MarkerConfig
from engine_overlay.markers.snapshot import scan_text

CFG = MarkerConfig()


def fenced(open_line: str, close_line: str | None = None, indent: str = "        ") -> str:
    close_line = close_line or open_line
    return (
        "class A:\n    def f(self):\n        x = 1\n"
        f"{indent}{open_line}\n        y = compute(x)\n{indent}{close_line}\n        return y\n"
    )


@pytest.mark.parametrize("fence", [
    "# ---- Omni-new ----",
    "#  ---- Omni-new ----",
    "#---- Omni-new ----",
    "# ---Omni-new---",
    "# -------------------------------------- Omni-new -------------------------------------------------",
    "#  ----- Omni-new",
])
def test_fence_spellings_pair_into_one_block(fence):
    blocks, problems = scan_text(fenced(fence), "a.py", CFG)
    assert problems == []
    assert [(b.kind, b.start_line, b.end_line, b.qualname, b.body) for b in blocks] == [
        ("fenced", 4, 6, "A.f", ["y = compute(x)"])
    ]


def test_dashes_only_line_closes_open_block():
    src = fenced("#  ----- Omni-new -----", "#  ------------------------------------")
    blocks, problems = scan_text(src, "a.py", CFG)
    assert problems == [] and blocks[0].end_line == 6


def test_short_dash_line_does_not_close():
    src = fenced("# ---- Omni-new ----", "# ----------")  # under 20 dashes: a plain comment
    blocks, problems = scan_text(src, "a.py", CFG)
    assert blocks == []
    assert len(problems) == 1 and problems[0].line == 4 and "never closed" in problems[0].message


def test_dash_separator_outside_blocks_is_ignored():
    src = "# ------------------------------------\nx = 1\n# ------------------------------------\n"
    assert scan_text(src, "a.py", CFG) == ([], [])


@pytest.mark.parametrize("indent", ["    ", " " * 12, " " * 20])
def test_indentation_varies(indent):
    src = f"def f():\n{indent}z = 0\n{indent}# ---- Omni-new ----\n{indent}a = 1\n{indent}# ---- Omni-new ----\n"
    blocks, problems = scan_text(src, "a.py", CFG)
    assert problems == [] and len(blocks) == 1


def test_id_carrying_fence():
    blocks, problems = scan_text(fenced("# ---- Omni-new: talker-mtp ----", "# ---- Omni-new ----"), "a.py", CFG)
    assert problems == [] and blocks[0].id == "talker-mtp"
    blocks, _ = scan_text(fenced("# ---- Omni-new: talker-mtp ----"), "a.py", CFG)
    assert blocks[0].id == "talker-mtp"


@pytest.mark.parametrize("line, tag, body", [
    ("        y = 2  # Omni-new", "Omni-new", ["y = 2"]),
    ("        y = 2  # Omni-specific", "Omni-specific", ["y = 2"]),
    ("        y = 2  # [Omni] keep", "[Omni]", ["y = 2"]),
    ("        y = 2  # OMNI: talker", "OMNI:", ["y = 2"]),
    ("        y = 2  #NPU-specific", "NPU-specific", ["y = 2"]),
])
def test_trailing_inline_tags(line, tag, body):
    src = f"def f():\n        x = 1\n{line}\n        return x\n"
    blocks, problems = scan_text(src, "a.py", CFG)
    assert problems == []
    assert [(b.kind, b.tag, b.start_line, b.body, b.qualname) for b in blocks] == [("inline", tag, 3, body, "f")]


def test_comment_line_inline_tag_marks_next_code_line():
    src = "def f():\n    # Omni-new: talker needs the buffer\n    # (second comment line)\n\n    buf = alloc()\n    return buf\n"
    blocks, problems = scan_text(src, "a.py", CFG)
    assert problems == []
    b = blocks[0]
    assert (b.kind, b.start_line, b.end_line, b.body) == ("inline", 2, 5, ["buf = alloc()"])
    assert b.inline_tags[0].text == "talker needs the buffer"


def test_inline_tag_inside_fence_belongs_to_the_block():
    src = fenced("# ---- Omni-new ----").replace("y = compute(x)", "y = compute(x)  # NPU-specific")
    blocks, _ = scan_text(src, "a.py", CFG)
    assert len(blocks) == 1 and blocks[0].inline_tags[0].tag == "NPU-specific"


def test_tags_inside_strings_and_other_words_are_not_markers():
    src = (
        'HELP = "# Omni-new is our tag"\n'
        'DOC = """\n# ---- Omni-new ----\n"""\n'
        "# see the Omni-new blocks below\n"
        "x = Omni_newer  # Omni-newer\n"
    )
    assert scan_text(src, "a.py", CFG) == ([], [])


def test_unclosed_fence_is_an_error_with_line():
    src = "def f():\n    a = 1\n    # ---- Omni-new ----\n    b = 2\n"
    blocks, problems = scan_text(src, "m.py", CFG)
    assert blocks == []
    assert [(p.file, p.line, p.severity) for p in problems] == [("m.py", 3, "error")]


def test_nested_fences_by_indentation_are_errors():
    src = (
        "class A:\n"
        "    # ---- Omni-new ----\n"
        "    def f(self):\n"
        "        # ---- Omni-new ----\n"
        "        x = 1\n"
        "        # ---- Omni-new ----\n"
        "        return x\n"
        "    # ---- Omni-new ----\n"
    )
    blocks, problems = scan_text(src, "n.py", CFG)
    assert blocks == []
    assert [p.line for p in problems] == [4, 8]  # every problem collected, none guessed
    assert all("nested" in p.message for p in problems)


def test_nested_fences_by_id_are_errors():
    src = (
        "def f():\n    # ---- Omni-new: outer ----\n    a = 1\n    # ---- Omni-new: inner ----\n"
        "    b = 2\n    # ---- Omni-new: inner ----\n    # ---- Omni-new: outer ----\n"
    )
    blocks, problems = scan_text(src, "n.py", CFG)
    assert problems and problems[0].line == 4 and "outer" in problems[0].message


def test_configured_tags():
    cfg = MarkerConfig.from_dict({"tags": ["kilocode_change"], "inline_tags": ["kilocode_change"]}, "VERSIONS.toml")
    src = "def f():\n    # --- kilocode_change ---\n    a = 1\n    # --- kilocode_change ---\n    b = 2  # Omni-new\n"
    blocks, _ = scan_text(src, "a.py", cfg)
    assert [b.kind for b in blocks] == ["fenced"]


def test_config_from_dict_validates():
    cfg = MarkerConfig.from_dict({"tags": "X-new", "globs": ["*.py", "*.pyi"], "snapshot": "m.json"}, "V")
    assert cfg.tags == ("X-new",) and cfg.globs == ("*.py", "*.pyi") and cfg.snapshot == "m.json"
    with pytest.raises(OverlayError) as e:
        MarkerConfig.from_dict({"tag": ["x"]}, "VERSIONS.toml [vllm.markers]")
    assert e.value.path == "VERSIONS.toml [vllm.markers]" and "tag" in e.value.message
    with pytest.raises(OverlayError):
        MarkerConfig.from_dict({"globs": [1]}, "V")
    with pytest.raises(OverlayError):
        MarkerConfig.from_dict({"tags": []}, "V")
