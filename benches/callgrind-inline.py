#!/usr/bin/env python3
"""Instructions per request of each function of mod_shield, counting what was inlined into
others (callgrind_annotate gives an inlined function's cost to its caller).

Usage (the dump of a window kept by benches/callgrind.sh):
    KEEP=1 CACHE_SIM=0 VALGRIND_OPTS="--dump-instr=yes --dump-line=no" CONFIGS=shield \
        benches/callgrind.sh
    benches/callgrind-inline.py /tmp/shield-callgrind.XXXX/shield/out/callgrind.out.2 \
        target/release/mod_shield.so 2000 [incl|excl|lines] [N]

For every instruction address of the module it asks addr2line for the inline stack and adds
the address's cost (its own, and the inclusive cost of the calls made there) to every
function of that stack once: "incl" then prints each function's inclusive cost, "excl" the
innermost function's own cost, "lines" the own cost by source line. Figures are divided by
the request count (third argument). Needs the dump made with --dump-instr=yes and
--dump-line=no (one position column: the address).
"""
import collections
import re
import subprocess
import sys

dump, so = sys.argv[1], sys.argv[2]
requests = int(sys.argv[3]) if len(sys.argv) > 3 else 1
mode = sys.argv[4] if len(sys.argv) > 4 else "incl"
top = int(sys.argv[5]) if len(sys.argv) > 5 else 60
so_name = so.split("/")[-1]

# callgrind's compressed names: "fn=(12) name" the first time, "fn=(12)" after.
names = {"ob": {}, "fn": {}}


def name(line, kind):
    m = re.match(r"c?(\w+)=\((\d+)\)(?: (.*))?$", line.rstrip("\n"))
    table = names[kind]
    if m.group(3) is not None:
        table[m.group(2)] = m.group(3)
    return table[m.group(2)]


own = collections.Counter()  # address -> Ir of its instruction
calls = collections.Counter()  # address -> inclusive Ir of the calls made there
entries = collections.defaultdict(list)  # function -> its addresses (to find the load base)
ob = fn = None
last = 0
after_calls = False
for line in open(dump):
    if line.startswith("ob="):
        ob = name(line, "ob")
    elif line.startswith("fn="):
        fn = name(line, "fn")
    elif line.startswith("cob="):
        name(line, "ob")
    elif line.startswith("cfn="):
        name(line, "fn")
    elif line.startswith("calls="):
        after_calls = True
    elif line[:1] in "0123456789+-*":
        pos, *cost = line.split()
        if pos == "*":
            pass
        elif pos[0] == "+":
            last += int(pos[1:], 0)
        elif pos[0] == "-":
            last -= int(pos[1:], 0)
        else:
            last = int(pos, 0)
        ir = int(cost[0]) if cost else 0
        mine = ob is not None and ob.endswith(so_name)
        if after_calls:
            after_calls = False
            if mine:
                calls[last] += ir
        elif mine:
            own[last] += ir
            entries[fn].append(last)

# The load base: the offset that maps most functions' lowest address onto their symbol.
symbols = {}
for row in subprocess.run(["nm", "-C", so], capture_output=True, text=True).stdout.splitlines():
    parts = row.split(" ", 2)
    if len(parts) == 3 and parts[0] and parts[1] in "tT":
        symbols[parts[2]] = int(parts[0], 16)
bases = collections.Counter(
    min(addrs) - symbols[f] for f, addrs in entries.items() if f in symbols
)
base = bases.most_common(1)[0][0]

addresses = sorted(set(own) | set(calls))
out = subprocess.run(
    ["addr2line", "-i", "-f", "-C", "-a", "-e", so],
    input="\n".join(hex(a - base) for a in addresses),
    capture_output=True,
    text=True,
).stdout.splitlines()
stacks, current, i = {}, None, 0
while i < len(out):
    if out[i].startswith("0x"):
        current = int(out[i], 16) + base
        stacks[current] = []
        i += 1
    else:
        stacks[current].append((out[i], out[i + 1] if i + 1 < len(out) else ""))
        i += 2


def short(function):
    return re.sub(r"::h[0-9a-f]{16}$", "", function)


incl, excl, lines = collections.Counter(), collections.Counter(), collections.Counter()
for a in addresses:
    stack = stacks.get(a, [])
    if not stack:
        continue
    for function in {short(f) for f, _ in stack}:
        incl[function] += own[a] + calls[a]
    excl[short(stack[0][0])] += own[a]
    lines[stack[0][1].split(" ")[0]] += own[a]

for key, cost in {"incl": incl, "excl": excl, "lines": lines}[mode].most_common(top):
    print(f"{cost / requests:9.1f}  {key}")
