"""The Dockerfile cannot be built here (no Docker engine on these machines),
so this test keeps it from drifting away from what CI proves:

- the builder stage runs scripts/install-deps.sh exactly as `make deps` does
  and configures/builds with the Makefile's Release configure command
  (.ci/run runs `make test`, which builds that configuration);
- the binaries the runtime stage copies are the ones the builder builds, at
  the paths CMake puts them;
- the runtime stage is the same Debian release, installs
  `install-deps.sh --runtime`, runs as a non-root user, exposes the ports the
  ENTRYPOINT passes, and its HEALTHCHECK calls maskserve-cli on that port;
- every shared library the built binaries load (ldd) belongs to a Debian
  package that `apt-get install --no-install-recommends RUNTIME_PKGS` brings
  into debian:12-slim (RUNTIME_PKGS and their Depends closure, plus the
  Priority: required base and its closure), mapped with dpkg -S.
"""

import os
import re
import shlex
import subprocess
import unittest

import deploy_util as du


def parse_dockerfile(text):
    """[(stage name, base image, [(INSTRUCTION, argument text)])]."""
    lines = []
    cur = ""
    for raw in text.split("\n"):
        s = raw.strip()
        if not cur and (s.startswith("#") or not s):
            continue
        if cur and s.startswith("#"):
            continue  # comment lines inside a continuation are dropped by Docker
        if s.endswith("\\"):
            cur += s[:-1] + " "
            continue
        cur += s
        lines.append(cur)
        cur = ""
    stages = []
    for line in lines:
        instr, _, arg = line.partition(" ")
        instr = instr.upper()
        arg = arg.strip()
        if instr == "FROM":
            m = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", arg, re.I)
            stages.append((m.group(2), m.group(1), []))
        else:
            stages[-1][2].append((instr, arg))
    return stages


def exec_form(arg):
    """A JSON-array (exec form) argument as a list; shell form is split."""
    import json
    arg = arg.strip()
    if arg.startswith("["):
        return json.loads(arg)
    return shlex.split(arg)


def shell_commands(run_arg):
    """A RUN's shell text split into simple commands on && and ;."""
    parts = re.split(r"\s*(?:&&|;)\s*", run_arg)
    return [shlex.split(p) for p in parts if p.strip()]


def makefile_vars_and_rules():
    text = du.read("Makefile")
    vars_ = dict(re.findall(r"^(\w+)\s*\?=\s*(.*?)\s*$", text, re.M))
    rules = {}
    cur = None
    for line in text.split("\n"):
        if line.startswith("\t") and cur is not None:
            rules[cur].append(line.strip())
        elif re.match(r"^[^\s#][^:=]*:(?!=)", line):
            cur = line.split(":")[0].strip()
            rules[cur] = []
        else:
            cur = None if not line.startswith("\t") else cur

    def expand(s):
        return re.sub(r"\$\((\w+)\)", lambda m: vars_.get(m.group(1), m.group(0)), s)

    return vars_, {expand(k): [expand(c) for c in v] for k, v in rules.items()}, expand


def cmake_executables():
    """{target: directory of the CMakeLists.txt that adds it}, for named targets."""
    out = {}
    for root, dirs, files in os.walk(du.SOURCE_DIR):
        rel = os.path.relpath(root, du.SOURCE_DIR)
        if rel.split(os.sep)[0] in ("build", ".git", "tests"):
            dirs[:] = []
            continue
        if "CMakeLists.txt" in files:
            with open(os.path.join(root, "CMakeLists.txt")) as f:
                for t in re.findall(r"add_executable\(\s*([\w-]+)", f.read()):
                    out[t] = "" if rel == "." else rel
    return out


def bash_array(script, name):
    m = re.search(name + r"=\((.*?)\n\)", script, re.S)
    assert m, f"{name} not found in scripts/install-deps.sh"
    words = []
    for line in m.group(1).split("\n"):
        line = line.split("#", 1)[0]
        words += line.split()
    return words


class DockerfileTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.stages = parse_dockerfile(du.read("Dockerfile"))
        cls.by_name = {s[0]: s for s in cls.stages}
        cls.vars, cls.rules, cls.expand = makefile_vars_and_rules()

    def instrs(self, stage, kind):
        return [a for i, a in self.by_name[stage][2] if i == kind]

    def test_stages(self):
        self.assertEqual([s[0] for s in self.stages], ["builder", "runtime"])
        builder, runtime = self.by_name["builder"][1], self.by_name["runtime"][1]
        self.assertRegex(builder, r"^debian:12(\.\d+)?$")
        self.assertRegex(runtime, r"^debian:12(\.\d+)?-slim$")
        # Same Debian release in both stages: the sonames the builder links
        # against are the ones the runtime packages ship.
        self.assertEqual(builder.split(":")[1].split("-")[0], runtime.split(":")[1].split("-")[0])

    def test_builder_installs_with_the_script_like_make_deps(self):
        make_deps = self.rules["deps"]
        self.assertEqual(len(make_deps), 1)
        make_cmd = shlex.split(make_deps[0].lstrip("@"))
        runs = [c for r in self.instrs("builder", "RUN") for c in shell_commands(r)]
        self.assertIn(make_cmd, runs, "builder must run install-deps.sh as `make deps` does")
        copies = [exec_form(a) for a in self.instrs("builder", "COPY")]
        self.assertIn(["scripts/install-deps.sh", "scripts/install-deps.sh"], copies)
        # .ci/run is `make test`, which builds with the Makefile's configure rule.
        self.assertIn("make test", du.read(".ci/run"))
        self.assertEqual(self.rules["test"], [])  # test: test-release test-asan
        self.assertIn("test-release", du.read("Makefile").split("\ntest:")[1].split("\n")[0])

    def test_builder_configures_and_builds_like_the_makefile(self):
        build_dir = self.vars["BUILD_DIR"]
        ninja_rule = self.rules[f"{build_dir}/build.ninja"]
        make_configure = shlex.split(ninja_rule[0])
        runs = [c for r in self.instrs("builder", "RUN") for c in shell_commands(r)]
        configures = [c for c in runs if c[:1] == ["cmake"] and "-S" in c]
        builds = [c for c in runs if c[:2] == ["cmake", "--build"]]
        self.assertEqual(len(configures), 1, runs)
        self.assertEqual(len(builds), 1, runs)
        configure = configures[0]
        # Every word of the Makefile's configure appears in the image's ...
        for word in make_configure:
            self.assertIn(word, configure, f"Dockerfile configure lacks {word!r} of the Makefile's")
        # ... and the only extra is not building tests (the image ships no tests).
        extra = [w for w in configure if w not in make_configure]
        self.assertEqual(extra, ["-DBUILD_TESTING=OFF"])
        build = builds[0]
        self.assertEqual(build[2], build_dir)
        targets = build[build.index("--target") + 1:]
        targets = [t for t in targets if not t.startswith("-")]
        exes = cmake_executables()
        copied = []
        for arg in self.instrs("runtime", "COPY"):
            words = exec_form(arg)
            if words[0].startswith("--from=builder"):
                copied.append(words[1:])
        self.assertTrue(copied)
        for srcpath, dest in copied:
            name = os.path.basename(srcpath)
            self.assertIn(name, targets, f"{name} is copied but not built")
            self.assertIn(name, exes)
            want = "/src/" + os.path.join(build_dir, exes[name], name)
            self.assertEqual(srcpath, want, f"{name} is built at {want}")
            self.assertTrue(dest.startswith("/usr/local/bin/"))
        self.assertEqual(sorted(targets), sorted(os.path.basename(s) for s, _ in copied))

    def test_runtime_stage(self):
        runs = [c for r in self.instrs("runtime", "RUN") for c in shell_commands(r)]
        self.assertIn(["bash", "/tmp/install-deps.sh", "--runtime"], runs)
        useradd = [c for c in runs if c[:1] == ["useradd"]]
        self.assertEqual(len(useradd), 1)
        user = useradd[0][-1]
        uid = useradd[0][useradd[0].index("--uid") + 1]
        self.assertEqual(self.instrs("runtime", "USER"), [user])
        self.assertNotEqual(user, "root")
        self.assertNotEqual(uid, "0")

        entry = exec_form(self.instrs("runtime", "ENTRYPOINT")[-1])
        copied_bins = {os.path.basename(exec_form(a)[-1]) for a in self.instrs("runtime", "COPY")}
        self.assertIn(entry[0], copied_bins)
        flags = du.server_flags()
        given = {}
        for a in entry[1:]:
            m = re.fullmatch(r"--(\w+)=(.*)", a)
            self.assertTrue(m, f"ENTRYPOINT argument {a!r} is not --flag=value")
            self.assertIn(m.group(1), flags, f"ENTRYPOINT passes unknown server flag {a}")
            given[m.group(1)] = m.group(2)
        ports = {given["port"], given["metrics_port"]}
        exposed = set(" ".join(self.instrs("runtime", "EXPOSE")).split())
        self.assertEqual(exposed, ports)

        # HEALTHCHECK: the server's own health over gRPC via maskserve-cli.
        hc = self.instrs("runtime", "HEALTHCHECK")
        self.assertEqual(len(hc), 1)
        cmd = exec_form(hc[0].split(" CMD ", 1)[1])
        self.assertEqual(cmd[0], "maskserve-cli")
        self.assertIn("maskserve-cli", copied_bins)
        self.assertEqual(cmd[-1], "health")
        cli = du.cli_flags()
        for a in cmd[1:-1]:
            m = re.fullmatch(r"--(\w+)=(.*)", a)
            self.assertTrue(m and m.group(1) in cli, f"HEALTHCHECK passes unknown CLI flag {a}")
            if m.group(1) == "target":
                self.assertEqual(m.group(2).rsplit(":", 1)[1], given["port"])
        start = re.search(r"--start-period=(\d+)s", hc[0])
        self.assertTrue(start and int(start.group(1)) >= 60, "allow for model loading")

        env = " ".join(self.instrs("runtime", "ENV"))
        # The Makefile exports OMP_WAIT_POLICY=PASSIVE for `make serve`; the
        # image must not spin-wait either.
        self.assertIn("OMP_WAIT_POLICY=PASSIVE", env)
        data_dir = re.search(r"MASKSERVE_DATA_DIR=(\S+)", env).group(1)
        self.assertIn(data_dir, " ".join(self.instrs("runtime", "VOLUME")))
        self.assertIn(data_dir, " ".join(self.instrs("runtime", "WORKDIR")))
        # Models are mounted at /models, created and owned by the user.
        self.assertTrue(any("/models" in c for c in runs for c in [" ".join(c)]))

    def test_runtime_packages_exist_in_this_debian(self):
        script = du.read("scripts/install-deps.sh")
        pkgs = bash_array(script, "RUNTIME_PKGS")
        # Installed here (dpkg, one fast call) or at least known to apt.
        r = subprocess.run(["dpkg-query", "-W", "-f", "${Package}\n"] + pkgs,
                           capture_output=True, text=True)
        known = set(r.stdout.split())
        for p in pkgs:
            if p in known:
                continue
            r = subprocess.run(["apt-cache", "show", "--no-all-versions", p],
                               capture_output=True, text=True)
            self.assertTrue(r.returncode == 0 and r.stdout.strip(),
                            f"runtime package {p} is unknown to apt and dpkg")


def installed_packages():
    """{name: fields} for every installed package (one dpkg-query call)."""
    fmt = "${Package}\t${Status}\t${Priority}\t${Essential}\t${Depends}\t${Pre-Depends}\t${Provides}\n"
    out = subprocess.run(["dpkg-query", "-W", "-f", fmt], capture_output=True, text=True,
                         check=True).stdout
    pkgs = {}
    for line in out.split("\n"):
        if not line:
            continue
        name, status, prio, ess, dep, predep, prov = line.split("\t")
        if "installed" not in status.split():
            continue
        pkgs[name] = {"priority": prio, "essential": ess == "yes",
                      "depends": ",".join(x for x in (dep, predep) if x), "provides": prov}
    return pkgs


def dependency_closure(roots, pkgs):
    providers = {}
    for name, f in pkgs.items():
        for p in f["provides"].split(","):
            p = p.strip().split(" ")[0]
            if p:
                providers.setdefault(p, set()).add(name)
    seen = set()
    todo = list(roots)
    while todo:
        p = todo.pop()
        if p in seen or p not in pkgs:
            continue
        seen.add(p)
        for clause in pkgs[p]["depends"].split(","):
            for alt in clause.split("|"):
                alt = alt.strip().split(" ")[0].split(":")[0]
                if not alt:
                    continue
                for cand in [alt] + sorted(providers.get(alt, ())):
                    if cand in pkgs:
                        todo.append(cand)
    return seen


def path_variants(path):
    """A library path as dpkg may have recorded it (merged /usr: /lib and
    /usr/lib are the same directory, and sonames are symlinks)."""
    out = []
    for c in (path, os.path.realpath(path)):
        out += [c, c[4:] if c.startswith("/usr/") else "/usr" + c]
    return out


def packages_of(paths):
    """{library path: Debian package or None}, with one dpkg -S call."""
    variants = {p: path_variants(p) for p in paths}
    allv = sorted({v for vs in variants.values() for v in vs})
    r = subprocess.run(["dpkg", "-S"] + allv, capture_output=True, text=True)
    owner = {}
    for line in r.stdout.split("\n"):
        if ": " in line:
            pkgs, path = line.split(": ", 1)
            owner[path.strip()] = pkgs.split(",")[0].split(":")[0].strip()
    return {p: next((owner[v] for v in vs if v in owner), None) for p, vs in variants.items()}


class RuntimeLibrariesTest(unittest.TestCase):
    def test_runtime_packages_cover_linked_libraries(self):
        cache = os.path.join(du.BUILD_DIR, "CMakeCache.txt")
        if not os.path.exists(cache):
            self.skipTest(f"no build in {du.BUILD_DIR}")
        with open(cache) as f:
            text = f.read()
        if re.search(r"^MASKSERVE_SANITIZE:BOOL=ON", text, re.M):
            self.skipTest("sanitizer build links the sanitizer runtimes; checked on the Release build")
        bins = [os.path.join(du.BUILD_DIR, p) for p in
                ("server/maskserve", "client/maskserve-cli", "client/maskserve-bench")]
        bins = [b for b in bins if os.path.exists(b)]
        if not bins:
            self.skipTest(f"maskserve binaries not built in {du.BUILD_DIR}")
        pkgs = installed_packages()
        runtime = bash_array(du.read("scripts/install-deps.sh"), "RUNTIME_PKGS")
        for p in runtime:
            self.assertIn(p, pkgs, f"RUNTIME_PKGS names {p}, which is not installed on this "
                          "build machine: the binaries were linked against something else")
        base = [n for n, f in pkgs.items() if f["priority"] == "required" or f["essential"]]
        # debian:12-slim is minbase (Priority: required) plus apt.
        available = dependency_closure(base + ["apt"], pkgs) | dependency_closure(runtime, pkgs)
        linked = {}
        for b in bins:
            out = subprocess.run(["ldd", b], capture_output=True, text=True, check=True).stdout
            for line in out.split("\n"):
                m = re.match(r"\s*(\S+) => (/\S+)", line) or re.match(r"\s*(/\S+) \(", line)
                if m:
                    linked.setdefault(m.group(m.lastindex), []).append(os.path.basename(b))
        owners = packages_of(list(linked))
        problems = []
        for path, users in sorted(linked.items()):
            pkg = owners[path]
            if pkg is None:
                problems.append(f"{path} (used by {', '.join(users)}) belongs to no Debian package")
            elif pkg not in available:
                problems.append(f"{path} (used by {', '.join(users)}) is in {pkg}, which "
                                "RUNTIME_PKGS (with dependencies) does not install")
        self.assertEqual(problems, [], "\n".join(problems))


if __name__ == "__main__":
    du.run_tests()
