"""A renderer for a documented subset of Helm's Go-template language, so the
chart in deploy/helm/maskserve can be rendered and checked offline where no
`helm` binary can be installed (it is not a Debian package).

It is strict on purpose: anything outside the subset is an error, never a
silent approximation, so a template that uses more of Go templates / Sprig
fails the test instead of being rendered differently from Helm.

The subset (also listed in deploy/helm/maskserve/README.md):
  text and {{ pipeline }} with Go's whitespace trimming ({{- and -}})
  {{/* comments */}}
  {{ define "name" }} ... {{ end }}   (in any template; _*.tpl render nothing)
  {{ if pipeline }} ... [{{ else if pipeline }} ...] [{{ else }} ...] {{ end }}
  values: .  .Values.a.b  .Release.Name/.Namespace/.Service  .Chart.Name/
          .Version/.AppVersion, "strings", integers, true/false
  functions: include NAME CTX, quote, toYaml, toJson, toPrettyJson,
          nindent N, indent N, default D V, trunc N, trimSuffix S,
          printf FMT ARGS (%s and %d only), required MSG V, not
  pipelines: a | f b  passes a as f's last argument, as in Go templates.
Not supported (error): range, with, variables ($x), parentheses, and/or/eq,
  any other function, .Capabilities, .Files, .Template.

Output semantics follow Helm 3: a missing value is an error when printed
(like `helm template --strict`), falsy values are Go's (nil, false, 0, "",
empty map/list), toYaml drops the trailing newline and sorts keys,
toJson/toPrettyJson sort keys like encoding/json.
"""

import json
import os
import re

import yaml


class TemplateError(Exception):
    pass


class _Missing:
    """A value path that is not in the context (Go's <no value>)."""

    def __bool__(self):
        return False

    def __repr__(self):
        return "<missing>"


MISSING = _Missing()

_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.S)
_TOKEN = re.compile(r'\s*(?:("(?:[^"\\]|\\.)*")|(-?\d+)|(\.[A-Za-z0-9_.]*|\.)|([A-Za-z_][A-Za-z0-9_]*)|(\|))')


def _truthy(v):
    if v is MISSING or v is None or v is False:
        return False
    if isinstance(v, (int, float)) and not isinstance(v, bool) and v == 0:
        return False
    if isinstance(v, (str, list, dict)) and len(v) == 0:
        return False
    return True


def _to_text(v, where):
    if v is MISSING or v is None:
        raise TemplateError(f"{where}: printing a missing value")
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        # Helm holds YAML numbers as float64; Go prints them without an
        # exponent below 1e21, but keep printed numbers small so the subset
        # never depends on that.
        if abs(v) >= 10**6:
            raise TemplateError(f"{where}: print large numbers with toJson, not directly")
        return str(v)
    if isinstance(v, float):
        raise TemplateError(f"{where}: printing a float (Go formatting differs); quote it in values")
    if isinstance(v, str):
        return v
    raise TemplateError(f"{where}: printing a {type(v).__name__}; use toYaml or toJson")


def _to_yaml(v):
    if v is MISSING or v is None:
        return "null"
    return yaml.safe_dump(v, default_flow_style=False, sort_keys=True).rstrip("\n")


def _go_json(v, indent=None):
    return json.dumps(v, sort_keys=True, indent=indent,
                      separators=(",", ":") if indent is None else (",", ": "))


class Chart:
    """A chart directory: Chart.yaml, values.yaml, templates/."""

    def __init__(self, path):
        self.path = path
        with open(os.path.join(path, "Chart.yaml")) as f:
            self.meta = yaml.safe_load(f)
        with open(os.path.join(path, "values.yaml")) as f:
            self.values = yaml.safe_load(f) or {}
        self.templates = {}
        tdir = os.path.join(path, "templates")
        for name in sorted(os.listdir(tdir)):
            if name.endswith((".yaml", ".yml", ".tpl")):
                with open(os.path.join(tdir, name)) as f:
                    self.templates[name] = f.read()
            elif name != "NOTES.txt":
                raise TemplateError(f"templates/{name}: unexpected file")


def set_value(values, dotted, value):
    """Like `helm template --set a.b=value` for one key (value already typed)."""
    cur = values
    keys = dotted.split(".")
    for k in keys[:-1]:
        cur = cur.setdefault(k, {})
    cur[keys[-1]] = value


def _deep_merge(base, over):
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


class Renderer:
    def __init__(self, chart, release_name="maskserve", namespace="default", values=None):
        self.chart = chart
        vals = _deep_merge(chart.values, values or {})
        self.root = {
            "Values": vals,
            "Release": {"Name": release_name, "Namespace": namespace, "Service": "Helm"},
            "Chart": {"Name": chart.meta["name"], "Version": chart.meta["version"],
                      "AppVersion": str(chart.meta.get("appVersion", ""))},
        }
        self.defines = {}
        self.parsed = {}
        for name, text in chart.templates.items():
            self.parsed[name] = self._parse(name, text)

    # ---- parsing -------------------------------------------------------

    def _lex(self, name, text):
        """[('text', s) | ('action', body, lineno)] with trimming applied."""
        out = []
        pos = 0
        for m in _ACTION.finditer(text):
            chunk = text[pos:m.start()]
            if m.group(1):
                chunk = chunk.rstrip(" \t\r\n")
            if out and out[-1][0] == "trim_next":
                out.pop()
                chunk = chunk.lstrip(" \t\r\n")
            out.append(("text", chunk))
            body = m.group(2).strip()
            line = text.count("\n", 0, m.start()) + 1
            if "{{" in body:
                raise TemplateError(f"{name}:{line}: nested '{{{{'")
            if body.startswith("-") or body.endswith("-"):
                raise TemplateError(f"{name}:{line}: trim marker needs a space: {{{{{m.group(2)}}}}}")
            if not (body.startswith("/*") and body.endswith("*/")):
                out.append(("action", body, line))
            if m.group(3):
                out.append(("trim_next",))
            pos = m.end()
        tail = text[pos:]
        if out and out[-1][0] == "trim_next":
            out.pop()
            tail = tail.lstrip(" \t\r\n")
        out.append(("text", tail))
        return out

    def _parse(self, name, text):
        tokens = self._lex(name, text)
        pos = 0

        def block(stop):
            nonlocal pos
            nodes = []
            while pos < len(tokens):
                tok = tokens[pos]
                if tok[0] == "text":
                    if tok[1]:
                        nodes.append(("text", tok[1]))
                    pos += 1
                    continue
                body, line = tok[1], tok[2]
                where = f"{name}:{line}"
                word = body.split(None, 1)[0] if body else ""
                if word in ("end", "else"):
                    if word not in stop:
                        raise TemplateError(f"{where}: unexpected {{{{ {body} }}}}")
                    return nodes, body, where
                pos += 1
                if word == "if":
                    cond = self._parse_pipeline(body[2:].strip(), where)
                    branches = []
                    then, term, twhere = block(("end", "else"))
                    branches.append((cond, then))
                    while term != "end":
                        pos += 1
                        rest = term[4:].strip()
                        if rest.startswith("if "):
                            c = self._parse_pipeline(rest[3:].strip(), twhere)
                        elif rest == "":
                            c = None
                        else:
                            raise TemplateError(f"{twhere}: unsupported {{{{ {term} }}}}")
                        body_nodes, term, twhere = block(("end", "else"))
                        branches.append((c, body_nodes))
                        if c is None and term != "end":
                            raise TemplateError(f"{twhere}: else after else")
                    if term != "end":
                        raise TemplateError(f"{twhere}: expected end")
                    pos += 1
                    nodes.append(("if", branches))
                elif word == "define":
                    m = re.fullmatch(r'define\s+"([^"]+)"', body)
                    if not m:
                        raise TemplateError(f"{where}: bad define")
                    inner, term, twhere = block(("end",))
                    if term != "end":
                        raise TemplateError(f"{twhere}: expected end of define")
                    pos += 1
                    self.defines[m.group(1)] = inner
                elif word in ("range", "with", "template", "block", "break", "continue"):
                    raise TemplateError(f"{where}: '{word}' is outside the supported subset")
                else:
                    nodes.append(("out", self._parse_pipeline(body, where), where))
            if stop:
                raise TemplateError(f"{name}: missing {{{{ end }}}}")
            return nodes, None, name

        nodes, _, _ = block(())
        return nodes

    def _parse_pipeline(self, src, where):
        if "$" in src or "(" in src or ")" in src or ":=" in src:
            raise TemplateError(f"{where}: variables and parentheses are outside the subset: {src}")
        cmds, cur = [], []
        pos = 0
        while pos < len(src):
            m = _TOKEN.match(src, pos)
            if not m or m.end() == pos:
                if src[pos:].strip() == "":
                    break
                raise TemplateError(f"{where}: cannot parse '{src[pos:]}'")
            pos = m.end()
            s, num, field, ident, pipe = m.groups()
            if pipe:
                if not cur:
                    raise TemplateError(f"{where}: empty command in '{src}'")
                cmds.append(cur)
                cur = []
            elif s is not None:
                cur.append(("lit", json.loads(s)))
            elif num is not None:
                cur.append(("lit", int(num)))
            elif field is not None:
                cur.append(("field", field))
            elif ident in ("true", "false"):
                cur.append(("lit", ident == "true"))
            else:
                cur.append(("fn", ident))
        if not cur:
            raise TemplateError(f"{where}: empty pipeline '{src}'")
        cmds.append(cur)
        return cmds

    # ---- evaluation ----------------------------------------------------

    def _field(self, path, dot, where):
        if path == ".":
            return dot
        cur = dot
        for part in path[1:].split("."):
            if isinstance(cur, dict) and part in cur:
                cur = cur[part]
            elif isinstance(cur, dict) or cur is MISSING or cur is None:
                return MISSING
            else:
                raise TemplateError(f"{where}: cannot take .{part} of a {type(cur).__name__}")
        return cur

    def _arg(self, a, dot, where):
        kind, v = a
        if kind == "lit":
            return v
        if kind == "field":
            return self._field(v, dot, where)
        raise TemplateError(f"{where}: function '{v}' used as an argument (parentheses are outside the subset)")

    def _call(self, fn, args, where):
        def need(n):
            if len(args) != n:
                raise TemplateError(f"{where}: {fn} takes {n} arguments, got {len(args)}")

        if fn == "include":
            need(2)
            if args[0] not in self.defines:
                raise TemplateError(f"{where}: no template named {args[0]!r}")
            return self._render_nodes(self.defines[args[0]], args[1])
        if fn == "quote":
            need(1)
            return json.dumps(_to_text(args[0], where))
        if fn == "toYaml":
            need(1)
            return _to_yaml(args[0])
        if fn == "toJson":
            need(1)
            return _go_json(args[0])
        if fn == "toPrettyJson":
            need(1)
            return _go_json(args[0], indent=2)
        if fn in ("nindent", "indent"):
            need(2)
            pad = " " * int(args[0])
            text = "\n".join(pad + line for line in _to_text(args[1], where).split("\n"))
            return ("\n" + text) if fn == "nindent" else text
        if fn == "default":
            need(2)
            return args[1] if _truthy(args[1]) else args[0]
        if fn == "trunc":
            need(2)
            return _to_text(args[1], where)[:int(args[0])]
        if fn == "trimSuffix":
            need(2)
            s = _to_text(args[1], where)
            return s[:-len(args[0])] if args[0] and s.endswith(args[0]) else s
        if fn == "printf":
            if not args:
                raise TemplateError(f"{where}: printf needs a format")
            fmt, rest = args[0], list(args[1:])
            if re.search(r"%[^sd%]", fmt):
                raise TemplateError(f"{where}: printf supports %s and %d only")
            return re.sub(r"%[sd%]", lambda m: "%" if m.group(0) == "%%"
                          else _to_text(rest.pop(0), where), fmt)
        if fn == "required":
            need(2)
            if not _truthy(args[1]):
                raise TemplateError(f"{where}: {args[0]}")
            return args[1]
        if fn == "not":
            need(1)
            return not _truthy(args[0])
        raise TemplateError(f"{where}: function '{fn}' is outside the supported subset")

    def _eval(self, pipeline, dot, where):
        value = None
        for i, cmd in enumerate(pipeline):
            head = cmd[0]
            if head[0] == "fn":
                args = [self._arg(a, dot, where) for a in cmd[1:]]
                if i > 0:
                    args.append(value)
                value = self._call(head[1], args, where)
            else:
                if len(cmd) != 1 or i > 0:
                    raise TemplateError(f"{where}: a value cannot take arguments")
                value = self._arg(head, dot, where)
        return value

    def _render_nodes(self, nodes, dot):
        out = []
        for node in nodes:
            if node[0] == "text":
                out.append(node[1])
            elif node[0] == "out":
                out.append(_to_text(self._eval(node[1], dot, node[2]), node[2]))
            elif node[0] == "if":
                for cond, body in node[1]:
                    if cond is None or _truthy(self._eval(cond, dot, "if")):
                        out.append(self._render_nodes(body, dot))
                        break
        return "".join(out)

    def render(self):
        """{template name: rendered text} for every non-partial template."""
        return {name: self._render_nodes(nodes, self.root)
                for name, nodes in self.parsed.items() if not name.startswith("_")}

    def objects(self):
        """Every rendered Kubernetes object (parsed YAML), in template order."""
        objs = []
        for name, text in self.render().items():
            try:
                docs = list(yaml.safe_load_all(text))
            except yaml.YAMLError as e:
                raise TemplateError(f"{name}: rendered text is not YAML: {e}\n{text}")
            objs.extend((name, d) for d in docs if d is not None)
        return objs
