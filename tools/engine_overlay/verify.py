"""`overlay verify ENGINE`: static checks of the applied series that need none of the engine's imports.

The series and overlay files are planned in memory on the pinned upstream (the
tag ``upstream/<engine>-<version>`` of the fetched tree), exactly as
``overlay apply`` would, and then:

1. every file they touch is byte-compiled (:mod:`py_compile`);
2. every class in a touched file that derives from an upstream class (a base
   imported from a module of the engine's pinned tree, or of a paired engine's
   pinned tree named in ``requires``) is checked against that base: each method
   it overrides and each method it calls through ``super()`` must exist in the
   base's MRO with a compatible signature. A file created by a git copy (the
   derived-file patches) also has its copy-source class as reference: methods
   copied from it (not inside a marked block) must still exist there;
3. check-markers on the touched files (against the engine's marker snapshot
   when ``[<engine>.markers]`` names one).

Which classes derive from which base is inferred from the AST (imports and
class bases); nothing else needs configuring.
"""

from __future__ import annotations

import ast
import builtins
import difflib
import py_compile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import click
from packaging.version import Version

from . import gitops, sources, ui
from .config import Engine, Pin, Project
from .errors import EXIT_CHECK_FAILED, OverlayError
from .tree import GitTreeState

if TYPE_CHECKING:
    import git

OK, MISSING, CHANGED, UNRESOLVED, NEW = "ok", "missing", "signature-changed", "unresolved", "new"
FAILING = (MISSING, CHANGED)
_MAX_REEXPORT_DEPTH = 6


# -- report ------------------------------------------------------------------------------------

@dataclass
class CompileResult:
    path: str
    ok: bool
    line: int | None = None
    message: str = ""


@dataclass
class MethodCheck:
    cls: str  # "path.py:Class"
    method: str
    kind: str  # override | super-call | copied | new
    status: str  # ok | missing | signature-changed | unresolved | new
    line: int  # in the derived file
    reference: str | None = None  # "module.Class" where the method was found (or looked for)
    detail: str = ""


@dataclass
class DerivedClass:
    file: str
    name: str
    line: int
    bases: list[str]  # resolved upstream bases, "label module.Class"
    copy_of: str | None = None  # "module.Class" of the copy source (derived-file patches)


@dataclass
class VerifyReport:
    engine: str
    version: str
    base: str  # the upstream revision the series was planned on
    tree: str
    status: str = "ok"  # ok | failed
    references: list[str] = field(default_factory=list)  # "engine version (rev)" trees searched
    patches: list[dict] = field(default_factory=list)  # patches that did not apply
    compiled: list[CompileResult] = field(default_factory=list)
    classes: list[DerivedClass] = field(default_factory=list)
    methods: list[MethodCheck] = field(default_factory=list)
    markers: dict | None = None
    problems: list[str] = field(default_factory=list)

    def finish(self) -> VerifyReport:
        bad = (self.patches or self.problems or any(not c.ok for c in self.compiled)
               or any(m.status in FAILING for m in self.methods)
               or (self.markers is not None and not self.markers.get("ok", True)))
        self.status = "failed" if bad else "ok"
        return self


# -- reading upstream modules from git ---------------------------------------------------------

@dataclass
class Source:
    """One pinned tree that upstream classes are read from."""

    label: str  # "vllm 0.23.0"
    repo: git.Repo
    rev: str


@dataclass
class ClassInfo:
    module: str
    name: str
    node: ast.ClassDef
    imports: dict[str, tuple[str, str | None]]  # local name -> (module, attribute or None)
    label: str
    methods: dict[str, ast.FunctionDef | ast.AsyncFunctionDef] = field(default_factory=dict)

    @property
    def qualname(self) -> str:
        return f"{self.module}.{self.name}"


@dataclass
class Unresolved:
    name: str  # dotted name as written
    reason: str


class Modules:
    """Finds modules in the upstream trees and classes in them (following re-exports)."""

    def __init__(self, sources_: list[Source], packages: set[str] | None = None) -> None:
        self.sources = sources_
        self.packages = set(packages or ())  # top-level packages that count as upstream
        self._modules: dict[str, tuple[Source, ast.Module, bool] | None] = {}

    def module(self, name: str) -> tuple[Source, ast.Module, bool] | None:
        """(tree it was found in, its AST, whether it is a package's __init__) or None."""
        if name not in self._modules:
            self._modules[name] = self._find(name)
        return self._modules[name]

    def _find(self, name: str) -> tuple[Source, ast.Module, bool] | None:
        base = name.replace(".", "/")
        for src in self.sources:
            for path in (f"{base}.py", f"{base}/__init__.py"):
                data = gitops.read_at(src.repo, src.rev, path)
                if data is not None:
                    try:
                        return src, ast.parse(data, filename=path), path.endswith("__init__.py")
                    except (SyntaxError, ValueError):
                        return None
        return None

    def find_class(self, module: str, name: str, depth: int = 0) -> ClassInfo | Unresolved:
        found = self.module(module)
        if found is None:
            return Unresolved(f"{module}.{name}", f"module {module} is not in {self._searched()}")
        src, tree, is_package = found
        imports = module_imports(tree, module, is_package)
        for node in _top_level(tree):
            if isinstance(node, ast.ClassDef) and node.name == name:
                return class_info(node, module, imports, src.label)
        if name in imports and depth < _MAX_REEXPORT_DEPTH:
            target_module, attr = imports[name]
            if attr is not None:
                return self.find_class(target_module, attr, depth + 1)
        return Unresolved(f"{module}.{name}", f"{module} defines no class {name}")

    def _searched(self) -> str:
        return ", ".join(s.label for s in self.sources) or "no tree"


def _top_level(tree: ast.Module):
    """Module-level statements, including those inside top-level if/try blocks."""
    stack = list(tree.body)
    while stack:
        node = stack.pop(0)
        yield node
        if isinstance(node, ast.If):
            stack[:0] = node.body + node.orelse
        elif isinstance(node, ast.Try):
            stack[:0] = node.body + node.orelse + node.finalbody + [s for h in node.handlers for s in h.body]


def module_imports(tree: ast.Module, module: str, is_package: bool) -> dict[str, tuple[str, str | None]]:
    """Local name -> (module, attribute) for `from m import a as b`, or (module, None) for `import m as b`."""
    package = module if is_package else module.rpartition(".")[0]
    found: dict[str, tuple[str, str | None]] = {}
    for node in _top_level(tree):
        if isinstance(node, ast.ImportFrom):
            source = node.module or ""
            if node.level:
                parts = package.split(".") if package else []
                parts = parts[: len(parts) - (node.level - 1)] if node.level > 1 else parts
                source = ".".join([*parts, *([source] if source else [])])
            for alias in node.names:
                found[alias.asname or alias.name] = (source, alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    found[alias.asname] = (alias.name, None)
                else:
                    top = alias.name.split(".")[0]
                    found[top] = (top, None)
    return found


def class_info(node: ast.ClassDef, module: str, imports, label: str) -> ClassInfo:
    info = ClassInfo(module, node.name, node, imports, label)
    for item in node.body:
        if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
            info.methods[item.name] = item  # the last definition wins, as at runtime
    return info


def _dotted(expr: ast.expr) -> str | None:
    if isinstance(expr, ast.Name):
        return expr.id
    if isinstance(expr, ast.Attribute):
        inner = _dotted(expr.value)
        return f"{inner}.{expr.attr}" if inner else None
    if isinstance(expr, ast.Subscript):  # Generic[T]
        return _dotted(expr.value)
    return None


def resolve_base(expr: ast.expr, imports, local: dict[str, ast.ClassDef], module: str,
                 modules: Modules) -> ClassInfo | Unresolved | None:
    """The class a base expression names: None for a class of the same (derived) file."""
    dotted = _dotted(expr)
    if dotted is None:
        return Unresolved(ast.unparse(expr), "not a plain name")
    head, _, rest = dotted.partition(".")
    if not rest and head in local:
        return None
    if head in imports:
        target_module, attr = imports[head]
        if attr is None:  # import pkg[.mod] as head
            mod, _, cls = f"{target_module}.{rest}".rpartition(".") if rest else ("", "", "")
            return modules.find_class(mod, cls) if mod else Unresolved(dotted, "a module, not a class")
        if rest:  # from pkg import mod; mod.Class
            return modules.find_class(f"{target_module}.{attr}", rest)
        return modules.find_class(target_module, attr)
    if hasattr(builtins, head):
        return Unresolved(dotted, "builtin")
    if module and not local:  # an upstream class: other names are classes of its own module
        return modules.find_class(module, dotted) if "." not in dotted else Unresolved(dotted, "name not imported")
    return Unresolved(dotted, "name not imported")


def mro(info: ClassInfo, modules: Modules, seen: set[str] | None = None) -> list[ClassInfo | Unresolved]:
    """Left-to-right depth-first linearisation of the upstream bases (duplicates dropped)."""
    seen = set() if seen is None else seen
    out: list[ClassInfo | Unresolved] = []
    for expr in info.node.bases:
        base = resolve_base(expr, info.imports, {}, info.module, modules)
        if base is None:
            continue
        key = base.qualname if isinstance(base, ClassInfo) else f"?{base.name}"
        if key in seen:
            continue
        seen.add(key)
        out.append(base)
        if isinstance(base, ClassInfo):
            out.extend(mro(base, modules, seen))
    return out


# -- signatures --------------------------------------------------------------------------------

@dataclass
class Sig:
    kind: str  # method | staticmethod | classmethod | property
    is_async: bool
    positional: list[tuple[str, bool]]  # (name, has default), after self/cls
    posonly: int  # how many of `positional` are positional-only
    kwonly: dict[str, bool]  # name -> has default
    varargs: bool
    varkw: bool

    def text(self) -> str:
        parts = [n + ("=…" if d else "") for n, d in self.positional]
        if self.posonly:
            parts.insert(self.posonly, "/")
        if self.varargs:
            parts.append("*args")
        elif self.kwonly:
            parts.append("*")
        parts += [n + ("=…" if d else "") for n, d in self.kwonly.items()]
        if self.varkw:
            parts.append("**kwargs")
        prefix = "" if self.kind == "method" else f"@{self.kind} "
        return f"{prefix}{'async ' if self.is_async else ''}({', '.join(parts)})"


def signature(func: ast.FunctionDef | ast.AsyncFunctionDef) -> Sig:
    names = {_dotted(d.func if isinstance(d, ast.Call) else d) for d in func.decorator_list}
    kind = "method"
    for decorator, what in (("staticmethod", "staticmethod"), ("classmethod", "classmethod"),
                            ("property", "property"), ("functools.cached_property", "property"),
                            ("cached_property", "property")):
        if decorator in names:
            kind = what
    if any(n and n.endswith((".setter", ".getter", ".deleter")) for n in names):
        kind = "property"
    args = func.args
    params = [*args.posonlyargs, *args.args]
    defaults_from = len(params) - len(args.defaults)
    positional = [(a.arg, i >= defaults_from) for i, a in enumerate(params)]
    posonly = len(args.posonlyargs)
    if kind != "staticmethod" and positional:
        positional, posonly = positional[1:], max(posonly - 1, 0)
    kwonly = {a.arg: d is not None for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True)}
    return Sig(kind, isinstance(func, ast.AsyncFunctionDef), positional, posonly, kwonly,
               args.vararg is not None, args.kwarg is not None)


def incompatibilities(base: Sig, derived: Sig) -> list[str]:
    """Why a call that is valid for *base* may fail on *derived* (empty: compatible)."""
    why: list[str] = []
    if base.kind != derived.kind:
        why.append(f"is a {derived.kind}, the base has a {base.kind}")
    if base.is_async != derived.is_async:
        why.append("async in the base only" if base.is_async else "async here only")
    if base.kind == "property" or derived.kind == "property":
        return why
    for index, (name, has_default) in enumerate(base.positional):
        if index < len(derived.positional):
            dname, ddefault = derived.positional[index]
            if dname != name and index >= base.posonly:
                why.append(f"parameter {index + 1} is '{dname}', the base has '{name}'")
            if has_default and not ddefault:
                why.append(f"'{dname}' has no default, the base's '{name}' has one")
        elif not derived.varargs:
            why.append(f"parameter '{name}' of the base is missing")
    for name, has_default in list(derived.positional[len(base.positional):]):
        if not has_default:
            why.append(f"new required parameter '{name}'")
    for name, has_default in base.kwonly.items():
        ours = dict(derived.kwonly)
        ours.update({n: d for n, d in derived.positional[derived.posonly:]})
        if name not in ours and not derived.varkw:
            why.append(f"keyword parameter '{name}' of the base is missing")
        elif name in ours and has_default and not ours[name]:
            why.append(f"keyword '{name}' has no default, the base's has one")
    for name, has_default in derived.kwonly.items():
        if not has_default and name not in base.kwonly:
            why.append(f"new required keyword parameter '{name}'")
    if base.varargs and not derived.varargs:
        why.append("the base accepts *args, this method does not")
    if base.varkw and not derived.varkw:
        why.append("the base accepts **kwargs, this method does not")
    return why


def call_problems(sig: Sig, call: ast.Call) -> list[str]:
    """Why *call* (a super().m(...) call) does not bind to *sig* (empty: it binds)."""
    if sig.kind == "property":
        return []
    splat_args = any(isinstance(a, ast.Starred) for a in call.args)
    splat_kw = any(k.arg is None for k in call.keywords)
    npos = len([a for a in call.args if not isinstance(a, ast.Starred)])
    why: list[str] = []
    if npos > len(sig.positional) and not sig.varargs:
        why.append(f"passes {npos} positional argument(s), the base takes {len(sig.positional)}")
    accepted = {n for n, _ in sig.positional[sig.posonly:]} | set(sig.kwonly)
    given = {k.arg for k in call.keywords if k.arg}
    for name in sorted(given - accepted):
        if not sig.varkw:
            why.append(f"passes keyword '{name}', the base has no such parameter")
    if not (splat_args or splat_kw):
        for index, (name, has_default) in enumerate(sig.positional):
            if index >= npos and not has_default and name not in given:
                why.append(f"does not pass the base's required parameter '{name}'")
        for name, has_default in sig.kwonly.items():
            if not has_default and name not in given:
                why.append(f"does not pass the base's required keyword '{name}'")
    return why


# -- the checks --------------------------------------------------------------------------------

def _lookup(chain: list[ClassInfo | Unresolved], name: str):
    """(class, method node) of the first class in *chain* defining *name*, and whether any base is unresolved."""
    unresolved = False
    for cls in chain:
        if isinstance(cls, Unresolved):
            unresolved = True
            continue
        if name in cls.methods:
            return cls, cls.methods[name], unresolved
    return None, None, unresolved


def _super_calls(func: ast.AST) -> list[ast.Call]:
    calls = []
    for node in ast.walk(func):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Call) and isinstance(node.func.value.func, ast.Name)
                and node.func.value.func.id == "super"):
            calls.append(node)
    return calls


def check_classes(path: str, source: str, modules: Modules, copy_source: str | None, base_modules: Modules,
                  marked: set[int], report: VerifyReport) -> None:
    """The AST check for every class of one touched file that derives from an upstream class."""
    try:
        tree = ast.parse(source, filename=path)
    except SyntaxError:
        return  # reported by the compile step
    module = str(PurePosixPath(path).with_suffix("")).replace("/", ".")
    is_package = module.endswith(".__init__")
    module = module.removesuffix(".__init__")
    imports = module_imports(tree, module, is_package)
    local = {n.name: n for n in _top_level(tree) if isinstance(n, ast.ClassDef)}
    copied_classes = _copy_source_classes(copy_source, base_modules)
    for node in local.values():
        bases = [resolve_base(b, imports, local, module, modules) for b in node.bases]
        upstream = [b for b in bases if isinstance(b, ClassInfo)]
        if not upstream:
            for base in bases:
                if isinstance(base, Unresolved) and base.reason.startswith("module ") and _is_upstream(base, modules):
                    report.problems.append(f"{path}:{node.lineno}: base {base.name} of {node.name}: {base.reason}")
            continue
        chain: list[ClassInfo | Unresolved] = []
        seen: set[str] = set()
        for base in bases:
            if base is None:
                continue  # a class of the same file: its own checks cover it
            key = base.qualname if isinstance(base, ClassInfo) else f"?{base.name}"
            if key not in seen:
                seen.add(key)
                chain.append(base)
                if isinstance(base, ClassInfo):
                    chain.extend(mro(base, modules, seen))
        counterpart = _counterpart(node, copied_classes)
        derived = DerivedClass(path, node.name, node.lineno, [f"{b.label} {b.qualname}" for b in upstream],
                               counterpart.qualname if counterpart else None)
        report.classes.append(derived)
        _check_methods(path, node, chain, counterpart, marked, report)


def _is_upstream(base: Unresolved, modules: Modules) -> bool:
    """Whether an unresolved base lives in a package of the engine or of a paired engine."""
    return base.name.split(".")[0] in modules.packages


def _copy_source_classes(copy_source: str | None, base_modules: Modules) -> list[ClassInfo]:
    if copy_source is None:
        return []
    module = copy_source.removesuffix(".py").replace("/", ".").removesuffix(".__init__")
    found = base_modules.module(module)
    if found is None:
        return []
    src, tree, is_package = found
    imports = module_imports(tree, module, is_package)
    return [class_info(n, module, imports, src.label) for n in _top_level(tree) if isinstance(n, ast.ClassDef)]


def _counterpart(node: ast.ClassDef, classes: list[ClassInfo]) -> ClassInfo | None:
    """The class of the copy source this class was copied from: same name, else the one with the same bases."""
    for info in classes:
        if info.name == node.name:
            return info
    bases = [ast.unparse(b) for b in node.bases]
    same = [c for c in classes if [ast.unparse(b) for b in c.node.bases] == bases]
    return same[0] if len(same) == 1 else None


def _claims_upstream(func: ast.FunctionDef | ast.AsyncFunctionDef, marked: set[int]) -> bool:
    """A method that is not inside a marked block (or is decorated @override) says it exists upstream."""
    if any((_dotted(d) or "").endswith("override") for d in func.decorator_list):
        return True
    first = min([func.lineno, *(d.lineno for d in func.decorator_list)])
    return not ({first, func.lineno} & marked)


def _check_methods(path: str, node: ast.ClassDef, chain, counterpart: ClassInfo | None, marked: set[int],
                   report: VerifyReport) -> None:
    cls = f"{path}:{node.name}"
    resolved = [c for c in chain if isinstance(c, ClassInfo)]
    for item in node.body:
        if not isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        base_cls, base_func, unresolved = _lookup(chain, item.name)
        kind = "override" if base_func is not None else "copied"
        if counterpart is not None and item.name in counterpart.methods:
            # A copied class is held to its copy source: where upstream's own class already differs
            # from the base, the copy may differ the same way.
            reference = counterpart.methods[item.name]
            why = incompatibilities(signature(reference), signature(item))
            report.methods.append(MethodCheck(cls, item.name, kind, CHANGED if why else OK, item.lineno,
                                              counterpart.qualname, "; ".join(why)))
        elif base_func is not None:
            why = incompatibilities(signature(base_func), signature(item))
            report.methods.append(MethodCheck(cls, item.name, kind, CHANGED if why else OK, item.lineno,
                                              base_cls.qualname, "; ".join(why)))
        elif _claims_upstream(item, marked):
            where = [c.qualname for c in ([counterpart] if counterpart else []) + resolved]
            known = {m for c in ([counterpart] if counterpart else []) + resolved for m in c.methods}
            close = difflib.get_close_matches(item.name, sorted(known), n=1, cutoff=0.7)
            status = UNRESOLVED if unresolved else MISSING
            detail = f"not in {', '.join(where) or 'any upstream class'}"
            if close:
                detail += f" (renamed to {close[0]}?)"
            if unresolved:
                detail += "; some bases could not be read"
            report.methods.append(MethodCheck(cls, item.name, "override", status, item.lineno,
                                              where[0] if where else None, detail))
        else:
            report.methods.append(MethodCheck(cls, item.name, "new", NEW, item.lineno, None,
                                              "defined in a marked block"))
        for call in _super_calls(item):
            name = call.func.attr
            base_cls, base_func, unresolved = _lookup(chain, name)
            if base_func is None:
                status = UNRESOLVED if unresolved else MISSING
                report.methods.append(MethodCheck(cls, name, "super-call", status, call.lineno, None,
                                                  f"super().{name}() in {item.name}: not in "
                                                  f"{', '.join(c.qualname for c in resolved)}"))
                continue
            why = call_problems(signature(base_func), call)
            report.methods.append(MethodCheck(cls, name, "super-call", CHANGED if why else OK, call.lineno,
                                              base_cls.qualname, "; ".join(why)))


# -- the run -----------------------------------------------------------------------------------

def _upstream_rev(repo: git.Repo, engine: str, pin: Pin) -> str:
    for rev in (f"refs/tags/{sources.upstream_tag(engine, pin.version)}", f"refs/tags/v{pin.version}",
                pin.source.commit):
        if rev and gitops.rev_parse(repo, rev):
            return gitops.rev_parse(repo, rev)
    raise OverlayError(f"no pinned upstream revision of {engine} {pin.version} in {gitops.work_root(repo)}",
                       path=gitops.work_root(repo),
                       hint=f"run `overlay fetch {engine} --version {pin.version}`, or tag the pinned upstream "
                       f"commit of your checkout as {sources.upstream_tag(engine, pin.version)}")


def _fetched(engine: Engine, pin: Pin) -> git.Repo | None:
    tree = sources.tree_path(engine.name, pin.version)
    return gitops.open_repo(tree) if (tree / ".git").exists() else None


def _paired(project: Project, engine: Engine, pin: Pin, report: VerifyReport) -> tuple[list[Source], set[str]]:
    """Trees of the engines this pin `requires` (the newest pinned version in range), and their packages."""
    found: list[Source] = []
    packages: set[str] = set()
    for other_name, spec in sorted(pin.requires.items()):
        other = project.engines.get(other_name)
        if other is None:
            report.problems.append(f"{engine.name} {pin.version} requires unknown engine '{other_name}'")
            continue
        packages |= {d.replace("-", "_") for d in other.distributions}
        matching = sorted((p for p in other.pins.values() if spec.contains(Version(p.version).public,
                                                                             prereleases=True)),
                          key=lambda p: p.parsed, reverse=True)
        if not matching:
            report.problems.append(f"{engine.name} {pin.version} requires {other_name}{spec}: no such pin")
            continue
        other_pin = matching[0]
        repo = _fetched(other, other_pin)
        label = f"{other_name} {other_pin.version}"
        if repo is None:
            report.problems.append(f"{label} (required by {engine.name} {pin.version}) is not fetched: run "
                                   f"`overlay fetch {other_name} --version {other_pin.version}`")
            continue
        rev = _upstream_rev(repo, other_name, other_pin)
        found.append(Source(label, repo, rev))
        report.references.append(f"{label} ({rev[:12]})")
    return found, packages


def verify_engine(project: Project, engine: Engine, version: str | None = None,
                  checkout: Path | None = None) -> VerifyReport:
    """Plan ENGINE's series on its pinned upstream in memory and check the result statically."""
    from .apply import engine_payload
    from .markers import MarkerConfig, check_markers, take_snapshot
    from .plan import plan

    pin = engine.pin(version)
    if checkout is not None:
        repo = gitops.open_repo(checkout)
    else:
        repo = _fetched(engine, pin)
        if repo is None:
            raise OverlayError(f"{engine.name} {pin.version} has not been fetched",
                               path=sources.tree_path(engine.name, pin.version),
                               hint=f"run `overlay fetch {engine.name} --version {pin.version}` first")
    marker_config = MarkerConfig.from_dict(engine.markers, f"VERSIONS.toml [{engine.name}.markers]")
    rev = _upstream_rev(repo, engine.name, pin)
    report = VerifyReport(engine.name, pin.version, rev, str(gitops.work_root(repo)))
    report.references.append(f"{engine.name} {pin.version} ({rev[:12]})")
    payload = engine_payload(engine, pin)
    state = GitTreeState(repo, rev)
    try:
        result = plan(state, payload.patches, payload.overlay_files, payload.replaces, three_way=True)
    finally:
        state.close()
    for patch in result.patches:
        if patch.status not in ("applied", "offset", "3-way"):
            failed = [f"{f.path}: {f.message or ', '.join(f'hunk #{h.index} {h.status}' for h in f.hunks if h.status == 'failed')}"
                      for f in patch.files if f.status == "failed"]
            report.patches.append({"name": patch.name, "status": patch.status, "files": failed})
    copies: dict[str, str] = {}
    for patch, _reverse in payload.patches:
        for fp in patch.files:
            old, new = fp.target(patch.strip)
            if fp.copy and old and new:
                copies[new] = old
    touched = sorted(p for p, (content, _mode) in state.changes.items() if content is not None)
    paired, packages = _paired(project, engine, pin, report)
    packages |= {d.replace("-", "_") for d in engine.distributions}
    own = Source(f"{engine.name} {pin.version}", repo, rev)
    modules = Modules([own, *paired], packages)
    with tempfile.TemporaryDirectory(prefix="overlay-verify-") as tmp:
        root = Path(tmp)
        for path in touched:
            target = root / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(state.changes[path][0])
        pys = [p for p in touched if p.endswith(".py")]
        for path in pys:
            report.compiled.append(_compile(root, path))
        snapshot = take_snapshot(root, pys, marker_config) if pys else None
        for path in pys:
            marked = _marked(snapshot, path)
            source = state.changes[path][0].decode("utf-8", errors="replace")
            check_classes(path, source, modules, copies.get(path), Modules([own], packages), marked, report)
        if pys:
            project_root = project.root
            baseline = project_root / marker_config.snapshot if marker_config.snapshot else None
            if baseline is not None and not baseline.is_file():
                raise OverlayError("the marker snapshot named in VERSIONS.toml does not exist", path=baseline,
                                   hint=f"take one with `overlay markers snapshot` or drop "
                                   f"[{engine.name}.markers] snapshot")
            waivers = project_root / marker_config.waivers if marker_config.waivers else None
            markers = check_markers(root, baseline, marker_config, waivers, pys)
            report.markers = markers.to_dict()
    return report.finish()


def _compile(root: Path, path: str) -> CompileResult:
    try:
        py_compile.compile(str(root / path), cfile=str(root / (path + "c")), dfile=path, doraise=True)
    except py_compile.PyCompileError as exc:
        error = exc.exc_value
        line = getattr(error, "lineno", None)
        message = getattr(error, "msg", None) or str(error)
        return CompileResult(path, False, line, f"{type(error).__name__}: {message}")
    finally:
        compiled = root / (path + "c")
        if compiled.exists():
            compiled.unlink()
    return CompileResult(path, True)


def _marked(snapshot, path: str) -> set[int]:
    lines: set[int] = set()
    if snapshot is None:
        return lines
    for block in snapshot.blocks:
        if block.file == path:
            lines.update(range(block.start_line, block.end_line + 1))
    return lines


# -- CLI ---------------------------------------------------------------------------------------

def _render(report: VerifyReport, console, show_all: bool) -> None:
    console.print(f"verify {report.engine} {report.version}: planned on {report.base[:12]} "
                  f"({', '.join(report.references)})", markup=False)
    for patch in report.patches:
        console.print(f"  patch {patch['name']}: {patch['status']}", markup=False)
        for line in patch["files"]:
            console.print(f"    {line}", markup=False)
    bad = [c for c in report.compiled if not c.ok]
    console.print(f"  py_compile: {len(report.compiled) - len(bad)}/{len(report.compiled)} file(s) ok", markup=False)
    for item in bad:
        console.print(f"    {item.path}:{item.line or ''}: {item.message}", markup=False)
    for cls in report.classes:
        rows = [m for m in report.methods if m.cls == f"{cls.file}:{cls.name}"]
        counts: dict[str, int] = {}
        for row in rows:
            counts[row.status] = counts.get(row.status, 0) + 1
        summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        copied = f", copy of {cls.copy_of}" if cls.copy_of else ""
        console.print(f"  {cls.file}:{cls.line} {cls.name} <- {', '.join(cls.bases)}{copied}: {summary}",
                      markup=False)
        for row in rows:
            if show_all or row.status not in (OK, NEW):
                where = f" [{row.reference}]" if row.reference else ""
                detail = f": {row.detail}" if row.detail else ""
                console.print(f"    {row.status:<17} {row.kind:<10} {row.method} (line {row.line}){where}{detail}",
                              markup=False)
    if report.markers is not None:
        summary = report.markers.get("summary") or {}
        counts = ", ".join(f"{n} {k}" for k, n in summary.items() if n) or "no baseline"
        console.print(f"  markers: {report.markers.get('blocks_found', 0)} block(s) found; {counts}", markup=False)
        for block in report.markers.get("blocks", []):
            if block.get("failing"):
                console.print(f"    {block['status']}: {block['file']}:{block['start_line']} "
                              f"{block.get('id') or block.get('qualname')}", markup=False)
        for problem in report.markers.get("problems", []):
            console.print(f"    {problem['file']}:{problem['line']}: {problem['message']}", markup=False)
    for problem in report.problems:
        console.print(f"  problem: {problem}", markup=False)
    console.print(f"result: {report.status}", markup=False)


@click.command("verify")
@click.argument("engine")
@click.option("--version", "version", help="Pinned version (default: the engine's `version`).")
@click.option("--checkout", type=click.Path(file_okay=False, path_type=Path),
              help="A git checkout holding the pinned upstream (tag upstream/<engine>-<version> or v<version>).")
@click.option("--all", "show_all", is_flag=True, help="List every checked method, not only the problems.")
def verify_cmd(engine: str, version: str | None, checkout: Path | None, show_all: bool) -> None:
    """Static checks of ENGINE's series on its pin: py_compile, base-class methods, marked blocks."""
    from .config import find_project, load_project

    app = ui.app_context()
    project = load_project(app.project.resolve() if app.project else find_project())
    report = verify_engine(project, project.engine(engine), version, checkout)
    ui.emit("verify", report, lambda console: _render(report, console, show_all))
    if report.status != "ok":
        raise click.exceptions.Exit(EXIT_CHECK_FAILED)
