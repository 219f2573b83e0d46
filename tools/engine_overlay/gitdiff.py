"""Parse one `diff --git` entry the way `git apply` does (apply.c of git 2.39).

Names: `diff --git` names (both halves must agree when unquoted), C-style
quoting, `---`/`+++` names that end at a TAB (so names may begin or end with a
space), `rename from` / `copy from` names stripped of one component fewer than
`-p`, runs of slashes squashed. Binary data: `GIT binary patch` literal and
delta hunks (base85, zlib). Everything here works on bytes; names are decoded
with surrogateescape so any byte survives into the tree.
"""

from __future__ import annotations

import base64
import re
import zlib
from dataclasses import dataclass

MAX_BINARY = 1 << 31  # a declared inflated size above this is refused, not allocated

_ESCAPES = {ord("a"): 7, ord("b"): 8, ord("f"): 12, ord("n"): 10, ord("r"): 13, ord("t"): 9, ord("v"): 11,
            ord("\\"): 92, ord('"'): 34}


class DiffSyntaxError(ValueError):
    """A malformed header or binary hunk; *line* is 1-based in the patch file."""

    def __init__(self, message: str, line: int) -> None:
        super().__init__(message)
        self.line = line


def unquote_c(data: bytes, start: int = 0) -> tuple[bytes, int] | None:
    """git's `unquote_c_style`: the name of a `"..."` at *start* and the index after it."""
    if data[start:start + 1] != b'"':
        return None
    out = bytearray()
    i = start + 1
    n = len(data)
    while i < n:
        c = data[i]
        if c == 34:  # "
            return bytes(out), i + 1
        if c != 92:  # backslash
            out.append(c)
            i += 1
            continue
        i += 1
        if i >= n:
            return None
        c = data[i]
        if c in _ESCAPES:
            out.append(_ESCAPES[c])
            i += 1
        elif 48 <= c <= 51:  # octal, first digit 0-3
            digits = data[i:i + 3]
            if len(digits) != 3 or not all(48 <= d <= 55 for d in digits):
                return None
            out.append(int(digits, 8))
            i += 3
        else:
            return None
    return None


def squash_slash(name: bytes | None) -> bytes | None:
    if name is None or b"//" not in name:
        return name
    return re.sub(rb"//+", b"/", name)


def _find_name_gnu(line: bytes, p_value: int) -> bytes | None:
    found = unquote_c(line)
    if found is None:
        return None
    name = found[0]
    cut = 0
    for _ in range(p_value):
        slash = name.find(b"/", cut)
        if slash < 0:
            return None
        cut = slash + 1
    return squash_slash(name[cut:])


TERM_SPACE, TERM_TAB = 1, 2


_END_OF_NAME = {  # what ends an unquoted name: a newline or other whitespace, per terminate flags
    0: re.compile(rb"[\n\r\x0b\x0c]"),
    TERM_TAB: re.compile(rb"[\t\n\r\x0b\x0c]"),
    TERM_SPACE: re.compile(rb"[ \n\r\x0b\x0c]"),
    TERM_SPACE | TERM_TAB: re.compile(rb"[ \t\n\r\x0b\x0c]"),
}


def _find_name_common(line: bytes, default: bytes | None, p_value: int, end: int | None, terminate: int) -> bytes | None:
    if end is None:
        found = _END_OF_NAME[terminate].search(line)
        end = found.start() if found else len(line)
    start = 0
    for _ in range(p_value):  # after the p_value-th slash (every slash counts, as in git)
        slash = line.find(b"/", start, end)
        if slash < 0:
            return squash_slash(default)
        start = slash + 1
    if start == end:
        return squash_slash(default)
    name = line[start:end]
    if default is not None and len(default) < len(name) and name.startswith(default):
        return squash_slash(default)
    return squash_slash(name)


def find_name(line: bytes, default: bytes | None, p_value: int, terminate: int) -> bytes | None:
    """The file named at the start of *line* (after `--- `, `rename from `, ...)."""
    if line[:1] == b'"':
        name = _find_name_gnu(line, p_value)
        if name is not None:
            return name
    return _find_name_common(line, default, p_value, None, terminate)


def _skip_tree_prefix(p_value: int, name: bytes) -> int | None:
    """Index after *p_value* leading components; None for absolute names or too few components."""
    if not p_value:
        return None if name[:1] == b"/" else 0
    left = p_value
    for i, c in enumerate(name):
        if c == 47:
            left -= 1
            if left <= 0:
                return None if i == 0 else i + 1
    return None


def git_header_name(p_value: int, line: bytes) -> bytes | None:
    """The name on a `diff --git` line when both halves agree (git's `git_header_name`)."""
    rest = line[len(b"diff --git "):]
    if not rest.endswith(b"\n"):
        rest += b"\n"
    if rest[:1] == b'"':
        first = unquote_c(rest)
        if first is None:
            return None
        name, after = first
        cut = _skip_tree_prefix(p_value, name)
        if cut is None:
            return None
        name = name[cut:]
        while after < len(rest) and rest[after:after + 1].isspace() and rest[after] != 10:
            after += 1
        if after >= len(rest) - 1:
            return None
        if rest[after:after + 1] == b'"':
            second = unquote_c(rest, after)
            if second is None:
                return None
            cut = _skip_tree_prefix(p_value, second[0])
            return name if cut is not None and second[0][cut:] == name else None
        tail = rest[after:]  # with its newline, as git compares it (so a mixed form never agrees)
        cut = _skip_tree_prefix(p_value, tail)
        return name if cut is not None and tail[cut:] == name else None
    body = rest[:-1]
    cut = _skip_tree_prefix(p_value, body)
    if cut is None:
        return None
    name = body[cut:]
    quote = name.find(b'"')
    if quote >= 0:
        second = unquote_c(name, quote)
        if second is None:
            return None
        cut2 = _skip_tree_prefix(p_value, second[0])
        if cut2 is None:
            return None
        candidate = second[0][cut2:]
        length = len(candidate)
        if length < quote and name[:length] == candidate and name[length:length + 1] in (b" ", b"\t"):
            return candidate
        return None
    for found in re.finditer(rb"[ \t]", name):
        length = found.start()
        if length + 1 >= len(name):
            return None
        other = name[length + 1:]
        cut2 = _skip_tree_prefix(p_value, other)
        if cut2 is None:
            return None
        if other[cut2:] == name[:length]:
            return name[:length]
    return None


def is_dev_null(value: bytes) -> bool:
    return value.startswith(b"/dev/null") and value[9:10].isspace()


@dataclass
class GitHeader:
    """What the extended header lines of one `diff --git` entry say (names already -p stripped)."""

    old_name: bytes | None = None
    new_name: bytes | None = None
    def_name: bytes | None = None
    is_new: bool = False
    is_delete: bool = False
    is_rename: bool = False
    is_copy: bool = False
    old_mode: int | None = None
    new_mode: int | None = None
    index_old: str | None = None
    index_new: str | None = None
    score: int | None = None


def _mode(value: bytes, line: int) -> int:
    digits = value.split(None, 1)[0] if value.strip() else b""
    if not digits or len(digits) > 7 or not all(48 <= c <= 55 for c in digits) or value[len(digits):len(digits) + 1] not in (b"", b" ", b"\t", b"\n", b"\r"):
        raise DiffSyntaxError(f"invalid mode {value.strip().decode(errors='replace')!r}", line)
    return int(digits, 8)


def parse_git_header(lines: list[bytes], i: int, p_value: int) -> tuple[GitHeader, int]:
    """Parse the `diff --git` line *lines[i]* and its extended header; return the header and
    the index of the first line after it (a hunk, binary data or the next entry)."""
    head = GitHeader(def_name=git_header_name(p_value, lines[i]))
    extension_line = 0
    i += 1
    n = len(lines)
    while i < n:
        raw = lines[i]
        if not raw.endswith(b"\n"):
            break
        line = raw
        number = i + 1

        if line.startswith(b"@@ -"):
            break
        strip_less = p_value - 1 if p_value else 0
        if line.startswith(b"--- "):
            _verify_name(head, "old", line[4:], p_value, number)
        elif line.startswith(b"+++ "):
            _verify_name(head, "new", line[4:], p_value, number)
        elif line.startswith(b"old mode "):
            head.old_mode = _mode(line[9:], number)
        elif line.startswith(b"new mode "):
            head.new_mode = _mode(line[9:], number)
        elif line.startswith(b"deleted file mode "):
            head.is_delete, head.old_name = True, head.def_name
            head.old_mode = _mode(line[18:], number)
        elif line.startswith(b"new file mode "):
            head.is_new, head.new_name = True, head.def_name
            head.new_mode = _mode(line[14:], number)
        elif line.startswith((b"copy from ", b"copy to ")):
            head.is_copy = True
            name = find_name(line.split(b" ", 2)[2], None, strip_less, 0)
            if line.startswith(b"copy from "):
                head.old_name = name
            else:
                head.new_name = name
        elif line.startswith((b"rename old ", b"rename new ", b"rename from ", b"rename to ")):
            head.is_rename = True
            name = find_name(line.split(b" ", 2)[2], None, strip_less, 0)
            if line.startswith((b"rename old ", b"rename from ")):
                head.old_name = name
            else:
                head.new_name = name
        elif line.startswith((b"similarity index ", b"dissimilarity index ")):
            digits = line.split(b" ", 2)[2].strip().rstrip(b"%")
            if digits.isdigit() and len(digits) < 4 and int(digits) <= 100:
                head.score = int(digits)
        elif line.startswith(b"index "):
            _index_line(head, line[6:], number)
        else:
            break
        kinds = head.is_new + head.is_delete + head.is_rename + head.is_copy
        if kinds > 1:
            raise DiffSyntaxError(f"inconsistent header lines {extension_line} and {number}", number)
        if kinds and not extension_line:
            extension_line = number
        i += 1
    if head.old_name is None and head.new_name is None:
        if head.def_name is None:
            raise DiffSyntaxError(f"git diff header lacks file name information when removing {p_value} "
                                  f"leading path name component(s)", i)
        head.old_name = head.new_name = head.def_name
    if (head.new_name is None and not head.is_delete) or (head.old_name is None and not head.is_new):
        raise DiffSyntaxError("git diff header lacks file name information", i)
    if head.is_new:
        head.old_name = None
    if head.is_delete:
        head.new_name = None
    return head, i


def _verify_name(head: GitHeader, side: str, value: bytes, p_value: int, number: int) -> None:
    """A `---`/`+++` name: sets the side's name, or must agree with what the header said."""
    isnull = head.is_new if side == "old" else head.is_delete
    current = head.old_name if side == "old" else head.new_name
    if current is None and not isnull:
        found = find_name(value, None, p_value, TERM_TAB)
        if side == "old":
            head.old_name = found
        else:
            head.new_name = found
        return
    if current is not None:
        if isnull:
            raise DiffSyntaxError(f"bad git diff: expected /dev/null, got {current.decode(errors='replace')}", number)
        if find_name(value, None, p_value, TERM_TAB) != current:
            raise DiffSyntaxError(f"bad git diff: inconsistent {side} file name", number)
    elif not is_dev_null(value):
        raise DiffSyntaxError("bad git diff: expected /dev/null", number)


def _index_line(head: GitHeader, value: bytes, number: int) -> None:
    dots = value.find(b"..")
    if dots < 0 or dots > 64:
        return
    rest = value[dots + 2:].rstrip(b"\n")
    new, _, mode = rest.partition(b" ")
    if len(new) > 64:
        return
    head.index_old = value[:dots].decode("ascii", errors="replace")
    head.index_new = new.decode("ascii", errors="replace")
    if mode:
        head.old_mode = _mode(mode, number)


# -- binary patches -------------------------------------------------------------------------------

@dataclass
class BinaryHunk:
    method: str  # literal | delta
    data: bytes  # inflated


def _binary_hunk(lines: list[bytes], i: int) -> tuple[BinaryHunk | None, int]:
    if i >= len(lines):
        return None, i
    first = lines[i]
    if first.startswith(b"literal "):
        method, digits = "literal", first[8:]
    elif first.startswith(b"delta "):
        method, digits = "delta", first[6:]
    else:
        return None, i
    digits = digits.strip()
    if not digits.isdigit() or len(digits) > 12 or int(digits) > MAX_BINARY:
        raise DiffSyntaxError("corrupt binary patch: bad size", i + 1)
    size = int(digits)
    i += 1
    data = bytearray()
    while True:
        if i >= len(lines):
            raise DiffSyntaxError("corrupt binary patch: missing end", i)
        line = lines[i]
        if line == b"\n":
            i += 1
            break
        body = line[:-1] if line.endswith(b"\n") else line
        if len(body) < 6 or (len(body) - 1) % 5 or not line.endswith(b"\n"):
            raise DiffSyntaxError("corrupt binary patch line", i + 1)
        c = body[0]
        if 65 <= c <= 90:
            count = c - 64
        elif 97 <= c <= 122:
            count = c - 96 + 26
        else:
            raise DiffSyntaxError("corrupt binary patch line", i + 1)
        most = (len(body) - 1) // 5 * 4
        if most < count or count <= most - 4:
            raise DiffSyntaxError("corrupt binary patch line", i + 1)
        try:
            data += base64.b85decode(body[1:])[:count]
        except ValueError:
            raise DiffSyntaxError("corrupt binary patch: bad base85 data", i + 1) from None
        i += 1
    try:
        inflater = zlib.decompressobj()
        out = inflater.decompress(bytes(data), size + 1)
    except zlib.error:
        raise DiffSyntaxError("corrupt binary patch: bad deflate data", i) from None
    if len(out) != size or not inflater.eof:
        raise DiffSyntaxError("corrupt binary patch: inflated size differs from the stated size", i)
    return BinaryHunk(method, out), i


def parse_binary(lines: list[bytes], i: int) -> tuple[list[BinaryHunk], int]:
    """After `GIT binary patch`: the forward hunk and the optional reverse hunk."""
    forward, i = _binary_hunk(lines, i)
    if forward is None:
        raise DiffSyntaxError("unrecognized binary patch", i + 1)
    reverse, i = _binary_hunk(lines, i)
    return [forward] + ([reverse] if reverse else []), i


def _varint(delta: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(delta):
            raise ValueError("truncated delta")
        c = delta[pos]
        pos += 1
        value |= (c & 0x7F) << shift
        shift += 7
        if not c & 0x80:
            return value, pos


def apply_delta(source: bytes, delta: bytes) -> bytes | None:
    """git's `patch_delta`; None when the delta does not fit *source*."""
    try:
        size, pos = _varint(delta, 0)
        if size != len(source):
            return None
        out_size, pos = _varint(delta, pos)
        out = bytearray()
        while pos < len(delta):
            cmd = delta[pos]
            pos += 1
            if cmd & 0x80:
                offset = length = 0
                for bit, shift in ((1, 0), (2, 8), (4, 16), (8, 24)):
                    if cmd & bit:
                        offset |= delta[pos] << shift
                        pos += 1
                for bit, shift in ((16, 0), (32, 8), (64, 16)):
                    if cmd & bit:
                        length |= delta[pos] << shift
                        pos += 1
                length = length or 0x10000
                if offset + length > len(source) or len(out) + length > out_size:
                    return None
                out += source[offset:offset + length]
            elif cmd:
                if pos + cmd > len(delta) or len(out) + cmd > out_size:
                    return None
                out += delta[pos:pos + cmd]
                pos += cmd
            else:
                return None
        return bytes(out) if len(out) == out_size else None
    except (IndexError, ValueError):
        return None
