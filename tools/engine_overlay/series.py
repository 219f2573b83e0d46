"""Series / Patch / Hunk model: quilt series files, git format-patch and DEP-3 headers.

Parsing is strict about hunks (line counts must match their headers) because a
silently mis-parsed hunk is how patches get misplaced; every problem names the
file and line it comes from.
"""

from __future__ import annotations

import email.header
import email.utils
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from . import gitdiff
from .errors import OverlayError
from .problems import Problem

DEFAULT_STRIP = 1
UPSTREAM_STATUS = (
    "Pending", "Submitted", "Accepted", "Backport", "Denied", "Inappropriate", "Inactive-Upstream",
)
_HUNK = re.compile(rb"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@(.*)$")
_MBOX_FROM = re.compile(rb"^From [0-9a-f]{40} ")
_HEADER = re.compile(r"^([A-Za-z][A-Za-z0-9-]*):[ \t]*(.*)$")
_SUBJECT_PREFIX = re.compile(r"^(\[[^\]]*\]\s*)+")
NO_NEWLINE = b"\\ No newline at end of file"


@dataclass
class Hunk:
    old_start: int
    old_len: int
    new_start: int
    new_len: int
    old: list[bytes]  # lines (with their line endings) the hunk expects
    new: list[bytes]  # lines it leaves
    leading: int  # context lines before the first change
    trailing: int  # context lines after the last change
    line: int  # 1-based line of the @@ header in the patch file
    section: str = ""


@dataclass
class FilePatch:
    old_path: str | None  # None for /dev/null
    new_path: str | None
    line: int
    git: bool = False
    new_file: bool = False
    deleted: bool = False
    rename: bool = False
    copy: bool = False
    old_mode: int | None = None
    new_mode: int | None = None
    index_old: str | None = None
    index_new: str | None = None
    binary: bool = False
    hunks: list[Hunk] = field(default_factory=list)
    binary_hunks: list = field(default_factory=list)  # gitdiff.BinaryHunk: forward[, reverse]
    stripped: bool = False  # a `diff --git` entry: names were resolved with the patch's -p when parsed

    def target(self, strip: int) -> tuple[str | None, str | None]:
        if self.stripped:
            return self.old_path, self.new_path
        return strip_path(self.old_path, strip), strip_path(self.new_path, strip)


@dataclass
class Patch:
    name: str
    path: Path
    strip: int
    raw: bytes
    headers: dict[str, str]  # lower-case header name -> value (first occurrence)
    header_lines: dict[str, int]
    subject: str
    body: str  # the description (commit message body)
    author: str | None
    date: str | None
    files: list[FilePatch]
    mbox: bool
    problems: list[Problem] = field(default_factory=list)
    part: int = 1  # 1-based message number in a mailbox holding several patches
    more: list[Patch] = field(default_factory=list)  # the mailbox's later messages, in order

    @property
    def messages(self) -> list[Patch]:
        """Every message of the file (one commit each, as `git am` makes them)."""
        return [self, *self.more]

    @property
    def label(self) -> str:
        """The name shown in reports: the file, and the message number when it holds several."""
        total = 1 + len(self.more) if self.part == 1 else 0
        return f"{self.name} [{self.part}]" if (self.part > 1 or total > 1) else self.name

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.raw).hexdigest()

    @property
    def upstream_status(self) -> str | None:
        return self.headers.get("upstream-status")

    @property
    def applies_to(self) -> str | None:
        """Optional `Applies-To:` version range (one series serving several pins)."""
        return self.headers.get("applies-to")


@dataclass(frozen=True)
class SeriesEntry:
    name: str
    strip: int
    line: int
    reverse: bool = False


@dataclass
class Series:
    path: Path
    entries: list[SeriesEntry]

    @property
    def directory(self) -> Path:
        return self.path.parent


def strip_path(path: str | None, strip: int) -> str | None:
    """Drop *strip* leading components, like `patch -pN`; None for /dev/null.

    With -p0 the name is kept as written, so an absolute name stays absolute (and
    is then refused); runs of slashes count as one separator, as in GNU patch.
    """
    if path is None:
        return None
    if strip == 0:
        return path
    rest = path
    for _ in range(strip):
        head, sep, tail = rest.partition("/")
        if not sep:
            return None  # fewer components than -p: which file is meant is unknown
        rest = tail.lstrip("/")
    return rest or None


def parse_series(path: Path) -> tuple[Series, list[Problem]]:
    """Read a quilt series file: comments, blank lines, per-line `-pN` (and `-R`)."""
    problems: list[Problem] = []
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise OverlayError("series file not found", path=path,
                           hint="create it listing one patch file per line") from exc
    except UnicodeDecodeError as exc:
        raise OverlayError("series file is not UTF-8 text", path=path) from exc
    entries: list[SeriesEntry] = []
    for number, raw_line in enumerate(text.splitlines(), 1):
        line = re.sub(r"(^|\s)#.*$", "", raw_line).strip()
        if not line:
            continue
        words = line.split()
        name, strip, reverse = words[0], DEFAULT_STRIP, False
        for option in words[1:]:
            match = re.fullmatch(r"-p(\d+)", option)
            if match:
                strip = int(match.group(1))
            elif option in ("-R", "--reverse"):
                reverse = True
            elif option.startswith("--fuzz") or option.startswith("-F"):
                problems.append(Problem(str(path), number, f"'{option}' ignored: patches apply with zero fuzz", "warning"))
            else:
                problems.append(Problem(str(path), number, f"unknown option '{option}' for {name}"))
        if Path(name).is_absolute() or ".." in Path(name).parts:
            problems.append(Problem(str(path), number, f"patch path '{name}' escapes the series directory"))
            continue
        entries.append(SeriesEntry(name=name, strip=strip, line=number, reverse=reverse))
    return Series(path=path, entries=entries), problems


def _decode(value: str) -> str:
    try:
        return str(email.header.make_header(email.header.decode_header(value)))
    except Exception:  # noqa: BLE001 - a malformed encoded word is kept as written
        return value


_COMPRESSED = (".gz", ".bz2", ".xz")
MAX_PATCH_BYTES = 256 << 20  # a patch file (decompressed) larger than this is refused, not loaded


def _inflate(raw: bytes, suffix: str, path: Path) -> bytes:
    """Decompress a `.gz`/`.bz2`/`.xz` patch with a bound on the output (a small file can
    inflate to gigabytes); concatenated members are read as the tools read them."""
    import bz2
    import lzma
    import zlib

    out = bytearray()
    data = raw
    while data:
        codec = {".gz": lambda: zlib.decompressobj(16 + zlib.MAX_WBITS), ".bz2": bz2.BZ2Decompressor,
                 ".xz": lzma.LZMADecompressor}[suffix]()
        try:
            out += codec.decompress(data, MAX_PATCH_BYTES + 1 - len(out))
        except (OSError, EOFError, ValueError, zlib.error, lzma.LZMAError) as exc:
            raise OverlayError(f"compressed patch is corrupt: {exc}", path=path) from exc
        if len(out) > MAX_PATCH_BYTES:
            raise OverlayError(f"compressed patch inflates to more than {MAX_PATCH_BYTES >> 20} MiB", path=path,
                               hint="a patch that large is not a source change; check the file")
        if not codec.eof:
            raise OverlayError("compressed patch is truncated", path=path)
        data = codec.unused_data.lstrip(b"\0")  # gzip files may be padded with zeros
    return bytes(out)


def parse_patch(path: Path, name: str | None = None, strip: int = DEFAULT_STRIP) -> Patch:
    """Parse one patch file (mbox from git format-patch, DEP-3 or plain unified diff).

    Like quilt, `.gz`, `.bz2` and `.xz` patch files are read decompressed.
    """
    try:
        size = path.stat().st_size
        if size > MAX_PATCH_BYTES:
            raise OverlayError(f"patch file is larger than {MAX_PATCH_BYTES >> 20} MiB", path=path,
                               hint="a patch that large is not a source change; check the file")
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise OverlayError("patch file not found", path=path, hint="add it or remove it from the series") from exc
    except OSError as exc:
        raise OverlayError(f"cannot read patch: {exc.strerror}", path=path) from exc
    if path.suffix in _COMPRESSED:
        raw = _inflate(raw, path.suffix, path)
    return parse_patch_bytes(raw, path, name or path.name, strip)


def split_lines(data: bytes) -> list[bytes]:
    """Lines ending at LF only (a lone CR is part of its line, as git and GNU patch see it)."""
    if b"\r" not in data:
        return data.splitlines(keepends=True)  # the same lines, split in C
    lines = data.split(b"\n")
    last = lines.pop()
    out = [line + b"\n" for line in lines]
    if last:
        out.append(last)
    return out


def is_from_line(line: bytes) -> bool:
    """git mailsplit's test for an mbox separator: `From ` ... a time and a year after 1990."""
    text = line.rstrip(b"\n")
    if len(line) < 20 or not line.startswith(b"From "):
        return False
    colon = text.rfind(b":", 5)
    if colon < 9 or colon + 3 > len(text):
        return False
    digits = text[colon - 4:colon - 3] + text[colon - 2:colon] + text[colon + 1:colon + 3]
    if not digits.isdigit():
        return False
    year = re.match(rb"\s*([+-]?\d+)", text[colon + 3:])
    return bool(year) and len(year.group(1)) < 10 and int(year.group(1)) > 90


def split_mailbox(lines: list[bytes]) -> list[list[bytes]]:
    """One list of lines per message, split as `git mailsplit` splits (only when the file starts
    with an mbox `From ` line; anything else is one patch)."""
    if not lines or not is_from_line(lines[0]):
        return [lines]
    messages: list[list[bytes]] = [[lines[0]]]
    for line in lines[1:]:
        if line[:5] == b"From " and is_from_line(line):
            messages.append([line])
        else:
            messages[-1].append(line)
    return messages


def parse_patch_bytes(raw: bytes, path: Path, name: str, strip: int = DEFAULT_STRIP) -> Patch:
    """Parse a patch file; a mailbox of several messages gives the first, with the rest in `more`.
    Line numbers in problems count from the start of the file."""
    lines = split_lines(raw)
    messages = split_mailbox(lines)
    patches: list[Patch] = []
    first_line = 0
    for number, message in enumerate(messages, 1):
        patch = _parse_message(message, raw, path, name, strip, first_line)
        patch.part = number
        patches.append(patch)
        first_line += len(message)
    if len(patches) > 1:
        # a message without a diff (a cover letter) adds no commit, as long as others have one
        kept = [p for p in patches if p.files or any(q.severity == "error" for q in p.problems)]
        patches = kept or patches[:1]
    head = patches[0]
    head.more = patches[1:]
    return head


def _parse_message(lines: list[bytes], raw: bytes, path: Path, name: str, strip: int, offset: int) -> Patch:
    diff_start = _find_diff_start(lines)
    header_text = b"".join(lines[:diff_start]).decode("utf-8", errors="replace")
    mbox = bool(lines) and is_from_line(lines[0])
    headers, header_lines, subject, body, author, date = _parse_headers(header_text, mbox)
    if offset:
        header_lines = {key: value + offset for key, value in header_lines.items()}
    problems: list[Problem] = []
    files = _parse_diff(lines, diff_start, str(path), problems, strip, offset)
    if not files and not problems and b"".join(lines).strip():
        # quilt applies such a patch as a no-op; it is worth a look, not a failure
        problems.append(Problem(str(path), offset, "no diff found in patch (it changes nothing)", "warning"))
    return Patch(
        name=name, path=path, strip=strip, raw=raw, headers=headers, header_lines=header_lines,
        subject=subject, body=body, author=author, date=date, files=files, mbox=mbox,
        problems=problems,
    )


def _find_diff_start(lines: list[bytes]) -> int:
    for i, line in enumerate(lines):
        if line.startswith(b"diff --git ") or line.startswith(b"Index: "):
            return i
        if line.startswith(b"--- ") and i + 1 < len(lines) and lines[i + 1].startswith(b"+++ "):
            return i
    return len(lines)


def _parse_headers(text: str, mbox: bool):
    """Headers from an mbox message or a DEP-3 block; trailers in the body count too."""
    headers: dict[str, str] = {}
    header_lines: dict[str, int] = {}
    lines = text.splitlines()
    subject, author, date = "", None, None
    body_lines: list[str] = []
    i = 0
    if mbox:
        i = 1
        current = None
        while i < len(lines) and lines[i].strip():
            line = lines[i]
            if line[:1] in (" ", "\t") and current:
                headers[current] += " " + line.strip()
            else:
                match = _HEADER.match(line)
                if match:
                    current = match.group(1).lower()
                    headers.setdefault(current, match.group(2))
                    header_lines.setdefault(current, i + 1)
            i += 1
        for key in ("subject", "from"):
            if key in headers:
                headers[key] = _decode(headers[key])
        subject = _SUBJECT_PREFIX.sub("", headers.get("subject", "")).strip()
        author, date = headers.get("from"), headers.get("date")
        rest = lines[i + 1:] if i < len(lines) else []
        # The commit message body ends at the `---` diffstat separator.
        for line in rest:
            if line.rstrip() == "---":
                break
            body_lines.append(line)
        for number, line in enumerate(rest, i + 2):
            match = _HEADER.match(line)
            if match and match.group(1).lower() not in headers:
                headers[match.group(1).lower()] = match.group(2).strip()
                header_lines[match.group(1).lower()] = number
    else:
        # DEP-3: one or more header paragraphs; free text may follow.
        current = None
        in_headers = True
        for number, line in enumerate(lines, 1):
            match = _HEADER.match(line)
            if in_headers and match:
                current = match.group(1).lower()
                if current not in headers:
                    headers[current] = match.group(2).strip()
                    header_lines[current] = number
                else:
                    current = None
            elif in_headers and line[:1] in (" ", "\t") and current:
                value = line.strip()
                headers[current] += "\n" + ("" if value == "." else value)
            elif not line.strip():
                current = None
                in_headers = True if not body_lines else in_headers
            else:
                in_headers = False
                current = None
                if line.rstrip() != "---":
                    body_lines.append(line)
        description = headers.get("description") or headers.get("subject") or ""
        first, _, long = description.partition("\n")
        subject = first.strip()
        if long.strip():
            body_lines = [long.strip(), ""] + body_lines
        author = headers.get("author") or headers.get("from")
        date = headers.get("last-update") or headers.get("date")
    body = "\n".join(body_lines).strip()
    return headers, header_lines, subject, body, author, date


def _mode(value: bytes) -> int | None:
    try:
        return int(value.strip(), 8)
    except ValueError:
        return None


def _unquote(name: bytes) -> str:
    """A name as written, or the C-style quoted name git and GNU diff write (`"a\\tb"`)."""
    from .gitdiff import unquote_c

    if name.startswith(b'"'):
        found = unquote_c(name)
        if found is not None and found[1] == len(name):
            name = found[0]
    return name.decode("utf-8", errors="surrogateescape")


_EPOCH = re.compile(rb"\s(1970-01-01 00:00:00(\.0+)?( \+0000)?|Thu Jan  1 00:00:00 1970)\s*$")


def _header_path(line: bytes) -> str | None:
    """The file named on a ---/+++ line; None for /dev/null or an epoch timestamp."""
    value = line[4:].rstrip(b"\r\n")
    if _EPOCH.search(value):
        return None  # GNU diff marks a missing side with the epoch
    if b"\t" in value:
        value = value.split(b"\t", 1)[0]
    elif not value.startswith(b'"'):
        # `--- a/file 2020-01-01 00:00:00.000000000 +0000` (space-separated timestamp)
        value = re.sub(rb"\s+\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(\.\d+)?( [+-]\d{4})?\s*$", b"", value)
    path = _unquote(value.strip())
    return None if path == "/dev/null" else path


def _parse_diff(lines: list[bytes], start: int, where: str, problems: list[Problem], strip: int = DEFAULT_STRIP,
                offset: int = 0) -> list[FilePatch]:
    """Every file entry of one message: `diff --git` entries as `git apply` reads them,
    traditional `---`/`+++` diffs as GNU patch does. Lines between entries are skipped."""
    files: list[FilePatch] = []
    i = start
    n = len(lines)
    while i < n:
        line = lines[i]
        if line.startswith(b"diff --git "):
            i = _parse_git_entry(lines, i, where, problems, strip, offset, files)
            continue
        if line.startswith(b"--- ") and i + 1 < n and lines[i + 1].startswith(b"+++ "):
            current = FilePatch(old_path=_header_path(line), new_path=_header_path(lines[i + 1]), line=offset + i + 1)
            files.append(current)
            i += 2
            while i < n and lines[i].startswith(b"@@ "):
                hunk, i = _parse_hunk(lines, i, where, problems, offset)
                if hunk is not None:
                    current.hunks.append(hunk)
            continue
        if line.startswith(b"@@ -") and _HUNK.match(line.rstrip(b"\r\n")):
            problems.append(Problem(where, offset + i + 1, "hunk without a file header (--- / +++)"))
        i += 1
    return files


def _name(value: bytes | None) -> str | None:
    return None if value is None else value.decode("utf-8", errors="surrogateescape")


def _parse_git_entry(lines: list[bytes], i: int, where: str, problems: list[Problem], strip: int, offset: int,
                     files: list[FilePatch]) -> int:
    """One `diff --git` entry (git's parse_git_diff_header + parse_single_patch); returns the next line."""
    first = i
    try:
        head, i = gitdiff.parse_git_header(lines, i, strip)
    except gitdiff.DiffSyntaxError as exc:
        problems.append(Problem(where, offset + exc.line, str(exc)))
        return _next_entry(lines, first + 1)
    fp = FilePatch(old_path=_name(head.old_name), new_path=_name(head.new_name), line=offset + first + 1, git=True,
                   new_file=head.is_new, deleted=head.is_delete, rename=head.is_rename, copy=head.is_copy,
                   old_mode=head.old_mode, new_mode=head.new_mode, index_old=head.index_old,
                   index_new=head.index_new, stripped=True)
    files.append(fp)
    n = len(lines)
    while i < n and lines[i].startswith(b"@@ -"):
        hunk, i = _parse_hunk(lines, i, where, problems, offset, git=True)
        if hunk is None:
            return _next_entry(lines, i)
        fp.hunks.append(hunk)
    if fp.hunks:
        if fp.new_file and any(h.old for h in fp.hunks):
            problems.append(Problem(where, offset + first + 1, f"new file {fp.new_path} depends on old contents"))
        if fp.deleted and any(h.new for h in fp.hunks):
            problems.append(Problem(where, offset + first + 1, f"deleted file {fp.old_path} still has contents"))
        return i
    if i < n and lines[i] == b"GIT binary patch\n":
        try:
            fp.binary_hunks, i = gitdiff.parse_binary(lines, i + 1)
        except gitdiff.DiffSyntaxError as exc:
            problems.append(Problem(where, offset + exc.line, str(exc)))
            return _next_entry(lines, i + 1)
        fp.binary = True
        return i
    if i < n and lines[i].endswith(b" differ\n") and lines[i].startswith((b"Binary files ", b"Files ")):
        fp.binary = True
        return i + 1
    mode_change = fp.old_mode is not None and fp.new_mode is not None and fp.old_mode != fp.new_mode
    if not (fp.rename or fp.copy or fp.new_file or fp.deleted or mode_change):
        problems.append(Problem(where, offset + first + 1, "patch with only garbage: a git diff entry that changes nothing"))
    return i


def _next_entry(lines: list[bytes], i: int) -> int:
    while i < len(lines) and not lines[i].startswith(b"diff --git "):
        i += 1
    return i


def _number(digits: bytes) -> int:
    """A line number or count from a hunk header; absurd values saturate instead of costing time."""
    return int(digits) if len(digits) <= 18 else 10 ** 18


def _parse_hunk(lines: list[bytes], i: int, where: str, problems: list[Problem], offset: int = 0, git: bool = False):
    header = lines[i].rstrip(b"\r\n") if not git else lines[i].rstrip(b"\n")
    match = _HUNK.match(header)
    if not match or (git and not lines[i].endswith(b"\n")):
        problems.append(Problem(where, offset + i + 1, f"unparsable hunk header {header.decode(errors='replace')!r}"))
        return None, i + 1
    old_start = _number(match.group(1))
    old_len = _number(match.group(2)) if match.group(2) is not None else 1
    new_start = _number(match.group(3))
    new_len = _number(match.group(4)) if match.group(4) is not None else 1
    old: list[bytes] = []
    new: list[bytes] = []
    kinds: list[bytes] = []
    start_line = i + 1
    i += 1
    n = len(lines)
    corrupt = dropped = False
    add_old, add_new, add_kind = old.append, new.append, kinds.append
    while i < n and (len(old) < old_len or len(new) < new_len):
        line = lines[i]
        tag = line[:1]
        if tag == b" ":
            if git and line[-1:] != b"\n":
                corrupt = True
                break
            add_old(line[1:])
            add_new(line[1:])
        elif tag == b"-" or tag == b"+":
            if git and line[-1:] != b"\n":
                corrupt = True
                break
            (add_old if tag == b"-" else add_new)(line[1:])
        elif line == b"\n" or (not git and line == b"\r\n"):  # an empty context line whose space was stripped
            tag = b" "
            add_old(line)
            add_new(line)
        elif tag == b"\\":
            if git and (len(line) < 12 or not line.startswith(b"\\ ")):
                corrupt = True
                break
            _drop_newline(kinds, old, new)
            dropped = True
            i += 1
            continue
        else:
            corrupt = git
            break
        add_kind(tag)
        i += 1
    if i < n and lines[i][:1] == b"\\" and (not git or (len(lines[i]) >= 12 and lines[i].startswith(b"\\ "))):
        _drop_newline(kinds, old, new)
        dropped = True
        i += 1
    if corrupt or len(old) != old_len or len(new) != new_len:
        problems.append(Problem(
            where, offset + start_line,
            f"hunk says -{old_len} +{new_len} lines but has -{len(old)} +{len(new)}: the patch is truncated or was edited by hand",
        ))
        return None, i
    leading = next((k for k, t in enumerate(kinds) if t != b" "), len(kinds))
    if git and leading == len(kinds):
        problems.append(Problem(where, offset + start_line, "corrupt patch: a hunk that neither adds nor removes lines"))
        return None, i
    if dropped:  # `\ No newline` after an empty line leaves nothing of it (git drops it from both sides)
        old = [line for line in old if line]
        new = [line for line in new if line]
    trailing = next((k for k, t in enumerate(reversed(kinds)) if t != b" "), len(kinds))
    section = match.group(5).decode("utf-8", errors="replace").strip()
    return Hunk(old_start, old_len, new_start, new_len, old, new, leading, trailing, offset + start_line, section), i


def _drop_newline(kinds: list[bytes], old: list[bytes], new: list[bytes]) -> None:
    """`\\ No newline at end of file` refers to the line just before it."""
    if not kinds:
        return
    tag = kinds[-1]
    if tag in (b" ", b"-") and old:
        old[-1] = old[-1][:-1] if old[-1].endswith(b"\n") else old[-1]
    if tag in (b" ", b"+") and new:
        new[-1] = new[-1][:-1] if new[-1].endswith(b"\n") else new[-1]


def valid_upstream_status(value: str) -> bool:
    word = value.split("[", 1)[0].strip()
    return word in UPSTREAM_STATUS


def parse_author(value: str | None) -> tuple[str, str]:
    """'Name <mail>' -> (name, mail), with a fallback for bare names."""
    if not value:
        return "engine-overlay", "engine-overlay@localhost"
    name, mail = email.utils.parseaddr(value)
    if not name and not mail:
        name = value
    name = re.sub(r"[<>\n\r]", "", name or mail.split("@")[0]).strip() or "unknown"
    mail = re.sub(r"[<>\s]", "", mail) or "unknown@localhost"
    return name, mail
