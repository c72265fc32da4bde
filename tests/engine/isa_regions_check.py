#!/usr/bin/env python3
"""Fails when AVX-512 code appears outside the kernels' AVX-512 namespaces.

The engine is built for x86-64-v3 and compiles its AVX-512 kernels inside
`#pragma GCC target` regions, in namespaces named avx512 / avx512bf16 (see
engine/kernels/simd16.h). Any other function holding an AVX-512 instruction
would die with SIGILL on an AVX2-only CPU: e.g. an std/absl inline function
emitted with AVX-512 code in some translation unit and kept by the linker for
everyone (COMDAT), or a file compiled with -mavx512f. This disassembles the
given objects, archives or executables and lists every such function.

An instruction is AVX-512 when it is EVEX-encoded (first opcode byte 0x62
after legacy prefixes; in 64-bit mode 0x62 is nothing else) or an opmask
instruction (k*: VEX-encoded, AVX-512 only).

Usage: isa_regions_check.py FILE...   (exit 0 clean, 1 offenders, 77 no objdump or
no FILE built; files that do not exist are reported and skipped)
"""
import os
import re
import shutil
import subprocess
import sys

ALLOWED = re.compile(r"::avx512(bf16)?::")
OPMASK_PREFIXES = ("kmov", "kand", "kor", "kxnor", "kxor", "knot", "ktest", "kshift", "kunpck",
                   "kadd")
LEGACY_PREFIXES = {0x26, 0x2E, 0x36, 0x3E, 0x64, 0x65, 0x66, 0x67, 0xF2, 0xF3}
FUNC = re.compile(r"^[0-9a-f]+ <(.*)>:$")
INSN = re.compile(r"^\s*[0-9a-f]+:\t([0-9a-f ]+?)\s*\t(\S+)")


def is_avx512(raw, mnemonic):
    if mnemonic.startswith(OPMASK_PREFIXES):
        return True
    for b in (int(x, 16) for x in raw.split()):
        if b in LEGACY_PREFIXES:
            continue
        return b == 0x62
    return False


def main(paths):
    objdump = shutil.which("objdump")
    if objdump is None:
        print("objdump not found; skipping")
        return 77
    offenders = {}
    checked = 0
    missing = [p for p in paths if not os.path.exists(p)]
    for path in missing:  # e.g. only engine_tests was built
        print(f"{path}: not built, not checked")
    paths = [p for p in paths if p not in missing]
    if not paths:
        return 77
    for path in paths:
        out = subprocess.run([objdump, "-d", "-C", "-w", path], check=True, capture_output=True,
                             text=True).stdout
        func = None
        for line in out.splitlines():
            m = FUNC.match(line)
            if m:
                func = m.group(1)
                checked += 1
                continue
            m = INSN.match(line)
            if m and func is not None and not ALLOWED.search(func):
                if is_avx512(m.group(1), m.group(2)):
                    offenders.setdefault((path, func), line.strip())
    for (path, func), line in sorted(offenders.items()):
        print(f"{path}: {func}\n    {line}")
    print(f"{checked} functions checked, {len(offenders)} with AVX-512 code outside the "
          f"avx512 kernel namespaces")
    return 1 if offenders else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
